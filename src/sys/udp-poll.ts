/**
 * Readability of a Node dgram socket without Node's own read: libuv's uv_poll (the libuv inside
 * this node binary, through koffi) watches the fd and calls back; the caller reads with recvmmsg
 * (udp-batch.ts). Node's read per wake-up (a 64 KiB allocation, a Buffer and an rinfo object made
 * through the C++ API, MakeCallback, then a second recvmsg that finds nothing) is what a
 * datagram cost at one query outstanding. Measured (2026-12-07, exclusive hold, a lab of main and
 * one of this change, lat.ts alternated, 4 rounds of 6000 queries): the proxy's CPU per query
 * 88-101 → 66-86 µs, proxied p50 181-201 → 138-185 µs (direct 81-106 µs in both);
 * bench/dns/hops.ts: the proxy's JS from read to send ~13 → ~5 µs per pass.
 *
 * The socket stays Node's (bind, options, close); only its reading moves: the dgram handle's
 * recvStop() (reached like dgramFd reaches the fd, through dgram's internal state) and one
 * uv_poll handle on the fd. The watch must be stopped before the socket closes (libuv keeps one
 * watcher per fd), and nothing may be sent through Node's dgram on a watched socket (a send that
 * waits for POLLOUT would take the fd's epoll registration over): send with udp-batch.
 *
 * libuv stops a poll handle whose fd reports an error (POLLERR: an ICMP error on a connected
 * socket) and says so with a negative status: the callback reads (which takes the error) and the
 * watch starts again.
 */
import type { Socket } from 'node:dgram';
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';

/** A watch on one socket; stop() before the socket closes. */
export interface ReadableWatch {
  stop(): void;
}

const UV_POLL = 8; // uv_handle_type
const UV_READABLE = 1;

interface Uv {
  loop: unknown;
  handleSize: number;
  init: (loop: unknown, h: unknown, fd: number) => number;
  start: (h: unknown, events: number, cb: unknown) => number;
  stop: (h: unknown) => number;
  close: (h: unknown, cb: null) => void;
  cbType: ReturnType<typeof koffi.pointer>;
}
let uv: Uv | null | undefined;
/** libuv's poll functions of this process (undefined before the first use; null: not exported here). */
function libuv(): Uv | null {
  if (uv !== undefined) return uv;
  try {
    const self = koffi.load(null as unknown as string);
    const cbType = koffi.pointer(koffi.proto('void mb_uv_poll_cb(void *handle, int status, int events)'));
    uv = {
      loop: self.func('void *uv_default_loop()')(),
      handleSize: Number(self.func('size_t uv_handle_size(int type)')(UV_POLL)),
      init: self.func('int uv_poll_init(void *loop, void *handle, int fd)'),
      start: self.func('int uv_poll_start(void *handle, int events, mb_uv_poll_cb *cb)'),
      stop: self.func('int uv_poll_stop(void *handle)'),
      close: self.func('void uv_close(void *handle, void *cb)'),
      cbType,
    };
  } catch {
    uv = null;
  }
  return uv;
}

/** dgram's handle of `s` (its internal state, as dgramFd reads it) */
function dgramHandle(s: Socket): { recvStop?(): number; recvStart?(): number } | undefined {
  for (const sym of Object.getOwnPropertySymbols(s)) {
    if (sym.description !== 'state symbol') continue;
    return (s as unknown as Record<symbol, { handle?: { recvStop?(): number; recvStart?(): number } }>)[sym]?.handle;
  }
  return undefined;
}

/** handles stopped and closed, kept until libuv's close has run (a later turn) */
const closing = new Set<unknown>();

/**
 * Stops Node's reads of `s` (bound, fd `fd`) and calls `onReadable` whenever the fd is readable,
 * on the main thread from the event loop (microtasks run after it, as after any callback). null:
 * not possible here (no libuv symbols, no dgram handle, uv_poll refused the fd): Node's reads are
 * untouched and its 'message' event stays the way in.
 */
export function watchReadable(s: Socket, fd: number, onReadable: () => void): ReadableWatch | null {
  const u = libuv();
  const handle = dgramHandle(s);
  // uv_default_loop() is the main thread's loop: a worker's sockets keep Node's reads
  if (!isMainThread || !u || fd < 0 || typeof handle?.recvStop !== 'function' || typeof handle.recvStart !== 'function') return null;
  // Node's watcher leaves the fd first: libuv keeps one watcher per fd
  if (handle.recvStop() !== 0) return null;
  const h = koffi.alloc('uint8_t', u.handleSize);
  let active = false;
  const cb = koffi.register((_h: unknown, status: number) => {
    try { onReadable(); } catch { /* the reader counts its own failures */ }
    // POLLERR stopped the handle; the read above took the socket's error
    if (status < 0 && active) u.start(h, UV_READABLE, cb);
  }, u.cbType);
  if (u.init(u.loop, h, fd) !== 0) {
    koffi.unregister(cb);
    handle.recvStart();
    return null;
  }
  if (u.start(h, UV_READABLE, cb) !== 0) {
    u.close(h, null);
    closing.add(h);
    setTimeout(() => { closing.delete(h); koffi.unregister(cb); }, 100).unref();
    handle.recvStart();
    return null;
  }
  active = true;
  return {
    stop() {
      if (!active) return;
      active = false;
      u.stop(h);
      u.close(h, null);
      // the handle's memory and the callback live until libuv's close ran (its closing phase)
      closing.add(h);
      setTimeout(() => { closing.delete(h); koffi.unregister(cb); }, 100).unref();
    },
  };
}
