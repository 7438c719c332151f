import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BoundedCache, type Eviction } from '../../../src/common/bounded-cache.ts';

const keysOf = (c: BoundedCache<number, string>, probe: readonly number[]): number[] => probe.filter((k) => c.has(k));

test('table: what a full cache keeps after each step, per eviction', () => {
  const cases: { eviction: Eviction; steps: [op: 'set' | 'use', k: number][]; kept: number[] }[] = [
    // 'all': the third new key empties the cache first
    { eviction: 'all', steps: [['set', 1], ['set', 2], ['set', 3]], kept: [3] },
    // a key already there is replaced in place: no eviction, even when full
    { eviction: 'all', steps: [['set', 1], ['set', 2], ['set', 2]], kept: [1, 2] },
    { eviction: 'oldest', steps: [['set', 1], ['set', 2], ['set', 3]], kept: [2, 3] },
    // setting again does not make it newer: 1 still goes first
    { eviction: 'oldest', steps: [['set', 1], ['set', 2], ['set', 1], ['set', 3]], kept: [2, 3] },
    // use() does: 2 goes first (least recently used)
    { eviction: 'oldest', steps: [['set', 1], ['set', 2], ['use', 1], ['set', 3]], kept: [1, 3] },
    // use() of a missing key makes nothing
    { eviction: 'oldest', steps: [['use', 9], ['set', 1]], kept: [1] },
  ];
  for (const { eviction, steps, kept } of cases) {
    const c = new BoundedCache<number, string>(2, eviction);
    for (const [op, k] of steps) {
      if (op === 'set') assert.equal(c.set(k, `v${k}`), `v${k}`);
      else c.use(k);
    }
    assert.deepEqual(keysOf(c, [1, 2, 3, 9]), kept, `${eviction}: ${JSON.stringify(steps)}`);
    for (const k of kept) assert.equal(c.get(k), `v${k}`);
  }
});

test('getOrMake makes a missing value once and keeps it; an undefined value reads as a miss', () => {
  let made = 0;
  const make = (k: number): string => { made++; return `m${k}`; };
  const c = new BoundedCache<number, string>(4);
  assert.equal(c.getOrMake(7, make), 'm7');
  assert.equal(c.getOrMake(7, make), 'm7');
  assert.equal(made, 1);
  const u = new BoundedCache<number, string | undefined>(4);
  let asked = 0;
  u.getOrMake(1, () => { asked++; return undefined; });
  u.getOrMake(1, () => { asked++; return undefined; });
  assert.equal(asked, 2);
});

test('delete, clear, values (oldest first), and a bound below one is refused', () => {
  const c = new BoundedCache<string, number>(3, 'oldest');
  c.set('a', 1); c.set('b', 2); c.set('c', 3);
  assert.equal(c.delete('b'), true);
  assert.equal(c.delete('b'), false);
  c.set('d', 4); // room left by the delete: nothing evicted
  assert.deepEqual([...c.values()], [1, 3, 4]);
  c.clear();
  assert.equal(c.size, 0);
  assert.throws(() => new BoundedCache(0), RangeError);
  assert.throws(() => new BoundedCache(1.5), RangeError);
});

test('property: never more than max entries; a hit returns what was last set; each eviction as its model', () => {
  const op = fc.oneof(
    fc.record({ t: fc.constant('set' as const), k: fc.integer({ min: 0, max: 12 }), v: fc.integer() }),
    fc.record({ t: fc.constant('get' as const), k: fc.integer({ min: 0, max: 12 }) }),
    fc.record({ t: fc.constant('use' as const), k: fc.integer({ min: 0, max: 12 }) }),
    fc.record({ t: fc.constant('delete' as const), k: fc.integer({ min: 0, max: 12 }) }),
  );
  fc.assert(fc.property(fc.integer({ min: 1, max: 6 }), fc.constantFrom<Eviction>('all', 'oldest'), fc.array(op, { maxLength: 80 }), (max, eviction, ops) => {
    const c = new BoundedCache<number, number>(max, eviction);
    // the model: entries oldest first
    let model: [number, number][] = [];
    for (const o of ops) {
      const at = model.findIndex(([k]) => k === o.k);
      if (o.t === 'set') {
        if (at >= 0) model[at] = [o.k, o.v];
        else {
          if (model.length >= max) model = eviction === 'all' ? [] : model.slice(1);
          model.push([o.k, o.v]);
        }
        c.set(o.k, o.v);
      } else if (o.t === 'get') {
        assert.equal(c.get(o.k), at >= 0 ? model[at]![1] : undefined);
      } else if (o.t === 'use') {
        assert.equal(c.use(o.k), at >= 0 ? model[at]![1] : undefined);
        if (at >= 0) model.push(...model.splice(at, 1));
      } else {
        assert.equal(c.delete(o.k), at >= 0);
        if (at >= 0) model.splice(at, 1);
      }
      assert.ok(c.size <= max, `${c.size} entries, max ${max}`);
      assert.deepEqual([...c.values()], model.map(([, v]) => v));
    }
    // a hit returns what was set, even on a full cache
    const k = 100 + max;
    c.set(k, -1);
    assert.equal(c.get(k), -1);
  }), { numRuns: 500 });
});
