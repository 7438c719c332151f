/**
 * The answer fast path (wire.ts answerFacts without dns-packet) gives exactly what dns-packet
 * gives, for the answers it takes and for every mutation of them (then it either agrees or
 * hands the packet to dns-packet): a property test over generated answers and random byte flips,
 * truncations and trailing bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { answerFacts, answerFactsAt, slowAnswerFacts } from '../../../../src/proxy/dns/wire.ts';

const label = fc.stringMatching(/^[a-z0-9-]{1,20}$/);
const answerArb = fc.record({
  labels: fc.array(label, { minLength: 1, maxLength: 4 }),
  ips: fc.array(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.')), { maxLength: 6 }),
  ttls: fc.array(fc.nat(0xffffffff), { minLength: 6, maxLength: 6 }),
  rcode: fc.constantFrom('NOERROR', 'NXDOMAIN', 'SERVFAIL', 'REFUSED'),
  id: fc.nat(65535),
});

function encode(a: { labels: string[]; ips: string[]; ttls: number[]; rcode: string; id: number }): Buffer {
  const name = a.labels.join('.');
  return dnsPacket.encode({
    type: 'response', id: a.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, rcode: a.rcode,
    questions: [{ name, type: 'A' }],
    answers: a.ips.map((ip, i) => ({ name, type: 'A' as const, ttl: a.ttls[i]!, data: ip })),
  } as dnsPacket.Packet);
}

/** The answer as dnsmasq and most servers write it: each record's owner a pointer to the question (0xc00c), the shape the fast path takes (dns-packet does not compress). */
function compressed(a: { labels: string[]; ips: string[]; ttls: number[]; rcode: string; id: number }): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(a.id, 0);
  h[2] = 0x81;
  h[3] = 0x80 | ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'].indexOf(a.rcode);
  h.writeUInt16BE(1, 4);
  h.writeUInt16BE(a.ips.length, 6);
  const parts = [h];
  for (const l of a.labels) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'));
  parts.push(Buffer.from([0, 0, 1, 0, 1]));
  a.ips.forEach((ip, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt16BE(0xc00c, 0);
    r.writeUInt16BE(1, 2);
    r.writeUInt16BE(1, 4);
    r.writeUInt32BE(a.ttls[i]!, 6);
    r.writeUInt16BE(4, 10);
    ip.split('.').forEach((x, k) => { r[12 + k] = Number(x); });
    parts.push(r);
  });
  return Buffer.concat(parts);
}

test('fast path: compressed answers (the shape it takes) come out as dns-packet decodes them', () => {
  fc.assert(fc.property(answerArb, (a) => {
    const msg = compressed(a);
    assert.deepEqual(answerFacts(msg), slowAnswerFacts(msg));
  }), { numRuns: 500 });
});

test('fast path: the answers dns-packet encodes (A only) come out as dns-packet decodes them', () => {
  fc.assert(fc.property(answerArb, (a) => {
    const msg = encode(a);
    assert.deepEqual(answerFacts(msg), slowAnswerFacts(msg));
  }), { numRuns: 500 });
  const one = answerFacts(encode({ labels: ['api', 'example'], ips: ['198.51.100.7', '198.51.100.7', '203.0.113.1'], ttls: [30, 10, 60, 0, 0, 0], rcode: 'NOERROR', id: 9 }));
  assert.deepEqual(one, { id: 9, rcode: 0, ips: ['198.51.100.7', '203.0.113.1'], ttl: 10, cnames: [], rrtypes: ['A', 'A', 'A'] });
});

test('attacker: flipped bytes, truncations and trailing bytes: the fast path agrees with dns-packet or defers to it', () => {
  fc.assert(fc.property(answerArb, fc.array(fc.tuple(fc.nat(4095), fc.nat(255)), { maxLength: 4 }), fc.nat(200), fc.nat(8), (a, flips, cut, extra) => {
    const msg = Buffer.concat([encode(a), Buffer.alloc(extra, 0x41)]);
    for (const [at, v] of flips) msg[at % msg.length] = v;
    const m = msg.subarray(0, Math.max(0, msg.length - (cut % 40)));
    let slow: ReturnType<typeof slowAnswerFacts> | 'threw';
    try { slow = slowAnswerFacts(m); } catch { slow = 'threw'; }
    assert.notEqual(slow, 'threw', 'answerFacts never throws');
    assert.deepEqual(answerFacts(m), slow);
  }), { numRuns: 3000 });
});

test('shapes the fast path leaves to dns-packet: CNAME chains, AAAA, authority/additional records', () => {
  const cname = dnsPacket.encode({ type: 'response', id: 1, questions: [{ name: 'www.example', type: 'A' }], answers: [
    { name: 'www.example', type: 'CNAME', ttl: 5, data: 'edge.example' }, { name: 'edge.example', type: 'A', ttl: 7, data: '192.0.2.9' }] });
  assert.deepEqual(answerFacts(cname), { id: 1, rcode: 0, ips: ['192.0.2.9'], ttl: 7, cnames: ['edge.example.'], rrtypes: ['CNAME', 'A'] });
  const aaaa = dnsPacket.encode({ type: 'response', id: 2, questions: [{ name: 'v6.example', type: 'AAAA' }], answers: [{ name: 'v6.example', type: 'AAAA', ttl: 9, data: '2001:db8::1' }] });
  assert.deepEqual(answerFacts(aaaa)?.ips, ['2001:db8::1']);
  const withOpt = dnsPacket.encode({ type: 'response', id: 3, questions: [{ name: 'a.example', type: 'A' }], answers: [{ name: 'a.example', type: 'A', ttl: 3, data: '192.0.2.1' }],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: 0 } as dnsPacket.Answer] });
  assert.deepEqual(answerFacts(withOpt), slowAnswerFacts(withOpt));
  assert.deepEqual(answerFacts(withOpt)?.ips, ['192.0.2.1']);
});

test('attacker: answerFactsAt in an arena slot reads the answer alone (a cut answer whose neighbour holds its missing records)', () => {
  fc.assert(fc.property(answerArb, fc.boolean(), fc.nat(60), fc.nat(64), fc.uint8Array({ maxLength: 64 }), (a, packed, cut, before, after) => {
    const whole = packed ? compressed(a) : encode(a);
    const msg = whole.subarray(0, Math.max(0, whole.length - (cut % 40)));
    const arena = Buffer.concat([Buffer.alloc(before, 0xc0), msg, whole.subarray(msg.length), Buffer.from(after)]);
    assert.deepEqual(answerFactsAt(arena, before, msg.length), answerFacts(Buffer.from(msg)));
  }), { numRuns: 3000 });
  // one-record answers as servers write them (the owner a pointer to the question: the fast path)
  // share their frozen IP list: read only, the same list each time
  const q = Buffer.from([3, 0x61, 0x70, 0x69, 7, ...Buffer.from('example'), 0, 0, 1, 0, 1]);
  const one = Buffer.concat([Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]), q, Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 51, 100, 77])]);
  const f1 = answerFacts(one)!, f2 = answerFacts(Buffer.from(one))!;
  assert.deepEqual(f1, { id: 1, rcode: 0, ips: ['198.51.100.77'], ttl: 30, cnames: [], rrtypes: ['A'] });
  assert.deepEqual(f1, slowAnswerFacts(one));
  assert.equal(f1.ips, f2.ips);
  assert.ok(Object.isFrozen(f1.ips));
});
