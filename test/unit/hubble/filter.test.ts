import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { compileFilter, compileRequestFilter, FilterError } from '../../../src/hubble/filter.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { FlowFilterSchema, FlowSchema, Verdict, TrafficDirection, L7FlowType, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { ev, resolver } from './fixtures.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'uuid-1' });
const FWD = build(ev())!; // shop/client:53812 -> shop/api-xxx:8080 TCP SYN, trace, ingress, is_reply=false
const REPLY = build(ev({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, srcIdentity: 23456, dstIdentity: 12345, tcpFlags: 18, ctReason: 3, endpointId: 101 }))!;
const DROP = build(ev({ type: 1, subType: 133, endpointId: 103, srcIp: '10.244.1.7', srcIdentity: 34567, dstIp: '198.51.100.10', dstIdentity: 16777217, proto: 17, srcPort: 40000, dstPort: 443, ctReason: 0 }))!;
const NO_EP = build(ev({ srcIp: '192.0.2.1', dstIp: '192.0.2.2', srcIdentity: 1, dstIdentity: 6, endpointId: 0 }))!;
const HTTP = create(FlowSchema, {
  verdict: Verdict.FORWARDED, nodeName: 'node1', eventType: { type: 129 }, isReply: true,
  source: { namespace: 'shop', podName: 'api-xxx', labels: ['k8s:app=api'] },
  l7: { type: L7FlowType.RESPONSE, record: { case: 'http', value: { code: 503, method: 'GET', url: 'http://api:8080/v1/items?x=1', protocol: 'HTTP/1.1', headers: [{ key: 'x-request-id', value: 'r1' }] } } },
  traceContext: { parent: { traceId: 'abc' } },
});
const DNS = create(FlowSchema, { verdict: Verdict.FORWARDED, eventType: { type: 129 }, l7: { type: L7FlowType.REQUEST, record: { case: 'dns', value: { query: 'api.openai.com.', qtypes: ['A'] } } } });

type Init = MessageInitShape<typeof FlowFilterSchema>;
const m = (f: Init, flow: Flow) => compileFilter(create(FlowFilterSchema, f))(flow);

const TABLE: [string, Init, Flow, boolean][] = [
  ['empty filter matches everything', {}, FWD, true],
  ['source_pod ns/prefix', { sourcePod: ['shop/cli'] }, FWD, true],
  ['source_pod other ns', { sourcePod: ['default/cli'] }, FWD, false],
  ['source_pod bare name means namespace default', { sourcePod: ['client'] }, FWD, false],
  ['source_pod bare name in default', { sourcePod: ['xwing'] }, DROP, true],
  ['source_pod "ns/" = whole namespace', { sourcePod: ['shop/'] }, FWD, true],
  ['source_pod "/pod" = any namespace', { sourcePod: ['/client'] }, FWD, true],
  ['source_pod never matches endpoints without ns and pod', { sourcePod: ['/'] }, NO_EP, false],
  ['destination_pod prefix', { destinationPod: ['shop/api-'] }, FWD, true],
  ['OR within a field', { sourcePod: ['x/y', 'shop/client'] }, FWD, true],
  ['AND across fields', { sourcePod: ['shop/client'], verdict: [Verdict.DROPPED] }, FWD, false],
  ['source_ip exact', { sourceIp: ['10.244.1.5'] }, FWD, true],
  ['source_ip CIDR', { sourceIp: ['10.244.0.0/16'] }, FWD, true],
  ['destination_ip CIDR miss', { destinationIp: ['10.0.0.0/16'] }, FWD, false],
  ['verdict', { verdict: [Verdict.DROPPED] }, DROP, true],
  ['drop_reason_desc requires DROPPED', { dropReasonDesc: [133] }, DROP, true],
  ['drop_reason_desc on forwarded flow', { dropReasonDesc: [0] }, FWD, false],
  ['event_type type only', { eventType: [{ type: 4 }] }, FWD, true],
  ['event_type with sub_type 0 (to-endpoint)', { eventType: [{ type: 4, matchSubType: true, subType: 0 }] }, FWD, true],
  ['event_type sub_type mismatch', { eventType: [{ type: 4, matchSubType: true, subType: 3 }] }, FWD, false],
  ['event_type type 0 is a wildcard', { eventType: [{ type: 0 }] }, DROP, true],
  ['traffic_direction', { trafficDirection: [TrafficDirection.INGRESS] }, FWD, true],
  ['protocol tcp (case-insensitive)', { protocol: ['TCP'] }, FWD, true],
  ['protocol udp on tcp', { protocol: ['udp'] }, FWD, false],
  ['protocol http', { protocol: ['http'] }, HTTP, true],
  ['protocol dns', { protocol: ['dns'] }, DNS, true],
  ['destination_port', { destinationPort: ['8080'] }, FWD, true],
  ['source_port', { sourcePort: ['8080'] }, FWD, false],
  ['reply false on request', { reply: [false] }, FWD, true],
  ['reply true on reply', { reply: [true] }, REPLY, true],
  ['reply false on drop (absent is_reply counts as false for drops)', { reply: [false] }, DROP, true],
  ['reply on a flow with absent is_reply that is not a drop', { reply: [false] }, build(ev({ ctReason: 0 }))!, false],
  ['source_label k8s:app=client', { sourceLabel: ['k8s:app=client'] }, FWD, true],
  ['source_label bare key matches any source', { sourceLabel: ['app=client'] }, FWD, true],
  ['source_label wrong source prefix', { sourceLabel: ['container:app=client'] }, FWD, false],
  ['destination_label reserved:world (exists)', { destinationLabel: ['reserved:world'] }, DROP, true],
  ['label selector !key', { sourceLabel: ['!app'] }, FWD, false],
  ['label selector in (...)', { sourceLabel: ['k8s:app in (api, client)'] }, FWD, true],
  ['label selector notin', { sourceLabel: ['app notin (client)'] }, FWD, false],
  ['label selector AND of requirements', { sourceLabel: ['app=client, io.kubernetes.pod.namespace=shop'] }, FWD, true],
  ['source_identity', { sourceIdentity: [12345] }, FWD, true],
  ['destination_identity', { destinationIdentity: [1] }, FWD, false],
  ['destination_fqdn wildcard', { destinationFqdn: ['*.openai.com'] }, DROP, true],
  ['destination_fqdn exact with trailing dot', { destinationFqdn: ['API.openai.com.'] }, DROP, true],
  ['destination_fqdn anchored', { destinationFqdn: ['openai.com'] }, DROP, false],
  ['source_workload by name', { sourceWorkload: [{ name: 'client' }] }, FWD, true],
  ['source_workload by kind+name mismatch', { sourceWorkload: [{ name: 'client', kind: 'StatefulSet' }] }, FWD, false],
  ['source_cluster_name', { sourceClusterName: ['default'] }, FWD, true],
  ['node_name plain', { nodeName: ['node1'] }, FWD, true],
  ['node_name wildcard', { nodeName: ['node*'] }, FWD, true],
  ['node_name cluster/', { nodeName: ['default/'] }, FWD, true],
  ['node_name other cluster', { nodeName: ['prod/node1'] }, FWD, false],
  ['tcp_flags subset', { tcpFlags: [{ SYN: true }] }, REPLY, true],
  ['tcp_flags all required', { tcpFlags: [{ SYN: true, ACK: true }] }, FWD, false],
  ['http_status_code exact', { httpStatusCode: ['503'] }, HTTP, true],
  ['http_status_code prefix', { httpStatusCode: ['5+'] }, HTTP, true],
  ['http_status_code on non-http', { httpStatusCode: ['5+'] }, FWD, false],
  ['http_method case-insensitive', { httpMethod: ['get'] }, HTTP, true],
  ['http_path regex against path only', { httpPath: ['^/v1/items$'] }, HTTP, true],
  ['http_url regex', { httpUrl: ['api:8080'] }, HTTP, true],
  ['http_header exact', { httpHeader: [{ key: 'x-request-id', value: 'r1' }] }, HTTP, true],
  ['http filter with l7 event type', { httpMethod: ['GET'], eventType: [{ type: 129 }] }, HTTP, true],
  ['dns_query regex', { dnsQuery: ['openai'] }, DNS, true],
  ['uuid', { uuid: ['uuid-1'] }, FWD, true],
  ['ip_version', { ipVersion: [2] }, FWD, false],
  ['trace_id', { traceId: ['abc'] }, HTTP, true],
  ['encrypted false', { encrypted: [false] }, FWD, true],
  ['interface by index', { interface: [{ index: 7 }] }, FWD, true],
  // The negative control of every field above that had only matching rows: a filter that must
  // not match (a field that ignored its value would pass the matching rows alone).
  ['destination_pod other pod', { destinationPod: ['shop/client'] }, FWD, false],
  ['source_ip exact miss', { sourceIp: ['10.244.1.6'] }, FWD, false],
  ['source_ip CIDR miss', { sourceIp: ['10.245.0.0/16'] }, FWD, false],
  ['destination_ip CIDR hit', { destinationIp: ['10.244.1.0/24'] }, FWD, true],
  ['verdict miss', { verdict: [Verdict.DROPPED] }, FWD, false],
  ['traffic_direction miss', { trafficDirection: [TrafficDirection.EGRESS] }, FWD, false],
  ['destination_port miss', { destinationPort: ['8081'] }, FWD, false],
  ['destination_label miss', { destinationLabel: ['reserved:world'] }, FWD, false],
  ['source_identity miss', { sourceIdentity: [23456] }, FWD, false],
  ['destination_identity hit', { destinationIdentity: [23456] }, FWD, true],
  ['source_cluster_name miss', { sourceClusterName: ['prod'] }, FWD, false],
  ['http_method miss', { httpMethod: ['post'] }, HTTP, false],
  ['http_path miss (the query string is not part of the path)', { httpPath: ['^/v1/items\\?x=1$'] }, HTTP, false],
  ['http_url miss', { httpUrl: ['api:9090'] }, HTTP, false],
  ['http_header value miss', { httpHeader: [{ key: 'x-request-id', value: 'r2' }] }, HTTP, false],
  ['dns_query miss', { dnsQuery: ['anthropic'] }, DNS, false],
  ['uuid miss', { uuid: ['uuid-2'] }, FWD, false],
  ['trace_id miss', { traceId: ['abd'] }, HTTP, false],
  ['encrypted miss', { encrypted: [true] }, FWD, false],
  ['interface by index miss', { interface: [{ index: 8 }] }, FWD, false],
  ['ip_version hit', { ipVersion: [1] }, FWD, true],
];

for (const [name, f, flow, want] of TABLE) {
  test(`filter: ${name}`, () => assert.equal(m(f, flow), want));
}

const BAD: [string, Init, RegExp][] = [
  ['invalid IP', { sourceIp: ['10.0.0.300'] }, /invalid IP/],
  ['invalid CIDR', { sourceIp: ['10.0.0.0/40'] }, /invalid CIDR/],
  ['empty pod', { sourcePod: [''] }, /empty/],
  ['unknown protocol', { protocol: ['quic'] }, /unknown protocol/],
  ['bad port', { destinationPort: ['http'] }, /invalid port/],
  ['bad status code', { httpStatusCode: ['600'] }, /status code/],
  ['bad fqdn char', { sourceFqdn: ['a b'] }, /pattern/],
  ['http fields with non-l7 event type', { httpMethod: ['GET'], eventType: [{ type: 4 }] }, /event type l7/],
  ['empty cluster name', { sourceClusterName: [''] }, /empty/],
  ['bad regex', { dnsQuery: ['('] }, /regular expression/],
  ['bad label selector', { sourceLabel: ['a b c'] }, /selector/],
];
for (const [name, f, re] of BAD) {
  test(`filter error: ${name}`, () => assert.throws(() => compileFilter(create(FlowFilterSchema, f)), (e) => e instanceof FilterError && re.test(e.message)));
}

test('request: whitelist OR-ed, blacklist excludes (whitelist − blacklist)', () => {
  const wl = [create(FlowFilterSchema, { sourcePod: ['shop/'] }), create(FlowFilterSchema, { verdict: [Verdict.DROPPED] })];
  const bl = [create(FlowFilterSchema, { destinationPort: ['8080'] })];
  const pass = compileRequestFilter(wl, bl);
  assert.equal(pass(FWD), false); // whitelisted but blacklisted
  assert.equal(pass(DROP), true);
  assert.equal(pass(REPLY), true); // source shop/api-xxx, port 53812
  assert.equal(compileRequestFilter([], [])(FWD), true);
  assert.equal(compileRequestFilter([], bl)(FWD), false);
});

// Property: the compiled request filter equals the reference semantics of spec §1.6–1.7.
test('property: compileRequestFilter = anyOf(whitelist) ∧ noneOf(blacklist) with AND-in-filter / OR-in-field', () => {
  const verdicts = [Verdict.FORWARDED, Verdict.DROPPED, Verdict.REDIRECTED];
  const portsArb = fc.constantFrom(53, 80, 443, 8080);
  const idArb = fc.constantFrom(1, 2, 12345, 23456);
  const flowArb = fc.record({ verdict: fc.constantFrom(...verdicts), port: portsArb, id: idArb });
  const filterArb = fc.record({
    verdict: fc.subarray(verdicts, { maxLength: 2 }),
    port: fc.subarray([53, 80, 443, 8080], { maxLength: 2 }),
    id: fc.subarray([1, 2, 12345, 23456], { maxLength: 2 }),
  });
  type F = { verdict: number[]; port: number[]; id: number[] };
  type Fl = { verdict: number; port: number; id: number };
  const refOne = (f: F, x: Fl) => (f.verdict.length === 0 || f.verdict.includes(x.verdict))
    && (f.port.length === 0 || f.port.includes(x.port)) && (f.id.length === 0 || f.id.includes(x.id));
  const toProto = (f: F) => create(FlowFilterSchema, { verdict: f.verdict, destinationPort: f.port.map(String), sourceIdentity: f.id });
  const toFlow = (x: Fl) => create(FlowSchema, {
    verdict: x.verdict, source: { identity: x.id },
    l4: { protocol: { case: 'TCP', value: { sourcePort: 1000, destinationPort: x.port } } },
  });
  fc.assert(fc.property(fc.array(filterArb, { maxLength: 3 }), fc.array(filterArb, { maxLength: 3 }), fc.array(flowArb, { minLength: 1, maxLength: 8 }), (wl, bl, flows) => {
    const pass = compileRequestFilter(wl.map(toProto), bl.map(toProto));
    for (const x of flows) {
      const want = (wl.length === 0 || wl.some((f) => refOne(f, x))) && !bl.some((f) => refOne(f, x));
      if (pass(toFlow(x)) !== want) return false;
      // adding to the blacklist never lets more through
      if (bl.length && !compileRequestFilter(wl.map(toProto), bl.slice(1).map(toProto))(toFlow(x)) && pass(toFlow(x))) return false;
    }
    return true;
  }), { numRuns: 300 });
});
