import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { clone, create } from '@bufbuild/protobuf';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { createAgentMetrics } from '../../../src/agent/metrics.ts';
import { CiliumEventTypeSchema, FlowSchema, L7FlowType, Layer7Schema, Verdict } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ev, resolver } from '../hubble/fixtures.ts';
import { skipUnless } from '../../support/requirements.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'u' });

function agentMetrics() {
  return createAgentMetrics({
    policies: async () => 3, policyRevision: () => 7,
    endpoints: () => [
      { id: 1, state: 'ready', policyEnforcement: { ingress: true, egress: true } },
      { id: 2, state: 'ready', policyEnforcement: { ingress: true, egress: false } },
      { id: 3, state: 'regenerating', policyEnforcement: { ingress: false, egress: false } },
    ],
    identities: () => [{ scope: 'reserved' }, { scope: 'reserved' }, { scope: 'cluster' }, { scope: 'local' }],
    mapState: () => undefined,
    pinRoot: '/nonexistent/membrane-test',
  });
}

const lines = (text: string, name: string) => text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).sort();

test('agent metrics carry Cilium\'s names and labels: policy, endpoints, identities, enforcement', async () => {
  const m = agentMetrics();
  const text = await m.registry.metrics();
  assert.deepEqual(lines(text, 'cilium_policy'), ['cilium_policy 3']);
  assert.deepEqual(lines(text, 'cilium_policy_max_revision'), ['cilium_policy_max_revision 7']);
  assert.deepEqual(lines(text, 'cilium_endpoint'), ['cilium_endpoint 3']);
  assert.deepEqual(lines(text, 'cilium_endpoint_state'), ['cilium_endpoint_state{endpoint_state="ready"} 2', 'cilium_endpoint_state{endpoint_state="regenerating"} 1']);
  assert.deepEqual(lines(text, 'cilium_identity'), ['cilium_identity{type="cluster_local"} 1', 'cilium_identity{type="node_local"} 1', 'cilium_identity{type="reserved"} 2']);
  assert.deepEqual(lines(text, 'cilium_policy_endpoint_enforcement_status'), [
    'cilium_policy_endpoint_enforcement_status{enforcement="both"} 1', 'cilium_policy_endpoint_enforcement_status{enforcement="egress"} 0',
    'cilium_policy_endpoint_enforcement_status{enforcement="ingress"} 1', 'cilium_policy_endpoint_enforcement_status{enforcement="none"} 1',
  ]);
  // policy import errors are Cilium's policy_change_total{outcome="failure"} (both outcomes exported from the start)
  assert.deepEqual(lines(text, 'cilium_policy_change_total'), ['cilium_policy_change_total{outcome="failure"} 0', 'cilium_policy_change_total{outcome="success"} 0']);
  m.policyChange('success'); m.policyChange('success'); m.policyChange('failure');
  assert.deepEqual(lines(await m.registry.metrics(), 'cilium_policy_change_total'), ['cilium_policy_change_total{outcome="failure"} 1', 'cilium_policy_change_total{outcome="success"} 2']);
  // the removed cilium_policy_import_errors_total is not invented
  assert.doesNotMatch(text, /import_errors/);
});

test('drops by Cilium\'s reason text and direction, forwards by direction, L7 verdicts per proxy type', async () => {
  const m = agentMetrics();
  m.observe(build(ev({ type: 1, subType: 133, direction: 'ingress' }))!, 60); // POLICY_DENIED
  m.observe(build(ev({ type: 1, subType: 133, direction: 'ingress' }))!, 74);
  m.observe(build(ev({ type: 1, subType: 181, endpointId: 101, direction: 'egress' }))!); // POLICY_DENY
  m.observe(build(ev({ type: 4, endpointId: 101, direction: 'egress', ctReason: 1 }))!, 1500);
  const req = clone(FlowSchema, build(ev({ direction: 'egress' }))!);
  req.eventType = create(CiliumEventTypeSchema, { type: 129 });
  req.l7 = create(Layer7Schema, { type: L7FlowType.REQUEST, record: { case: 'http', value: { method: 'GET', url: 'http://x/' } } });
  req.verdict = Verdict.FORWARDED;
  m.observe(req);
  const denied = clone(FlowSchema, req);
  denied.verdict = Verdict.DROPPED;
  m.observe(denied);
  const reply = clone(FlowSchema, req);
  reply.isReply = true; // responses are not requests: not counted again
  m.observe(reply);
  const dns = clone(FlowSchema, req);
  dns.l7 = create(Layer7Schema, { type: L7FlowType.REQUEST, record: { case: 'dns', value: { query: 'a.b.' } } });
  m.observe(dns);
  const text = await m.registry.metrics();
  assert.deepEqual(lines(text, 'cilium_drop_count_total'), ['cilium_drop_count_total{reason="Policy denied by denylist",direction="EGRESS"} 1', 'cilium_drop_count_total{reason="Policy denied",direction="INGRESS"} 2']);
  assert.deepEqual(lines(text, 'cilium_forward_count_total'), ['cilium_forward_count_total{direction="EGRESS"} 1']);
  // bytes where the datapath gave the packet length (the flow without one counts its packet only)
  assert.deepEqual(lines(text, 'cilium_drop_bytes_total'), ['cilium_drop_bytes_total{reason="Policy denied",direction="INGRESS"} 134']);
  assert.deepEqual(lines(text, 'cilium_forward_bytes_total'), ['cilium_forward_bytes_total{direction="EGRESS"} 1500']);
  assert.deepEqual(lines(text, 'cilium_policy_l7_total'), [
    'cilium_policy_l7_total{rule="denied",proxy_type="envoy"} 1', 'cilium_policy_l7_total{rule="denied",proxy_type="fqdn"} 0',
    'cilium_policy_l7_total{rule="forwarded",proxy_type="envoy"} 1', 'cilium_policy_l7_total{rule="forwarded",proxy_type="fqdn"} 1',
    'cilium_policy_l7_total{rule="received",proxy_type="envoy"} 2', 'cilium_policy_l7_total{rule="received",proxy_type="fqdn"} 1',
  ]);
});

test('promtool check metrics accepts the agent exposition', { skip: skipUnless('promtool') }, async () => {
  const m = agentMetrics();
  m.observe(build(ev({ type: 1, subType: 133 }))!);
  const out = execFileSync('promtool', ['check', 'metrics'], { input: await m.registry.metrics() }).toString();
  assert.equal(out, '');
});
