/**
 * The DNS proxy (spec policy.md §6.1): the datapath steers port-53 traffic of endpoints whose
 * egress policy has `rules.dns` to this listener (bpf_sk_assign to the socket registered in the
 * proxy slot). For each query:
 *
 *   client endpoint (by source IP) + original destination ─► DNS rules of the endpoint for the
 *   destination's identity (policy/l7.ts decideDNS)
 *     denied  ─► REFUSED (or NXDOMAIN) from the proxy, L7 flow DROPPED
 *     allowed ─► forwarded from the node namespace (not steered: only pod veths are) to the
 *                original destination (a ClusterIP goes to a backend); the answer's IPs go to
 *                the name manager, and the answer is HELD until the ipcache and every policy
 *                map have them (onAnswer's promise; at most maxHoldMs), then sent to the client
 *                from the original destination's address: the first SYN after a lookup is
 *                never dropped.
 *   malformed / truncated / oversized ─► FORMERR (or dropped when there is no header), a flow.
 *
 * Datagrams move in batches (src/sys/udp-batch.ts): libuv's poll says a listener or an upstream
 * socket is readable (src/sys/udp-poll.ts: Node itself reads none of them) and recvmmsg reads
 * what is queued into a preallocated arena; every reply and upstream send of that read is queued
 * per socket and leaves in one sendmmsg before the callback returns. Where the watch cannot be
 * set up, Node's 'message' event hands over the first datagram and recvmmsg drains the rest (its
 * sends leave at the microtask after the handler). A malformed datagram in a batch is judged on
 * its own (FORMERR or dropped) and never forwarded; its neighbours are untouched. Under load a
 * socket with a backlog is read on a 250 µs timer instead of on each wake-up (COALESCE_US).
 *
 * Where a query's CPU goes (bench/dns/run.ts --perf, 2026-12-08, before coalescing: proxy process
 * ~16 µs, agent ~4 µs a query): the proxy process's kernel work is ~60 % of its CPU, most of it
 * inside sendmmsg, where each datagram's delivery through the veth into the receiving pod's socket
 * (softirq, the to_container program, the receiver's wake-up) runs on the sender's CPU; that is
 * the floor of a forwarder with four datagram legs. Its user space: the access records (feed
 * encoding, the frame's copy and write: ~2 µs), this file's and wire.ts's work (~1.7 µs), and
 * each wake-up's epoll, libuv dispatch and koffi calls (~1.5 µs at ~4 datagrams a read, which
 * coalescing divides by ~4). The agent's ~4 µs are the two records' flows and metrics
 * (src/hubble): with the records switched off it spent 0.2-0.4 µs a query.
 *
 * Both families, one path: with `ipv6` a UDP and a TCP listener of each family (IPv6 on ::1, in
 * the IPv6 sockmap slots); a client is an interned SockAddr whatever its family, and replies,
 * upstream sends and conntrack lookups take the family from it. Node cannot read a UDP
 * datagram's original destination (IP_RECVORIGDSTADDR), so the caller supplies
 * `originalDestination` (origdst.ts reads it from the datapath's conntrack).
 * A query whose original destination cannot be established is refused, never judged or
 * answered on a guess: no reply (one from a guessed address is dropped by the client anyway),
 * a DROPPED record with the reason, counted in `noOrigDst`.
 * Replies leave through a per-address socket bound (non-locally, IP_TRANSPARENT) to that
 * destination's address and port 53. The hot path never throws: every failure is a reply or a
 * counted drop.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { putU16be, u16be } from '../../common/bytes.ts';
import { createSocket, type Socket } from 'node:dgram';
import { connect as netConnect, createServer as createTcpServer, type Server as TcpServer, type Socket as NetSocket } from 'node:net';
import { MembraneError } from '../../common/errors.ts';
import { DEFAULT_PROXY_PORTS, proxyListenHost, type ProxyFamily } from '../../common/proxy-ports.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import type { AccessPeer, DnsAccessRecord } from '../../common/access-log.ts';
import { RCODE, answerFacts, answerFactsAt, errorReply, parseQuery, queryAt, questionReply, type AnswerFacts, type Question } from './wire.ts';
import { RecvBatch, SendBatch, dgramFd } from '../../sys/udp-batch.ts';
import { watchReadable, type ReadableWatch, type WatchResult } from '../../sys/udp-poll.ts';
import { tickTimer, type TickTimer } from '../../sys/tick-timer.ts';
import { sockAddrOf, type SockAddr } from '../../sys/sock-addr.ts';

export type DNSProxyEndpoint = ResolvedEndpoint;

/** onAnswer's rejection that turns a held answer into SERVFAIL (never forwarded). */
export class DNSHoldFailed extends Error {}

export interface DNSProxyDeps {
  nodeName: string;
  /** listen port (default DEFAULT_PROXY_PORTS.dns) */
  port?: number;
  /** listen address of the IPv4 listeners (default 0.0.0.0) */
  host?: string;
  /** enable-ipv6: IPv6 listeners too (on `host6`, default ::1), registered in the IPv6 slots */
  ipv6?: boolean;
  host6?: string;
  /** DNS port of upstreams and of the reply sockets' source (default 53; tests use others) */
  dnsPort?: number;
  endpointByIp(ip: string): DNSProxyEndpoint | undefined;
  /**
   * Where the client sent its query (an address of the client's family); not a string: unknown,
   * with the reason (the query is refused with a record).
   */
  originalDestination(client: SockAddr, clientPort: number, ep: DNSProxyEndpoint): string | { readonly reason: string };
  /** Identity (and endpoint, labels) of an address, for the policy decision and flows. */
  peerOf(ip: string): { identity: number; endpoint?: DNSProxyEndpoint; labels?: string[] };
  /**
   * A number that changes whenever anything peerOf or decide reads may have (the proxy process:
   * every snapshot, delta and ipcache change the feed applies). Given, peerOf's answers and a
   * question's decision are kept until it changes; absent (the agent's own proxy, whose views
   * change in place), asked every time.
   */
  revision?(): number;
  /** The DNS decision of the endpoint's egress policy toward (identity, proto, port). */
  decide(ep: DNSProxyEndpoint, remoteIdentity: number, proto: 17 | 6, port: number, qname: string): boolean;
  /** The address to forward to for an original destination (a ClusterIP → a backend). */
  upstreamFor?(dst: string): string;
  /**
   * IPs of an allowed answer; resolves once the datapath has them (null: already there). A
   * rejection with `DNSHoldFailed` answers SERVFAIL instead (the IPs could not be made allowed:
   * the standalone proxy's agent stayed away); any other rejection releases the answer.
   */
  onAnswer(endpointId: number, qname: string, ips: string[], ttl: number): Promise<void> | null;
  /** each query's and answer's access record (the agent hands them to Hubble's L7 parser) */
  emit(rec: DnsAccessRecord): void;
  /**
   * emit reads each record during the call and keeps nothing of it but arrays it is handed
   * (qtypes, ips, cnames, rrtypes: never changed once in a record) and the client peer's identity
   * (the feed pairs a query's request and response records by that object): the proxy then
   * refills the records it emitted, and a query's client peer once its response record was
   * emitted, instead of making them per query. The proxy process's feed reads so.
   */
  recordsBorrowed?: boolean;
  /** `tofqdns-dns-reject-response-code`: refused (default) or nameError. */
  rejectResponseCode?: 'refused' | 'nameError';
  /** Longest hold of an answer waiting for the datapath (ms, default 2000): then it is released. */
  maxHoldMs?: number;
  /** false: release answers at once (only to demonstrate the race the hold prevents). Default true. */
  hold?: boolean;
  upstreamTimeoutMs?: number;
  /**
   * Under load, a watched socket is read on a timer of this period (µs) instead of on each
   * wake-up (coalesce); 0: always on each wake-up. Default COALESCE_US.
   */
  coalesceUs?: number;
  /** Sets IP_TRANSPARENT on a socket fd (src/sys/sockopt.ts). */
  transparent?(fd: number): void;
  /** Registers a family's UDP listener with the datapath (setProxyListener(proxySlot('dns', 'egress', 'UDP', family), fd)). */
  register?(fd: number | null, family: ProxyFamily): void;
  /** Registers a family's TCP listener (same port) with the datapath. Absent: no TCP listener. */
  registerTcp?(fd: number | null, family: ProxyFamily): void;
  log?: { warn(obj: unknown, msg?: string): void; debug?(obj: unknown, msg?: string): void };
}

export interface DNSProxyStats {
  queries: number;
  allowed: number;
  denied: number;
  malformed: number;
  dropped: number;
  upstreamTimeouts: number;
  holdTimeouts: number;
  servfail: number;
  /** queries refused because their original destination could not be established */
  noOrigDst: number;
  /** datagrams read by recvmmsg (behind the one Node read per wake-up) */
  batched: number;
  /** recvmmsg calls (batched / recvCalls: datagrams per call, empty drains included) */
  recvCalls: number;
  /** reads on a socket's coalescing timer (a backlog: its watch paused; see COALESCE_US) */
  timerReads: number;
  /**
   * sockets (listeners, upstream sockets) read by Node's 'message' because their uv_poll watch could
   * not be set up (src/sys/udp-poll.ts; logged once each as DNS_PROXY_NODE_READS): 0 on the fast path
   */
  nodeReads: number;
  /** datagrams sent by sendmmsg (queries upstream, answers and error replies to clients) and its calls */
  sent: number;
  sendCalls: number;
  /** recent answer-hold times (ms): answer received → datapath has its IPs */
  holdsMs: number[];
}

interface Pending {
  /** the client's address (its family is the query's) */
  from: SockAddr;
  clientPort: number;
  clientId: number;
  dst: string;
  ep: DNSProxyEndpoint;
  qname: string;
  qtypes: string[];
  /**
   * the request record's peers, reused by the response record (same query, moments later); with
   * recordsBorrowed the client peer is the Pending's own, refilled for its next query
   */
  client: AccessPeer;
  server: AccessPeer;
  /** clockUs() when the query came (the sweep answers SERVFAIL once upstreamTimeout has passed since) */
  t0: number;
  /** the query's third header byte (opcode, RD) and its question: a SERVFAIL is made of them and the client's id */
  flags: number;
  question: Question;
  /** false once a closure may still hold it (the first sends before the upstream socket is ready): never reused */
  reusable: boolean;
}

/**
 * A list that keeps its backing store: Array's `length = 0` (and pop past half) gives the store
 * back and the next pushes grow it again, an allocation per handler on the datagram path.
 */
class Slots<T> {
  readonly #a: (T | undefined)[] = [];
  n = 0;
  push(x: T): void { this.#a[this.n++] = x; }
  pop(): T | undefined {
    if (this.n === 0) return undefined;
    const x = this.#a[--this.n];
    this.#a[this.n] = undefined;
    return x;
  }
  at(i: number): T { return this.#a[i]!; }
  /** empties it, dropping the references */
  clear(): void {
    this.#a.fill(undefined, 0, this.n);
    this.n = 0;
  }
}

/** The facts of the answer in hand (answerFactsAt's scratch): read before the next answer, copied by a held one. */
const FACTS: AnswerFacts = { id: 0, rcode: 0, ips: [], ttl: 0, cnames: [], rrtypes: [] };

/** A pooled Pending's peers (shelve): the peers' one shape, so its fields keep their one map. */
const NO_PEER: AccessPeer = { ip: '', port: 0, identity: 0, endpoint: undefined, labels: undefined };

/** The qtypes of a record without a question (shared: records' lists are read only). */
const NO_TYPES = Object.freeze([]) as unknown as string[];

/**
 * A record's time, epoch ms: performance.now() from an anchor the sweep sets again from the wall
 * clock every 250 ms (Date.now() returns a new heap number per call). Written into the record's
 * field here, in a function small enough for performance.now() to be inlined in it: a double
 * returned from a call that is not inlined (or read from a field to be passed on) is a new heap
 * number; stored in a field that holds doubles it is written in place.
 */
let epochAnchor = Date.now() - performance.now();
/**
 * The clock of the batch in hand (performance.now() ms), read once per recvmmsg that returned
 * datagrams (drain); negative outside a batch (a held answer's release, the sweep, TCP): then each
 * reading is the clock's own. The datagrams of one read arrived together and are judged within
 * microseconds: one reading serves their times (a query's t0, its answer's latency, each record's
 * time), where five performance.now() calls per query were ~2 % of the proxy process's CPU
 * (perf, bench/dns/run.ts --perf: FastPerformanceNow, the vDSO's clock_gettime, clockUs). A
 * Float64Array slot: a double kept in a variable would be a new heap number per write.
 */
const BATCH_MS = new Float64Array([-1]);
function nowMs(): number {
  const t = BATCH_MS[0]!;
  return t >= 0 ? t : performance.now();
}
function stampNow(r: DnsAccessRecord): void {
  r.timeMs = epochAnchor + nowMs();
}

/**
 * A query's times: µs on a wheel of 2^30 µs (~18 min), so every value is a small integer (a Smi)
 * wherever it is kept or passed: a performance.now() kept in the Pending and read back to be
 * passed on was a heap number per query. Ages are differences on the wheel (usSince), right for
 * anything younger than a turn of it (an upstream answer or a hold: seconds).
 */
const US_WHEEL = 0x3fffffff;
function clockUs(): number {
  return (nowMs() * 1000) & US_WHEEL;
}
/** µs from `t0` to `t1`, both clockUs() readings */
function usBetween(t0: number, t1: number): number {
  return (t1 - t0) & US_WHEEL;
}
function usSince(t0: number): number {
  return usBetween(t0, clockUs());
}
/** ns since `t0` (clockUs()), as a record's latency: a response makes no BigInt (the flow's is the agent's to make) */
function latencySince(t0: number): number {
  return usSince(t0) * 1000;
}

export interface DNSProxy {
  start(): Promise<void>;
  stop(): Promise<void>;
  stats(): DNSProxyStats;
  readonly port: number;
  /** the bound listener port (differs from `port` when that was 0) */
  boundPort(): number;
}

/** The unspecified address of a client's family: the server of a query whose destination is unknown. */
function unspecified(a: SockAddr): string {
  return a.family === 6 ? '::' : '0.0.0.0';
}

/** A receive arena and how many drains in a row found nothing queued (drain). */
interface Drain {
  batch: RecvBatch;
  empty: number;
  skipped: number;
}

/** A Node-owned datagram socket and its send batch (null: its fd could not be read; sent through dgram). */
interface BatchedSocket {
  s: Socket;
  out: SendBatch | null;
  /** its reads by uv_poll + recvmmsg (udp-poll.ts; null, or its watch null: Node's 'message'); stopped before it closes */
  watch: WatchedSocket | null;
}

/**
 * Read coalescing under load. At full rate the proxy is woken for every few datagrams (~4-5 per
 * recvmmsg in bench/dns/run.ts): each wake-up is an epoll_wait (often a context switch on a
 * machine whose CPUs are all busy), libuv's dispatch and a koffi callback into JS, and each batch
 * a recvmmsg and a sendmmsg through koffi; together with the records that is what a query costs
 * the proxy process beyond the kernel's work per datagram. A read that finds COALESCE_AT or more
 * datagrams queued says the socket has a backlog: its watch is paused and it is read on a timer
 * (src/sys/tick-timer.ts) every coalesceUs for as long as each read still finds STAY_AT or more;
 * then the watch resumes and every datagram wakes the proxy again. A lone query (one
 * outstanding, or a paced stream far below capacity) never reaches the threshold: its latency is
 * unchanged; under load a datagram waits at most one period more. The period is a fraction of a
 * loaded lookup's round trip: with Node's 1 ms timers the proxy's CPU per query fell by a third
 * (batches of ~24) but dnsperf's 64 outstanding queries spent the millisecond waiting (37k → 22k
 * q/s in the same lab).
 */
const COALESCE_US = 250;
const COALESCE_AT = 8;
const STAY_AT = 4;

/** A watched socket's reading state: its watch, and its timer while it is read on one (coalesce). */
interface WatchedSocket {
  watch: ReadableWatch | null;
  /** read on the timer (the watch paused) */
  paused: boolean;
  /** made at its first backlog; a string: none can be made here (the socket is read on each wake-up) */
  timer: TickTimer | string | undefined;
  /** the timer's read (made once per socket) */
  tick: () => void;
}

export function createDNSProxy(deps: DNSProxyDeps): DNSProxy {
  const port = deps.port ?? DEFAULT_PROXY_PORTS.dns;
  const dnsPort = deps.dnsPort ?? 53;
  const maxHold = deps.maxHoldMs ?? 2000;
  // ages are read on a wheel of 2^30 µs (clockUs): a timeout of half of it at most
  const upstreamTimeoutUs = Math.min((deps.upstreamTimeoutMs ?? 3000) * 1000, US_WHEEL >>> 1);
  const reject = deps.rejectResponseCode === 'nameError' ? RCODE.NXDOMAIN : RCODE.REFUSED;
  const coalesceUs = deps.coalesceUs ?? COALESCE_US;
  /** every watched socket's reading state (their timers cleared at stop) */
  const watchedSockets: WatchedSocket[] = [];
  const st: DNSProxyStats = { queries: 0, allowed: 0, denied: 0, malformed: 0, dropped: 0, upstreamTimeouts: 0, holdTimeouts: 0, servfail: 0, noOrigDst: 0, batched: 0, recvCalls: 0, timerReads: 0, nodeReads: 0, sent: 0, sendCalls: 0, holdsMs: [] };
  /** the UDP listeners, one per family, each with its fd (-1 once stopped) */
  const listeners: { s: Socket; fd: number; family: ProxyFamily; ws: WatchedSocket | undefined }[] = [];
  /** one connected socket per upstream address (a connected send skips the address lookup) */
  const upstreams = new Map<string, BatchedSocket>();
  const connecting = new Map<string, Promise<BatchedSocket>>();
  let sweep: NodeJS.Timeout | undefined;
  const tcpServers: { srv: TcpServer; family: ProxyFamily; fd: number }[] = [];
  /** the listeners are in the datapath's slots (closeListeners unregisters them) */
  let slotsRegistered = false;
  const replySockets = new Map<string, BatchedSocket>();
  const replyPending = new Map<string, Promise<BatchedSocket>>();
  /** queries upstream by the id they were forwarded with (a slot per id: no hashing, no Map growth per query) */
  const pending: (Pending | undefined)[] = new Array<Pending | undefined>(65536).fill(undefined);
  let pendingCount = 0;
  /**
   * Pendings whose answer went out at once (or failed to decode), for the next queries: a steady
   * stream reuses them instead of making one per query. Only objects nothing else holds come
   * back (a record takes its values, never the Pending; a held answer's closures keep theirs),
   * and only once the records of their query were emitted (`spent` until flushAll): a borrowed
   * record still queued reads its Pending's client peer.
   */
  const freePending = new Slots<Pending>();
  const spent = new Slots<Pending>();
  function recycle(p: Pending): void {
    if (p.reusable) spent.push(p);
  }
  const borrowed = deps.recordsBorrowed === true;
  /** records emitted to a borrowing sink, refilled for the next ones */
  const freeRecords = new Slots<DnsAccessRecord>();
  let nextId = (Math.random() * 65536) | 0;
  // Batched datagram I/O: queries land in `queries`, answers in `answers` (64 KiB slots: no UDP
  // answer is ever cut); each is read and judged before the next drain reuses the arena.
  const queries: Drain = { batch: new RecvBatch(64, 4096), empty: 0, skipped: 0 };
  const answers: Drain = { batch: new RecvBatch(32, 65536), empty: 0, skipped: 0 };
  /** send batches with queued datagrams, flushed once per handler (a microtask) */
  const dirty = new Slots<SendBatch>();
  /**
   * Access records of the same handler, handed over after its datagrams left: the record work
   * (encoding, the feed) is off the path of a query and of its answer (at one query outstanding
   * it came before each send). In order: a query's request record before its response record.
   */
  const records = new Slots<DnsAccessRecord>();
  let flushQueued = false;
  const flushAll = (): void => {
    flushQueued = false;
    for (let i = 0; i < dirty.n; i++) dirty.at(i).flush();
    dirty.clear();
    // records.n is read each turn: a record emitted meanwhile goes in this flush too
    for (let i = 0; i < records.n; i++) {
      const r = records.at(i);
      try { deps.emit(r); } catch (e) { deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'access record'); }
      if (borrowed && freeRecords.n < 4096) freeRecords.push(r);
    }
    records.clear();
    for (let i = 0; i < spent.n; i++) if (freePending.n < 4096) shelve(spent.at(i));
    spent.clear();
  };
  /**
   * Pools a Pending without what was made for its last query: the server peer and (the sink not
   * borrowing) the client peer are new per query, and a pooled Pending held them through every
   * scavenge while it waited, so V8 promoted them and they were old-generation garbage once it was
   * reused (a deeper Pending of the pool waits seconds). That was the DNS soak's slow rise of
   * the old generation (~0.2 B a query, all of it onQuery's); a borrowed client peer is the
   * Pending's own, refilled for its next query, and stays.
   */
  function shelve(p: Pending): void {
    if (!borrowed) p.client = NO_PEER;
    p.server = NO_PEER;
    freePending.push(p);
  }
  /** A watched socket's reads end here: their sends leave now, not at the microtask after. */
  function flushNow(): void {
    if (flushQueued) flushAll();
  }
  /** inside a watched socket's callback (watched): its flushNow() follows, no microtask is queued */
  let inWatch = false;
  function flushSoon(): void {
    if (!flushQueued) {
      flushQueued = true;
      if (!inWatch) queueMicrotask(flushAll);
    }
  }
  /**
   * A socket Node reads (its 'message' event: the slower path, a 64 KiB read and objects per
   * datagram) because no watch could be set up: counted in stats().nodeReads and said once per
   * socket with a stable code, so the slower path is never silent.
   */
  function nodeRead(socket: string, reason: string): null {
    st.nodeReads++;
    deps.log?.warn({ subsys: 'dns-proxy', code: 'DNS_PROXY_NODE_READS', socket, reason, hint: 'the proxy still answers; its sockets are read one datagram per wake-up by Node (slower): see src/sys/udp-poll.ts' }, 'DNS proxy socket read by Node, not by uv_poll + recvmmsg');
    return null;
  }
  function watchOrNodeReads(socket: string, w: WatchResult): ReadableWatch | null {
    return w.watch ?? nodeRead(socket, w.reason);
  }
  /**
   * A watched socket's callback: what is queued read and judged, then every send and record of it
   * flushed; a backlog moves its reads to a timer (coalesce). `ws` gets the watch once it is set up.
   */
  function watched(fd: number, d: Drain, each: (i: number) => void, ws: WatchedSocket): () => void {
    const read = (): number => {
      d.empty = 0;
      inWatch = true;
      let n = 0;
      try { n = drain(fd, d, each); } finally {
        inWatch = false;
        flushNow();
      }
      return n;
    };
    ws.tick = () => {
      if (!ws.paused) return;
      st.timerReads++;
      if (read() >= STAY_AT) { (ws.timer as TickTimer).arm(coalesceUs); return; }
      ws.paused = false;
      ws.watch?.resume();
    };
    return () => {
      if (read() < COALESCE_AT || coalesceUs <= 0 || ws.watch === null || ws.paused) return;
      ws.timer ??= tickTimer(() => ws.tick());
      if (typeof ws.timer === 'string') return;
      ws.paused = true;
      ws.watch.pause();
      ws.timer.arm(coalesceUs);
    };
  }
  function watchedSocket(): WatchedSocket {
    const ws: WatchedSocket = { watch: null, paused: false, timer: undefined, tick: () => {} };
    watchedSockets.push(ws);
    return ws;
  }
  /** Stops a socket's reads: its watch and its timer. */
  function unwatch(ws: WatchedSocket | undefined): void {
    if (!ws) return;
    ws.paused = false;
    if (typeof ws.timer === 'object') ws.timer.close();
    ws.timer = undefined;
    ws.watch?.stop();
    ws.watch = null;
  }
  function queued(b: SendBatch): void {
    if (b.pending === 1) dirty.push(b);
    flushSoon();
  }

  // peerOf's answers while deps.revision() stays the same (only with a revision: see DNSProxyDeps)
  const peers = new BoundedCache<string, ReturnType<DNSProxyDeps['peerOf']>>(4096);
  /** the server peers (ip, port 53), shared by the records of every query to that server meanwhile */
  const serverPeers = new BoundedCache<string, AccessPeer>(4096);
  let peersRevision: number | undefined;
  function peerInfo(ip: string): ReturnType<DNSProxyDeps['peerOf']> {
    if (!deps.revision) return deps.peerOf(ip);
    const rev = deps.revision();
    if (rev !== peersRevision) { peers.clear(); serverPeers.clear(); peersRevision = rev; }
    return peers.get(ip) ?? peers.set(ip, deps.peerOf(ip));
  }
  /**
   * A record's peer: one literal of a fixed shape (spreads of optional parts made three objects
   * per peer). A client's is new per query: the feed pairs a query's two records by its object.
   */
  function peer(ip: string, p: number): AccessPeer {
    const x = peerInfo(ip);
    return { ip, port: p, identity: x.identity, endpoint: x.endpoint, labels: x.labels };
  }
  /** A query's client peer: with a borrowing sink a reused Pending's own, refilled; else a new one. */
  function clientPeer(p: Pending | undefined, ip: string, port: number): AccessPeer {
    if (!borrowed || p === undefined) return peer(ip, port);
    const x = peerInfo(ip);
    const c = p.client;
    c.ip = ip; c.port = port; c.identity = x.identity; c.endpoint = x.endpoint; c.labels = x.labels;
    return c;
  }
  /**
   * A question's last verdict (per endpoint and server identity) while deps.revision() stays the
   * same, kept with the interned question (wire.ts queryAt): a steady stream of known names
   * costs one probe per query, not the MapState's and the DNS rules' lookups (view, MapState,
   * its memo, the policy's names: five Map probes). Refilled in place when anything differs.
   * Only with a revision: the agent's own proxy asks decide every time.
   */
  interface Decision { rev: number; ep: number; identity: number; allowed: boolean }
  const decisions = new WeakMap<Question, Decision>();
  function decideQuestion(ep: DNSProxyEndpoint, identity: number, q: Question): boolean {
    const rev = deps.revision?.();
    let d = rev === undefined ? undefined : decisions.get(q);
    if (d !== undefined && d.rev === rev && d.ep === ep.id && d.identity === identity) return d.allowed;
    let allowed: boolean;
    // a decision that throws denies, and is not kept (the next query asks again)
    try { allowed = deps.decide(ep, identity, 17, 53, q.name); } catch { return false; }
    if (rev === undefined) return allowed;
    if (d === undefined) decisions.set(q, (d = { rev, ep: ep.id, identity, allowed }));
    else { d.rev = rev; d.ep = ep.id; d.identity = identity; d.allowed = allowed; }
    return allowed;
  }
  function serverPeer(ip: string): AccessPeer {
    if (!deps.revision) return peer(ip, 53);
    peerInfo(ip); // first: a new revision empties serverPeers
    return serverPeers.get(ip) ?? serverPeers.set(ip, peer(ip, 53));
  }

  /**
   * A record of the one DNS shape (every key; the answer's fields undefined until the caller
   * sets them), its common fields filled and its time now: with a borrowing sink one it was
   * lent before, else a new object.
   */
  function record(type: DnsAccessRecord['type'], client: AccessPeer, server: AccessPeer, transport: DnsAccessRecord['transport'], query: string, qtypes: string[], verdict: DnsAccessRecord['verdict']): DnsAccessRecord {
    const r = freeRecords.pop();
    if (r === undefined) {
      // timeMs a double from the first record on: the field then holds doubles, each write in place
      const n: DnsAccessRecord = { l7: 'dns', type, direction: 'egress', timeMs: 0.5, client, server, transport, query, qtypes, verdict, rcode: undefined, ips: undefined, ttl: undefined, cnames: undefined, rrtypes: undefined, latencyNs: undefined, reason: undefined };
      stampNow(n);
      return n;
    }
    r.type = type; stampNow(r); r.client = client; r.server = server; r.transport = transport; r.query = query; r.qtypes = qtypes; r.verdict = verdict;
    r.rcode = undefined; r.ips = undefined; r.ttl = undefined; r.cnames = undefined; r.rrtypes = undefined; r.latencyNs = undefined; r.reason = undefined;
    return r;
  }
  /** Hands a record over once the handler's datagrams left (flushAll). */
  function emit(rec: DnsAccessRecord): void {
    records.push(rec);
    flushSoon();
  }
  /** A response record's answer: its rcode, facts and latency. */
  function answered(r: DnsAccessRecord, rcode: number, ips: string[], ttl: number, cnames: string[], rrtypes: string[], latencyNs: number): DnsAccessRecord {
    r.rcode = rcode; r.ips = ips; r.ttl = ttl; r.cnames = cnames; r.rrtypes = rrtypes; r.latencyNs = latencyNs;
    return r;
  }

  /** The socket replies to clients leave from: bound to (dst, 53), created on first use. */
  function replySocket(dst: string): Promise<BatchedSocket> {
    const have = replySockets.get(dst);
    if (have) return Promise.resolve(have);
    let p = replyPending.get(dst);
    if (p) return p;
    p = new Promise<BatchedSocket>((resolve, reject) => {
      const v6 = dst.includes(':');
      const s = createSocket({ type: v6 ? 'udp6' : 'udp4', reuseAddr: true });
      s.once('error', (e) => { replyPending.delete(dst); reject(e); });
      s.bind({ address: dst, port: dnsPort, exclusive: true }, () => {
        s.removeAllListeners('error');
        s.on('error', (e) => deps.log?.warn({ subsys: 'dns-proxy', dst, err: e.message }, 'reply socket'));
        const fd = dgramFd(s);
        try { deps.transparent?.(fd); } catch (e) { deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'IP_TRANSPARENT on reply socket'); }
        const b: BatchedSocket = { s, out: fd >= 0 ? new SendBatch(fd, 64) : null, watch: null };
        replySockets.set(dst, b);
        replyPending.delete(dst);
        resolve(b);
      });
    });
    replyPending.set(dst, p);
    return p;
  }

  /**
   * Queues `buf[off, off+len)` to the client from the original destination; `id` ≥ 0 replaces
   * the DNS id (an answer goes back with the client's). The bytes are copied: the caller's
   * arena may be reused at once.
   */
  function sendToClient(dst: string, to: SockAddr, p: number, buf: Buffer, off: number, len: number, id: number): void {
    const have = replySockets.get(dst);
    if (have?.out) {
      const o = have.out.pushCopy(to, p, buf, off, off + len);
      if (id >= 0) putU16be(have.out.data, o, id);
      queued(have.out);
      return;
    }
    sendToClientLater(have, dst, to, p, Buffer.from(buf.subarray(off, off + len)), id);
  }
  /**
   * sendToClient without a send batch (its socket being made, or no fd): a copy through Node. Its
   * own function: variables a closure captures live in a context the function makes on every call,
   * closure or not (64 B per answer in sendToClient, bench/dns/loopback.ts --alloc under Maglev).
   */
  function sendToClientLater(have: BatchedSocket | undefined, dst: string, to: SockAddr, p: number, copy: Buffer, id: number): void {
    if (id >= 0) putU16be(copy, 0, id);
    if (have) { have.s.send(copy, p, to.ip); return; }
    replySocket(dst).then((s) => s.s.send(copy, p, to.ip), (e: Error) => {
      st.dropped++;
      deps.log?.warn({ subsys: 'dns-proxy', dst, err: e.message }, 'cannot answer from the original destination');
    });
  }

  /** An error reply (REFUSED, NXDOMAIN, SERVFAIL) to a query that parsed: errorReply's bytes, made from its id, flags and question. */
  function replyQuestion(dst: string, to: SockAddr, p: number, id: number, flags: number, q: Question, rcode: number): void {
    const r = questionReply(id, flags, q, rcode);
    sendToClient(dst, to, p, r, 0, r.length, -1);
  }

  /**
   * One query datagram `buf[off, off+len)` (`cut`: longer than its slot, so oversized). Read where
   * it lies (an arena slot): the steady path makes no view of it and no parse result.
   */
  function onQuery(buf: Buffer, off: number, len: number, cut: boolean, from: SockAddr, clientPort: number): void {
    st.queries++;
    const clientIp = from.ip;
    const ep = deps.endpointByIp(clientIp);
    if (!ep) {
      st.dropped++;
      return;
    }
    const t0 = clockUs();
    const od = deps.originalDestination(from, clientPort, ep);
    const dst = typeof od === 'string' ? od : undefined;
    const q = cut ? (len < 12 ? 'short' : 'oversized') : queryAt(buf, off, len);
    if (typeof q === 'string') {
      st.malformed++;
      const msg = off === 0 && len === buf.length ? buf : buf.subarray(off, off + len);
      const reply = q === 'short' ? null : errorReply(msg, RCODE.FORMERR);
      const r = record('request', peer(clientIp, clientPort), peer(dst ?? unspecified(from), 53), 'UDP', '', NO_TYPES, reply ? 'error' : 'denied');
      r.rcode = RCODE.FORMERR;
      emit(r);
      if (reply && dst) sendToClient(dst, from, clientPort, reply, 0, reply.length, -1);
      else st.dropped++;
      return;
    }
    if (!dst) {
      // never judged against a guessed server, never answered from a guessed address
      st.noOrigDst++;
      st.dropped++;
      const r = record('request', peer(clientIp, clientPort), peer(unspecified(from), 53), 'UDP', q.name, q.qtypes, 'denied');
      r.reason = typeof od === 'string' ? '' : od.reason;
      emit(r);
      return;
    }
    const server = serverPeer(dst);
    const allowed = decideQuestion(ep, server.identity, q);
    const clientId = u16be(buf, off);
    const flags = buf[off + 2]!;
    if (!allowed) {
      const r = record('request', peer(clientIp, clientPort), server, 'UDP', q.name, q.qtypes, 'denied');
      r.rcode = reject;
      emit(r);
      st.denied++;
      replyQuestion(dst, from, clientPort, clientId, flags, q, reject);
      return;
    }
    st.allowed++;
    // Forward with a proxy-chosen id (answers from every upstream socket are matched by it).
    let id = nextId;
    for (let i = 0; i < 65536 && pending[id] !== undefined; i++) id = (id + 1) & 0xffff;
    if (pending[id] !== undefined) {
      emit(record('request', peer(clientIp, clientPort), server, 'UDP', q.name, q.qtypes, 'forwarded'));
      st.servfail++;
      replyQuestion(dst, from, clientPort, clientId, flags, q, RCODE.SERVFAIL);
      return;
    }
    nextId = (id + 1) & 0xffff;
    // No copy of the query is kept (the arena is reused): a SERVFAIL is made from its question.
    let p = freePending.pop();
    const cl = clientPeer(p, clientIp, clientPort);
    emit(record('request', cl, server, 'UDP', q.name, q.qtypes, 'forwarded'));
    if (p === undefined) p = { from, clientPort, clientId, dst, ep, qname: q.name, qtypes: q.qtypes, client: cl, server, t0, flags, question: q, reusable: true };
    else {
      p.from = from; p.clientPort = clientPort; p.clientId = clientId; p.dst = dst; p.ep = ep; p.qname = q.name; p.qtypes = q.qtypes;
      p.client = cl; p.server = server; p.t0 = t0; p.flags = flags; p.question = q; p.reusable = true;
    }
    pending[id] = p;
    pendingCount++;
    const to = deps.upstreamFor?.(dst) ?? dst;
    const u = upstreams.get(to);
    // No per-send callback on the hot path: a lost or refused send ends as SERVFAIL by the sweep.
    if (u?.out) {
      const o = u.out.pushCopy(null, 0, buf, off, off + len);
      putU16be(u.out.data, o, id);
      queued(u.out);
      return;
    }
    forwardLater(u, to, p, id, Buffer.from(buf.subarray(off, off + len)));
  }

  /**
   * The forward of onQuery without a send batch (the upstream socket being made, or no fd). Its
   * own function, as sendToClientLater (its closures' context is made per call).
   */
  function forwardLater(u: BatchedSocket | undefined, to: string, pend: Pending, id: number, out: Buffer): void {
    putU16be(out, 0, id);
    pend.reusable = false; // the closure below compares it with the slot later
    const fail = (): void => {
      if (pending[id] !== pend) return;
      takePending(id);
      st.servfail++;
      servfail(pend);
    };
    if (u) u.s.send(out);
    else {
      upstreamFor(to).then((s2) => {
        // a watched socket sends through its batch only (udp-poll.ts); a lost send ends as SERVFAIL by the sweep
        if (s2.out) { s2.out.pushCopy(null, 0, out, 0, out.length); queued(s2.out); } else s2.s.send(out, (err) => { if (err) fail(); });
      }, fail);
    }
  }

  function takePending(id: number): Pending | undefined {
    const p = pending[id];
    if (p !== undefined) {
      pending[id] = undefined;
      pendingCount--;
    }
    return p;
  }

  /** SERVFAIL to a forwarded query's client (its upstream failed or timed out, or its hold did). */
  function servfail(p: Pending): void {
    const r = questionReply(p.clientId, p.flags, p.question, RCODE.SERVFAIL);
    sendToClient(p.dst, p.from, p.clientPort, r, 0, r.length, -1);
  }

  /**
   * Reads what is queued on `fd` (a watched socket's reads: d.empty is 0, nothing is skipped).
   * Unwatched (Node's 'message'): Node read one datagram; recvmmsg takes the rest queued behind
   * it. A quiet socket (the last two drains found nothing: one query outstanding) is drained on
   * every 8th datagram only:
   * libuv reads a lone datagram itself, and a recvmmsg that finds nothing was a syscall on the
   * path of every query and of every answer. A burst ends the quiet within 8 datagrams (libuv
   * reads up to 32 per wake-up meanwhile, one recvmsg each).
   */
  function drain(fd: number, d: Drain, each: (i: number) => void): number {
    if (d.empty >= 2 && (++d.skipped & 7) !== 0) return 0;
    const batch = d.batch;
    let read = 0;
    // bounded: libuv calls again while the socket stays readable, so others get their turn
    for (let round = 0; round < 8; round++) {
      const n = batch.recv(fd);
      st.recvCalls++;
      if (round === 0) d.empty = n === 0 ? d.empty + 1 : 0;
      if (n > 0) { st.batched += n; read += n; }
      // one clock reading for the datagrams of this read (BATCH_MS)
      BATCH_MS[0] = n > 0 ? performance.now() : -1;
      for (let i = 0; i < n; i++) {
        try { each(i); } catch (e) { st.dropped++; deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'datagram'); }
      }
      BATCH_MS[0] = -1;
      if (n < batch.capacity) return read;
    }
    return read;
  }

  const onBatchedQuery = (i: number): void => {
    const b = queries.batch;
    const a = b.source(i);
    if (!a) { st.dropped++; return; }
    onQuery(b.data, b.offset(i), b.length(i), b.truncated(i), a, b.sourcePort(i));
  };
  const onBatchedAnswer = (i: number): void => {
    const b = answers.batch;
    if (b.truncated(i)) { st.dropped++; return; }
    onUpstream(b.data, b.offset(i), b.length(i));
  };

  function upstreamFor(to: string): Promise<BatchedSocket> {
    let c = connecting.get(to);
    if (c) return c;
    c = new Promise<BatchedSocket>((resolve, reject) => {
      const v6 = to.includes(':');
      const s2 = createSocket(v6 ? 'udp6' : 'udp4');
      let fd = -1;
      s2.on('message', (m) => {
        try { onUpstream(m, 0, m.length); } catch (e) { deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'upstream answer'); }
        if (fd >= 0) drain(fd, answers, onBatchedAnswer);
      });
      s2.on('error', (e) => deps.log?.warn({ subsys: 'dns-proxy', upstream: to, err: e.message }, 'upstream socket'));
      s2.connect(dnsPort, to, (err?: Error) => {
        if (err) { connecting.delete(to); reject(err); return; }
        fd = dgramFd(s2);
        const out = fd >= 0 ? new SendBatch(fd, 64) : null;
        // watched only with a send batch: nothing may go through Node's send on a watched socket
        const ws = out ? watchedSocket() : null;
        if (ws) ws.watch = watchOrNodeReads(`upstream ${to}`, watchReadable(s2, fd, watched(fd, answers, onBatchedAnswer, ws)));
        else nodeRead(`upstream ${to}`, 'its fd could not be read (no send batch)');
        const b: BatchedSocket = { s: s2, out, watch: ws };
        upstreams.set(to, b);
        resolve(b);
      });
    });
    connecting.set(to, c);
    return c;
  }

  function onUpstream(buf: Buffer, off: number, len: number): void {
    if (len < 12) return;
    const p = takePending(u16be(buf, off));
    if (p === undefined) return;
    const facts = answerFactsAt(buf, off, len, FACTS);
    // An answer that does not decode (a compression loop, records past its end) is never
    // forwarded: its IPs could not be learned, and the client's parser might read some. SERVFAIL
    // from the kept question instead, as Cilium's proxy answers a response it cannot unpack.
    if (facts === null) { failUdp(p); recycle(p); return; }
    const wait = holdFor(p.ep.id, p.qname, facts);
    // an answer whose IPs the datapath has: out now, from where it lies (no closure, no view, no copy)
    if (wait === null) { releaseUdp(p, buf, off, len, facts); recycle(p); return; }
    holdUdp(p, Buffer.from(buf.subarray(off, off + len)), facts, wait);
  }

  /**
   * A held answer: it outlives this drain, so it keeps its own copy of the bytes (`held`) and of the
   * facts. Its own function, as sendToClientLater (its closures' context is made per call).
   */
  function holdUdp(p: Pending, held: Buffer, facts: AnswerFacts, wait: Promise<void>): void {
    const kept: AnswerFacts = { ...facts };
    holdThen(wait, () => releaseUdp(p, held, 0, held.length, kept), () => failUdp(p));
  }

  function releaseUdp(p: Pending, buf: Buffer, off: number, len: number, facts: AnswerFacts): void {
    const latency = latencySince(p.t0);
    sendToClient(p.dst, p.from, p.clientPort, buf, off, len, p.clientId);
    emit(answered(record('response', p.client, p.server, 'UDP', p.qname, p.qtypes, 'forwarded'), facts.rcode, facts.ips, facts.ttl, facts.cnames, facts.rrtypes, latency));
  }

  function failUdp(p: Pending): void {
    st.servfail++;
    servfail(p);
    emit(answered(record('response', p.client, p.server, 'UDP', p.qname, p.qtypes, 'error'), RCODE.SERVFAIL, [], 0, [], [], latencySince(p.t0)));
  }

  /**
   * What an answer waits for before it goes to the client: null when nothing (not an allowed
   * answer with IPs, or onAnswer says the datapath has them, or the hold is off); otherwise
   * onAnswer's promise (holdThen).
   */
  function holdFor(epId: number, qname: string, facts: AnswerFacts): Promise<void> | null {
    if (facts.rcode !== 0 || facts.ips.length === 0) return null;
    let wait: Promise<void> | null = null;
    try { wait = deps.onAnswer(epId, qname, facts.ips, facts.ttl); } catch { wait = null; }
    return !wait || deps.hold === false ? null : wait;
  }

  /** Releases an answer once the datapath has its IPs (`wait`, holdFor's), at most maxHoldMs later. */
  function holdThen(wait: Promise<void>, release: () => void, fail?: () => void): void {
    const h0 = performance.now();
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      st.holdTimeouts++;
      release();
    }, maxHold);
    wait.then(() => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const ms = performance.now() - h0;
      st.holdsMs.push(ms);
      if (st.holdsMs.length > 10_000) st.holdsMs.splice(0, 5_000);
      release();
    }, (e: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (e instanceof DNSHoldFailed && fail) { st.holdTimeouts++; fail(); } else release();
    });
  }

  // ---- DNS over TCP -----------------------------------------------------------------------
  // The accepted socket's local address is the original destination (bpf_sk_assign keeps it).
  // Each client connection gets one upstream TCP connection; answers are matched by query id.
  function framed(b: Buffer): Buffer {
    const h = Buffer.allocUnsafe(2);
    h.writeUInt16BE(b.length);
    return Buffer.concat([h, b]);
  }

  function onTcpConnection(c: NetSocket): void {
    const clientIp = (c.remoteAddress ?? '').replace(/^::ffff:/, '');
    const clientPort = c.remotePort ?? 0;
    const dst = (c.localAddress ?? '').replace(/^::ffff:/, '');
    c.on('error', () => {});
    c.setTimeout(10_000, () => c.destroy());
    const ep = deps.endpointByIp(clientIp);
    if (!ep) { st.dropped++; c.destroy(); return; }
    const server = peer(dst, 53);
    const client = peer(clientIp, clientPort);
    let up: NetSocket | undefined;
    let upBuf: Buffer = Buffer.alloc(0);
    const waiting = new Map<number, { qname: string; qtypes: string[]; t0: number }>();
    const onAnswer = (msg: Buffer): void => {
      const w = waiting.get(msg.readUInt16BE(0));
      if (!w) return;
      waiting.delete(msg.readUInt16BE(0));
      const fail = (): void => {
        st.servfail++;
        const r = errorReply(msg, RCODE.SERVFAIL);
        if (r && !c.destroyed) c.write(framed(r));
        emit(answered(record('response', client, server, 'TCP', w.qname, w.qtypes, 'error'), RCODE.SERVFAIL, [], 0, [], [], latencySince(w.t0)));
      };
      const facts = answerFacts(msg);
      // an answer that does not decode is never forwarded (as over UDP)
      if (facts === null) { fail(); return; }
      const release = (): void => {
        if (!c.destroyed) c.write(framed(msg));
        emit(answered(record('response', client, server, 'TCP', w.qname, w.qtypes, 'forwarded'), facts.rcode, facts.ips, facts.ttl, facts.cnames, facts.rrtypes, latencySince(w.t0)));
      };
      const wait = holdFor(ep.id, w.qname, facts);
      if (wait === null) { release(); return; }
      holdThen(wait, release, fail);
    };
    const upstream = (): NetSocket => {
      if (up) return up;
      up = netConnect({ host: deps.upstreamFor?.(dst) ?? dst, port: dnsPort });
      up.on('error', () => { for (const [id] of waiting) { const h = Buffer.alloc(12); h.writeUInt16BE(id, 0); h.writeUInt16BE(0x8182, 2); if (!c.destroyed) c.write(framed(h)); } waiting.clear(); c.destroy(); });
      up.on('data', (d: Buffer) => {
        upBuf = upBuf.length ? Buffer.concat([upBuf, d]) : d;
        while (upBuf.length >= 2 && upBuf.length >= 2 + upBuf.readUInt16BE(0)) {
          const n = upBuf.readUInt16BE(0);
          const m = Buffer.from(upBuf.subarray(2, 2 + n));
          upBuf = upBuf.subarray(2 + n);
          if (m.length >= 12) onAnswer(m);
        }
      });
      c.once('close', () => up?.destroy());
      return up;
    };
    let buf: Buffer = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (buf.length < 2 + n) {
          if (buf.length > 2 + 65535) c.destroy();
          return;
        }
        const msg = Buffer.from(buf.subarray(2, 2 + n));
        buf = buf.subarray(2 + n);
        st.queries++;
        const q = parseQuery(msg);
        if (!q.ok) {
          st.malformed++;
          const r = q.reason === 'short' ? null : errorReply(msg, RCODE.FORMERR);
          const rec = record('request', client, server, 'TCP', '', NO_TYPES, r ? 'error' : 'denied');
          rec.rcode = RCODE.FORMERR;
          emit(rec);
          if (r) c.write(framed(r));
          else { st.dropped++; c.destroy(); return; }
          continue;
        }
        let allowed = false;
        try { allowed = deps.decide(ep, server.identity, 6, 53, q.name); } catch { allowed = false; }
        const rec = record('request', client, server, 'TCP', q.name, q.qtypes, allowed ? 'forwarded' : 'denied');
        if (!allowed) rec.rcode = reject;
        emit(rec);
        if (!allowed) {
          st.denied++;
          const r = errorReply(msg, reject);
          if (r) c.write(framed(r));
          continue;
        }
        st.allowed++;
        waiting.set(q.id, { qname: q.name, qtypes: q.qtypes, t0: clockUs() });
        upstream().write(framed(msg));
      }
    });
  }

  /**
   * Registers every listener in its datapath slot, once all are bound: a start attempt that fails
   * part way (the kernel's port taken for TCP or IPv6) never points a slot at a socket about to close.
   */
  function registerListeners(): void {
    for (const family of [4, 6] as const) {
      const l = listeners.find((x) => x.family === family);
      if (l) deps.register?.(l.fd, family);
      const t = tcpServers.find((x) => x.family === family);
      if (t && t.fd >= 0) deps.registerTcp?.(t.fd, family);
    }
    slotsRegistered = true;
  }

  /** Unregisters (fail closed: the datapath drops what it would steer, 178) and closes every listener. */
  function closeListeners(): void {
    if (slotsRegistered) {
      for (const l of listeners) try { deps.register?.(null, l.family); } catch { /* datapath gone */ }
      for (const t of tcpServers) if (t.fd >= 0) try { deps.registerTcp?.(null, t.family); } catch { /* datapath gone */ }
      slotsRegistered = false;
    }
    for (const t of tcpServers.splice(0)) t.srv.close();
    for (const l of listeners.splice(0)) {
      l.fd = -1;
      unwatch(l.ws);
      try { l.s.close(); } catch { /* closed */ }
    }
  }

  /** Binds and makes transparent a family's UDP listener; returns its port. */
  async function listenUdp(family: ProxyFamily, host: string, at: number): Promise<number> {
    const l = createSocket({ type: family === 6 ? 'udp6' : 'udp4', reuseAddr: true, ipv6Only: family === 6 });
    const entry: { s: Socket; fd: number; family: ProxyFamily; ws: WatchedSocket | undefined } = { s: l, fd: -1, family, ws: undefined };
    l.on('message', (m, rinfo) => {
      const from = sockAddrOf(rinfo.address);
      try {
        if (from) onQuery(m, 0, m.length, false, from, rinfo.port);
        else st.dropped++;
      } catch (e) { st.dropped++; deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'query'); }
      if (entry.fd >= 0) drain(entry.fd, queries, onBatchedQuery);
    });
    l.on('error', (e) => deps.log?.warn({ subsys: 'dns-proxy', family, err: e.message }, 'listener'));
    listeners.push(entry);
    await new Promise<void>((resolve, reject) => {
      l.once('error', reject);
      l.bind({ port: at, address: host }, () => { l.removeListener('error', reject); resolve(); });
    });
    const fd = dgramFd(l);
    if (fd < 0) throw new MembraneError('DNS_PROXY_FD', `cannot get the DNS proxy's IPv${family} listener fd`);
    entry.fd = fd;
    const ws = (entry.ws = watchedSocket());
    ws.watch = watchOrNodeReads(`listener IPv${family}`, watchReadable(l, fd, watched(fd, queries, onBatchedQuery, ws)));
    deps.transparent?.(fd);
    return l.address().port;
  }

  /** The TCP listener of a family on the UDP one's port (DNS over TCP). */
  async function listenTcp(family: ProxyFamily, host: string, at: number): Promise<void> {
    const srv = createTcpServer((c) => { try { onTcpConnection(c); } catch (e) { st.dropped++; c.destroy(); deps.log?.warn({ subsys: 'dns-proxy', err: String(e) }, 'tcp query'); } });
    const entry = { srv, family, fd: -1 };
    tcpServers.push(entry);
    srv.on('error', (e) => deps.log?.warn({ subsys: 'dns-proxy', family, err: e.message }, 'tcp listener'));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ port: at, host, ipv6Only: family === 6 }, () => { srv.removeListener('error', reject); resolve(); });
    });
    const tfd = (srv as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    if (tfd >= 0) {
      deps.transparent?.(tfd);
      entry.fd = tfd;
    }
  }

  return {
    port,
    async start() {
      sweep = setInterval(() => {
        epochAnchor = Date.now() - performance.now();
        const now = clockUs();
        for (let id = 0; pendingCount > 0 && id < 65536; id++) {
          const p = pending[id];
          if (p === undefined || usBetween(p.t0, now) < upstreamTimeoutUs) continue;
          takePending(id);
          st.upstreamTimeouts++;
          servfail(p);
        }
      }, 250);
      sweep.unref();
      // the IPv4 UDP listener first: the others take its port. Port 0 (the kernel's choice for
      // UDP) may be taken for TCP or IPv6 already: then everything is closed and tried again.
      for (let attempt = 1; ; attempt++) {
        try {
          let bound = port;
          for (const family of deps.ipv6 ? [4, 6] as const : [4] as const) {
            const host = family === 6 ? deps.host6 ?? proxyListenHost(6) : deps.host ?? '0.0.0.0';
            bound = await listenUdp(family, host, bound);
            if (deps.registerTcp) await listenTcp(family, host, bound);
          }
          registerListeners();
          return;
        } catch (e) {
          closeListeners();
          if (port !== 0 || attempt >= 5 || (e as { code?: string }).code !== 'EADDRINUSE') throw e;
        }
      }
    },
    async stop() {
      closeListeners();
      for (const ws of watchedSockets.splice(0)) unwatch(ws);
      if (sweep) clearInterval(sweep);
      pending.fill(undefined);
      pendingCount = 0;
      flushAll();
      freePending.clear();
      freeRecords.clear();
      for (const b of [...upstreams.values(), ...replySockets.values()]) {
        unwatch(b.watch ?? undefined);
        try { b.s.close(); } catch { /* closed */ }
      }
      replySockets.clear();
      replyPending.clear();
      upstreams.clear();
      connecting.clear();
    },
    stats: () => {
      // datagrams the kernel refused inside send batches count as dropped
      let refused = 0, sent = 0, sendCalls = 0;
      for (const b of [...upstreams.values(), ...replySockets.values()]) {
        refused += b.out?.dropped ?? 0;
        sent += b.out?.sent ?? 0;
        sendCalls += b.out?.calls ?? 0;
      }
      return { ...st, dropped: st.dropped + refused, sent, sendCalls, holdsMs: [...st.holdsMs] };
    },
    boundPort: () => listeners[0]?.s.address().port ?? 0,
  };
}
