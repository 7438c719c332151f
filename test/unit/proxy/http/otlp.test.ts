/**
 * The OTLP exporter against a real HTTP collector on loopback: spans decoded with the official
 * opentelemetry-proto schema (v1.9.0, proto/opentelemetry), current HTTP semantic conventions,
 * OTEL_EXPORTER_OTLP_* settings, retry with backoff on exactly the statuses OTLP/HTTP names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fromBinary } from '@bufbuild/protobuf';
import { ExportTraceServiceRequestSchema } from '../../../../src/hubble/gen/opentelemetry/proto/collector/trace/v1/trace_service_pb.js';
import { Span_SpanKind, Status_StatusCode, type Span } from '../../../../src/hubble/gen/opentelemetry/proto/trace/v1/trace_pb.js';
import type { KeyValue } from '../../../../src/hubble/gen/opentelemetry/proto/common/v1/common_pb.js';
import { OtlpExporter, otlpOptionsFromEnv, parseOtelList, redactUrlFull, spanOf } from '../../../../src/proxy/http/otlp.ts';
import { NO_REQUEST_TIME, type HttpAccessRecord } from '../../../../src/common/access-log.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const request: HttpAccessRecord = {
  l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: Date.parse('2026-01-02T15:04:05.123Z'),
  client: { ip: '10.244.1.3', port: 40000, identity: 257 }, server: { ip: '198.51.100.10', port: 80, identity: 16777217 }, endpointId: 137,
  method: 'POST', url: 'http://api.openai.com/v1/chat/completions?sig=abc&model=x', host: 'api.openai.com', path: '/v1/chat/completions?sig=abc&model=x', protocol: 'HTTP/1.1',
  headers: ['Host', 'api.openai.com', 'User-Agent', 'curl/8.5.0', 'traceparent', `00-${TRACE}-${PARENT}-01`],
  code: 0, latencyNs: 0, traceId: TRACE, parentSpanId: PARENT,
};
const response: HttpAccessRecord = { ...request, type: 'response', code: 200, latencyNs: 3_200_000, headers: ['Content-Type', 'text/plain'], requestTimeMs: request.timeMs, timeMs: request.timeMs + 3.2 };
const ingress403: HttpAccessRecord = {
  ...response, direction: 'ingress', verdict: 'denied', code: 403, reason: 'Access denied', traceId: undefined, parentSpanId: undefined,
  client: { ip: '10.244.1.3', port: 40001, identity: 257 }, server: { ip: '10.244.1.6', port: 8080, identity: 259 },
  method: 'GET', url: 'http://web:8080/admin', host: 'web:8080', path: '/admin?x=1',
};

interface Received { url: string; headers: http.IncomingHttpHeaders; body: Buffer }
/** a collector that answers each request with the next status of `script` (then 200) */
async function collector(script: { status: number; headers?: Record<string, string> }[] = []) {
  const got: Received[] = [];
  const srv = http.createServer((req, res) => {
    const cs: Buffer[] = [];
    req.on('data', (c: Buffer) => cs.push(c));
    req.on('end', () => {
      got.push({ url: req.url!, headers: req.headers, body: Buffer.concat(cs) });
      const next = script.shift() ?? { status: 200 };
      res.writeHead(next.status, { 'content-type': 'application/x-protobuf', ...next.headers });
      res.end();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { got, url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, close: () => new Promise((r) => srv.close(r)) };
}

const attrs = (kvs: KeyValue[]) => Object.fromEntries(kvs.map((kv) => [kv.key, kv.value?.value.value]));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const spansOf = (r: Received): Span[] => fromBinary(ExportTraceServiceRequestSchema, r.body).resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans));

test('OTLP/protobuf: decoded with the official schema, current HTTP semantic conventions, trace continued', async () => {
  const c = await collector();
  const ex = new OtlpExporter({ endpoint: c.url, nodeName: 'node1', resourceAttributes: { 'deployment.environment.name': 'lab' } });
  ex.record(request);
  ex.record(response);
  ex.record(ingress403);
  await ex.flush();
  await c.close();
  assert.equal(c.got.length, 1);
  assert.equal(c.got[0]!.url, '/v1/traces');
  assert.equal(c.got[0]!.headers['content-type'], 'application/x-protobuf');
  const req = fromBinary(ExportTraceServiceRequestSchema, c.got[0]!.body);
  assert.deepEqual(attrs(req.resourceSpans[0]!.resource!.attributes), { 'service.name': 'membrane-http-proxy', 'k8s.node.name': 'node1', 'deployment.environment.name': 'lab' });
  assert.equal(req.resourceSpans[0]!.scopeSpans[0]!.scope!.name, 'membrane/proxy/http');
  const [egress, ingress] = spansOf(c.got[0]!);
  assert.equal(hex(egress!.traceId), TRACE);
  assert.equal(hex(egress!.parentSpanId), PARENT);
  assert.match(hex(egress!.spanId), /^[0-9a-f]{16}$/);
  assert.notEqual(hex(egress!.spanId), PARENT);
  assert.equal(egress!.name, 'POST');
  assert.equal(egress!.kind, Span_SpanKind.CLIENT);
  assert.equal(egress!.endTimeUnixNano - egress!.startTimeUnixNano, 3_200_000n);
  assert.equal(egress!.status?.code ?? Status_StatusCode.UNSET, Status_StatusCode.UNSET);
  assert.deepEqual(attrs(egress!.attributes), {
    'http.request.method': 'POST', 'url.full': 'http://api.openai.com/v1/chat/completions?sig=REDACTED&model=x',
    'server.address': 'api.openai.com', 'server.port': 80n, 'network.peer.address': '198.51.100.10', 'network.peer.port': 80n,
    'network.local.address': '10.244.1.3', 'http.response.status_code': 200n, 'network.protocol.version': '1.1', 'user_agent.original': 'curl/8.5.0',
    'cilium.source_identity': 257n, 'cilium.destination_identity': 16777217n, 'cilium.traffic_direction': 'egress', 'cilium.verdict': 'forwarded',
  });
  // the server side: no traceparent, a new trace; url.path/url.query; the client's address; a 4xx is not the server's error
  assert.match(hex(ingress!.traceId), /^[0-9a-f]{32}$/);
  assert.equal(ingress!.parentSpanId.length, 0);
  assert.equal(ingress!.kind, Span_SpanKind.SERVER);
  const ia = attrs(ingress!.attributes);
  assert.equal(ia['url.path'], '/admin');
  assert.equal(ia['url.query'], 'x=1');
  assert.equal(ia['url.scheme'], 'http');
  assert.equal(ia['client.address'], '10.244.1.3');
  assert.equal(ia['network.peer.address'], '10.244.1.3');
  assert.equal(ia['server.address'], 'web');
  assert.equal(ia['http.response.status_code'], 403n);
  assert.equal(ia['error.type'], undefined);
  assert.equal(ingress!.status?.code ?? 0, Status_StatusCode.UNSET);
  // the deprecated names are gone
  for (const s of [egress!, ingress!]) for (const old of ['http.method', 'http.url', 'http.status_code', 'net.peer.ip', 'net.peer.port', 'http.flavor', 'http.target']) assert.equal(attrs(s.attributes)[old], undefined, old);
});

test('error spans: a client\'s 4xx and any 5xx carry error.type and status ERROR; unknown methods are _OTHER', async () => {
  const c = await collector();
  const ex = new OtlpExporter({ endpoint: c.url });
  ex.record({ ...response, code: 403, verdict: 'denied', reason: 'Access denied' });
  ex.record({ ...ingress403, code: 503, verdict: 'error', reason: 'upstream connect error' });
  ex.record({ ...response, method: 'PROPFIND' });
  await ex.flush();
  await c.close();
  const [e403, e503, other] = spansOf(c.got[0]!);
  assert.equal(attrs(e403!.attributes)['error.type'], '403');
  assert.equal(e403!.status!.code, Status_StatusCode.ERROR);
  assert.equal(e403!.status!.message, 'Access denied');
  assert.equal(attrs(e503!.attributes)['error.type'], '503');
  assert.equal(e503!.status!.code, Status_StatusCode.ERROR);
  assert.equal(other!.name, 'HTTP');
  assert.equal(attrs(other!.attributes)['http.request.method'], '_OTHER');
  assert.equal(attrs(other!.attributes)['http.request.method_original'], 'PROPFIND');
});

test('OTLP/JSON: hex ids, integer enums, string int64s; gzip when asked; headers sent', async () => {
  const c = await collector();
  const ex = new OtlpExporter({ endpoint: `${c.url}/custom/traces`, tracesUrl: true, protocol: 'http/json', compression: 'gzip', headers: { authorization: 'Bearer t0k' } });
  ex.record(response);
  await ex.flush();
  await c.close();
  const r = c.got[0]!;
  assert.equal(r.url, '/custom/traces');
  assert.equal(r.headers['content-type'], 'application/json');
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.equal(r.headers.authorization, 'Bearer t0k');
  const span = JSON.parse(gunzipSync(r.body).toString()).resourceSpans[0].scopeSpans[0].spans[0];
  assert.equal(span.traceId, TRACE);
  assert.equal(span.parentSpanId, PARENT);
  assert.equal(span.kind, 3);
  assert.equal(typeof span.startTimeUnixNano, 'string');
  assert.deepEqual(span.attributes.find((a: { key: string }) => a.key === 'http.response.status_code').value, { intValue: '200' });
});

test('retry: 503 with Retry-After and 429 are retried with backoff until accepted; 400 is not retried', async () => {
  const c = await collector([{ status: 503, headers: { 'retry-after': '0' } }, { status: 429 }]);
  const ex = new OtlpExporter({ endpoint: c.url, retry: { initialBackoffMs: 20, maxBackoffMs: 40 } });
  ex.record(response);
  const t0 = Date.now();
  await ex.flush();
  assert.equal(c.got.length, 3);
  assert.deepEqual([ex.exported, ex.dropped, ex.retries], [1, 0, 2]);
  assert.ok(Date.now() - t0 < 2000);
  // identical bodies: the same batch, resent
  assert.ok(c.got[0]!.body.equals(c.got[2]!.body));
  await c.close();

  const bad = await collector([{ status: 400 }]);
  const ex2 = new OtlpExporter({ endpoint: bad.url, retry: { initialBackoffMs: 10 } });
  ex2.record(response);
  await ex2.flush();
  await bad.close();
  assert.equal(bad.got.length, 1);
  assert.deepEqual([ex2.exported, ex2.dropped, ex2.retries], [0, 1, 0]);
});

test('retry is bounded: a collector that is down costs dropped spans after maxAttempts (maxAttempts - 1 retries)', async () => {
  const c = await collector();
  const url = c.url;
  await c.close(); // nothing listens: connection refused each time
  const ex = new OtlpExporter({ endpoint: url, retry: { maxAttempts: 4, initialBackoffMs: 10, maxBackoffMs: 20 } });
  ex.record(response);
  await ex.flush();
  assert.deepEqual([ex.exported, ex.dropped, ex.retries], [0, 1, 3]);
  // while a batch is retried, new spans queue up to maxQueue, then are dropped (never block the proxy)
  const ex3 = new OtlpExporter({ endpoint: url, maxQueue: 2, maxBatch: 1, retry: { maxAttempts: 2, initialBackoffMs: 50 } });
  for (let i = 0; i < 5; i++) ex3.record(response);
  await ex3.flush();
  assert.equal(ex3.dropped, 5);
  assert.equal(ex3.exported, 0);
});

test('OTEL_EXPORTER_OTLP_* settings as an OpenTelemetry SDK reads them', () => {
  assert.equal(otlpOptionsFromEnv({}), undefined);
  assert.equal(otlpOptionsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' }), undefined);
  assert.equal(otlpOptionsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }), undefined);
  const base = otlpOptionsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/base/' })!;
  assert.equal(new OtlpExporter(base).url.href, 'http://c:4318/base/v1/traces');
  assert.equal(base.protocol, 'http/protobuf'); // the spec's default
  const full = otlpOptionsFromEnv({
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ignored:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c:443/otlp/spans',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_HEADERS: 'api-key=a%20b,x-tenant=t1', OTEL_EXPORTER_OTLP_TIMEOUT: '2500', OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
    OTEL_SERVICE_NAME: 'edge', OTEL_RESOURCE_ATTRIBUTES: 'service.name=ignored,k8s.cluster.name=lab%2C1',
  }, { nodeName: 'node2' })!;
  assert.equal(new OtlpExporter(full).url.href, 'https://c/otlp/spans');
  assert.deepEqual(
    [full.protocol, full.headers, full.timeoutMs, full.compression, full.serviceName, full.resourceAttributes, full.nodeName],
    ['http/json', { 'api-key': 'a b', 'x-tenant': 't1' }, 2500, 'gzip', 'edge', { 'k8s.cluster.name': 'lab,1' }, 'node2'],
  );
  assert.equal(otlpOptionsFromEnv({ MEMBRANE_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })!.endpoint, 'http://127.0.0.1:4318');
  assert.equal(otlpOptionsFromEnv({ OTEL_TRACES_EXPORTER: 'otlp' })!.endpoint, 'http://localhost:4318');
  const dir = mkdtempSync(join(tmpdir(), 'otlp-'));
  try {
    writeFileSync(join(dir, 'ca.pem'), 'CA');
    assert.equal(otlpOptionsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c', OTEL_EXPORTER_OTLP_CERTIFICATE: join(dir, 'ca.pem') })!.tls!.ca!.toString(), 'CA');
    assert.throws(() => otlpOptionsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c', OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: join(dir, 'ca.pem') }), /client certificate and client key go together/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad OTLP settings are refused with OTLP_CONFIG and a hint, never ignored', () => {
  const cases: [NodeJS.ProcessEnv, RegExp][] = [
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, /protocol "grpc" is not supported/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' }, /scheme grpc: is not http or https/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' }, /is not a URL/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_TIMEOUT: '10s' }, /not a number of milliseconds/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_COMPRESSION: 'zstd' }, /compression "zstd"/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_HEADERS: 'novalue' }, /"novalue" is not key=value/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_HEADERS: 'k=%zz' }, /not valid percent-encoding/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_TRACES_EXPORTER: 'zipkin' }, /OTLP only/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c', OTEL_EXPORTER_OTLP_CERTIFICATE: '/nonexistent/ca.pem' }, /ENOENT/],
  ];
  for (const [env, re] of cases) {
    assert.throws(() => otlpOptionsFromEnv(env), (e: Error & { code?: string; hint?: string }) => e.code === 'OTLP_CONFIG' && re.test(e.message) && !!e.hint, JSON.stringify(env));
  }
  assert.deepEqual(parseOtelList('X', ' a = 1 , b=%3D ,'), { a: '1', b: '=' });
});

test('url.full never carries credentials or signatures', () => {
  assert.equal(redactUrlFull('https://user:pw@h/p?X-Goog-Signature=s&a=1#f'), 'https://REDACTED:REDACTED@h/p?X-Goog-Signature=REDACTED&a=1#f');
  assert.equal(redactUrlFull('http://h/p?AWSAccessKeyId=k&Signature=s'), 'http://h/p?AWSAccessKeyId=REDACTED&Signature=REDACTED');
  assert.equal(redactUrlFull('http://h/p'), 'http://h/p');
});

test('a span\'s start: the response\'s request time when it has one; its end less the latency when the record has none (absent, or NO_REQUEST_TIME as the agent\'s feed reader leaves it)', () => {
  const end = BigInt(Math.round(response.timeMs * 1e6));
  assert.equal(spanOf(response).startNs, BigInt(Math.round(request.timeMs * 1e6)));
  for (const r of [{ ...response, requestTimeMs: undefined }, { ...response, requestTimeMs: NO_REQUEST_TIME }]) {
    const s = spanOf(r);
    assert.equal(s.endNs, end);
    assert.equal(s.startNs, end - 3_200_000n);
  }
});
