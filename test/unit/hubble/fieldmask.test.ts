import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileFieldMask } from '../../../src/hubble/observer.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { FlowSchema } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ev, resolver } from './fixtures.ts';

// the hubble CLI's default field mask for compact/dict/table (spec §3.3)
const CLI_DEFAULT = ['time', 'verdict', 'ethernet', 'IP', 'l4', 'source.identity', 'source.namespace', 'source.pod_name',
  'destination.identity', 'destination.namespace', 'destination.pod_name', 'Type', 'node_name', 'l7', 'event_type',
  'source_service', 'destination_service', 'is_reply', 'Summary', 'ip_trace_id'];

test('field mask: the hubble CLI default paths are accepted and copy only those fields', () => {
  const f = createFlowBuilder({ nodeName: 'node1', resolver })(ev())!;
  const mask = compileFieldMask(FlowSchema, CLI_DEFAULT)!;
  const m = mask(f);
  assert.equal(m.source?.podName, 'client');
  assert.equal(m.source?.identity, 12345);
  assert.deepEqual(m.source?.labels, []);
  assert.equal(m.uuid, '');
  assert.equal(m.isReply, false);
  assert.equal(m.Summary, 'TCP Flags: SYN');
  assert.equal(m.l4?.protocol.case, 'TCP');
  assert.equal(f.uuid !== '', true); // the stored flow is untouched
  assert.equal(compileFieldMask(FlowSchema, []), undefined);
  assert.throws(() => compileFieldMask(FlowSchema, ['source.nope']), /invalid field mask path/);
});
