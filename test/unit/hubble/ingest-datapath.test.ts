import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { createHubble, type EndpointResolver } from '../../../src/hubble/index.ts';
import { FlowSchema, PolicySchema, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { create } from '@bufbuild/protobuf';
import { ev, resolver, T0 } from './fixtures.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';

/** what readers get at each readable position */
function ringFlows(h: ReturnType<typeof createHubble>): Flow[] {
  const out: Flow[] = [];
  for (let p = h.ring.oldest(); p < h.ring.end(); p++) {
    const e = h.ring.at(p);
    if (e?.kind === 'flow') out.push(e.flow);
  }
  return out;
}

const POLICY = create(PolicySchema, { name: 'allow-api', namespace: 'shop', kind: 'CiliumNetworkPolicy', revision: 3n, labels: ['k8s:io.cilium.k8s.policy.name=allow-api'] });
// every optional lookup the agent's resolver has: DNS names, services, interface names, policies
const full: EndpointResolver = {
  ...resolver,
  serviceFor: (ip, port) => (ip === '10.96.0.10' && port === 53 ? { name: 'kube-dns', namespace: 'kube-system' } : undefined),
  interfaceName: (i) => (i === 7 ? 'lxc0001' : undefined),
  policiesFor: (e) => (e.type === 5 ? (e.verdict < 0 ? { ingressDeniedBy: [POLICY] } : { egressAllowedBy: [POLICY] }) : undefined),
};

const hubbleOf = (capacity = 7) => createHubble({ nodeName: 'node1', resolver: full, socketPath: '/nonexistent/hubble.sock', version: 'test', startedAt: 0, capacity });

function check(events: DatapathEvent[], capacity: number): void {
  const h = hubbleOf(capacity);
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  for (const e of events) h.ingest(e);
  const got = ringFlows(h);
  const kept = seen.slice(-capacity);
  assert.equal(got.length, kept.length);
  kept.forEach((f, i) => {
    assert.deepEqual(got[i], f, `flow ${i}`);
    assert.deepEqual(toBinary(FlowSchema, got[i]!), toBinary(FlowSchema, f));
  });
}

test('ingest: readers get the datapath flow the subscribers saw, for every kind of event', () => {
  const events = [
    ev(),
    ev({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, srcIdentity: 23456, dstIdentity: 12345, tcpFlags: 18, ctReason: 3, endpointId: 101 }),
    ev({ type: 1, subType: 133, endpointId: 101, dstIp: '1.1.1.1', dstIdentity: 2, proto: 17, dstPort: 53, ctReason: 0 }),
    ev({ type: 1, subType: 139, endpointId: 101, srcIp: '', dstIp: '', proto: 0, srcPort: 0, dstPort: 0, ctReason: 0 }),
    ev({ type: 5, verdict: 0, matchType: 2, direction: 'egress' }),
    ev({ type: 5, verdict: -133, direction: 'ingress' }),
    ev({ type: 5, verdict: 15001, matchType: 2, direction: 'egress', audited: true }),
    ev({ proto: 1, icmpType: 3, icmpCode: 3 }),
    ev({ proto: 58, ipVersion: 6, srcIp: 'fd00::a', dstIp: 'fd00::b', icmpType: 128 }),
    ev({ proto: 132 }),
    ev({ proto: 17, dstIp: '10.96.0.10', dstPort: 53, srcIp: '198.51.100.10', srcIdentity: 16777217 }),
    ev({ timeNs: process.hrtime.bigint(), ifindex: 0 }),
  ];
  check(events, 15);
  // a ring smaller than the events: positions refilled in place, by datapath and other entries alike
  check(events, 3);
});

test('ingest: a datapath flow in the ring is kept compactly, and each read is a new Flow', () => {
  const h = hubbleOf();
  h.ingest(ev());
  const slot = (h.ring as unknown as { slots: unknown[] }).slots[0] as { kind: string };
  assert.equal(slot.kind, 'compact');
  const a = h.ring.at(0), b = h.ring.at(0);
  assert.ok(a?.kind === 'flow' && b?.kind === 'flow');
  assert.notEqual(a.flow, b.flow);
  assert.deepEqual(a.flow, b.flow);
});

test('ingest: datapath, L7 and lost entries share the ring; each position reads as what was written there', () => {
  const h = hubbleOf(3);
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  for (let i = 0; i < 10; i++) {
    h.ingest(ev({ srcPort: 40000 + i, timeNs: T0 + BigInt(i) * 1_000_000n }));
    h.ingestRecord({
      l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: Number(T0 / 1_000_000n) + i,
      client: { ip: '10.244.1.5', port: 40000 + i, identity: 12345 }, server: { ip: '10.244.1.6', port: 8080, identity: 23456 },
      endpointId: 101, method: 'GET', url: 'http://api/v1', host: 'api', path: '/v1', protocol: 'HTTP/1.1', headers: [], code: 0, latencyNs: 0,
    });
    if (i === 7) h.reportLost(1, 2);
  }
  const entries = [];
  for (let p = h.ring.oldest(); p < h.ring.end(); p++) entries.push(h.ring.at(p));
  assert.deepEqual(entries.map((e) => e?.kind), ['flow', 'flow', 'flow']);
  assert.deepEqual(entries.map((e) => (e?.kind === 'flow' ? e.flow : undefined)), seen.slice(-3));
});

/**
 * ingestBorrowed against ingest over the same events: what a borrowing subscriber and the caller
 * see during each call (deepEqual, protobuf bytes) and what readers get from the ring are the
 * flows ingest makes; with a subscriber that keeps flows, every flow is its own object again.
 */
function checkBorrowed(events: DatapathEvent[], capacity: number): void {
  const fresh = hubbleOf(capacity), borrowing = hubbleOf(capacity);
  // each Hubble's ids have a random head of their own: compared by their counter part
  const norm = (f: Flow): Flow => ({ ...f, uuid: f.uuid.slice(24) });
  const want: Flow[] = [];
  fresh.onFlow((f) => want.push(norm(f)));
  const saw: Flow[] = [], sawBytes: Uint8Array[] = [];
  borrowing.onFlow((f) => { saw.push(structuredClone(norm(f))); sawBytes.push(toBinary(FlowSchema, norm(f))); }, { borrows: true });
  const returned: (Flow | undefined)[] = [], returnedCopies: Flow[] = [];
  for (const e of events) {
    const a = fresh.ingest(e);
    const b = borrowing.ingestBorrowed(e);
    assert.equal(b === undefined, a === undefined);
    returned.push(b);
    if (b) returnedCopies.push(structuredClone(norm(b)));
  }
  assert.equal(saw.length, want.length);
  want.forEach((f, i) => {
    assert.deepEqual(saw[i], f, `flow ${i}`);
    assert.deepEqual(sawBytes[i], toBinary(FlowSchema, f));
  });
  assert.deepEqual(returnedCopies, want);
  assert.deepEqual(ringFlows(borrowing).map(norm), ringFlows(fresh).map(norm));
  // the fast path was taken: after the first, every flow is the one scratch Flow
  const flows = returned.filter((f) => f);
  for (const f of flows) assert.equal(f, flows[0]);
}

/** The event with its time also as numbers, as the kernel reader's decoder gives it. */
const withNumbers = (e: DatapathEvent): DatapathEvent => ({ ...e, timeSec: Number(e.timeNs / 1_000_000_000n), timeNsec: Number(e.timeNs % 1_000_000_000n) });

test('ingestBorrowed: subscribers and readers get what ingest gives them, for every kind of event', () => {
  const events = [
    ev(),
    ev({ proto: 17, dstIp: '10.96.0.10', dstPort: 53, srcIp: '198.51.100.10', srcIdentity: 16777217 }),
    ev({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, tcpFlags: 18, ctReason: 3, endpointId: 101 }),
    ev({ type: 1, subType: 139, endpointId: 101, srcIp: '', dstIp: '', proto: 0, srcPort: 0, dstPort: 0, ctReason: 0 }),
    ev({ type: 5, verdict: -133, direction: 'ingress' }),
    ev({ type: 5, verdict: 15001, matchType: 2, direction: 'egress', audited: true }),
    ev({ type: 99 }),
    ev({ proto: 1, icmpType: 3, icmpCode: 3 }),
    ev({ proto: 58, ipVersion: 6, srcIp: 'fd00::a', dstIp: 'fd00::b', icmpType: 128 }),
    ev({ proto: 132, ifindex: 0 }),
    ev({ tcpFlags: 17 }),
  ];
  checkBorrowed(events, 15);
  checkBorrowed(events.map(withNumbers), 3);
});

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('ingestBorrowed: a borrowed flow\'s uuid (made when read) is the same read twice, in the call, in its bytes and from the ring, and no two flows share one', () => {
  const h = hubbleOf(15);
  const inCall: string[] = [];
  h.onFlow((f) => {
    const a = f.uuid;
    assert.equal(f.uuid, a, 'the same flow read twice');
    assert.equal(fromBinary(FlowSchema, toBinary(FlowSchema, f)).uuid, a);
    inCall.push(a);
  }, { borrows: true });
  const returned: string[] = [];
  const objects = new Set<Flow>();
  for (let i = 0; i < 12; i++) {
    const f = h.ingestBorrowed(ev({ srcPort: 40000 + i, tcpFlags: i & 1 ? 16 : 2 }));
    assert.ok(f);
    objects.add(f);
    returned.push(f.uuid);
  }
  assert.equal(objects.size, 1, 'one scratch Flow');
  for (const u of inCall) assert.match(u, V4);
  assert.equal(new Set(inCall).size, 12, 'two flows never share a uuid');
  assert.deepEqual(returned, inCall, 'the caller reads the uuid the subscribers read');
  assert.deepEqual(ringFlows(h).map((f) => f.uuid), inCall, 'the ring gives back the same uuids');
  assert.deepEqual(ringFlows(h).map((f) => f.uuid), inCall, 'read twice from the ring');
});

test('ingestBorrowed: a subscriber that keeps flows gets flows of their own', () => {
  const h = hubbleOf();
  const kept: Flow[] = [], bytes: Uint8Array[] = [];
  const off = h.onFlow((f) => { kept.push(f); bytes.push(toBinary(FlowSchema, f)); });
  h.onFlow(() => {}, { borrows: true });
  const a = h.ingestBorrowed(ev());
  const b = h.ingestBorrowed(ev({ proto: 17, srcPort: 5353 }));
  assert.notEqual(a, b);
  assert.equal(kept.length, 2);
  kept.forEach((f, i) => assert.deepEqual(toBinary(FlowSchema, f), bytes[i]));
  // without it, the flows are borrowed again
  off();
  const c = h.ingestBorrowed(ev()), d = h.ingestBorrowed(ev({ tcpFlags: 18 }));
  assert.equal(c, d);
  assert.deepEqual(toBinary(FlowSchema, kept[0]!), bytes[0]);
});

test('property: a compact datapath flow reads back equal to the built one', () => {
  const event = fc.record({
    type: fc.constantFrom(1, 4, 5), subType: fc.integer({ min: 0, max: 200 }), dt: fc.bigInt({ min: 0n, max: 10_000_000_000n }),
    endpointId: fc.constantFrom(0, 101, 102, 103), ifindex: fc.constantFrom(0, 7, 9),
    src: fc.constantFrom('10.244.1.5', '10.244.1.6', '10.244.1.7', '198.51.100.10', '10.0.9.9', ''), dst: fc.constantFrom('10.244.1.5', '10.244.1.6', '10.96.0.10', '1.1.1.1', ''),
    srcIdentity: fc.constantFrom(0, 2, 12345, 23456, 16777217, 777), dstIdentity: fc.constantFrom(0, 2, 12345, 23456, 16777217),
    proto: fc.constantFrom(0, 1, 6, 17, 58, 132), srcPort: fc.integer({ min: 0, max: 65535 }), dstPort: fc.constantFrom(53, 80, 8080, 0),
    tcpFlags: fc.integer({ min: 0, max: 255 }), icmpType: fc.integer({ min: 0, max: 140 }), icmpCode: fc.integer({ min: 0, max: 16 }),
    ctReason: fc.integer({ min: 0, max: 4 }), direction: fc.constantFrom('ingress' as const, 'egress' as const, 'unknown' as const),
    verdict: fc.constantFrom(0, -133, -181, 15001), matchType: fc.integer({ min: 0, max: 6 }), authType: fc.integer({ min: 0, max: 2 }), audited: fc.boolean(),
  });
  fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 20 }), fc.constantFrom(1, 3, 7, 31), (list, capacity) => {
    check(list.map((e) => ev({
      type: e.type, subType: e.subType, timeNs: T0 + e.dt, endpointId: e.endpointId, ifindex: e.ifindex, srcIp: e.src, dstIp: e.dst,
      ipVersion: 4, srcIdentity: e.srcIdentity, dstIdentity: e.dstIdentity, proto: e.proto, srcPort: e.srcPort, dstPort: e.dstPort, tcpFlags: e.tcpFlags,
      icmpType: e.icmpType, icmpCode: e.icmpCode, ctReason: e.ctReason, direction: e.direction, verdict: e.verdict, matchType: e.matchType,
      authType: e.authType, audited: e.audited,
    })), capacity);
  }), { numRuns: 300 });
});

test('property: ingestBorrowed equals ingest over random events (times as BigInt or numbers)', () => {
  const event = fc.record({
    type: fc.constantFrom(1, 4, 5, 9), subType: fc.integer({ min: 0, max: 200 }), dt: fc.bigInt({ min: 0n, max: 10_000_000_000n }), numbers: fc.boolean(),
    endpointId: fc.constantFrom(0, 101, 102, 103), ifindex: fc.constantFrom(0, 7, 9),
    src: fc.constantFrom('10.244.1.5', '10.244.1.6', '10.244.1.7', '198.51.100.10', '10.0.9.9', '10.96.0.10', ''), dst: fc.constantFrom('10.244.1.5', '10.244.1.6', '10.96.0.10', '1.1.1.1', ''),
    srcIdentity: fc.constantFrom(0, 2, 12345, 23456, 16777217, 777), dstIdentity: fc.constantFrom(0, 2, 12345, 23456, 16777217),
    proto: fc.constantFrom(0, 1, 6, 17, 58, 132), srcPort: fc.oneof(fc.constant(53), fc.integer({ min: 0, max: 65535 })), dstPort: fc.constantFrom(53, 80, 8080, 0),
    tcpFlags: fc.integer({ min: 0, max: 255 }), icmpType: fc.integer({ min: 0, max: 140 }), icmpCode: fc.integer({ min: 0, max: 16 }),
    ctReason: fc.integer({ min: 0, max: 4 }), direction: fc.constantFrom('ingress' as const, 'egress' as const, 'unknown' as const),
    verdict: fc.constantFrom(0, -133, -181, 15001), matchType: fc.integer({ min: 0, max: 6 }), authType: fc.integer({ min: 0, max: 2 }), audited: fc.boolean(),
  });
  fc.assert(fc.property(fc.array(event, { minLength: 1, maxLength: 25 }), fc.constantFrom(1, 3, 7, 31), (list, capacity) => {
    checkBorrowed(list.map((e) => {
      const x = ev({
        type: e.type, subType: e.subType, timeNs: T0 + e.dt, endpointId: e.endpointId, ifindex: e.ifindex, srcIp: e.src, dstIp: e.dst,
        ipVersion: 4, srcIdentity: e.srcIdentity, dstIdentity: e.dstIdentity, proto: e.proto, srcPort: e.srcPort, dstPort: e.dstPort, tcpFlags: e.tcpFlags,
        icmpType: e.icmpType, icmpCode: e.icmpCode, ctReason: e.ctReason, direction: e.direction, verdict: e.verdict, matchType: e.matchType,
        authType: e.authType, audited: e.audited,
      });
      return e.numbers ? withNumbers(x) : x;
    }), capacity);
  }), { numRuns: 300 });
});
