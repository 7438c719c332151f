/**
 * Batched UDP I/O (koffi → libc recvmmsg/sendmmsg) for the proxies' datagram paths: one syscall
 * moves up to `capacity` datagrams, and every byte lives in one native arena allocated once
 * (mmsghdr[] + iovec[] + sockaddr slots + data), seen from JS through a Buffer over the same
 * memory, so the steady path allocates nothing per datagram. Both families: every name slot has
 * the size of a sockaddr_in6, a datagram's peer is an interned SockAddr (sock-addr.ts).
 *
 * The sockets stay Node's (dgram): libuv tells us when one is readable (udp-poll.ts, Node reading
 * nothing; or its 'message' event delivering the first datagram), and recvmmsg reads what is
 * queued. Calls never block (MSG_DONTWAIT): an empty queue reads as 0 datagrams.
 *
 * Layout (x86-64 and arm64, LP64): struct msghdr 56 bytes (name @0, namelen @8, iov @16,
 * iovlen @24, control @32, controllen @40, flags @48), struct mmsghdr 64 (msg_len @56),
 * struct iovec 16, struct sockaddr_in 16 (family @0, port @2, addr @4), struct sockaddr_in6 28
 * (family @0, port @2, flowinfo @4, addr @8, scope_id @24). Checked against koffi's own layout at load.
 */
import type { Socket } from 'node:dgram';
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';
import { u16be, u16le } from '../common/bytes.ts';
import { AF_INET, AF_INET6, sockAddrAt, type SockAddr } from './sock-addr.ts';

const libc = koffi.load('libc.so.6');
const recvmmsgFn = libc.func('int recvmmsg(int fd, void *msgvec, unsigned int vlen, int flags, void *timeout)');
const sendmmsgFn = libc.func('int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)');

const MSGHDR = koffi.struct('mb_msghdr', {
  name: 'void *', namelen: 'uint32_t', iov: 'void *', iovlen: 'size_t', control: 'void *', controllen: 'size_t', flags: 'int',
});
const MMSGHDR = koffi.struct('mb_mmsghdr', { hdr: 'mb_msghdr', len: 'uint32_t' });
const IOVEC = koffi.struct('mb_iovec', { base: 'void *', len: 'size_t' });
const M = 64, IOV = 16, SA = 28, SA4 = 16;
const O_NAME = 0, O_NAMELEN = 8, O_IOV = 16, O_IOVLEN = 24, O_FLAGS = 48, O_LEN = 56;
if (koffi.sizeof(MMSGHDR) !== M || koffi.sizeof(MSGHDR) !== 56 || koffi.sizeof(IOVEC) !== IOV || koffi.offsetof(MSGHDR, 'flags') !== O_FLAGS || koffi.offsetof(MMSGHDR, 'len') !== O_LEN) {
  throw new MembraneError('SOCK_BATCH', `struct mmsghdr layout is not LP64 on ${process.arch}`, { hint: 'batched UDP I/O supports x86-64 and arm64' });
}

const MSG_DONTWAIT = 0x40;
const MSG_TRUNC = 0x20;
const EAGAIN = 11, EINTR = 4;

/**
 * One native arena: its address (for the kernel), a Buffer over it (for JS) and 32-bit words over
 * it (the header fields: every one of them 4-byte aligned). A word store is what the per-datagram
 * fields take: Buffer's checked writers and a 64-bit split of a pointer held in a double cost
 * ~0.4 µs per datagram between them.
 */
function arena(bytes: number): { ptr: bigint; buf: Buffer; u32: Uint32Array; u16: Uint16Array } {
  const p = koffi.alloc('uint8_t', bytes) as unknown;
  const ptr = koffi.address(p);
  const buf = Buffer.from(koffi.view(p, bytes));
  buf.fill(0);
  return { ptr, buf, u32: new Uint32Array(buf.buffer, buf.byteOffset, bytes >>> 2), u16: new Uint16Array(buf.buffer, buf.byteOffset, bytes >>> 1) };
}

/**
 * Words `w` and `w + 1` (little-endian, as on x86-64 and arm64) := the arena's address + `off`
 * (the address as `hi` and its low word's two 16-bit halves `lo16`, `hi16`; off < 2^31). Every
 * intermediate stays a small integer: a sum over the whole low word (≥ 2^31 for half the arenas
 * mmap places) is a heap number per call wherever this runs below the optimizing tier (measured:
 * 32 B per datagram, bench/dns/loopback.ts --alloc put ~60 B per query at sendToClient/onQuery in
 * some runs and not others).
 */
export function put64(u16: Uint16Array, u32: Uint32Array, w: number, hi: number, lo16: number, hi16: number, off: number): void {
  const t = lo16 + (off & 0xffff);
  const u = hi16 + (off >>> 16) + (t >>> 16);
  u16[w << 1] = t & 0xffff;
  u16[(w << 1) + 1] = u & 0xffff;
  u32[w + 1] = hi + (u >>> 16);
}

/** Writes a 64-bit address or size held in a Number (user-space addresses are < 2^53): no BigInt per call. */
function write64(b: Buffer, off: number, v: number): void {
  b.writeUInt32LE(v % 0x100000000, off);
  b.writeUInt32LE(Math.floor(v / 0x100000000), off + 4);
}

/**
 * The fd of a dgram socket. Node has no public accessor; `_handle` works but warns (DEP0112), so
 * the handle is read from dgram's internal state symbol first. -1: none (the socket is not bound yet,
 * or closed).
 */
export function dgramFd(s: Socket): number {
  for (const sym of Object.getOwnPropertySymbols(s)) {
    if (sym.description !== 'state symbol') continue;
    const fd = (s as unknown as Record<symbol, { handle?: { fd?: number } }>)[sym]?.handle?.fd;
    if (typeof fd === 'number' && fd >= 0) return fd;
  }
  return (s as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
}

/**
 * Receives up to `capacity` datagrams per call into fixed slots of `slotBytes`. A datagram larger
 * than its slot is cut by the kernel and flagged `truncated(i)` (its header is intact): the
 * caller decides (the DNS proxy answers FORMERR, as for any oversized query). One bad datagram
 * never affects its neighbours: each has its own slot, length, flags and source.
 */
export class RecvBatch {
  readonly capacity: number;
  readonly slotBytes: number;
  /** datagram i is `data[offset(i) .. offset(i) + length(i))`, valid until the next recv */
  readonly data: Buffer;
  private readonly ptr: bigint;
  private readonly hdr: Buffer;
  private readonly u32: Uint32Array;
  private readonly names: number;
  private readonly dataOff: number;
  /** slots the last recv filled */
  private filled = 0;

  constructor(capacity = 64, slotBytes = 4096) {
    if (!(capacity >= 1 && capacity <= 1024) || !(slotBytes >= 12 && slotBytes <= 65536)) {
      throw new MembraneError('SOCK_BATCH', `RecvBatch(${capacity}, ${slotBytes}): capacity 1..1024, slot 12..65536 bytes`);
    }
    this.capacity = capacity;
    this.slotBytes = slotBytes;
    const iovs = capacity * M;
    this.names = iovs + capacity * IOV;
    this.dataOff = this.names + capacity * SA;
    const a = arena(this.dataOff + capacity * slotBytes);
    this.ptr = a.ptr;
    const base = Number(a.ptr);
    this.hdr = a.buf;
    this.data = a.buf;
    this.u32 = a.u32;
    for (let i = 0; i < capacity; i++) {
      const h = i * M;
      write64(a.buf, h + O_NAME, base + this.names + i * SA);
      a.buf.writeUInt32LE(SA, h + O_NAMELEN);
      write64(a.buf, h + O_IOV, base + iovs + i * IOV);
      a.buf.writeBigUInt64LE(1n, h + O_IOVLEN);
      write64(a.buf, iovs + i * IOV, base + this.dataOff + i * slotBytes);
      a.buf.writeBigUInt64LE(BigInt(slotBytes), iovs + i * IOV + 8);
    }
  }

  /**
   * Reads what is queued on `fd` (never blocks). Returns the count (0: nothing queued); a socket
   * error (e.g. ECONNREFUSED on a connected socket) reads as -errno.
   */
  recv(fd: number): number {
    const w = this.u32;
    // only the slots the last call filled were changed by the kernel (namelen, flags)
    for (let i = 0; i < this.filled; i++) {
      w[(i * M + O_NAMELEN) >>> 2] = SA;
      w[(i * M + O_FLAGS) >>> 2] = 0;
    }
    this.filled = 0;
    for (;;) {
      const n = recvmmsgFn(fd, this.ptr, this.capacity, MSG_DONTWAIT, null) as number;
      if (n >= 0) { this.filled = n; return n; }
      this.filled = this.capacity; // a failed call may have touched a slot: reset all next time
      const e = koffi.errno();
      if (e === EINTR) continue;
      return e === EAGAIN ? 0 : -e;
    }
  }

  offset(i: number): number { return this.dataOff + i * this.slotBytes; }
  /** bytes of datagram i held in its slot (≤ slotBytes) */
  length(i: number): number { return this.u32[(i * M + O_LEN) >>> 2]!; }
  truncated(i: number): boolean { return (this.u32[(i * M + O_FLAGS) >>> 2]! & MSG_TRUNC) !== 0; }
  /** source address of datagram i (undefined when neither AF_INET nor AF_INET6) */
  source(i: number): SockAddr | undefined {
    const o = this.names + i * SA;
    const af = u16le(this.hdr, o);
    return af === AF_INET ? sockAddrAt(this.hdr, o + 4, 4) : af === AF_INET6 ? sockAddrAt(this.hdr, o + 8, 6) : undefined;
  }
  sourcePort(i: number): number { return u16be(this.hdr, this.names + i * SA + 2); }
}

/**
 * Queues datagrams for one socket and sends them with one sendmmsg. Bytes are packed into a
 * data area of `bytes`; a push that does not fit (count or bytes) flushes first. `to` null sends
 * to the socket's connected peer; otherwise its family is the socket's.
 */
export class SendBatch {
  readonly fd: number;
  readonly capacity: number;
  /** the bytes of a pushed datagram go to `data[off .. off + len)` (off returned by push) */
  readonly data: Buffer;
  private readonly ptr: bigint;
  private readonly u32: Uint32Array;
  private readonly u16: Uint16Array;
  /** the arena's address: its high word, and its low word's 16-bit halves (put64) */
  private readonly baseHi: number;
  private readonly baseLo16: number;
  private readonly baseHi16: number;
  private readonly iovs: number;
  private readonly names: number;
  private readonly dataOff: number;
  private readonly dataEnd: number;
  private n = 0;
  private used = 0;
  /** datagrams the kernel refused (counted, then dropped: UDP's own loss semantics) */
  dropped = 0;
  sent = 0;
  calls = 0;

  constructor(fd: number, capacity = 64, bytes = 256 * 1024) {
    if (!(capacity >= 1 && capacity <= 1024) || !(bytes >= 65536)) {
      throw new MembraneError('SOCK_BATCH', `SendBatch(${capacity}, ${bytes}): capacity 1..1024, ≥ 64 KiB of data`);
    }
    this.fd = fd;
    this.capacity = capacity;
    this.iovs = capacity * M;
    this.names = this.iovs + capacity * IOV;
    this.dataOff = this.names + capacity * SA;
    this.dataEnd = this.dataOff + bytes;
    const a = arena(this.dataEnd);
    this.ptr = a.ptr;
    const base = Number(a.ptr);
    this.baseHi = Math.floor(base / 0x100000000);
    this.baseLo16 = base % 0x10000;
    this.baseHi16 = Math.floor(base / 0x10000) % 0x10000;
    this.u32 = a.u32;
    this.u16 = a.u16;
    this.data = a.buf;
    for (let i = 0; i < capacity; i++) {
      const h = i * M;
      write64(a.buf, h + O_IOV, base + this.iovs + i * IOV);
      a.buf.writeBigUInt64LE(1n, h + O_IOVLEN);
    }
  }

  get pending(): number { return this.n; }

  /** Reserves `len` bytes for a datagram to to:port; returns where to write them. */
  push(to: SockAddr | null, port: number, len: number): number {
    if (len < 0 || len > 65535) throw new MembraneError('SOCK_BATCH', `datagram of ${len} bytes`);
    if (this.n === this.capacity || this.dataOff + this.used + len > this.dataEnd) this.flush();
    const i = this.n++;
    const b = this.data;
    const w = this.u32;
    const h = i * M;
    const off = this.dataOff + this.used;
    this.used += len;
    const iov = (this.iovs + i * IOV) >>> 2;
    put64(this.u16, w, iov, this.baseHi, this.baseLo16, this.baseHi16, off);
    w[iov + 2] = len;
    w[iov + 3] = 0;
    if (to === null) {
      w[(h + O_NAME) >>> 2] = 0;
      w[((h + O_NAME) >>> 2) + 1] = 0;
      w[(h + O_NAMELEN) >>> 2] = 0;
    } else {
      const sa = this.names + i * SA;
      // family (host order) then port (network order): one word
      const p = ((port & 0xff) << 8) | (port >>> 8);
      const ab = to.bytes;
      if (to.family === 4) {
        w[sa >>> 2] = AF_INET | (p << 16);
        b[sa + 4] = ab[0]!; b[sa + 5] = ab[1]!; b[sa + 6] = ab[2]!; b[sa + 7] = ab[3]!;
        w[(h + O_NAMELEN) >>> 2] = SA4;
      } else {
        w[sa >>> 2] = AF_INET6 | (p << 16);
        w[(sa + 4) >>> 2] = 0; // flowinfo
        ab.copy(b, sa + 8);
        w[(sa + 24) >>> 2] = 0; // scope id
        w[(h + O_NAMELEN) >>> 2] = SA;
      }
      put64(this.u16, w, (h + O_NAME) >>> 2, this.baseHi, this.baseLo16, this.baseHi16, sa);
    }
    return off;
  }

  /** Copies `src[start, end)` as one datagram; returns its offset in `data` (to patch it). */
  pushCopy(to: SockAddr | null, port: number, src: Buffer, start = 0, end = src.length): number {
    const off = this.push(to, port, end - start);
    src.copy(this.data, off, start, end);
    return off;
  }

  /**
   * Sends what is queued. A datagram the kernel refuses (buffer full, unreachable) is counted in
   * `dropped` and skipped; the rest still go. Returns how many were sent.
   */
  flush(): number {
    let from = 0, sentNow = 0;
    let retries = 0;
    while (from < this.n) {
      this.calls++;
      const r = sendmmsgFn(this.fd, from === 0 ? this.ptr : this.ptr + BigInt(from * M), this.n - from, MSG_DONTWAIT) as number;
      if (r > 0) { from += r; sentNow += r; retries = 0; continue; }
      const e = r < 0 ? koffi.errno() : 0;
      if (e === EINTR && retries++ < 3) continue;
      // the first queued datagram failed: drop it, keep the others
      this.dropped++;
      from++;
    }
    this.sent += sentNow;
    this.n = 0;
    this.used = 0;
    return sentNow;
  }
}
