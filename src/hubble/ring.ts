/**
 * Hubble's event ring (spec/hubble.md §6): 2^n slots, capacity 2^n − 1, a monotonically
 * increasing write counter, readers addressing absolute positions. A position that has been
 * overwritten reads as a LostEvent (HUBBLE_RING_BUFFER) telling how many entries the reader
 * missed; a position ahead of the writer is EOF, or a wait in follow mode.
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { MembraneError } from '../common/errors.ts';
import { LostEventSchema, LostEventSource, type Flow, type LostEvent } from './gen/flow/flow_pb.js';

export type RingEntry =
  | { kind: 'flow'; flow: Flow; timeMs: number }
  | { kind: 'lost'; lost: LostEvent; timeMs: number };

/**
 * A flow its builder keeps in the ring in a compact form of its own (l7-parser.ts: the proxies'
 * HTTP flows; flow.ts: the datapath's flows): one object per ring position, filled in place each time the writer comes round,
 * holding numbers and messages shared between flows. A Flow kept whole is a dozen young objects
 * that every scavenge copies while the ring holds them (the agent's L7 flows at proxy rates: a
 * 10 ms scavenge every ~350 ms); this holds none. Readers get `toFlow()`, a new Flow equal to
 * the one the builder made when it was ingested, each time they read it.
 */
/** A flow's time in the ring (ms): its Timestamp's (now without one). */
export function timeInRing(flow: Flow): number {
  const t = flow.time;
  return t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : Date.now();
}

export interface CompactFlow {
  readonly kind: 'compact';
  /** the builder that fills it (a position's object is reused by the same builder only) */
  readonly owner: object;
  toFlow(): Flow;
}

type Slot = RingEntry | CompactFlow;

/** What reading a position gives: an entry, a synthesized loss (then continue at `next`), or EOF. */
export type RingRead =
  | { kind: 'entry'; entry: RingEntry; next: number }
  | { kind: 'overwritten'; lost: LostEvent; timeMs: number; next: number }
  | { kind: 'eof' };

export const DEFAULT_RING_CAPACITY = 4095;

export function validateCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65535 || ((capacity + 1) & capacity) !== 0) {
    throw new MembraneError('HUBBLE_RING_CAPACITY', `invalid hubble ring capacity ${capacity}: must be one less than an integer power of two`, {
      hint: 'use 1, 3, 7, …, 4095 (the default), …, 65535',
    });
  }
}

export function lostEvent(source: LostEventSource, count: number, firstMs: number, lastMs = firstMs, cpu?: number): LostEvent {
  return create(LostEventSchema, {
    source,
    numEventsLost: BigInt(count),
    cpu,
    first: timestampFromMs(firstMs),
    last: timestampFromMs(lastMs),
  });
}

export class FlowRing {
  readonly capacity: number;
  private readonly slots: (Slot | undefined)[];
  /** per position, the compact object last filled there (kept while other entries take the position) */
  private readonly compacts: (CompactFlow | undefined)[];
  /** per-slot time (epoch ms), cheap to scan backwards */
  private readonly times: Float64Array;
  private readonly mask: number;
  /** next position to write; entries live at [max(0, write − capacity), write) */
  private write = 0;
  private waiters: (() => void)[] = [];
  /** entries lost per source (for metrics): ring overwrites seen by readers, kernel losses reported */
  readonly lostTotals = new Map<LostEventSource, number>();
  private readonly lostListeners: ((source: LostEventSource, count: number) => void)[] = [];

  constructor(capacity = DEFAULT_RING_CAPACITY) {
    validateCapacity(capacity);
    this.capacity = capacity;
    this.slots = new Array<Slot | undefined>(capacity + 1);
    this.compacts = new Array<CompactFlow | undefined>(capacity + 1);
    this.times = new Float64Array(capacity + 1);
    this.mask = capacity;
  }

  /** Number of readable entries (ServerStatus.num_flows). */
  get length(): number {
    return Math.min(this.write, this.capacity);
  }

  /** Total entries ever written. */
  get written(): number {
    return this.write;
  }

  /** Oldest readable position. */
  oldest(): number {
    return Math.max(0, this.write - this.capacity);
  }

  /** Position the next write will take; newest entry is `end() − 1`. */
  end(): number {
    return this.write;
  }

  push(entry: RingEntry): void {
    this.put(entry, entry.timeMs);
  }

  private put(slot: Slot, timeMs: number): void {
    const i = this.write & this.mask;
    this.slots[i] = slot;
    this.times[i] = timeMs;
    this.write++;
    if (this.waiters.length) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  pushFlow(flow: Flow, timeMs: number): void {
    this.push({ kind: 'flow', flow, timeMs });
  }

  /**
   * The compact object of `owner` at the position the next write takes (made by `make` the first
   * time, or when another builder's was there): fill it, then pushCompact it. That position is
   * not readable until then (the ring has one slot more than its capacity).
   */
  compactSlot<T extends CompactFlow>(owner: object, make: () => T): T {
    const i = this.write & this.mask;
    let c = this.compacts[i];
    if (c?.owner !== owner) this.compacts[i] = c = make();
    return c as T;
  }

  /** Stores the object compactSlot gave, filled. */
  pushCompact(slot: CompactFlow, timeMs: number): void {
    this.put(slot, timeMs);
  }

  /**
   * Record events lost before reaching the ring (kernel ring full: PERF_EVENT_RING_BUFFER;
   * observer queue full: OBSERVER_EVENTS_QUEUE). Stored in the ring so readers see them in order.
   */
  reportLost(source: LostEventSource, count: number, opts: { cpu?: number; firstMs?: number; lastMs?: number } = {}): void {
    if (count <= 0) return;
    const now = Date.now();
    this.countLost(source, count);
    this.push({ kind: 'lost', lost: lostEvent(source, count, opts.firstMs ?? now, opts.lastMs ?? now, opts.cpu), timeMs: now });
  }

  /** Subscribe to every loss (metrics: hubble_lost_events_total). */
  onLost(cb: (source: LostEventSource, count: number) => void): () => void {
    this.lostListeners.push(cb);
    return () => {
      const i = this.lostListeners.indexOf(cb);
      if (i >= 0) this.lostListeners.splice(i, 1);
    };
  }

  private countLost(source: LostEventSource, count: number): void {
    this.lostTotals.set(source, (this.lostTotals.get(source) ?? 0) + count);
    for (const l of this.lostListeners) l(source, count);
  }

  /** Time of the entry at a readable position (no allocation). */
  timeAt(pos: number): number {
    return this.times[pos & this.mask] ?? 0;
  }

  /** Whether a readable position holds a flow or a loss, without making the flow (undefined if not readable). */
  kindAt(pos: number): 'flow' | 'lost' | undefined {
    if (pos < this.oldest() || pos >= this.write) return undefined;
    const s = this.slots[pos & this.mask]!;
    return s.kind === 'lost' ? 'lost' : 'flow';
  }

  /** Entry at a readable position, or undefined if not readable. */
  at(pos: number): RingEntry | undefined {
    if (pos < this.oldest() || pos >= this.write) return undefined;
    return this.entry(pos & this.mask);
  }

  /** A position's entry, a compact flow made a Flow. */
  private entry(i: number): RingEntry {
    const s = this.slots[i]!;
    return s.kind === 'compact' ? { kind: 'flow', flow: s.toFlow(), timeMs: this.times[i]! } : s;
  }

  /**
   * Read at `pos`. An overwritten position yields one LostEvent counting every entry the reader
   * missed and resumes at the oldest readable entry.
   */
  read(pos: number): RingRead {
    if (pos >= this.write) return { kind: 'eof' };
    const oldest = this.oldest();
    if (pos < oldest) {
      const missed = oldest - pos;
      const now = Date.now();
      this.countLost(LostEventSource.HUBBLE_RING_BUFFER, missed);
      return { kind: 'overwritten', lost: lostEvent(LostEventSource.HUBBLE_RING_BUFFER, missed, now), timeMs: now, next: oldest };
    }
    return { kind: 'entry', entry: this.entry(pos & this.mask), next: pos + 1 };
  }

  /** Resolve once something is written at or beyond `pos` (or at once if already), or on abort. */
  waitFor(pos: number, signal?: AbortSignal): Promise<void> {
    if (pos < this.write || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
