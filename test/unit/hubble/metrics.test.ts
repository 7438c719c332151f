import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { clone, create } from '@bufbuild/protobuf';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { createHubbleMetrics, openMetricsToPrometheus } from '../../../src/hubble/metrics/index.ts';
import { CiliumEventTypeSchema, FlowSchema, L7FlowType, Layer7Schema, TraceContextSchema, TrafficDirection, Verdict, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ev, resolver } from './fixtures.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'u' });
const ICMP4 = build(ev({ proto: 1, icmpType: 8, icmpCode: 0, srcPort: 0, dstPort: 0 }))!;
const ICMP6 = build(ev({ ipVersion: 6, srcIp: 'fd00::1', dstIp: 'fd00::2', proto: 58, icmpType: 1, icmpCode: 4, srcPort: 0, dstPort: 0 }))!;
const TO_WORLD = build(ev({ endpointId: 101, dstIp: '198.51.100.10', dstIdentity: 16777217, ctReason: 1, direction: 'egress', tcpFlags: 2 }))!;
const WORLD_REPLY = build(ev({ endpointId: 101, srcIp: '10.244.1.5', dstIp: '198.51.100.10', dstIdentity: 16777217, ctReason: 3, tcpFlags: 18 }))!;
const WORLD_DROP = build(ev({ type: 1, subType: 133, endpointId: 101, dstIp: '198.51.100.10', dstIdentity: 16777217, ctReason: 0 }))!;
const WORLD_OTHER_DROP = build(ev({ type: 1, subType: 151, endpointId: 101, dstIp: '198.51.100.10', dstIdentity: 16777217, ctReason: 0 }))!;

function httpResponse(traceId?: string): Flow {
  const f = clone(FlowSchema, TO_WORLD);
  Object.assign(f, { verdict: Verdict.FORWARDED, trafficDirection: TrafficDirection.EGRESS, isReply: true });
  f.eventType = create(CiliumEventTypeSchema, { type: 129 });
  f.l7 = create(Layer7Schema, { type: L7FlowType.RESPONSE, latencyNs: 3_000_000n, record: { case: 'http', value: { code: 200, method: 'GET', protocol: 'HTTP/1.1', url: 'http://x/' } } });
  if (traceId) f.traceContext = create(TraceContextSchema, { parent: { traceId } });
  return f;
}

const sample = async (m: ReturnType<typeof createHubbleMetrics>, name: string) =>
  (await m.render()).body.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));

test('unknown and refused handler names are reported; the other handlers still count', async () => {
  const m = createHubbleMetrics('flow icmp_bogus kafka icmp drop:sourceContext=nope flow http httpV2');
  assert.deepEqual(m.handlers.map((h) => h.name), ['flow', 'icmp', 'http']);
  assert.equal(m.configErrors.length, 5, m.configErrors.join('\n'));
  assert.match(m.configErrors[0]!, /unknown metric "icmp_bogus" \(known: .*icmp.*\): not served, the others are/);
  assert.match(m.configErrors[1]!, /"kafka" not served: membrane has no Kafka parser/);
  assert.match(m.configErrors[2]!, /"drop" not served: sourceContext: unknown context identifier "nope"/);
  assert.match(m.configErrors[3]!, /"flow" listed twice/);
  assert.match(m.configErrors[4]!, /"httpV2" not served: http and httpV2/);
  m.process(ICMP4);
  assert.equal((await sample(m, 'hubble_flows_processed_total')).length, 1);
});

test('icmp: family and gopacket type names (IPv6 for ICMPv6, unlike Cilium)', async () => {
  const m = createHubbleMetrics('icmp:sourceContext=pod');
  m.process(ICMP4);
  m.process(ICMP4);
  m.process(ICMP6);
  m.process(TO_WORLD);
  assert.deepEqual(await sample(m, 'hubble_icmp_total'), [
    'hubble_icmp_total{family="IPv4",type="EchoRequest",source="shop/client"} 2',
    'hubble_icmp_total{family="IPv6",type="DestinationUnreachable(PortUnreachable)",source=""} 1',
  ]);
});

test('flows-to-world: world destinations only; policy drops unless any-drop; replies skipped; port and syn-only', async () => {
  const m = createHubbleMetrics('flows-to-world:port;destinationContext=dns');
  for (const f of [TO_WORLD, WORLD_REPLY, WORLD_DROP, WORLD_OTHER_DROP, ICMP4]) m.process(f);
  assert.deepEqual(await sample(m, 'hubble_flows_to_world_total'), [
    'hubble_flows_to_world_total{protocol="TCP",verdict="FORWARDED",port="8080",destination="api.openai.com"} 1',
    'hubble_flows_to_world_total{protocol="TCP",verdict="DROPPED",port="8080",destination="api.openai.com"} 1',
  ]);
  const any = createHubbleMetrics('flows-to-world:any-drop;syn-only');
  for (const f of [TO_WORLD, WORLD_REPLY, WORLD_DROP, WORLD_OTHER_DROP]) any.process(f);
  assert.deepEqual(await sample(any, 'hubble_flows_to_world_total'), [
    'hubble_flows_to_world_total{protocol="TCP",verdict="FORWARDED"} 1',
    'hubble_flows_to_world_total{protocol="TCP",verdict="DROPPED"} 2',
  ]);
});

test('httpV2 exemplars: no crash; OpenMetrics with {traceID} exemplars when enabled and asked, Prometheus text otherwise', async () => {
  const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
  const m = createHubbleMetrics('httpV2:exemplars=true;labelsContext=source_namespace,destination_ip,traffic_direction', { openMetrics: true });
  assert.deepEqual(m.configErrors, []);
  m.process(httpResponse(trace));
  m.process(httpResponse());
  const om = await m.render('application/openmetrics-text; version=1.0.0,text/plain;q=0.5');
  assert.match(om.contentType, /^application\/openmetrics-text; version=1\.0\.0/);
  assert.match(om.body, new RegExp(`^hubble_http_requests_total\\{source_namespace="",destination_ip="10\\.244\\.1\\.5",traffic_direction="egress",method="GET",protocol="HTTP/1\\.1",status="200",reporter="client"\\} 2 # \\{traceID="${trace}"\\} 1 `, 'm'));
  assert.match(om.body, /# EOF\n$/);
  const text = await m.render('text/plain');
  assert.match(text.contentType, /^text\/plain; version=0\.0\.4/);
  assert.doesNotMatch(text.body, /traceID|# EOF/);
  assert.match(text.body, /^# TYPE hubble_http_requests_total counter$/m);
  assert.match(text.body, /^hubble_http_requests_total\{.*\} 2$/m);
  // without OpenMetrics enabled: a clear note, Prometheus text for everyone
  const plain = createHubbleMetrics('httpV2:exemplars=true');
  assert.match(plain.configErrors[0]!, /exemplars are only exposed with OpenMetrics/);
  plain.process(httpResponse(trace));
  assert.doesNotMatch((await plain.render('application/openmetrics-text')).body, /traceID/);
});

test('promtool check metrics accepts both expositions', async () => {
  const m = createHubbleMetrics('flow drop dns:query tcp icmp flows-to-world port-distribution policy httpV2:exemplars=true;sourceContext=pod', { openMetrics: true });
  for (const f of [ICMP4, ICMP6, TO_WORLD, WORLD_REPLY, WORLD_DROP, httpResponse('4bf92f3577b34da6a3ce929d0e0e4736')]) m.process(f);
  m.lost('HUBBLE_RING_BUFFER', 2);
  for (const accept of ['text/plain', 'application/openmetrics-text']) {
    const { body } = await m.render(accept);
    // promtool lints (exit 1 on problems); it reads the Prometheus text format
    const text = accept === 'text/plain' ? body : openMetricsToPrometheus(body);
    const out = execFileSync('promtool', ['check', 'metrics'], { input: text }).toString();
    assert.equal(out, '');
  }
});
