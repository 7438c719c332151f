/**
 * The agent's side of the external L7 proxy (`--external-envoy-proxy`): what a snapshot holds,
 * when it changes, and where the proxy's access records go. The proxy process
 * (src/proxy/process/process.ts) judges with the last snapshot it got, so the agent can restart under it.
 */
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import type { AccessLogRecord } from '../common/access-log.ts';
import type { AgentPolicyEngine } from '../policy/agent-engine.ts';
import type { Agent } from './agent.ts';
import type { EndpointRecord } from './endpoints.ts';
import { createFeedServer, type FeedServer } from '../proxy/feed/server.ts';
import { encodeEntry, encodeMapState, type IpcacheDelta, type ProxyDelta, type ProxySnapshot, type StandaloneDNSInfo, type WireEntry } from '../proxy/feed/snapshot.ts';
import type { L7Policy, MapState, MapStateKey } from '../policy/types.ts';
import { decodeRecords, type DnsAnswerReport } from '../proxy/feed/wire.ts';

export interface AgentProxyFeedDeps {
  socketPath: string;
  agent(): Agent | undefined;
  policy: AgentPolicyEngine;
  nodeAddrs: readonly string[];
  resolved(ep: EndpointRecord): ResolvedEndpoint;
  namesForIp(ip: string): string[];
  emitRecord(rec: AccessLogRecord): void;
  /** the DNS proxy runs in the proxy process: its settings go in the snapshot, its answer reports come back */
  dns?: { info(): StandaloneDNSInfo; serverIp(): string | undefined; onReports(items: DnsAnswerReport[], done: (ids: number[]) => void): void };
  logger: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void };
  /** a change no source tells of reaches the proxies within this (server.ts backstopMs; tests) */
  backstopMs?: number;
}

export function createAgentProxyFeed(deps: AgentProxyFeedDeps): FeedServer {
  const { policy } = deps;
  /** a record's peer endpoint by the id the proxy sent: the agent's own view (none: the parser's lookup by address) */
  const endpointById = (id: number): ResolvedEndpoint | undefined => {
    const ep = deps.agent()?.endpointTable().byId(id);
    return ep ? deps.resolved(ep) : undefined;
  };
  const counts = (bad: number, lost: number): void => {
    if (lost) deps.logger.warn({ lost }, 'access records the proxy could not keep while the agent was away');
    if (bad) deps.logger.warn({ code: 'FEED_RECORDS_REFUSED', bad }, 'access records from the proxy process that are not records: skipped');
  };
  // resource and FQDN-name changes counted as they happen; endpoints and policy compared per poll;
  // the ipcache goes whole once per proxy connection, and after it as the prefixes that changed
  let namesVersion = 0;
  let resourceVersion = 0;
  let changed = new Set<string>();
  /**
   * The prefixes whose winning ipcache entry is an FQDN one, kept as the ipcache changes: a
   * snapshot's names come from these, not from a walk of the whole ipcache (every remote pod of a
   * big cluster) for each new FQDN IP, the change that makes most snapshots.
   */
  const fqdnPrefixes = new Set<string>();
  let offIpcache: (() => void) | undefined;
  let offResources: (() => void) | undefined;
  let offIdentities: (() => void) | undefined;
  /** the feed server's kick (server.ts watch): every change below calls it */
  let kick: (() => void) | undefined;
  const changedNow = () => kick?.();
  // The DNS settings' part: rebuilt only when the cluster DNS server's address, an identity or the
  // server's ipcache entry (its identity, as the datapath has it) changed, not on every poll.
  let identitiesVersion = 0;
  let dnsMemo: { v: number; server: string | undefined; json: string } | undefined;
  const dnsPrint = (): string => {
    if (!deps.dns) return '';
    const server = deps.dns.serverIp();
    if (!dnsMemo || dnsMemo.v !== identitiesVersion || dnsMemo.server !== server) dnsMemo = { v: identitiesVersion, server, json: JSON.stringify(deps.dns.info()) };
    return dnsMemo.json;
  };
  // ---- deltas (FQDN learning) -------------------------------------------------------------
  // The policy engine's change log (src/policy/mapstate-changes.ts) names the keys each change
  // touched: a delta carries those keys' entries as the MapState has them now (absent: deleted),
  // O(the keys that changed), never a diff or copy of the endpoint's whole MapState (that made
  // each fresh name cost more as the name set grew). L7 policies' identity sets change in place
  // (the selector cache's live sets): per endpoint the keys of each L7 policy are kept, and when
  // a selection moved, a policy whose sets differ from those last sent has its keys sent again.
  // Each endpoint's part carries the change count it applies to and the one it makes: a proxy
  // that holds another count asks for a whole snapshot instead of diverging (snapshot.ts applyDelta).
  interface Sent { rev: number; l7: Map<L7Policy, Set<string>>; l7Of: Map<string, L7Policy> }
  let sentMapStates = new Map<number, Sent>();
  let sentL7 = new WeakMap<L7Policy, string>();
  const changes = policy.mapStateChanges();
  /** the selector cache's version when L7 identity sets were last compared */
  let selectionsSeen = -1;
  /** identities added and removed since the last snapshot or delta (the allocator's events) */
  let identitiesAdded = new Set<number>();
  let identitiesRemoved = new Set<number>();
  /** prefixes whose FQDN names may have changed since the last snapshot or delta */
  let namesChanged = new Set<string>();
  const l7Print = (l7: L7Policy): string => l7.perSelector.map((x) => (x.identities === 'all' ? 'all' : [...x.identities].sort((a, b) => a - b).join(','))).join('|');
  /** whether an L7 policy's identity sets differ from those last sent (remembers them) */
  const l7Moved = (l7: L7Policy): boolean => {
    const now = l7Print(l7);
    const had = sentL7.get(l7);
    sentL7.set(l7, now);
    return had !== now;
  };
  /** notes which L7 policy key `ks` has now (null: none, or no entry) in what was sent */
  function noteL7(sent: Sent, ks: string, l7: L7Policy | null): void {
    const had = sent.l7Of.get(ks);
    if (had === l7) return;
    if (had) {
      const keys = sent.l7.get(had)!;
      keys.delete(ks);
      if (!keys.size) sent.l7.delete(had);
      sent.l7Of.delete(ks);
    }
    if (!l7) return;
    sent.l7Of.set(ks, l7);
    let keys = sent.l7.get(l7);
    if (!keys) { sent.l7.set(l7, (keys = new Set())); l7Moved(l7); }
    keys.add(ks);
  }
  function remember(id: number, ms: MapState): Sent {
    const sent: Sent = { rev: policy.mapStateRevision(id), l7: new Map(), l7Of: new Map() };
    for (const [ks, v] of ms.entries) if (v.entry.l7) noteL7(sent, ks, v.entry.l7);
    sentMapStates.set(id, sent);
    return sent;
  }
  function mapStatesDelta(): ProxyDelta['mapStates'] {
    const out: ProxyDelta['mapStates'] = [];
    const byEp = new Map<number, ProxyDelta['mapStates'][number]>();
    for (const [id, c] of changes.take()) {
      const ms = c.gone ? undefined : policy.mapState(id);
      const prev = sentMapStates.get(id);
      if (!ms) {
        if (prev) { sentMapStates.delete(id); out.push({ ep: id, upserts: [], deletes: [], gone: true }); }
        continue;
      }
      if (c.full || !prev) {
        const base = prev?.rev ?? 0;
        const sent = remember(id, ms);
        const m: ProxyDelta['mapStates'][number] = { ep: id, upserts: encodeMapState(ms).entries, deletes: [], defaultDeny: { ...ms.defaultDeny }, full: true, base, rev: sent.rev };
        out.push(m); byEp.set(id, m);
        continue;
      }
      const upserts: [MapStateKey, WireEntry][] = [];
      const deletes: MapStateKey[] = [];
      for (const [ks, key] of c.keys) {
        const v = ms.entries.get(ks);
        if (v) upserts.push([v.key, encodeEntry(v.entry)]); else deletes.push(key);
        noteL7(prev, ks, v?.entry.l7 ?? null);
      }
      const m: ProxyDelta['mapStates'][number] = { ep: id, upserts, deletes, ...(c.defaultDeny ? { defaultDeny: { ...ms.defaultDeny } } : {}), base: prev.rev, rev: c.revision };
      prev.rev = c.revision;
      out.push(m); byEp.set(id, m);
    }
    // identity sets of L7 policies: compared only when a selection moved, once per policy however many entries share it
    const sv = policy.engine.selectorCache.version;
    if (sv !== selectionsSeen) {
      selectionsSeen = sv;
      const moved = new Map<L7Policy, boolean>();
      for (const [id, sent] of sentMapStates) {
        const ms = policy.mapState(id);
        if (!ms) continue;
        for (const [l7, keys] of sent.l7) {
          let m = moved.get(l7);
          if (m === undefined) { m = l7Moved(l7); moved.set(l7, m); }
          if (!m) continue;
          let part = byEp.get(id);
          if (!part) {
            // an endpoint whose entries did not change: its count stays (the proxy applies this part to the same count)
            part = { ep: id, upserts: [], deletes: [], base: sent.rev, rev: sent.rev };
            out.push(part); byEp.set(id, part);
          }
          if (part.full) continue;
          for (const ks of keys) {
            const v = ms.entries.get(ks);
            if (v) part.upserts.push([v.key, encodeEntry(v.entry)]);
          }
        }
      }
    }
    return out;
  }
  const dropChanges = (): void => { changes.take(); };

  const server = createFeedServer({
    socketPath: deps.socketPath,
    logger: deps.logger,
    ...(deps.backstopMs ? { backstopMs: deps.backstopMs } : {}),
    // sent on change: the policy's revision and MapStates, the endpoint table, and (start below)
    // the ipcache, identities and resources tell; the DNS server's address (a file) the backstop
    watch(k) {
      const table = deps.agent()?.endpointTable();
      // (an agent without these, as tests make, is polled as before)
      if (!table || typeof table.onChange !== 'function' || !policy.onMapStateVersion) return undefined;
      kick = k;
      const offs = [policy.engine.repository.onChange(changedNow), policy.onMapStateVersion(changedNow), table.onChange(changedNow)];
      return () => { kick = undefined; for (const off of offs) off(); };
    },
    // counters bumped by the changes themselves: nothing rebuilt per poll (it was every endpoint
    // as a string and the DNS settings as JSON, every 50 ms)
    fingerprint() {
      const a = deps.agent();
      return [policy.revision(), resourceVersion, a ? a.endpointTable().version() : -1, dnsPrint()];
    },
    // what FQDN learning moves (a new identity, its policy entries and names): sent as deltas
    deltaPrint: () => [policy.mapStateVersion(), namesVersion, identitiesVersion],
    delta() {
      const d: Omit<ProxyDelta, 'ipcache'> = { mapStates: mapStatesDelta(), identities: [], identitiesGone: [], names: [], namesGone: [] };
      for (const id of identitiesRemoved) if (!identitiesAdded.has(id)) d.identitiesGone.push(id);
      for (const id of identitiesAdded) {
        const labels = policy.identityLabels(id);
        if (labels) d.identities.push([id, labels]); else d.identitiesGone.push(id);
      }
      identitiesAdded = new Set();
      identitiesRemoved = new Set();
      for (const prefix of namesChanged) {
        const ip = prefix.replace(/\/(32|128)$/, '');
        const n = fqdnPrefixes.has(prefix) ? deps.namesForIp(ip) : [];
        if (n.length) d.names.push([ip, n]); else d.namesGone.push(ip);
      }
      namesChanged = new Set();
      const empty = !d.mapStates.length && !d.identities.length && !d.identitiesGone.length && !d.names.length && !d.namesGone.length;
      return empty ? undefined : d;
    },
    async snapshot(): Promise<ProxySnapshot> {
      const a = deps.agent();
      const eps = a?.endpointTable().all() ?? [];
      // deltas start over from what this snapshot holds (the MapStates are read below, in the same turn)
      sentMapStates = new Map();
      sentL7 = new WeakMap();
      dropChanges();
      selectionsSeen = policy.engine.selectorCache.version;
      identitiesAdded = new Set();
      identitiesRemoved = new Set();
      namesChanged = new Set();
      const names: [string, string[]][] = [];
      for (const prefix of fqdnPrefixes) {
        const ip = prefix.replace(/\/(32|128)$/, '');
        const n = deps.namesForIp(ip);
        if (n.length) names.push([ip, n]);
      }
      const mapStates: ProxySnapshot['mapStates'] = [];
      for (const ep of eps) {
        const ms = policy.mapState(ep.id);
        if (!ms) continue;
        const sent = remember(ep.id, ms);
        mapStates.push([ep.id, { ...encodeMapState(ms), rev: sent.rev }]);
      }
      return {
        revision: policy.revision(), agentPid: process.pid, nodeAddrs: [...deps.nodeAddrs],
        endpoints: eps.flatMap((ep) => { const r = deps.resolved(ep); return ep.ip6 ? [{ ip: ep.ip, ep: r }, { ip: ep.ip6, ep: r }] : [{ ip: ep.ip, ep: r }]; }),
        identities: policy.identities().map((i) => [i.id, i.labels]), mapStates,
        resources: a ? { Secret: await a.resources.list('Secret'), AIPolicy: await a.resources.list('AIPolicy') } : { Secret: [], AIPolicy: [] },
        names,
        ...(deps.dns ? { dns: deps.dns.info() } : {}),
      };
    },
    ipcache: () => [...policy.engine.ipcache.entries()].map((e) => ({ prefix: e.prefix, identity: e.identity, source: e.source })),
    drainIpcache() {
      if (!changed.size) return undefined;
      const d: IpcacheDelta = { upserts: [], deletes: [] };
      for (const p of changed) {
        const w = policy.engine.ipcache.get(p);
        if (w) d.upserts.push([p, w.identity, w.source]); else d.deletes.push(p);
      }
      changed = new Set();
      return d;
    },
    onRecords(items, lost) {
      const { records, bad } = decodeRecords(items, endpointById);
      for (const r of records) deps.emitRecord(r);
      counts(bad, lost);
    },
    // binary frames (every proxy of this build): records made straight from the frame's bytes, an
    // HTTP one lent for the call (emitRecord is Hubble's ingestRecord: it keeps none of a record)
    frameRecords: { endpointById, onRecord: deps.emitRecord, onFrame: counts },
    ...(deps.dns ? { onDnsAnswers: deps.dns.onReports } : {}),
  });
  return {
    ...server,
    async start() {
      for (const e of policy.engine.ipcache.entries()) if (e.source === 'fqdn') fqdnPrefixes.add(e.prefix);
      offIpcache = policy.engine.ipcache.onChange((ev) => {
        changed.add(ev.entry.prefix);
        const had = fqdnPrefixes.has(ev.entry.prefix);
        // an upsert names the winner: an endpoint or node claim over an FQDN one hides its names
        if (ev.type === 'upsert' && ev.entry.source === 'fqdn') fqdnPrefixes.add(ev.entry.prefix);
        else fqdnPrefixes.delete(ev.entry.prefix);
        if (ev.entry.source === 'fqdn' || had !== fqdnPrefixes.has(ev.entry.prefix)) {
          namesVersion++; // the snapshot's names follow the FQDN entries
          namesChanged.add(ev.entry.prefix);
        }
        // the remote cluster DNS server's identity is the ipcache's for its address
        const dnsServer = deps.dns?.serverIp();
        // (startsWith first: no two strings made per remote pod of a restart's listing)
        if (dnsServer && ev.entry.prefix.startsWith(dnsServer) && (ev.entry.prefix === `${dnsServer}/32` || ev.entry.prefix === `${dnsServer}/128`)) identitiesVersion++;
        changedNow();
      });
      offIdentities = policy.engine.allocator.watch((ev) => {
        identitiesVersion++;
        if (ev.type === 'add') identitiesAdded.add(ev.identity.id);
        else { identitiesAdded.delete(ev.identity.id); identitiesRemoved.add(ev.identity.id); }
        changedNow();
      });
      offResources = deps.agent()?.resources.watch((ev) => {
        if (ev.type === 'put' ? ev.resource.kind === 'Secret' || ev.resource.kind === 'AIPolicy' : ev.key.startsWith('Secret/') || ev.key.startsWith('AIPolicy/')) { resourceVersion++; changedNow(); }
      });
      await server.start();
    },
    async stop() {
      changes.close();
      offIpcache?.();
      offResources?.();
      offIdentities?.();
      await server.stop();
    },
  };
}
