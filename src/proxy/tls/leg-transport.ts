/**
 * A Transport (../transport.ts) over a TLS leg of our own (sys/tls-leg.ts: OpenSSL on the fd,
 * driven by libuv's poll on Node's loop): the HTTP proxy reads and writes it with no Node stream
 * between (issue 18). One home for what both sides share; the roles are subclasses:
 * server-leg.ts (the intercepted client's side: the hello watch, the interception's callbacks)
 * and upstream-leg.ts (an originated upstream: the connect, the 502 classification, an end()
 * deferred behind the handshake). The transport is the leg's handlers object itself.
 *
 * - Reads: with a ReadSink (readWith), OpenSSL decrypts straight into the sink's buffers, so the
 *   reader may keep pointers into what it read; without one, a `data` event with a copy.
 * - Writes: taken by OpenSSL at once or held by the leg (a copy); `drain` when the held ones are
 *   taken. cork()/uncork(): the writes in between leave as one SSL_write (one record, one syscall).
 * - end(): with kCloseOnFinal (nothing more expected from the peer) → the held writes, one
 *   close_notify, the fd closed at once; otherwise → the held writes and a close_notify, reading on
 *   until the peer's close_notify or FIN (a half-close: the peer may still answer). Before the
 *   handshake: the role decides (endBeforeHandshake).
 * - `close` is emitted once, on the tick after the leg (or the bare fd) is gone.
 */
import type { TlsLeg, TlsLegError, TlsLegHandlers } from '../../sys/tls-leg.ts';
import { closeTcpFd } from '../../sys/tcp-fd.ts';
import { kCloseOnFinal, type ReadSink, type Transport, type TransportEvent } from '../transport.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a Transport's listener type
type Listener = (...args: any[]) => void;
export type Listeners = Record<TransportEvent, Listener[]>;

export function listeners(): Listeners {
  return { data: [], end: [], drain: [], error: [], close: [] };
}

/** the listeners of `event`, called with `t` as `this` (none: nothing, an `error` included) */
export function emit(t: Transport, ls: Listener[], arg?: unknown): void {
  if (ls.length === 0) return;
  if (ls.length === 1) { ls[0]!.call(t, arg); return; }
  for (const l of ls.slice()) l.call(t, arg);
}

function emitClose(t: LegTransport): void {
  emit(t, t.ls.close);
}

/** where a read goes while no sink is given (its bytes are copied into the `data` event) */
const NO_SINK = Buffer.allocUnsafeSlow(16384);

export abstract class LegTransport implements Transport, TlsLegHandlers {
  /** @internal */
  readonly ls = listeners();
  readonly fd: number;
  leg: TlsLeg | null = null;
  [kCloseOnFinal] = false;
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
  #corkedBytes = 0;
  /** how a string write is encoded */
  readonly #enc: BufferEncoding;

  constructor(fd: number, enc: BufferEncoding) {
    this.fd = fd;
    this.#enc = enc;
  }

  // ------------------------------------------------------------------ the roles' parts

  /** the handshake completed */
  abstract onHandshake(): void;
  /** the leg failed (it is destroyed already, `close` is on its way) */
  protected abstract failed(err: TlsLegError): void;
  /** end() before the handshake completed (or before the leg exists) */
  protected abstract endBeforeHandshake(): void;
  /** destroy(): what the role holds besides the leg */
  protected abstract release(): void;

  /** the leg, opened with this transport as its handlers */
  protected attach(leg: TlsLeg): void {
    this.leg = leg;
    if (this.#paused) leg.pause();
  }

  /** end() was asked */
  protected get endCalled(): boolean {
    return this.#endCalled;
  }

  // ------------------------------------------------------------------ the leg's handlers

  readBuffer(): Buffer {
    const s = this.#sink;
    return (this.#buf = s ? s.readBuffer() : NO_SINK);
  }

  onData(view: Buffer): void {
    const s = this.#sink;
    if (s) s.onRead(view.length, this.#buf!);
    else emit(this, this.ls.data, Buffer.from(view));
  }

  onDrain(): void {
    this.#needDrain = false;
    emit(this, this.ls.drain);
  }

  onEnd(): void {
    this.#readEnded = true;
    emit(this, this.ls.end);
    // our side ended already (a lingering close): both are done
    if (this.#endCalled) this.leg?.close();
  }

  onError(err: TlsLegError): void {
    this.gone();
    this.failed(err);
  }

  onClose(): void {
    this.gone();
  }

  /** the leg or the fd is gone: `close` on the next tick, once */
  protected gone(): void {
    this.#destroyed = true;
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.#corkedBufs.length = 0;
    this.#corkedBytes = 0;
    process.nextTick(emitClose, this);
  }

  // ------------------------------------------------------------------ Transport

  /**
   * Reads go into `sink`'s buffers from now on (OpenSSL decrypts straight into them, no copy);
   * the sink decides when a buffer is read into again.
   */
  readWith(sink: ReadSink): void {
    this.#sink = sink;
  }

  write(b: Uint8Array | string): boolean {
    if (this.#destroyed || this.#endCalled) return false;
    const bytes = typeof b === 'string' ? Buffer.from(b, this.#enc) : b;
    if (this.#corked > 0) {
      this.#corkedBufs.push(bytes);
      this.#corkedBytes += bytes.length;
      return true;
    }
    const leg = this.leg;
    if (!leg) return false;
    const ok = leg.write(bytes);
    if (!ok && !leg.destroyed) this.#needDrain = true;
    return ok;
  }

  cork(): void {
    this.#corked++;
  }

  uncork(): void {
    if (this.#corked === 0 || --this.#corked > 0) return;
    const bufs = this.#corkedBufs;
    if (bufs.length === 0) return;
    const one = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs, this.#corkedBytes);
    bufs.length = 0;
    this.#corkedBytes = 0;
    const leg = this.leg;
    if (this.#destroyed || !leg) return;
    if (!leg.write(one) && !leg.destroyed) this.#needDrain = true;
  }

  end(): this {
    if (this.#destroyed || this.#endCalled) return this;
    if (this.#corked > 0) { this.#corked = 1; this.uncork(); }
    this.#endCalled = true;
    const leg = this.leg;
    if (!leg || !leg.handshaken) { this.endBeforeHandshake(); return this; }
    if (this[kCloseOnFinal] || this.#readEnded) leg.close();
    else {
      leg.end();
      // the peer's close_notify or FIN is read (its bytes are dropped by the reader)
      this.resume();
    }
    return this;
  }

  /** closed at once, nothing more sent; `close` follows */
  destroy(): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.release();
    if (this.leg) this.leg.destroy(); // onClose follows from it
    else {
      closeTcpFd(this.fd);
      this.gone();
    }
    return this;
  }

  abstract resetAndDestroy(): this;

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

  isPaused(): boolean { return this.#paused; }
  get destroyed(): boolean { return this.#destroyed; }
  get writableLength(): number { return (this.leg ? this.leg.heldBytes : 0) + this.#corkedBytes; }
  get writableNeedDrain(): boolean { return this.#needDrain; }
  get readableFlowing(): boolean | null { return !this.#paused; }
  get readableEnded(): boolean { return this.#readEnded; }
  get readableLength(): number { return 0; }

  /** the TLS version as OpenSSL names it (`TLSv1.3`), '' before the handshake */
  protocol(): string {
    return this.leg?.handshaken ? this.leg.protocol() : '';
  }

  on(event: TransportEvent, listener: Listener): this {
    this.ls[event].push(listener);
    return this;
  }

  once(event: TransportEvent, listener: Listener): this {
    const t = this;
    const once = function (this: unknown, ...args: unknown[]): void {
      const l = t.ls[event];
      const i = l.indexOf(once);
      if (i >= 0) l.splice(i, 1);
      listener.apply(this, args);
    };
    this.ls[event].push(once);
    return this;
  }

  removeAllListeners(event: TransportEvent): this {
    this.ls[event] = [];
    return this;
  }
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
