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
 * Each watch's uv_poll_t is koffi.alloc'd (calloc: never collected by V8) and freed in uv_close's
 * callback, once libuv is done with it (liveWatches() counts them); a socket that cannot be watched
 * gets the reason back (WatchResult), for the caller to make the slower path visible.
 *
 * libuv stops a poll handle whose fd reports an error (POLLERR: an ICMP error on a connected
 * socket) and says so with a negative status: the callback reads (which takes the error) and the
 * watch starts again.
 */
import type { Socket } from 'node:dgram';
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';
import { handleAddress, uvPoll, UV_READABLE, type UvPoll } from './uv.ts';

/** A watch on one socket; stop() before the socket closes. */
export interface ReadableWatch {
  stop(): void;
  /**
   * No callbacks until resume() (uv_poll_stop: the fd leaves the loop's epoll set; datagrams
   * queue in the socket meanwhile): for a reader that reads on a timer of its own for a while.
   */
  pause(): void;
  resume(): void;
}

/**
 * watchReadable's answer: the watch, or why there is none (the socket keeps Node's reads: the
 * slower path, which the caller makes visible: a stat, a log line).
 */
export type WatchResult = { watch: ReadableWatch; reason?: undefined } | { watch: null; reason: string };

/** dgram's handle of `s` (its internal state, as dgramFd reads it) */
function dgramHandle(s: Socket): { recvStop?(): number; recvStart?(): number } | undefined {
  for (const sym of Object.getOwnPropertySymbols(s)) {
    if (sym.description !== 'state symbol') continue;
    return (s as unknown as Record<symbol, { handle?: { recvStop?(): number; recvStart?(): number } }>)[sym]?.handle;
  }
  return undefined;
}

/** handles being closed by their address: the memory to free and the poll callback to give back once libuv's close ran */
const closing = new Map<number, { h: unknown; cb: bigint }>();
/** uv_close's callback, one for the process */
let onClosed: bigint | undefined;
/** uv_poll_t handles allocated and not yet freed */
let live = 0;
/** uv_poll_t handles this process holds now: each watch's until libuv's close of it has run (a later turn). */
export function liveWatches(): number {
  return live;
}

/**
 * Closes the poll handle `h` (stopped or never started): libuv calls back once the loop is done
 * with it (its closing phase, a later turn), and only then is its memory freed and its poll
 * callback given back.
 */
function closeHandle(u: UvPoll, h: unknown, cb: bigint): void {
  onClosed ??= koffi.register((at: number) => {
    const c = closing.get(at);
    if (!c) return;
    closing.delete(at);
    koffi.free(c.h);
    live--;
    koffi.unregister(c.cb);
  }, u.closeCbType);
  closing.set(handleAddress(h), { h, cb });
  u.close(h, onClosed);
}

/**
 * Stops Node's reads of `s` (bound, fd `fd`) and calls `onReadable` whenever the fd is readable,
 * on the main thread from the event loop (microtasks run after it, as after any callback). No
 * watch (and the reason) when not possible here (a worker thread, no libuv symbols, no dgram
 * handle, uv_poll refused the fd): Node's reads are untouched and its 'message' event stays the
 * way in.
 */
export function watchReadable(s: Socket, fd: number, onReadable: () => void): WatchResult {
  // uv_default_loop() is the main thread's loop: a worker's sockets keep Node's reads
  if (!isMainThread) return { watch: null, reason: 'not the main thread (uv_default_loop is its loop)' };
  if (fd < 0) return { watch: null, reason: 'the socket has no fd' };
  const u = uvPoll();
  if (typeof u === 'string') return { watch: null, reason: u };
  const handle = dgramHandle(s);
  if (typeof handle?.recvStop !== 'function' || typeof handle.recvStart !== 'function') return { watch: null, reason: "dgram's internal handle has no recvStop/recvStart (Node's internals changed)" };
  // Node's watcher leaves the fd first: libuv keeps one watcher per fd
  const rc = handle.recvStop();
  if (rc !== 0) return { watch: null, reason: `the dgram handle's recvStop() returned ${rc}` };
  const h = koffi.alloc('uint8_t', u.handleSize);
  live++;
  let active = false;
  let paused = false;
  const cb = koffi.register((_at: number, status: number) => {
    try { onReadable(); } catch { /* the reader counts its own failures */ }
    // POLLERR stopped the handle; the read above took the socket's error (a pause keeps it stopped)
    if (status < 0 && active && !paused) u.start(h, UV_READABLE, cb);
  }, u.pollCbType);
  const init = u.init(u.loop, h, fd);
  if (init !== 0) {
    // never a handle of the loop: nothing to close
    koffi.free(h);
    live--;
    koffi.unregister(cb);
    handle.recvStart();
    return { watch: null, reason: `uv_poll_init refused fd ${fd}: ${init}` };
  }
  const start = u.start(h, UV_READABLE, cb);
  if (start !== 0) {
    closeHandle(u, h, cb);
    handle.recvStart();
    return { watch: null, reason: `uv_poll_start refused fd ${fd}: ${start}` };
  }
  active = true;
  return {
    watch: {
      stop() {
        if (!active) return;
        active = false;
        u.stop(h);
        closeHandle(u, h, cb);
      },
      pause() {
        if (!active || paused) return;
        paused = true;
        u.stop(h);
      },
      resume() {
        if (!active || !paused) return;
        paused = false;
        u.start(h, UV_READABLE, cb);
      },
    },
  };
}
