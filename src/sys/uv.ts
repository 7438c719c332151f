/**
 * libuv's poll handles of this node binary (the libuv Node's own loop runs on), through koffi: the
 * one home of the bindings that udp-poll.ts (the DNS proxy's reads) and tls-leg.ts (TLS legs on
 * fds of our own) drive. Both callbacks get the uv_poll_t's address as an integer: the callers
 * key their handles by it (handleAddress), so one registered callback can serve every handle.
 *
 * A uv_poll_t is koffi.alloc'd by its owner (calloc: never collected by V8) and freed only in
 * uv_close's callback, once libuv is done with it.
 */
import koffi from 'koffi';

export const UV_READABLE = 1;
export const UV_WRITABLE = 2;
/** the peer closed its side (EPOLLRDHUP): told apart from readability */
export const UV_DISCONNECT = 4;
const UV_POLL = 8; // uv_handle_type

export interface UvPoll {
  /** uv_default_loop(): the main thread's loop */
  loop: unknown;
  /** bytes of a uv_poll_t */
  handleSize: number;
  init(loop: unknown, h: unknown, fd: number): number;
  /** `cb` registered with pollCbType: (handle address, status, events) */
  start(h: unknown, events: number, cb: unknown): number;
  stop(h: unknown): number;
  /** `cb` registered with closeCbType: (handle address) */
  close(h: unknown, cb: unknown): void;
  pollCbType: ReturnType<typeof koffi.pointer>;
  closeCbType: ReturnType<typeof koffi.pointer>;
}

let uv: UvPoll | undefined;
/** why libuv's functions could not be reached (set when uv stays undefined after a try) */
let uvError = '';

/** libuv's poll functions of this process, or why they are not reachable here (a string). */
export function uvPoll(): UvPoll | string {
  if (uv) return uv;
  if (uvError) return uvError;
  try {
    const self = koffi.load(null as unknown as string);
    const pollCbType = koffi.pointer(koffi.proto('void mb_uv_poll_cb(intptr_t handle, int status, int events)'));
    const closeCbType = koffi.pointer(koffi.proto('void mb_uv_close_cb(intptr_t handle)'));
    uv = {
      loop: self.func('void *uv_default_loop()')(),
      handleSize: Number(self.func('size_t uv_handle_size(int type)')(UV_POLL)),
      init: self.func('int uv_poll_init(void *loop, void *handle, int fd)'),
      start: self.func('int uv_poll_start(void *handle, int events, mb_uv_poll_cb *cb)'),
      stop: self.func('int uv_poll_stop(void *handle)'),
      close: self.func('void uv_close(void *handle, mb_uv_close_cb *cb)'),
      pollCbType,
      closeCbType,
    };
    return uv;
  } catch (e) {
    uvError = `libuv's uv_poll functions are not reachable in this node binary: ${String((e as Error)?.message ?? e)}`;
    return uvError;
  }
}

/** A handle's address as the callbacks give it (an integer: user-space addresses fit a double exactly). */
export function handleAddress(h: unknown): number {
  const a = koffi.address(h);
  return typeof a === 'bigint' ? Number(a) : (a as number);
}
