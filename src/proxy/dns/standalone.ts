/**
 * The DNS proxy in the proxy process (src/proxy/process/process.ts), beside the HTTP/TLS proxies: Cilium's
 * standalone DNS proxy. It judges queries with the agent's last policy snapshot (the endpoint's
 * MapState, its DNS rules) and reports each allowed answer's IPs to the agent over the feed; the
 * agent's name manager allocates the FQDN identities and writes the policy maps and the ipcache
 * as for an in-agent proxy (src/proxy/dns/node.ts), then says `dns-done`.
 *
 *   answer ─► its name selected by no toFQDNs selector of the node (the snapshot's list)? forwarded
 *             at once, reported without waiting: no identity or policy entry will follow for it
 *   answer ─► every IP in the PINNED ipcache with an identity the endpoint's egress policy allows
 *             (and, with the agent there, the same identity in the snapshot the HTTP proxy judges by)?
 *               yes ─► forwarded at once; reported without waiting (the name manager learns the
 *                      name and its TTL)
 *               no  ─► held until the agent says the datapath has the IPs (after the snapshot holding
 *                      them reached this process); agent there: at most maxHoldMs, then released as the
 *                      in-agent proxy does; agent away: held until it is back and done, or SERVFAIL
 *                      after awayHoldMs — never forwarded with IPs the datapath would not allow
 *
 * A denied name is refused from the snapshot as before, agent or not. This process killed: its
 * sockets leave the sockmap, the datapath drops steered DNS (178): lookups fail closed, never
 * bypass to the real server.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { join } from 'node:path';
import type { DnsAccessRecord } from '../../common/access-log.ts';
import { DEFAULT_PROXY_PORTS, proxySlot } from '../../common/proxy-ports.ts';
import { ReservedIdentity } from '../../identity/identity.ts';
import type { MapState } from '../../policy/types.ts';
import { encodeIpcacheKeyInto, IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE } from '../../datapath/linux/codec.ts';
import { hostPrefix } from '../../ipcache/prefix.ts';
import { BpfMap } from '../../sys/bpf.ts';
import { setIpTransparent } from '../../sys/sockopt.ts';
import { allowNonLocalBind } from '../../sys/net.ts';
import type { FeedClient } from '../feed/client.ts';
import { egressLane, mapStateGeneration, type PolicyView, type StandaloneDNSInfo } from '../feed/snapshot.ts';
import type { FQDNSelector } from '../../api/types.ts';
import { compileSelector, normalizeName, type NameMatcher } from '../../fqdn/matchpattern.ts';
import { createDNSQueryJudge } from './decide.ts';
import { createOrigDstLookup } from './origdst.ts';
import { createDNSProxy, DNSHoldFailed, type DNSProxy, type DNSProxyStats } from './proxy.ts';

type Log = { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void; debug?(o: unknown, m?: string): void };

export interface StandaloneDNSDeps {
  node: string;
  pinRoot: string;
  view(): PolicyView | undefined;
  feed: Pick<FeedClient, 'reportAnswer' | 'connected'>;
  emit(rec: DnsAccessRecord): void;
  /** emit reads each record during the call (DNSProxyDeps.recordsBorrowed): the feed client's record() */
  recordsBorrowed?: boolean;
  setProxyListener(slot: number, fd: number | null): void;
  /** enable-ipv6: IPv6 listeners too (UDP and TCP, in the IPv6 slots) */
  ipv6?: boolean;
  logger: Log;
  /** agent there: longest hold before the answer is released anyway (default 2000 ms, as in the agent) */
  maxHoldMs?: number;
  /** agent away: longest hold before SERVFAIL (default 4000 ms: before a stub resolver's 5 s retry) */
  awayHoldMs?: number;
  /** bumped by every snapshot, delta and ipcache change the feed applies (absent: nothing is remembered across turns) */
  revision?(): number;
}

export interface StandaloneDNS {
  /** binds and registers the listeners (once the first snapshot is here) */
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): DNSProxyStats;
  statusEntry(): { name: string; port: number; state: string };
}

/**
 * Whether an endpoint's egress policy lets anything through to `identity`: an allow entry for it
 * (or for every identity), or no default deny, and no deny of every port. Two lookups in the
 * MapState's lane index (snapshot.ts egressLane, kept through deltas), never a walk of its entries.
 */
export function egressAllowsIdentity(ms: MapState, identity: number): boolean {
  const own = egressLane(ms, identity);
  const any = egressLane(ms, 0);
  if ((own?.denyAll ?? 0) > 0 || (any?.denyAll ?? 0) > 0) return false;
  return !ms.defaultDeny.egress || (own?.allows ?? 0) > 0 || (any?.allows ?? 0) > 0;
}

/**
 * Whether a toFQDNs selector of the node selects `name` (the answer's question), by the snapshot's
 * list (StandaloneDNSInfo.fqdnSelectors, what the agent's name manager labels IPs with). None
 * does: the agent will make no FQDN identity, policy-map or ipcache entry for the answer's IPs,
 * so holding it for the agent's round trip (report, name manager, `dns-done`: a wait, no work
 * the pod needs) only delays the lookup; Cilium's proxy likewise waits only for the updates of
 * the selectors a name matched. Unknown (an agent that sends no list) or a selector that does not
 * compile: selected, the answer is held as before. Compiled once per snapshot's list, the verdict
 * kept per name with it.
 */
const selectorMemo = new WeakMap<readonly FQDNSelector[], { matchers: NameMatcher[] | null; names: BoundedCache<string, boolean> }>();
export function fqdnSelected(dns: StandaloneDNSInfo | undefined, name: string): boolean {
  const sels = dns?.fqdnSelectors;
  if (!sels) return true;
  let m = selectorMemo.get(sels);
  if (!m) {
    let matchers: NameMatcher[] | null;
    try { matchers = sels.map((sel) => compileSelector(sel)); } catch { matchers = null; }
    m = { matchers, names: new BoundedCache(4096) };
    selectorMemo.set(sels, m);
  }
  if (m.matchers === null) return true;
  const had = m.names.get(name);
  if (had !== undefined) return had;
  const n = normalizeName(name);
  let hit = false;
  for (const match of m.matchers) if (match(n)) { hit = true; break; }
  m.names.set(name, hit);
  return hit;
}

export function createStandaloneDNS(deps: StandaloneDNSDeps): StandaloneDNS {
  const log = deps.logger;
  const maxHold = deps.maxHoldMs ?? 2000;
  const awayHold = deps.awayHoldMs ?? 4000;
  let proxy: DNSProxy | undefined;
  let ipcache: BpfMap | undefined;
  const ipKey = Buffer.alloc(IPCACHE_KEY_SIZE);
  const ipVal = Buffer.alloc(IPCACHE_VAL_SIZE);

  // The pinned ipcache's answer per address for one turn of the event loop: the answers of one
  // recvmmsg drain (up to 64, mostly the same few IPs) cost one map lookup per IP, not per answer.
  const pinnedMemo = new Map<string, number>();
  /** the snapshot's identity per address, for the same turn (an ipcache LPM from the address text each) */
  const viewMemo = new Map<string, number>();
  const clearMemo = (): void => { pinnedMemo.clear(); viewMemo.clear(); };
  function viewIdentity(v: PolicyView, ip: string): number {
    let id = viewMemo.get(ip);
    if (id === undefined) {
      id = v.identityOfOther(ip);
      if (!pinnedMemo.size && !viewMemo.size) queueMicrotask(clearMemo);
      viewMemo.set(ip, id);
    }
    return id;
  }
  /** The identity the datapath gives an address now (the pinned ipcache's longest match; none: world). */
  function pinnedIdentity(ip: string): number | undefined {
    if (!ipcache) return undefined;
    const had = pinnedMemo.get(ip);
    if (had !== undefined) return had;
    let id: number;
    try {
      encodeIpcacheKeyInto(ipKey, 0, hostPrefix(ip));
      id = ipcache.lookup(ipKey, ipVal) ? ipVal.readUInt32LE(0) : ReservedIdentity.world;
    } catch {
      return undefined;
    }
    if (!pinnedMemo.size && !viewMemo.size) queueMicrotask(clearMemo);
    pinnedMemo.set(ip, id);
    return id;
  }

  /**
   * Answers found already allowed, per MapState and IPs, while nothing the check read can have
   * moved: the feed applied nothing new (the agent writes the pinned ipcache before the delta that
   * tells this process), the agent's presence is the same, and for one second at most. A steady
   * stream of known names then costs a map probe per answer, not a pinned-map syscall and two
   * LPM lookups per IP per turn. Only "allowed" is remembered: anything else is checked again.
   */
  let allowedMemo = new WeakMap<MapState, BoundedCache<string | readonly string[], true>>();
  let memoRevision = -1;
  let memoAgentThere = false;
  let memoClear: NodeJS.Timeout | undefined;

  /** Every IP already allowed by the datapath for this endpoint (and, agent there, judged alike by the HTTP proxy). */
  function alreadyAllowed(v: PolicyView, epId: number, ips: readonly string[]): boolean {
    const ms = v.mapState(epId);
    if (!ms) return false;
    const agentThere = deps.feed.connected();
    const rev = deps.revision?.();
    if (rev === undefined) return checkAllowed(v, ms, ips, agentThere);
    if (rev !== memoRevision || agentThere !== memoAgentThere) {
      allowedMemo = new WeakMap();
      memoRevision = rev;
      memoAgentThere = agentThere;
    }
    // a list of several (or no) addresses by the list itself: wire.ts interns them, as it does one address's text
    const key = ips.length === 1 ? ips[0]! : ips;
    let byIps = allowedMemo.get(ms);
    if (byIps?.has(key)) return true;
    if (!checkAllowed(v, ms, ips, agentThere)) return false;
    if (!byIps) { byIps = new BoundedCache(4096); allowedMemo.set(ms, byIps); }
    byIps.set(key, true);
    return true;
  }

  function checkAllowed(v: PolicyView, ms: MapState, ips: readonly string[], agentThere: boolean): boolean {
    for (const ip of ips) {
      const id = pinnedIdentity(ip);
      if (id === undefined || !egressAllowsIdentity(ms, id)) return false;
      if (agentThere && viewIdentity(v, ip) !== id) return false;
    }
    return true;
  }

  /** The report of the answer in hand: reportAnswer copies what it keeps, so one object serves every answer. */
  const report = { ep: 0, name: '', ips: [] as string[], ttl: 0 };
  function onAnswer(epId: number, name: string, ips: string[], ttl: number): Promise<void> | null {
    const v = deps.view();
    report.ep = epId; report.name = name; report.ips = ips; report.ttl = ttl;
    // reported either way (the agent's cache learns the name: flows, namesForIp, its TTL)
    if (v && (v.dns?.hold === false || !fqdnSelected(v.dns, name) || alreadyAllowed(v, epId, ips))) {
      deps.feed.reportAnswer(report, false);
      return null;
    }
    const done = deps.feed.reportAnswer(report, true)!;
    return new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const check = (): void => {
        const waited = Date.now() - t0;
        if (deps.feed.connected() && waited >= maxHold) { resolve(); return; }
        if (waited >= awayHold) { reject(new DNSHoldFailed('the agent did not make the answer\'s IPs allowed in time')); return; }
        timer = setTimeout(check, 100);
      };
      timer = setTimeout(check, Math.min(maxHold, awayHold));
      void done.then(() => { clearTimeout(timer); resolve(); });
    });
  }

  // a MapState changes only through applyDelta, which moves its generation: lookups are remembered per generation
  const judgeQuery = createDNSQueryJudge({ generation: mapStateGeneration });
  // one list per DNS view (the origdst lookup asks on every query whose source port is new)
  let candidatesOf: unknown;
  let candidateList: string[] = [];
  const candidates = (): string[] => {
    const d = deps.view()?.dns;
    if (d !== candidatesOf) {
      candidatesOf = d;
      candidateList = !d ? [] : d.serverIp ? [d.serverIp, d.serviceIp] : [d.serviceIp];
    }
    return candidateList;
  };

  function peerOf(ip: string): { identity: number; endpoint?: ReturnType<PolicyView['endpointByIp']>; labels?: string[] } {
    const v = deps.view();
    if (!v) return { identity: ReservedIdentity.world };
    const d = v.dns;
    // The ClusterIP of kube-dns stands for its backend (policy applies after translation).
    const target = d && ip === d.serviceIp ? d.serverIp ?? ip : ip;
    const ep = v.endpointByIp(target);
    if (ep) return { identity: ep.identity, endpoint: ep };
    if (d?.server && target === d.serverIp) return d.server;
    const id = v.identityOfOther(target);
    const labels = v.identityLabels(id);
    return labels ? { identity: id, labels } : { identity: id };
  }

  return {
    async start() {
      const v = deps.view();
      // the pinned ipcache is read again at least every second (a change no feed message told of)
      memoClear = setInterval(() => { allowedMemo = new WeakMap(); }, 1000);
      memoClear.unref();
      ipcache = BpfMap.fromPin(join(deps.pinRoot, 'mb_ipcache'));
      // Replies leave from the original destination's address (not local to the node).
      const nonLocal = allowNonLocalBind();
      if (nonLocal) log.warn({ err: nonLocal }, 'cannot enable ip_nonlocal_bind: DNS answers may fail');
      const origDst = createOrigDstLookup({ pinRoot: deps.pinRoot, candidates });
      proxy = createDNSProxy({
        nodeName: deps.node,
        port: DEFAULT_PROXY_PORTS.dns,
        endpointByIp: (ip) => deps.view()?.endpointByIp(ip),
        originalDestination: (client, port, ep) => origDst(client, port, ep.id),
        peerOf,
        // peerOf reads the view alone, and every view change bumps the revision
        ...(deps.revision ? { revision: deps.revision } : {}),
        decide: (ep, remoteIdentity, proto, port, qname) => judgeQuery(deps.view()?.mapState(ep.id), remoteIdentity, proto, port, qname),
        upstreamFor: (dst) => {
          const d = deps.view()?.dns;
          return d && dst === d.serviceIp ? d.serverIp ?? dst : dst;
        },
        onAnswer,
        emit: deps.emit,
        ...(deps.recordsBorrowed ? { recordsBorrowed: true } : {}),
        // the agent's setting, as its first snapshot had it (changing it restarts the agent, and this with the next start)
        rejectResponseCode: v?.dns?.rejectResponseCode ?? 'refused',
        transparent: setIpTransparent,
        // the hold's bound is onAnswer's (maxHoldMs with the agent there, awayHoldMs without)
        maxHoldMs: Math.max(maxHold, awayHold) + 1000,
        ipv6: deps.ipv6 ?? false,
        register: (fd, family) => deps.setProxyListener(proxySlot('dns', 'egress', 'UDP', family), fd),
        registerTcp: (fd, family) => deps.setProxyListener(proxySlot('dns', 'egress', 'TCP', family), fd),
        log,
      });
      await proxy.start();
      log.info({ port: proxy.port }, 'DNS proxy listening');
    },
    async stop() {
      if (memoClear) clearInterval(memoClear);
      await proxy?.stop();
      ipcache?.close();
    },
    stats: () => proxy?.stats() ?? { queries: 0, allowed: 0, denied: 0, malformed: 0, dropped: 0, upstreamTimeouts: 0, holdTimeouts: 0, servfail: 0, noOrigDst: 0, batched: 0, recvCalls: 0, timerReads: 0, nodeReads: 0, sent: 0, sendCalls: 0, holdsMs: [] },
    statusEntry: () => ({ name: 'dns (egress, UDP)', port: proxy?.port ?? DEFAULT_PROXY_PORTS.dns, state: proxy?.boundPort() ? 'listening' : 'stopped' }),
  };
}
