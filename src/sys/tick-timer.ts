/**
 * A one-shot timer finer than Node's (libuv's timers count whole milliseconds): a timerfd
 * (CLOCK_MONOTONIC, non-blocking) watched by a libuv poll handle of the main loop (uv.ts), its
 * callback run on the main thread from the event loop like any I/O callback. The DNS proxy reads
 * a socket with a backlog on such a timer (src/proxy/dns/proxy.ts, coalesce): a millisecond
 * there was more than the round trip of a loaded lookup (bench/dns/run.ts: 37k → 22k q/s with
 * dnsperf's 64 queries outstanding), a quarter of one is not.
 *
 * Layout (x86-64 and arm64, LP64): struct itimerspec { timespec it_interval; timespec it_value },
 * timespec { long tv_sec; long tv_nsec }: 32 bytes, it_value's tv_nsec at 24.
 */
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';
import { handleAddress, uvPoll, UV_READABLE } from './uv.ts';

const libc = koffi.load('libc.so.6');
const timerfdCreate = libc.func('int timerfd_create(int clockid, int flags)');
const timerfdSettime = libc.func('int timerfd_settime(int fd, int flags, void *new_value, void *old_value)');
const readFd = libc.func('long read(int fd, void *buf, size_t count)');
const closeFd = libc.func('int close(int fd)');
const CLOCK_MONOTONIC = 1, TFD_NONBLOCK = 0o4000, TFD_CLOEXEC = 0o2000000;

export interface TickTimer {
  /** (Re)arms the timer: onTick runs once, `us` microseconds from now (1..999999). */
  arm(us: number): void;
  /** Disarms and closes it (the fd and the poll handle, once libuv is done with it). */
  close(): void;
}

/** timers being closed, by their poll handle's address: what to free once libuv's close ran */
const closing = new Map<number, { h: unknown; cb: unknown; fd: number }>();
let onClosed: unknown;
/** tick timers open now (tests: none left behind) */
let live = 0;
export function liveTickTimers(): number {
  return live;
}

/** A tick timer calling `onTick`, or why there can be none here (a string: the caller does without). */
export function tickTimer(onTick: () => void): TickTimer | string {
  if (!isMainThread) return 'not the main thread (uv_default_loop is its loop)';
  const u = uvPoll();
  if (typeof u === 'string') return u;
  const fd = timerfdCreate(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC) as number;
  if (fd < 0) return `timerfd_create failed: errno ${koffi.errno()}`;
  const spec = Buffer.alloc(32);
  const words = new Int32Array(spec.buffer, spec.byteOffset, 8);
  const expirations = Buffer.alloc(8);
  const h = koffi.alloc('uint8_t', u.handleSize);
  let open = true;
  const cb = koffi.register((_at: number, _status: number) => {
    // the expiration count: read, or the fd stays readable
    readFd(fd, expirations, 8);
    if (!open) return;
    try { onTick(); } catch { /* the caller counts its own failures */ }
  }, u.pollCbType);
  const init = u.init(u.loop, h, fd);
  if (init !== 0 || u.start(h, UV_READABLE, cb) !== 0) {
    if (init === 0) { u.stop(h); closing.set(handleAddress(h), { h, cb, fd }); u.close(h, closedCb(u)); }
    else { koffi.free(h); koffi.unregister(cb as never); closeFd(fd); }
    return `uv_poll on the timerfd refused: ${init}`;
  }
  live++;
  return {
    arm(us) {
      if (!open) return;
      // it_value only (it_interval zero: one shot); tv_sec 0, tv_nsec < 2^31 in its low word
      words[4] = 0; words[5] = 0;
      words[6] = Math.min(999_999, Math.max(1, us | 0)) * 1000; words[7] = 0;
      timerfdSettime(fd, 0, spec, null);
    },
    close() {
      if (!open) return;
      open = false;
      live--;
      u.stop(h);
      closing.set(handleAddress(h), { h, cb, fd });
      u.close(h, closedCb(u));
    },
  };
}

/** uv_close's callback, one for the process: frees the handle, gives back its callback, closes the fd. */
function closedCb(u: Exclude<ReturnType<typeof uvPoll>, string>): unknown {
  onClosed ??= koffi.register((at: number) => {
    const c = closing.get(at);
    if (!c) return;
    closing.delete(at);
    koffi.free(c.h);
    koffi.unregister(c.cb as never);
    closeFd(c.fd);
  }, u.closeCbType);
  return onClosed;
}
