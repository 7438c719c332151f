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
import type { FQDNSelector } from '../../api/types.ts';
import { MembraneError } from '../../common/errors.ts';
import { ReservedIdentity } from '../../identity/identity.ts';
import { IPCache, type IPCacheSource } from '../../ipcache/ipcache.ts';
import { mapStateKeyString, type L7Policy, type MapState, type MapStateEntry, type MapStateKey } from '../../policy/types.ts';

/** An L7 policy with its identity sets as arrays (JSON has no Set). */
type WireL7 = Omit<L7Policy, 'perSelector'> & { perSelector: (Omit<L7Policy['perSelector'][number], 'identities'> & { identities: number[] | 'all' })[] };
export type WireEntry = Omit<MapStateEntry, 'l7'> & { l7: WireL7 | null };

export interface WireMapState {
  entries: [MapStateKey, WireEntry][];
  defaultDeny: MapState['defaultDeny'];
  /** the endpoint's change count this MapState is at (AgentPolicy.mapStateRevision; deltas name it) */
  rev?: number;
}

/** What the DNS proxy in the proxy process (src/proxy/dns/standalone.ts) needs beside the policy. */
export interface StandaloneDNSInfo {
  serviceIp: string;
  serverIp?: string;
  /** the cluster DNS server's peer when it is not a local endpoint (identity by labels) */
  server?: { identity: number; labels?: string[] };
  rejectResponseCode: DnsRejectResponseCode;
  hold: boolean;
  /**
   * Every toFQDNs selector of the node's policies (Repository.fqdnSelectors(), what the agent's
   * name manager labels IPs with): an answer for a name none of them selects is not held (the
   * agent would make no identity or policy-map entry for its IPs). Absent (an older agent): every
   * answer not already allowed is held, as before.
   */
  fqdnSelectors?: FQDNSelector[];
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

export function encodeEntry(entry: MapStateEntry): WireEntry {
  const l7 = entry.l7 ? { ...entry.l7, perSelector: entry.l7.perSelector.map((s) => ({ ...s, identities: s.identities === 'all' ? 'all' as const : [...s.identities] })) } : null;
  return { ...entry, l7 };
}

function decodeEntry(e: WireEntry): MapStateEntry {
  const l7: L7Policy | null = e.l7 ? { ...e.l7, perSelector: e.l7.perSelector.map((s) => ({ ...s, identities: s.identities === 'all' ? 'all' : new Set(s.identities) })) } : null;
  return { ...e, l7 };
}

export function encodeMapState(ms: MapState): WireMapState {
  const entries: [MapStateKey, WireEntry][] = [];
  for (const { key, entry } of ms.entries.values()) entries.push([key, encodeEntry(entry)]);
  return { entries, defaultDeny: ms.defaultDeny };
}

export function decodeMapState(w: WireMapState): MapState {
  const entries: MapState['entries'] = new Map();
  for (const [key, e] of w.entries) entries.set(mapStateKeyString(key), { key, entry: decodeEntry(e) });
  return { entries, defaultDeny: { ...w.defaultDeny } };
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

/**
 * What changed since the last snapshot or delta when only FQDN learning moved things (Cilium's
 * incremental identity update): a new identity's labels, the policy-map entries of the selectors
 * that now select it, its IP's names and ipcache entry. A proxy applies it to the view it holds
 * instead of decoding a whole snapshot per new FQDN IP (each one O(every identity, entry and
 * name): the answer's hold grew with the cache).
 */
export interface ProxyDelta {
  /**
   * per endpoint: entries upserted and deleted, the default deny when it changed; `gone`: the
   * endpoint's MapState is no more; `full`: the upserts are the whole MapState. `base` is the
   * change count the part applies to, `rev` the one it makes: a proxy holding another count for
   * the endpoint has missed a change and asks for a whole snapshot (applyDelta).
   */
  mapStates: { ep: number; upserts: [MapStateKey, WireEntry][]; deletes: MapStateKey[]; defaultDeny?: MapState['defaultDeny']; gone?: true; full?: true; base?: number; rev?: number }[];
  identities: [number, string[]][];
  identitiesGone: number[];
  names: [string, string[]][];
  namesGone: string[];
  ipcache?: IpcacheDelta;
}

interface ViewParts {
  s: Pick<ProxySnapshot, 'revision' | 'agentPid' | 'resources' | 'dns'>;
  eps: Map<string, ResolvedEndpoint>;
  ipcache: IPCache;
  nodeAddrs: ReadonlySet<string>;
  mapStates: Map<number, MapState>;
  /** each MapState's change count as the agent sent it */
  revs: Map<number, number>;
  labels: Map<number, string[]>;
  names: Map<string, string[]>;
}
const partsOf = new WeakMap<PolicyView, ViewParts>();

function makeView(p: ViewParts): PolicyView {
  const { s, eps, ipcache, nodeAddrs, mapStates, labels, names } = p;
  const v: PolicyView = {
    revision: s.revision, agentPid: s.agentPid, resources: s.resources, ipcache, dns: s.dns, nodeAddrs,
    endpointByIp: (ip) => eps.get(ip),
    identityOfOther: (ip) => (nodeAddrs.has(ip) ? ReservedIdentity.host : ipcache.lookupIdentity(ip)),
    mapState: (id) => mapStates.get(id),
    identityLabels: (id) => labels.get(id),
    namesForIp: (ip) => names.get(ip) ?? [],
  };
  partsOf.set(v, p);
  return v;
}

/** `prev`: the ipcache of the view before, kept when the snapshot carries none. */
export function viewOf(s: ProxySnapshot, prev?: IPCache): PolicyView {
  let ipcache = prev ?? new IPCache();
  if (s.ipcache) {
    ipcache = new IPCache();
    for (const e of s.ipcache) ipcache.upsert(e.prefix, e.identity, e.source);
  }
  return makeView({
    s, ipcache, eps: new Map(s.endpoints.map((e) => [e.ip, e.ep])), nodeAddrs: new Set(s.nodeAddrs),
    mapStates: new Map(s.mapStates.map(([id, w]) => [id, decodeMapState(w)])), labels: new Map(s.identities), names: new Map(s.names),
    revs: new Map(s.mapStates.map(([id, w]) => [id, w.rev ?? 0])),
  });
}

/**
 * Per MapState: how many times applyDelta changed it in place. What is remembered per MapState
 * (the DNS judge's lookups) is valid for one generation.
 */
const generations = new WeakMap<MapState, number>();
export const mapStateGeneration = (ms: MapState): number => generations.get(ms) ?? 0;

/** Per egress identity lane of a MapState: its allow entries and its denies of every port, kept through deltas. */
interface Lane { allows: number; denyAll: number }
const egressLanes = new WeakMap<MapState, Map<number, Lane>>();
function laneNote(lanes: Map<number, Lane>, key: MapStateKey, entry: MapStateEntry, by: 1 | -1): void {
  if (key.direction !== 'egress') return;
  let l = lanes.get(key.identity);
  if (!l) lanes.set(key.identity, (l = { allows: 0, denyAll: 0 }));
  if (entry.verdict === 'deny') { if (key.proto === 0) l.denyAll += by; } else l.allows += by;
  if (!l.allows && !l.denyAll) lanes.delete(key.identity);
}
/**
 * The egress lane of `identity` (0: the wildcard lane): its allow entries and its denies of every
 * port. Indexed once per MapState (its entries walked), then kept by applyDelta: O(1) per call.
 */
export function egressLane(ms: MapState, identity: number): Readonly<Lane> | undefined {
  let lanes = egressLanes.get(ms);
  if (!lanes) {
    lanes = new Map();
    for (const { key, entry } of ms.entries.values()) laneNote(lanes, key, entry, 1);
    egressLanes.set(ms, lanes);
  }
  return lanes.get(identity);
}

/** A delta part for another change count than the proxy holds for the endpoint: a change was lost or reordered. */
function diverged(ep: number, held: number, base: number): MembraneError {
  return new MembraneError('FEED_DELTA_DIVERGED', `endpoint ${ep}: a MapState delta for change ${base}, the proxy holds change ${held}`, {
    hint: 'the proxy applies no delta before the whole snapshot it asks the agent for',
  });
}

/**
 * The view after a delta: a new view object; MapStates, identities, names and the ipcache are
 * changed in place, O(what the delta carries). A MapState's generation (mapStateGeneration) moves
 * with each change, its egress lane index (egressLane) is kept. Throws FEED_DELTA_DIVERGED, before
 * changing anything, when a part applies to another change count than the one held.
 */
export function applyDelta(v: PolicyView, d: ProxyDelta): PolicyView {
  const p = partsOf.get(v);
  if (!p) throw new Error('applyDelta: not a view made by viewOf');
  for (const m of d.mapStates) {
    if (m.gone || m.base === undefined) continue;
    const held = p.revs.get(m.ep) ?? 0;
    if (held !== m.base) throw diverged(m.ep, held, m.base);
  }
  if (d.ipcache) applyIpcacheDelta(p.ipcache, d.ipcache);
  for (const id of d.identitiesGone) p.labels.delete(id);
  for (const [id, l] of d.identities) p.labels.set(id, l);
  for (const ip of d.namesGone) p.names.delete(ip);
  for (const [ip, n] of d.names) p.names.set(ip, n);
  for (const m of d.mapStates) {
    if (m.gone) { p.mapStates.delete(m.ep); p.revs.delete(m.ep); continue; }
    if (m.rev !== undefined) p.revs.set(m.ep, m.rev);
    const old = m.full ? undefined : p.mapStates.get(m.ep);
    if (!old) {
      const entries: MapState['entries'] = new Map();
      for (const [key, e] of m.upserts) entries.set(mapStateKeyString(key), { key, entry: decodeEntry(e) });
      p.mapStates.set(m.ep, { entries, defaultDeny: m.defaultDeny ?? { ingress: false, egress: false } });
      continue;
    }
    const lanes = egressLanes.get(old);
    for (const k of m.deletes) {
      const ks = mapStateKeyString(k);
      const had = old.entries.get(ks);
      if (!had) continue;
      if (lanes) laneNote(lanes, had.key, had.entry, -1);
      old.entries.delete(ks);
    }
    for (const [key, e] of m.upserts) {
      const ks = mapStateKeyString(key);
      const entry = decodeEntry(e);
      const had = old.entries.get(ks);
      if (lanes) {
        if (had) laneNote(lanes, had.key, had.entry, -1);
        laneNote(lanes, key, entry, 1);
      }
      old.entries.set(ks, { key, entry });
    }
    if (m.defaultDeny) { old.defaultDeny.ingress = m.defaultDeny.ingress; old.defaultDeny.egress = m.defaultDeny.egress; }
    generations.set(old, mapStateGeneration(old) + 1);
  }
  return makeView(p);
}
