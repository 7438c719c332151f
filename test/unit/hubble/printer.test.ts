import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import {
  compactLine, createPrinter, dictBlock, escapeTerminal, formatIdentity, formatTime, goQuote, goTabwriter, joinWithCutOff,
  lostLine, jsonLine, flowType, timeFormatName, type TimeFormat,
} from '../../../src/hubble/printer.ts';
import { NodeState } from '../../../src/hubble/gen/relay/relay_pb.js';
import { GetFlowsResponseSchema } from '../../../src/hubble/gen/observer/observer_pb.js';
import { FlowSchema, L7FlowType, LostEventSource, PolicySchema, Verdict, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { lostEvent } from '../../../src/hubble/ring.ts';
import { ev, resolver, T0 } from './fixtures.ts';

const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => '5a9f0b6e-0000-4000-8000-000000000001' });
const FWD = build(ev())!;
const REPLY = build(ev({ srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 53812, srcIdentity: 23456, dstIdentity: 12345, tcpFlags: 18, ctReason: 3, endpointId: 101 }))!;
const DROP = build(ev({ type: 1, subType: 133, endpointId: 103, srcIp: '10.244.1.7', srcIdentity: 34567, dstIp: '198.51.100.10', dstIdentity: 2, proto: 6, srcPort: 51234, dstPort: 443, ctReason: 0 }))!;
const PV = build(ev({ type: 5, verdict: 0, matchType: 2, direction: 'egress', endpointId: 101 }))!;
const PV_DENY = build(ev({ type: 5, verdict: -133, matchType: 0, direction: 'ingress' }))!;
const resp = (f: Flow) => create(GetFlowsResponseSchema, { responseTypes: { case: 'flow', value: f }, nodeName: f.nodeName, time: f.time });

test('time formats (UTC, StampMilli with space-padded day)', () => {
  assert.equal(formatTime(FWD.time), 'Dec  1 10:00:00.123');
  assert.equal(formatTime(FWD.time, 'RFC3339'), '2023-12-01T10:00:00Z');
  assert.equal(formatTime(FWD.time, 'RFC3339Milli'), '2023-12-01T10:00:00.123Z');
  assert.equal(formatTime(FWD.time, 'RFC3339Nano'), '2023-12-01T10:00:00.123456789Z');
  assert.equal(formatTime(undefined), 'N/A');
});

test('compact: forwarded trace', () => {
  assert.equal(compactLine(FWD), 'Dec  1 10:00:00.123: shop/client:53812 (ID:12345) -> shop/api-xxx:8080 (ID:23456) to-endpoint FORWARDED (TCP Flags: SYN)');
});

test('compact: reply swaps sides so the client stays on the left', () => {
  assert.equal(compactLine(REPLY), 'Dec  1 10:00:00.123: shop/client:53812 (ID:12345) <- shop/api-xxx:8080 (ID:23456) to-endpoint FORWARDED (TCP Flags: SYN, ACK)');
});

test('compact: drop with reserved identity and DNS name', () => {
  assert.equal(compactLine(DROP), 'Dec  1 10:00:00.123: default/xwing:51234 (ID:34567) <> api.openai.com:443 (world) Policy denied DROPPED (TCP Flags: SYN)');
});

test('compact: policy verdicts say ALLOWED / DENIED with match type and direction', () => {
  assert.equal(compactLine(PV), 'Dec  1 10:00:00.123: shop/client:53812 (ID:12345) -> shop/api-xxx:8080 (ID:23456) policy-verdict:L3-L4 EGRESS ALLOWED (TCP Flags: SYN)');
  assert.equal(compactLine(PV_DENY), 'Dec  1 10:00:00.123: shop/client:53812 (ID:12345) <> shop/api-xxx:8080 (ID:23456) policy-verdict:none INGRESS DENIED (TCP Flags: SYN)');
});

test('compact: node name, numeric', () => {
  assert.equal(compactLine(FWD, { printNodeName: true, ipTranslation: false }), 'Dec  1 10:00:00.123 [node1]: 10.244.1.5:53812 (ID:12345) -> 10.244.1.6:8080 (ID:23456) to-endpoint FORWARDED (TCP Flags: SYN)');
});

test('compact: IPv6 without names is bracketed with the port', () => {
  const f = build(ev({ ipVersion: 6, srcIp: 'fd00::1', dstIp: 'fd00::2', srcIdentity: 6, dstIdentity: 1, endpointId: 0 }))!;
  assert.equal(compactLine(f), 'Dec  1 10:00:00.123: [fd00::1]:53812 (remote-node) -> [fd00::2]:8080 (host) to-endpoint FORWARDED (TCP Flags: SYN)');
});

test('flow type of L7 flows', () => {
  const http = create(FlowSchema, { l7: { type: L7FlowType.REQUEST, record: { case: 'http', value: { method: 'GET' } } } });
  const dns = create(FlowSchema, { l7: { type: L7FlowType.RESPONSE, record: { case: 'dns', value: { observationSource: 'proxy' } } } });
  assert.equal(flowType(http), 'http-request');
  assert.equal(flowType(dns), 'dns-response proxy');
  assert.equal(flowType(create(FlowSchema, { verdict: Verdict.FORWARDED })), 'UNKNOWN');
});

test('lost events line', () => {
  const l = lostEvent(LostEventSource.HUBBLE_RING_BUFFER, 1, 0);
  assert.equal(lostLine(l), 'EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 1'); // v1.17 prints no time here
});

test('dict block', () => {
  assert.equal(dictBlock(DROP), [
    '  TIMESTAMP: Dec  1 10:00:00.123',
    '     SOURCE: default/xwing:51234',
    'DESTINATION: api.openai.com:443',
    '       TYPE: Policy denied',
    '    VERDICT: DROPPED',
    '    SUMMARY: TCP Flags: SYN',
  ].join('\n'));
  let out = '';
  const p = createPrinter({ format: 'dict', out: (s) => (out += s) });
  p.write(resp(FWD));
  p.write(resp(DROP));
  p.close();
  assert.equal(out.split('\n').filter((l) => l === '------------').length, 1);
});

test('table output is aligned and flushed on close', () => {
  let out = '';
  const p = createPrinter({ format: 'table', out: (s) => (out += s) });
  p.write(resp(FWD));
  p.write(resp(DROP));
  assert.equal(out, '');
  p.close();
  assert.equal(out, [
    'TIMESTAMP             SOURCE                DESTINATION          TYPE            VERDICT     SUMMARY',
    'Dec  1 10:00:00.123   shop/client:53812     shop/api-xxx:8080    to-endpoint     FORWARDED   TCP Flags: SYN',
    'Dec  1 10:00:00.123   default/xwing:51234   api.openai.com:443   Policy denied   DROPPED     TCP Flags: SYN',
    '',
  ].join('\n'));
});

test('json: the whole GetFlowsResponse with proto field names and proto3 JSON rules', () => {
  const j = JSON.parse(jsonLine(resp(FWD)));
  assert.deepEqual(Object.keys(j).sort(), ['flow', 'node_name', 'time']);
  assert.equal(j.time, '2023-12-01T10:00:00.123456789Z');
  assert.equal(j.node_name, 'node1');
  const f = j.flow;
  assert.equal(f.verdict, 'FORWARDED');
  assert.equal(f.Type, 'L3_L4');
  assert.deepEqual(f.IP, { source: '10.244.1.5', destination: '10.244.1.6', ipVersion: 'IPv4' });
  assert.deepEqual(f.l4, { TCP: { source_port: 53812, destination_port: 8080, flags: { SYN: true } } });
  assert.equal(f.source.ID, 101);
  assert.equal(f.source.pod_name, 'client');
  assert.equal(f.is_reply, false); // BoolValue: printed even when false
  assert.deepEqual(f.event_type, { type: 4 });
  assert.equal(f.trace_observation_point, 'TO_ENDPOINT');
  assert.equal(f.traffic_direction, 'INGRESS');
  assert.equal(f.Summary, 'TCP Flags: SYN');
  assert.equal(f.drop_reason_desc, undefined); // default omitted
  const d = JSON.parse(jsonLine(resp(DROP))).flow;
  assert.equal(d.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(d.drop_reason, 133);
  assert.equal(d.is_reply, undefined);
  assert.deepEqual(d.destination.labels, ['reserved:world']);
  assert.equal(T0 > 0n, true);
});

// ---- hubble v1.17.0's printer, case by case (hubble/pkg/printer/printer.go) ----

const at = (seconds: bigint, nanos: number) => ({ $typeName: 'google.protobuf.Timestamp' as const, seconds, nanos });

test('time formats: Go layouts in UTC; .999 trims zeros; zero time is valid, a missing one N/A', () => {
  const t = at(1735830245n, 120_000_000); // 2025-01-02T15:04:05.12Z, a Thursday
  const cases: [TimeFormat, string][] = [
    ['StampMilli', 'Jan  2 15:04:05.120'], ['YearMonthDay', '2025-01-02'], ['YearMonthDayHour', '2025-01-02T15Z'],
    ['YearMonthDayHourMinute', '2025-01-02T15:04Z'], ['RFC3339', '2025-01-02T15:04:05Z'], ['RFC3339Milli', '2025-01-02T15:04:05.12Z'],
    ['RFC3339Micro', '2025-01-02T15:04:05.12Z'], ['RFC3339Nano', '2025-01-02T15:04:05.12Z'], ['RFC1123Z', 'Thu, 02 Jan 2025 15:04:05 +0000'],
  ];
  for (const [f, want] of cases) assert.equal(formatTime(t, f), want, f);
  assert.equal(formatTime(at(1735830245n, 0), 'RFC3339Milli'), '2025-01-02T15:04:05Z');
  assert.equal(formatTime(at(0n, 0)), 'Jan  1 00:00:00.000');
  assert.equal(formatTime(at(253402300800n, 0)), 'N/A'); // year 10000: not a valid Timestamp
  assert.equal(timeFormatName('rfc3339nano'), 'RFC3339Nano');
  assert.equal(timeFormatName('Kitchen'), undefined);
});

test('identities: named 0…10, (ID:n) for every other number', () => {
  assert.equal(formatIdentity(0), '(unknown)');
  assert.equal(formatIdentity(2), '(world)');
  assert.equal(formatIdentity(10), '(world-ipv6)');
  assert.equal(formatIdentity(11), '(ID:11)');
  assert.equal(formatIdentity(16777217), '(ID:16777217)');
});

test('flow type: DNS always appends its observation source, unknown drop codes print "<code>, 0"', () => {
  const dns = create(FlowSchema, { l7: { type: L7FlowType.REQUEST, record: { case: 'dns', value: {} } } });
  assert.equal(flowType(dns), 'dns-request ');
  assert.equal(flowType(create(FlowSchema, { eventType: { type: 1, subType: 205 } })), '205, 0');
  assert.equal(flowType(create(FlowSchema, { eventType: { type: 4, subType: 12 } })), '12');
  assert.equal(flowType(create(FlowSchema, { eventType: { type: 5 }, policyMatchType: 5, trafficDirection: 2 })), 'policy-verdict:L3-Proto EGRESS');
});

test('Go tabwriter: empty cells pad to minwidth+padding rules, the last cell is not aligned', () => {
  assert.equal(goTabwriter('a\tbb\tc\nccc\t\td\n'), 'a     bb   c\nccc        d\n');
  assert.equal(goTabwriter('x\n'), 'x\n');
  // a line without tabs closes the column block above it
  assert.equal(goTabwriter('a\tb\nlong line\nlonger\tc\n'), 'a   b\nlong line\nlonger   c\n');
});

test('lost events in dict and table as v1.17 prints them', () => {
  const l = lostEvent(LostEventSource.PERF_EVENT_RING_BUFFER, 7, 0, 0, 3);
  const lost = create(GetFlowsResponseSchema, { responseTypes: { case: 'lostEvents', value: l }, nodeName: 'node1', time: FWD.time });
  let out = '';
  const d = createPrinter({ format: 'dict', out: (s) => (out += s) });
  d.write(resp(FWD));
  d.write(lost);
  assert.equal(out.split('------------\n')[1], '  TIMESTAMP: \n     SOURCE: PERF_EVENT_RING_BUFFER\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: CPU(3) - 7\n');
  out = '';
  const t = createPrinter({ format: 'table', out: (s) => (out += s) });
  t.write(lost);
  t.write(resp(FWD));
  t.close();
  assert.equal(out, [
    'TIMESTAMP             SOURCE                   DESTINATION         TYPE          VERDICT     SUMMARY',
    '                      PERF_EVENT_RING_BUFFER                       EVENTS LOST               CPU(3) - 7',
    'Dec  1 10:00:00.123   shop/client:53812        shop/api-xxx:8080   to-endpoint   FORWARDED   TCP Flags: SYN',
    '',
  ].join('\n'));
});

test('escaping (hubble v1.17.2): ESC and CR from flow fields cannot reach the terminal; our own colours can', () => {
  const evil = create(FlowSchema, { ...FWD, Summary: 'DNS Query \x1b[2J\x1b]0;pwned\x07evil.\rcom. A' });
  let out = '';
  const p = createPrinter({ format: 'compact', out: (s) => (out += s) });
  p.write(resp(evil));
  assert.ok(!out.includes('\x1b') && !out.includes('\r'));
  assert.match(out, /\(DNS Query \^\[\[2J\^\[\]0;pwned\x07evil\.\\rcom\. A\)\n$/);
  out = '';
  const c = createPrinter({ format: 'compact', color: true, out: (s) => (out += s) });
  c.write(resp(evil));
  assert.ok(out.includes('\x1b[32mFORWARDED\x1b[0m'), 'verdict colour kept');
  assert.ok(out.includes('\x1b[36mshop/client:\x1b[33m53812\x1b[0m\x1b[0m'), 'host and port colours kept');
  assert.ok(!out.includes('\x1b[2J'));
  assert.equal(escapeTerminal('\x1b[0m\x1b[31mx\x1b[1m', true), '\x1b[0m\x1b[31mx^[[1m');
});

test('--print-policy-names (hubble v1.18): names of the verdict\'s direction, only on policy verdicts', () => {
  const pol = (name: string, kind: string) => create(PolicySchema, { name, namespace: 'shop', kind, revision: 1n });
  const pv = create(FlowSchema, { ...PV, egressAllowedBy: [pol('allow-api', 'CiliumNetworkPolicy'), pol('', 'x'), pol('np', 'NetworkPolicy')], ingressAllowedBy: [pol('other', 'CiliumNetworkPolicy')] });
  assert.match(compactLine(pv, { printPolicyNames: true }), / EGRESS ALLOWED BY allow-api \(CiliumNetworkPolicy\), np \(NetworkPolicy\) \(TCP/);
  assert.match(compactLine(pv), / EGRESS ALLOWED \(TCP/);
  const deny = create(FlowSchema, { ...PV_DENY, ingressDeniedBy: [pol('deny-all', 'CiliumClusterwideNetworkPolicy')] });
  assert.match(compactLine(deny, { printPolicyNames: true }), / INGRESS DENIED BY deny-all \(CiliumClusterwideNetworkPolicy\) \(/);
  const trace = create(FlowSchema, { ...FWD, egressAllowedBy: [pol('allow-api', 'CiliumNetworkPolicy')] });
  assert.doesNotMatch(compactLine(trace, { printPolicyNames: true }), / BY /);
});

test('node status: only errors and unavailability unless debug; Go quoting; cut-off list', () => {
  const ns = (state: NodeState, names: string[], message = '') => create(GetFlowsResponseSchema, { responseTypes: { case: 'nodeStatus', value: { stateChange: state, nodeNames: names, message } }, nodeName: 'relay', time: FWD.time });
  let err = '';
  let out = '';
  const p = createPrinter({ format: 'compact', out: (s) => (out += s), err: (s) => (err += s) });
  p.write(ns(NodeState.NODE_CONNECTED, ['a']));
  assert.equal(err, '');
  p.write(ns(NodeState.NODE_ERROR, ['node-a', 'node-b'], 'dial "x":\tfailed é\u0007'));
  assert.equal(err, 'Dec  1 10:00:00.123 [relay]: Error "dial \\"x\\":\\tfailed é\\a" on 2 nodes: node-a, node-b\n');
  err = '';
  const dbg = createPrinter({ format: 'compact', debug: true, out: (s) => (out += s), err: (s) => (err += s) });
  const many = Array.from({ length: 12 }, (_, i) => `node-${String(i).padStart(2, '0')}`);
  dbg.write(ns(NodeState.NODE_CONNECTED, many));
  assert.equal(err, 'Dec  1 10:00:00.123 [relay]: Receiving flows from 12 nodes: node-00, node-01, node-02, node-03, node-04 (and 7 more)\n');
  assert.equal(out, '');
  assert.equal(goQuote('a\x01\x7f😀\u200b'), '"a\\x01\\x7f😀\\u200b"');
  assert.equal(joinWithCutOff(['a'], ', ', 50), 'a');
});

test('json: Go json.Encoder escapes <, >, &, U+2028/9 and DEL', () => {
  const f = create(FlowSchema, { ...FWD, Summary: '<a>&b\u2028\x7f' });
  assert.match(jsonLine(resp(f)), /"Summary":"\\u003ca\\u003e\\u0026b\\u2028\\u007f"/);
});
