/**
 * The agent's side of the external L7 proxy (`--external-envoy-proxy`): what a snapshot holds,
 * when it changes, and where the proxy's access records go. The proxy process
 * (src/proxy/process.ts) judges with the last snapshot it got, so the agent can restart under it.
 */
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import type { AccessLogRecord } from '../common/access-log.ts';
import type { AgentPolicyEngine } from '../policy/agent-engine.ts';
import type { Agent } from './agent.ts';
import type { EndpointRecord } from './endpoints.ts';
import { createFeedServer, type FeedServer } from '../proxy/feed/server.ts';
import { encodeMapState, type IpcacheDelta, type ProxySnapshot, type StandaloneDNSInfo } from '../proxy/feed/snapshot.ts';
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
}

export function createAgentProxyFeed(deps: AgentProxyFeedDeps): FeedServer {
  const { policy } = deps;
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
  const server = createFeedServer({
    socketPath: deps.socketPath,
    logger: deps.logger,
    // counters bumped by the changes themselves: nothing rebuilt per poll (it was every endpoint
    // as a string and the DNS settings as JSON, every 50 ms)
    fingerprint() {
      const a = deps.agent();
      return [policy.revision(), policy.mapStateVersion(), namesVersion, resourceVersion, a ? a.endpointTable().version() : -1, dnsPrint()];
    },
    async snapshot(): Promise<ProxySnapshot> {
      const a = deps.agent();
      const eps = a?.endpointTable().all() ?? [];
      const names: [string, string[]][] = [];
      for (const prefix of fqdnPrefixes) {
        const ip = prefix.replace(/\/(32|128)$/, '');
        const n = deps.namesForIp(ip);
        if (n.length) names.push([ip, n]);
      }
      const mapStates: ProxySnapshot['mapStates'] = [];
      for (const ep of eps) {
        const ms = policy.mapState(ep.id);
        if (ms) mapStates.push([ep.id, encodeMapState(ms)]);
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
      if (lost) deps.logger.warn({ lost }, 'access records the proxy could not keep while the agent was away');
      const table = deps.agent()?.endpointTable();
      const byId = (id: number) => { const ep = table?.byId(id); return ep ? deps.resolved(ep) : undefined; };
      const { records, bad } = decodeRecords(items, byId);
      for (const r of records) deps.emitRecord(r);
      if (bad) deps.logger.warn({ code: 'FEED_RECORDS_REFUSED', bad }, 'access records from the proxy process that are not records: skipped');
    },
    ...(deps.dns ? { onDnsAnswers: deps.dns.onReports } : {}),
  });
  return {
    ...server,
    async start() {
      for (const e of policy.engine.ipcache.entries()) if (e.source === 'fqdn') fqdnPrefixes.add(e.prefix);
      offIpcache = policy.engine.ipcache.onChange((ev) => {
        changed.add(ev.entry.prefix);
        // an upsert names the winner: an endpoint or node claim over an FQDN one hides its names
        if (ev.type === 'upsert' && ev.entry.source === 'fqdn') fqdnPrefixes.add(ev.entry.prefix);
        else fqdnPrefixes.delete(ev.entry.prefix);
        if (ev.entry.source === 'fqdn') namesVersion++; // the snapshot's names follow the FQDN entries
        // the remote cluster DNS server's identity is the ipcache's for its address
        const dnsServer = deps.dns?.serverIp();
        // (startsWith first: no two strings made per remote pod of a restart's listing)
        if (dnsServer && ev.entry.prefix.startsWith(dnsServer) && (ev.entry.prefix === `${dnsServer}/32` || ev.entry.prefix === `${dnsServer}/128`)) identitiesVersion++;
      });
      offIdentities = policy.engine.allocator.watch(() => { identitiesVersion++; });
      offResources = deps.agent()?.resources.watch((ev) => {
        if (ev.type === 'put' ? ev.resource.kind === 'Secret' || ev.resource.kind === 'AIPolicy' : ev.key.startsWith('Secret/') || ev.key.startsWith('AIPolicy/')) resourceVersion++;
      });
      await server.start();
    },
    async stop() {
      offIpcache?.();
      offResources?.();
      offIdentities?.();
      await server.stop();
    },
  };
}
