import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { decodeShortAscii, installShortUtf8 } from '../../../ui/src/utf8.ts';
import { EndpointSchema, FlowSchema } from '../../../src/hubble/gen/flow/flow_pb.js';

const enc = new TextEncoder();

test('utf8: short ASCII is read in JavaScript; other text is left to TextDecoder', () => {
  assert.equal(decodeShortAscii(enc.encode('')), '');
  assert.equal(decodeShortAscii(enc.encode('k8s:io.kubernetes.pod.namespace=default')), 'k8s:io.kubernetes.pod.namespace=default');
  assert.equal(decodeShortAscii(enc.encode('x'.repeat(64))), 'x'.repeat(64));
  assert.equal(decodeShortAscii(enc.encode('x'.repeat(65))), undefined, 'long: TextDecoder');
  assert.equal(decodeShortAscii(enc.encode('café')), undefined, 'not ASCII');
  assert.equal(decodeShortAscii(Uint8Array.of(0x61, 0xff)), undefined, 'not UTF-8 either');
  // a view into a larger buffer reads only its own bytes
  const big = enc.encode('..pod-a..');
  assert.equal(decodeShortAscii(big.subarray(2, 7)), 'pod-a');
});

test('utf8: with it installed, flows decode to the same text, ASCII or not, short or long', () => {
  installShortUtf8();
  const labels = ['k8s:app=deathstar', 'k8s:note=café ☕', `k8s:long=${'y'.repeat(100)}`, '', 'k8s:kanji=名前'];
  const f = create(FlowSchema, { uuid: 'f7799765-0124-40e9-8c70-6dc23f26b7b2', Summary: 'UDP', source: create(EndpointSchema, { podName: 'xwing', labels }) });
  const back = fromBinary(FlowSchema, toBinary(FlowSchema, f));
  assert.deepEqual(back.source?.labels, labels);
  assert.equal(back.uuid, f.uuid);
  assert.equal(back.source?.podName, 'xwing');
  // invalid UTF-8 in a string field is still refused (Protobuf-ES decodes proto3 strings strictly)
  const bad = toBinary(FlowSchema, create(FlowSchema, { Summary: 'AB' }));
  bad[bad.length - 1] = 0xff;
  assert.throws(() => fromBinary(FlowSchema, bad), /not valid for encoding utf-8/);
});
