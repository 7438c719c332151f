/**
 * Token budgets and request rates per identity per window, kept across agent and proxy restarts.
 *
 *   key = `<policy>|<unit>|<window ms>|<identity>` where identity is the identity's label set
 *   (stable across restarts; every replica of a workload has it, so replicas share one count)
 *
 * Windows are fixed (aligned to multiples of their length since the epoch). A request is admitted
 * while the window's count plus what admitted requests still in flight may spend stays under the
 * limit; its tokens are charged when its response ends. In-flight reservations (prompt estimate +
 * max tokens) keep a burst of parallel requests from all passing at once; they expire on their own
 * after `reservationTtlMs` in case an exchange vanishes without an end.
 *
 * Persistence: a JSON file in the node's state directory, written to a temporary file and renamed
 * (a crash never leaves a torn file), `flushMs` after a change and at stop. Counts of expired
 * windows are dropped when loaded.
 */
import { readFile } from 'node:fs/promises';
import type { AIWindow } from '../../policy/ai.ts';
import { writeFileAtomic } from '../../common/atomic-file.ts';

export interface LedgerOptions {
  /** state file; none: in memory only */
  file?: string;
  flushMs?: number;
  reservationTtlMs?: number;
  now?: () => number;
  logger?: { warn(o: unknown, m?: string): void };
}

interface Entry {
  /** window end, epoch ms */
  e: number;
  /** tokens or requests counted in the window */
  n: number;
}

export interface WindowState {
  used: number;
  reserved: number;
  windowEnd: number;
}

export class AIBudgetLedger {
  private readonly entries = new Map<string, Entry>();
  /** in-flight reservations: key → tokens, and each reservation's expiry */
  private readonly reserved = new Map<string, number>();
  private readonly reservations = new Set<{ keys: readonly string[]; tokens: number; expires: number }>();
  private readonly o: LedgerOptions;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  /** the next time expired reservations are looked for (at most once a second) */
  private expireAt = 0;
  readonly now: () => number;

  constructor(o: LedgerOptions = {}) {
    this.o = o;
    this.now = o.now ?? Date.now;
  }

  static key(policy: string, unit: 'tokens' | 'requests', w: AIWindow, identity: string): string {
    return `${policy}|${unit}|${w.ms}|${identity}`;
  }

  /** Reads the state file (a missing file is an empty ledger; an unreadable one is reported and replaced). */
  async load(): Promise<void> {
    if (!this.o.file) return;
    let text: string;
    try {
      text = await readFile(this.o.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.o.logger?.warn({ err: String(e), file: this.o.file }, 'AI budget state unreadable');
      return;
    }
    try {
      const snap = JSON.parse(text) as { version?: number; entries?: Record<string, Entry> };
      const now = this.now();
      for (const [k, v] of Object.entries(snap.entries ?? {})) {
        if (typeof v?.e === 'number' && typeof v.n === 'number' && v.e > now) this.entries.set(k, { e: v.e, n: v.n });
      }
    } catch (e) {
      this.o.logger?.warn({ err: String(e), file: this.o.file }, 'AI budget state is not JSON; starting empty');
    }
  }

  private entry(key: string, w: AIWindow, now: number): Entry {
    let en = this.entries.get(key);
    if (!en || en.e <= now) {
      en = { e: (Math.floor(now / w.ms) + 1) * w.ms, n: 0 };
      this.entries.set(key, en);
    }
    return en;
  }

  state(key: string, w: AIWindow, now = this.now()): WindowState {
    this.expire(now);
    const en = this.entries.get(key);
    const live = en && en.e > now;
    return { used: live ? en.n : 0, reserved: this.reserved.get(key) ?? 0, windowEnd: live ? en.e : (Math.floor(now / w.ms) + 1) * w.ms };
  }

  /** Counts one request in each window (after every check passed). */
  countRequest(keys: readonly { key: string; window: AIWindow }[], now = this.now()): void {
    for (const k of keys) this.entry(k.key, k.window, now).n++;
    if (keys.length) this.changed();
  }

  /** Holds `tokens` against each key until `settle` (or expiry). */
  reserve(keys: readonly string[], tokens: number, now = this.now()): object {
    const r = { keys, tokens, expires: now + (this.o.reservationTtlMs ?? 15 * 60_000) };
    this.reservations.add(r);
    for (const k of keys) this.reserved.set(k, (this.reserved.get(k) ?? 0) + tokens);
    return r;
  }

  /** Releases a reservation and charges what was spent. */
  settle(reservation: object | undefined, charges: readonly { key: string; window: AIWindow }[], tokens: number, now = this.now()): void {
    const r = reservation as { keys: readonly string[]; tokens: number; expires: number } | undefined;
    if (r && this.reservations.delete(r)) this.unreserve(r);
    if (tokens > 0 && charges.length) {
      for (const c of charges) this.entry(c.key, c.window, now).n += tokens;
      this.changed();
    }
  }

  private unreserve(r: { keys: readonly string[]; tokens: number }): void {
    for (const k of r.keys) {
      const left = (this.reserved.get(k) ?? 0) - r.tokens;
      if (left > 0) this.reserved.set(k, left);
      else this.reserved.delete(k);
    }
  }

  private expire(now: number): void {
    if (this.reservations.size === 0 || now < this.expireAt) return;
    this.expireAt = now + 1000;
    for (const r of this.reservations) {
      if (r.expires <= now) {
        this.reservations.delete(r);
        this.unreserve(r);
      }
    }
  }

  private changed(): void {
    if (!this.o.file) return;
    this.dirty = true;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.o.flushMs ?? 200);
    this.timer.unref();
  }

  /** Writes the state now (atomically: temporary file, then rename). */
  flush(): Promise<void> {
    const file = this.o.file;
    if (!file) return Promise.resolve();
    this.writing = this.writing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      const now = this.now();
      const entries: Record<string, Entry> = {};
      for (const [k, v] of this.entries) {
        if (v.e > now) entries[k] = v;
        else this.entries.delete(k);
      }
      try {
        await writeFileAtomic(file, JSON.stringify({ version: 1, entries }), { mkdir: true });
      } catch (e) {
        this.dirty = true;
        this.o.logger?.warn({ err: String(e), file }, 'AI budget state not written');
      }
    });
    return this.writing;
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Every live count (the agent API and tests). */
  snapshot(now = this.now()): { key: string; used: number; reserved: number; windowEnd: number }[] {
    return [...this.entries].filter(([, v]) => v.e > now).map(([key, v]) => ({ key, used: v.n, reserved: this.reserved.get(key) ?? 0, windowEnd: v.e }));
  }
}
