/**
 * The flow.Endpoint messages of flows, one home for both flow builders (datapath events in
 * flow.ts, proxy access records in l7-parser.ts).
 *
 * Flows are never mutated after they are built and stay in the ring for seconds, so whatever a
 * flow holds alone is what the garbage collector copies and promotes at every new connection.
 * The messages are therefore shared: one per resolved local endpoint view (the agent replaces a
 * view when its endpoint changes, never edits it), one per remote identity whose labels are
 * known, one per label list a proxy names a peer by.
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import { IPVersion, type Endpoint, type Flow } from './gen/flow/flow_pb.js';
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import { reservedIdentityName } from './names.ts';

/** What the messages need from the agent: an identity's labels. */
export interface IdentityLabelSource {
  identityLabels(identity: number): string[] | undefined;
}

export interface EndpointMessages {
  /**
   * A local endpoint's message. `identity` is the packet's when the datapath gave one; a packet
   * identity other than the endpoint's own gets a message of its own (not shared).
   */
  local(r: ResolvedEndpoint, identity?: number): Endpoint;
  /** A peer known only by its identity: its labels from the agent, CIDR labels reduced. */
  remote(identity: number): Endpoint;
  /** A peer the proxy named by its labels (sorted once per list). */
  labelled(labels: readonly string[], identity: number): Endpoint;
  /** An identity's labels as flows show them (shared while known). */
  identityLabels(identity: number): string[];
}

const NONE = Object.freeze([]) as unknown as never[];
const CACHE_MAX = 16384;

/** Cilium reduces CIDR labels to the longest prefix (cidr:10.0.0.0/8, cidr:10.1.0.0/16 → the /16). */
export function reduceCidrLabels(labels: readonly string[]): string[] {
  let best: string | undefined;
  let bestLen = -1;
  const rest: string[] = [];
  for (const l of labels) {
    if (l.startsWith('cidr:')) {
      const len = Number(l.slice(l.lastIndexOf('/') + 1));
      if (len > bestLen) { bestLen = len; best = l; }
    } else rest.push(l);
  }
  if (best !== undefined) rest.push(best);
  return rest.sort();
}

export function createEndpointMessages(source: IdentityLabelSource, clusterName: string): EndpointMessages {
  const sortedOf = new WeakMap<readonly string[], string[]>();
  const sorted = (l: readonly string[]): string[] => {
    let s = sortedOf.get(l);
    if (!s) sortedOf.set(l, (s = [...l].sort()));
    return s;
  };

  const labelsOf = new BoundedCache<number, string[]>(CACHE_MAX);
  function identityLabels(identity: number): string[] {
    let l = labelsOf.get(identity);
    if (l) return l;
    const raw = source.identityLabels(identity);
    if (raw) l = reduceCidrLabels(raw);
    else {
      const name = reservedIdentityName(identity);
      l = name && identity !== 0 ? [`reserved:${name}`] : [];
    }
    // identities are derived from their labels, so the mapping is stable: cached while known
    // (an unknown one may be learnt later), bounded anyway
    if (raw || identity < 256) labelsOf.set(identity, l);
    return l;
  }

  const locals = new WeakMap<ResolvedEndpoint, Endpoint>();
  function local(r: ResolvedEndpoint, identity = 0): Endpoint {
    const shared = identity === 0 || identity === r.identity;
    const had = shared ? locals.get(r) : undefined;
    if (had) return had;
    const ep: Endpoint = {
      $typeName: 'flow.Endpoint',
      ID: r.id,
      identity: identity || r.identity,
      clusterName: r.namespace ? (r.clusterName ?? clusterName) : '',
      namespace: r.namespace,
      labels: sorted(r.labels),
      podName: r.pod,
      workloads: r.workloads ? r.workloads.map((w) => ({ $typeName: 'flow.Workload', name: w.name, kind: w.kind })) : NONE,
    };
    if (shared) locals.set(r, ep);
    return ep;
  }

  const message = (identity: number, labels: string[]): Endpoint =>
    ({ $typeName: 'flow.Endpoint', ID: 0, identity, clusterName: '', namespace: '', labels, podName: '', workloads: NONE });

  const remotes = new BoundedCache<number, Endpoint>(CACHE_MAX);
  function remote(identity: number): Endpoint {
    const labels = identityLabels(identity);
    let ep = remotes.get(identity);
    // a new label list for the identity (its cache was cleared, or it became known) makes a new one
    if (ep && ep.labels === labels) return ep;
    ep = message(identity, labels);
    if (labelsOf.get(identity) === labels) remotes.set(identity, ep);
    return ep;
  }

  const byLabels = new WeakMap<readonly string[], Endpoint>();
  function labelled(labels: readonly string[], identity: number): Endpoint {
    let ep = byLabels.get(labels);
    if (!ep || ep.identity !== identity) byLabels.set(labels, (ep = message(identity, sorted(labels))));
    return ep;
  }

  return { local, remote, labelled, identityLabels };
}

/**
 * The flow.IP messages of flows, shared per address pair and way (a connection's flows, and every
 * connection between two pods, have the same): for both flow builders, as the endpoints above.
 */
export function createIpMessages(): (src: string, dst: string, version: IPVersion) => NonNullable<Flow['IP']> {
  const ips = new Map<string, Map<string, NonNullable<Flow['IP']>>>();
  let ipCount = 0;
  return function ipMessage(src, dst, version) {
    let byDst = ips.get(src);
    let m = byDst?.get(dst);
    if (m && m.ipVersion === version) return m;
    if (ipCount >= CACHE_MAX) {
      ips.clear();
      ipCount = 0;
      byDst = undefined;
    }
    if (!byDst) ips.set(src, (byDst = new Map()));
    m = { $typeName: 'flow.IP', source: src, sourceXlated: '', destination: dst, ipVersion: version, encrypted: false };
    byDst.set(dst, m);
    ipCount++;
    return m;
  };
}

/** An address's IP version as flows give it. */
export const ipVersionOf = (ip: string): IPVersion => (ip.includes(':') ? IPVersion.IPv6 : IPVersion.IPv4);
