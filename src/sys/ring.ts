/**
 * BPF_MAP_TYPE_RINGBUF consumer that maps the ring into JS and parses it there
 * (spec/datapath-from-node.md §4 "MmapRing"): page 0 = consumer_pos (RW), page 1 = producer_pos
 * (RO), then the data area mapped twice so wrapping records are contiguous. Woken by
 * `epoll_wait.async` (bounded 200 ms timeout so stop() works) and drained fully on each wake,
 * since the kernel only signals a consumer that has caught up.
 *
 * A drain that found records is followed by a pause (COALESCE_MS) before the next one instead of
 * going back to epoll at once: while events flow (one per new connection and more), a consumer
 * that catches up after every record is woken once per record, and each wake (epoll thread, loop
 * hop, promise) costs tens of µs of a CPU the connections need. Pausing bounds the wakes to
 * 1000 / COALESCE_MS per second whatever the event rate; the kernel's wake-up of a consumer that
 * is not waiting costs nothing, and the ring (4 MiB) holds far more than a pause's events.
 * 50 ms, not 10: in a two-node lab under TCP_CRR (bench/cluster) the agents' CPU with events
 * flowing was ~30 ms/s above the same CRR with the event budget set to nothing, and only ~4 µs per
 * event beyond that (event budgets 250-4000/s, load 13): the wakes themselves (timer, loop turn, a
 * drain's cold code) at 100 a second per agent. With 50 ms the agents' CPU per connection fell
 * from 223-330 µs to 122-129 µs (main vs this, two labs interleaved, load 30, 2 and 3 flows per
 * connection on either). A first event after a quiet spell still wakes the consumer at once (epoll).
 */
import koffi from 'koffi';
import { MembraneError } from '../common/errors.ts';
import { mapInfo, MapType } from './bpf.ts';
import { mapShared, PROT_READ, PROT_WRITE, type SharedMapping } from './mmap.ts';

const libc = koffi.load('libc.so.6');
const epollCreate1 = libc.func('int epoll_create1(int flags)');
const epollEvent = koffi.pack('mb_epoll_event', { events: 'uint32_t', data: 'uint64_t' });
const epollCtl = libc.func('int epoll_ctl(int epfd, int op, int fd, mb_epoll_event *ev)');
const epollWait = libc.func('int epoll_wait(int epfd, _Out_ uint8_t *events, int maxevents, int timeout)');
const closeFn = libc.func('int close(int fd)');

const EPOLLIN = 1, EPOLL_CTL_ADD = 1;
const PAGE = 4096;
/** Pause after a drain that delivered records (events reach subscribers at most this much later). */
export const COALESCE_MS = 50;
const BUSY = 0x80000000, DISCARD = 0x40000000;

/** Called per committed record: `data.subarray(off, off + len)` is the record (valid only during the call). */
export type RecordHandler = (data: Buffer, off: number, len: number) => void;

export class MmapRing {
  private readonly size: number;
  private readonly consPage: SharedMapping;
  private readonly prodPages: SharedMapping;
  private readonly cons64: BigUint64Array;
  private readonly prod64: BigUint64Array;
  private readonly data32: Uint32Array;
  private readonly data: Buffer;
  private readonly epfd: number;
  private readonly evbuf = Buffer.alloc(12 * 4);
  private running = false;
  private loop: Promise<void> | null = null;
  private closed = false;
  private readonly onRecord: RecordHandler;
  records = 0;

  constructor(mapFd: number, onRecord: RecordHandler) {
    this.onRecord = onRecord;
    const info = mapInfo(mapFd);
    if (info.type !== MapType.RINGBUF) throw new MembraneError('RING_NOT_RINGBUF', `map fd ${mapFd} is not a ring buffer (type ${info.type})`);
    this.size = info.maxEntries;
    this.consPage = mapShared(mapFd, PAGE, PROT_READ | PROT_WRITE, 0, (e) => new MembraneError('RING_MMAP', `mmap ring consumer page: errno ${e}`));
    try {
      this.prodPages = mapShared(mapFd, PAGE + 2 * this.size, PROT_READ, PAGE, (e) => new MembraneError('RING_MMAP', `mmap ring data: errno ${e}`));
    } catch (e) {
      this.consPage.unmap();
      throw e;
    }
    this.cons64 = new BigUint64Array(this.consPage.buf);
    const ab = this.prodPages.buf;
    this.prod64 = new BigUint64Array(ab, 0, 1);
    this.data32 = new Uint32Array(ab, PAGE);
    this.data = Buffer.from(ab, PAGE);
    this.epfd = epollCreate1(0x80000 /* EPOLL_CLOEXEC */) as number;
    if (this.epfd < 0) throw new MembraneError('RING_EPOLL', `epoll_create1: errno ${koffi.errno()}`);
    if ((epollCtl(this.epfd, EPOLL_CTL_ADD, mapFd, { events: EPOLLIN, data: 0n }) as number) < 0) {
      throw new MembraneError('RING_EPOLL', `epoll_ctl(ring): errno ${koffi.errno()}`);
    }
  }

  /** Bytes committed but not yet consumed. */
  pending(): number {
    return Number(Atomics.load(this.prod64, 0) - Atomics.load(this.cons64, 0));
  }

  /** Consumes every committed record; returns how many were delivered. */
  drain(): number {
    let c = Number(Atomics.load(this.cons64, 0));
    const start = c;
    const p = Number(Atomics.load(this.prod64, 0));
    const mask = this.size - 1;
    let n = 0;
    let seen = 0;
    while (c < p) {
      const off = c & mask;
      const hdr = Atomics.load(this.data32, off >> 2);
      if (hdr & BUSY) break;
      const len = hdr & 0x3fffffff;
      if (!(hdr & DISCARD)) {
        try {
          this.onRecord(this.data, off + 8, len);
        } catch {
          // a subscriber's exception must not stop the consumer
        }
        n++;
      }
      c += (len + 8 + 7) & ~7;
      // the records' space goes back to the kernel every 64 records and at the end (a BigInt per
      // store; a handler never keeps a record)
      if ((++seen & 63) === 0) Atomics.store(this.cons64, 0, BigInt(c));
    }
    if (c !== start) Atomics.store(this.cons64, 0, BigInt(c));
    this.records += n;
    return n;
  }

  /** Starts the wake-drain loop (one libuv pool thread parks in epoll_wait for ≤ 200 ms). */
  start(): void {
    if (this.running || this.closed) return;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        if (this.drain() > 0) {
          await new Promise<void>((resolve) => setTimeout(resolve, COALESCE_MS));
          continue;
        }
        await new Promise<void>((resolve) => {
          epollWait.async(this.epfd, this.evbuf, 4, 200, () => resolve());
        });
      }
      this.drain();
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.loop) await this.loop;
    this.loop = null;
  }

  async close(): Promise<void> {
    await this.stop();
    if (this.closed) return;
    this.closed = true;
    closeFn(this.epfd);
    this.prodPages.unmap();
    this.consPage.unmap();
  }
}
