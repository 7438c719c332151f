/**
 * The compact remote pod store against a Map of records as the model: random puts, changes and
 * deletes over a small address space (collisions, slot reuse, table growth and the backward-shift
 * delete all happen), IPv4 and IPv6, with what each write says it changed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ADDED, MOVED, RELABELED, RemoteStore, UNCHANGED, type RemoteEndpoint } from '../../../src/agent/remote-store.ts';

const ipOf = (i: number) => (i % 7 === 0 ? `fd00::${i.toString(16)}` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);

test('remote store: the same answers as a Map of records under random writes and deletes (fast-check)', () => {
  const op = fc.record({
    del: fc.boolean(),
    // a few thousand addresses: the table grows past its first size and probes collide
    i: fc.integer({ min: 0, max: 3000 }),
    identity: fc.integer({ min: 0, max: 3 }),
    host: fc.constantFrom('192.0.2.1', '192.0.2.2'),
    node: fc.option(fc.constantFrom('n1', 'n2'), { nil: undefined }),
    pod: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
  });
  fc.assert(fc.property(fc.array(op, { maxLength: 4000 }), (ops) => {
    const s = new RemoteStore();
    const model = new Map<string, RemoteEndpoint>();
    for (const o of ops) {
      const ip = ipOf(o.i);
      const had = model.get(ip);
      if (o.del) {
        assert.equal(s.delete(ip), had !== undefined);
        assert.equal(s.prevHost, had?.hostIp);
        model.delete(ip);
        continue;
      }
      const e: RemoteEndpoint = { ip, hostIp: o.host, identity: o.identity };
      if (o.node !== undefined) e.node = o.node;
      if (o.pod !== undefined) e.pod = o.pod;
      const what = s.set({ ...e });
      const want = !had ? ADDED : had.identity !== e.identity || had.hostIp !== e.hostIp ? MOVED : had.node === e.node && had.pod === e.pod ? UNCHANGED : RELABELED;
      assert.equal(what, want, `${ip} ${JSON.stringify(had)} -> ${JSON.stringify(e)}`);
      assert.equal(s.prevHost, had?.hostIp);
      model.set(ip, e);
    }
    assert.equal(s.size, model.size);
    for (let i = 0; i <= 3000; i++) {
      const ip = ipOf(i);
      assert.deepEqual(s.get(ip), model.get(ip), ip);
      // peek: the same fields in the store's one record (refilled per call)
      const p = s.peek(ip), m = model.get(ip);
      assert.equal(p === undefined, m === undefined, ip);
      if (p && m) for (const k of ['ip', 'hostIp', 'identity', 'node', 'namespace', 'pod'] as const) assert.equal(p[k], m[k], `${ip} ${k}`);
      assert.equal(s.at(ip), model.has(ip));
      if (model.has(ip)) { assert.equal(s.atHost, model.get(ip)!.hostIp); assert.equal(s.atIdentity, model.get(ip)!.identity); }
    }
    assert.deepEqual([...s.keys()].sort(), [...model.keys()].sort());
    assert.deepEqual([...s.values()].sort((a, b) => (a.ip < b.ip ? -1 : 1)), [...model.values()].sort((a, b) => (a.ip < b.ip ? -1 : 1)));
  }), { numRuns: 60 });
});

test('remote store: 30,000 pods added, half deleted, added again: every answer right, slots reused', () => {
  const s = new RemoteStore();
  const ip = (i: number) => `100.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  for (let i = 0; i < 30_000; i++) assert.equal(s.set({ ip: ip(i), hostIp: `100.64.0.${i % 200}`, identity: i, pod: `p${i}` }), ADDED);
  for (let i = 0; i < 30_000; i += 2) assert.equal(s.delete(ip(i)), true);
  assert.equal(s.size, 15_000);
  for (let i = 0; i < 30_000; i++) assert.equal(s.at(ip(i)), i % 2 === 1, ip(i));
  for (let i = 0; i < 30_000; i += 2) s.set({ ip: ip(i), hostIp: '100.64.1.1', identity: 7 });
  assert.equal(s.size, 30_000);
  assert.deepEqual(s.get(ip(4)), { ip: ip(4), hostIp: '100.64.1.1', identity: 7 });
  assert.deepEqual(s.get(ip(5)), { ip: ip(5), hostIp: '100.64.0.5', identity: 5, pod: 'p5' });
  assert.equal(s.get('100.95.0.1'), undefined);
});
