/**
 * The client side of an intercepted connection as a Transport (../transport.ts) over a TLS leg of
 * our own (sys/tls-leg.ts: OpenSSL on the fd, driven by libuv's poll on Node's loop): the HTTP
 * proxy reads and writes it with no Node stream between (issue 18). The fd is the transport's
 * from creation on (ProxyConnection.handOff gave it up by Node).
 *
 * Before the leg: the ClientHello is peeked (watchHello, peek: nothing is consumed) so that its
 * server name picks the leaf's context before SSL_new; startTls then opens the leg and OpenSSL
 * reads the hello from the kernel for real.
 *
 * Reads go into the reader's buffers (readWith: ProxyConnection's ReadBuffer), so the reader may
 * keep pointers into what it read. Writes are copied by the leg only when it cannot send them at
 * once; corked writes leave as one SSL_write at uncork (one record, not one per piece).
 *
 * Closing: end() with kCloseOnFinal (the client asked to close, nothing of it expected) → the
 * held writes, one close_notify, the fd closed at once; end() otherwise → the held writes and a
 * close_notify, reading on until the client's close_notify or FIN (or the proxy's sweep). `close`
 * is emitted once, on the tick after the leg (or the bare fd) is gone.
 */
import { EventEmitter } from 'node:events';
import type { TlsContext } from '../../sys/openssl.ts';
import { openTlsLeg, type TlsLeg, type TlsLegError, type TlsLegHandlers } from '../../sys/tls-leg.ts';
import { closeTcpFd, peekFd, resetOnClose, setRcvLowat } from '../../sys/tcp-fd.ts';
import { watchFd, type FdWatch } from '../../sys/fd-watch.ts';
import { kCloseOnFinal, type ReadSink, type Transport } from '../transport.ts';

/** Who drives the transport before and during its handshake (the interception). */
export interface LegOwner {
  /** the fd is readable before the leg exists (status < 0: the socket reported an error; events: UV_DISCONNECT when the peer ended its side) */
  onReadable(status: number, events: number): void;
  /** the handshake completed */
  onSecure(): void;
  /** the leg failed before its handshake completed (the transport is destroyed already) */
  onHandshakeError(err: TlsLegError): void;
}

/** a TlsLegError as an Error of Node's shape (code, message), for the `error` listeners */
export class TlsTransportError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  constructor(e: TlsLegError) {
    super(e.message);
    this.code = e.code;
    this.errno = e.errno;
  }
}

function emitClose(t: LegTransport): void {
  t.emit('close');
}

export class LegTransport extends EventEmitter implements Transport, TlsLegHandlers {
  readonly fd: number;
  leg: TlsLeg | null = null;
  [kCloseOnFinal] = false;
  #owner: LegOwner;
  #watch: FdWatch | null = null;
  /** SO_RCVLOWAT was raised (a partial hello): set back to 1 before the leg reads */
  #lowat = false;
  #sink: ReadSink | null = null;
  /** the sink's buffer the current read went into */
  #buf: Buffer | null = null;
  #destroyed = false;
  #closeEmitted = false;
  #paused = false;
  #readEnded = false;
  #endCalled = false;
  #needDrain = false;
  #corked = 0;
  #corkedBufs: Uint8Array[] = [];

  constructor(fd: number, owner: LegOwner) {
    super();
    this.fd = fd;
    this.#owner = owner;
  }

  // ------------------------------------------------------------------ before the leg

  /** watches for the ClientHello; a reason when the fd cannot be watched */
  watchHello(): string | undefined {
    if (this.#destroyed) return 'destroyed';
    if (this.#watch) { this.#watch.start(); return undefined; }
    const owner = this.#owner;
    const w = watchFd(this.fd, (status, events) => owner.onReadable(status, events));
    if (typeof w === 'string') return w;
    this.#watch = w;
    return undefined;
  }

  /** no more readability calls until watchHello again (the hello is complete: the leaf is being issued) */
  stopWatching(): void {
    this.#watch?.stop();
  }

  /** the bytes waiting, copied into `buf` and left in the kernel (tcp-fd.ts peekFd's answer) */
  peek(buf: Buffer): number {
    return this.#destroyed ? 0 : peekFd(this.fd, buf);
  }

  /** readable again only once more than `seen` bytes wait (or at the end, or an error) */
  needMore(seen: number): void {
    if (!this.#destroyed && setRcvLowat(this.fd, seen + 1)) this.#lowat = true;
  }

  /**
   * Readable with nothing new: the kernel wakes a reader under receive-memory pressure whatever
   * SO_RCVLOWAT says (tcp_epollin_ready: many tiny segments), and a peek takes nothing off, so the
   * watch would fire again at once: it is stopped and started again `ms` later instead.
   */
  retryLater(ms: number): void {
    const w = this.#watch;
    if (!w || this.#destroyed) return;
    w.stop();
    setTimeout(() => { if (!this.#destroyed && this.#watch === w) w.start(); }, ms).unref();
  }

  /** the leg, with the leaf's server context; a reason when it cannot be opened (the transport is destroyed then) */
  startTls(context: TlsContext): TlsLegError | undefined {
    if (this.#destroyed) return { code: 'TLS_LEG_SETUP', message: 'the connection is gone' };
    this.#watch?.close();
    this.#watch = null;
    if (this.#lowat) { setRcvLowat(this.fd, 1); this.#lowat = false; }
    const r = openTlsLeg(this.fd, { role: 'server', context }, this);
    if (!r.leg) {
      this.destroy();
      return r.error;
    }
    this.leg = r.leg;
    if (this.#paused) r.leg.pause();
    return undefined;
  }

  // ------------------------------------------------------------------ the leg's handlers

  onHandshake(): void {
    this.#owner.onSecure();
  }

  readBuffer(): Buffer {
    return (this.#buf = this.#sink!.readBuffer());
  }

  onData(view: Buffer): void {
    if (this.#sink) this.#sink.onRead(view.length, this.#buf!);
    else this.emit('data', Buffer.from(view));
  }

  onDrain(): void {
    this.#needDrain = false;
    this.emit('drain');
  }

  onEnd(): void {
    this.#readEnded = true;
    this.emit('end');
    // our side ended already (a lingering close): both are done
    if (this.#endCalled) this.leg?.close();
  }

  onError(err: TlsLegError): void {
    this.#gone();
    if (!this.leg?.handshaken) { this.#owner.onHandshakeError(err); return; }
    if (this.listenerCount('error')) this.emit('error', new TlsTransportError(err));
  }

  onClose(): void {
    this.#gone();
  }

  /** the leg or the fd is gone: `close` on the next tick, once */
  #gone(): void {
    this.#destroyed = true;
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.#corkedBufs.length = 0;
    process.nextTick(emitClose, this);
  }

  // ------------------------------------------------------------------ Transport

  readWith(sink: ReadSink): void {
    this.#sink = sink;
  }

  write(b: Uint8Array | string): boolean {
    if (this.#destroyed || this.#endCalled) return false;
    const bytes = typeof b === 'string' ? Buffer.from(b) : b;
    if (this.#corked > 0) {
      this.#corkedBufs.push(bytes);
      return true;
    }
    const leg = this.leg;
    if (!leg) return false;
    const ok = leg.write(bytes);
    if (!ok) this.#needDrain = true;
    return ok;
  }

  cork(): void {
    this.#corked++;
  }

  uncork(): void {
    if (this.#corked === 0 || --this.#corked > 0) return;
    const bufs = this.#corkedBufs;
    if (bufs.length === 0) return;
    const one = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
    bufs.length = 0;
    if (this.#destroyed || !this.leg) return;
    if (!this.leg.write(one)) this.#needDrain = true;
  }

  end(): this {
    if (this.#destroyed || this.#endCalled) return this;
    if (this.#corked > 0) { this.#corked = 1; this.uncork(); }
    this.#endCalled = true;
    const leg = this.leg;
    if (!leg || !leg.handshaken) { this.destroy(); return this; }
    if (this[kCloseOnFinal] || this.#readEnded) leg.close();
    else {
      leg.end();
      // the client's close_notify or FIN is read (its bytes are dropped by the reader)
      this.resume();
    }
    return this;
  }

  destroy(): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#watch?.close();
    this.#watch = null;
    if (this.leg) this.leg.destroy(); // onClose follows from it
    else {
      closeTcpFd(this.fd);
      this.#gone();
    }
    return this;
  }

  resetAndDestroy(): this {
    if (this.#destroyed) return this;
    resetOnClose(this.fd);
    return this.destroy();
  }

  pause(): this {
    this.#paused = true;
    this.leg?.pause();
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.leg?.resume();
    return this;
  }

  isPaused(): boolean {
    return this.#paused;
  }

  get destroyed(): boolean {
    return this.#destroyed;
  }

  get writableLength(): number {
    let n = this.leg ? this.leg.heldBytes : 0;
    for (const b of this.#corkedBufs) n += b.length;
    return n;
  }

  get writableNeedDrain(): boolean {
    return this.#needDrain;
  }

  get readableFlowing(): boolean | null {
    return !this.#paused;
  }

  get readableEnded(): boolean {
    return this.#readEnded;
  }

  get readableLength(): number {
    return 0;
  }

  /** the TLS version as OpenSSL names it (`TLSv1.3`), '' before the handshake */
  protocol(): string {
    return this.leg?.handshaken ? this.leg.protocol() : '';
  }
}
