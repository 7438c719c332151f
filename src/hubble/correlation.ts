/**
 * Network policy correlation (Cilium's `--hubble-network-policy-correlation-enabled`): a
 * policy-verdict event names the policies that decided it, in the flow's
 * {ingress,egress}_{allowed,denied}_by. The deciding MapState entry is looked up exactly as the
 * datapath did (lookupMapState) and its rule origins become flow.Policy messages; a default deny
 * has no entry and names nothing. Results are cached per MapState object (a new one replaces it on
 * every policy change), so the per-event cost is one map lookup.
 */
import { create } from '@bufbuild/protobuf';
import type { DatapathEvent } from '../datapath/types.ts';
import type { MapState } from '../policy/types.ts';
import { lookupMapState } from '../policy/lookup.ts';
import { PolicySchema, type Policy } from './gen/flow/flow_pb.js';

export interface CorrelatedPolicies {
  ingressAllowedBy?: Policy[];
  egressAllowedBy?: Policy[];
  ingressDeniedBy?: Policy[];
  egressDeniedBy?: Policy[];
}

export interface CorrelationDeps {
  mapState(endpointId: number): MapState | undefined;
  revision(): number;
}

const ICMP = new Set([1, 58]);

export function createPolicyCorrelation(deps: CorrelationDeps): (ev: DatapathEvent) => CorrelatedPolicies | undefined {
  const cache = new WeakMap<MapState, Map<string, CorrelatedPolicies | undefined>>();
  return (ev) => {
    if (ev.type !== 5 || !ev.endpointId || (ev.direction !== 'ingress' && ev.direction !== 'egress')) return undefined;
    const ms = deps.mapState(ev.endpointId);
    if (!ms) return undefined;
    const dir = ev.direction;
    const identity = dir === 'ingress' ? ev.srcIdentity : ev.dstIdentity;
    const port = ICMP.has(ev.proto) ? ev.icmpType : ev.dstPort;
    const key = `${dir}/${identity}/${ev.proto}/${port}`;
    let byKey = cache.get(ms);
    if (!byKey) cache.set(ms, (byKey = new Map()));
    if (byKey.has(key)) return byKey.get(key);
    const r = lookupMapState(ms, dir, identity, ev.proto, port);
    const revision = BigInt(deps.revision());
    const policies = (r.entry?.origins ?? []).filter((o) => o.kind !== 'Implicit').map((o) => create(PolicySchema, {
      name: o.name, namespace: o.namespace, kind: o.kind, revision,
      labels: [
        `k8s:io.cilium.k8s.policy.derived-from=${o.kind}`, `k8s:io.cilium.k8s.policy.name=${o.name}`,
        ...(o.namespace ? [`k8s:io.cilium.k8s.policy.namespace=${o.namespace}`] : []),
      ],
    }));
    let out: CorrelatedPolicies | undefined;
    if (policies.length) {
      const denied = r.verdict === 'drop';
      out = dir === 'ingress' ? (denied ? { ingressDeniedBy: policies } : { ingressAllowedBy: policies }) : (denied ? { egressDeniedBy: policies } : { egressAllowedBy: policies });
    }
    byKey.set(key, out);
    return out;
  };
}
