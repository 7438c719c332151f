/**
 * Abuse through the HTTP proxy, from a pod, on raw TCP: request smuggling shapes (Content-Length
 * with Transfer-Encoding, duplicate Content-Length, obsolete line folding, bare LF, unsupported
 * transfer codings), oversized headers, slowloris, a pipelined request hidden behind another, a
 * regex that is catastrophic for backtracking engines. Each is refused or handled with a 4xx/5xx
 * answer and an L7 flow that says why, and the proxy keeps serving everyone else.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';

const lab = new TestLab(`hab${process.pid % 10000}`);
const NS = 'hab';
let echo = '';
let script = '';

// Runs in the client pod: each case on its own connection, all at once; prints one JSON line
// {name: {statuses: [..], closed, ms}}.
const RAW_CLIENT = `
import { connect } from 'node:net';
const [host, port, file] = process.argv.slice(2);
const cases = JSON.parse((await import('node:fs')).readFileSync(file, 'utf8'));
function run(c) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = connect({ host, port: Number(port) });
    const chunks = [];
    let idle;
    let closed = false;
    const done = () => { clearTimeout(idle); s.destroy(); const text = Buffer.concat(chunks).toString('latin1'); resolve({ statuses: [...text.matchAll(/HTTP\\/1\\.1 (\\d{3})/g)].map((m) => Number(m[1])), closed, ms: Date.now() - t0, text: text.slice(0, 300) }); };
    const arm = () => { clearTimeout(idle); idle = setTimeout(done, c.idleMs ?? 1500); };
    s.on('data', (d) => { chunks.push(d); arm(); });
    s.on('end', () => { closed = true; done(); });
    s.on('error', () => { closed = true; done(); });
    s.on('connect', async () => {
      for (const p of c.parts) { s.write(typeof p === 'object' ? p.text.repeat(p.repeat) : p); if (c.gapMs) await new Promise((r) => setTimeout(r, c.gapMs)); }
      arm();
    });
  });
}
const out = {};
await Promise.all(cases.map(async (c) => { out[c.name] = await run(c); }));
console.log(JSON.stringify(out));
`;

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'echo', namespace: NS, labels: { app: 'echo' } }, spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080 }] }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-l7', namespace: NS }, spec: {
      endpointSelector: { matchLabels: { app: 'client' } },
      egress: [{ toEndpoints: [{ matchLabels: { app: 'echo' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [
        { path: '/ok' }, { path: '/(a+)+b' }, { method: 'POST', path: '/upload' },
      ] } }] }],
    } },
  ]);
  echo = (await lab.podIPs())[`${NS}/echo`]!;
  assert.ok(echo);
  script = join(await lab.dir, 'raw-client.mjs');
  await writeFile(script, RAW_CLIENT);
});
after(async () => { await lab.down(); });

interface Outcome { statuses: number[]; closed: boolean; ms: number; text: string }
async function raw(cases: { name: string; parts: (string | { text: string; repeat: number })[]; gapMs?: number; idleMs?: number }[]): Promise<Record<string, Outcome>> {
  const file = join(await lab.dir, `cases-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(cases));
  const r = await lab.exec(NS, 'client', [join(REPO, 'bin/node'), script, echo, '8080', file], 90_000);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, Outcome>;
}

function l7Flows(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--type', 'l7', '--pod', `${NS}/client`, '--since', since, '--last', '1000'], pred);
}

const H = 'Host: echo\r\n';
const CASES: [string, string[], number][] = [
  ['content_length_with_transfer_encoding', [`POST /upload HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n${H}\r\n`], 400],
  ['content_length_with_transfer_encoding', [`POST /upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n`], 400],
  ['duplicate_content_length', [`POST /upload HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc`], 400],
  ['obs_fold', [`GET /ok HTTP/1.1\r\n${H}X-Smuggle: a\r\n Transfer-Encoding: chunked\r\n\r\n`], 400],
  ['bare_lf', [`GET /ok HTTP/1.1\n${H}\n`], 400],
  ['unsupported_transfer_encoding', [`POST /upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`], 501],
];

test('smuggling shapes and oversized headers: 400-class answer, connection closed, a flow with the reason; others served', async () => {
  const since = new Date().toISOString();
  const cases = CASES.map(([reason, parts], i) => ({ name: `${i}:${reason}`, parts }));
  cases.push({ name: 'headers_too_large', parts: [`GET /ok HTTP/1.1\r\n${H}`, { text: 'X-Big: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n', repeat: 1100 } as never, '\r\n'] });
  cases.push({ name: 'normal', parts: [`GET /ok HTTP/1.1\r\n${H}\r\n`] });
  const out = await raw(cases);
  CASES.forEach(([reason, , status], i) => {
    const o = out[`${i}:${reason}`]!;
    assert.deepEqual(o.statuses, [status], `${reason}: ${o.text}`);
    assert.equal(o.closed, true, reason);
  });
  assert.deepEqual(out.headers_too_large!.statuses, [431]);
  assert.deepEqual(out.normal!.statuses, [200]);
  const fs = await l7Flows(since, (x) => x.filter((f) => f.verdict === 'DROPPED' && (f.l7 as { type?: string }).type === 'REQUEST').length >= CASES.length + 1);
  for (const reason of [...new Set(CASES.map((c) => c[0])), 'headers_too_large']) {
    const f = fs.find((x) => x.verdict === 'DROPPED' && String(x.Summary ?? '').includes(`[${reason}]`));
    assert.ok(f, `a DROPPED flow for ${reason}: ${fs.map((x) => x.Summary).join(' | ')}`);
  }
  // the smuggled GET /admin behind the refused request never reached the server nor the policy
  assert.ok(!fs.some((f) => JSON.stringify(f.l7).includes('/admin')));
});

test('pipelined requests are each decided: a request hidden behind an allowed one gets its own 403', async () => {
  const out = await raw([{ name: 'p', parts: [`GET /ok HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\n${H}\r\nGET /ok HTTP/1.1\r\n${H}Connection: close\r\n\r\n`] }]);
  assert.deepEqual(out.p!.statuses, [200, 403, 200]);
});

test('a regex catastrophic for backtracking engines ((a+)+b) decides in linear time', async () => {
  const since = new Date().toISOString();
  const out = await raw([
    { name: 'evil', parts: [`GET /${'a'.repeat(30000)}c HTTP/1.1\r\n${H}\r\n`] },
    { name: 'match', parts: [`GET /aaaab HTTP/1.1\r\n${H}\r\n`] },
  ]);
  assert.deepEqual(out.evil!.statuses, [403]);
  assert.ok(out.evil!.ms < 3000, `${out.evil!.ms} ms`);
  assert.deepEqual(out.match!.statuses, [200]);
  const fs = await l7Flows(since, (x) => x.some((f) => f.verdict === 'DROPPED'));
  assert.ok(fs.some((f) => f.verdict === 'DROPPED' && (f.l7 as { type?: string }).type === 'REQUEST'));
});

test('slowloris: a head trickling in is cut off with 408 after the header timeout, while others are served', async () => {
  const since = new Date().toISOString();
  const trickle = ['GET /ok HTTP/1.1\r\n', ...Array.from({ length: 30 }, (_, i) => `X-Slow-${i}: a\r\n`)];
  const slowP = raw([{ name: 'slow', parts: trickle, gapMs: 500, idleMs: 3000 }]);
  await new Promise((r) => setTimeout(r, 1500));
  const during = await raw([{ name: 'n', parts: [`GET /ok HTTP/1.1\r\n${H}\r\n`] }]);
  assert.deepEqual(during.n!.statuses, [200], 'served while the slow client holds its connection');
  const slow = (await slowP).slow!;
  assert.deepEqual(slow.statuses, [408]);
  assert.ok(slow.ms >= 9000 && slow.ms < 16000, `cut off after ~10 s (${slow.ms} ms)`);
  const fs = await l7Flows(since, (x) => x.some((f) => String(f.Summary ?? '').includes('[header_timeout]')));
  assert.ok(fs.some((f) => f.verdict === 'DROPPED' && String(f.Summary ?? '').includes('[header_timeout]')));
  const after = await lab.exec(NS, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', `http://${echo}:8080/ok`]);
  assert.equal(after.stdout, '200');
});
