import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { fastCounter, fastCounterRemovers } from '../../../src/common/fast-counter.ts';

/** series of a scrape: `labels → value` (labels as `a=x,b=y`) */
async function scrape(r: Registry, name: string): Promise<Map<string, number>> {
  const m = r.getSingleMetric(name)!;
  const out = new Map<string, number>();
  for (const v of (await m.get()).values) out.set(Object.entries(v.labels).map(([k, x]) => `${k}=${x}`).join(','), v.value);
  return out;
}

test('a reused scratch array counts each series apart; the series keeps its own copy of the values', async () => {
  const r = new Registry();
  const c = fastCounter({ name: 't_total', help: 'h', labelNames: ['a', 'b'], registers: [r] });
  const v = ['', ''];
  v[0] = 'x'; v[1] = '1'; c.inc(v);
  v[1] = '2'; c.inc(v);
  v[0] = 'x'; v[1] = '1'; c.inc(v, 3);
  v[0] = 'y'; v[1] = '1'; c.inc(v);
  // a value equal to a joined pair must not collide with it (no string key joining the values)
  c.inc(['x\u00011', '']);
  assert.deepEqual(await scrape(r, 't_total'), new Map([['a=x,b=1', 4], ['a=x,b=2', 1], ['a=y,b=1', 1], ['a=x\u00011,b=', 1]]));
});

test('no labels, and a series created at zero', async () => {
  const r = new Registry();
  const none = fastCounter({ name: 'n_total', help: 'h', labelNames: [], registers: [r] });
  const zero = fastCounter({ name: 'z_total', help: 'h', labelNames: ['rule'], registers: [r] });
  zero.inc(['received'], 0);
  assert.deepEqual(await scrape(r, 'z_total'), new Map([['rule=received', 0]]));
  none.inc([]); none.inc([], 2);
  assert.deepEqual(await scrape(r, 'n_total'), new Map([['', 3]]));
});

test('removal drops exactly the series the predicate selects, and they count anew afterwards', async () => {
  const r = new Registry();
  const c = fastCounter({ name: 'p_total', help: 'h', labelNames: ['source', 'kind'], registers: [r] });
  c.inc(['ns/a', 'q']); c.inc(['ns/a', 'r']); c.inc(['ns/b', 'q']);
  const removed = fastCounterRemovers.get(r)!.get('p_total')!((l) => l.source === 'ns/a');
  assert.equal(removed, 2);
  assert.deepEqual(await scrape(r, 'p_total'), new Map([['source=ns/b,kind=q', 1]]));
  c.inc(['ns/a', 'q']);
  assert.deepEqual(await scrape(r, 'p_total'), new Map([['source=ns/b,kind=q', 1], ['source=ns/a,kind=q', 1]]));
});

test('property: counts equal a plain count of the same events, whatever the order and reuse', async () => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.tuple(fc.constantFrom('', 'a', 'b', 'a,b', '=', 'x y'), fc.constantFrom('', '1', '2', 'a'), fc.constantFrom('p', 'q')), { maxLength: 60 }),
    async (events) => {
      const r = new Registry();
      const c = fastCounter({ name: 'q_total', help: 'h', labelNames: ['a', 'b', 'c'], registers: [r] });
      const scratch = ['', '', ''];
      const want = new Map<string, number>();
      for (const e of events) {
        scratch[0] = e[0]; scratch[1] = e[1]; scratch[2] = e[2];
        c.inc(scratch);
        const k = `a=${e[0]},b=${e[1]},c=${e[2]}`;
        want.set(k, (want.get(k) ?? 0) + 1);
      }
      const got = await scrape(r, 'q_total');
      assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
    },
  ), { numRuns: 200 });
});

test('property: runs of one series, removals between them and values made anew count as a plain model does', async () => {
  const step = fc.oneof(
    // a series counted `times` in a row, its values sometimes strings of their own (equal, not the same)
    fc.record({ kind: fc.constant('inc' as const), a: fc.constantFrom('ns/a', 'ns/b', ''), b: fc.constantFrom('q', 'r'), times: fc.integer({ min: 1, max: 4 }), fresh: fc.boolean() }),
    fc.record({ kind: fc.constant('remove' as const), a: fc.constantFrom('ns/a', 'ns/b') }),
  );
  await fc.assert(fc.asyncProperty(fc.array(step, { maxLength: 40 }), async (steps) => {
    const r = new Registry();
    const c = fastCounter({ name: 'm_total', help: 'h', labelNames: ['source', 'kind'], registers: [r] });
    const remove = fastCounterRemovers.get(r)!.get('m_total')!;
    const scratch = ['', ''];
    const want = new Map<string, number>();
    for (const s of steps) {
      if (s.kind === 'remove') {
        const gone = remove((l) => l.source === s.a);
        const keys = [...want.keys()].filter((k) => k.startsWith(`source=${s.a},`));
        assert.equal(gone, keys.length);
        for (const k of keys) want.delete(k);
        continue;
      }
      for (let i = 0; i < s.times; i++) {
        scratch[0] = s.fresh ? [...s.a].join('') : s.a;
        scratch[1] = s.fresh ? `${s.b}` + '' : s.b;
        c.inc(scratch);
        const k = `source=${s.a},kind=${s.b}`;
        want.set(k, (want.get(k) ?? 0) + 1);
      }
    }
    const got = await scrape(r, 'm_total');
    assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
  }), { numRuns: 300 });
});

test('attacker: incAt with a hint that stood for another series, or for a removed one, counts where its values say', async () => {
  const step = fc.oneof(
    // a hint (one of three objects) reused with any values: it names no series by itself
    fc.record({ kind: fc.constant('inc' as const), hint: fc.integer({ min: 0, max: 2 }), a: fc.constantFrom('ns/a', 'ns/b', ''), b: fc.constantFrom('q', 'r', 'q,r'), fresh: fc.boolean() }),
    fc.record({ kind: fc.constant('remove' as const), a: fc.constantFrom('ns/a', 'ns/b') }),
  );
  await fc.assert(fc.asyncProperty(fc.array(step, { maxLength: 50 }), async (steps) => {
    const r = new Registry();
    const c = fastCounter({ name: 'h_total', help: 'h', labelNames: ['source', 'kind'], registers: [r] });
    const remove = fastCounterRemovers.get(r)!.get('h_total')!;
    const hints = [{}, {}, {}];
    const scratch = ['', ''];
    const want = new Map<string, number>();
    for (const s of steps) {
      if (s.kind === 'remove') {
        remove((l) => l.source === s.a);
        for (const k of [...want.keys()]) if (k.startsWith(`source=${s.a},`)) want.delete(k);
        continue;
      }
      scratch[0] = s.fresh ? [...s.a].join('') : s.a;
      scratch[1] = s.b;
      c.incAt(hints[s.hint]!, scratch);
      const k = `source=${s.a},kind=${s.b}`;
      want.set(k, (want.get(k) ?? 0) + 1);
    }
    const got = await scrape(r, 'h_total');
    assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
  }), { numRuns: 300 });
});

test('incAt: a series counted by its hint and by inc is one series', async () => {
  const r = new Registry();
  const c = fastCounter({ name: 'o_total', help: 'h', labelNames: ['a', 'b'], registers: [r] });
  const hint = {};
  c.incAt(hint, ['x', '1']); c.inc(['x', '1']); c.incAt(hint, ['x', '1'], 2);
  c.incAt(hint, ['x', '2']); c.incAt(hint, ['x', '1']);
  assert.deepEqual(await scrape(r, 'o_total'), new Map([['a=x,b=1', 5], ['a=x,b=2', 1]]));
});
