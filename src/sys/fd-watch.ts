/**
 * Readability of a bare fd of ours through libuv's uv_poll on Node's loop (uv.ts): what a TLS
 * leg's owner watches before the leg exists (the ClientHello peeked before SSL_new,
 * proxy/tls/server-leg.ts). One registered callback serves every watch (keyed by the handle's
 * address). libuv keeps one watcher per fd: a watch must be closed before another handle (a TLS
 * leg) watches the same fd; close() stops it at once (uv_close), its memory is freed in uv_close's
 * callback (a later turn). The fd stays the caller's.
 */
import koffi from 'koffi';
import { handleAddress, uvPoll, UV_DISCONNECT, UV_READABLE, type UvPoll } from './uv.ts';

export { UV_DISCONNECT };

const watches = new Map<number, FdWatch>();
const closing = new Map<number, unknown>();
let live = 0;
let u: UvPoll | undefined;
let onPoll: unknown;
let onClosed: unknown;

/** watches made and not yet freed */
export function liveFdWatches(): number {
  return live;
}

export class FdWatch {
  readonly fd: number;
  readonly #h: unknown;
  readonly #at: number;
  readonly #cb: (status: number, events: number) => void;
  #on = false;
  #closed = false;

  /** @internal made by watchFd */
  constructor(fd: number, h: unknown, cb: (status: number, events: number) => void) {
    this.fd = fd;
    this.#h = h;
    this.#at = handleAddress(h);
    this.#cb = cb;
    watches.set(this.#at, this);
  }

  /** @internal */
  fire(status: number, events: number): void {
    if (status < 0) this.#on = false; // libuv stopped the handle
    this.#cb(status, events);
  }

  /** (re)starts watching for readability and the peer's end (UV_DISCONNECT in `events`) */
  start(): void {
    if (this.#closed || this.#on) return;
    this.#on = true;
    u!.start(this.#h, UV_READABLE | UV_DISCONNECT, onPoll);
  }

  stop(): void {
    if (this.#closed || !this.#on) return;
    this.#on = false;
    u!.stop(this.#h);
  }

  /** stops at once; the handle is freed in a later turn; idempotent */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#on = false;
    watches.delete(this.#at);
    closing.set(this.#at, this.#h);
    u!.close(this.#h, onClosed);
  }
}

/**
 * A watch on `fd` calling `cb(status, events)` while it is readable or the peer ended its side
 * (events: UV_READABLE, UV_DISCONNECT; status < 0: the socket reported an error, and the watch is
 * stopped), started; or why none can be made (a string).
 */
export function watchFd(fd: number, cb: (status: number, events: number) => void): FdWatch | string {
  if (!u) {
    const r = uvPoll();
    if (typeof r === 'string') return r;
    u = r;
    onPoll = koffi.register((at: number, status: number, events: number) => { watches.get(at)?.fire(status, events); }, u.pollCbType);
    onClosed = koffi.register((at: number) => {
      const h = closing.get(at);
      if (h === undefined) return;
      closing.delete(at);
      koffi.free(h);
      live--;
    }, u.closeCbType);
  }
  const h = koffi.alloc('uint8_t', u.handleSize);
  if (u.init(u.loop, h, fd) !== 0) {
    koffi.free(h);
    return `uv_poll_init refused fd ${fd}`;
  }
  live++;
  const w = new FdWatch(fd, h, cb);
  w.start();
  return w;
}
