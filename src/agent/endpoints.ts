/**
 * Endpoint IDs: 1..65535, stable per pod across agent restarts (the pinned BPF maps are keyed by
 * them), persisted in the kvstore under membrane/endpoints/<node>/<namespace>/<pod>.
 */
import type { KVStore } from '../kvstore/types.ts';
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import { MembraneError } from '../common/errors.ts';

/** What the agent keeps of a local endpoint (persisted): the shared endpoint view and its network. */
export interface EndpointRecord extends Omit<ResolvedEndpoint, 'workloads' | 'clusterName'> {
  ip: string;
  /** enable-ipv6: the pod's IPv6 address */
  ip6?: string;
  mac: string;
  netns: string;
  hostIfname: string;
  hostIfindex: number;
  createdAt: string;
  /** the controller that owns the pod (Hubble's `workloads`), e.g. Deployment/api */
  workload?: { kind: string; name: string };
  /** endpoint options set by `membrane endpoint config` (Cilium's endpoint configuration); absent: the agent's setting */
  options?: EndpointOptions;
}

/** Cilium's per-endpoint options that membrane implements (`cilium endpoint config <id> PolicyAuditMode=Enabled`). */
export interface EndpointOptions {
  PolicyAuditMode?: boolean;
}

export async function createEndpointTable(kv: KVStore, node: string) {
  const prefix = `membrane/endpoints/${node}/`;
  const byKey = new Map<string, EndpointRecord>();
  // Flow enrichment looks endpoints up by IP per event: a map, never a scan.
  const byIp = new Map<string, EndpointRecord>();
  // and by id (the proxy process's access records name endpoints by id)
  const byId = new Map<number, EndpointRecord>();
  for (const p of await kv.list(prefix)) {
    const r = JSON.parse(p.value) as EndpointRecord;
    byKey.set(`${r.namespace}/${r.pod}`, r);
    byId.set(r.id, r);
    byIp.set(r.ip, r);
    if (r.ip6) byIp.set(r.ip6, r);
  }
  // bumped on every change (the proxy feed's snapshot follows it, told by the listeners)
  let version = 0;
  const listeners = new Set<() => void>();
  const bump = () => {
    version++;
    for (const l of listeners) l();
  };
  const usedIds = () => new Set([...byKey.values()].map((r) => r.id));
  return {
    get: (ns: string, pod: string) => byKey.get(`${ns}/${pod}`),
    all: () => [...byKey.values()].sort((a, b) => a.id - b.id),
    byId: (id: number) => byId.get(id),
    byIp: (ip: string) => byIp.get(ip),
    version: () => version,
    /** Calls `cb` after each change (version() bumped); returns the unsubscribe. */
    onChange(cb: () => void): () => void {
      listeners.add(cb);
      return () => { listeners.delete(cb); };
    },
    /** The ID this pod has, or a new free one (never 0). */
    idFor(ns: string, pod: string): number {
      const have = byKey.get(`${ns}/${pod}`);
      if (have) return have.id;
      const used = usedIds();
      // Start from a pseudo-random point like Cilium so IDs are not all tiny sequential numbers.
      for (let i = 0, id = 100 + (byKey.size * 37) % 3000; i < 65535; i++, id = id >= 65535 ? 1 : id + 1) if (!used.has(id)) return id;
      throw new MembraneError('ENDPOINT_ID_EXHAUSTED', 'no free endpoint ID on this node');
    },
    async save(r: EndpointRecord) {
      const prev = byKey.get(`${r.namespace}/${r.pod}`);
      if (prev && byIp.get(prev.ip) === prev) byIp.delete(prev.ip);
      if (prev?.ip6 && byIp.get(prev.ip6) === prev) byIp.delete(prev.ip6);
      if (prev && byId.get(prev.id) === prev) byId.delete(prev.id);
      byKey.set(`${r.namespace}/${r.pod}`, r);
      byId.set(r.id, r);
      byIp.set(r.ip, r);
      if (r.ip6) byIp.set(r.ip6, r);
      bump();
      await kv.put(`${prefix}${r.namespace}/${r.pod}`, JSON.stringify(r));
    },
    async remove(ns: string, pod: string) {
      const prev = byKey.get(`${ns}/${pod}`);
      if (prev && byIp.get(prev.ip) === prev) byIp.delete(prev.ip);
      if (prev?.ip6 && byIp.get(prev.ip6) === prev) byIp.delete(prev.ip6);
      if (prev && byId.get(prev.id) === prev) byId.delete(prev.id);
      byKey.delete(`${ns}/${pod}`);
      bump();
      await kv.delete(`${prefix}${ns}/${pod}`);
    },
  };
}
export type EndpointTable = Awaited<ReturnType<typeof createEndpointTable>>;
