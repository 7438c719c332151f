import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { toJson } from '@bufbuild/protobuf';
import { FlowSchema } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { createL7Parser, redactUrl } from '../../../../src/hubble/l7-parser.ts';
import { OtlpExporter } from '../../../../src/proxy/http/otlp.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { createHubbleMetrics } from '../../../../src/hubble/metrics/index.ts';
import '../../../../src/hubble/metrics/http.ts';

const base: HttpAccessRecord = {
  l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: Date.parse('2026-01-02T15:04:05.123Z'),
  client: { ip: '10.244.1.3', port: 40000, identity: 257 }, server: { ip: '10.244.1.6', port: 80, identity: 259 }, endpointId: 137,
  method: 'GET', url: 'http://deathstar/v1', host: 'deathstar', path: '/v1', protocol: 'HTTP/1.1',
  headers: ['Host', 'deathstar', 'Authorization', 'Bearer secret', 'traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'Cookie', 'a=b'],
  code: 0, latencyNs: 0, traceId: '4bf92f3577b34da6a3ce929d0e0e4736', parentSpanId: '00f067aa0ba902b7',
};
const response: HttpAccessRecord = { ...base, type: 'response', code: 200, latencyNs: 3_200_000, headers: ['Content-Type', 'text/plain'], requestTimeMs: base.timeMs, timeMs: base.timeMs + 3.2 };

const build = createL7Parser({
  nodeName: 'node1',
  resolver: {
    byIp: (ip) => (ip === '10.244.1.3' ? { id: 137, identity: 257, namespace: 'default', pod: 'tiefighter', labels: ['k8s:org=empire', 'k8s:class=tiefighter'] } : undefined),
    identityLabels: (id) => (id === 259 ? ['k8s:org=empire', 'k8s:class=deathstar'] : undefined),
  },
});

test('request flow: L7 REQUEST, event type 129, headers sorted and redacted, trace context, summary', () => {
  const f = build(base);
  const j = toJson(FlowSchema, f, { useProtoFieldName: true }) as Record<string, any>;
  assert.equal(j.Type, 'L7');
  assert.equal(j.verdict, 'FORWARDED');
  assert.deepEqual(j.event_type, { type: 129 });
  assert.equal(j.is_reply, false);
  assert.equal(j.traffic_direction, 'EGRESS');
  assert.equal(j.l7.type, 'REQUEST');
  assert.equal(j.l7.http.method, 'GET');
  assert.equal(j.l7.http.url, 'http://deathstar/v1');
  assert.equal(j.l7.http.protocol, 'HTTP/1.1');
  assert.equal(j.l7.http.code, undefined, 'requests carry no code');
  assert.deepEqual(j.l7.http.headers.map((h: { key: string }) => h.key), ['Authorization', 'Cookie', 'Host', 'traceparent']);
  assert.equal(j.l7.http.headers[0].value, 'HUBBLE_REDACTED');
  assert.equal(j.l7.http.headers[1].value, 'HUBBLE_REDACTED');
  assert.equal(j.trace_context.parent.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(j.source.pod_name, 'tiefighter');
  assert.deepEqual(j.source.labels, ['k8s:class=tiefighter', 'k8s:org=empire']);
  assert.deepEqual(j.destination.labels, ['k8s:class=deathstar', 'k8s:org=empire']);
  assert.equal(j.Summary, 'HTTP/1.1 GET http://deathstar/v1');
});

test('response flow: server → client, is_reply, code, latency, Hubble summary; denied is DROPPED', () => {
  const j = toJson(FlowSchema, build(response), { useProtoFieldName: true }) as Record<string, any>;
  assert.equal(j.IP.source, '10.244.1.6');
  assert.equal(j.IP.destination, '10.244.1.3');
  assert.equal(j.l4.TCP.source_port, 80);
  assert.equal(j.is_reply, true);
  assert.equal(j.l7.type, 'RESPONSE');
  assert.equal(j.l7.latency_ns, '3200000');
  assert.equal(j.l7.http.code, 200);
  assert.equal(j.Summary, 'HTTP/1.1 200 3ms (GET http://deathstar/v1)');
  const d = toJson(FlowSchema, build({ ...base, verdict: 'denied', reason: 'policy' }), { useProtoFieldName: true }) as Record<string, any>;
  assert.equal(d.verdict, 'DROPPED');
  assert.equal(redactUrl('http://u:pw@h/x'), 'http://u:HUBBLE_REDACTED@h/x');
});

test('http metrics: Hubble names, labels, default buckets; httpV2 counts responses with status', async () => {
  const m = createHubbleMetrics('http:sourceContext=pod');
  m.process(build(base));
  m.process(build(response));
  m.process(build({ ...response, direction: 'ingress', code: 403, verdict: 'denied' }));
  const text = await m.registry.metrics();
  assert.match(text, /hubble_http_requests_total\{source="default\/tiefighter",method="GET",protocol="HTTP\/1.1",reporter="client"\} 1/);
  assert.match(text, /hubble_http_responses_total\{source="",method="GET",protocol="HTTP\/1.1",status="200",reporter="client"\} 1/);
  assert.match(text, /hubble_http_responses_total\{source="",method="GET",protocol="HTTP\/1.1",status="403",reporter="server"\} 1/);
  assert.match(text, /hubble_http_request_duration_seconds_bucket\{le="0.005",source="",method="GET",reporter="client"\} 1/);
  for (const le of ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '\\+Inf']) assert.match(text, new RegExp(`hubble_http_request_duration_seconds_bucket\\{le="${le}"`));
  const v2 = createHubbleMetrics('httpV2:sourceContext=pod');
  v2.process(build(base));
  v2.process(build(response));
  const t2 = await v2.registry.metrics();
  assert.match(t2, /hubble_http_requests_total\{source="default\/tiefighter",method="GET",protocol="HTTP\/1.1",status="200",reporter="client"\} 1/);
  assert.doesNotMatch(t2, /hubble_http_responses_total/);
});

test('OTLP/HTTP JSON: one span per request, continuing the traceparent trace', async () => {
  const bodies: any[] = [];
  const srv = http.createServer((req, res) => {
    const cs: Buffer[] = [];
    req.on('data', (c: Buffer) => cs.push(c));
    req.on('end', () => { bodies.push({ url: req.url, type: req.headers['content-type'], body: JSON.parse(Buffer.concat(cs).toString()) }); res.end('{}'); });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const ex = new OtlpExporter({ endpoint: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, nodeName: 'node1', protocol: 'http/json' });
  ex.record(base); // requests are not spans
  ex.record(response);
  ex.record({ ...response, traceId: undefined, parentSpanId: undefined, verdict: 'denied', code: 403, direction: 'ingress' });
  await ex.flush();
  srv.close();
  assert.equal(bodies.length, 1);
  assert.equal(bodies[0].url, '/v1/traces');
  assert.equal(bodies[0].type, 'application/json');
  const spans = bodies[0].body.resourceSpans[0].scopeSpans[0].spans;
  assert.equal(spans.length, 2);
  assert.equal(spans[0].traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(spans[0].parentSpanId, '00f067aa0ba902b7');
  assert.equal(spans[0].name, 'GET');
  assert.equal(spans[0].kind, 3);
  assert.equal(BigInt(spans[0].endTimeUnixNano) - BigInt(spans[0].startTimeUnixNano), 3_200_000n);
  assert.match(spans[1].traceId, /^[0-9a-f]{32}$/);
  assert.equal(spans[1].kind, 2);
  // a server span's 4xx is the client's error, not the server's (HTTP semantic conventions)
  assert.equal(spans[1].status.code, 0);
  assert.equal(ex.exported, 2);
});
