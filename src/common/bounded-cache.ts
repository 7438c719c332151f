/**
 * A Map with a bound: the one home of the caches that keep what a hot path made (interned
 * strings, decoded messages, decisions) so that the next packet, flow or query finds it, and that
 * must not grow with what an attacker or a large cluster sends.
 *
 * Two ways to make room for a new key when full, the two the code uses:
 *
 *   'all'     forget everything (the default): O(1), nothing kept per entry, and a cache of things
 *             that repeat fills again at once. What a hot path wants: a miss on a full table costs
 *             one clear, never a walk.
 *   'oldest'  forget the entry set longest ago (Map keeps insertion order), one per new key: for
 *             caches whose entries are costly to make again (compiled matchers, issued leaves) or
 *             that stand for someone waiting. `use()` makes a hit the newest, which turns it into
 *             a least-recently-used cache.
 *
 * Setting a key that is there already replaces its value in place: it evicts nothing and does not
 * move it (use `use()` for that).
 *
 * Hot paths look up: `get` then, on a miss, `set` (which returns the value) costs what the Map
 * does and makes nothing. `getOrMake(k, make)` is for a `make` that takes only the key, so that it
 * is made once (a module function, or a closure made with the cache), never an arrow per call.
 * A value of `undefined` reads as a miss.
 */
export type Eviction = 'all' | 'oldest';

export class BoundedCache<K, V> {
  readonly max: number;
  readonly eviction: Eviction;
  readonly #map = new Map<K, V>();

  constructor(max: number, eviction: Eviction = 'all') {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a bounded cache holds at least one entry (max ${max})`);
    this.max = max;
    this.eviction = eviction;
  }

  get size(): number {
    return this.#map.size;
  }

  get(k: K): V | undefined {
    return this.#map.get(k);
  }

  has(k: K): boolean {
    return this.#map.has(k);
  }

  /** `k`'s value, made the newest entry ('oldest' evicts it last: least recently used). */
  use(k: K): V | undefined {
    const m = this.#map;
    const v = m.get(k);
    if (v !== undefined) {
      m.delete(k);
      m.set(k, v);
    }
    return v;
  }

  /** Sets `k` (making room first when it is new and the cache is full); returns `v`. */
  set(k: K, v: V): V {
    const m = this.#map;
    if (m.size >= this.max && !m.has(k)) {
      if (this.eviction === 'all') m.clear();
      else m.delete(m.keys().next().value as K);
    }
    m.set(k, v);
    return v;
  }

  /** `k`'s value, or `make(k)`'s, then kept. `make` takes the key only: make it once, not per call. */
  getOrMake(k: K, make: (k: K) => V): V {
    const v = this.#map.get(k);
    return v !== undefined ? v : this.set(k, make(k));
  }

  delete(k: K): boolean {
    return this.#map.delete(k);
  }

  clear(): void {
    this.#map.clear();
  }

  /** The values, oldest first. */
  values(): MapIterator<V> {
    return this.#map.values();
  }
}
