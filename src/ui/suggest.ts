/**
 * A suggested CiliumNetworkPolicy that would allow exactly the traffic of a dropped trace: the
 * dropping side's endpoint selected by its own pod labels, the peer by its pod labels (plus its
 * namespace when it lives elsewhere), an entity, or its /32, on exactly the traced port; for an
 * L7 denial, exactly the request's method and path. The UI server checks each suggestion by
 * tracing again with it (the agent's `with`), so what it shows has been through the real engine.
 *
 * No suggestion when an allow cannot help: an explicit deny rule (deny beats allow) or a
 * required mutual authentication.
 */
import type { TracePeer, TraceResult, TraceSide } from '../policy/trace.ts';
import { hostPrefix } from '../ipcache/prefix.ts';

export interface Suggestion {
  /** the policies to apply (plain objects, `membrane apply -f` input) */
  policies: PolicyObject[];
  /** why this suggestion, or why none could be made */
  note: string;
}

export interface PolicyObject {
  apiVersion: 'cilium.io/v2';
  kind: 'CiliumNetworkPolicy';
  metadata: { name: string; namespace: string };
  spec: Record<string, unknown>;
}

const NS_LABEL = 'io.kubernetes.pod.namespace';

/** The pod's own labels (`k8s:` source, not the namespace/service-account/cluster ones), as matchLabels. */
export function podMatchLabels(labels: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of labels) {
    if (!l.startsWith('k8s:')) continue;
    const kv = l.slice(4);
    const eq = kv.indexOf('=');
    const key = eq < 0 ? kv : kv.slice(0, eq);
    if (key === NS_LABEL || key.startsWith('io.cilium.k8s.')) continue;
    out[key] = eq < 0 ? '' : kv.slice(eq + 1);
  }
  return out;
}

function peerName(p: TracePeer): string {
  // the name the user traced (a Deployment's name rather than its pod's)
  if (p.kind === 'pod') return p.spec.slice(p.spec.lastIndexOf('/') + 1) || p.name || 'pod';
  if (p.kind === 'entity') return p.name ?? 'entity';
  return (p.ip ?? 'ip').replace(/[.:]/g, '-');
}

function dnsName(s: string): string {
  const n = s.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '');
  return n.slice(0, 63).replace(/-$/, '') || 'allow';
}

/** The peer clause of a rule (`fromEndpoints`/`toEndpoints`, entities or CIDR), seen from `ns`. */
function peerClause(p: TracePeer, dir: 'from' | 'to', ns: string): Record<string, unknown> | undefined {
  if (p.kind === 'pod') {
    const m = podMatchLabels(p.labels);
    if (p.namespace && p.namespace !== ns) m[`k8s:${NS_LABEL}`] = p.namespace;
    return { [`${dir}Endpoints`]: [{ matchLabels: m }] };
  }
  if (p.kind === 'entity' && p.name) return { [`${dir}Entities`]: [p.name] };
  if (p.kind === 'ip' && p.ip) {
    // an address outside the cluster: exactly that host
    if (p.labels.includes('reserved:world') || p.labels.some((l) => l.startsWith('cidr:'))) return { [`${dir}CIDR`]: [hostPrefix(p.ip)] };
    return undefined;
  }
  return undefined;
}

function portClause(r: TraceResult, http?: { method: string; path: string }): Record<string, unknown> {
  const proto = r.protocol.toUpperCase();
  if (proto === 'ICMP' || proto === 'ICMPV6') {
    return { icmps: [{ fields: [{ type: r.port, family: proto === 'ICMP' ? 'IPv4' : 'IPv6' }] }] };
  }
  const port = { ports: [{ port: String(r.port), protocol: proto }] } as Record<string, unknown>;
  if (http) port.rules = { http: [{ method: http.method, path: regexEscape(http.path) }] };
  return { toPorts: [port] };
}

/** Cilium's HTTP paths are RE2 patterns matched on the whole path: escape so only this path matches. */
export function regexEscape(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|]/g, (c) => `\\${c}`);
}

function rule(side: 'ingress' | 'egress', r: TraceResult, http?: { method: string; path: string }): PolicyObject | string {
  const [self, peer] = side === 'ingress' ? [r.destination, r.source] : [r.source, r.destination];
  if (self.kind !== 'pod' || !self.namespace) return `the ${side} side (${self.spec}) is not a pod, so no policy of its own can allow it`;
  const selector = podMatchLabels(self.labels);
  if (!Object.keys(selector).length) return `${self.namespace}/${self.name} has no labels to select it by; label the pod first`;
  const peerPart = peerClause(peer, side === 'ingress' ? 'from' : 'to', self.namespace);
  if (!peerPart) return `no selector names ${peer.spec} exactly`;
  const name = dnsName(`allow-${peerName(r.source)}-to-${peerName(r.destination)}-${r.port}-${r.protocol}${http ? `-${http.method}` : ''}`);
  return {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy',
    metadata: { name, namespace: self.namespace },
    spec: {
      description: `Allows ${r.source.spec} -> ${r.destination.spec} ${r.port}/${r.protocol}${http ? ` ${http.method} ${http.path}` : ''} (suggested by membrane ui)`,
      endpointSelector: { matchLabels: selector },
      [side]: [{ ...peerPart, ...portClause(r, http) }],
    },
  };
}

const blocking = (s: TraceSide) => s.verdict === 'DROPPED';

/** The suggestion for a traced connection (and its HTTP request, for an L7 denial). */
export function suggestPolicy(r: TraceResult, http?: { method: string; path: string }): Suggestion {
  if (r.verdict !== 'DROPPED') return { policies: [], note: `the connection is ${r.verdict.toLowerCase()}; nothing to allow` };
  const sides = (['egress', 'ingress'] as const).filter((d) => blocking(r[d]));
  const policies: PolicyObject[] = [];
  const notes: string[] = [];
  for (const d of sides) {
    const s = r[d];
    if (s.dropReason === 'POLICY_DENY') return { policies: [], note: `an explicit deny rule (${s.rules.map((x) => `${x.policy} ${x.file}:${x.line}`).join(', ')}) drops it at ${d}; deny beats allow, so narrow or remove that rule` };
    if (s.dropReason === 'AUTH_REQUIRED') return { policies: [], note: `the rule requires mutual authentication at ${d}; no allow rule changes that` };
    const p = rule(d, r);
    if (typeof p === 'string') return { policies: [], note: p };
    policies.push(p);
    notes.push(`allows it at ${d} of ${s.endpoint}`);
  }
  if (!sides.length && r.l7 && r.l7.evaluated && r.l7.allowed === false) {
    if (!http) return { policies: [], note: 'an L7 rule denied the request; give the request to suggest a rule' };
    const p = rule(r.l7.direction, r, http);
    if (typeof p === 'string') return { policies: [], note: p };
    policies.push(p);
    notes.push(`adds ${http.method} ${http.path} to the HTTP rules at ${r.l7.direction} of ${r.l7.direction === 'ingress' ? r.destination.spec : r.source.spec}`);
  }
  if (!policies.length) return { policies: [], note: 'no allow rule would change this verdict' };
  return { policies, note: `${policies.length === 1 ? 'this policy' : 'these policies'} ${notes.join(' and ')}, for exactly this peer and port` };
}
