/**
 * The DNS proxy and FQDN name manager of one node, wired to the agent's parts through options
 * (the composition root, src/agent/compose.ts, creates this and calls start/stop; where pods and
 * the cluster DNS live comes from the agent's PodNetworkProvider, never from the lab itself):
 *
 *   datapath steers :53 ─► DNS proxy ─decide─► endpoint MapState (lookup) + decideDNS (names cached, decide.ts)
 *                              │ allowed answer
 *                              ▼
 *                        name manager ─ allocate fqdn identities ─► selector cache (policy engine)
 *                              │ onUpdate: regenerate → every changed policy map, then ipcache
 *                              ▼
 *                        proxy releases the answer (first SYN after a lookup is allowed)
 *
 * Expired names are collected every `gcIntervalMs` (default 1 s); an IP still used by a tracked
 * connection of the endpoint (datapath conntrack) is never removed.
 */
import { readFileSync } from 'node:fs';
import type { Datapath, IPCacheEntry } from '../../datapath/types.ts';
import { proxySlot, DEFAULT_PROXY_PORTS } from '../../common/proxy-ports.ts';
import type { DnsRejectResponseCode } from '../../common/config.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import type { AgentPolicyEngine } from '../../policy/agent-engine.ts';
import type { AccessLogSink } from '../../common/access-log.ts';
import type { Logger } from '../../common/logger.ts';
import { ReservedIdentity } from '../../identity/identity.ts';
import { parseIP, parsePrefix, prefixContainsIP, type Prefix } from '../../ipcache/prefix.ts';
import { createNameManager, type FQDNUpdate, type NameManager } from '../../fqdn/name-manager.ts';
import { setIpTransparent } from '../../sys/sockopt.ts';
import { allowNonLocalBind } from '../../sys/net.ts';
import { MembraneError } from '../../common/errors.ts';
import { checkWith, endpointQuerySchema } from '../../api/requests.ts';
import { createDNSProxy, type DNSProxy, type DNSProxyStats } from './proxy.ts';
import type { DnsAnswerReport } from '../feed/wire.ts';
import type { StandaloneDNSInfo } from '../feed/snapshot.ts';
import { createOrigDstLookup } from './origdst.ts';
import { createDNSQueryJudge } from './decide.ts';
import { writeFileAtomicSync } from '../../common/atomic-file.ts';

/** The node's local endpoints, as the agent's endpoint table knows them. */
export interface DNSEndpoints {
  byIp(ip: string): ResolvedEndpoint | undefined;
  has(id: number): boolean;
}

export interface NodeDNSOptions {
  node: string;
  /** where the DNS cache is saved across agent restarts (default: none) */
  cacheFile?: string;
  /** the node's BPF pin directory (the conntrack map that tells a query's original destination) */
  pinRoot: string;
  datapath: Datapath;
  policy: AgentPolicyEngine;
  /** the DNS proxy's access records (the agent hands them to Hubble's L7 parser) */
  emitRecord: AccessLogSink;
  logger: Logger;
  endpoints: DNSEndpoints;
  /** addresses of the node itself (host identity) */
  nodeAddrs: readonly string[];
  /** enable-ipv6: the proxy listens for IPv6 queries too (UDP and TCP, in the IPv6 slots) */
  ipv6?: boolean;
  /** prefixes inside the cluster: answers there never become FQDN identities */
  clusterPrefixes: readonly string[];
  /** the kube-dns Service address and the server behind it */
  clusterDNS: { serviceIp: string; serverIp(): string | undefined };
  minTTL?: number;
  maxIPsPerName?: number;
  idleGracePeriodMs?: number;
  gcIntervalMs?: number;
  rejectResponseCode?: DnsRejectResponseCode;
  /** hold answers until the datapath has their IPs (default true; off only to show what it prevents) */
  hold?: boolean;
  /** after new IPs are in the ipcache, before the answer is released: the external L7 proxy holds them too */
  afterIPCache?(): Promise<void>;
  /**
   * The DNS proxy runs in the external L7 proxy process (src/proxy/dns/standalone.ts): this node
   * keeps the name manager, takes the proxy's answer reports (`onReports`) and asks it for its
   * stats; it binds nothing and registers no proxy slot.
   */
  standalone?: { stats(): Promise<DNSProxyStats> };
}


export interface NodeDNS {
  nameManager: NameManager;
  /** undefined: the proxy runs in the external proxy process (`standalone`) */
  proxy: DNSProxy | undefined;
  /** the standalone proxy's answer reports: allocate and write as for the in-agent proxy, then `done` */
  onReports(items: DnsAnswerReport[], done: (ids: number[]) => void): void;
  /** for the standalone proxy's snapshot */
  info(): StandaloneDNSInfo;
  /** restores the DNS cache and starts the name manager (before the agent's first reconcile) */
  start(): Promise<void>;
  /**
   * Takes queries (binds the proxy, registers it in the datapath): after the agent's first
   * reconcile, so that no query is judged before its endpoint has policy (a restarted agent's
   * proxy would otherwise refuse allowed names for a moment; meanwhile the datapath fails closed).
   */
  listen(): Promise<void>;
  stop(): Promise<void>;
  /** FQDN prefixes for the agent's ipcache mirror (extraIPCache); also syncs toFQDNs selectors. */
  ipcacheEntries(): IPCacheEntry[];
  namesForIp(ip: string): string[];
  /** The `membrane status` proxies row (none when standalone: the proxy process reports its own). */
  statusEntry(): { name: string; port: number; state: string } | undefined;
  /** Agent API routes: GET /v1/fqdn/cache (`cilium fqdn cache list`), GET /v1/dns/proxy (stats). */
  routes(): Record<string, (body: unknown, q: URLSearchParams) => Promise<unknown>>;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Whether an address lies in one of the prefixes (IPv4 and IPv6). */
function inPrefixes(prefixes: readonly Prefix[]): (ip: string) => boolean {
  return (ip) => {
    const a = parseIP(ip);
    return !!a && prefixes.some((p) => prefixContainsIP(p, a.family, a.addr));
  };
}

export function createNodeDNS(o: NodeDNSOptions): NodeDNS {
  const log = o.logger.child({ subsys: 'fqdn' });
  const inCluster = inPrefixes(o.clusterPrefixes.map((c) => parsePrefix(c)).filter((p): p is Prefix => !!p));
  const entries = new Map<string, number>();
  let selectorsJson = '';

  // Conntrack view for GC (which IPs do endpoints still talk to), refreshed at most every 500 ms.
  let ctMemo: { at: number; set: Set<string> } | undefined;
  function inUse(ip: string, ep: number): boolean {
    const now = Date.now();
    if (!ctMemo || now - ctMemo.at > 500) {
      const set = new Set<string>();
      try {
        for (const e of o.datapath.conntrack()) {
          if (e.direction === 'egress') set.add(`${e.endpointId}|${e.dstIp}`);
        }
      } catch (err) {
        log.warn({ err: String(err) }, 'conntrack read failed: keeping every expired IP');
        return true; // fail safe: never cut what we cannot see
      }
      ctMemo = { at: now, set };
    }
    return ctMemo.set.has(`${ep}|${ip}`);
  }

  let flushTimer: NodeJS.Timeout | undefined;
  async function writePolicy(): Promise<void> {
    const deltas = o.policy.regenerate();
    for (const [id, d] of deltas) await o.datapath.applyPolicy(id, d);
  }
  async function applyUpdate(u: FQDNUpdate): Promise<void> {
    // Policy maps first (the new identities' entries), then the ipcache that makes IPs use them.
    await writePolicy();
    if (u.ipcacheUpserts.length) {
      await o.datapath.upsertIPCache(u.ipcacheUpserts.map((x) => ({ prefix: x.prefix, identity: x.identity, endpointId: 0 })));
      for (const x of u.ipcacheUpserts) {
        entries.set(x.prefix, x.identity);
        // The agent's own ipcache too: the L7 proxies look peers up there.
        o.policy.engine.ipcache.upsert(x.prefix, x.identity, 'fqdn');
      }
      await o.afterIPCache?.();
    }
    if (u.ipcacheDeletes.length) {
      await o.datapath.deleteIPCache(u.ipcacheDeletes.map((d) => d.prefix));
      for (const d of u.ipcacheDeletes) {
        entries.delete(d.prefix);
        o.policy.engine.ipcache.delete(d.prefix, 'fqdn');
      }
    }
    // Identities this batch replaced are released after it: drop their policy entries soon.
    if (!flushTimer) {
      flushTimer = setTimeout(() => { flushTimer = undefined; writePolicy().catch((e: unknown) => log.warn({ err: String(e) }, 'policy flush')); }, 50);
      flushTimer.unref();
    }
  }

  const nameManager = createNameManager({
    allocator: o.policy.engine.allocator,
    onUpdate: applyUpdate,
    cache: {
      minTTL: o.minTTL ?? 0,
      maxIPsPerName: o.maxIPsPerName ?? 50,
      idleGracePeriodMs: o.idleGracePeriodMs ?? 0,
      isInUse: inUse,
    },
    skipIP: inCluster,
    gcIntervalMs: o.gcIntervalMs ?? 1000,
    onError: (err) => log.warn({ err: String(err) }, 'name manager'),
  });

  const CLUSTER_DNS_IP = o.clusterDNS.serviceIp;
  const dnsServerIp = () => o.clusterDNS.serverIp();
  const candidates = (): string[] => {
    const c = [CLUSTER_DNS_IP];
    const d = dnsServerIp();
    if (d) c.unshift(d);
    return c;
  };
  const origDst = createOrigDstLookup({ pinRoot: o.pinRoot, candidates });

  const endpointOf = (ip: string): ResolvedEndpoint | undefined => o.endpoints.byIp(ip);
  // The remote cluster DNS server's peer: the identity the ipcache (so the datapath, which
  // redirected the query) gives its address, kept until an identity or an ipcache entry changes.
  // Found by labels before, it could name another identity than the datapath's (a kube-dns
  // identity of other labels, or world while the remote identities were still arriving): the
  // proxy then refused every query the datapath had allowed to it.
  let remoteDNS: { ip: string; identity: number; labels?: string[] } | undefined;
  const unwatchIdentities = o.policy.engine.allocator.watch(() => { remoteDNS = undefined; });
  const unwatchIpcache = o.policy.engine.ipcache.onChange(() => { remoteDNS = undefined; });
  function peerOf(ip: string): { identity: number; endpoint?: ResolvedEndpoint; labels?: string[] } {
    // The ClusterIP of kube-dns stands for its backend (policy applies after translation).
    const target = ip === CLUSTER_DNS_IP ? dnsServerIp() ?? ip : ip;
    const ep = endpointOf(target);
    if (ep) return { identity: ep.identity, endpoint: ep };
    let id: number;
    if (o.nodeAddrs.includes(target)) id = ReservedIdentity.host;
    else if (target === dnsServerIp()) {
      // the cluster DNS server on another node (every query's server)
      if (remoteDNS?.ip !== target) {
        const rid = o.policy.engine.ipcache.lookupIdentity(target);
        const labels = o.policy.identityLabels(rid);
        remoteDNS = { ip: target, identity: rid, ...(labels ? { labels } : {}) };
      }
      return { identity: remoteDNS.identity, ...(remoteDNS.labels ? { labels: remoteDNS.labels } : {}) };
    } else id = nameManager.identityForIP(target) ?? o.policy.engine.ipcache.lookupIdentity(target);
    const labels = o.policy.identityLabels(id);
    return { identity: id, ...(labels ? { labels } : {}) };
  }

  const judgeQuery = createDNSQueryJudge();
  const proxy = o.standalone ? undefined : createDNSProxy({
    nodeName: o.node,
    port: DEFAULT_PROXY_PORTS.dns,
    endpointByIp: endpointOf,
    originalDestination: (client, port, ep) => origDst(client, port, ep.id),
    peerOf,
    decide: (ep, remoteIdentity, proto, port, qname) => judgeQuery(o.policy.mapState(ep.id), remoteIdentity, proto, port, qname),
    upstreamFor: (dst) => (dst === CLUSTER_DNS_IP ? dnsServerIp() ?? dst : dst),
    onAnswer: (epId, qname, ips, ttl) => nameManager.onDNSResponse(epId, qname, ips, ttl),
    emit: o.emitRecord,
    rejectResponseCode: o.rejectResponseCode ?? 'refused',
    transparent: setIpTransparent,
    // dnsProxyHold=0 (MEMBRANE_DNS_PROXY_HOLD=0) releases answers before the datapath has their
    // IPs: only for showing what the hold prevents (dns-race test's control run); never in production.
    hold: o.hold ?? true,
    ipv6: o.ipv6 ?? false,
    register: (fd, family) => o.datapath.setProxyListener(proxySlot('dns', 'egress', 'UDP', family), fd),
    // DNS over TCP: the same proxy, on the TCP slots (the datapath picks the slot by transport and family).
    registerTcp: (fd, family) => o.datapath.setProxyListener(proxySlot('dns', 'egress', 'TCP', family), fd),
    log,
  });

  // The DNS cache survives an agent restart (Cilium restores it too): live entries are saved
  // every few seconds and replayed at start with their remaining TTL, so IPs allowed before the
  // restart stay allowed without a new lookup. Zombies are not saved: GC re-derives them.
  let saveTimer: NodeJS.Timeout | undefined;
  let lastSaved = '';
  function save(): void {
    if (!o.cacheFile) return;
    const rows: [number, string, string, number][] = [];
    for (const id of nameManager.cache.endpoints()) {
      for (const e of nameManager.cache.endpoint(id).entries()) if (!e.zombie && e.expiresInMs > 0) rows.push([id, e.name, e.ip, Date.now() + e.expiresInMs]);
    }
    const text = JSON.stringify(rows);
    if (text === lastSaved) return;
    try {
      writeFileAtomicSync(o.cacheFile, text);
      lastSaved = text;
    } catch (e) {
      log.warn({ err: String(e) }, 'saving the DNS cache');
    }
  }
  function restore(): number {
    if (!o.cacheFile) return 0;
    let rows: [number, string, string, number][] = [];
    try { rows = JSON.parse(readFileSync(o.cacheFile, 'utf8')) as typeof rows; } catch { return 0; }
    const now = Date.now();
    let n = 0;
    for (const [id, name, ip, expires] of rows) {
      const ttl = Math.ceil((expires - now) / 1000);
      if (ttl <= 0 || !o.endpoints.has(id)) continue;
      void nameManager.onDNSResponse(id, name, [ip], ttl);
      n++;
    }
    return n;
  }

  return {
    nameManager,
    proxy,
    async start() {
      const restored = restore();
      if (restored) log.info({ entries: restored }, 'DNS cache restored');
      if (o.cacheFile) {
        saveTimer = setInterval(save, 2000);
        saveTimer.unref();
      }
      // Replies leave from the original destination's address (not local to the node).
      const nonLocal = allowNonLocalBind();
      if (nonLocal) log.warn({ err: nonLocal }, 'cannot enable ip_nonlocal_bind: DNS answers may fail');
      nameManager.start();
    },
    async listen() {
      if (!proxy) return;
      await proxy.start();
      log.info({ port: proxy.port }, 'DNS proxy listening');
    },
    onReports(items, done) {
      const now: number[] = [];
      for (const r of items) {
        let w: Promise<void> | null = null;
        // an endpoint gone meanwhile: nothing to allow; the proxy releases (its datapath entry is gone too)
        if (o.endpoints.has(r.ep)) {
          try { w = nameManager.onDNSResponse(r.ep, r.name, r.ips, r.ttl); } catch (e) { log.warn({ err: String(e) }, 'dns answer report'); }
        }
        if (!r.id) { w?.catch(() => {}); continue; }
        if (!w) now.push(r.id);
        else w.then(() => done([r.id]), () => done([r.id]));
      }
      if (now.length) done(now);
    },
    info() {
      const serverIp = dnsServerIp();
      let server: StandaloneDNSInfo['server'];
      if (serverIp && !o.endpoints.byIp(serverIp)) {
        const p = peerOf(serverIp);
        server = { identity: p.identity, ...(p.labels ? { labels: p.labels } : {}) };
      }
      return { serviceIp: CLUSTER_DNS_IP, ...(serverIp ? { serverIp } : {}), ...(server ? { server } : {}), rejectResponseCode: o.rejectResponseCode ?? 'refused', hold: o.hold ?? true, fqdnSelectors: o.policy.engine.repository.fqdnSelectors() };
    },
    async stop() {
      if (saveTimer) clearInterval(saveTimer);
      save();
      nameManager.stop();
      unwatchIdentities();
      unwatchIpcache();
      if (flushTimer) clearTimeout(flushTimer);
      await proxy?.stop();
    },
    ipcacheEntries() {
      const sels = o.policy.engine.repository.fqdnSelectors();
      const js = JSON.stringify(sels);
      if (js !== selectorsJson) {
        selectorsJson = js;
        nameManager.setSelectors(sels).catch((e: unknown) => log.warn({ err: String(e) }, 'fqdn selectors'));
      }
      return [...entries].map(([prefix, identity]) => ({ prefix, identity, endpointId: 0 }));
    },
    statusEntry: () => (proxy ? { name: 'dns (egress, UDP)', port: proxy.port, state: proxy.boundPort() ? 'listening' : 'stopped' } : undefined),
    routes() {
      return {
        'GET /v1/fqdn/cache': async (_b, q) => {
          const query = checkWith(endpointQuerySchema, Object.fromEntries(q));
          if (!query.ok) throw Object.assign(new MembraneError('API_BAD_REQUEST', `GET /v1/fqdn/cache: ${query.issues[0]!.message}`, { hint: 'query: endpoint=<endpoint ID>' }), { issues: query.issues });
          const want = query.value.endpoint;
          const items = [];
          for (const id of nameManager.cache.endpoints()) {
            if (want && String(id) !== want) continue;
            for (const e of nameManager.cache.endpoint(id).entries()) items.push({ endpoint: id, ...e, identity: nameManager.identityForIP(e.ip) ?? null });
          }
          return { items, selectors: nameManager.selectorKeys(), stats: nameManager.stats() };
        },
        // ?last=N: the hold percentiles of the last N holds only (a bench's round)
        'GET /v1/dns/proxy': async (_b, q) => {
          const st = proxy ? proxy.stats() : await o.standalone!.stats();
          const last = Number(q.get('last') ?? 0);
          const holds = (Number.isInteger(last) && last > 0 ? st.holdsMs.slice(-last) : [...st.holdsMs]).sort((a, b) => a - b);
          return {
            ...st, holdsMs: undefined,
            hold: { count: holds.length, p50Ms: percentile(holds, 50), p99Ms: percentile(holds, 99), maxMs: holds.at(-1) ?? 0 },
          };
        },
      };
    },
    namesForIp: (ip) => nameManager.namesForIP(ip).map((n) => (n.length > 1 && n.endsWith('.') ? n.slice(0, -1) : n)),
  };
}
