import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { FlowRing, validateCapacity } from '../../../src/hubble/ring.ts';
import { FlowSchema, LostEventSource } from '../../../src/hubble/gen/flow/flow_pb.js';

const flow = (n: number) => create(FlowSchema, { uuid: String(n) });

test('capacity must be 2^n − 1 and at most 65535', () => {
  for (const ok of [1, 3, 7, 4095, 65535]) assert.doesNotThrow(() => validateCapacity(ok));
  for (const bad of [0, 2, 4, 4096, 100, 131071, -1, 1.5]) assert.throws(() => validateCapacity(bad), /one less than an integer power of two/);
  assert.equal(new FlowRing().capacity, 4095);
});

test('length grows to capacity; oldest/end track the write counter', () => {
  const r = new FlowRing(7);
  for (let i = 0; i < 5; i++) r.pushFlow(flow(i), i);
  assert.equal(r.length, 5);
  assert.equal(r.oldest(), 0);
  for (let i = 5; i < 20; i++) r.pushFlow(flow(i), i);
  assert.equal(r.length, 7);
  assert.equal(r.written, 20);
  assert.equal(r.oldest(), 13);
  assert.equal(r.end(), 20);
  const e = r.at(13);
  assert.equal(e?.kind === 'flow' && e.flow.uuid, '13');
  assert.equal(r.at(12), undefined);
  assert.equal(r.timeAt(19), 19);
});

test('reading an overwritten position yields one HUBBLE_RING_BUFFER LostEvent and resumes at the oldest', () => {
  const r = new FlowRing(3);
  for (let i = 0; i < 10; i++) r.pushFlow(flow(i), i);
  const lost: number[] = [];
  r.onLost((_s, n) => lost.push(n));
  const x = r.read(2);
  assert.equal(x.kind, 'overwritten');
  if (x.kind !== 'overwritten') return;
  assert.equal(x.lost.source, LostEventSource.HUBBLE_RING_BUFFER);
  assert.equal(x.lost.numEventsLost, 5n);
  assert.equal(x.next, 7);
  assert.deepEqual(lost, [5]);
  const y = r.read(7);
  assert.equal(y.kind === 'entry' && y.entry.kind === 'flow' && y.entry.flow.uuid, '7');
  assert.equal(r.read(10).kind, 'eof');
});

test('reportLost stores a LostEvent in order and counts it', () => {
  const r = new FlowRing(7);
  r.pushFlow(flow(0), 0);
  r.reportLost(LostEventSource.PERF_EVENT_RING_BUFFER, 42, { cpu: 3 });
  r.reportLost(LostEventSource.PERF_EVENT_RING_BUFFER, 0);
  assert.equal(r.written, 2);
  const e = r.at(1);
  assert.ok(e?.kind === 'lost');
  if (e?.kind !== 'lost') return;
  assert.equal(e.lost.numEventsLost, 42n);
  assert.equal(e.lost.cpu, 3);
  assert.equal(r.lostTotals.get(LostEventSource.PERF_EVENT_RING_BUFFER), 42);
});

test('waitFor resolves on the next write, or on abort', async () => {
  const r = new FlowRing(7);
  let woke = false;
  const p = r.waitFor(0).then(() => (woke = true));
  await new Promise((res) => setImmediate(res));
  assert.equal(woke, false);
  r.pushFlow(flow(0), 0);
  await p;
  assert.equal(woke, true);
  await r.waitFor(0); // already written: immediate
  const ac = new AbortController();
  const q = r.waitFor(5, ac.signal);
  ac.abort();
  await q;
});

test('compact flows: one object per position, refilled each time round; readers get a new Flow each read', () => {
  const r = new FlowRing(3);
  const owner = {};
  let made = 0;
  class C { readonly kind = 'compact' as const; readonly owner = owner; n = 0; toFlow() { return flow(this.n); } }
  const make = () => { made++; return new C(); };
  const held: C[] = [];
  for (let i = 0; i < 12; i++) {
    const c = r.compactSlot(owner, make);
    c.n = i;
    held.push(c);
    r.pushCompact(c, 100 + i);
    // a datapath flow between: its position keeps the compact object for the next time round
    if (i === 5) r.pushFlow(flow(-1), 100 + i);
  }
  assert.equal(made, 4, 'capacity + 1 objects in all');
  assert.equal(held[0], held[4]);
  assert.equal(r.kindAt(r.end() - 1), 'flow');
  const e = r.at(r.end() - 1), again = r.at(r.end() - 1);
  assert.ok(e?.kind === 'flow' && again?.kind === 'flow');
  assert.equal(e.flow.uuid, '11');
  assert.equal(e.timeMs, 111);
  assert.notEqual(e.flow, again.flow);
  const read = r.read(r.end() - 2);
  assert.ok(read.kind === 'entry' && read.entry.kind === 'flow' && read.entry.flow.uuid === '10');
  // another builder's object at a position is not handed to this one
  const other = {};
  const o = r.compactSlot(other, () => ({ kind: 'compact' as const, owner: other, toFlow: () => flow(99) }));
  assert.equal(o.owner, other);
  r.reportLost(LostEventSource.OBSERVER_EVENTS_QUEUE, 1);
  assert.equal(r.kindAt(r.end() - 1), 'lost');
  assert.equal(r.kindAt(r.end()), undefined);
});
