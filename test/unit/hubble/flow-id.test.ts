import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlowIdSource, createFlowIds } from '../../../src/hubble/flow-id.ts';

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('flow ids are shaped as a random version-4 UUID, as Hubble\'s are', () => {
  const next = createFlowIds();
  for (let i = 0; i < 1000; i++) assert.match(next(), V4);
});

test('flow ids do not repeat within a generator, and two generators do not share a prefix', () => {
  const a = createFlowIds(), b = createFlowIds();
  const seen = new Set<string>();
  for (let i = 0; i < 100_000; i++) seen.add(a());
  assert.equal(seen.size, 100_000);
  assert.notEqual(a().slice(0, 24), b().slice(0, 24));
});

test('advance() draws the next id as next() does, left in head and low (its string not made): one sequence, no id twice', () => {
  const src = createFlowIdSource();
  const seen = new Set<string>();
  for (let i = 0; i < 10_000; i++) {
    let id: string;
    if (i % 3 === 0) { src.advance(); id = src.head + src.low.toString(16); } else id = src.next();
    assert.equal(id, src.head + src.low.toString(16));
    assert.match(id, V4);
    seen.add(id);
  }
  assert.equal(seen.size, 10_000);
});
