/**
 * A borrowed response's Layer7 whose latency BigInt is made when read (src/hubble/lent-layer7.ts):
 * protobuf-es (clone, toBinary, toJson, equals) sees the Layer7 a plain one is; the http metric's
 * number is Number(latencyNs); a reader writing latencyNs reads back what it wrote until the next lend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clone, create, equals, toBinary, toJson } from '@bufbuild/protobuf';
import { L7FlowType, Layer7Schema, type Layer7 } from '../../../src/hubble/gen/flow/flow_pb.js';
import { latencyNsOf, lendLatency, lentResponseL7 } from '../../../src/hubble/lent-layer7.ts';

const record: Layer7['record'] = { case: 'http', value: { $typeName: 'flow.HTTP', code: 200, method: 'GET', url: 'http://a/', protocol: 'HTTP/1.1', headers: [] } };

test('a lent response Layer7 is, to protobuf-es and to latencyNsOf, the plain Layer7 of its latency, lend after lend', () => {
  const lent = lentResponseL7(record);
  for (const ns of [0, 7, 153_000, 2 ** 31 + 1, 2 ** 53, 2 ** 56 + 4096]) {
    assert.equal(lendLatency(lent, ns, record), true);
    const plain: Layer7 = create(Layer7Schema, { type: L7FlowType.RESPONSE, latencyNs: BigInt(ns), record });
    assert.equal(latencyNsOf(lent), ns);
    assert.equal(latencyNsOf(plain), Number(plain.latencyNs));
    assert.equal(lent.latencyNs, BigInt(ns));
    assert.deepEqual(toBinary(Layer7Schema, lent), toBinary(Layer7Schema, plain), String(ns));
    assert.deepEqual(toJson(Layer7Schema, lent), toJson(Layer7Schema, plain), String(ns));
    assert.ok(equals(Layer7Schema, lent, plain), String(ns));
    const c = clone(Layer7Schema, lent);
    assert.equal(c.latencyNs, BigInt(ns));
    assert.deepEqual(c, plain);
  }
  // a reader that writes it: that value, also as latencyNsOf's number, until the next lend
  lent.latencyNs = 99n;
  assert.equal(lent.latencyNs, 99n);
  assert.equal(latencyNsOf(lent), 99);
  lendLatency(lent, 5, record);
  assert.equal(lent.latencyNs, 5n);
  // a plain Layer7 is not one to lend
  assert.equal(lendLatency(create(Layer7Schema, {}), 1, record), false);
});
