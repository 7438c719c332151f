/**
 * parseQuery interns questions by their bytes (wire.ts): a question seen before is not parsed
 * into a new name. These properties hold it to the parse it replaced (a copy of that parse
 * below, the reference) on generated queries and on attacker's mutations of them (flipped
 * bytes, compression pointers, truncations, trailing bytes, oversized), asked in any order
 * and again, so an interned question can never answer for different bytes; and questionReply
 * (what a forwarded query's SERVFAIL is made of, no copy of the query kept) is errorReply's bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { errorReply, parseQuery, queryAt, qtypeName, questionReply, RCODE, MAX_QUERY_BYTES } from '../../../../src/proxy/dns/wire.ts';

/** The parse before questions were interned (b89b236's wire.ts), qtypes by number. */
function reference(msg: Buffer): { ok: true; id: number; name: string; qtype: number } | { ok: false; reason: string; id?: number } {
  if (msg.length < 12) return { ok: false, reason: 'short' };
  const id = msg.readUInt16BE(0);
  if (msg.length > MAX_QUERY_BYTES) return { ok: false, reason: 'oversized', id };
  if (msg[2]! & 0x80) return { ok: false, reason: 'not-a-query', id };
  if (msg.readUInt16BE(4) !== 1) return { ok: false, reason: 'no-question', id };
  if (msg.readUInt16BE(6) !== 0 || msg.readUInt16BE(8) !== 0) return { ok: false, reason: 'malformed', id };
  let o = 12;
  let name = '';
  for (;;) {
    if (o >= msg.length) return { ok: false, reason: 'malformed', id };
    const len = msg[o]!;
    if (len === 0) { o++; break; }
    if (len > 63) return { ok: false, reason: 'malformed', id };
    if (o + 1 + len > msg.length) return { ok: false, reason: 'malformed', id };
    for (let i = o + 1; i <= o + len; i++) {
      let c = msg[i]!;
      if (c >= 65 && c <= 90) c += 32;
      name += c === 46 || c <= 32 || c >= 127 ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
    }
    name += '.';
    o += len + 1;
    if (name.length > 255) return { ok: false, reason: 'malformed', id };
  }
  if (o + 4 > msg.length) return { ok: false, reason: 'malformed', id };
  return { ok: true, id, name: name === '' ? '.' : name, qtype: msg.readUInt16BE(o) };
}

function same(msg: Buffer): void {
  const got = parseQuery(msg);
  const want = reference(msg);
  if (!want.ok) {
    assert.deepEqual(got, want);
    return;
  }
  assert.ok(got.ok, `accepted: ${msg.toString('hex')}`);
  assert.equal(got.id, want.id);
  assert.equal(got.name, want.name);
  assert.equal(got.qtypes.length, 1);
  assert.deepEqual(got.qtypes, [qtypeName(want.qtype)]);
  // the question is the query's own bytes
  assert.ok(got.question.bytes.equals(msg.subarray(12, 12 + got.question.bytes.length)));
  // a SERVFAIL from what the proxy keeps is the one errorReply makes of the whole query
  for (const rcode of [RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NXDOMAIN]) {
    assert.ok(questionReply(got.id, msg[2]!, got.question, rcode).equals(errorReply(msg, rcode)!));
  }
}

// names from a few labels, mixed case and odd bytes: many queries share a question, some differ in one byte
const label = fc.oneof(fc.constantFrom('api', 'API', 'Api', 'q1', 'q2', 'bench', 'lab', 'x'), fc.uint8Array({ minLength: 1, maxLength: 63 }).map((a) => Buffer.from(a).toString('latin1')));
const queryArb = fc.record({
  labels: fc.array(label, { minLength: 0, maxLength: 5 }),
  qtype: fc.constantFrom(1, 28, 5, 16, 255, 65, 4242),
  id: fc.nat(65535),
  flags: fc.nat(255),
  edns: fc.boolean(),
});
function encode(q: { labels: string[]; qtype: number; id: number; flags: number; edns: boolean }): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(q.id, 0);
  h[2] = q.flags & 0x7f;
  h.writeUInt16BE(1, 4);
  if (q.edns) h.writeUInt16BE(1, 10);
  const parts = [h];
  for (const l of q.labels) { const b = Buffer.from(l, 'latin1'); parts.push(Buffer.from([b.length]), b); }
  parts.push(Buffer.from([0, q.qtype >> 8, q.qtype & 255, 0, 1]));
  if (q.edns) parts.push(Buffer.from([0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]));
  return Buffer.concat(parts);
}

test('parseQuery: interned questions give exactly the reference parse, in any order and again', () => {
  fc.assert(fc.property(fc.array(queryArb, { minLength: 1, maxLength: 30 }), (qs) => {
    const msgs = qs.map(encode);
    for (const m of msgs) same(m);
    for (const m of [...msgs].reverse()) same(m);
  }), { numRuns: 400 });
});

test('attacker: after its question is interned, a mutated query (flips, pointers, cuts, trailing bytes, oversized) parses as the reference says', () => {
  fc.assert(fc.property(queryArb, fc.array(fc.tuple(fc.nat(600), fc.nat(255)), { maxLength: 4 }), fc.nat(40), fc.nat(600), fc.boolean(), (q, flips, cut, extra, pointer) => {
    const good = encode(q);
    same(good); // interned
    let m = Buffer.concat([good, Buffer.alloc(extra % 7 === 0 ? extra : 0, 0x41)]);
    if (pointer) m = Buffer.concat([m.subarray(0, 12), Buffer.from([0xc0, 12]), m.subarray(12)]);
    for (const [at, v] of flips) m[at % m.length] = v;
    same(m.subarray(0, Math.max(0, m.length - (cut % 20))));
    same(good); // still the same answer for the good one
  }), { numRuns: 3000 });
});

test('parseQuery: the same question in another case or of another type is its own entry', () => {
  const a = encode({ labels: ['API', 'example'], qtype: 1, id: 1, flags: 1, edns: false });
  const b = encode({ labels: ['api', 'example'], qtype: 1, id: 2, flags: 1, edns: false });
  const c = encode({ labels: ['api', 'example'], qtype: 28, id: 3, flags: 1, edns: false });
  const pa = parseQuery(a), pb = parseQuery(b), pc = parseQuery(c), pa2 = parseQuery(a);
  assert.ok(pa.ok && pb.ok && pc.ok && pa2.ok);
  assert.equal(pa.name, 'api.example.');
  assert.equal(pb.name, 'api.example.');
  assert.notEqual(pa.question, pb.question, 'different bytes, different entries');
  assert.equal(pa2.question, pa.question, 'the same bytes: the interned entry');
  assert.deepEqual([pa.qtypes, pc.qtypes], [['A'], ['AAAA']]);
  assert.ok(Object.isFrozen(pa.qtypes), 'shared lists are read only');
});

/**
 * queryAt reads a query where it lies in a receive arena, between other datagrams' bytes: it must
 * see exactly its own `len` bytes. A query cut short whose neighbour's bytes would complete it,
 * a neighbour that starts with what looks like the rest of a name: parsed as the query alone.
 */
test('attacker: queryAt in an arena slot parses the datagram alone, never its neighbours\' bytes', () => {
  fc.assert(fc.property(queryArb, fc.nat(40), fc.nat(64), fc.uint8Array({ maxLength: 64 }), (q, cut, before, after) => {
    const good = encode(q);
    const msg = good.subarray(0, Math.max(0, good.length - (cut % 24)));
    // the neighbour after the slot starts with the bytes the cut took away, then anything
    const arena = Buffer.concat([Buffer.alloc(before, 0x03), msg, good.subarray(msg.length), Buffer.from(after)]);
    const got = queryAt(arena, before, msg.length);
    const want = parseQuery(Buffer.from(msg));
    if (!want.ok) assert.equal(got, want.reason);
    else {
      assert.ok(typeof got !== 'string', `accepted alone: ${msg.toString('hex')}`);
      assert.equal(got, want.question, 'the same interned question as the copy\'s parse');
    }
  }), { numRuns: 3000 });
  // a lone header whose question follows in the next slot is malformed, not a query for that name
  const good = encode({ labels: ['api', 'example'], qtype: 1, id: 7, flags: 1, edns: false });
  assert.equal(queryAt(good, 0, 12), 'malformed');
  assert.equal(queryAt(good, 0, good.length - 1), 'malformed');
  assert.equal(queryAt(good, 0, 11), 'short');
});
