import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlowBuilder, tcpFlagsSummary } from '../../../src/hubble/flow.ts';
import { reduceCidrLabels } from '../../../src/hubble/endpoint-messages.ts';
import { Verdict, TrafficDirection, DropReason, FlowType, TraceObservationPoint, TraceReason } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ev, resolver } from './fixtures.ts';
import type { ResolvedEndpoint } from '../../../src/common/endpoint.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'u-1' });

test('trace to-endpoint SYN: forwarded, ingress, not a reply, enriched endpoints', () => {
  const f = build(ev())!;
  assert.equal(f.verdict, Verdict.FORWARDED);
  assert.equal(f.Type, FlowType.L3_L4);
  assert.equal(f.nodeName, 'node1');
  assert.equal(f.uuid, 'u-1');
  assert.equal(f.isReply, false);
  assert.equal(f.trafficDirection, TrafficDirection.INGRESS);
  assert.equal(f.traceObservationPoint, TraceObservationPoint.TO_ENDPOINT);
  assert.equal(f.traceReason, TraceReason.NEW);
  assert.deepEqual({ type: f.eventType?.type, sub: f.eventType?.subType }, { type: 4, sub: 0 });
  assert.equal(f.Summary, 'TCP Flags: SYN');
  assert.equal(f.time?.seconds, 1701424800n);
  assert.equal(f.time?.nanos, 123456789);
  assert.equal(f.source?.ID, 101);
  assert.equal(f.source?.podName, 'client');
  assert.equal(f.source?.clusterName, 'default');
  assert.deepEqual(f.source?.labels, ['k8s:app=client', 'k8s:io.kubernetes.pod.namespace=shop']);
  assert.deepEqual(f.source?.workloads.map((w) => [w.name, w.kind]), [['client', 'Deployment']]);
  assert.equal(f.destination?.identity, 23456);
  assert.equal(f.l4?.protocol.case, 'TCP');
  assert.equal(f.interface?.index, 7);
  assert.equal(f.dropReasonDesc, DropReason.DROP_REASON_UNKNOWN);
});

test('reply trace delivered to the client endpoint: is_reply=true, EGRESS (the client initiated)', () => {
  const f = build(ev({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, srcIdentity: 23456, dstIdentity: 12345, tcpFlags: 2 | 16, ctReason: 3, endpointId: 101, subType: 0 }))!;
  assert.equal(f.isReply, true);
  assert.equal(f.Summary, 'TCP Flags: SYN, ACK');
  // local endpoint (101) is the destination, reply → EGRESS (local-is-source XOR reply)
  assert.equal(f.trafficDirection, TrafficDirection.EGRESS);
  assert.equal(f.traceReason, TraceReason.REPLY);
});

test('trace with unknown CT reason leaves is_reply absent', () => {
  const f = build(ev({ ctReason: 0, subType: 3 }))!;
  assert.equal(f.isReply, undefined);
  assert.equal(f.traceObservationPoint, TraceObservationPoint.TO_STACK);
});

test('drop 133 (policy denied) at the source endpoint: DROPPED, EGRESS, is_reply absent, world labels', () => {
  const f = build(ev({ type: 1, subType: 133, endpointId: 101, dstIp: '1.1.1.1', dstIdentity: 2, proto: 17, dstPort: 53, ctReason: 0 }))!;
  assert.equal(f.verdict, Verdict.DROPPED);
  assert.equal(f.dropReason, 133);
  assert.equal(f.dropReasonDesc, DropReason.POLICY_DENIED);
  assert.equal(f.isReply, undefined);
  assert.equal(f.trafficDirection, TrafficDirection.EGRESS);
  assert.deepEqual(f.destination?.labels, ['reserved:world']);
  assert.equal(f.destination?.ID, 0);
  assert.equal(f.destination?.clusterName, '');
  assert.equal(f.Summary, 'UDP');
  assert.deepEqual({ type: f.eventType?.type, sub: f.eventType?.subType }, { type: 1, sub: 133 });
});

test('drop 139 of a frame that is not IP: no IP field (not "::"), an IPv6 drop names its addresses', () => {
  const f = build(ev({ type: 1, subType: 139, endpointId: 101, srcIp: '', dstIp: '', proto: 0, srcPort: 0, dstPort: 0, ctReason: 0, etherType: 0x88cc }))!;
  assert.equal(f.verdict, Verdict.DROPPED);
  assert.equal(f.dropReasonDesc, DropReason.UNSUPPORTED_L3_PROTOCOL);
  assert.equal(f.IP, undefined);
  const g = build(ev({ type: 1, subType: 139, endpointId: 101, ipVersion: 6, srcIp: 'fd00::a', dstIp: 'fd00::b', proto: 17, ctReason: 0, etherType: 0x86dd }))!;
  assert.deepEqual([g.IP?.source, g.IP?.destination, g.IP?.ipVersion], ['fd00::a', 'fd00::b', 2]);
});

test('drop 181 (deny rule) at the destination endpoint: INGRESS', () => {
  const f = build(ev({ type: 1, subType: 181, endpointId: 102 }))!;
  assert.equal(f.dropReasonDesc, DropReason.POLICY_DENY);
  assert.equal(f.trafficDirection, TrafficDirection.INGRESS);
});

test('policy verdicts: allowed (is_reply false), denied (−code), redirected (proxy port)', () => {
  const allowed = build(ev({ type: 5, subType: 0, verdict: 0, matchType: 2, direction: 'egress' }))!;
  assert.equal(allowed.verdict, Verdict.FORWARDED);
  assert.equal(allowed.policyMatchType, 2);
  assert.equal(allowed.isReply, false);
  assert.equal(allowed.trafficDirection, TrafficDirection.EGRESS);
  const denied = build(ev({ type: 5, verdict: -133, matchType: 0, direction: 'ingress' }))!;
  assert.equal(denied.verdict, Verdict.DROPPED);
  assert.equal(denied.dropReasonDesc, DropReason.POLICY_DENIED);
  assert.equal(denied.isReply, undefined);
  const redirected = build(ev({ type: 5, verdict: 15001, matchType: 2, direction: 'egress' }))!;
  assert.equal(redirected.verdict, Verdict.REDIRECTED);
  assert.equal(redirected.proxyPort, 15001);
});

test('ICMP summaries use gopacket type names', () => {
  assert.equal(build(ev({ proto: 1, icmpType: 8, icmpCode: 0 }))!.Summary, 'ICMPv4 EchoRequest');
  assert.equal(build(ev({ proto: 1, icmpType: 3, icmpCode: 3 }))!.Summary, 'ICMPv4 DestinationUnreachable(Port)');
  assert.equal(build(ev({ proto: 58, ipVersion: 6, icmpType: 128 }))!.Summary, 'ICMPv6 EchoRequest');
});

test('remote identities: CIDR labels reduced to the longest prefix, DNS names attached', () => {
  const f = build(ev({ type: 1, subType: 133, endpointId: 101, dstIp: '198.51.100.10', dstIdentity: 16777217 }))!;
  assert.deepEqual(f.destination?.labels, ['cidr:198.51.100.0/24', 'reserved:world']);
  assert.deepEqual(f.destinationNames, ['api.openai.com']);
  assert.deepEqual(reduceCidrLabels(['cidr:10.0.0.0/8', 'k8s:a=b', 'cidr:10.1.0.0/16']), ['cidr:10.1.0.0/16', 'k8s:a=b']);
});

test('non-flow events (debug, agent) give no flow; flag order of summaries', () => {
  assert.equal(build(ev({ type: 2 })), undefined);
  assert.equal(tcpFlagsSummary({ FIN: true, ACK: true, PSH: true }), 'ACK, FIN, PSH');
});

test('monotonic timestamps are converted to wall time', () => {
  const f = build(ev({ timeNs: process.hrtime.bigint() }))!;
  const ms = Number(f.time!.seconds) * 1000;
  assert.ok(Math.abs(ms - Date.now()) < 5000);
});

test('built flows are valid messages: binary and JSON round trips are lossless', async () => {
  const { create, equals, fromBinary, toBinary, toJson, fromJson } = await import('@bufbuild/protobuf');
  const { FlowSchema } = await import('../../../src/hubble/gen/flow/flow_pb.js');
  for (const e of [ev(), ev({ type: 1, subType: 133, ctReason: 0, dstIdentity: 2, dstIp: '1.1.1.1' }), ev({ type: 5, verdict: 15001 }), ev({ proto: 1, icmpType: 8 })]) {
    const f = build(e)!;
    for (const k of Object.keys(create(FlowSchema))) assert.ok(k in f, `missing ${k}`);
    assert.ok(equals(FlowSchema, f, fromBinary(FlowSchema, toBinary(FlowSchema, f))));
    assert.ok(equals(FlowSchema, f, fromJson(FlowSchema, toJson(FlowSchema, f))));
  }
});

test('shared parts: one endpoint message per resolved endpoint, rebuilt when the endpoint or the datapath identity differs', () => {
  const eps = new Map<string, ResolvedEndpoint>([['10.244.1.5', { id: 101, identity: 12345, namespace: 'shop', pod: 'client', labels: ['k8s:b=2', 'k8s:a=1'] }]]);
  const ids = new Map<number, string[]>([[777, ['k8s:app=remote']]]);
  const b = createFlowBuilder({ nodeName: 'node1', resolver: { byIp: (ip) => eps.get(ip), identityLabels: (id) => ids.get(id) }, uuid: () => 'u' });
  const f1 = b(ev({ dstIp: '10.0.9.9', dstIdentity: 777 }))!, f2 = b(ev({ dstIp: '10.0.9.9', dstIdentity: 777, srcPort: 1 }))!;
  assert.equal(f1.source, f2.source, 'the same endpoint record: one message');
  assert.equal(f1.destination, f2.destination, 'the same remote identity: one message');
  assert.deepEqual(f1.source?.labels, ['k8s:a=1', 'k8s:b=2']);
  // the packet says another identity than the endpoint record (a relabel in flight): its own
  const f3 = b(ev({ srcIdentity: 999 }))!;
  assert.notEqual(f3.source, f1.source);
  assert.equal(f3.source?.identity, 999);
  assert.equal(f1.source?.identity, 12345, 'the shared message is not changed by it');
  // an endpoint record replaced (new labels): the next flow shows them, the old flow keeps its own
  eps.set('10.244.1.5', { id: 101, identity: 12346, namespace: 'shop', pod: 'client', labels: ['k8s:c=3'] });
  const f4 = b(ev({ srcIdentity: 12346 }))!;
  assert.deepEqual(f4.source?.labels, ['k8s:c=3']);
  assert.deepEqual(f1.source?.labels, ['k8s:a=1', 'k8s:b=2']);
  // an identity the resolver does not know yet is not remembered: once known, its labels show
  const u1 = b(ev({ dstIp: '10.0.9.8', dstIdentity: 888 }))!;
  assert.deepEqual(u1.destination?.labels, []);
  ids.set(888, ['k8s:app=late']);
  assert.deepEqual(b(ev({ dstIp: '10.0.9.8', dstIdentity: 888 }))!.destination?.labels, ['k8s:app=late']);
});

test('shared parts: TCP flags per flag byte, empty lists frozen (a write throws instead of showing in every flow)', () => {
  const a = build(ev({ tcpFlags: 2 }))!, c = build(ev({ tcpFlags: 2 | 16 }))!, d = build(ev({ tcpFlags: 2, srcPort: 1 }))!;
  const tcp = (f: typeof a) => (f.l4?.protocol.case === 'TCP' ? f.l4.protocol.value : undefined);
  assert.equal(tcp(a)?.flags, tcp(d)?.flags);
  assert.notEqual(tcp(a)?.flags, tcp(c)?.flags);
  assert.deepEqual([tcp(c)?.flags?.SYN, tcp(c)?.flags?.ACK, tcp(c)?.flags?.RST], [true, true, false]);
  assert.equal(tcp(d)?.sourcePort, 1);
  assert.equal(tcp(a)?.sourcePort, 53812);
  assert.throws(() => a.egressAllowedBy.push({} as never), TypeError);
  assert.throws(() => a.sourceNames.push('x'), TypeError);
  assert.deepEqual(d.egressAllowedBy, []);
  assert.deepEqual(d.sourceNames, []);
});
