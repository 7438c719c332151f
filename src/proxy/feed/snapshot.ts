/**
 * What the agent hands a proxy process (the policy snapshot) and how it travels: plain JSON over
 * the feed socket. A snapshot is complete but for the ipcache, which comes whole once per
 * connection and as deltas after it (at 10,000 nodes it is 300,000 remote pods: whole on every
 * change it was a 15 MB line every 50 ms), so a proxy that reconnects after an agent restart needs
 * nothing but the next snapshot, and a proxy whose agent is gone keeps judging with the last one it
 * holds: the datapath keeps enforcing the same pinned policy meanwhile.
 *
 * The proxy looks up, never computes: MapStates arrive exactly as the policy engine resolved them
 * (src/policy/types.ts), the ipcache as its winning entries, endpoints as Hubble sees them.
 */
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import type { DnsRejectResponseCode } from '../../common/config.ts';
import { ReservedIdentity } from '../../identity/identity.ts';
import { IPCache, type IPCacheSource } from '../../ipcache/ipcache.ts';
import { mapStateKeyString, type L7Policy, type MapState, type MapStateEntry, type MapStateKey } from '../../policy/types.ts';

/** An L7 policy with its identity sets as arrays (JSON has no Set). */
type WireL7 = Omit<L7Policy, 'perSelector'> & { perSelector: (Omit<L7Policy['perSelector'][number], 'identities'> & { identities: number[] | 'all' })[] };
type WireEntry = Omit<MapStateEntry, 'l7'> & { l7: WireL7 | null };

export interface WireMapState {
  entries: [MapStateKey, WireEntry][];
  defaultDeny: MapState['defaultDeny'];
}

/** What the DNS proxy in the proxy process (src/proxy/dns/standalone.ts) needs beside the policy. */
export interface StandaloneDNSInfo {
  serviceIp: string;
  serverIp?: string;
  /** the cluster DNS server's peer when it is not a local endpoint (identity by labels) */
  server?: { identity: number; labels?: string[] };
  rejectResponseCode: DnsRejectResponseCode;
  hold: boolean;
}

export interface ProxySnapshot {
  /** the agent's policy revision the MapStates belong to */
  revision: number;
  /** the agent's pid (a new one: the agent restarted) */
  agentPid: number;
  /** this node's addresses (identity host) */
  nodeAddrs: string[];
  /** local endpoints with their address */
  endpoints: { ip: string; ep: ResolvedEndpoint }[];
  /** the agent's ipcache: winning entries; absent: the proxy keeps the one it holds (with its deltas) */
  ipcache?: { prefix: string; identity: number; source: IPCacheSource }[];
  /** identity → labels (access records, AI budgets key on them) */
  identities: [number, string[]][];
  /** endpoint id → its MapState */
  mapStates: [number, WireMapState][];
  /** the resources the proxies read (Secrets for headerMatches and TLS contexts, AIPolicies) */
  resources: { Secret: unknown[]; AIPolicy: unknown[] };
  /** DNS names of addresses (the AI filter's destination names), from the agent's FQDN cache */
  names: [string, string[]][];
  /** the DNS proxy's settings and the cluster DNS server (absent: no DNS proxy in the proxy process) */
  dns?: StandaloneDNSInfo;
}

/** Changed winning ipcache entries since the last snapshot or delta: [prefix, identity, source]; prefixes gone. */
export interface IpcacheDelta {
  upserts: [string, number, IPCacheSource][];
  deletes: string[];
}

/** Applies a delta to a proxy's ipcache (it holds winners only: one claim per prefix). */
export function applyIpcacheDelta(ipc: IPCache, d: IpcacheDelta): void {
  for (const p of d.deletes) ipc.delete(p);
  for (const [p, identity, source] of d.upserts) {
    ipc.delete(p);
    ipc.upsert(p, identity, source);
  }
}

export function encodeMapState(ms: MapState): WireMapState {
  const entries: [MapStateKey, WireEntry][] = [];
  for (const { key, entry } of ms.entries.values()) {
    const l7 = entry.l7 ? { ...entry.l7, perSelector: entry.l7.perSelector.map((s) => ({ ...s, identities: s.identities === 'all' ? 'all' as const : [...s.identities] })) } : null;
    entries.push([key, { ...entry, l7 }]);
  }
  return { entries, defaultDeny: ms.defaultDeny };
}

export function decodeMapState(w: WireMapState): MapState {
  const entries: MapState['entries'] = new Map();
  for (const [key, e] of w.entries) {
    const l7: L7Policy | null = e.l7 ? { ...e.l7, perSelector: e.l7.perSelector.map((s) => ({ ...s, identities: s.identities === 'all' ? 'all' : new Set(s.identities) })) } : null;
    entries.set(mapStateKeyString(key), { key, entry: { ...e, l7 } });
  }
  return { entries, defaultDeny: w.defaultDeny };
}

/** A snapshot made ready for lookups: maps by key, never a scan per connection. */
export interface PolicyView {
  revision: number;
  agentPid: number;
  endpointByIp(ip: string): ResolvedEndpoint | undefined;
  identityOfOther(ip: string): number;
  mapState(endpointId: number): MapState | undefined;
  identityLabels(id: number): string[] | undefined;
  namesForIp(ip: string): readonly string[];
  resources: ProxySnapshot['resources'];
  /** the ipcache the view looks peers up in (deltas are applied to it) */
  ipcache: IPCache;
  dns: StandaloneDNSInfo | undefined;
  nodeAddrs: ReadonlySet<string>;
}

/** `prev`: the ipcache of the view before, kept when the snapshot carries none. */
export function viewOf(s: ProxySnapshot, prev?: IPCache): PolicyView {
  const eps = new Map(s.endpoints.map((e) => [e.ip, e.ep]));
  let ipcache = prev ?? new IPCache();
  if (s.ipcache) {
    ipcache = new IPCache();
    for (const e of s.ipcache) ipcache.upsert(e.prefix, e.identity, e.source);
  }
  const nodeAddrs = new Set(s.nodeAddrs);
  const mapStates = new Map(s.mapStates.map(([id, w]) => [id, decodeMapState(w)]));
  const labels = new Map(s.identities);
  const names = new Map(s.names);
  return {
    revision: s.revision, agentPid: s.agentPid, resources: s.resources, ipcache, dns: s.dns, nodeAddrs,
    endpointByIp: (ip) => eps.get(ip),
    identityOfOther: (ip) => (nodeAddrs.has(ip) ? ReservedIdentity.host : ipcache.lookupIdentity(ip)),
    mapState: (id) => mapStates.get(id),
    identityLabels: (id) => labels.get(id),
    namesForIp: (ip) => names.get(ip) ?? [],
  };
}
