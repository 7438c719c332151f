/**
 * Telemetry of the HTTP proxy in a lab: Hubble's http metrics on :9965 (enabled the Cilium way,
 * `--hubble-metrics` = MEMBRANE_HUBBLE_METRICS) and one OTLP/HTTP span per request sent to the
 * collector named by the standard OTEL_EXPORTER_OTLP_ENDPOINT (a collector in the node's namespace
 * that refuses the first export with 503 and Retry-After, then keeps the protobuf bodies, decoded
 * here with the official opentelemetry-proto schema).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { writeFile, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { TestLab, REPO } from '../support/lab.ts';
import { ExportTraceServiceRequestSchema } from '../../../src/hubble/gen/opentelemetry/proto/collector/trace/v1/trace_service_pb.js';
import type { Span } from '../../../src/hubble/gen/opentelemetry/proto/trace/v1/trace_pb.js';

const lab = new TestLab(`hte${process.pid % 10000}`);
const NS = 'hte';
const NODE_NS = `${lab.name}-node1`;
let echo = '';
let collector: ChildProcess | undefined;
let spansFile = '';

const COLLECTOR = `
import { createServer } from 'node:http';
import { appendFileSync } from 'node:fs';
const file = process.argv[2];
let n = 0;
createServer((req, res) => {
  const cs = [];
  req.on('data', (c) => cs.push(c));
  req.on('end', () => {
    const refused = n++ === 0;
    appendFileSync(file, JSON.stringify({ url: req.url, refused, type: req.headers['content-type'], tenant: req.headers['x-tenant'], body: Buffer.concat(cs).toString('base64') }) + '\\n');
    if (refused) { res.writeHead(503, { 'retry-after': '1' }); res.end(); return; }
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }); res.end();
  });
}).listen(4318, '127.0.0.1', () => console.log('ready'));
`;

before(async () => {
  await lab.ok(['up'], { timeoutMs: 180_000, env: { MEMBRANE_HUBBLE_METRICS: 'http:sourceContext=pod;destinationContext=pod flow', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_EXPORTER_OTLP_HEADERS: 'x-tenant=lab%201', OTEL_SERVICE_NAME: 'lab-proxy' } });
  const dir = await lab.dir;
  const script = join(dir, 'collector.mjs');
  spansFile = join(dir, 'spans.jsonl');
  await writeFile(script, COLLECTOR);
  collector = spawn('ip', ['netns', 'exec', NODE_NS, join(REPO, 'bin/node'), script, spansFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((r) => collector!.stdout!.once('data', () => r()));
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'echo', namespace: NS, labels: { app: 'echo' } }, spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080 }] }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-l7', namespace: NS }, spec: {
      endpointSelector: { matchLabels: { app: 'client' } },
      egress: [{ toEndpoints: [{ matchLabels: { app: 'echo' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
    } },
  ]);
  echo = (await lab.podIPs())[`${NS}/echo`]!;
});
after(async () => {
  collector?.kill();
  await lab.down();
});

test('hubble_http_* metrics with Hubble labels; one OTLP span per request, in the caller\'s trace', async () => {
  const traceId = '0af7651916cd43dd8448eb211c80319c';
  for (const path of ['/public', '/public', '/private']) {
    const r = await lab.exec(NS, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', '-H', `traceparent: 00-${traceId}-b7ad6b7169203331-01`, `http://${echo}:8080${path}`]);
    assert.equal(r.stdout, path === '/private' ? '403' : '200');
  }
  let text = '';
  for (let i = 0; i < 20; i++) {
    text = execFileSync('ip', ['netns', 'exec', NODE_NS, 'curl', '-s', 'http://127.0.0.1:9965/metrics']).toString();
    if (text.includes('status="403"')) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.match(text, new RegExp(`hubble_http_requests_total\\{source="${NS}/client",destination="${NS}/echo",method="GET",protocol="HTTP/1.1",reporter="client"\\} 3`));
  assert.match(text, new RegExp(`hubble_http_responses_total\\{source="${NS}/echo",destination="${NS}/client",method="GET",protocol="HTTP/1.1",status="200",reporter="client"\\} 2`));
  assert.match(text, /hubble_http_responses_total\{[^}]*status="403",reporter="client"\} 1/);
  assert.match(text, /hubble_http_request_duration_seconds_bucket\{le="0.005",/);
  assert.match(text, /hubble_flows_processed_total\{protocol="HTTP",type="L7",subtype="HTTP",verdict="DROPPED"\} 2/);

  let spans: Span[] = [];
  let posts: { url: string; refused: boolean; type: string; tenant: string; body: string }[] = [];
  for (let i = 0; i < 60 && spans.length < 3; i++) {
    await new Promise((r) => setTimeout(r, 250));
    if (!existsSync(spansFile)) continue;
    posts = (await readFile(spansFile, 'utf8')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    spans = posts.filter((p) => !p.refused).flatMap((p) => fromBinary(ExportTraceServiceRequestSchema, Buffer.from(p.body, 'base64')).resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans)));
  }
  // the first export was refused (503) and sent again after Retry-After: the same bytes
  assert.ok(posts.length >= 2 && posts[0]!.refused && posts[1]!.body === posts[0]!.body, JSON.stringify(posts.map((p) => p.refused)));
  for (const p of posts) assert.deepEqual([p.url, p.type, p.tenant], ['/v1/traces', 'application/x-protobuf', 'lab 1']);
  const first = fromBinary(ExportTraceServiceRequestSchema, Buffer.from(posts[1]!.body, 'base64'));
  assert.equal(first.resourceSpans[0]!.resource!.attributes.find((a) => a.key === 'service.name')!.value!.value.value, 'lab-proxy');
  assert.equal(spans.length, 3);
  const attr = (s: Span, k: string) => s.attributes.find((a) => a.key === k)?.value?.value.value;
  for (const s of spans) {
    assert.equal(Buffer.from(s.traceId).toString('hex'), traceId);
    assert.equal(Buffer.from(s.parentSpanId).toString('hex'), 'b7ad6b7169203331');
    assert.equal(s.name, 'GET');
    assert.equal(attr(s, 'http.request.method'), 'GET');
    assert.equal(attr(s, 'network.peer.address'), echo);
    assert.match(String(attr(s, 'url.full')), new RegExp(`^http://${echo.replaceAll('.', '\\.')}:8080/(public|private)$`));
    assert.equal(attr(s, 'http.status_code'), undefined);
  }
  const codes = spans.map((s) => String(attr(s, 'http.response.status_code'))).sort();
  assert.deepEqual(codes, ['200', '200', '403']);
});

test('membrane status lists the HTTP proxy listeners', async () => {
  const out = await lab.ok(['status']);
  assert.match(out, /Proxy http \(egress, TCP\):\s+listening, \d+ connections\s+port 15001/);
  assert.match(out, /Proxy http \(ingress, TCP\):\s+listening, \d+ connections\s+port 15002/);
});
