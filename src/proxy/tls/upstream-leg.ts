/**
 * A client TLS leg (src/sys/tls-leg.ts) as the HTTP proxy's upstream Transport (../transport.ts):
 * what UpstreamLink and ProxyConnection read and write for an originated connection, with no
 * Node stream between them and OpenSSL.
 *
 * - Reads: with a ReadSink (readWith: the UpstreamLink), OpenSSL decrypts straight into the
 *   sink's buffers (the leg's readBuffer provider); without one, a `data` event with a copy.
 *   (While the client side was a TLSSocket, which holds what it was written until its write
 *   completes, each read took a new 16 KiB buffer and copies measured better; with the client a
 *   leg too, nothing holds a read past its write.)
 * - Writes: taken by OpenSSL at once or held by the leg (a copy); `drain` when the held ones are
 *   taken. cork()/uncork(): the writes in between leave as one (one TLS record, one syscall).
 * - end(): the held writes and a close_notify, then reads on to the peer's end (a half-close).
 * - Failures: `error` with the origination's classified Error (its 502 reason); `close` once the
 *   leg is gone, on a later turn, once.
 */
import type { TlsLeg, TlsLegError, TlsLegHandlers } from '../../sys/tls-leg.ts';
import type { TlsSession } from '../../sys/openssl.ts';
import type { ReadSink, Transport, TransportEvent } from '../transport.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a Transport's listener type
type Listener = (...args: any[]) => void;
type Listeners = Record<TransportEvent, Listener[]>;

function emit(t: UpstreamLegTransport | FailedTransport, ls: Listener[], arg?: unknown): void {
  if (ls.length === 0) return;
  if (ls.length === 1) { ls[0]!.call(t, arg); return; }
  for (const l of ls.slice()) l.call(t, arg);
}

function emitClose(this: UpstreamLegTransport | FailedTransport): void {
  emit(this, this.ls.close);
}

function listeners(): Listeners {
  return { data: [], end: [], drain: [], error: [], close: [] };
}

export class UpstreamLegTransport implements Transport {
  /** @internal */
  readonly ls = listeners();
  #leg: TlsLeg | null = null;
  #handlers: TlsLegHandlers | null = null;
  #sink: ReadSink | null = null;
  /** the sink's buffer the current read went into */
  #buf: Buffer | null = null;
  #paused = false;
  #ended = false;
  #closeSent = false;
  #endCalled = false;
  #needDrain = false;
  /** writes between cork() and uncork() */
  #corked: Buffer[] | null = null;
  #corkedBytes = 0;
  readonly #classify: (e: TlsLegError) => Error;

  constructor(classify: (e: TlsLegError) => Error) {
    this.#classify = classify;
  }

  /** the leg's handlers, bound to this transport (`onSession`: where its sessions go) */
  handlers(onSession: (s: TlsSession) => void): TlsLegHandlers {
    return this.#handlers = {
      onData: (v) => this.#onData(v),
      onDrain: () => { this.#needDrain = false; emit(this, this.ls.drain); },
      onEnd: () => {
        this.#ended = true;
        emit(this, this.ls.end);
        // our side ended already (a lingering close): both are done
        if (this.#endCalled) this.#leg?.close();
      },
      onError: (e) => this.#onError(e),
      onClose: () => this.#closed(),
      // an end() asked before the handshake: now, after the held writes
      onHandshake: () => { if (this.#endCalled) this.#leg!.end(); },
      onSession,
    };
  }

  /** @internal the leg opened with handlers() */
  attach(leg: TlsLeg): void {
    this.#leg = leg;
  }

  #onData(v: Buffer): void {
    const sink = this.#sink;
    if (sink) sink.onRead(v.length, this.#buf!);
    else emit(this, this.ls.data, Buffer.from(v));
  }

  /**
   * Reads go into `sink`'s buffers from now on (the leg's readBuffer provider: OpenSSL decrypts
   * straight into them, no copy); the sink decides when a buffer is read into again.
   */
  readWith(sink: ReadSink): void {
    this.#sink = sink;
    this.#handlers!.readBuffer = () => (this.#buf = sink.readBuffer());
  }

  #onError(e: TlsLegError): void {
    emit(this, this.ls.error, this.#classify(e));
  }

  #closed(): void {
    if (this.#closeSent) return;
    this.#closeSent = true;
    process.nextTick(emitClose.bind(this));
  }

  /** a client leg whose connect has not completed */
  get connecting(): boolean { return this.#leg !== null && this.#leg.connecting && !this.#leg.destroyed; }
  get destroyed(): boolean { return this.#leg === null || this.#leg.destroyed; }
  get writableLength(): number { return (this.#leg?.heldBytes ?? 0) + this.#corkedBytes; }
  get writableNeedDrain(): boolean { return this.#needDrain; }
  get readableFlowing(): boolean { return !this.#paused; }
  get readableEnded(): boolean { return this.#ended; }
  get readableLength(): number { return 0; }
  isPaused(): boolean { return this.#paused; }

  write(b: Uint8Array | string): boolean {
    const leg = this.#leg;
    if (!leg || leg.destroyed) return false;
    const bytes = typeof b === 'string' ? Buffer.from(b, 'latin1') : b;
    if (this.#corked) {
      this.#corked.push(bytes as Buffer);
      this.#corkedBytes += bytes.length;
      return true;
    }
    const ok = leg.write(bytes);
    if (!ok && !leg.destroyed) this.#needDrain = true;
    return ok;
  }

  cork(): void {
    this.#corked ??= [];
  }

  uncork(): void {
    const c = this.#corked;
    if (!c) return;
    this.#corked = null;
    const n = this.#corkedBytes;
    this.#corkedBytes = 0;
    if (c.length === 0) return;
    const all = c.length === 1 ? c[0]! : Buffer.concat(c, n);
    this.write(all);
  }

  /**
   * Our side ends after what was written: the held writes, then a close_notify, reading on until
   * the peer's close_notify (then closed) or FIN (a TLS_PEER_EOF error, closed), as a socket's
   * half-close: a tunnel's server may still answer. Before the handshake: once it completes.
   */
  end(): this {
    this.uncork();
    const leg = this.#leg;
    if (!leg || leg.destroyed || this.#endCalled) return this;
    this.#endCalled = true;
    this.resume();
    if (this.#ended) leg.close();
    // before the handshake: the handshake's handler ends it, after the writes held for it
    else if (leg.handshaken) leg.end();
    return this;
  }

  /** closed at once, nothing more sent; `close` follows (the leg's onClose) */
  destroy(): this {
    this.#corked = null;
    this.#corkedBytes = 0;
    if (this.#leg && !this.#leg.destroyed) this.#leg.destroy();
    else this.#closed();
    return this;
  }

  resetAndDestroy(): this {
    return this.destroy();
  }

  pause(): this {
    this.#paused = true;
    this.#leg?.pause();
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#leg?.resume();
    return this;
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

/**
 * An upstream that failed before a leg could be made (connect(2) refused at once, the leg's
 * setup): `error` with why, then `close`, on a later turn (as a socket's failed connect).
 */
export class FailedTransport implements Transport {
  /** @internal */
  readonly ls = listeners();
  readonly destroyed = true;
  readonly connecting = false;
  readonly writableLength = 0;
  readonly writableNeedDrain = false;
  readonly readableFlowing = false;
  readonly readableEnded = false;
  readonly readableLength = 0;
  constructor(err: Error) {
    process.nextTick(() => {
      emit(this, this.ls.error, err);
      emit(this, this.ls.close);
    });
  }
  write(): boolean { return false; }
  end(): this { return this; }
  destroy(): this { return this; }
  resetAndDestroy(): this { return this; }
  pause(): this { return this; }
  resume(): this { return this; }
  cork(): void {}
  uncork(): void {}
  isPaused(): boolean { return true; }
  on(event: TransportEvent, listener: Listener): this { this.ls[event].push(listener); return this; }
  once(event: TransportEvent, listener: Listener): this { return this.on(event, listener); }
  removeAllListeners(event: TransportEvent): this { this.ls[event] = []; return this; }
}
