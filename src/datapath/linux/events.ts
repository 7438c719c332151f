/**
 * Monitor events: reads the ring buffer (mb_events), decodes each record into a DatapathEvent and
 * hands it to the subscribers (buffered while there are none, e.g. right after a restart).
 * Counts what was not delivered: ring full (mb_lost) or the sender's event budget spent
 * (mb_ev_buckets, numbered like the conntrack tables).
 */
import { MmapRing } from '../../sys/ring.ts';
import { copyEvent, type DatapathEvent } from '../types.ts';
import { DecodedEvent, STAT_EVENTS_LIMITED, ctExtIndex, ctOwnIndex, decodeEvBucketLost, decodeEventInto, emptyEvBucket, encodeU32 } from './codec.ts';
import type { Loader } from './loader.ts';
import { perCpuCounter } from './statsmap.ts';

interface Logger { warn(obj: unknown, msg?: string): void }

export class EventReader {
  private readonly loader: Loader;
  private readonly log: Logger;
  private readonly backlogLimit: number;
  private ring: MmapRing | null = null;
  private readonly subscribers = new Set<(ev: DatapathEvent) => void>();
  private backlog: DatapathEvent[] = [];
  private lostBaseline = 0n;

  constructor(loader: Loader, log: Logger, backlogLimit: number) {
    this.loader = loader;
    this.log = log;
    this.backlogLimit = backlogLimit;
  }

  /** Counts losses from now on (the pinned counters outlive agents). */
  resetLostBaseline(): void {
    this.lostBaseline = this.lostTotal();
  }

  /** Starts reading; `timeOffsetNs` turns the kernel's monotonic clock into wall-clock time. */
  start(timeOffsetNs: bigint): void {
    // one event object, refilled per record: subscribers get it for the call only (types.ts onEvent)
    const ev = new DecodedEvent();
    this.ring = new MmapRing(this.loader.map('mb_events').fd, (data, off) => this.dispatch(decodeEventInto(ev, data, off, timeOffsetNs)));
    this.ring.start();
  }

  async stop(): Promise<void> {
    if (this.ring) await this.ring.close();
    this.ring = null;
  }

  subscribe(cb: (ev: DatapathEvent) => void): () => void {
    this.subscribers.add(cb);
    if (this.backlog.length > 0) {
      const b = this.backlog;
      this.backlog = [];
      for (const ev of b) {
        try {
          cb(ev);
        } catch {
          /* subscriber errors are theirs */
        }
      }
    }
    return () => this.subscribers.delete(cb);
  }

  /** Events consumed from the ring so far. */
  read(): number {
    return this.ring?.records ?? 0;
  }

  /** Events not delivered since start. Two per-CPU array reads. */
  lost(): bigint {
    return this.lostTotal() - this.lostBaseline;
  }

  /** Zeroes an endpoint's event budgets (a new or removed endpoint inherits no losses). */
  resetBudgets(id: number): void {
    const m = this.loader.map('mb_ev_buckets');
    m.update(encodeU32(ctOwnIndex(id)), emptyEvBucket());
    m.update(encodeU32(ctExtIndex(id)), emptyEvBucket());
  }

  /** Events each sender lost to its budget; senders without losses are left out. */
  lostBySender(endpointIds: number[]): Map<number, { own: bigint; external: bigint }> {
    const m = this.loader.map('mb_ev_buckets');
    const out = new Map<number, { own: bigint; external: bigint }>();
    const buf = emptyEvBucket();
    for (const id of endpointIds) {
      const own = m.lookup(encodeU32(ctOwnIndex(id)), buf) ? decodeEvBucketLost(buf) : 0n;
      const external = m.lookup(encodeU32(ctExtIndex(id)), buf) ? decodeEvBucketLost(buf) : 0n;
      if (own || external) out.set(id, { own, external });
    }
    return out;
  }

  private lostTotal(): bigint {
    return perCpuCounter(this.loader.map('mb_lost'), 0) + perCpuCounter(this.loader.map('mb_stats'), STAT_EVENTS_LIMITED);
  }

  private dispatch(ev: DatapathEvent): void {
    if (this.subscribers.size === 0) {
      // kept until a subscriber comes: a copy (the next record refills `ev`)
      if (this.backlog.length < this.backlogLimit) this.backlog.push(copyEvent(ev));
      return;
    }
    for (const cb of this.subscribers) {
      try {
        cb(ev);
      } catch (e) {
        this.log.warn({ subsys: 'datapath', err: String(e) }, 'event subscriber threw');
      }
    }
  }
}
