/**
 * Cilium's Star Wars demo from its own manifests (examples/starwars), through the CLI: no policy
 * (everyone lands), the L3/L4 rule1 (the xwing is dropped, POLICY_DENIED), then the L7 rule1
 * (tiefighter may POST /v1/request-landing; PUT /v1/exhaust-port is answered 403 Access denied
 * by the ingress HTTP proxy), with the L7 flows `membrane observe --type l7` shows.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';

const lab = new TestLab(`hsw${process.pid % 10000}`);
const EX = join(REPO, 'examples/starwars');
const URL_BASE = 'http://deathstar.default.svc.cluster.local';

before(async () => {
  await lab.up();
  await lab.ok(['apply', '-f', join(EX, 'http-sw-app.yaml')]);
  await lab.settle();
});
after(async () => { await lab.down(); });

/** curl in a ship: body and status (000 when the connection failed). */
async function curl(ship: string, method: string, path: string, maxTime = 5): Promise<{ status: string; body: string }> {
  const r = await lab.exec('default', ship, ['curl', '-s', '-m', String(maxTime), '-X', method, '-w', '\n%{http_code}', `${URL_BASE}${path}`], 30_000);
  const out = r.stdout;
  const i = out.lastIndexOf('\n');
  return { status: out.slice(i + 1).trim(), body: out.slice(0, i) };
}

function l7Flows(args: string[], pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--type', 'l7', ...args], pred);
}

test('without policy both ships land; GET /v1 describes the station', async () => {
  assert.deepEqual(await curl('tiefighter', 'POST', '/v1/request-landing'), { status: '200', body: 'Ship landed\n' });
  assert.deepEqual(await curl('xwing', 'POST', '/v1/request-landing'), { status: '200', body: 'Ship landed\n' });
  const d = await curl('xwing', 'GET', '/v1');
  assert.equal(d.status, '200');
  assert.equal((JSON.parse(d.body) as { name: string }).name, 'Death Star');
});

test('L3/L4 rule1: the xwing is dropped (POLICY_DENIED), the tiefighter lands', async () => {
  const since = new Date().toISOString();
  await lab.ok(['apply', '-f', join(EX, 'sw_l3_l4_policy.yaml')]);
  await lab.settle();
  assert.deepEqual(await curl('tiefighter', 'POST', '/v1/request-landing'), { status: '200', body: 'Ship landed\n' });
  assert.equal((await curl('xwing', 'POST', '/v1/request-landing', 2)).status, '000');
  const denied = (fs: Flow[]) => fs.filter((f) => f.drop_reason_desc === 'POLICY_DENIED');
  const drops = denied(await lab.waitFlows(['--from-pod', 'default/xwing', '--verdict', 'DROPPED', '--since', since], (fs) => denied(fs).length > 0));
  assert.ok(drops.length > 0, 'a POLICY_DENIED drop from the xwing');
  assert.match(drops[0]!.destination?.pod_name ?? '', /^deathstar-/);
});

test('L7 rule1: POST /v1/request-landing lands, PUT /v1/exhaust-port gets 403 Access denied; L7 flows', async () => {
  const since = new Date().toISOString();
  await lab.ok(['apply', '-f', join(EX, 'sw_l3_l4_l7_policy.yaml')]);
  await lab.settle();
  assert.deepEqual(await curl('tiefighter', 'POST', '/v1/request-landing'), { status: '200', body: 'Ship landed\n' });
  const put = await curl('tiefighter', 'PUT', '/v1/exhaust-port');
  assert.deepEqual(put, { status: '403', body: 'Access denied\r\n' }, 'Cilium\'s 403 body');
  assert.equal((await curl('xwing', 'POST', '/v1/request-landing', 2)).status, '000', 'the xwing is still dropped at L3/L4');
  // the deathstar never exploded
  const put2 = await lab.exec('default', 'tiefighter', ['curl', '-s', '-i', '-m', '5', '-X', 'PUT', `${URL_BASE}/v1/exhaust-port`]);
  assert.match(put2.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(put2.stdout, /\r\ncontent-type: text\/plain\r\n/i);
  assert.doesNotMatch(put2.stdout, /Panic/);

  const fs = await l7Flows(['--pod', 'default/tiefighter', '--since', since], (x) => x.filter((f) => f.verdict === 'DROPPED').length >= 2 && x.some((f) => f.verdict === 'FORWARDED' && f.is_reply));
  const http = (f: Flow) => (f.l7 as { type?: string; http?: { method?: string; url?: string; code?: number } } | undefined);
  const deniedReq = fs.find((f) => f.verdict === 'DROPPED' && http(f)?.type === 'REQUEST' && http(f)?.http?.method === 'PUT');
  assert.ok(deniedReq, `a DROPPED http-request PUT: ${JSON.stringify(fs.slice(-4))}`);
  assert.equal(http(deniedReq)!.http!.url, `${URL_BASE}/v1/exhaust-port`);
  assert.equal(deniedReq.traffic_direction, 'INGRESS');
  assert.equal(deniedReq.source?.pod_name, 'tiefighter');
  assert.match(deniedReq.destination?.pod_name ?? '', /^deathstar-/);
  assert.equal(deniedReq.Type, 'L7');
  const deniedRes = fs.find((f) => f.verdict === 'DROPPED' && http(f)?.type === 'RESPONSE');
  assert.equal(http(deniedRes!)!.http!.code, 403);
  assert.equal(deniedRes!.is_reply, true);
  const okRes = fs.find((f) => f.verdict === 'FORWARDED' && http(f)?.type === 'RESPONSE' && http(f)?.http?.method === 'POST');
  assert.equal(http(okRes!)!.http!.code, 200);

  // the compact lines read like Hubble's
  const compact = await lab.ok(['observe', '--type', 'l7', '--pod', 'default/tiefighter', '--since', since, '--http-method', 'PUT', '--http-status', '403']);
  assert.match(compact, /default\/tiefighter:\d+ \(ID:\d+\) <- default\/deathstar-[a-z0-9-]+:80 \(ID:\d+\) http-response DROPPED \(HTTP\/1\.1 403 [0-9.]+(ms|µs|s) \(PUT http:\/\/deathstar\.default\.svc\.cluster\.local\/v1\/exhaust-port\)/);
  const byPath = await lab.ok(['observe', '--type', 'l7', '--since', since, '--http-path', '/v1/request-landing', '-o', 'json']);
  assert.ok(byPath.trim().split('\n').length >= 2 && !byPath.includes('exhaust-port'));
});
