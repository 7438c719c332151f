import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { createHubble } from '../../../src/hubble/index.ts';
import { EndpointSchema, FlowSchema, IPSchema, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { resolver } from './fixtures.ts';

test('flows from the proxies get the workloads of their local endpoints (as datapath flows have them)', () => {
  const hubble = createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock', version: 'test', startedAt: 0 });
  const seen: Flow[] = [];
  hubble.onFlow((f) => seen.push(f));
  const flow = create(FlowSchema, {
    IP: create(IPSchema, { source: '10.244.1.5', destination: '10.244.1.7' }),
    source: create(EndpointSchema, { namespace: 'shop', podName: 'client' }),
    destination: create(EndpointSchema, { namespace: 'default', podName: 'xwing' }), // no owner: stays empty
  });
  hubble.ingestFlow(flow);
  assert.deepEqual(seen[0]!.source!.workloads.map((w) => [w.kind, w.name]), [['Deployment', 'client']]);
  assert.deepEqual(seen[0]!.destination!.workloads, []);
  // an endpoint the proxy named differently than the address' owner (a stale record) is not given another's workload
  const stale = create(FlowSchema, { IP: create(IPSchema, { source: '10.244.1.5' }), source: create(EndpointSchema, { namespace: 'shop', podName: 'old-pod' }) });
  hubble.ingestFlow(stale);
  assert.deepEqual(seen[1]!.source!.workloads, []);
});
