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
import { answerFacts, slowAnswerFacts } from '../../../../src/proxy/dns/wire.ts';

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
