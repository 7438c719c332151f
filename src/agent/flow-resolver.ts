/**
 * How the agent's flows name their endpoints (Hubble's EndpointResolver, src/hubble/flow.ts): a
 * local endpoint by the agent's table, a pod on another node by the cluster's remote store, an
 * identity's labels by the policy engine, DNS names by the FQDN cache, the deciding policies by
 * network policy correlation. It runs per datapath event (two addresses each), so it only looks
 * up: views are made once per endpoint record or remote pod and kept while they stay the same.
 * One home for the agent (compose.ts) and the in-process bench of its event path
 * (bench/hubble/datapath-events.ts).
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import type { EndpointResolver } from '../hubble/flow.ts';
import { createPolicyCorrelation } from '../hubble/correlation.ts';
import type { MapState } from '../policy/types.ts';
import type { EndpointRecord } from './endpoints.ts';

export interface FlowResolverDeps {
  /** this node's endpoint at an address */
  localByIp(ip: string): EndpointRecord | undefined;
  /** pods on other nodes (cluster mode); read at once, never kept (the store may refill one record: RemoteStore.peek) */
  remoteEndpoint?: (ip: string) => { identity: number; namespace?: string; pod?: string } | undefined;
  identityLabels(identity: number): string[] | undefined;
  mapState(endpointId: number): MapState | undefined;
  revision(): number;
}

export interface FlowResolver extends EndpointResolver {
  /** A local endpoint's view (shared with the proxies, which look up local endpoints only). */
  local(ep: EndpointRecord): ResolvedEndpoint;
  /**
   * DNS names for flows' source_names / destination_names: `has` says whether the FQDN cache knows
   * the address at all (one map lookup; most addresses in flows have no name), `names` its names.
   */
  setNames(names: { has(ip: string): boolean; names(ip: string): string[] }): void;
}

/** Remote pod views kept at most (cleared when full). */
const REMOTE_VIEWS_MAX = 65536;

export function createFlowResolver(deps: FlowResolverDeps): FlowResolver {
  // one resolved view per endpoint record (records are replaced, never mutated, when an endpoint
  // changes), not a new object per flow
  const resolvedViews = new WeakMap<EndpointRecord, ResolvedEndpoint>();
  const local = (ep: EndpointRecord): ResolvedEndpoint => {
    let r = resolvedViews.get(ep);
    if (!r) {
      r = { id: ep.id, identity: ep.identity, namespace: ep.namespace, pod: ep.pod, labels: ep.labels, ...(ep.workload ? { workloads: [ep.workload] } : {}) };
      resolvedViews.set(ep, r);
    }
    return r;
  };
  // and one per remote pod (the store has no record per pod: src/agent/remote-store.ts), kept while
  // its identity, namespace and name stay: its identity's labels are built and sorted once, not
  // once per flow
  const remoteViews = new BoundedCache<string, ResolvedEndpoint>(REMOTE_VIEWS_MAX);
  const resolver: FlowResolver = {
    local,
    byIp(ip) {
      const ep = deps.localByIp(ip);
      if (ep) return local(ep);
      const r = deps.remoteEndpoint?.(ip);
      if (!r?.namespace || !r.pod) return undefined;
      const had = remoteViews.get(ip);
      if (had && had.identity === r.identity && had.namespace === r.namespace && had.pod === r.pod) return had;
      // an identity not (yet) known here has no labels: not kept, so they show once it is
      const labels = deps.identityLabels(r.identity);
      const v: ResolvedEndpoint = { id: 0, identity: r.identity, namespace: r.namespace, pod: r.pod, labels: labels ?? [] };
      if (labels) remoteViews.set(ip, v);
      return v;
    },
    identityLabels: (id) => deps.identityLabels(id),
    // policy-verdict flows name the policies that decided them (--print-policy-names)
    policiesFor: createPolicyCorrelation({ mapState: (id) => deps.mapState(id), revision: () => deps.revision() }),
    setNames(n) {
      // an address the cache does not know has no names: no arrays made for it (two per address
      // and event otherwise, as the cache lists an address's names)
      resolver.namesForIp = (ip) => (n.has(ip) ? n.names(ip) : undefined);
    },
  };
  return resolver;
}
