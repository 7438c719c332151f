/**
 * Hubble metric handlers on L3/L4 flows from the flow builder (drop, tcp, port-distribution,
 * flow, policy) and the context options (spec hubble.md §5.2–5.3).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlowBuilder } from '../../../../src/hubble/flow.ts';
import { createHubbleMetrics } from '../../../../src/hubble/metrics/index.ts';
import { contextLabelValues, parseContext } from '../../../../src/hubble/metrics/context.ts';
import { ev, resolver } from '../../hubble/fixtures.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver });

test('drop, tcp, port-distribution, flow and policy series with Hubble labels', async () => {
  const m = createHubbleMetrics('drop:sourceContext=pod tcp port-distribution flow policy:sourceContext=namespace;destinationContext=app');
  const syn = build(ev({ type: 4, subType: 0, ctReason: 0, tcpFlags: 2 }))!; // trace, new connection, SYN
  const synack = build(ev({ type: 4, subType: 0, ctReason: 1, tcpFlags: 0x12, srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812 }))!;
  const drop = build(ev({ type: 1, subType: 133, verdict: -133, srcIp: '10.244.1.7', endpointId: 102 }))!;
  const verdict = build(ev({ type: 5, subType: 0, verdict: 0, matchType: 2, direction: 'ingress' }))!;
  for (const f of [syn, synack, drop, verdict]) m.process(f);
  const text = await m.registry.metrics();
  assert.match(text, /hubble_drop_total\{source="default\/xwing",reason="POLICY_DENIED",protocol="TCP"\} 1/);
  assert.match(text, /hubble_tcp_flags_total\{flag="SYN",family="IPv4"\} \d/);
  assert.match(text, /hubble_tcp_flags_total\{flag="SYN-ACK",family="IPv4"\} 1/);
  assert.match(text, /hubble_flows_processed_total\{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"\} 1/);
  assert.match(text, /hubble_flows_processed_total\{protocol="TCP",type="Trace",subtype="to-endpoint",verdict="FORWARDED"\} 2/);
  assert.match(text, /hubble_policy_verdicts_total\{direction="ingress",match="l3-l4",action="forwarded",source="shop",destination="api"\} 1/);
  assert.match(text, /hubble_port_distribution_total\{protocol="TCP",port="8080"\} 1/);
  assert.match(text, /hubble_lost_events_total/);
});

test('context identifiers: priority lists, pod-short, dns, reserved-identity, labelsContext order', () => {
  const f = build(ev({ type: 4, ctReason: 1, dstIp: '198.51.100.10', dstIdentity: 16777217, endpointId: 101, direction: 'egress' }))!;
  assert.deepEqual(contextLabelValues(parseContext({ sourceContext: 'pod-short', destinationContext: 'pod|dns|ip' }), f), ['shop/client'.split('/')[1]!, 'api.openai.com']);
  assert.deepEqual(contextLabelValues(parseContext({ destinationContext: 'reserved-identity' }), f), ['reserved:world']);
  assert.deepEqual(
    contextLabelValues(parseContext({ labelsContext: 'traffic_direction,destination_ip,source_namespace,source_workload', sourceContext: 'workload-name' }), f),
    ['shop', 'client', '198.51.100.10', 'egress', 'client'],
  );
  assert.deepEqual(contextLabelValues(parseContext({ sourceContext: 'app' }), f), ['client']);
});

test('series of a deleted pod are removed (source/destination pod context and labelsContext pairs); others stay', async () => {
  const m = createHubbleMetrics('drop:sourceContext=pod flow policy:labelsContext=source_namespace,source_pod,destination_namespace,destination_pod');
  const drop = build(ev({ type: 1, subType: 133, verdict: -133, srcIp: '10.244.1.7', endpointId: 102 }))!;
  const verdict = build(ev({ type: 5, subType: 0, verdict: 0, matchType: 2, direction: 'ingress' }))!;
  for (const f of [drop, verdict]) m.process(f);
  const before = await m.registry.metrics();
  assert.match(before, /hubble_drop_total\{source="default\/xwing"/);
  const src = drop.source!;
  const removed = await m.forgetPod(src.namespace, src.podName);
  assert.ok(removed >= 1);
  const after = await m.registry.metrics();
  assert.doesNotMatch(after, /source="default\/xwing"/);
  assert.match(after, /hubble_flows_processed_total\{[^}]*type="Drop"[^}]*\} 1/, 'series without pod context are kept');
  assert.match(after, /hubble_policy_verdicts_total\{[^}]*source_pod="client"/, 'series of other pods are kept');
  const v = verdict.destination!;
  await m.forgetPod(v.namespace, v.podName);
  assert.doesNotMatch(await m.registry.metrics(), new RegExp(`destination_pod="${v.podName}"`));
});
