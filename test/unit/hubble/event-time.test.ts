// The kernel reader's events without a BigInt or an object per event (codec.ts decodeEventInto,
// flow.ts eventWallTime) against the computation they replace: every field of one reused event
// equal to a decode of its own, its time as numbers equal to the BigInt sum, and the flows built
// from it equal (deepEqual and protobuf bytes) to flows built from plain events by BigInt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { toBinary } from '@bufbuild/protobuf';
import * as C from '../../../src/datapath/linux/codec.ts';
import { copyEvent, type DatapathEvent } from '../../../src/datapath/types.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { FlowSchema } from '../../../src/hubble/gen/flow/flow_pb.js';
import { resolver, T0 } from './fixtures.ts';

const MONO_MAX = 2n ** 64n - 1n;

const event = fc.record({
  type: fc.constantFrom(1, 4, 5), subType: fc.integer({ min: 0, max: 200 }), endpointId: fc.constantFrom(0, 101, 102, 103), ifindex: fc.constantFrom(0, 7, 9),
  srcIp: fc.constantFrom('10.244.1.5', '10.244.1.6', '10.244.1.7', '198.51.100.10'), dstIp: fc.constantFrom('10.244.1.5', '10.244.1.6', '1.1.1.1'),
  srcIdentity: fc.constantFrom(0, 2, 12345, 23456, 16777217), dstIdentity: fc.constantFrom(0, 2, 12345, 23456),
  proto: fc.constantFrom(1, 6, 17, 132), srcPort: fc.integer({ min: 0, max: 65535 }), dstPort: fc.constantFrom(53, 80, 8080),
  tcpFlags: fc.integer({ min: 0, max: 255 }), icmpType: fc.integer({ min: 0, max: 140 }), icmpCode: fc.integer({ min: 0, max: 16 }),
  ctReason: fc.integer({ min: 0, max: 4 }), direction: fc.constantFrom('ingress' as const, 'egress' as const, 'unknown' as const),
  verdict: fc.constantFrom(0, -133, -181, 15001), matchType: fc.integer({ min: 0, max: 6 }), authType: fc.integer({ min: 0, max: 2 }), audited: fc.boolean(),
  length: fc.integer({ min: 0, max: 65535 }),
  // the record's CLOCK_MONOTONIC: near boot, past 2^53 ns (104 days), anywhere in 64 bits
  mono: fc.oneof(fc.bigInt({ min: 0n, max: 10n ** 13n }), fc.bigInt({ min: 2n ** 53n - 10n ** 10n, max: 2n ** 53n + 10n ** 10n }), fc.bigInt({ min: 0n, max: MONO_MAX })),
});

/** the record and the event the old decoder made of it (timeNs = the record's time + offset, one BigInt) */
function record(e: typeof event extends fc.Arbitrary<infer T> ? T : never, offset: bigint): { b: Buffer; want: DatapathEvent } {
  const { mono, audited, ...rest } = e;
  const icmp = e.proto === 1;
  const want: DatapathEvent = { ...rest, timeNs: mono + offset, ipVersion: 4, srcPort: icmp ? 0 : e.srcPort, dstPort: icmp ? 0 : e.dstPort, etherType: 0x0800, ...(audited ? { audited: true } : {}) };
  const b = C.encodeEvent({ ...want, timeNs: 0n });
  b.writeBigUInt64LE(mono, 0);
  return { b, want };
}

test('property: one reused event decodes every record as a decode of its own did, its time as exact numbers', () => {
  const offset = fc.oneof(fc.constant(0n), fc.constant(1000n), fc.bigInt({ min: 0n, max: 2n ** 61n }));
  fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 12 }), offset, (list, off) => {
    const ev = new C.DecodedEvent();
    for (const e of list) {
      const { b, want } = record(e, off);
      C.decodeEventInto(ev, b, 0, off);
      assert.deepEqual(copyEvent(ev), want);
      assert.equal(BigInt(ev.timeSec) * 1_000_000_000n + BigInt(ev.timeNsec), want.timeNs);
      assert.ok(Number.isInteger(ev.timeSec) && Number.isInteger(ev.timeNsec) && ev.timeNsec >= 0 && ev.timeNsec < 1e9);
      assert.deepEqual(C.decodeEvent(b, 0, off), want);
    }
  }), { numRuns: 400 });
});

test('property: flows from the reused event (time as numbers) equal flows from plain events (time by BigInt)', () => {
  // monotonic times (the builder adds its own offset) and wall-clock ones (the reader's offset added)
  const offset = fc.constantFrom(0n, T0 - 5_000_000_000n, 1_000_000_000_000_000_000n - 3_000_000_000n);
  fc.assert(fc.property(fc.array(event.map((e) => ({ ...e, mono: e.mono % 10n ** 14n })), { minLength: 1, maxLength: 12 }), offset, (list, off) => {
    let n = 0, m = 0;
    const fast = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => `id-${n++}` });
    const slow = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => `id-${m++}` });
    const ev = new C.DecodedEvent();
    for (const e of list) {
      const { b, want } = record(e, off);
      const a = fast(C.decodeEventInto(ev, b, 0, off));
      const z = slow(want);
      assert.deepEqual(a, z);
      if (a && z) assert.deepEqual(toBinary(FlowSchema, a), toBinary(FlowSchema, z));
    }
  }), { numRuns: 300 });
});

test('an event without numbers, or at time 0, is timed as before', () => {
  const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'x' });
  const base: DatapathEvent = {
    type: 4, subType: 0, timeNs: T0, endpointId: 102, ifindex: 7, srcIdentity: 12345, dstIdentity: 23456, ipVersion: 4, srcIp: '10.244.1.5',
    dstIp: '10.244.1.6', proto: 6, srcPort: 1, dstPort: 2, tcpFlags: 2, icmpType: 0, icmpCode: 0, ctReason: 1, direction: 'ingress', verdict: 0, matchType: 0, authType: 0, length: 60,
  };
  assert.deepEqual(build(base)!.time, { $typeName: 'google.protobuf.Timestamp', seconds: T0 / 1_000_000_000n, nanos: Number(T0 % 1_000_000_000n) });
  const before = BigInt(Date.now()) / 1000n;
  const now = build({ ...base, timeNs: 0n, timeSec: 0, timeNsec: 0 })!.time!;
  assert.ok(now.seconds >= before && now.seconds <= BigInt(Date.now()) / 1000n + 1n, 'time 0 is now');
});
