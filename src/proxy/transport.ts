/**
 * The byte stream a proxy connection reads and writes on one side: the part of net.Socket the
 * HTTP proxy uses (ProxyConnection for its client, UpstreamLink for an upstream), which a
 * net.Socket has as it is (structurally: no adapter) and a TLS leg of our own has through
 * tls/leg-transport.ts (OpenSSL on the fd, issue 18: no TLSSocket, no Node stream between).
 *
 * Reads: a transport either emits `data` (a Buffer of its own per read: Node's sockets) or,
 * given a ReadSink (readWith), reads into the buffers the sink hands out and tells it how much
 * was read; the sink decides when a buffer may be read into again (ReadBuffer's done(n, b, kept))
 * and so may keep pointers into what it read (a head cut across reads, a write the kernel did not
 * take at once). A net.Socket gets the same through Node's `onread`, fixed when it is made.
 *
 * Events (on): `data` (without a ReadSink), `end` (the peer sends no more; writing may go on),
 * `drain` (write returned false and all is taken now), `error` (then `close`), `close` (last).
 */

/**
 * On a transport that can close as soon as its last bytes are written (false until asked): set
 * when the client asked to close and nothing of it is expected; end() then closes right after them
 * (a TLS transport: its close_notify) instead of waiting for the client's own close.
 */
export const kCloseOnFinal = Symbol('closeOnFinal');

/** Where a transport reads into, and who learns what was read (Node's `onread` as an interface). */
export interface ReadSink {
  /** the buffer the next read goes into (asked right before each read) */
  readBuffer(): Buffer;
  /** `n` bytes were read into `b` (the buffer readBuffer gave): b[0..n) */
  onRead(n: number, b: Buffer): void;
}

/** The events a transport emits; listeners are called with the transport as `this`. */
export type TransportEvent = 'data' | 'end' | 'drain' | 'error' | 'close';

export interface Transport {
  /** true: taken (the caller may reuse `b` only if the transport copies: a net.Socket does not until drained); false: held, `drain` follows */
  write(b: Uint8Array | string): boolean;
  /** our side ends after what was written (lingering: the peer's end is read, then `close`), or at once with kCloseOnFinal */
  end(): unknown;
  /** closed at once, nothing more sent; `close` follows */
  destroy(): unknown;
  /** closed with a TCP reset */
  resetAndDestroy(): unknown;
  /** stops reading (the peer's sending stalls on TCP's window) */
  pause(): unknown;
  resume(): unknown;
  /** writes until uncork() leave together */
  cork(): void;
  uncork(): void;
  readonly destroyed: boolean;
  /** bytes written and not yet taken by the kernel */
  readonly writableLength: number;
  /** a write returned false and `drain` has not come yet */
  readonly writableNeedDrain: boolean;
  /** false once paused, true when reading (null: not yet) */
  readonly readableFlowing: boolean | null;
  /** the peer's end was read */
  readonly readableEnded: boolean;
  /** bytes read and not yet handed on (0 for a transport reading into a ReadSink) */
  readonly readableLength: number;
  isPaused(): boolean;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Node's own listener type (a TLSSocket's overloads accept nothing narrower)
  on(event: TransportEvent, listener: (...args: any[]) => void): unknown;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as on()
  once(event: TransportEvent, listener: (...args: any[]) => void): unknown;
  removeAllListeners(event: TransportEvent): unknown;
  /** reads go into `sink`'s buffers from now on, with no `data` event (absent: `data` events, or Node's onread given at creation) */
  readWith?(sink: ReadSink): void;
  [kCloseOnFinal]?: boolean;
}
