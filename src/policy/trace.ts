/**
 * The engine behind `membrane policy trace` and `membrane policy validate`: offline, from files.
 *
 *   resources ─► namespaces, pods (+ Deployment replicas), services ─► identities, ipcache
 *            └─► policies ─► repository (all-or-nothing import)
 *   --from/--to ─► peer (pod | IP | entity) ─► egress at the source pod, ingress at the destination
 *   pod (world/host sides have no policy of their own) ─► lookupMapState ─► L7 (HTTP) if redirected
 *
 * Pods without status.podIP get 10.244.1.x in file order (x from 2, skipping addresses in use),
 * so the same files always trace the same way.
 */
import type { Deployment, Namespace, Pod, PolicyResource, Resource, Service } from '../api/types.ts';
import { MembraneError, type Issue } from '../common/errors.ts';
import { desiredPods, podOwner } from '../api/deployment.ts';
import { ReservedIdentity, RESERVED_NAMES, type Identity } from '../identity/identity.ts';
import { parseIP, formatIPv4, parseIPv4 } from '../ipcache/prefix.ts';
import { LabelSet, LabelSource, makeLabel } from '../labels/labels.ts';
import { PolicyEngine } from './engine.ts';
import { podNamedPorts } from './named-ports.ts';
import { decideDNS, decideHTTP, type HTTPRequest } from './l7.ts';
import { lookupMapState, type LookupResult } from './lookup.ts';
import { PROTO_BY_NAME, PROTO_NAME } from './ports.ts';
import { resolve } from './distillery.ts';
import type { Direction, MapState, RuleOrigin } from './types.ts';
import type { TranslateOptions } from './translate-context.ts';

const POLICY_KINDS = new Set(['CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'NetworkPolicy']);

export const MATCH_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'none', 1: 'L3-Only', 2: 'L3-L4', 3: 'L4-Only', 4: 'all', 5: 'L3-Proto', 6: 'Proto-Only',
});

export type TraceVerdict = 'FORWARDED' | 'DROPPED' | 'REDIRECTED';
export type TraceDropReason = 'POLICY_DENIED' | 'POLICY_DENY' | 'AUTH_REQUIRED';

export interface TraceRule {
  file: string;
  line: number;
  /** `namespace/name` (or `name` for clusterwide policies) */
  policy: string;
  kind: string;
}

export interface TracePeer {
  /** what the user wrote */
  spec: string;
  kind: 'pod' | 'ip' | 'entity';
  namespace?: string;
  name?: string;
  ip?: string;
  identity: number;
  labels: string[];
}

export interface TraceSide {
  /** false when this side has no policy of its own (world, host, an outside IP) */
  evaluated: boolean;
  /** `namespace/pod` whose policy was evaluated */
  endpoint?: string;
  verdict: TraceVerdict;
  dropReason?: TraceDropReason;
  matchType: string;
  /** the rules of the deciding map entry */
  rules: TraceRule[];
  defaultDeny: boolean;
  /** when dropped by default deny: the policies that put this endpoint in default deny */
  defaultDenyBy?: TraceRule[];
  /** the policy-map key that decided, `i/<identity>/<proto>/<port>/<prefix>` */
  key?: string;
  authRequired?: 'required' | 'test-always-fail';
  /** L7 parser when redirected to a proxy */
  proxy?: string;
}

export interface TraceL7 {
  direction: Direction;
  parser: string;
  /** false when no HTTP request was given (L7 rules not evaluated) */
  evaluated: boolean;
  allowed?: boolean;
  /** HTTP status the proxy answers a denied request with */
  status?: 403;
  rule?: { selector?: string; index?: number; rule?: unknown; rules: TraceRule[] };
  note?: string;
}

/** The L7 outcome: the deciding proxy's step (a denial, else the last), and every step. */
export interface TraceL7Result extends TraceL7 {
  steps: TraceL7[];
}

export interface TraceResult {
  verdict: TraceVerdict;
  dropReason?: TraceDropReason;
  source: TracePeer;
  destination: TracePeer;
  port: number;
  protocol: string;
  egress: TraceSide;
  ingress: TraceSide;
  l7?: TraceL7Result;
}

export interface TraceInput {
  resources: Resource[];
  from: string;
  to: string;
  port: number;
  /** TCP, UDP, SCTP, ICMP, ICMPV6 (ANY is traced as TCP) */
  protocol: string;
  http?: { method: string; path: string; host: string; headers?: Record<string, string> };
  /** DNS query name, for DNS-proxied ports */
  dnsName?: string;
  /** whether mutual authentication succeeded between the peers (default false) */
  authenticated?: boolean;
  enforcementMode?: 'default' | 'always' | 'never';
  /** YAML path → line/col inside a resource's document (from the loader), for rule lines. */
  locate?: TranslateOptions['locate'];
  /**
   * A live agent's labels for an IP it learnt through the DNS proxy (`fqdn:` selector labels with
   * the world/CIDR ones), undefined for any other IP. Files alone cannot know which names resolved
   * to an address, so without it a toFQDNs peer traces as the world and its allow is missed.
   */
  learnedIPLabels?: (ip: string) => readonly string[] | undefined;
  /**
   * A live agent's identity of the pod at an address (its own endpoint, or a pod on another node
   * known from the kvstore): the cluster-wide number and its labels, undefined for an address it
   * knows no pod at. The trace then selects and names pods by those, not by numbers of its own, so
   * a trace on any node of a cluster gives the numbers (and the verdict) every node enforces.
   */
  podIdentity?: (ip: string) => { id: number; labels: readonly string[] } | undefined;
}

interface LabPod {
  pod: Pod;
  ip: string;
  identity: number;
  labels: LabelSet;
  hostNetwork: boolean;
}

interface Lab {
  engine: PolicyEngine;
  pods: LabPod[];
  byIP: Map<string, LabPod>;
  namespaces: Map<string, Namespace>;
  policies: PolicyResource[];
}

function buildLab(resources: Resource[], opts: Pick<TraceInput, 'enforcementMode' | 'locate' | 'podIdentity'> = {}): Lab {
  const engine = new PolicyEngine({
    ...(opts.enforcementMode ? { enforcementMode: opts.enforcementMode } : {}),
    ...(opts.locate ? { locate: opts.locate } : {}),
  });
  const namespaces = new Map<string, Namespace>();
  const explicit: Pod[] = [];
  const services: Service[] = [];
  const policies: PolicyResource[] = [];
  for (const r of resources) {
    if (r.kind === 'Namespace') namespaces.set(r.metadata.name, r);
    else if (r.kind === 'Pod') explicit.push(r);
    else if (r.kind === 'Deployment') explicit.push(...desiredPods(r as Deployment));
    else if (r.kind === 'Service') services.push(r);
    else if (POLICY_KINDS.has(r.kind)) policies.push(r as PolicyResource);
  }
  const seen = new Set<string>();
  const podsInOrder = explicit.filter((p) => {
    const k = `${p.metadata.namespace ?? 'default'}/${p.metadata.name}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const used = new Set(podsInOrder.map((p) => p.status?.podIP).filter((x): x is string => !!x));
  let next = parseIPv4('10.244.1.2')!;
  const placed = podsInOrder.map((pod) => {
    const hostNetwork = pod.spec?.hostNetwork === true;
    let ip = pod.status?.podIP;
    if (!ip) {
      if (hostNetwork) ip = '192.0.2.10';
      else {
        while (used.has(formatIPv4(next))) next++;
        ip = formatIPv4(next++);
        used.add(ip);
      }
    }
    return { pod, ip, hostNetwork };
  });
  // the live agent's identities first, under their own numbers: the trace's own allocation (pods
  // it does not know, CIDRs) then never takes one of them
  const live = new Map<string, Identity>();
  for (const { ip, hostNetwork } of placed) {
    const l = hostNetwork ? undefined : opts.podIdentity?.(ip);
    if (!l) continue;
    try {
      live.set(ip, engine.allocator.restore(l.id, LabelSet.parse(l.labels)));
    } catch {
      // an identity the agent is replacing (its labels just changed): the files' labels decide
    }
  }
  const pods: LabPod[] = [];
  const byIP = new Map<string, LabPod>();
  for (const { pod, ip, hostNetwork } of placed) {
    const ns = pod.metadata.namespace ?? 'default';
    const { identity } = hostNetwork
      ? { identity: { id: ReservedIdentity.host, labels: new LabelSet([makeLabel(LabelSource.reserved, 'host')]) } }
      : live.has(ip) ? { identity: live.get(ip)! } : engine.allocatePodIdentity({ ...pod, metadata: { ...pod.metadata, namespace: ns } }, namespaces.get(ns));
    const lp: LabPod = { pod, ip, identity: identity.id, labels: identity.labels, hostNetwork };
    pods.push(lp);
    if (!hostNetwork) {
      byIP.set(ip, lp);
      engine.ipcache.upsert(ip, identity.id, 'endpoint');
      engine.namedPorts.set(`${ns}/${pod.metadata.name}`, identity.id, podNamedPorts(pod));
    }
  }
  engine.setServices(services);
  return { engine, pods, byIP, namespaces, policies };
}

/**
 * Every problem importing these resources' policies together would raise: per-policy
 * validation plus cross-policy conflicts (two L7 parsers on one port for the same pods).
 */
export function checkImport(resources: Resource[], opts: { locate?: TraceInput['locate'] } = {}): Issue[] {
  const lab = buildLab(resources, opts);
  return lab.engine.check(lab.policies, true);
}

const ENTITY_IDENTITY: Record<string, number> = Object.fromEntries(
  Object.entries(RESERVED_NAMES).filter(([id]) => Number(id) !== 0).map(([id, name]) => [name, Number(id)]),
);

/** A pod peer as `policy trace` names it: NAMESPACE/POD (or a Deployment's name), POD alone in namespace default. */
export function podPeerSpec(spec: string): { ns: string; name: string } {
  const s = spec.trim();
  const slash = s.indexOf('/');
  return slash >= 0 ? { ns: s.slice(0, slash), name: s.slice(slash + 1) } : { ns: 'default', name: s };
}

function resolvePeer(lab: Lab, spec: string, learnedIPLabels?: TraceInput['learnedIPLabels']): { peer: TracePeer; pod?: LabPod } {
  const s = spec.trim();
  const entity = ENTITY_IDENTITY[s.toLowerCase()];
  if (entity !== undefined) {
    const labels = lab.engine.selectorCache.identityLabels(entity) ?? LabelSet.empty;
    return { peer: { spec, kind: 'entity', name: s.toLowerCase(), identity: entity, labels: labels.toStrings() } };
  }
  if (parseIP(s)) {
    const pod = lab.byIP.get(s);
    if (pod) return { peer: podPeer(spec, pod), pod };
    const learned = learnedIPLabels?.(s);
    if (learned?.length) {
      // the trace's own identity for the agent's labels: the selector cache then selects it as the
      // datapath's identity for this IP is selected (the number differs, the selections do not)
      const { identity } = lab.engine.allocator.allocateSync(LabelSet.parse(learned));
      return { peer: { spec, kind: 'ip', ip: s, identity: identity.id, labels: identity.labels.toStrings() } };
    }
    const identity = lab.engine.ipcache.lookupIdentity(s);
    const labels = lab.engine.selectorCache.identityLabels(identity) ?? LabelSet.empty;
    return { peer: { spec, kind: 'ip', ip: s, identity, labels: labels.toStrings() } };
  }
  const { ns, name } = podPeerSpec(s);
  const inNs = lab.pods.filter((p) => (p.pod.metadata.namespace ?? 'default') === ns);
  const pod = inNs.find((p) => p.pod.metadata.name === name)
    ?? inNs.filter((p) => { const o = podOwner(p.pod); return o?.kind === 'Deployment' && o.name === name; }).sort((a, b) => (a.pod.metadata.name < b.pod.metadata.name ? -1 : 1))[0];
  if (!pod) {
    const names = inNs.map((p) => p.pod.metadata.name);
    throw new MembraneError('TRACE_PEER_NOT_FOUND', `no pod "${name}" in namespace "${ns}" in the given files`, {
      hint: names.length ? `pods in ${ns}: ${names.slice(0, 10).join(', ')}${names.length > 10 ? ', ...' : ''}` : 'give NAMESPACE/POD, a Deployment name, an IP, or an entity (world, host, remote-node, ...)',
    });
  }
  if (pod.hostNetwork) return { peer: { ...podPeer(spec, pod), kind: 'entity', name: 'host' } };
  return { peer: podPeer(spec, pod), pod };
}

function podPeer(spec: string, p: LabPod): TracePeer {
  return {
    spec, kind: 'pod', namespace: p.pod.metadata.namespace ?? 'default', name: p.pod.metadata.name, ip: p.ip,
    identity: p.identity, labels: p.labels.toStrings(),
  };
}

function toRules(origins: readonly RuleOrigin[]): TraceRule[] {
  return origins.map((o) => ({ file: o.file, line: o.line, policy: o.namespace ? `${o.namespace}/${o.name}` : o.name, kind: o.kind }));
}

function side(lab: Lab, pod: LabPod | undefined, dir: Direction, remote: number, proto: number, port: number, authenticated: boolean): { side: TraceSide; lookup?: LookupResult; ms?: MapState } {
  if (!pod) return { side: { evaluated: false, verdict: 'FORWARDED', matchType: 'none', rules: [], defaultDeny: false } };
  const ns = pod.pod.metadata.namespace ?? 'default';
  const ep = { id: 1, identity: pod.identity, labels: pod.labels, namedPorts: podNamedPorts(pod.pod) };
  const ms = resolve({ repository: lab.engine.repository, options: lab.engine.resolveOptions, distillery: lab.engine.distillery }, ep);
  const r = lookupMapState(ms, dir, remote, proto, port);
  const s: TraceSide = {
    evaluated: true, endpoint: `${ns}/${pod.pod.metadata.name}`,
    verdict: r.verdict === 'drop' ? 'DROPPED' : r.verdict === 'redirect' ? 'REDIRECTED' : 'FORWARDED',
    matchType: MATCH_TYPE_NAMES[r.matchType] ?? String(r.matchType),
    rules: toRules(r.entry?.origins ?? []),
    defaultDeny: ms.defaultDeny[dir],
    ...(r.key ? { key: `${dir === 'ingress' ? 'i' : 'e'}/${r.key.identity}/${r.key.proto}/${r.key.port}/${r.key.portPrefixLen}` } : {}),
  };
  if (r.verdict === 'drop') s.dropReason = r.dropReason === 181 ? 'POLICY_DENY' : 'POLICY_DENIED';
  if (r.dropReason === 133) {
    const by = lab.engine.repository.rulesFor(pod.labels).filter((x) => x.defaultDeny[dir]).map((x) => x.origin);
    s.defaultDenyBy = toRules(by);
  }
  if (r.verdict !== 'drop' && r.authType !== 0) {
    s.authRequired = r.authType === 2 ? 'test-always-fail' : 'required';
    if (!authenticated || r.authType === 2) {
      s.verdict = 'DROPPED';
      s.dropReason = 'AUTH_REQUIRED';
    }
  }
  if (s.verdict === 'REDIRECTED' && r.entry?.l7) s.proxy = r.entry.l7.parser;
  return { side: s, lookup: r, ms };
}

/** Traces one connection through the policies in `resources`. */
export function tracePolicy(input: TraceInput): TraceResult {
  const lab = buildLab(input.resources, {
    ...(input.enforcementMode ? { enforcementMode: input.enforcementMode } : {}),
    ...(input.locate ? { locate: input.locate } : {}),
    ...(input.podIdentity ? { podIdentity: input.podIdentity } : {}),
  });
  lab.engine.applyPolicies(lab.policies, true);
  const protoName = input.protocol.toUpperCase() === 'ANY' ? 'TCP' : input.protocol.toUpperCase();
  const proto = PROTO_BY_NAME[protoName];
  if (proto === undefined) throw new MembraneError('TRACE_BAD_PROTOCOL', `unknown protocol "${input.protocol}"`, { hint: 'TCP, UDP, SCTP, ICMP or ICMPv6' });
  if (!Number.isInteger(input.port) || input.port < 0 || input.port > 65535) throw new MembraneError('TRACE_BAD_PORT', `port ${input.port} is out of range`, { hint: '0-65535 (the ICMP type for ICMP)' });
  const src = resolvePeer(lab, input.from, input.learnedIPLabels);
  const dst = resolvePeer(lab, input.to, input.learnedIPLabels);
  const eg = side(lab, src.pod, 'egress', dst.peer.identity, proto, input.port, input.authenticated ?? false);
  const ing = side(lab, dst.pod, 'ingress', src.peer.identity, proto, input.port, input.authenticated ?? false);
  const result: TraceResult = {
    verdict: 'FORWARDED', source: src.peer, destination: dst.peer, port: input.port, protocol: PROTO_NAME[proto] ?? protoName,
    egress: eg.side, ingress: ing.side,
  };
  const dropped = [eg.side, ing.side].find((s) => s.verdict === 'DROPPED');
  if (dropped) {
    result.verdict = 'DROPPED';
    if (dropped.dropReason) result.dropReason = dropped.dropReason;
    return result;
  }
  const l7: TraceL7[] = [];
  for (const [dir, s, remote] of [['egress', eg, dst.peer.identity], ['ingress', ing, src.peer.identity]] as const) {
    const policy = s.lookup?.entry?.l7;
    if (s.side.verdict !== 'REDIRECTED' || !policy) continue;
    const base = { direction: dir, parser: policy.parser };
    if (policy.parser === 'http' && input.http) {
      const req: HTTPRequest = { method: input.http.method, path: input.http.path, host: input.http.host, headers: input.http.headers ?? {} };
      const v = decideHTTP(policy, remote, req);
      l7.push(v.allowed
        ? { ...base, evaluated: true, allowed: true, rule: { ...(v.selector ? { selector: v.selector } : {}), ...(v.ruleIndex !== undefined ? { index: v.ruleIndex } : {}), rule: v.rule ?? null, rules: toRules(v.origins ?? []) } }
        : { ...base, evaluated: true, allowed: false, status: 403, note: 'no HTTP rule allows this request: the proxy answers 403 Forbidden' });
    } else if (policy.parser === 'dns' && input.dnsName) {
      const v = decideDNS(policy, remote, input.dnsName);
      l7.push(v.allowed
        ? { ...base, evaluated: true, allowed: true, rule: { ...(v.selector ? { selector: v.selector } : {}), ...(v.ruleIndex !== undefined ? { index: v.ruleIndex } : {}), rule: v.rule ?? null, rules: toRules(v.origins ?? []) } }
        : { ...base, evaluated: true, allowed: false, note: 'no DNS rule allows this name: the proxy answers REFUSED' });
    } else {
      l7.push({ ...base, evaluated: false, note: policy.parser === 'http' ? 'redirected to the HTTP proxy; give --http-method/--http-path/--http-host to evaluate the L7 rules' : `redirected to the ${policy.parser} proxy; L7 rules not evaluated` });
    }
  }
  if (l7.length) {
    const deciding = l7.find((x) => x.evaluated && x.allowed === false) ?? l7[l7.length - 1]!;
    result.l7 = { ...deciding, steps: l7 };
  }
  if (l7.some((x) => x.evaluated && x.allowed === false)) result.verdict = 'DROPPED';
  else if (eg.side.verdict === 'REDIRECTED' || ing.side.verdict === 'REDIRECTED') result.verdict = 'REDIRECTED';
  return result;
}

function peerText(p: TracePeer): string {
  const where = p.kind === 'pod' ? `${p.namespace}/${p.name}` : p.kind === 'ip' ? p.ip! : p.name!;
  return `${where}${p.kind === 'pod' ? ` (${p.ip})` : ''} identity ${p.identity}`;
}

function sideText(name: string, s: TraceSide): string[] {
  if (!s.evaluated) return [`${name}: no policy (not a local pod)`];
  const head = `${name} at ${s.endpoint}: ${s.verdict}${s.dropReason ? ` (${s.dropReason})` : ''}  match ${s.matchType}${s.defaultDeny ? ', default deny' : ', default allow'}`;
  const lines = [head];
  const verb = s.verdict === 'DROPPED' && s.dropReason === 'POLICY_DENY' ? 'denied by' : 'allowed by';
  for (const r of s.rules) lines.push(`  ${verb} ${r.kind} ${r.policy} (${r.file}:${r.line})`);
  for (const r of s.defaultDenyBy ?? []) lines.push(`  no rule allows it; default deny from ${r.kind} ${r.policy} (${r.file}:${r.line})`);
  if (s.dropReason === 'AUTH_REQUIRED') lines.push(`  authentication ${s.authRequired} and the peers are not authenticated`);
  if (s.dropReason === 'POLICY_DENIED' && !(s.defaultDenyBy ?? []).length) lines.push('  no rule allows it (enforcement mode always)');
  if (s.proxy) lines.push(`  redirected to the ${s.proxy.toUpperCase()} proxy`);
  return lines;
}

/** Human text for a trace result. */
export function formatTrace(r: TraceResult): string {
  const out = [`${peerText(r.source)} -> ${peerText(r.destination)}  ${r.port}/${r.protocol}`, ''];
  out.push(...sideText('Egress', r.egress), ...sideText('Ingress', r.ingress));
  for (const l of r.l7?.steps ?? []) {
    if (!l.evaluated) out.push(`L7 (${l.direction}, ${l.parser}): ${l.note}`);
    else if (l.allowed) {
      const rr = l.rule;
      const which = rr?.index === -1 ? 'no L7 restriction for this peer (an L4 rule allows all requests)' : `rule ${JSON.stringify(rr?.rule)}`;
      out.push(`L7 (${l.direction}, ${l.parser}): allowed by ${which}${rr?.rules.length ? ` of ${rr.rules.map((x) => `${x.kind} ${x.policy} (${x.file}:${x.line})`).join(', ')}` : ''}`);
    } else out.push(`L7 (${l.direction}, ${l.parser}): DENIED${l.status ? ` (HTTP ${l.status})` : ''}: ${l.note}`);
  }
  out.push('', `Verdict: ${r.verdict}${r.dropReason ? ` (${r.dropReason})` : ''}`);
  return out.join('\n') + '\n';
}
