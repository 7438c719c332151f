import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import { compileFieldMask } from '../../../src/hubble/observer.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { FlowSchema } from '../../../src/hubble/gen/flow/flow_pb.js';
import { GetFlowsResponseSchema } from '../../../src/hubble/gen/observer/observer_pb.js';
import { ByteWriter, flowBytes, keepFields, topLevelMask, writeFlowFrame } from '../../../src/hubble/wire.ts';
import { ev, resolver } from './fixtures.ts';

// the UI's mask (ui/src/flow-worker.ts FLOW_FIELDS): top-level fields only
const UI_MASK = ['time', 'uuid', 'verdict', 'drop_reason', 'drop_reason_desc', 'auth_type', 'IP', 'l4', 'source', 'destination', 'Type',
  'node_name', 'source_names', 'destination_names', 'l7', 'event_type', 'source_service', 'destination_service',
  'traffic_direction', 'policy_match_type', 'debug_capture_point', 'sock_xlate_point', 'is_reply', 'Summary', 'ip_trace_id', 'extensions'];

const build = createFlowBuilder({ nodeName: 'node1', resolver });
const flows = [
  build(ev())!,
  build(ev({ type: 1, subType: 133, endpointId: 103, srcIp: '10.244.1.7', srcIdentity: 34567, dstIp: '198.51.100.10', dstIdentity: 16777217, dstPort: 443, ctReason: 0 }))!,
  build(ev({ type: 5, verdict: -133, direction: 'egress' }))!,
];

/** the frame connect-node would have written: the masked copy in a GetFlowsResponse, encoded */
function expected(f: (typeof flows)[number], paths: string[]): Buffer {
  const mask = compileFieldMask(FlowSchema, paths);
  const msg = toBinary(GetFlowsResponseSchema, create(GetFlowsResponseSchema, { responseTypes: { case: 'flow', value: mask ? mask(f) : f }, nodeName: f.nodeName, time: f.time }));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

test('wire: a flow frame is byte for byte what toBinary writes, whole and under a top-level mask', () => {
  for (const paths of [[], UI_MASK, ['verdict', 'Summary'], ['l4']]) {
    const keep = topLevelMask(FlowSchema, paths);
    assert.equal(keep === undefined, paths.length === 0);
    const w = new ByteWriter(16); // grows
    for (const f of flows) writeFlowFrame(w, flowBytes(f), keep, f.nodeName, f.time);
    assert.deepEqual(w.take(), Buffer.concat(flows.map((f) => expected(f, paths))), `mask ${paths.join(',')}`);
  }
});

test('wire: the response decodes to the masked flow, node name and time', () => {
  const w = new ByteWriter();
  const f = flows[1]!;
  writeFlowFrame(w, flowBytes(f), topLevelMask(FlowSchema, ['verdict', 'source']), f.nodeName, f.time);
  const b = w.take();
  assert.equal(b.readUInt32BE(1), b.length - 5);
  const r = fromBinary(GetFlowsResponseSchema, b.subarray(5));
  assert.equal(r.nodeName, 'node1');
  assert.deepEqual(r.time, f.time);
  assert.equal(r.responseTypes.case, 'flow');
  const m = r.responseTypes.value as typeof f;
  assert.equal(m.verdict, f.verdict);
  assert.equal(m.source?.podName, 'xwing');
  assert.equal(m.l4, undefined);
  assert.equal(m.uuid, '');
});

test('wire: a mask reaching inside a message is not a top-level one; an unknown name falls back too', () => {
  assert.equal(topLevelMask(FlowSchema, ['source.pod_name', 'verdict']), undefined);
  assert.equal(topLevelMask(FlowSchema, ['nope']), undefined);
});

test('wire: each flow is encoded once; the bytes are the flow\'s encoding', () => {
  const f = flows[0]!;
  assert.equal(flowBytes(f), flowBytes(f));
  assert.ok(equals(FlowSchema, fromBinary(FlowSchema, flowBytes(f)), f));
});

test('wire: truncated or malformed bytes throw instead of reading past the end', () => {
  const b = flowBytes(flows[0]!);
  const keep = new Set([1, 4]);
  assert.throws(() => keepFields(b.subarray(0, b.length - 1), keep, new ByteWriter()), /truncated/);
  assert.throws(() => keepFields(Uint8Array.of(0x0b), keep, new ByteWriter()), /wire type 3/);
  assert.throws(() => keepFields(Uint8Array.of(0x08, 0xff), keep, new ByteWriter()), /truncated varint/);
  assert.throws(() => keepFields(Uint8Array.of(0x0a, 0x05, 0x01), keep, new ByteWriter()), /truncated field/);
});
