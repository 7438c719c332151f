// etcd's KV.Range read from its protobuf bytes (the listing path): keys, values and revisions as
// etcd sends them, fields it adds skipped, and a cut or malformed reply refused with a code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRangeResponse, encodeRangeRequest } from '../../../src/kvstore/etcd-range.ts';

const varint = (n: number): number[] => { const o: number[] = []; while (n >= 128) { o.push((n % 128) | 128); n = Math.floor(n / 128); } o.push(n); return o; };
const bytes = (field: number, b: Buffer | number[]): number[] => [(field << 3) | 2, ...varint(b.length), ...b];
const num = (field: number, n: number): number[] => [field << 3, ...varint(n)];
function kv(key: string, value: string, mod: number): number[] {
  return [...bytes(1, Buffer.from(key)), ...num(2, 5), ...num(3, mod), ...num(4, 1), ...bytes(5, Buffer.from(value)), ...num(6, 2 ** 40 + 3)];
}

test('RangeResponse: every key past the prefix, its value and mod_revision, in order; header revision, more, count; unknown fields skipped', () => {
  const header = [...num(1, 1), ...num(2, 2), ...num(3, 2 ** 33 + 7), ...num(4, 9)];
  const msg = Buffer.from([...bytes(1, header), ...bytes(2, kv('p/10.0.0.1', '{"a":1}', 100)), ...bytes(9, [1, 2, 3]), ...bytes(2, kv('p/10.0.0.2', 'ü', 2 ** 35)), ...num(3, 1), ...num(4, 3)]);
  const got: [string, string, number][] = [];
  const r = decodeRangeResponse(msg, 2, (rest, b, s, e, mod) => got.push([rest, b.toString('utf8', s, e), mod]));
  assert.deepEqual(got, [['10.0.0.1', '{"a":1}', 100], ['10.0.0.2', 'ü', 2 ** 35]]);
  assert.equal(r.revision, 2 ** 33 + 7);
  assert.equal(r.more, true);
  assert.equal(r.count, 3);
  assert.equal(r.lastKey?.toString(), 'p/10.0.0.2');
  const empty = decodeRangeResponse(Buffer.from(bytes(1, num(3, 5))), 2, () => assert.fail('no keys'));
  assert.deepEqual([empty.revision, empty.more, empty.lastKey], [5, false, undefined]);
});

test('RangeResponse without a visitor (the pipelined listing\'s first look): the header fields and the last key, the same as a full read', () => {
  const header = [...num(3, 41)];
  const msg = Buffer.from([...bytes(1, header), ...bytes(2, kv('p/10.0.0.1', 'x'.repeat(300), 7)), ...bytes(2, kv('p/10.0.0.20', 'y', 8)), ...num(3, 1), ...num(4, 9)]);
  const scan = decodeRangeResponse(msg, 2, undefined);
  const full = decodeRangeResponse(msg, 2, () => {});
  assert.deepEqual([scan.revision, scan.more, scan.count, scan.lastKey?.toString()], [41, true, 9, 'p/10.0.0.20']);
  assert.deepEqual(scan, full);
  // the last key is a copy: the page's buffer may be reused or freed once it is applied
  msg.fill(0);
  assert.equal(scan.lastKey?.toString(), 'p/10.0.0.20');
  // a last key-value without a key, or one shorter than the prefix, is refused as when read whole
  assert.throws(() => decodeRangeResponse(Buffer.from([...bytes(2, [...num(3, 1)])]), 2, undefined), /KVSTORE_PROTOCOL|malformed/);
  assert.throws(() => decodeRangeResponse(Buffer.from([...bytes(2, kv('p', 'v', 1))]), 2, undefined), /KVSTORE_PROTOCOL|malformed/);
  const small = Buffer.from([...bytes(1, header), ...bytes(2, kv('p/k', 'v', 1))]);
  for (let cut = 1; cut < small.length; cut++) {
    try { decodeRangeResponse(small.subarray(0, cut), 2, undefined); } catch (e) { assert.equal((e as { code?: string }).code, 'KVSTORE_PROTOCOL', `cut at ${cut}`); }
  }
});

test('RangeResponse cut short or malformed: KVSTORE_PROTOCOL, never a key read past the end', () => {
  const whole = Buffer.from([...bytes(1, num(3, 5)), ...bytes(2, kv('p/k', 'v', 1))]);
  for (let cut = 1; cut < whole.length; cut++) {
    const part = whole.subarray(0, cut);
    try {
      decodeRangeResponse(part, 2, (_r, b, s, e) => assert.ok(e <= part.length && s <= e && b === part));
    } catch (e) {
      assert.equal((e as { code?: string }).code, 'KVSTORE_PROTOCOL', `cut at ${cut}`);
    }
  }
  assert.throws(() => decodeRangeResponse(Buffer.from([...bytes(2, kv('p', 'v', 1))]), 2, () => {}), /KVSTORE_PROTOCOL|malformed/); // key shorter than the prefix
  assert.throws(() => decodeRangeResponse(Buffer.from([(2 << 3) | 3]), 0, () => {}), /KVSTORE_PROTOCOL|malformed/); // group wire type
  assert.throws(() => decodeRangeResponse(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), 0, () => {}), /KVSTORE_PROTOCOL|malformed/);
});

test('RangeRequest: key, range_end, limit and revision as etcd reads them', () => {
  assert.deepEqual([...encodeRangeRequest({ key: Buffer.from('a'), rangeEnd: Buffer.from('b'), limit: 16384, revision: 300 })], [...bytes(1, Buffer.from('a')), ...bytes(2, Buffer.from('b')), ...num(3, 16384), ...num(4, 300)]);
  assert.deepEqual([...encodeRangeRequest({ key: Buffer.from('a'), rangeEnd: Buffer.from([0]) })], [...bytes(1, Buffer.from('a')), ...bytes(2, [0])]);
});
