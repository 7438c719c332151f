/**
 * The proxy process's end of the feed: connects to the agent's socket and reconnects whenever the
 * agent goes (a restart, a crash), keeping the last snapshot meanwhile — the datapath enforces
 * the same pinned policy while no agent runs, so the proxy judging by it stays consistent.
 * Access records made while the agent is away are buffered (bounded: the oldest go first, counted
 * as lost) and sent when it is back.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { AccessLogRecord } from '../../common/access-log.ts';
import type { IpcacheDelta, ProxyDelta, ProxySnapshot } from './snapshot.ts';
import { RecordEncoder } from './record-codec.ts';
import { encodeAnswer, encodeRecord, expandAnswer, pushAnswer, pushRecord, readLines, recordsMessage, send, WIRE_TAGS, type DnsAnswerReport, type ProxyRequest, type ProxyStatusRow, type ToProxy, type WireRecord } from './wire.ts';

/** the record number of a DNS request, kept on its client peer (createFeedClient's pairing) */
const PAIRED = Symbol('feed.paired');
type Paired = { [PAIRED]?: number };

export interface FeedClientDeps {
  socketPath: string;
  onSnapshot(snap: ProxySnapshot, seq: number): void;
  /** ipcache changes after the snapshot that carried it whole */
  onIpcache(d: IpcacheDelta, seq: number): void;
  /** FQDN learning's changes after the last snapshot (applyDelta); absent: the agent is never asked for deltas */
  onDelta?(d: ProxyDelta, seq: number): void;
  /** answers the agent's requests (AI usage, the proxy's metrics) */
  handle(what: ProxyRequest): Promise<unknown>;
  statusRows(): ProxyStatusRow[];
  /** records kept while the agent is away (default 20,000) */
  bufferRecords?: number;
  /** access records per message at most (default 128) */
  recordsPerMessage?: number;
  /** how long a record waits for its message to fill, ms at most (default 20) */
  messageMs?: number;
  /**
   * While the proxy's event loop has time to spare (busy less than 70 % since the last message
   * began), a message closes at its first record this many ms after it began (default 1; 0:
   * messageMs and the count only). See QUICK_BELOW.
   */
  quickMessageMs?: number;
  retryMs?: number;
  logger?: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void };
}

export interface FeedClient {
  start(): void;
  stop(): void;
  record(rec: AccessLogRecord): void;
  /**
   * Reports an allowed DNS answer's IPs to the agent. `wait`: resolves once the agent says the
   * datapath has them (sent again after every reconnect until then; the caller bounds the wait);
   * otherwise sent with the next batch (the answer went out already) and undefined is returned.
   */
  reportAnswer(r: Omit<DnsAnswerReport, 'id'>, wait: boolean): Promise<void> | undefined;
  connected(): boolean;
}

/** Reports waiting for the agent at most (a client's retries make more; the oldest are forgotten, their holds time out). */
const MAX_WAITING = 10_000;
/**
 * Access records per `records` message at most; a batch this full goes at the end of the current
 * I/O turn instead of after the 20 ms timer. JSON.stringify's cost per record jumps with the size
 * of the message: ~1.3 us per record up to 100 KB, ~6 us from 200 KB (thread CPU; bench/http at
 * 17k req/s made 680 records per 20 ms, one 310 KB line and a ~4 ms stall of the proxy's loop per
 * flush). Records with big headers make big messages: the count per message halves while a
 * message is over MESSAGE_BYTES and doubles back while one is under a quarter of it.
 */
const RECORDS_PER_MESSAGE = 128;
const MESSAGE_BYTES = 64 * 1024;
/**
 * Records written to the socket but not yet taken by the kernel, at most: past it they wait in the
 * bounded buffer as while the agent is away (the oldest lost, counted). An agent that stops reading
 * (starved of CPU, hung) would otherwise grow the proxy's memory with every request: a soak with
 * the agent starved reached 1.4 GB in 4 minutes.
 */
const MAX_UNSENT_BYTES = 4 << 20;
/**
 * Event loop utilization under which a message closes after quickMessageMs instead of at 128
 * records or messageMs. The agent turns a message into flows in one go (~2 µs a record,
 * bench/http), on the proxy's CPU when they share one: a request arriving meanwhile waits for it.
 * At one connection (one request at a time, the loop idle half the time) a message of 128 records
 * every 64 requests held ~1.6 % of the requests ~0.25 ms: the one-connection p99 (bench/http/ab.ts
 * with the agent stand-in off: p99 0.23 against 0.46 ms). Messages of ~1 ms there (~20 records)
 * hold a request ~40 µs, for ~2-4 µs more CPU per request (proxy and agent, bench/RESULTS.md
 * i-http11); a proxy whose loop is busy (keep-alive or close at 50 connections) keeps the larger
 * messages, which cost the agent less per record.
 */
const QUICK_BELOW = 0.7;

export function createFeedClient(deps: FeedClientDeps): FeedClient {
  const cap = deps.bufferRecords ?? 20_000;
  const maxPerMessage = deps.recordsPerMessage ?? RECORDS_PER_MESSAGE;
  const messageMs = deps.messageMs ?? 20;
  const quickMs = deps.quickMessageMs ?? 1;
  /**
   * The open frame's times, kept in doubles (a double in a closure's variable is a new heap number
   * per write; eventLoopUtilization() made three objects per frame): [0] the frame closes at its
   * first record after this (performance.now(); Infinity: by count and messageMs only), [1] and
   * [2] the clock and the loop's idle time (ms) at the last frame's start, [1] < 0: none yet.
   */
  const frameClock = new Float64Array([Infinity, -1, 0]);
  /**
   * Whether the open frame's quick close is due. Its own small function, returning a boolean:
   * performance.now()'s double, returned from a call the optimizer did not inline into record()
   * (a large function), was a heap number per record (7-22 B per DNS query in some runs).
   */
  const pastQuick = (): boolean => performance.now() >= frameClock[0]!;
  /**
   * At a frame's start: its quick close (frameClock[0]) when the loop was busy less than
   * QUICK_BELOW since the last frame began (eventLoopUtilization's reading, without its objects).
   */
  const markQuick = (): void => {
    const now = performance.now(), idle = performance.nodeTiming.idleTime;
    const wall = now - frameClock[1]!;
    if (frameClock[1]! >= 0 && (wall - (idle - frameClock[2]!)) / wall < QUICK_BELOW) frameClock[0] = now + quickMs;
    frameClock[1] = now;
    frameClock[2] = idle;
  };
  /** the open frame's timer (messageMs): one Timeout re-armed per frame (refresh), not a new one each */
  let frameTimer: NodeJS.Timeout | undefined;
  let sock: Socket | undefined;
  let up = false;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  let flushTimer: NodeJS.Timeout | undefined;
  let flushSoon: NodeJS.Immediate | undefined;
  let statusTimer: NodeJS.Timeout | undefined;
  /**
   * Records while the agent is away, before it took binary frames, or while its socket drains:
   * encoded at once (compact: no endpoints, no labels), sent with the next batch. Otherwise
   * (nearly always) a record goes straight into the encoder's open frame as it comes, and the
   * flush only writes: encoding a whole message at the flush held the proxy's loop ~100 µs once
   * per message, and each record's WireRecord array lived until then.
   */
  let buf: WireRecord[] = [];
  /** the encoder has an open frame: its records went in after record number `frameAt` */
  let framed = false;
  let frameAt = 0;
  /** the last record went into a frame (the requests paired so far point into it, not into buf) */
  let lastDirect = false;
  /** frames closed (full) but not yet written, and their records */
  const ready = new Array<Buffer | undefined>(8).fill(undefined);
  let readyN = 0;
  let readyRecords = 0;
  /** Forgets the frames in `ready` (kept: its store, no new list per flush). */
  function clearReady(): void {
    ready.fill(undefined, 0, readyN);
    readyN = 0;
    readyRecords = 0;
  }
  /**
   * Records pushed so far (never reset), and where each DNS request of the batch went by its
   * client peer (the proxy's two records of a query share that object): its response is sent as
   * tag 3, the answer's fields and the distance back to the request.
   */
  let pushed = 0;
  /**
   * Where a DNS request went is kept on its client peer object (PAIRED: the record number), not
   * in a Map per frame (~70 B of garbage per query: bench/dns/loopback.ts --feed --alloc): the
   * proxy lends the same peer object to a query's two records and to its slot's later queries.
   * A number at or below `pairFrom` is of an earlier frame or batch: not paired.
   */
  let pairFrom = 0;
  const requestAt = (c: AccessLogRecord['client']): number => {
    const at = (c as Paired)[PAIRED];
    return at !== undefined && at > pairFrom ? at : 0;
  };
  /** the cap shifted records out since the last flush: responses may have lost their request */
  let shifted = false;
  /**
   * Drops (as lost) the responses whose request the cap shifted out while the agent was away;
   * the distances that spanned a dropped one shrink by it. In place, one pass.
   */
  function dropOrphans(items: WireRecord[]): void {
    const removedBefore: number[] = new Array(items.length + 1);
    let removed = 0, n = 0;
    for (let j = 0; j < items.length; j++) {
      removedBefore[j] = removed;
      const w = items[j]!;
      if (w[0] === 3) {
        const at = j - w[1];
        if (at < 0) { removed++; lost++; continue; }
        w[1] -= removed - removedBefore[at]!;
      }
      items[n++] = w;
    }
    items.length = n;
  }
  let lost = 0;
  let perMessage = maxPerMessage;
  /** this connection's agent takes records as binary frames (its `caps`); a new one per connection (the string table starts over) */
  let encoder: RecordEncoder | undefined;
  /** the highest record tag this connection's agent reads (its caps; 4 when it did not say): tag 5 only to one that reads it */
  let agentTags = 4;
  /** the socket whose 'drain' the records wait for */
  let drainOf: Socket | undefined;
  /** answers already sent to their clients, to report (the last per endpoint, name and IPs) */
  const told = new BoundedCache<string, DnsAnswerReport>(MAX_WAITING, 'oldest');
  /**
   * What this agent connection was told per endpoint and name: the IPs and until when its name
   * manager keeps them. An answer with the same IPs whose TTL ends within that (less a slack of
   * min(1 s, TTL/4): the name manager's GC runs every second) is not reported again: a steady
   * stream of lookups of known names costs the agent nothing. Forgotten on every (re)connect and
   * every snapshot (an endpoint or the policy changed: the agent hears of every name again).
   */
  const known = new Map<number, BoundedCache<string, { ips: string[]; until: number }>>();
  /**
   * Times here are performance.now() ms, read where they are used: a time passed as an argument
   * (a double no small integer holds) and Date.now() itself were a heap number per answer of a
   * known name (every answer of the steady path).
   */
  function covered(r: Omit<DnsAnswerReport, 'id'>): boolean {
    const k = known.get(r.ep)?.get(r.name);
    if (!k || k.ips.length !== r.ips.length) return false;
    for (let i = 0; i < r.ips.length; i++) if (k.ips[i] !== r.ips[i]) return false;
    const ttlMs = r.ttl * 1000;
    return k.until >= performance.now() + ttlMs - Math.min(1000, ttlMs / 4);
  }
  function remember(r: DnsAnswerReport): void {
    let byName = known.get(r.ep);
    if (!byName) { byName = new BoundedCache(4096); known.set(r.ep, byName); }
    byName.set(r.name, { ips: r.ips, until: performance.now() + r.ttl * 1000 });
  }
  const waiting = new BoundedCache<number, { r: DnsAnswerReport; done(): void }>(MAX_WAITING, 'oldest');
  let nextId = 1;

  /** The frame timer: a flush for the open frame (or one closed and waiting), none when the frame went before it. */
  function frameDue(): void {
    if (framed || readyN) flush();
  }

  function flush(): void {
    if (flushTimer) { clearTimeout(flushTimer); flushTimer = undefined; }
    if (flushSoon) { clearImmediate(flushSoon); flushSoon = undefined; }
    if (!up || !sock) return;
    if (sock.writableLength > MAX_UNSENT_BYTES) {
      // the open frame stays open (records go to buf meanwhile) and is written first after the drain
      if (drainOf !== sock) {
        const s = sock;
        drainOf = s;
        s.once('drain', () => { if (drainOf === s) { drainOf = undefined; flush(); } });
      }
      return;
    }
    if (told.size) {
      const items = [...told.values()];
      told.clear();
      for (const r of items) remember(r);
      send(sock, { t: 'dns-answers', items });
    }
    // the frames encoded as records came go first: every record in buf came after them
    if (framed && encoder) closeFrame(encoder);
    if (readyN) {
      for (let i = 0; i < readyN; i++) if (!sock.destroyed) sock.write(ready[i]!);
      clearReady();
    }
    if (!buf.length && !lost) return;
    const items = buf;
    buf = [];
    pairFrom = pushed;
    if (shifted) {
      shifted = false;
      dropOrphans(items);
    }
    // in messages of perMessage at most (the buffer of an agent's absence too), in order
    let i = 0;
    do {
      const part = i === 0 && items.length <= perMessage ? items : items.slice(i, i + perMessage);
      // a response whose request went in an earlier message goes whole
      for (let k = 0; k < part.length; k++) {
        const w = part[k]!;
        if (w[0] === 3 && w[1] > k) part[k] = expandAnswer(w, items[i + k - w[1]]!) ?? w;
      }
      let size: number;
      if (encoder) {
        encoder.begin(i === 0 ? lost : 0);
        for (let k = 0; k < part.length; k++) encoder.push(part[k]!);
        const frame = encoder.end();
        size = frame.length;
        if (!sock.destroyed) sock.write(frame);
      } else {
        const line = `${JSON.stringify(recordsMessage(part, i === 0 ? lost : 0))}\n`;
        size = line.length;
        if (!sock.destroyed) sock.write(line);
      }
      i += part.length;
      if (size > MESSAGE_BYTES && perMessage > 1) perMessage >>= 1;
      else if (size < MESSAGE_BYTES / 4 && perMessage < maxPerMessage) perMessage <<= 1;
    } while (i < items.length);
    lost = 0;
  }

  /** Ends the open frame; it waits in `ready` for the flush. */
  function closeFrame(enc: RecordEncoder): void {
    const n = enc.records();
    const frame = enc.end();
    framed = false;
    ready[readyN++] = frame;
    readyRecords += n;
    // the same sizing as a batch's messages (flush)
    if (frame.length > MESSAGE_BYTES && perMessage > 1) perMessage >>= 1;
    else if (frame.length < MESSAGE_BYTES / 4 && perMessage < maxPerMessage) perMessage <<= 1;
  }

  /** Drops what was encoded for a connection that is gone, as lost (its string table went with it). */
  function dropFrames(): void {
    if (framed && encoder) lost += encoder.records();
    framed = false;
    lost += readyRecords;
    clearReady();
  }

  function dial(): void {
    retry = undefined;
    if (stopped) return;
    const s = connect(deps.socketPath);
    sock = s;
    s.on('connect', () => {
      up = true;
      known.clear();
      encoder = undefined;
      agentTags = 4;
      send(s, { t: 'hello', pid: process.pid, ...(deps.onDelta ? { deltas: true } : {}) });
      send(s, { t: 'status', rows: deps.statusRows() });
      // answers held for the agent: it (a restarted one) hears of them again
      if (waiting.size) send(s, { t: 'dns-answers', items: [...waiting.values()].map((w) => w.r) });
      flush();
      deps.logger?.info({ socket: deps.socketPath }, 'connected to the agent');
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (drainOf === s) drainOf = undefined;
      if (sock === s) {
        dropFrames();
        encoder = undefined;
      }
      if (up) deps.logger?.warn({}, 'agent gone: judging with the last policy snapshot, buffering access records');
      up = false;
      if (sock === s) sock = undefined;
      if (!stopped) retry = setTimeout(dial, deps.retryMs ?? 100);
    });
    // The agent numbers what it sends this connection: after a snapshot, each ipcache or delta
    // message is the next number. One out of order, or a delta that does not apply to what this
    // proxy holds (snapshot.ts applyDelta: FEED_DELTA_DIVERGED), is not applied nor acked: the proxy asks for a
    // whole snapshot and applies nothing more before it, never judging with a state that diverged.
    let lastSeq: number | undefined;
    let stale = false;
    /** `dns-done` ids that came while stale: released once the whole snapshot is applied */
    let doneLater: number[] = [];
    const release = (ids: readonly number[]): void => {
      for (const id of ids) {
        const w = waiting.get(id);
        if (!w) continue;
        waiting.delete(id);
        remember(w.r);
        w.done();
      }
    };
    const resync = (seq: number, reason: string): void => {
      if (!stale) deps.logger?.warn({ code: 'FEED_DELTA_DIVERGED', seq, reason }, 'policy delta out of order or not applicable: asking the agent for a whole snapshot');
      stale = true;
      send(s, { t: 'resync', seq, reason });
    };
    const inOrder = (seq: number): boolean => {
      if (stale) return false;
      if (lastSeq !== undefined && seq !== lastSeq + 1) { resync(seq, `after ${lastSeq}`); return false; }
      lastSeq = seq;
      return true;
    };
    readLines<ToProxy>(s, (m) => {
      if (m.t === 'snapshot') {
        known.clear();
        lastSeq = m.seq;
        stale = false;
        deps.onSnapshot(m.snap, m.seq);
        if (doneLater.length) { const ids = doneLater; doneLater = []; release(ids); }
        send(s, { t: 'ack', seq: m.seq });
        send(s, { t: 'status', rows: deps.statusRows() });
      } else if (m.t === 'ipcache') {
        if (!inOrder(m.seq)) return;
        deps.onIpcache(m, m.seq);
        send(s, { t: 'ack', seq: m.seq });
      } else if (m.t === 'delta') {
        if (!inOrder(m.seq)) return;
        // the names the agent was told stay known: a delta is FQDN learning, not a policy change
        try {
          deps.onDelta?.(m, m.seq);
        } catch (e) {
          resync(m.seq, String(e));
          return;
        }
        send(s, { t: 'ack', seq: m.seq });
      } else if (m.t === 'dns-done') {
        // the agent sent what holds the answers' IPs before this; a proxy that did not apply it
        // (stale) releases them with the whole snapshot it asked for, never before
        if (stale) { for (const id of m.ids) doneLater.push(id); return; }
        release(m.ids);
      } else if (m.t === 'caps') {
        // records flushed before this went as JSON; the agent reads both, in order
        if (m.records === 'bin1' && sock === s) {
          encoder = new RecordEncoder();
          agentTags = typeof m.tags === 'number' ? Math.min(m.tags, WIRE_TAGS) : 4;
        }
      } else if (m.t === 'req') {
        deps.handle(m.what).then(
          (body) => send(s, { t: 'res', id: m.id, ok: true, body }),
          (e: unknown) => send(s, { t: 'res', id: m.id, ok: false, error: String(e) }),
        );
      }
    });
  }

  return {
    start() {
      dial();
      statusTimer = setInterval(() => { if (up && sock) send(sock, { t: 'status', rows: deps.statusRows() }); }, 2000);
      statusTimer.unref();
    },
    stop() {
      stopped = true;
      if (retry) clearTimeout(retry);
      if (statusTimer) clearInterval(statusTimer);
      if (frameTimer) { clearTimeout(frameTimer); frameTimer = undefined; }
      flush();
      sock?.end();
    },
    record(rec) {
      pushed++;
      const enc = encoder;
      if (enc !== undefined && up && buf.length === 0 && drainOf !== sock) {
        if (!framed) {
          enc.begin(lost);
          lost = 0;
          framed = true;
          frameAt = pushed - 1;
          pairFrom = frameAt;
          // quick: the frame closes at the first record past quickMs (no timer of its own: a
          // timer of 1 ms woke the proxy's loop once more per message); the timer is for the
          // last records before a pause
          frameClock[0] = Infinity;
          if (quickMs > 0 && quickMs < messageMs) markQuick();
          // a frame flushed before its timer leaves it armed (a Timeout re-armed, not one per
          // frame): the next frame re-arms it, and after a pause it finds no frame open
          if (frameTimer === undefined) frameTimer = setTimeout(frameDue, messageMs);
          else frameTimer.refresh();
        }
        lastDirect = true;
        if (rec.l7 === 'dns' && rec.transport === 'UDP') {
          if (rec.type === 'request') {
            (rec.client as Paired)[PAIRED] = pushed;
            pushRecord(enc, rec, agentTags);
          } else {
            // its request in this frame: the answer alone (tag 3)
            const at = requestAt(rec.client);
            if (at !== 0) (rec.client as Paired)[PAIRED] = 0;
            if (at !== 0 && at > frameAt) pushAnswer(enc, rec, pushed - at);
            else pushRecord(enc, rec, agentTags);
          }
        } else {
          pushRecord(enc, rec, agentTags);
        }
        if (enc.records() >= perMessage || (frameClock[0] !== Infinity && pastQuick())) {
          closeFrame(enc);
          flushSoon ??= setImmediate(flush);
        }
        return;
      }
      if (lastDirect) {
        // the requests seen so far went into a frame, not buf: answers after them go whole
        lastDirect = false;
        pairFrom = pushed - 1;
      }
      let w: WireRecord | undefined;
      if (rec.l7 === 'dns' && rec.transport === 'UDP') {
        if (rec.type === 'request') {
          (rec.client as Paired)[PAIRED] = pushed;
        } else {
          const at = requestAt(rec.client);
          if (at !== 0) {
            (rec.client as Paired)[PAIRED] = 0;
            // records pushed since the request: its distance in buf too (the cap shifts both alike)
            w = encodeAnswer(rec, pushed - at);
          }
        }
      }
      // encoded for an agent not known yet: what every agent reads (a TLS record as its object)
      buf.push(w ?? encodeRecord(rec, 4));
      if (buf.length > cap) { buf.shift(); lost++; shifted = true; }
      if (!up || drainOf === sock) return;
      if (buf.length >= perMessage) flushSoon ??= setImmediate(flush);
      else flushTimer ??= setTimeout(flush, messageMs);
    },
    reportAnswer(r, wait) {
      if (!wait) {
        if (covered(r)) return undefined;
        told.set(`${r.ep}|${r.name}|${r.ips.join(',')}`, { id: 0, ...r });
        if (up && !flushTimer && drainOf !== sock) flushTimer = setTimeout(flush, 20);
        return undefined;
      }
      const id = nextId++;
      const rep: DnsAnswerReport = { id, ...r };
      const p = new Promise<void>((done) => { waiting.set(id, { r: rep, done }); });
      if (up && sock) send(sock, { t: 'dns-answers', items: [rep] });
      return p;
    },
    connected: () => up,
  };
}
