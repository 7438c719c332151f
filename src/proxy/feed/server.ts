/**
 * The agent's end of the proxy feed: a unix socket in the node's state directory (as Cilium's
 * agent serves Envoy its xDS and access-log sockets, and the standalone DNS proxy its policy over
 * a local gRPC socket). Each connected proxy process gets a full snapshot whenever what it would
 * hold changes (checked by a cheap fingerprint), acks it, and sends its access records back.
 *
 * `settled()` lets an apply or a settle answer only once the proxies hold the policy it made,
 * as the in-agent proxies did by looking the engine up live.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmod, rm } from 'node:fs/promises';
import type { IpcacheDelta, ProxyDelta, ProxySnapshot } from './snapshot.ts';
import type { AccessLogRecord } from '../../common/access-log.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import { FrameReader, readLines, send, WIRE_TAGS, type DnsAnswerReport, type ProxyRequest, type ProxyStatusRow, type ToAgent, type WireRecord } from './wire.ts';

export interface FeedServerDeps {
  socketPath: string;
  /**
   * Changes whenever snapshot() would give something new (compared every pollMs, or on a kick:
   * `watch`); the ipcache
   * aside. Cheap: counters the sources bump as they change (a list is compared element by element).
   */
  fingerprint(): Fingerprint;
  /** the snapshot without its ipcache */
  snapshot(): Promise<ProxySnapshot>;
  /**
   * Changes whenever `delta()` may have something (FQDN learning: new identities, their policy
   * entries, names). When only this moved, the proxies get a delta instead of a whole snapshot.
   */
  deltaPrint?(): Fingerprint;
  /** what changed since the last snapshot() or delta() (undefined: nothing); snapshot() starts it over */
  delta?(): Omit<ProxyDelta, 'ipcache'> | undefined;
  /** the whole ipcache, for a proxy that does not hold it yet (a new connection) */
  ipcache?(): NonNullable<ProxySnapshot['ipcache']>;
  /** the ipcache changes since the last call (undefined: none) */
  drainIpcache?(): IpcacheDelta | undefined;
  /** the proxy's access records as they travel (decodeRecord makes them records again): JSON messages, and binary frames without `frameRecords` */
  onRecords(items: WireRecord[], lost: number): void;
  /**
   * Binary frames' records made straight from the frame's bytes (wire.ts FrameReader: no array of
   * values per record), the peers' endpoints the agent's views by id. `onRecord` gets each record
   * lent for the call only (a plain or intercepted HTTP record is the connection's scratch,
   * refilled by the next: a caller that keeps one copies it); `onFrame` the frame's refused and
   * lost counts after its records. A frame that does not decode ends the connection as without
   * it, and none of its records reaches onRecord.
   */
  frameRecords?: {
    endpointById(id: number): ResolvedEndpoint | undefined;
    onRecord(rec: AccessLogRecord): void;
    onFrame(bad: number, lost: number): void;
  };
  /**
   * Allowed DNS answers the proxy reports; `done(ids)` tells it the datapath has the IPs of the
   * reports with those ids (it holds those answers until then).
   */
  onDnsAnswers?(items: DnsAnswerReport[], done: (ids: number[]) => void): void;
  /**
   * The sources' change callbacks: `watch(kick)` has every source that moves fingerprint(),
   * deltaPrint() or drainIpcache() call `kick` when it changes, and returns the unsubscribe; or
   * undefined when it cannot (then the server polls every pollMs, as without it). A kick sends
   * what changed pollMs later (a burst of changes goes out together, as a poll sent it), and an
   * idle agent is not woken 20 times a second to compare counters: only every backstopMs, for what
   * no source can tell (the cluster DNS server's address, read from a file with a 1 s memo).
   */
  watch?(kick: () => void): (() => void) | undefined;
  /** a change no source tells of reaches the proxies within this (default 1000 ms); with watch only */
  backstopMs?: number;
  pollMs?: number;
  logger?: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void };
}

export type Fingerprint = string | number | readonly (string | number | undefined)[];

function samePrint(a: Fingerprint | undefined, b: Fingerprint): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `whole`: the client got the ipcache whole (it gets deltas from then on); `deltas`: it applies delta messages */
interface Client { sock: Socket; pid?: number; acked: number; rows: ProxyStatusRow[]; whole: boolean; deltas: boolean; records: FrameReader }

export interface FeedServer {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** resolves once every connected proxy acked the snapshot of what is current now (at most timeoutMs) */
  settled(timeoutMs?: number): Promise<void>;
  /**
   * Resolves once what is current now is written to every connected proxy's socket (no ack
   * awaited). A message the caller sends on a proxy's socket after this reaches that proxy after
   * the snapshot or delta (one socket, in order; the proxy applies each line before it reads the
   * next): `dns-done` needs no round trip more than the answer report's.
   */
  sent(): Promise<void>;
  request(what: ProxyRequest, timeoutMs?: number): Promise<unknown>;
  /** the connected proxy processes (pid, status rows they reported) */
  clients(): { pid?: number; rows: ProxyStatusRow[]; acked: number }[];
}

export function createFeedServer(deps: FeedServerDeps): FeedServer {
  const clients = new Set<Client>();
  let server: Server | undefined;
  let seq = 0;
  let current: { seq: number; line: ProxySnapshot } | undefined;
  let lastPrint: Fingerprint | undefined;
  let lastDeltaPrint: Fingerprint | undefined;
  /** deltas went out after `current`'s snapshot */
  let deltasSent = false;
  let building: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let kickTimer: NodeJS.Timeout | undefined;
  let unwatch: (() => void) | undefined;
  const waiters = new Set<() => void>();
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  let reqId = 0;

  const wake = () => { for (const w of [...waiters]) w(); };

  /**
   * Rebuilds the snapshot when the fingerprint moved; one build at a time. A build under way may
   * have read its state before the caller's change: the caller gets the build after it.
   */
  function refresh(): Promise<void> {
    if (building) return building.then(() => refresh());
    const print = deps.fingerprint();
    const deltaPrint = deps.deltaPrint?.();
    let needWhole = false;
    let allDeltas = !!deps.delta;
    for (const c of clients) {
      if (deps.ipcache && !c.whole) needWhole = true;
      if (!c.deltas) allDeltas = false;
    }
    const deltaMoved = deltaPrint !== undefined && !samePrint(lastDeltaPrint, deltaPrint);
    if (samePrint(lastPrint, print) && current && !needWhole && (!deltaMoved || allDeltas)) {
      const d = deps.drainIpcache?.();
      let pd: Omit<ProxyDelta, 'ipcache'> | undefined;
      if (deltaMoved) {
        lastDeltaPrint = deltaPrint;
        pd = deps.delta!();
      }
      if (pd || d) {
        current.seq = ++seq;
        if (pd) deltasSent = true;
        for (const c of clients) {
          if (pd && (!deps.ipcache || c.whole)) send(c.sock, { t: 'delta', seq, ...pd, ...(d ? { ipcache: d } : {}) });
          else if (d && c.whole) send(c.sock, { t: 'ipcache', seq, ...d });
        }
      }
      return Promise.resolve();
    }
    building = (async () => {
      try {
        lastDeltaPrint = deltaPrint;
        // drained first: a client that gets the ipcache whole (read after this) has these too
        const d = deps.drainIpcache?.();
        const snap = await deps.snapshot();
        lastPrint = print;
        const deltaSeq = d ? ++seq : 0;
        current = { seq: ++seq, line: snap };
        deltasSent = false;
        let whole: ProxySnapshot | undefined;
        for (const c of clients) {
          if (deps.ipcache && !c.whole) {
            whole ??= { ...snap, ipcache: deps.ipcache() };
            c.whole = true;
            send(c.sock, { t: 'snapshot', seq: current.seq, snap: whole });
            continue;
          }
          if (d) send(c.sock, { t: 'ipcache', seq: deltaSeq, ...d });
          send(c.sock, { t: 'snapshot', seq: current.seq, snap });
        }
      } catch (e) {
        deps.logger?.warn({ err: String(e) }, 'proxy snapshot not built');
      } finally {
        building = undefined;
      }
    })();
    return building;
  }

  function onConnection(sock: Socket): void {
    const c: Client = { sock, acked: 0, rows: [], whole: false, deltas: false, records: new FrameReader() };
    clients.add(c);
    sock.on('error', () => {});
    sock.on('close', () => {
      clients.delete(c);
      for (const [id, p] of pending) { clearTimeout(p.timer); p.reject(new Error('proxy disconnected')); pending.delete(id); }
      wake();
    });
    readLines<ToAgent>(sock, (m) => {
      switch (m.t) {
        case 'hello':
          c.pid = m.pid;
          c.deltas = m.deltas === true;
          deps.logger?.info({ pid: m.pid }, 'proxy process connected');
          // records as binary frames from now on (a proxy that does not know the message keeps JSON)
          send(sock, { t: 'caps', records: 'bin1', tags: WIRE_TAGS });
          // the snapshot with the ipcache whole, made now (the last one sent has deltas since)
          if (current) {
            if (deps.ipcache) void refresh();
            else if (deltasSent) { lastPrint = undefined; void refresh(); } // the last snapshot is behind its deltas
            else send(sock, { t: 'snapshot', seq: current.seq, snap: current.line });
          }
          break;
        case 'ack': c.acked = m.seq; wake(); break;
        // the proxy missed a change (or got one out of order): every client gets a whole snapshot
        case 'resync':
          deps.logger?.warn({ code: 'FEED_DELTA_DIVERGED', pid: c.pid, seq: m.seq, reason: m.reason }, 'a proxy asked for a whole snapshot: sending one');
          c.whole = false; // the ipcache messages it did not apply: it gets the ipcache whole too
          lastPrint = undefined;
          void refresh();
          break;
        case 'records':
          // a message whose items are not a list is dropped whole and logged; the connection stays
          if (!Array.isArray(m.items)) { deps.logger?.warn({ code: 'FEED_RECORDS_REFUSED' }, 'access records message refused: no list of records'); break; }
          deps.onRecords(m.items, m.lost ?? 0);
          break;
        case 'dns-answers': deps.onDnsAnswers?.(m.items, (ids) => { if (ids.length) send(sock, { t: 'dns-done', ids }); }); break;
        case 'status': c.rows = m.rows; break;
        case 'res': {
          const p = pending.get(m.id);
          if (!p) break;
          pending.delete(m.id);
          clearTimeout(p.timer);
          if (m.ok) p.resolve(m.body); else p.reject(new Error(m.error ?? 'proxy error'));
          break;
        }
      }
    }, (payload) => {
      const fr = deps.frameRecords;
      const f = fr ? c.records.read(payload, fr.endpointById, fr.onRecord) : c.records.decoder.decode(payload);
      // the string table may be behind the proxy's now: the connection ends (the proxy reconnects and starts over)
      if (!f) { deps.logger?.warn({ code: 'FEED_RECORDS_REFUSED' }, 'access records frame refused: not a frame of records'); return false; }
      if ('items' in f) deps.onRecords(f.items as WireRecord[], f.lost);
      else fr!.onFrame(f.bad, f.lost);
      return true;
    });
  }

  return {
    async start() {
      await rm(deps.socketPath, { force: true });
      server = createServer(onConnection);
      // root only, never wider for an instant: the socket hands out policy and takes access records (flows)
      const old = process.umask(0o077);
      try {
        await new Promise<void>((res, rej) => { server!.once('error', rej); server!.listen(deps.socketPath, () => res()); });
      } finally {
        process.umask(old);
      }
      await chmod(deps.socketPath, 0o600);
      const pollMs = deps.pollMs ?? 50;
      // a kick: one refresh pollMs later, whatever more changes meanwhile
      const kick = () => {
        if (!server || kickTimer) return;
        kickTimer = setTimeout(() => { kickTimer = undefined; void refresh(); }, pollMs);
      };
      unwatch = deps.watch?.(kick);
      await refresh();
      const every = unwatch ? deps.backstopMs ?? 1000 : pollMs;
      const tick = () => { timer = setTimeout(() => { void refresh().finally(() => { if (server) tick(); }); }, every); };
      tick();
    },
    async stop() {
      if (timer) clearTimeout(timer);
      if (kickTimer) clearTimeout(kickTimer);
      kickTimer = undefined;
      unwatch?.();
      unwatch = undefined;
      const s = server;
      server = undefined;
      for (const c of clients) c.sock.destroy();
      if (s) await new Promise<void>((r) => s.close(() => r()));
      await rm(deps.socketPath, { force: true });
    },
    async settled(timeoutMs = 3000) {
      await refresh();
      const want = current?.seq ?? 0;
      const done = () => [...clients].every((c) => c.acked >= want);
      if (done()) return;
      await new Promise<void>((resolve) => {
        const t = setTimeout(finish, timeoutMs);
        function finish() { clearTimeout(t); waiters.delete(check); resolve(); }
        function check() { if (done()) finish(); }
        waiters.add(check);
      });
    },
    sent: () => refresh(),
    request(what, timeoutMs = 5000) {
      const c = [...clients].find((x) => x.pid);
      if (!c) return Promise.reject(new Error('no proxy process is connected'));
      const id = ++reqId;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(new Error(`proxy process did not answer ${what} in ${timeoutMs} ms`)); }, timeoutMs);
        pending.set(id, { resolve, reject, timer });
        send(c.sock, { t: 'req', id, what });
      });
    },
    clients: () => [...clients].map((c) => ({ ...(c.pid ? { pid: c.pid } : {}), rows: c.rows, acked: c.acked })),
  };
}
