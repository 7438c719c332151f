/**
 * Cluster-wide identities in the kvstore, with Cilium's layout and algorithm (pkg/allocator,
 * pkg/kvstore/allocator, the operator's identity GC):
 *
 *   cilium/state/identities/v1/id/<id>                  → label string     (master key, no lease)
 *   cilium/state/identities/v1/value/<labels>/<node>    → "<id>"           (slave key, node's lease)
 *   cilium/state/identities/v1/locks/<labels>/<lease>                      (per-labels lock)
 *
 * The label string is `source:key=value;` per label, sorted by key; the trailing `;` lets a prefix
 * listing of `value/<labels>/` never match a longer label set.
 *
 * allocate(labels), when this node holds no reference yet: take the labels' lock; reuse the id of
 * an existing slave key, else of a master key with these labels, else pick a random free id and
 * create its master key only if absent (`version == 0`) while still holding the lock (another
 * node may have taken that number for other labels: pick again); then write this node's slave
 * key under its lease. The lock serialises nodes allocating the same labels; the create-only
 * compare stops two nodes taking one number for different labels.
 *
 * release: the last local reference deletes this node's slave key. A node that dies loses its
 * slave keys with its lease. The GC (every node runs it; it is idempotent) deletes a master key
 * that had no slave key on two passes in a row and did not change in between, under the lock.
 *
 * Every master key is followed (list-then-watch) into the local cache, so lookups stay
 * synchronous and remote pods' identities are known to the selector cache. A key that does not
 * parse is logged and skipped.
 */
import { MembraneError } from '../common/errors.ts';
import { LabelSet, makeLabel, type Label } from '../labels/labels.ts';
import type { KVLog, KVStore, WatchEvent } from '../kvstore/types.ts';
import { LocalIdentityAllocator, type AllocationResult } from './allocator.ts';
import { MAX_CLUSTER_IDENTITY, MIN_CLUSTER_IDENTITY, identityScope, requiresLocalScope, reservedIdentityForLabels } from './identity.ts';

export const IDENTITIES_PREFIX = 'cilium/state/identities/v1/';
export const ID_PREFIX = `${IDENTITIES_PREFIX}id/`;
export const VALUE_PREFIX = `${IDENTITIES_PREFIX}value/`;
export const LOCKS_PREFIX = `${IDENTITIES_PREFIX}locks/`;

/** Cilium's SortedList / FormatForKVStore: `source:key=value;` for each label, by key. */
export function kvstoreLabelString(labels: LabelSet): string {
  return [...labels.labels].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.source < b.source ? -1 : a.source > b.source ? 1 : 0))
    .map((l) => `${l.source}:${l.key}=${l.value};`).join('');
}

/** The labels of a label string, or undefined when it is not one. */
export function parseKvstoreLabelString(text: string): LabelSet | undefined {
  if (!text.endsWith(';')) return undefined;
  const out: Label[] = [];
  for (const part of text.slice(0, -1).split(';')) {
    const colon = part.indexOf(':');
    const eq = part.indexOf('=', colon + 1);
    if (colon <= 0 || eq < 0 || eq === colon + 1) return undefined;
    out.push(makeLabel(part.slice(0, colon), part.slice(colon + 1, eq), part.slice(eq + 1)));
  }
  return out.length ? new LabelSet(out) : undefined;
}

export interface ClusterAllocatorOptions {
  kv: KVStore;
  /** this node's part of slave keys (Cilium: the node's IPv4 address) */
  nodeSuffix: string;
  minClusterIdentity?: number;
  maxClusterIdentity?: number;
  /** ms between GC passes; 0: no GC on this node (default 60 s) */
  gcIntervalMs?: number;
  log?: KVLog;
  /** id picker (tests); default Math.random */
  random?: () => number;
}

const ATTEMPTS = 16;

/** 256..2^24-1: what a cluster identity number (with its cluster-id bits) can be on the wire. */
function isClusterNumber(text: string): boolean {
  if (!/^\d{1,8}$/.test(text)) return false;
  const id = Number(text);
  return id >= MIN_CLUSTER_IDENTITY && id < 1 << 24;
}

export class ClusterIdentityAllocator extends LocalIdentityAllocator {
  readonly #kv: KVStore;
  readonly #suffix: string;
  readonly #log: KVLog | undefined;
  readonly #min: number;
  readonly #max: number;
  readonly #random: () => number;
  /** master keys seen: id → label string */
  readonly #masters = new Map<number, string>();
  /** per label string: the tail of this node's kvstore work for it (allocate/release in order) */
  readonly #queues = new Map<string, Promise<unknown>>();
  /** GC candidates from the last pass: id → master key revision */
  #gcMarks = new Map<number, number>();
  #unfollow: (() => void) | undefined;
  #gcTimer: ReturnType<typeof setInterval> | undefined;
  #gcRunning = false;

  private constructor(opts: ClusterAllocatorOptions) {
    const min = opts.minClusterIdentity ?? MIN_CLUSTER_IDENTITY;
    const max = opts.maxClusterIdentity ?? MAX_CLUSTER_IDENTITY;
    super({ minClusterIdentity: min, maxClusterIdentity: max });
    this.#kv = opts.kv;
    this.#suffix = opts.nodeSuffix;
    this.#log = opts.log;
    this.#min = min;
    this.#max = max;
    this.#random = opts.random ?? Math.random;
  }

  /** Opens the allocator: follows every master key before it returns. */
  static async open(opts: ClusterAllocatorOptions): Promise<ClusterIdentityAllocator> {
    if (!opts.nodeSuffix || opts.nodeSuffix.includes('/')) throw new MembraneError('IDENTITY_CONFIG', `node suffix "${opts.nodeSuffix}" is empty or has a "/"`);
    const a = new ClusterIdentityAllocator(opts);
    a.#unfollow = await opts.kv.follow(ID_PREFIX, (ev) => a.#onMaster(ev));
    const every = opts.gcIntervalMs ?? 60_000;
    if (every > 0) {
      a.#gcTimer = setInterval(() => void a.gc(), every);
      a.#gcTimer.unref?.();
    }
    return a;
  }

  stop(): void {
    this.#unfollow?.();
    if (this.#gcTimer) clearInterval(this.#gcTimer);
  }

  #onMaster(ev: WatchEvent): void {
    const key = ev.type === 'put' ? ev.kv.key : ev.key;
    const idText = key.slice(ID_PREFIX.length);
    const id = Number(idText);
    if (!isClusterNumber(idText)) {
      this.#log?.warn({ subsys: 'identity', key }, 'kvstore: skipping an identity key that is not a cluster identity number');
      return;
    }
    if (ev.type === 'delete') {
      this.#masters.delete(id);
      this.forget(id);
      return;
    }
    const labels = parseKvstoreLabelString(ev.kv.value);
    if (!labels) {
      this.#log?.warn({ subsys: 'identity', key, value: ev.kv.value.slice(0, 200) }, 'kvstore: skipping an identity whose labels do not parse');
      return;
    }
    if (!this.observe(id, labels)) {
      this.#log?.warn({ subsys: 'identity', key, labels: ev.kv.value.slice(0, 200) }, 'kvstore: skipping an identity that conflicts with a known one');
      return;
    }
    this.#masters.set(id, ev.kv.value);
  }

  #serial<T>(labelKey: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(labelKey) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.#queues.set(labelKey, tail);
    void tail.then(() => { if (this.#queues.get(labelKey) === tail) this.#queues.delete(labelKey); });
    return next;
  }

  #clusterScoped(labels: LabelSet): boolean {
    return !reservedIdentityForLabels(labels) && !requiresLocalScope(labels);
  }

  /** Only for identities this node already references (the kvstore work needs `allocate`). */
  override allocateSync(labels: LabelSet): AllocationResult {
    if (this.#clusterScoped(labels)) {
      const have = this.lookupByLabels(labels);
      if (!have || this.references(have.id) === 0) {
        throw new MembraneError('IDENTITY_NOT_ALLOCATED', `labels ${labels.canonical} have no identity on this node yet`, { hint: 'cluster identities are allocated through the kvstore: use allocate()' });
      }
    }
    return super.allocateSync(labels);
  }

  override async allocate(labels: LabelSet): Promise<AllocationResult> {
    if (!this.#clusterScoped(labels)) return super.allocateSync(labels);
    const held = () => {
      const have = this.lookupByLabels(labels);
      return have && this.references(have.id) > 0 ? super.allocateSync(labels) : undefined;
    };
    const fast = held();
    if (fast) return fast;
    const labelKey = kvstoreLabelString(labels);
    return this.#serial(labelKey, async () => {
      const again = held();
      if (again) return again;
      const { id, isNew } = await this.#allocateGlobal(labelKey, labels);
      this.#masters.set(id, labelKey);
      if (!this.observe(id, labels)) {
        throw new MembraneError('IDENTITY_CONFLICT', `identity ${id} for ${labelKey} conflicts with the local cache`, { hint: 'the kvstore holds two identities for these labels; the GC removes the unused one' });
      }
      const r = super.allocateSync(labels);
      return { identity: r.identity, isNew };
    });
  }

  override releaseSync(id: number): boolean {
    const before = this.references(id);
    const labels = this.lookupById(id)?.labels;
    const freed = super.releaseSync(id);
    if (before === 1 && labels && identityScope(id) === 'cluster') {
      const labelKey = kvstoreLabelString(labels);
      void this.#serial(labelKey, async () => {
        if (this.references(id) > 0) return; // taken again meanwhile
        await this.#kv.delete(this.#slaveKey(labelKey));
      }).catch((e: unknown) => this.#log?.warn({ subsys: 'identity', id, err: (e as Error).message }, 'kvstore: cannot delete the slave key'));
      return true;
    }
    return freed;
  }

  override async release(id: number): Promise<boolean> {
    const r = this.releaseSync(id);
    const labels = this.lookupById(id)?.labels;
    if (labels) await this.#queues.get(kvstoreLabelString(labels));
    return r;
  }

  #slaveKey(labelKey: string): string {
    return `${VALUE_PREFIX}${labelKey}/${this.#suffix}`;
  }

  /** The ids of the slave keys of exactly these labels (not of longer label strings). */
  async #slaveIds(labelKey: string): Promise<number[]> {
    const base = `${VALUE_PREFIX}${labelKey}`;
    const out: number[] = [];
    for (const p of await this.#kv.list(`${base}/`)) {
      if (p.key.lastIndexOf('/') !== base.length) continue;
      const id = Number(p.value);
      if (isClusterNumber(p.value)) out.push(id);
      else this.#log?.warn({ subsys: 'identity', key: p.key }, 'kvstore: skipping a slave key whose value is not an identity');
    }
    return out;
  }

  async #allocateGlobal(labelKey: string, labels: LabelSet): Promise<{ id: number; isNew: boolean }> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const lock = await this.#kv.lock(`${LOCKS_PREFIX}${labelKey}`);
      try {
        let id: number | undefined;
        let isNew = false;
        for (const sid of await this.#slaveIds(labelKey)) {
          const m = await this.#kv.get(`${ID_PREFIX}${sid}`);
          if (!m || m.value === labelKey) { id = sid; break; }
        }
        if (id === undefined) {
          for (const [mid, key] of this.#masters) if (key === labelKey) { id = mid; break; }
        }
        if (id !== undefined) {
          // Re-create the master key if it went (Cilium re-creates masters still in use).
          const m = await this.#kv.get(`${ID_PREFIX}${id}`);
          if (!m) {
            if (!(await this.#kv.cas([{ key: `${ID_PREFIX}${id}`, absent: true }, { lock }], [{ op: 'put', key: `${ID_PREFIX}${id}`, value: labelKey }]))) id = undefined;
          } else if (m.value !== labelKey) {
            id = undefined;
          }
        }
        if (id === undefined) {
          id = this.#pickFree();
          if (!(await this.#kv.cas([{ key: `${ID_PREFIX}${id}`, absent: true }, { lock }], [{ op: 'put', key: `${ID_PREFIX}${id}`, value: labelKey }]))) {
            lastErr = new Error(`identity ${id} was taken meanwhile`);
            continue;
          }
          isNew = true;
        }
        if (!(await this.#kv.cas([{ lock }], [{ op: 'put', key: this.#slaveKey(labelKey), value: String(id), lease: true }]))) {
          lastErr = new Error('the allocation lock was lost');
          continue;
        }
        return { id, isNew };
      } catch (e) {
        lastErr = e;
      } finally {
        await lock.unlock().catch(() => {});
      }
      await new Promise((r) => setTimeout(r, Math.min(20 * 2 ** attempt, 2000)));
    }
    throw new MembraneError('IDENTITY_ALLOCATION_FAILED', `no cluster identity for ${labels.canonical} after ${ATTEMPTS} attempts: ${(lastErr as Error)?.message ?? lastErr}`, { hint: 'is the kvstore reachable? see `membrane status`' });
  }

  #pickFree(): number {
    const span = this.#max - this.#min + 1;
    const start = Math.floor(this.#random() * span);
    for (let i = 0; i < span; i++) {
      const id = this.#min + ((start + i) % span);
      if (!this.#masters.has(id) && !this.lookupById(id)) return id;
    }
    throw new MembraneError('IDENTITY_EXHAUSTED', `no free cluster identity in ${this.#min}..${this.#max}`, { hint: 'too many distinct label sets; restrict identity-relevant labels' });
  }

  /**
   * One GC pass (Cilium's operator RunGC): a master key with no slave key is remembered with its
   * revision; on the next pass, if it is still unused and unchanged, it is deleted under its lock.
   */
  async gc(): Promise<number[]> {
    if (this.#gcRunning) return [];
    this.#gcRunning = true;
    const deleted: number[] = [];
    try {
      const marks = new Map<number, number>();
      for (const m of await this.#kv.list(ID_PREFIX)) {
        const idText = m.key.slice(ID_PREFIX.length);
        if (!isClusterNumber(idText) || !parseKvstoreLabelString(m.value)) continue; // not ours to judge
        const id = Number(idText);
        if ((await this.#slaveIds(m.value)).includes(id) || this.references(id) > 0) continue;
        if (this.#gcMarks.get(id) !== m.revision) { marks.set(id, m.revision); continue; }
        const lock = await this.#kv.lock(`${LOCKS_PREFIX}${m.value}`);
        try {
          if (!(await this.#slaveIds(m.value)).includes(id) && (await this.#kv.cas([{ key: m.key, revision: m.revision }, { lock }], [{ op: 'delete', key: m.key }]))) {
            deleted.push(id);
            this.#log?.info({ subsys: 'identity', id, labels: m.value }, 'identity released: no node uses it');
          }
        } finally {
          await lock.unlock().catch(() => {});
        }
      }
      this.#gcMarks = marks;
    } catch (e) {
      this.#log?.warn({ subsys: 'identity', err: (e as Error).message }, 'identity GC pass failed');
    } finally {
      this.#gcRunning = false;
    }
    return deleted;
  }
}
