/**
 * One client connection of the HTTP proxy: requests parsed as they arrive, judged by the filter
 * chain, forwarded upstream or answered locally in pipeline order, responses parsed and matched
 * to their requests, the upstream connection taken from and returned to the pool, an upgrade
 * turned into a tunnel only when the server answers 101 (proxy.ts has the picture).
 */
import net from 'node:net';
import type { Direction } from '../../policy/types.ts';
import type { L7Options } from '../../policy/l7.ts';
import { proxyUpstreamMark } from '../marks.ts';
import { ConnectionParsers, HttpParseError, type MessageHead } from './parser.ts';
import type { HttpStream, ProxyConnectionView } from './stream.ts';
import type { ConnectionOwner, ProxyEndpoint, ProxyPolicyLookup } from './types.ts';
import type { AccessPeer, AccessVerdict, HttpAccessRecord } from '../../common/access-log.ts';
import { Stream } from './request-stream.ts';
import { UpstreamLink, type UpstreamOwner } from './upstream-pool.ts';
import { BufferPool, ReadBuffer } from './read-buffer.ts';
import { CLOSE_FIELD, STATUS_TEXT, closingResponseHead, hasConnectionFields, localReply } from './replies.ts';
import { upgradeRefusal, without, withHost, withoutConnection, withoutH2cUpgrade } from './head-rewrite.ts';
import { kCloseOnFinal, type ReadSink, type Transport } from '../transport.ts';
import { dupFd } from '../../sys/tcp-fd.ts';


const NO_SECRETS: L7Options = Object.freeze({});
/**
 * The record lent to onRecord when it borrows (`recordsBorrowed`): refilled for every record
 * without optional fields, so it has exactly these keys (optional ones present as undefined).
 */
const NO_HEADERS: string[] = [];
const BORROWED: HttpAccessRecord = {
  l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 0,
  client: { ip: '', port: 0, identity: 0 }, server: { ip: '', port: 0, identity: 0 }, endpointId: 0,
  method: '', url: '', host: '', path: '', protocol: 'HTTP/1.1', headers: NO_HEADERS, code: 0, latencyNs: 0,
  requestTimeMs: undefined, tls: undefined,
};
/**
 * What a connection parses with once its own parser state went back to the pool (destroy()):
 * never pooled, so a closed connection reached by a late event cannot touch a set another
 * connection now holds.
 */
const RELEASED = new ConnectionParsers({ kind: 'request' });

/** Body bytes a closing response's head is copied together with (above: written beside it, not copied). */
const CLOSING_HEAD_MERGE_MAX = 4096;

/** the connection a downstream stream is read for (its listeners are shared: attachEnds) */
const kConn = Symbol('proxyConnection');
/** an accepted socket's own read buffer (ownReadSocket) */
const kReadBuf = Symbol('readBuffer');
type ClientStream = Transport & { [kConn]?: ProxyConnection; [kReadBuf]?: ReadBuffer };

/** A client socket's read buffer: 4 KiB (a request head or a few), x4 up to 64 KiB once a read fills it. */
const CLIENT_READ_BYTES = 4 * 1024;
const CLIENT_READ_BYTES_MAX = 64 * 1024;

/** client read buffers of closed connections, for the next (at most 256: 1 MiB) */
export function clientReadBuffers(): BufferPool {
  return new BufferPool(CLIENT_READ_BYTES, 256);
}

/**
 * A socket over an accepted TCP handle that reads into a buffer of its own (ReadBuffer: no
 * Buffer, 64 KiB allocation, Readable push and `data` event per read, as the upstream side's
 * UpstreamLink). The buffer is read into again only when nothing of the connection points into
 * the last read (ProxyConnection.keepsClientRead). `handle` is what a net.Server's listening
 * handle gives its `onconnection` (proxy.ts).
 */
export function ownReadSocket(handle: unknown, pool: BufferPool): net.Socket {
  const rb = new ReadBuffer(CLIENT_READ_BYTES, CLIENT_READ_BYTES_MAX, pool);
  const opts = { handle, allowHalfOpen: true, onread: { buffer: () => rb.next(), callback: onOwnRead } };
  const sock = new net.Socket(opts as unknown as net.SocketConstructorOpts);
  (sock as ClientStream)[kReadBuf] = rb;
  return sock;
}

/** onread's callback (Node calls it on the socket): one function for all connections */
function onOwnRead(this: ClientStream, n: number, b: Uint8Array): boolean {
  const c = this[kConn];
  const rb = this[kReadBuf]!;
  // no reader yet cannot happen (reads come from the event loop, after start()): nothing is kept
  if (c === undefined) rb.done(n, b, true);
  else c.onOwnRead(n, b as Buffer, rb);
  return true;
}

/** the last pool key made and what it was made of (upstreamKey) */
let lastKey = '', lastSrc = '', lastMark = -1, lastHost = '', lastPort = -1, lastTag: string | null = null;

/**
 * The pool key of an upstream connection: source address (transparent upstreams), mark,
 * destination, and the wrapper's tag. The same inputs give back the same string as the last call:
 * a run of connections from one client to one destination (every `Connection: close` request)
 * builds, flattens and hashes no new key per connection (the pool's Map reads the string's
 * cached hash). A pure function of its inputs: nothing of one connection reaches another.
 */
export function upstreamKey(src: string, mark: number, host: string, port: number, tag: string | null): string {
  if (src === lastSrc && mark === lastMark && host === lastHost && port === lastPort && tag === lastTag) return lastKey;
  lastSrc = src; lastMark = mark; lastHost = host; lastPort = port; lastTag = tag;
  return (lastKey = `${src}|${mark}|${host}:${port}${tag !== null ? `|wrapped${tag}` : ''}`);
}

/**
 * What a network filter sets to make a connection's new upstream connections itself (TLS
 * origination, tls/origination.ts: a client TLS leg on the upstream's fd), instead of a plain
 * socket: `tag` keys the pool (connections of one origin are never handed to another's), and
 * `open` connects `ip`:`port` on `fd` (the transparent socket, proxy-socket.ts) or on a new one
 * (fd -1). Its failures come as `error` events whose Error may carry the proxy's answer
 * (`proxyStatus`, `proxyReason`: e.g. 502 and why a certificate was refused).
 */
export interface UpstreamOrigin {
  readonly tag: string;
  open(fd: number, ip: string, port: number): Transport & { readonly connecting: boolean };
}

function stripV4Mapped(a: string | undefined): string {
  if (!a) return '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

export class ProxyConnection implements ProxyConnectionView, UpstreamOwner, ReadSink {
  readonly proxy: ConnectionOwner<ProxyConnection, HttpStream>;
  readonly direction: Direction;
  readonly client: AccessPeer;
  readonly server: AccessPeer;
  readonly endpoint: ProxyEndpoint | undefined;
  readonly remoteIdentity: number;
  /** the headerMatches secrets' reader, made on first use (most connections never read a secret) */
  private secrets: L7Options | null = null;
  private stateMap: Map<string, unknown> | null = null;
  /** the downstream stream: the accepted socket, or what a network filter adopted (e.g. a TLS leg on its fd) */
  sock: Transport;
  /** the read buffer of an adopted transport that reads into ours (readWith), null otherwise */
  private clientRb: ReadBuffer | null = null;
  /** set by a network filter to make each new upstream connection itself (TLS origination) */
  upstreamOrigin: UpstreamOrigin | null = null;
  /** TLS seen by a network filter (SNI; intercepted: HTTP parsed inside TLS), carried into the access records */
  tls: { sni: string; intercepted: boolean } | null = null;
  /** why the last upstream failed, as a network filter classified it (e.g. a certificate error → 502) */
  private upstreamError: (Error & { proxyStatus?: number; proxyReason?: string }) | null = null;
  private upstream: Transport | null = null;
  /** `upstream` with its listeners, handed to the pool and back as a whole */
  private upLink: UpstreamLink | null = null;
  /** the head parsers and body trackers, from the proxy's pool (RELEASED once destroyed) */
  private p: ConnectionParsers;
  /**
   * What the next client bytes are: a request head, or the body of the request in `cur` — going
   * upstream as it is read, or kept here (held for a filter, or dropped after a local reply).
   */
  private reqState: 'head' | 'body-upstream' | 'body-here' = 'head';
  /** What the next upstream bytes are: a response head or the body of the response at the head of the queue. */
  private resState: 'head' | 'body' = 'head';
  /** the request whose body is being read */
  private cur: Stream | null = null;
  /** the request whose body a filter holds until it is complete (nothing of it went upstream) */
  private holding: Stream | null = null;
  /** requests awaiting their response, in order (local replies included) */
  private readonly queue: Stream[] = [];
  /**
   * Inside one read's batch (onClientData, onUpstreamData): writes go through `out`, which keeps
   * the batch's first write back and corks a socket only when a second write to it comes; a lone
   * write (nearly every keep-alive request and response) leaves at the batch's end as a plain
   * write, without Node's cork buffer (its array and entry per write, and the writev path).
   */
  private batching = false;
  /** the batch's first write, kept back, and its socket */
  private heldOut: Buffer | string | null = null;
  private heldSock: Transport | null = null;
  /** sockets this batch corked (uncorked at its end) */
  private corkedA: Transport | null = null;
  private corkedB: Transport | null = null;
  /** feedResponses: start of the run of the chunk forwarded as is, -1 when none */
  private run = -1;
  /** feedResponses: a closing response's head (plus `connection: close`) that leaves with the run after it */
  private pre: Buffer | null = null;
  private upstreamKey = '';
  /**
   * The client side: `open` reads requests; `draining` reads no more (a request or response that
   * closes, a refusal, the client's half-close) and closes after the queued responses; `tunnel`
   * passes bytes unparsed both ways (a 101 to a WebSocket upgrade, a network filter's
   * passThrough); `closed` is final.
   */
  private phase: 'open' | 'draining' | 'tunnel' | 'closed' = 'open';
  /**
   * The upstream connection's reuse: `reused` came from the pool and has not answered yet (a
   * reset then is the pool's keep-alive race); `busy` has an exchange in flight; `idle` has none
   * and may go back to the pool; `spent` carried an upgrade request or a tunnel and never does.
   */
  private upstreamState: 'reused' | 'busy' | 'idle' | 'spent' = 'busy';
  /** first byte of an incomplete head (ms), 0 when none */
  headStartedAt = 0;
  /** last read on either side (ms; the proxy's sweep closes idle connections) */
  lastActive = 0;
  /** when the client side was ended by us (ms; the sweep destroys it if the client never closes) */
  closingAt = 0;
  /** a new upstream must be connected by then (ms, the proxy's coarse clock; the sweep checks it), 0 when none */
  connectDeadline = 0;
  /**
   * A network filter's deadline (ms), 0 when none: past it the sweep calls `onDeadline` once (e.g.
   * a TLS handshake not complete in time). No timer per connection: the sweep already visits each.
   */
  deadline = 0;
  onDeadline: (() => void) | null = null;
  /** egress to a local endpoint: that endpoint (its ingress policy may apply here too) */
  private readonly peerEndpoint: ProxyEndpoint | undefined;
  private peerCache: ProxyPolicyLookup | null = null;
  private policyCache: ProxyPolicyLookup | null = null;
  private policyRev = -1;

  constructor(proxy: ConnectionOwner<ProxyConnection, HttpStream>, sock: net.Socket, direction: Direction) {
    this.proxy = proxy;
    this.sock = sock;
    this.direction = direction;
    const src = stripV4Mapped(sock.remoteAddress);
    const dst = stripV4Mapped(sock.localAddress);
    const p = proxy.opts.policy;
    const srcEp = p.endpointByIp(src);
    const dstEp = p.endpointByIp(dst);
    this.client = { ip: src, port: sock.remotePort ?? 0, identity: srcEp?.identity ?? p.identityOf(src) };
    this.server = { ip: dst, port: sock.localPort ?? 0, identity: dstEp?.identity ?? p.identityOf(dst) };
    this.endpoint = direction === 'egress' ? srcEp : dstEp;
    this.peerEndpoint = direction === 'egress' ? dstEp : undefined;
    this.remoteIdentity = direction === 'egress' ? this.server.identity : this.client.identity;
    this.p = proxy.parsers.take();
  }

  get secretOpts(): L7Options {
    if (this.secrets) return this.secrets;
    const p = this.proxy.opts.policy;
    return (this.secrets = p.secret ? { secret: (n, ns) => p.secret!(n, ns ?? this.endpoint?.namespace) } : NO_SECRETS);
  }

  /** free slots for filters, made on first use (most connections never have one) */
  get state(): Map<string, unknown> {
    return (this.stateMap ??= new Map());
  }

  private get closed(): boolean {
    return this.phase === 'closed';
  }

  private get tunnel(): boolean {
    return this.phase === 'tunnel';
  }

  /** no more requests are read (close after the queued responses) */
  private get readStopped(): boolean {
    return this.phase !== 'open';
  }

  private stopReading(): void {
    if (this.phase === 'open') this.phase = 'draining';
  }

  policy(): ProxyPolicyLookup {
    const p = this.proxy.opts.policy;
    const rev = p.revision();
    if (this.policyCache && rev === this.policyRev) return this.policyCache;
    this.policyRev = rev;
    this.peerCache = null;
    // Fail closed: a connection without a local endpoint has no policy to allow it.
    this.policyCache = this.endpoint
      ? p.lookup(this.endpoint.id, this.direction, this.remoteIdentity, this.server.port)
      : { verdict: 'drop', l7: null };
    return this.policyCache;
  }

  /**
   * Egress to a local endpoint whose ingress redirects this port to the proxy too: the upstream
   * connection cannot be steered again on its way in (it leaves the node's own stack), so the
   * egress proxy enforces the destination's ingress L7 policy as well and marks the upstream
   * PROXY_INGRESS (already enforced). Null when the destination's ingress has no L7 policy.
   */
  peerIngress(): ProxyPolicyLookup | null {
    if (!this.peerEndpoint) return null;
    this.policy(); // refreshes both caches on a new revision
    if (!this.peerCache) this.peerCache = this.proxy.opts.policy.lookup(this.peerEndpoint.id, 'ingress', this.client.identity, this.server.port);
    return this.peerCache.verdict === 'redirect' ? this.peerCache : null;
  }

  /** `sock` has the data and drain readers (an adopted stream's predecessor loses them) */
  private reading = false;
  /** a network filter took the last client chunk (it may keep it: the read buffer is not read into again) */
  private filterTook = false;

  start(): void {
    // the coarse clock, as every later stamp: the idle sweep works in its own 500 ms steps
    this.lastActive = this.proxy.now;
    const sock = this.sock;
    this.attachEnds(sock);
    // The readers after the network filters: when one adopts a stream over the socket (TLS
    // termination) that stream is read instead, so the accepted socket gets no `data` reader to
    // add and remove (nor the resume() adding one schedules). No event is emitted before this
    // returns (they come from the event loop).
    this.proxy.chain.newConnection(this);
    if (this.sock === sock) this.attachReaders(sock);
  }

  /*
   * The downstream's listeners: one function each for all connections, finding theirs on the
   * stream (kConn), instead of five closures made per connection (with a new connection per
   * request, that was per request). A stream is read for one connection only; an adopted
   * stream's predecessor keeps `error` and `close`, which reach the same connection.
   */
  private static readonly onEnd = function (this: ClientStream): void { this[kConn]!.onClientEnd(); };
  private static readonly onGone = function (this: ClientStream): void { this[kConn]!.destroy(); };
  /** closed: its handle reads no more, so its own read buffer can serve another socket */
  private static readonly onClosed = function (this: ClientStream): void {
    const c = this[kConn]!;
    c.destroy();
    this[kReadBuf]?.recycle();
    if (c.sock === this) c.clientRb?.recycle();
  };
  private static readonly onData = function (this: ClientStream, c: Buffer): void { this[kConn]!.onClientData(c); };
  private static readonly onDrain = function (this: ClientStream): void { this[kConn]!.upstream?.resume(); };

  private attachEnds(s: Transport): void {
    (s as ClientStream)[kConn] = this;
    s.on('end', ProxyConnection.onEnd);
    s.on('error', ProxyConnection.onGone);
    s.on('close', ProxyConnection.onClosed);
  }

  private attachReaders(s: Transport): void {
    if (s instanceof net.Socket) noReadAhead(s);
    // a transport reading into our buffer (readWith) or a socket reading into its own calls
    // onOwnRead instead of emitting `data`
    if (s.readWith) {
      this.clientRb ??= new ReadBuffer(CLIENT_READ_BYTES, CLIENT_READ_BYTES_MAX, this.proxy.readBuffers ?? null);
      s.readWith(this);
    } else if ((s as ClientStream)[kReadBuf] === undefined) s.on('data', ProxyConnection.onData);
    s.on('drain', ProxyConnection.onDrain);
    this.reading = true;
  }

  /**
   * Switches the downstream to another stream for the same connection (a network filter that
   * terminates TLS adopts a TLS leg on the accepted socket's fd): HTTP parsing, local replies and
   * responses then go through it. Bytes the filter already consumed stay consumed. `oldGone`: the
   * old stream is being closed (its fd handed over): none of its events reach this connection.
   */
  adopt(stream: Transport, oldGone = false): void {
    const old = this.sock;
    old.removeAllListeners('end');
    if (this.reading) {
      old.removeAllListeners('data');
      old.removeAllListeners('drain');
    }
    if (oldGone) {
      old.removeAllListeners('error');
      old.removeAllListeners('close');
      (old as ClientStream)[kConn] = undefined;
    }
    this.sock = stream;
    this.attachEnds(stream);
    this.attachReaders(stream);
  }

  /**
   * Takes the accepted socket off Node for a network filter that drives the fd itself (a TLS leg):
   * a dup of the handle's fd, the caller's, then Node's socket closed with none of its events
   * reaching this connection (its listeners removed first) and its read buffer recycled. Called
   * from onNewConnection, before any byte was read (reads come from the event loop): nothing is
   * lost. -1 when the socket has no fd to give (then nothing changed).
   */
  handOff(): number {
    const s = this.sock as ClientStream;
    const h = (s as unknown as { _handle?: { fd?: number } | null })._handle;
    const fd = h && typeof h.fd === 'number' && h.fd >= 0 ? dupFd(h.fd) : -1;
    if (fd < 0) return -1;
    for (const ev of ['end', 'data', 'drain', 'error', 'close'] as const) s.removeAllListeners(ev);
    s[kConn] = undefined;
    this.reading = false;
    s.destroy();
    s[kReadBuf]?.recycle();
    return fd;
  }

  /** The sweep: a network filter's deadline passed (called once). */
  deadlinePassed(): void {
    const f = this.onDeadline;
    this.deadline = 0;
    this.onDeadline = null;
    if (f) f();
  }

  /**
   * A network filter decided at connection level (e.g. by TLS SNI) and lets the connection
   * through unparsed: `head` (the bytes it consumed) goes upstream first, then every byte both
   * ways, unchanged.
   */
  passThrough(head: Buffer): void {
    if (this.phase === 'closed') return;
    this.phase = 'tunnel';
    const up = this.ensureUpstream();
    if (head.length && !up.write(head)) this.sock.pause();
  }

  // ------------------------------------------------------------------ downstream (requests)

  /** ReadSink: where an adopted transport's next read goes */
  readBuffer(): Buffer {
    return this.clientRb!.next();
  }

  /** ReadSink: `n` bytes an adopted transport read into `b` (readBuffer's) */
  onRead(n: number, b: Buffer): void {
    this.onOwnRead(n, b, this.clientRb!);
  }

  /** `n` client bytes read into `b`, the accepted socket's own buffer (ownReadSocket) */
  onOwnRead(n: number, b: Buffer, rb: ReadBuffer): void {
    this.filterTook = false;
    this.onClientData(b.subarray(0, n));
    rb.done(n, b, this.keepsClientRead(b));
  }

  /**
   * After a client read into a buffer of its own: whether anything still points into it, so the
   * next read must go into a new one. What keeps client bytes past their read: a write upstream
   * the kernel has not taken (Node holds the bytes), a request head cut across reads (its parser
   * holds the parts), a held body, a network filter that took the chunk (a ClientHello read
   * across segments). A request sent on a pooled upstream that has not answered yet may be sent
   * again (the pool's keep-alive race, onUpstreamEnd): its head is copied out instead, a few
   * hundred bytes, so the buffer stays.
   */
  private keepsClientRead(b: Buffer): boolean {
    const up = this.upstream;
    if (this.filterTook || this.holding !== null || this.p.reqHead.pending > 0 || (up !== null && up.writableLength > 0)) return true;
    if (this.upstreamState === 'reused') {
      const ab = b.buffer;
      for (let i = 0; i < this.queue.length; i++) this.queue[i]!.ownRequestBytes(ab);
    }
    return false;
  }

  private onClientData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActive = this.proxy.now;
    if (this.tunnel) {
      if (this.upstream && !this.upstream.write(chunk)) this.sock.pause();
      return;
    }
    if (this.proxy.chain.network.length && this.proxy.chain.data(this, chunk) === 'stop') {
      this.filterTook = true;
      return;
    }
    // One write per read and side: heads, bodies and pipelined requests of this chunk leave together.
    this.batching = true;
    try {
      this.feedRequests(chunk);
    } finally {
      this.endBatch();
    }
  }

  /**
   * Writes `b` to `sock` (the client or the upstream) as part of the current batch (see
   * `batching`); outside a batch, at once. False: the socket's buffer is full (pause the other side).
   */
  private out(sock: Transport, b: Buffer | string): boolean {
    if (!this.batching || sock === this.corkedA || sock === this.corkedB) return sock.write(b);
    if (this.heldSock === sock) {
      this.corkOut(sock);
      sock.write(this.heldOut!);
      this.heldOut = null;
      this.heldSock = null;
      return sock.write(b);
    }
    if (this.heldSock === null) {
      this.heldOut = b;
      this.heldSock = sock;
      return true;
    }
    this.corkOut(sock);
    return sock.write(b);
  }

  private corkOut(sock: Transport): void {
    if (this.corkedA === null) this.corkedA = sock;
    else if (this.corkedB === null) this.corkedB = sock;
    // a third socket in one batch (an upstream replaced within it): left uncorked, its writes
    // leave at once, in order; a cork with no slot would never be undone and would hold its bytes
    else return;
    sock.cork();
  }

  /** Before `sock` is ended or handed on: the write kept back for it goes first. */
  private release(sock: Transport): void {
    if (this.heldSock !== sock) return;
    const b = this.heldOut!;
    this.heldOut = null;
    this.heldSock = null;
    if (!sock.destroyed) this.afterWrite(sock, sock.write(b));
  }

  /** A full socket buffer pauses the side that fills it. */
  private afterWrite(sock: Transport, ok: boolean): void {
    if (ok) return;
    if (sock === this.sock) this.upstream?.pause();
    else this.sock.pause();
  }

  private endBatch(): void {
    this.batching = false;
    const held = this.heldSock;
    if (held !== null) this.release(held);
    const a = this.corkedA, b = this.corkedB;
    this.corkedA = this.corkedB = null;
    if (a !== null && !a.destroyed) a.uncork();
    if (b !== null && !b.destroyed) b.uncork();
  }

  /** Parses and dispatches client bytes (also the entry point for network filters that decrypt). */
  feedRequests(chunk: Buffer): void {
    let pos = 0;
    const len = chunk.length;
    // after a request that closes the connection (Connection: close) no further request is
    // read, but the body of that request, when it went upstream, still is
    while (pos < len && !this.closed && (!this.readStopped || this.reqState === 'body-upstream') && !this.tunnel) {
      if (this.reqState === 'head') {
        let r;
        try {
          r = this.p.reqHead.push(chunk, pos);
        } catch (e) {
          this.protocolError(e as HttpParseError);
          return;
        }
        if (!r) {
          if (this.headStartedAt === 0 && this.p.reqHead.pending > 0) this.headStartedAt = Date.now();
          return;
        }
        this.headStartedAt = 0;
        pos = r.bodyStart;
        this.onRequestHead(r.head);
      } else {
        let end;
        try {
          end = this.p.reqBody.feed(chunk, pos);
        } catch (e) {
          this.protocolError(e as HttpParseError);
          return;
        }
        if (this.reqState === 'body-upstream' && end > pos && this.upstream && !this.out(this.upstream, chunk.subarray(pos, end))) this.sock.pause();
        else if (this.holding && end > pos && !this.hold(chunk.subarray(pos, end))) return;
        pos = end;
        if (this.p.reqBody.done) this.requestDone();
      }
    }
    if (this.reqState !== 'head' && this.p.reqBody.done) this.requestDone();
  }

  private onRequestHead(head: MessageHead): void {
    const s = new Stream(this, head);
    this.cur = s;
    this.p.reqBody.startRequest(head);
    const refused = upgradeRefusal(head);
    let status: 'continue' | 'stop' = 'stop';
    let bodyUpstream = false;
    if (refused) {
      // as Envoy without an upgrade config for it: 403 before the filters, and the connection
      // closes (what follows is meant for another protocol and is never parsed as HTTP)
      s.reply(403, '', refused, true);
      s.localVerdict = 'error';
    } else {
      if (head.upgrade && head.upgradeType === 'h2c') s.setHeaders(withoutH2cUpgrade(head.headers));
      else if (head.upgrade) s.upgrade = true;
      else if (head.upgradeType) s.setHeaders(without(head.headers, ['upgrade'])); // Upgrade without `Connection: upgrade` is no upgrade
      // the server gets the authority the policy judges (Envoy sends :authority as Host)
      if (head.absoluteForm) s.setHeaders(withHost(s.requestHeaders(), head.authority));
      // Envoy's codec reads no request after an upgrade it refuses
      s.closeOnLocal = s.upgrade;
      status = this.proxy.chain.decodeHeaders(s);
    }
    if (status === 'stop' || s.local) {
      if (!s.local) s.reply(500, 'Internal Server Error\r\n', 'filter stopped without a reply');
      this.record(s, 'request', s.localVerdict, s.localReason);
      this.queue.push(s);
      if (s.localClose) this.stopReading();
      this.flushLocal();
    } else if (s.holdLimit >= 0) {
      // a filter judges the body: the request waits (head included) until decodeBody
      this.holding = s;
      s.held = [];
      s.payload = [];
      if (!this.p.reqBody.done) {
        this.p.reqBody.sink = s;
        if (head.expectContinue) {
          // the client waits for a 100 before it sends the body we must judge: answer it here
          // (only when no earlier response is pending: interim answers keep the pipeline order)
          if (this.queue.length === 0) this.out(this.sock, 'HTTP/1.1 100 Continue\r\n\r\n');
          s.setHeaders(without(s.requestHeaders(), ['expect']));
        }
      }
    } else {
      this.forward(s);
      bodyUpstream = true;
    }
    this.reqState = this.p.reqBody.done ? 'head' : bodyUpstream ? 'body-upstream' : 'body-here';
    if (this.p.reqBody.done) {
      if (this.holding === s) this.judgeBody(s);
      this.cur = null;
    }
  }

  /** Sends a request head upstream (the body follows as it is read, or `held` right after). */
  private forward(s: Stream): void {
    const head = s.head;
    this.record(s, 'request', 'forwarded');
    if (!head.keepAlive && head.version === 'HTTP/1.1' && !s.upgrade) {
      // Connection is hop-by-hop: the upstream connection stays open for reuse, the client's closes.
      // A head no filter changed goes as received less those lines (no head made again from strings).
      if (!s.headers && !head.absoluteForm) s.forwardRawWithoutConnection();
      else s.setHeaders(withoutConnection(s.requestHeaders()));
    } else s.upstreamClose = !head.keepAlive;
    const up = this.ensureUpstream();
    // Until the server answers 101, the client's next bytes are still HTTP and are parsed and
    // judged as such; whatever the answer, this upstream connection is not reused by others.
    if (s.upgrade) this.upstreamState = 'spent';
    else if (this.upstreamState === 'idle') this.upstreamState = 'busy';
    if (!this.out(up, s.requestBytes())) this.sock.pause();
    this.queue.push(s);
    if (!head.keepAlive) this.stopReading();
    if (this.queue.length > 256) this.sock.pause();
  }

  /** Keeps held body bytes; over the filter's bound the filter answers (413) and the connection closes. */
  private hold(bytes: Buffer): boolean {
    const s = this.holding!;
    s.heldBytes += bytes.length;
    const proxy = this.proxy;
    const busy = proxy.heldBytes + bytes.length > (proxy.opts.maxHeldBytes ?? 64 << 20);
    if (s.heldBytes <= s.holdLimit && !busy) {
      s.held!.push(bytes);
      proxy.heldBytes += bytes.length;
      return true;
    }
    this.releaseHeld(s);
    this.p.reqBody.sink = null;
    // the rest of the body is never read: the connection ends after the answer
    s.closeOnLocal = true;
    // held bodies of all connections together are bounded: the proxy's memory, not this request, is the limit
    if (busy) s.reply(503, 'Service Unavailable\r\n', 'held request bodies over the proxy\'s bound');
    else this.proxy.chain.decodeBody(s, null);
    if (!s.local) s.reply(413, 'Payload Too Large\r\n', 'request body larger than the filter holds');
    this.record(s, 'request', s.localStatus === 403 ? 'denied' : 'error', s.localReason);
    this.stopReading();
    this.sock.pause();
    this.queue.push(s);
    this.flushLocal();
    return false;
  }

  /** A held request leaves the proxy's count (judged, refused, or its connection gone). */
  private releaseHeld(s: Stream): void {
    if (this.holding === s) this.holding = null;
    if (s.held) this.proxy.heldBytes -= s.held.reduce((n, b) => n + b.length, 0);
    s.held = s.payload = null;
  }

  /** The held body is complete: the filters decide, then it goes upstream (head and body) or is answered here. */
  private judgeBody(s: Stream): void {
    this.holding = null;
    this.p.reqBody.sink = null;
    const payload = s.payload!.length === 1 ? s.payload![0]! : Buffer.concat(s.payload!);
    // the bytes leave the proxy's count now: forwarded below, or dropped with a local reply
    const held = s.held!;
    this.releaseHeld(s);
    const status = this.proxy.chain.decodeBody(s, payload);
    if (status === 'stop' || s.local) {
      if (!s.local) s.reply(500, 'Internal Server Error\r\n', 'filter stopped without a reply');
      this.record(s, 'request', s.localStatus === 403 ? 'denied' : 'error', s.localReason);
      this.queue.push(s);
      if (s.localClose) this.stopReading();
      this.flushLocal();
      return;
    }
    this.forward(s);
    const up = this.upstream;
    for (const b of held) if (up && !this.out(up, b)) this.sock.pause();
  }

  private requestDone(): void {
    this.reqState = 'head';
    if (this.holding && this.holding === this.cur) this.judgeBody(this.holding);
    this.cur = null;
  }

  private onClientEnd(): void {
    if (this.tunnel) {
      // half-close: the server may still answer
      this.upstream?.end();
      return;
    }
    // A half-closed client still gets its responses (allowHalfOpen).
    this.stopReading();
    if (this.reqState === 'body-upstream' && !this.p.reqBody.done) {
      this.destroy();
      return;
    }
    if (this.queue.length === 0) this.finish();
    else if (this.upstream && this.queue.every((s) => !s.local)) {
      // nothing more will be sent upstream
    }
  }

  /** A malformed request: a 400-class local reply in pipeline order, then close. */
  private protocolError(e: HttpParseError): void {
    if (!(e instanceof HttpParseError)) e = new HttpParseError(400, 'bad_request', String(e));
    const head: MessageHead = this.cur?.head ?? {
      method: '', target: '', path: '', authority: '', absoluteForm: false, status: 0, reason: '', version: 'HTTP/1.1', headers: [], raw: Buffer.alloc(0),
      contentLength: -1, chunked: false, keepAlive: false, upgrade: false, upgradeType: '', host: '', expectContinue: false,
    };
    const inBody = this.reqState !== 'head' && this.cur;
    this.stopReading();
    this.sock.pause();
    this.headStartedAt = 0;
    if (inBody && this.reqState === 'body-upstream') {
      // the upstream already has part of this request: it can only be cut off
      this.record(this.cur!, 'request', 'error', e.reason);
      this.destroy();
      return;
    }
    const s = new Stream(this, inBody ? this.cur!.head : head);
    s.reply(e.status, `${STATUS_TEXT[e.status] ?? 'Bad Request'}\r\n`, e.reason);
    s.localClose = true;
    s.local = localReply(e.status, `${STATUS_TEXT[e.status] ?? 'Bad Request'}\r\n`, true);
    this.record(s, 'request', 'error', e.reason);
    this.queue.push(s);
    this.flushLocal();
  }

  /** Slowloris: the head did not complete in time. */
  headerTimeout(): void {
    this.protocolError(new HttpParseError(408, 'header_timeout', 'request header section not complete in time'));
  }

  // ------------------------------------------------------------------ upstream (responses)

  private ensureUpstream(fresh = false): Transport {
    if (this.upstream) return this.upstream;
    const o = this.proxy.opts;
    const target = o.upstreamOverride ?? { host: this.server.ip, port: this.server.port };
    const transparent = !!o.upstreamSocket && !o.upstreamOverride;
    const mark = proxyUpstreamMark(this.peerIngress() ? 'ingress' : this.direction, this.client.identity);
    // Idle upstream connections are shared by downstream connections with the same source
    // address, identity and destination (the destination still sees the same pod).
    const origin = this.upstreamOrigin;
    this.upstreamKey = upstreamKey(transparent ? this.client.ip : '', mark, target.host, target.port, origin ? origin.tag : null);
    const pooled = fresh ? undefined : this.proxy.pool.take(this.upstreamKey, this);
    const reused = !!pooled;
    let link = pooled;
    if (!link) {
      const transparentFd = (): number => {
        try {
          return o.upstreamSocket!(this.client.ip, mark);
        } catch (e) {
          o.logger?.warn({ err: String(e) }, 'upstream socket');
          return -1;
        }
      };
      if (origin) {
        // the origin connects its own fd (a client TLS leg), the transparent one when there is one
        link = new UpstreamLink(origin.open(transparent ? transparentFd() : -1, target.host, target.port), this);
      } else {
        const open = (onread: net.OnReadOpts): net.Socket => {
          const opts: net.SocketConstructorOpts = { allowHalfOpen: true, onread };
          const fd = transparent ? transparentFd() : -1;
          return fd >= 0 ? new net.Socket({ fd, readable: true, writable: true, ...opts }) : new net.Socket(opts);
        };
        // its listeners, once per upstream connection (the pool hands the link on with them); read
        // into the link's own buffer
        link = new UpstreamLink(open, this);
        const up = link.sock as net.Socket;
        noReadAhead(up);
        up.setNoDelay(true);
        up.connect(target.port, target.host);
      }
    }
    const sock = link.sock;
    this.upLink = link;
    this.upstream = sock;
    this.upstreamError = null;
    this.upstreamState = reused ? 'reused' : 'busy';
    this.resState = 'head';
    this.p.resHead.reset();
    // a destination that never answers the SYN (dropped on its way) gets a 503, like Envoy's
    // connect timeout; checked by the proxy's sweep (no timer per upstream connection)
    this.connectDeadline = reused ? 0 : Date.now() + (this.proxy.opts.connectTimeoutMs ?? 5000);
    return sock;
  }

  /** The sweep: the upstream being connected is past its connect deadline. */
  connectTimeout(now: number): void {
    if (this.connectDeadline === 0 || now < this.connectDeadline) return;
    this.connectDeadline = 0;
    const sock = this.upstream as (Transport & { connecting?: boolean }) | null;
    if (!sock || !sock.connecting) return;
    this.onUpstreamError(sock, new Error('upstream connect timeout'));
    sock.destroy();
  }

  onUpstreamDrain(): void {
    this.sock.resume();
  }

  keepsRead(): boolean {
    // a write to the client not yet taken by the kernel holds its bytes; a response head cut
    // across reads is held by its parser (the closing head's copy and everything else are copies)
    return this.sock.writableLength > 0 || this.p.resHead.pending > 0;
  }

  onUpstreamData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActive = this.proxy.now;
    if (this.tunnel) {
      if (!this.sock.write(chunk)) this.upstream?.pause();
      return;
    }
    // One write per read toward the client (response heads, bodies, queued local replies).
    this.batching = true;
    try {
      this.feedResponses(chunk);
    } finally {
      this.run = -1;
      this.pre = null;
      this.endBatch();
    }
  }

  /**
   * Writes what feedResponses kept for one write: the run of `chunk` up to `end` (the chunk
   * itself when the run is all of it), after a closing response's head when there is one.
   */
  private flushRun(chunk: Buffer, end: number): void {
    const run = this.run;
    let out = run >= 0 && end > run ? (run === 0 && end === chunk.length ? chunk : chunk.subarray(run, end)) : null;
    const pre = this.pre;
    if (pre) {
      if (!out) out = pre;
      else if (out.length > CLOSING_HEAD_MERGE_MAX) this.out(this.sock, pre);
      else {
        const both = Buffer.allocUnsafe(pre.length + out.length);
        pre.copy(both, 0);
        out.copy(both, pre.length);
        out = both;
      }
      this.pre = null;
    }
    if (out && !this.out(this.sock, out)) this.upstream?.pause();
    this.run = -1;
  }

  private feedResponses(chunk: Buffer): void {
    let pos = 0;
    const len = chunk.length;
    // this.run: start of a run of `chunk` forwarded as is (response heads and bodies), written
    // as one sub-array when something else must be written or the chunk ends (flushRun).
    // this.pre: a closing response's head (as received, plus `connection: close`): it leaves with
    // the run that follows it (its body) as one buffer, one write instead of a writev of three
    // pieces, when that body is small; a larger one is not copied (two writes, one writev).
    this.run = -1;
    this.pre = null;
    while (pos < len && !this.closed) {
      const s = this.queue[0];
      if (!s || s.local) {
        // a response nobody asked for (or ahead of a local reply): the upstream is broken
        this.flushRun(chunk, pos);
        this.destroy();
        return;
      }
      if (this.resState === 'head') {
        let r;
        try {
          r = this.p.resHead.push(chunk, pos);
        } catch (e) {
          this.flushRun(chunk, pos);
          this.upstreamFailed(s, 502, (e as HttpParseError).reason ?? 'bad_response');
          return;
        }
        if (!r) {
          this.flushRun(chunk, pos);
          return;
        }
        const h = r.head;
        const headStart = r.bodyStart - h.raw.length;
        const inChunk = headStart >= pos && h.raw.buffer === chunk.buffer && h.raw.byteOffset === chunk.byteOffset + headStart;
        pos = r.bodyStart;
        if (h.status >= 100 && h.status < 200 && h.status !== 101) {
          if (inChunk) { if (this.run < 0) this.run = headStart; } else { this.flushRun(chunk, headStart); if (!this.out(this.sock, h.raw)) this.upstream?.pause(); }
          continue;
        }
        const refused = h.status === 101 ? this.switchRefusal(s, h) : undefined;
        if (refused) {
          this.flushRun(chunk, headStart);
          this.upstreamFailed(s, 502, refused);
          return;
        }
        s.response = h;
        if (this.upstreamState === 'reused') this.upstreamState = 'busy';
        this.p.resBody.startResponse(h, s.head.method);
        this.proxy.chain.encodeHeaders(s);
        if (s.observer) this.p.resBody.sink = s.observer;
        const closing = !s.head.keepAlive && h.keepAlive && !this.p.resBody.untilClose;
        if (inChunk && !closing) {
          if (this.run < 0) this.run = headStart;
        } else {
          this.flushRun(chunk, headStart);
          let ok;
          if (!closing) ok = this.out(this.sock, h.raw);
          else if (hasConnectionFields(h.headers)) ok = this.out(this.sock, closingResponseHead(h));
          else {
            // nothing to remove: the head as received (parsed, every line CRLF) up to its empty
            // line, then `connection: close` and the empty line, written by flushRun() with the body after it
            const n = h.raw.length - 2;
            const pre = (this.pre = Buffer.allocUnsafe(n + CLOSE_FIELD.length));
            h.raw.copy(pre, 0, 0, n);
            CLOSE_FIELD.copy(pre, n);
            ok = true;
          }
          if (!ok) this.upstream?.pause();
        }
        if (h.status === 101) {
          // the server agreed: from here on, bytes pass unparsed both ways
          this.flushRun(chunk, pos);
          this.phase = 'tunnel';
          this.upstreamState = 'spent';
          this.record(s, 'response', 'forwarded');
          this.queue.shift();
          if (pos < len) this.out(this.sock, chunk.subarray(pos));
          // a client that already half-closed sends nothing more through the tunnel
          if (this.sock.readableEnded && this.upstream) { this.release(this.upstream); this.upstream.end(); }
          this.sock.resume();
          return;
        }
        this.resState = 'body';
        if (this.p.resBody.done) { this.flushRun(chunk, pos); this.responseDone(); }
      } else {
        const end = this.p.resBody.feed(chunk, pos);
        if (this.run < 0 && end > pos) this.run = pos;
        pos = end;
        if (this.p.resBody.done) { this.flushRun(chunk, pos); this.responseDone(); }
      }
    }
    this.flushRun(chunk, pos);
  }

  /**
   * Why a 101 cannot start a tunnel: a switch nobody asked for, to another protocol than the
   * WebSocket asked for, or one the client did not wait for (what it sent after the upgrade
   * request was judged as HTTP, but the server would now read it as the new protocol).
   */
  private switchRefusal(s: Stream, h: MessageHead): string | undefined {
    if (!s.upgrade) return 'unexpected_101: a 101 to a request that did not ask to upgrade';
    if (h.upgradeType !== 'websocket') return `upgrade_mismatch: a 101 switching to "${h.upgradeType.slice(0, 40)}", not the websocket asked for`;
    if (!h.upgrade) return 'upgrade_mismatch: a 101 without Connection: upgrade';
    if (this.queue.length !== 1 || this.reqState !== 'head' || this.p.reqHead.pending > 0) return 'upgrade_pipelined: client bytes after the upgrade request before the 101';
    return undefined;
  }

  private responseDone(): void {
    const s = this.queue.shift()!;
    this.resState = 'head';
    this.endObserver(s, true);
    this.record(s, 'response', 'forwarded');
    const resp = s.response!;
    if (this.upstreamState !== 'spent') this.upstreamState = resp.keepAlive && this.queue.length === 0 && !s.upstreamClose ? 'idle' : 'busy';
    if (!resp.keepAlive || !s.head.keepAlive) {
      // the server or the client ends the connection with this exchange
      this.stopReading();
      this.finish(!s.head.keepAlive && this.queue.length === 0);
      return;
    }
    this.flushLocal();
    if (this.queue.length <= 256 && !this.readStopped) this.sock.resume();
    if (this.readStopped && this.queue.length === 0) this.finish();
  }

  onUpstreamEnd(up: Transport): void {
    if (up !== this.upstream) return;
    if (this.tunnel) {
      this.sock.end();
      return;
    }
    this.upstream = null;
    // the server ended (or the socket failed): nothing more comes from it, and with allowHalfOpen
    // our side stays open until closed here (a socket in CLOSE-WAIT per request: EMFILE in a soak)
    up.destroy();
    const s = this.queue[0];
    if (s && !s.local && this.resState === 'body' && this.p.resBody.untilClose) {
      this.p.resBody.done = true;
      this.queue.shift();
      this.endObserver(s, true);
      this.record(s, 'response', 'forwarded');
      this.stopReading();
      this.finish();
      return;
    }
    if (this.queue.some((q) => !q.local)) {
      const first = this.queue[0]!;
      // A pooled connection the server closed while we reused it (keep-alive race): nothing of a
      // response arrived and the requests had no body, so they are sent again on a new connection.
      if (this.upstreamState === 'reused' && this.resState === 'head' && this.p.resHead.pending === 0 && !first.response &&
          this.reqState === 'head' && this.queue.every((q) => !q.local && q.head.contentLength <= 0 && !q.head.chunked && !q.upgrade)) {
        const again = this.ensureUpstream(true);
        for (const q of this.queue) again.write(q.requestBytes());
        return;
      }
      const ue = this.upstreamError;
      if (this.resState === 'head' && !first.local && !first.response) this.upstreamFailed(first, ue?.proxyStatus ?? 503, ue?.proxyReason ?? 'upstream_reset_before_response_started');
      else this.destroy();
      return;
    }
    if (this.cur && this.reqState === 'body-upstream') this.destroy();
  }

  onUpstreamError(up: Transport, err: Error): void {
    this.proxy.opts.logger?.debug({ err: err.message, server: `${this.server.ip}:${this.server.port}` }, 'upstream error');
    if (up === this.upstream) this.upstreamError = err;
    this.onUpstreamEnd(up);
  }

  /** The upstream failed before a response started: a 502/503 local reply, then close. */
  private upstreamFailed(s: Stream, status: number, reason: string): void {
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
    if (s.response) {
      this.destroy();
      return;
    }
    const body = status === 503 ? 'upstream connect error or disconnect/reset before headers\r\n' : 'Bad Gateway\r\n';
    s.local = localReply(status, body, true);
    s.localStatus = status;
    s.localReason = reason;
    s.localClose = true;
    this.stopReading();
    // later pipelined requests that went upstream are lost with it
    this.queue.length = 0;
    this.queue.push(s);
    this.flushLocal();
  }

  /** Writes the local replies at the head of the queue. */
  private flushLocal(): void {
    while (this.queue.length && this.queue[0]!.local) {
      const s = this.queue.shift()!;
      this.out(this.sock, s.local!);
      this.endObserver(s, false);
      this.record(s, 'response', s.localVerdict, s.localReason);
      if (s.localClose) {
        this.stopReading();
        this.queue.length = 0;
        this.finish();
        return;
      }
    }
    if (this.readStopped && this.queue.length === 0) this.finish();
  }

  /**
   * Ends the client side after what was written, and the upstream. `clientClosed`: the client
   * asked to close with the request just answered, the last it sent.
   */
  private finish(clientClosed = false): void {
    if (this.phase === 'closed') return;
    const tunnel = this.phase === 'tunnel';
    this.phase = 'closed';
    this.release(this.sock);
    if (clientClosed && this.closesAtOnce()) {
      // No lingering close (nginx's `lingering_close on` decides the same way): the kernel sends
      // the response, then the FIN, from the closed socket; there is nothing to wait for from a
      // client that said it sends no more. Saves per `Connection: close` request the shutdown,
      // the wake-up and read of the client's FIN, and Node's end/finish/end-of-stream ticks.
      // 'close' follows (onClosed: the connection's state and read buffer go back).
      this.sock.destroy();
    } else {
      // A stream over the socket (TLS) has its own last bytes (close_notify), written by its
      // _final after every write completed: it closes there, once they are in the kernel, when
      // it says it can (kCloseOnFinal, intercept.ts); the client's close_notify and FIN are not
      // waited for.
      if (clientClosed && this.closesOnFinal()) (this.sock as ClientStream)[kCloseOnFinal] = true;
      this.lingeringEnd();
    }
    const up = this.upstream;
    this.upstream = null;
    if (!up) return;
    this.release(up);
    // only after complete exchanges: no request or response in flight, nothing unparsed, no upgrade
    this.connectDeadline = 0;
    const link = this.upLink;
    this.upLink = null;
    if (link && link.sock === up && this.upstreamState === 'idle' && !tunnel && this.queue.length === 0 && this.reqState === 'head' && !this.cur) {
      this.proxy.pool.put(this.upstreamKey, link, this.proxy.now);
    } else up.end();
  }

  /**
   * Whether the client side can be closed without reading on to the client's FIN: the accepted
   * socket itself (not a stream over it, e.g. TLS with its close_notify), everything written
   * already taken by the kernel (closing drops what Node still holds), and nothing of the client
   * unread or expected: no request body still coming and no part of a next head (unread bytes at
   * close make the kernel answer with a reset, which may cost the client the response).
   */
  private closesAtOnce(): boolean {
    const sock = this.sock as ClientStream;
    return sock[kReadBuf] !== undefined && !sock.destroyed && sock.writableLength === 0 && !sock.writableNeedDrain &&
      this.nothingExpected();
  }

  /**
   * Whether an adopted stream that can close at its _final (it carries kCloseOnFinal: a TLS
   * server stream, which checks there that its last bytes are in the kernel) may: nothing of the
   * client unread or expected, as closesAtOnce. Its writes still in Node are not a reason to
   * linger: _final runs only after all of them completed.
   */
  private closesOnFinal(): boolean {
    const sock = this.sock as ClientStream;
    return sock[kCloseOnFinal] === false && !sock.destroyed && this.nothingExpected();
  }

  /** no request body still coming and no part of a next head read */
  private nothingExpected(): boolean {
    return this.reqState === 'head' && this.cur === null && this.holding === null && this.p.reqHead.pending === 0;
  }

  /** The client side ends after what was written and is closed at the client's FIN (or by the sweep). */
  private lingeringEnd(): void {
    this.sock.end();
    // the sweep destroys the socket if the client has not closed its side within 5 s (the
    // coarse clock: the sweep's own step is 500 ms); never 0, which means not closing
    this.closingAt = this.proxy.now || 1;
    // A socket reading into its own buffer stops reading when paused (a refusal pauses it), so
    // the client's FIN would never be read: read on (bytes are dropped, the connection is
    // closed), as a paused socket of Node's reads on up to its high-water mark. Only a paused
    // one: a socket never paused (every `Connection: close` exchange) reads on as it is, and
    // resume() there would schedule a tick that turns it to flowing mode for nothing.
    if ((this.sock as ClientStream)[kReadBuf] !== undefined && this.sock.readableFlowing === false && !this.sock.destroyed) this.sock.resume();
  }

  private endObserver(s: Stream, complete: boolean): void {
    const o = s.observer;
    if (!o) return;
    s.observer = null;
    if (this.p.resBody.sink === o) this.p.resBody.sink = null;
    try {
      o.end(complete);
    } catch { /* a reader never breaks the proxy */ }
  }

  destroy(): void {
    this.proxy.conns.delete(this);
    if (this.holding) this.releaseHeld(this.holding);
    // responses cut off: their readers account for what passed
    for (const q of this.queue) if (q.observer) this.endObserver(q, false);
    if (this.p !== RELEASED) {
      // back to the pool, reset; this connection parses nothing more (every reader checks `closed`)
      this.proxy.parsers.put(this.p);
      this.p = RELEASED;
    }
    if (this.phase === 'closed' && this.sock.destroyed) return;
    this.phase = 'closed';
    this.sock.destroy();
    this.upstream?.destroy();
    this.upstream = null;
  }

  // ------------------------------------------------------------------ access log

  private record(s: Stream, type: 'request' | 'response', verdict: AccessVerdict, reason?: string): void {
    const cb = this.proxy.opts.onRecord;
    if (!cb) return;
    const plain = !s.traceId && !reason && !s.headerActions && !s.ai;
    // nearly every record is plain: with a borrowing sink, the one borrowed record; else a new
    // object of the same shape. Every field is written here (none left from the last record).
    const r = plain && this.proxy.opts.recordsBorrowed ? BORROWED : newRecord();
    const isReq = type === 'request';
    const answered = !isReq && s.response && !s.local;
    r.type = type; r.verdict = verdict; r.direction = this.direction;
    r.timeMs = isReq ? s.startMs : Date.now();
    r.client = this.client; r.server = this.server; r.endpointId = this.endpoint?.id ?? 0;
    r.method = s.head.method; r.url = s.head.method ? s.url() : ''; r.host = s.host; r.path = s.path;
    r.protocol = s.head.version; r.headers = isReq ? (s.headers ?? s.head.headers) : answered ? s.response!.headers : NO_HEADERS;
    r.code = isReq ? 0 : answered ? s.response!.status : s.localStatus;
    r.latencyNs = isReq ? 0 : Math.round((performance.now() - s.startPerf) * 1e6);
    r.requestTimeMs = isReq ? undefined : s.startMs;
    r.tls = this.tls ?? undefined;
    if (!plain) {
      // optional fields only when present (keys a consumer reads as absent stay absent)
      if (s.traceId) { r.traceId = s.traceId; r.parentSpanId = s.parentSpanId!; }
      if (reason) r.reason = reason;
      if (s.headerActions) r.headerActions = s.headerActions;
      if (s.ai) r.ai = s.ai;
    }
    try {
      cb(r);
    } catch { /* the access log never breaks the proxy */ }
  }
}

/** A new record with BORROWED's keys (one shape for both), to be filled by record(). */
function newRecord(): HttpAccessRecord {
  return {
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 0,
    client: BORROWED.client, server: BORROWED.server, endpointId: 0,
    method: '', url: '', host: '', path: '', protocol: 'HTTP/1.1', headers: NO_HEADERS, code: 0, latencyNs: 0,
    requestTimeMs: undefined, tls: undefined,
  };
}

/**
 * Turns off Readable's read-ahead for a socket the proxy reads in flowing mode: after every chunk
 * Node schedules a nextTick (maybeReadMore) that calls read(0) to fill the buffer up to its
 * high-water mark, which a socket read straight into 'data' never needs (the handle keeps
 * reading; pause() and resume() do not go through it). That tick and its read(0) were ~10 % of
 * the proxy's CPU per request (--cpu-prof: nextTick, maybeReadMore_, Socket._read); a pair of
 * sockets echoing over loopback costs ~10 % less CPU per round trip without it. Node marks the
 * read-ahead as running with `readingMore`: set, it is never scheduled. Sockets whose state has
 * no such field (another Node) keep the default.
 */
function noReadAhead(s: net.Socket): void {
  const st = (s as unknown as { _readableState?: { readingMore?: boolean } })._readableState;
  if (st && st.readingMore === false) st.readingMore = true;
}
