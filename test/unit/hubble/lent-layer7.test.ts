/**
 * A borrowed response's Layer7 whose latency BigInt is made when read (src/hubble/lent-layer7.ts):
 * protobuf-es (clone, toBinary, toJson, equals) sees the Layer7 a plain one is; latencyNsOf is
 * Number(latencyNs) for the Layer7 lent last, another lent one and a plain one alike; a reader
 * writing latencyNs reads back what it wrote until the next lend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clone, create, equals, toBinary, toJson } from '@bufbuild/protobuf';
import { L7FlowType, Layer7Schema, type Layer7 } from '../../../src/hubble/gen/flow/flow_pb.js';
import { latencyNsOf, lentResponseL7 } from '../../../src/hubble/lent-layer7.ts';

const record: Layer7['record'] = { case: 'http', value: { $typeName: 'flow.HTTP', code: 200, method: 'GET', url: 'http://a/', protocol: 'HTTP/1.1', headers: [] } };

test('a lent response Layer7 is, to protobuf-es and to latencyNsOf, the plain Layer7 of its latency, lend after lend', () => {
  const lent = lentResponseL7(record), l7 = lent.l7;
  for (const ns of [0, 7, 153_000, 2 ** 31 + 1, 2 ** 53, 2 ** 56 + 4096]) {
    lent.lend(ns, record);
    const plain: Layer7 = create(Layer7Schema, { type: L7FlowType.RESPONSE, latencyNs: BigInt(ns), record });
    assert.equal(latencyNsOf(l7), ns);
    assert.equal(latencyNsOf(plain), Number(plain.latencyNs));
    assert.equal(l7.latencyNs, BigInt(ns));
    assert.deepEqual(toBinary(Layer7Schema, l7), toBinary(Layer7Schema, plain), String(ns));
    assert.deepEqual(toJson(Layer7Schema, l7), toJson(Layer7Schema, plain), String(ns));
    assert.ok(equals(Layer7Schema, l7, plain), String(ns));
    const c = clone(Layer7Schema, l7);
    assert.equal(c.latencyNs, BigInt(ns));
    assert.deepEqual(c, plain);
  }
  // a reader that writes it: that value, also as latencyNsOf's number, until the next lend
  l7.latencyNs = 99n;
  assert.equal(l7.latencyNs, 99n);
  assert.equal(latencyNsOf(l7), 99);
  lent.lend(5, record);
  assert.equal(l7.latencyNs, 5n);
  // two parsers' lent Layer7s: each reads as its own latency, whichever was lent last
  const other = lentResponseL7(record);
  other.lend(42, record);
  assert.equal(latencyNsOf(other.l7), 42);
  assert.equal(latencyNsOf(l7), 5);
  l7.latencyNs = 6n;
  assert.equal(latencyNsOf(l7), 6);
  assert.equal(latencyNsOf(other.l7), 42);
});
