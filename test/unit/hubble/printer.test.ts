import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { compactLine, createPrinter, dictBlock, formatTime, lostLine, jsonLine, flowType } from '../../../src/hubble/printer.ts';
import { GetFlowsResponseSchema } from '../../../src/hubble/gen/observer/observer_pb.js';
import { FlowSchema, L7FlowType, LostEventSource, Verdict, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
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
  assert.equal(lostLine(l, FWD.time), 'Dec  1 10:00:00.123 EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 1');
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
