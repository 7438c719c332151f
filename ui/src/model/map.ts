/**
 * The service map: flows folded into nodes (who) and edges (who talks to whom, on which port).
 * Pure and incremental: `add(flow)` is a few map lookups, so 2,000 flows/s cost little; the view
 * reads `snapshot()` a few times a second.
 *
 * Nodes (Hubble UI's service model, spec/hubble.md §7, grouped by workload as the issue asks):
 *   pods of one security identity in a namespace   `ns/<identity>`, named after their workload
 *   the host, remote nodes, kube-apiserver, ...               `reserved:<name>`
 *   outside with a name the DNS proxy learnt                  `fqdn:<name>`
 *   other outside addresses                                   `world`
 * Edges: (source node, destination node, destination port, protocol), from request flows only;
 * HTTP responses add their status to the request they answer, and an AI call's response its tokens.
 */
import { anyUnpack, StructSchema } from '@bufbuild/protobuf/wkt';
import { DropReason, type Endpoint, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { reservedIdentityName } from '../../../src/hubble/names.ts';

export type NodeKind = 'workload' | 'pod' | 'kube-dns' | 'host' | 'world' | 'fqdn' | 'reserved';
import type { VerdictName } from './verdict.ts';
export type { VerdictName } from './verdict.ts';

export interface MapNode {
  id: string;
  kind: NodeKind;
  name: string;
  namespace?: string;
  /** Deployment, Pod, ... for workloads */
  workloadKind?: string;
  identities: number[];
  /** a few pod names (the first is used for traces) */
  pods: string[];
  /** the labels of the first endpoint seen */
  labels: string[];
  /** L7 endpoints served, e.g. `POST /v1/request-landing` */
  http: string[];
}

export interface EdgeRequest {
  method: string;
  path: string;
  host: string;
  counts: Record<VerdictName, number>;
  codes: Record<string, number>;
}

/** What a trace of this edge needs: the peers as `policy trace` names them. */
export interface EdgePeers {
  from: string;
  to: string;
  fromIp: string;
  toIp: string;
}

/** AI API calls on an edge (the HTTP proxy's AI extension): one row per provider and model. */
export interface EdgeAI {
  provider: string;
  model: string;
  /** calls forwarded to the provider */
  requests: number;
  /** calls the AIPolicy refused (403, 429, 400, 413) */
  refused: number;
  promptTokens: number;
  completionTokens: number;
}

export interface MapEdge {
  id: string;
  from: string;
  to: string;
  port: number;
  /** TCP, UDP, SCTP, ICMPv4, ICMPv6 */
  proto: string;
  /** HTTP, DNS, TLS (sorted) */
  l7: string[];
  counts: Record<VerdictName, number>;
  /**
   * Forwarded on the way out only (the source's egress, the overlay) towards a pod, whose own
   * node gives the verdict that counts: not in `counts`, so a connection its destination drops
   * reads dropped on a cluster too, where both nodes report it.
   */
  transit: number;
  total: number;
  /** flows per second over the last RATE_WINDOW_S seconds */
  rate: number;
  dropReasons: Record<string, number>;
  requests: EdgeRequest[];
  /** TLS server names seen (SNI) */
  sni: string[];
  /** AI API calls by provider and model (empty for other edges) */
  ai: EdgeAI[];
  peers: EdgePeers;
  lastSeenMs: number;
}

export interface MapSnapshot {
  nodes: MapNode[];
  edges: MapEdge[];
  flows: number;
}

export const RATE_WINDOW_S = 10;
const MAX_PODS = 5;
const MAX_REQUESTS = 20;
const MAX_HTTP = 12;
const MAX_AI_MODELS = 12;
const STRUCT_URL = 'type.googleapis.com/google.protobuf.Struct';

/** The AI extension of a flow (`extensions: Struct {ai: {...}}`, src/proxy/http/flows.ts), undefined for others. */
export function aiOf(f: Flow): { provider: string; model: string; promptTokens: number; completionTokens: number } | undefined {
  const x = f.extensions;
  if (!x || x.typeUrl !== STRUCT_URL) return undefined;
  let s;
  try {
    s = anyUnpack(x, StructSchema);
  } catch {
    return undefined;
  }
  const ai = s?.fields.ai?.kind;
  if (ai?.case !== 'structValue') return undefined;
  const v = ai.value.fields;
  const str = (k: string) => (v[k]?.kind.case === 'stringValue' ? v[k].kind.value : '');
  const num = (k: string) => (v[k]?.kind.case === 'numberValue' ? v[k].kind.value : 0);
  return { provider: str('provider'), model: str('model'), promptTokens: num('prompt_tokens'), completionTokens: num('completion_tokens') };
}

/** TraceObservationPoint.TO_ENDPOINT, TrafficDirection.INGRESS, the policy-verdict event type (flow.proto) */
const TO_ENDPOINT = 101;
const INGRESS = 1;
const POLICY_VERDICT_EVENT = 5;

/**
 * A forwarded L3/L4 flow to a pod seen before its destination judged it: at the source's
 * endpoint, stack or overlay, or the source's egress policy verdict. The delivery (to-endpoint,
 * the ingress policy verdict, the proxy's L7 verdict) or the drop is what the edge shows.
 */
function inTransit(f: Flow, dst: MapNode): boolean {
  if (f.verdict !== 1 || f.Type !== 1) return false;
  if (dst.kind !== 'workload' && dst.kind !== 'pod' && dst.kind !== 'kube-dns') return false;
  if (f.eventType?.type === POLICY_VERDICT_EVENT) return f.trafficDirection !== INGRESS;
  return f.traceObservationPoint !== TO_ENDPOINT;
}

const VERDICTS: Record<number, VerdictName> = { 1: 'forwarded', 2: 'dropped', 3: 'error', 4: 'audit', 5: 'redirected', 6: 'forwarded', 7: 'forwarded' };

const zero = (): Record<VerdictName, number> => ({ forwarded: 0, dropped: 0, audit: 0, redirected: 0, error: 0 });

interface EdgeState extends Omit<MapEdge, 'rate' | 'l7' | 'requests' | 'sni' | 'ai'> {
  l7: Set<string>;
  ai: Map<string, EdgeAI>;
  requests: Map<string, EdgeRequest>;
  sni: Set<string>;
  /** flows per second, RATE_WINDOW_S slots by whole second */
  buckets: Int32Array;
  bucketSec: Int32Array;
}

function isKubeDns(labels: readonly string[]): boolean {
  return labels.includes('k8s:k8s-app=kube-dns');
}

const APP_KEYS = ['app', 'name', 'functionName', 'k8s-app'];
const PREFIXES = ['k8s:', 'io.kubernetes.pod.', 'app.kubernetes.io/'];

/** Hubble UI's display name: the value of an app-ish label, prefixes stripped. */
export function appLabel(labels: readonly string[]): string | undefined {
  const byKey = new Map<string, string>();
  for (const l of labels) {
    let kv = l;
    for (const p of PREFIXES) if (kv.startsWith(p)) kv = kv.slice(p.length);
    const eq = kv.indexOf('=');
    if (eq > 0) byKey.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  for (const k of APP_KEYS) {
    const v = byKey.get(k);
    if (v) return v;
  }
  return undefined;
}

const NS_LABEL = 'k8s:io.kubernetes.pod.namespace=';

/**
 * The namespace of a cluster pod: the endpoint's own, or (a peer on another node in the proxy's
 * flows, which carry its identity's labels but no pod name) its namespace label.
 */
export function podNamespace(ep: Endpoint | undefined): string | undefined {
  if (!ep || ep.identity < 256 && ep.identity !== 0) return undefined;
  if (ep.namespace) return ep.namespace;
  const l = ep.labels.find((x) => x.startsWith(NS_LABEL));
  return l ? l.slice(NS_LABEL.length) : undefined;
}

/** A node for one end of a flow. `names` are the DNS names known for that end's IP. */
export function nodeFor(ep: Endpoint | undefined, names: readonly string[]): Omit<MapNode, 'pods' | 'http'> & { pod?: string; fromWorkload?: boolean } {
  const identity = ep?.identity ?? 0;
  const labels = ep?.labels ?? [];
  // a named pod, or a pod of another node known by its identity's labels: the same card
  const named = ep?.podName && ep.namespace ? ep.podName : undefined;
  const ns = named ? ep!.namespace : identity >= 256 ? podNamespace(ep) : undefined;
  if (ns) {
    // One card per security identity in a namespace (Hubble UI's service id), named after the
    // owning workload when a flow says it (proxy flows may not), else the app label, else the pod.
    const w = ep!.workloads[0];
    const kind: NodeKind = isKubeDns(labels) ? 'kube-dns' : w ? 'workload' : 'pod';
    const name = w?.name || appLabel(labels) || named || `identity ${identity}`;
    return {
      id: `${ns}/${identity}`, kind, name, namespace: ns, workloadKind: w?.kind || 'Pod', identities: [identity], labels,
      ...(named ? { pod: named } : {}), ...(w ? { fromWorkload: true } : {}),
    };
  }
  const r = identity > 0 ? reservedIdentityName(identity) : undefined;
  const reserved = (r?.startsWith('world') ? 'world' : r) ?? (labels.includes('reserved:world') || labels.some((l) => l.startsWith('cidr:') || l.startsWith('fqdn:')) ? 'world' : undefined);
  if (reserved === 'world' || (!reserved && identity === 0)) {
    const name = names[0];
    if (name) return { id: `fqdn:${name}`, kind: 'fqdn', name, identities: [identity], labels };
    return { id: 'world', kind: 'world', name: 'world', identities: [identity], labels };
  }
  if (reserved === 'host') return { id: 'reserved:host', kind: 'host', name: 'host', identities: [identity], labels };
  if (reserved) return { id: `reserved:${reserved}`, kind: 'reserved', name: reserved, identities: [identity], labels };
  return { id: `identity:${identity}`, kind: 'reserved', name: `identity ${identity}`, identities: [identity], labels };
}

/** How `policy trace` names this end: NAMESPACE/POD, an entity, or the IP. */
/** A Deployment's card is traced by the Deployment's name (`policy trace` picks one of its pods). */
function workloadPeer(n: MapNode | undefined): string | undefined {
  return n?.kind === 'workload' && n.workloadKind === 'Deployment' && n.namespace ? `${n.namespace}/${n.name}` : undefined;
}

export function tracePeer(n: { kind: NodeKind; namespace?: string; pod?: string; name: string }, ip: string): string {
  if (n.pod && n.namespace) return `${n.namespace}/${n.pod}`;
  if (n.kind === 'host') return 'host';
  if (n.kind === 'reserved' && !n.name.startsWith('identity ')) return n.name;
  return ip || 'world';
}

function l4Of(f: Flow): { proto: string; sport: number; dport: number } | undefined {
  const p = f.l4?.protocol;
  switch (p?.case) {
    case 'TCP': return { proto: 'TCP', sport: p.value.sourcePort, dport: p.value.destinationPort };
    case 'UDP': return { proto: 'UDP', sport: p.value.sourcePort, dport: p.value.destinationPort };
    case 'SCTP': return { proto: 'SCTP', sport: p.value.sourcePort, dport: p.value.destinationPort };
    case 'ICMPv4': return { proto: 'ICMPv4', sport: 0, dport: p.value.type };
    case 'ICMPv6': return { proto: 'ICMPv6', sport: 0, dport: p.value.type };
    default: return undefined;
  }
}

export function pathOf(url: string): string {
  const i = url.indexOf('://');
  const rest = i >= 0 ? url.slice(i + 3) : url;
  const s = rest.indexOf('/');
  const p = s >= 0 ? rest.slice(s) : '/';
  const q = p.indexOf('?');
  return q >= 0 ? p.slice(0, q) : p;
}

export function hostOf(url: string): string {
  const i = url.indexOf('://');
  if (i < 0) return '';
  const rest = url.slice(i + 3);
  const s = rest.indexOf('/');
  return s >= 0 ? rest.slice(0, s) : rest;
}

export class ServiceMap {
  private nodes = new Map<string, MapNode>();
  private edges = new Map<string, EdgeState>();
  /** pods' cards by security identity: the per-flow fast path (no object per flow) */
  private byIdentity = new Map<number, MapNode>();
  private count = 0;

  get flows(): number {
    return this.count;
  }

  clear(): void {
    this.nodes.clear();
    this.edges.clear();
    this.byIdentity.clear();
    this.count = 0;
  }

  private node(n: ReturnType<typeof nodeFor>): MapNode {
    let cur = this.nodes.get(n.id);
    if (!cur) {
      const { pod, fromWorkload: _w, ...rest } = n;
      cur = { ...rest, identities: [...n.identities], pods: pod ? [pod] : [], http: [] };
      this.nodes.set(n.id, cur);
      return cur;
    }
    if (n.fromWorkload && cur.kind === 'pod') {
      cur.kind = 'workload';
      cur.name = n.name;
      cur.workloadKind = n.workloadKind!;
    }
    if (n.pod && !cur.pods.includes(n.pod) && cur.pods.length < MAX_PODS) cur.pods.push(n.pod);
    const id = n.identities[0]!;
    if (!cur.identities.includes(id)) cur.identities.push(id);
    return cur;
  }

  private endpointNode(ep: Endpoint | undefined, names: readonly string[]): MapNode {
    // pods (named, or a remote peer known by its identity's labels) by identity: no object per flow
    const ns = ep && ep.identity >= 256 ? (ep.podName ? ep.namespace : podNamespace(ep)) : undefined;
    if (ep && ns) {
      const cur = this.byIdentity.get(ep.identity);
      if (cur && cur.namespace === ns) {
        if (!ep.podName) return cur;
        if (cur.pods.length < MAX_PODS && !cur.pods.includes(ep.podName)) cur.pods.push(ep.podName);
        if (cur.kind === 'pod' && ep.workloads.length) this.node(nodeFor(ep, names));
        // first seen by labels alone, with no name among them: the pod names it now
        else if (cur.name.startsWith('identity ')) cur.name = nodeFor(ep, names).name;
        return cur;
      }
      const n = this.node(nodeFor(ep, names));
      this.byIdentity.set(ep.identity, n);
      return n;
    }
    return this.node(nodeFor(ep, names));
  }

  /** Folds one flow in. Returns false for flows the map does not draw (no IP, no L4). */
  add(f: Flow, nowMs = Date.now()): boolean {
    const reply = f.isReply === true;
    const l4 = l4Of(f);
    if (!l4 || !f.IP) return false;
    this.count++;
    // Requests define edges; a reply only carries an HTTP status back to its request.
    const [srcEp, dstEp, srcIp, dstIp, srcNames, dstNames, port] = reply
      ? [f.destination, f.source, f.IP.destination, f.IP.source, f.destinationNames, f.sourceNames, l4.sport]
      : [f.source, f.destination, f.IP.source, f.IP.destination, f.sourceNames, f.destinationNames, l4.dport];
    const src = this.endpointNode(srcEp, srcNames);
    const dst = this.endpointNode(dstEp, dstNames);
    const id = `${src.id}|${dst.id}|${port}|${l4.proto}`;
    let e = this.edges.get(id);
    const rec = f.l7?.record;
    if (reply) {
      if (e && rec?.case === 'http' && rec.value.code) {
        const r = e.requests.get(`${rec.value.method} ${pathOf(rec.value.url)}`);
        if (r) r.codes[String(rec.value.code)] = (r.codes[String(rec.value.code)] ?? 0) + 1;
        // an AI call's response carries the tokens it spent
        const ai = f.extensions ? aiOf(f) : undefined;
        const a = ai && e.ai.get(`${ai.provider} ${ai.model}`);
        if (a) {
          a.promptTokens += ai.promptTokens;
          a.completionTokens += ai.completionTokens;
        }
      }
      return true;
    }
    if (!e) {
      e = {
        id, from: src.id, to: dst.id, port, proto: l4.proto, l7: new Set(), counts: zero(), transit: 0, total: 0, dropReasons: {},
        requests: new Map(), sni: new Set(), ai: new Map(), lastSeenMs: 0,
        peers: { from: tracePeer(nodeFor(srcEp, srcNames), srcIp), to: tracePeer(nodeFor(dstEp, dstNames), dstIp), fromIp: srcIp, toIp: dstIp },
        buckets: new Int32Array(RATE_WINDOW_S), bucketSec: new Int32Array(RATE_WINDOW_S).fill(-1),
      };
      this.edges.set(id, e);
    }
    const verdict = VERDICTS[f.verdict] ?? 'error';
    if (inTransit(f, dst)) e.transit++;
    else e.counts[verdict]++;
    e.total++;
    if (verdict === 'dropped') {
      const reason = dropReasonName(f);
      e.dropReasons[reason] = (e.dropReasons[reason] ?? 0) + 1;
    }
    const t = f.time ? Number(f.time.seconds) * 1000 + f.time.nanos / 1e6 : nowMs;
    if (t > e.lastSeenMs) e.lastSeenMs = t;
    const sec = Math.floor(t / 1000);
    const slot = sec % RATE_WINDOW_S;
    // an older flow folded in after newer ones (the replay's first screenful comes first) is
    // outside the rate window when its slot holds a later second: it must not reset that second
    if (e.bucketSec[slot]! < sec) {
      e.bucketSec[slot] = sec;
      e.buckets[slot] = 0;
    }
    if (e.bucketSec[slot] === sec) e.buckets[slot]!++;
    if (rec?.case === 'http') {
      e.l7.add('HTTP');
      const path = pathOf(rec.value.url);
      const key = `${rec.value.method} ${path}`;
      let r = e.requests.get(key);
      if (!r && e.requests.size < MAX_REQUESTS) {
        r = { method: rec.value.method, path, host: hostOf(rec.value.url), counts: zero(), codes: {} };
        e.requests.set(key, r);
      }
      if (r) r.counts[verdict]++;
      if (!dst.http.includes(key) && dst.http.length < MAX_HTTP) dst.http.push(key);
      const ai = f.extensions ? aiOf(f) : undefined;
      if (ai) {
        const k = `${ai.provider} ${ai.model}`;
        let a = e.ai.get(k);
        if (!a && e.ai.size < MAX_AI_MODELS) e.ai.set(k, (a = { provider: ai.provider, model: ai.model, requests: 0, refused: 0, promptTokens: 0, completionTokens: 0 }));
        if (a) {
          if (verdict === 'dropped') a.refused++;
          else a.requests++;
        }
      }
    } else if (rec?.case === 'dns') e.l7.add('DNS');
    else if (rec?.case === 'kafka') e.l7.add('Kafka');
    else if (f.Type === 2 && f.Summary.startsWith('TLS')) {
      e.l7.add('TLS');
      if (f.destinationNames[0]) e.sni.add(f.destinationNames[0]);
    }
    return true;
  }

  snapshot(nowMs = Date.now()): MapSnapshot {
    const nowSec = Math.floor(nowMs / 1000);
    const edges: MapEdge[] = [];
    for (const e of this.edges.values()) {
      let n = 0;
      for (let i = 0; i < RATE_WINDOW_S; i++) {
        const s = e.bucketSec[i]!;
        if (s > nowSec - RATE_WINDOW_S && s <= nowSec) n += e.buckets[i]!;
      }
      const { buckets: _b, bucketSec: _s, ai: _a, ...rest } = e;
      edges.push({
        ...rest, peers: { ...e.peers, from: workloadPeer(this.nodes.get(e.from)) ?? e.peers.from, to: workloadPeer(this.nodes.get(e.to)) ?? e.peers.to }, counts: { ...e.counts }, dropReasons: { ...e.dropReasons }, l7: [...e.l7].sort(), sni: [...e.sni], ai: [...e.ai.values()].map((a) => ({ ...a })),
        requests: [...e.requests.values()].map((r) => ({ ...r, counts: { ...r.counts }, codes: { ...r.codes } })),
        rate: n / RATE_WINDOW_S,
      });
    }
    const nodes = [...this.nodes.values()].map((n) => ({ ...n, identities: [...n.identities], pods: [...n.pods], http: [...n.http] }));
    return { nodes, edges, flows: this.count };
  }
}

/** The drop reason's Cilium name (DropReason enum name; L7 denials have none and read POLICY_DENIED). */
export function dropReasonName(f: Flow): string {
  const code = f.dropReasonDesc || f.dropReason;
  if (!code) return f.Type === 2 ? 'POLICY_DENIED (L7)' : 'UNKNOWN';
  return DropReason[code] ?? `DROP_REASON_${code}`;
}

export { edgeVerdict } from './verdict.ts';
