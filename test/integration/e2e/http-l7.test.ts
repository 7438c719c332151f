/**
 * L7 HTTP policy through the proxy, in a lab, the way Cilium's connectivity tests exercise it:
 * client-egress-l7 (egress GET /public allowed, /private 403), echo-ingress-l7 (ingress method,
 * path and header rules), full-path matching, an L4-only rule on the same port opening every
 * request, and what the flows carry (direction, verdicts, trace context, redacted headers).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TestLab, type Flow } from '../support/lab.ts';

const lab = new TestLab(`hl7${process.pid % 10000}`);
const NS = 'h7';
let ip: Record<string, string> = {};

const pod = (name: string, labels: Record<string, string>, image: string, ports: number[] = []) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels },
  spec: { containers: [{ name: 'c', image, ...(ports.length ? { ports: ports.map((p) => ({ containerPort: p, protocol: 'TCP' })) } : {}) }] },
});
const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS }, spec });

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    pod('echo', { app: 'echo' }, 'ealen/echo-server', [8080]),
    pod('client', { kind: 'client', name: 'client' }, 'curlimages/curl'),
    pod('client2', { kind: 'client', name: 'client2' }, 'curlimages/curl'),
  ]);
  const all = await lab.podIPs();
  ip = { echo: all[`${NS}/echo`]!, client: all[`${NS}/client`]!, client2: all[`${NS}/client2`]! };
  for (const [k, v] of Object.entries(ip)) assert.ok(v, `${k} has an IP`);
});
after(async () => { await lab.down(); });

async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

interface Res { status: number; body: string; headers: string }
async function curl(from: string, path: string, opts: { method?: string; headers?: string[] } = {}): Promise<Res> {
  const args = ['curl', '-s', '-i', '-m', '5', '-X', opts.method ?? 'GET'];
  for (const h of opts.headers ?? []) args.push('-H', h);
  args.push(`http://${ip.echo}:8080${path}`);
  const r = await lab.exec(NS, from, args, 30_000);
  const text = r.stdout;
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  const split = text.indexOf('\r\n\r\n');
  return { status: m ? Number(m[1]) : 0, headers: split > 0 ? text.slice(0, split) : text, body: split > 0 ? text.slice(split + 4) : '' };
}

function l7Flows(args: string[], pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--type', 'l7', ...args], pred);
}
type L7 = { type?: string; http?: { method?: string; url?: string; code?: number; headers?: { key: string; value: string }[] } };
const l7 = (f: Flow) => f.l7 as L7 | undefined;

const egressL7 = cnp('client-egress-l7', {
  endpointSelector: { matchLabels: { kind: 'client' } },
  egress: [{
    toEndpoints: [{ matchLabels: { app: 'echo' } }],
    toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }],
  }],
});

test('client-egress-l7: GET /public allowed, /private and POST /public answered 403 Access denied; full path only', async () => {
  await withPolicies([egressL7], async () => {
    const since = new Date().toISOString();
    const ok = await curl('client', '/public');
    assert.equal(ok.status, 200);
    const echoed = JSON.parse(ok.body) as { path: string; client: { address: string } };
    assert.equal(echoed.path, '/public');
    assert.equal(echoed.client.address, ip.client, 'the server sees the client pod, not the node (transparent upstream)');
    const denied = await curl('client', '/private');
    assert.equal(denied.status, 403);
    assert.equal(denied.body, 'Access denied\r\n');
    assert.match(denied.headers, /\r\ncontent-type: text\/plain/i);
    assert.equal((await curl('client', '/public', { method: 'POST' })).status, 403);
    assert.equal((await curl('client', '/public/x')).status, 403, '/public does not allow /public/x (full-string match)');
    assert.equal((await curl('client', '/publicx')).status, 403);
    assert.equal((await curl('client', '/public?x=1')).status, 403, ':path includes the query string (Envoy)');

    const fs = await l7Flows(['--pod', `${NS}/client`, '--since', since], (x) => x.filter((f) => f.verdict === 'DROPPED' && l7(f)?.type === 'REQUEST').length >= 5);
    const req = fs.find((f) => f.verdict === 'FORWARDED' && l7(f)?.type === 'REQUEST');
    assert.ok(req, JSON.stringify(fs.slice(-3)));
    assert.equal(req.traffic_direction, 'EGRESS');
    assert.equal(req.source?.pod_name, 'client');
    assert.equal(req.destination?.pod_name, 'echo');
    assert.equal(l7(req)!.http!.url, `http://${ip.echo}:8080/public`);
    const drop = fs.find((f) => f.verdict === 'DROPPED' && l7(f)?.type === 'REQUEST' && l7(f)?.http?.url?.endsWith('/private'));
    assert.ok(drop);
    const res403 = await l7Flows(['--pod', `${NS}/client`, '--since', since, '--http-status', '403', '--http-path', '/private'], (x) => x.length >= 1);
    assert.equal(res403.length, 1);
    assert.equal(l7(res403[0]!)!.type, 'RESPONSE');
    // a pod the policy does not select is not redirected
    assert.equal((await curl('client2', '/private')).status, 403, 'client2 has kind=client too');
  });
  assert.equal((await curl('client', '/private')).status, 200, 'policy deleted: no proxy, plain forwarding');
});

test('echo-ingress-l7: method, path, header and host rules at the destination, ORed', async () => {
  const policy = cnp('echo-ingress-l7', {
    endpointSelector: { matchLabels: { app: 'echo' } },
    ingress: [{
      fromEndpoints: [{ matchLabels: { kind: 'client' } }],
      toPorts: [{
        ports: [{ port: '8080', protocol: 'TCP' }],
        rules: { http: [
          { method: 'GET', path: '/' },
          { method: 'GET', path: '/public' },
          { method: 'GET', path: '/private', headers: ['X-Very-Secret-Token: 42'] },
          { method: 'PUT|POST', path: '/api/v[0-9]+/items/.*', host: `${ip.echo!.replace(/\./g, '\\.')}:8080` },
        ] },
      }],
    }],
  });
  await withPolicies([policy], async () => {
    const since = new Date().toISOString();
    assert.equal((await curl('client', '/')).status, 200);
    assert.equal((await curl('client', '/public')).status, 200);
    assert.equal((await curl('client', '/private')).status, 403, 'header missing');
    assert.equal((await curl('client', '/private', { headers: ['X-Very-Secret-Token: 41'] })).status, 403, 'wrong header value');
    assert.equal((await curl('client', '/private', { headers: ['X-Very-Secret-Token: 42'] })).status, 200);
    assert.equal((await curl('client2', '/api/v2/items/7', { method: 'PUT' })).status, 200);
    assert.equal((await curl('client2', '/api/v2/items/7', { method: 'DELETE' })).status, 403);
    assert.equal((await curl('client2', '/api/v2/items/7', { method: 'POST', headers: ['Host: other'] })).status, 403, 'host rule');
    const fs = await l7Flows(['--to-pod', `${NS}/echo`, '--since', since], (x) => x.filter((f) => l7(f)?.type === 'REQUEST').length >= 8);
    assert.ok(fs.every((f) => f.traffic_direction === 'INGRESS'));
    assert.equal(fs.filter((f) => l7(f)?.type === 'REQUEST' && f.verdict === 'DROPPED').length, 4);
  });
});

test('an L4-only rule on the same port opens every request (still visible as L7)', async () => {
  const l4only = cnp('echo-l4-only', {
    endpointSelector: { matchLabels: { app: 'echo' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { name: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
  });
  const policy = cnp('echo-ingress-l7', {
    endpointSelector: { matchLabels: { app: 'echo' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { kind: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
  });
  await withPolicies([policy, l4only], async () => {
    const since = new Date().toISOString();
    assert.equal((await curl('client', '/private', { method: 'DELETE' })).status, 200, 'client: L4-only rule wildcards L7');
    assert.equal((await curl('client2', '/private')).status, 403, 'client2 is only allowed by the L7 rule');
    assert.equal((await curl('client2', '/public')).status, 200);
    const fs = await l7Flows(['--from-pod', `${NS}/client`, '--since', since], (x) => x.some((f) => l7(f)?.type === 'REQUEST'));
    const r = fs.find((f) => l7(f)?.type === 'REQUEST');
    assert.equal(r?.verdict, 'FORWARDED');
    assert.equal(l7(r!)!.http!.method, 'DELETE');
  });
});

test('flows: trace context from traceparent on request and response, sensitive headers redacted, latency', async () => {
  await withPolicies([egressL7], async () => {
    const since = new Date().toISOString();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const r = await curl('client', '/public', { headers: [`traceparent: 00-${traceId}-00f067aa0ba902b7-01`, 'Authorization: Bearer sk-very-secret', 'Cookie: session=abc'] });
    assert.equal(r.status, 200);
    const fs = await l7Flows(['--pod', `${NS}/client`, '--since', since], (x) => x.length >= 2);
    assert.equal(fs.length, 2);
    for (const f of fs) assert.equal((f.trace_context as { parent?: { trace_id?: string } } | undefined)?.parent?.trace_id, traceId);
    const req = fs.find((f) => l7(f)?.type === 'REQUEST')!;
    const h = Object.fromEntries(l7(req)!.http!.headers!.map((x) => [x.key.toLowerCase(), x.value]));
    assert.equal(h.authorization, 'HUBBLE_REDACTED');
    assert.equal(h.cookie, 'HUBBLE_REDACTED');
    assert.equal(h.traceparent, `00-${traceId}-00f067aa0ba902b7-01`);
    assert.ok(!JSON.stringify(fs).includes('sk-very-secret'));
    const res = fs.find((f) => l7(f)?.type === 'RESPONSE')!;
    assert.ok(Number((res.l7 as { latency_ns?: string }).latency_ns ?? 0) > 0);
    const byTrace = await lab.flows(['--trace-id', traceId, '--since', since]);
    assert.equal(byTrace.length, 2);
  });
});

test('keep-alive through the proxy: several requests on one connection, allowed and denied mixed', async () => {
  await withPolicies([egressL7], async () => {
    const r = await lab.exec(NS, 'client', ['curl', '-s', '-v', '-m', '5', `http://${ip.echo}:8080/public`, `http://${ip.echo}:8080/private`, `http://${ip.echo}:8080/public`], 30_000);
    assert.equal((r.stderr.match(/Re-using existing connection/g) ?? []).length, 2, r.stderr);
    assert.equal((r.stdout.match(/Access denied/g) ?? []).length, 1);
    assert.equal((r.stdout.match(/"path":"\/public"/g) ?? []).length, 2);
  });
});

test('egress L7 and the destination\'s ingress L7 on the same connection: both enforced by the proxy', async () => {
  const egress = cnp('client-egress-both', {
    endpointSelector: { matchLabels: { name: 'client' } },
    egress: [{ toEndpoints: [{ matchLabels: { app: 'echo' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }, { method: 'GET', path: '/both/.*' }] } }] }],
  });
  const ingress = cnp('echo-ingress-both', {
    endpointSelector: { matchLabels: { app: 'echo' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { kind: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/both/.*' }, { method: 'GET', path: '/ingress-only' }] } }] }],
  });
  await withPolicies([egress, ingress], async () => {
    const since = new Date().toISOString();
    const both = await curl('client', '/both/x');
    assert.equal(both.status, 200, 'allowed by both');
    assert.equal((JSON.parse(both.body) as { client: { address: string } }).client.address, ip.client);
    assert.equal((await curl('client', '/public')).status, 403, 'egress allows, the destination\'s ingress does not');
    assert.equal((await curl('client', '/ingress-only')).status, 403, 'ingress allows, egress does not');
    assert.equal((await curl('client2', '/ingress-only')).status, 200, 'client2 has only the ingress policy (ingress proxy)');
    const fs = await l7Flows(['--pod', `${NS}/client`, '--since', since], (x) => x.filter((f) => l7(f)?.type === 'REQUEST').length >= 3);
    assert.ok(fs.some((f) => f.verdict === 'DROPPED' && l7(f)?.type === 'REQUEST' && l7(f)?.http?.url?.endsWith('/public')), fs.map((f) => f.Summary).join(' | '));
  });
});

test('headerMatches: secret-backed values, and mismatch actions (REPLACE, ADD, LOG) applied to the forwarded request', async () => {
  const secret = { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'api-token', namespace: NS }, stringData: { token: 's3cr3t' } };
  const policy = cnp('client-header-matches', {
    endpointSelector: { matchLabels: { name: 'client' } },
    egress: [{ toEndpoints: [{ matchLabels: { app: 'echo' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [
      { path: '/secret', headerMatches: [{ name: 'X-Token', secret: { name: 'api-token', namespace: NS } }] },
      { path: '/replace', headerMatches: [{ name: 'X-Env', value: 'prod', mismatch: 'REPLACE' }] },
      { path: '/add', headerMatches: [{ name: 'X-Team', value: 'blue', mismatch: 'ADD' }] },
      { path: '/log', headerMatches: [{ name: 'X-Env', value: 'prod', mismatch: 'LOG' }] },
    ] } }] }],
  });
  await withPolicies([secret, policy], async () => {
    assert.equal((await curl('client', '/secret', { headers: ['X-Token: s3cr3t'] })).status, 200);
    assert.equal((await curl('client', '/secret', { headers: ['X-Token: guess'] })).status, 403);
    assert.equal((await curl('client', '/secret')).status, 403);
    const rep = await curl('client', '/replace', { headers: ['X-Env: dev'] });
    assert.equal(rep.status, 200);
    assert.equal((JSON.parse(rep.body) as { headers: Record<string, string> }).headers['x-env'], 'prod');
    const add = await curl('client', '/add');
    assert.equal((JSON.parse(add.body) as { headers: Record<string, string> }).headers['x-team'], 'blue');
    const log = await curl('client', '/log', { headers: ['X-Env: dev'] });
    assert.equal(log.status, 200);
    assert.equal((JSON.parse(log.body) as { headers: Record<string, string> }).headers['x-env'], 'dev', 'LOG only logs');
  });
});

test('ingress L7 for traffic from outside the cluster (world → pod through the node)', async () => {
  const policy = cnp('echo-from-world-l7', {
    endpointSelector: { matchLabels: { app: 'echo' } },
    ingress: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
  });
  await withPolicies([policy], async () => {
    const since = new Date().toISOString();
    const world = `${lab.name}-world`;
    const run = (path: string) => execFileSync('ip', ['netns', 'exec', world, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', `http://${ip.echo}:8080${path}`]).toString();
    assert.equal(run('/public'), '200');
    assert.equal(run('/private'), '403');
    const fs = await l7Flows(['--to-pod', `${NS}/echo`, '--since', since], (x) => x.filter((f) => l7(f)?.type === 'REQUEST').length >= 2);
    const denied = fs.find((f) => f.verdict === 'DROPPED' && l7(f)?.type === 'REQUEST');
    assert.ok(denied);
    assert.equal(denied.traffic_direction, 'INGRESS');
    assert.ok(denied.source?.labels?.some((l) => l.startsWith('reserved:world')), JSON.stringify(denied.source));
  });
});
