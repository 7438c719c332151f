/**
 * Attack (issue 9, finding 3): an HTTP Upgrade the server never agrees to, used to smuggle
 * forbidden requests past the L7 policy — in plain HTTP and inside TLS interception — and the
 * upgrades that do happen: a WebSocket the server accepts with 101, and h2c (its upgrade headers
 * are removed, as Cilium's Envoy does).
 *
 * The restricted pod may only `POST /v1/chat/completions`, `GET /v1/models` and `GET /ws`:
 *   - to `origin`, a pod that reads requests the way many servers do (after an Upgrade it ignores
 *     it reads the next request on the connection) and logs every byte it receives — the
 *     evidence that nothing forbidden ever arrived; port 80 plain, 443 intercepted;
 *   - to api.openai.com (the lab's world host), the issue's own target; 80 plain, 443 intercepted.
 *
 * The attack, connection after connection from the same pod (they share the proxy's upstream pool):
 *   A  an allowed GET with `Connection: Upgrade` + `Upgrade: websocket` that the server does not
 *      take, then an unfinished forbidden DELETE head, then A leaves: the pool would hand its
 *      upstream connection, DELETE half sent, to the next client
 *   B  an allowed GET, which would complete A's DELETE and receive its answer
 *   C  the upgrade GET with a forbidden DELETE pipelined in the same write
 *   D  the same behind an h2c upgrade attempt
 * On the code before this change the origin executed both smuggled DELETEs (B received the answer
 * to A's), and against api.openai.com B got no answer at all.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';

const lab = new TestLab(`ahu${process.pid % 10000}`);
const NS = 'ahu';
const CLIENT = join(REPO, 'test/integration/e2e/attack-http-client.ts');
let ICA = '';
let ORIGIN = '';
let originLog = '';

const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS }, spec });
const RULES = [{ method: 'POST', path: '/v1/chat/completions' }, { method: 'GET', path: '/v1/models' }, { method: 'GET', path: '/ws' }];
const ports = (rules: object[]) => [
  { ports: [{ port: '80', protocol: 'TCP' }], rules: { http: rules } },
  { ports: [{ port: '443', protocol: 'TCP' }], terminatingTLS: { secret: { name: 'tls-intercept' } }, originatingTLS: { secret: { name: 'tls-intercept' } }, rules: { http: rules } },
];

before(async () => {
  await lab.up();
  const dir = await lab.dir;
  const stateDir = lab.paths.stateDir;
  ICA = join(dir, 'ica.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ica.key'), '-out', ICA,
    '-days', '2', '-subj', '/CN=membrane attack test interception CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], { stdio: 'ignore' });
  // tls.crt/tls.key: the interception CA the pod trusts; ca.crt: the lab CA the origins' certificates chain to
  const secret = await lab.ok(['lab', 'ca', '--secret', 'tls-intercept', '-n', NS, '--cert', ICA, '--key', join(dir, 'ica.key')]);
  await lab.ok(['apply', '-f', '-'], { input: `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n---\n${secret}` });
  originLog = join(dir, 'origin-bytes.jsonl');
  const ready = join(dir, 'origin.ready');
  await lab.apply([
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'origin', namespace: NS, labels: { app: 'origin' } },
      spec: { containers: [{
        name: 'c', image: 'local/attack-origin',
        command: [join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/attack-http-origin.ts'), '--port=80', '--tls-port=443', `--state-dir=${stateDir}`, `--log=${originLog}`, `--ready=${ready}`],
        ports: [{ containerPort: 80, protocol: 'TCP' }, { containerPort: 443, protocol: 'TCP' }],
      }] },
    },
    cnp('client-egress', {
      endpointSelector: { matchLabels: { app: 'client' } },
      egress: [
        {
          toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
          toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*.openai.com' }] } }],
        },
        { toEndpoints: [{ matchLabels: { app: 'origin' } }], toPorts: ports(RULES) },
        { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: ports(RULES) },
      ],
    }),
  ]);
  ORIGIN = (await lab.podIPs())[`${NS}/origin`]!;
  assert.ok(ORIGIN);
  for (let i = 0; i < 80 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 250));
  assert.ok(existsSync(ready), 'the origin pod serves');
});
after(async () => { await lab.down(); });

type Step = { write?: string; wait?: number; close?: boolean };
type Reply = { text: string; closed: boolean };
async function run(plan: object): Promise<string> {
  const file = join(await lab.dir, `plan-${Date.now()}-${Math.random().toString(16).slice(2)}.json`);
  await writeFile(file, JSON.stringify(plan));
  const r = await lab.exec(NS, 'client', [join(REPO, 'bin/node'), CLIENT, file], 90_000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split('\n').pop()!;
}
async function attack(target: { host: string; port: number; servername?: string }, connections: Step[][]): Promise<Reply[]> {
  const tlsOpt = target.servername ? { tls: { servername: target.servername, ca: ICA } } : {};
  return JSON.parse(await run({ host: target.host, port: target.port, connections, ...tlsOpt })) as Reply[];
}

const H = 'Host: api.openai.com\r\n';
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
/** What a server said it parsed: "METHOD path" per JSON answer (the origin: target, the world echo: path). */
const seenByServer = (text: string) => [...text.matchAll(/"method":"([A-Z]+)","(?:target|path)":"([^"]*)"/g)].map((m) => `${m[1]} ${m[2]}`);
const originConn = (text: string) => Number(/"conn":(\d+)/.exec(text)?.[1] ?? -1);
/** Everything the origin received on one of its ports since `mark` (a line count of its log). */
function originBytes(port: number, mark: number): { lines: number; text: string } {
  const lines = existsSync(originLog) ? readFileSync(originLog, 'utf8').split('\n').filter(Boolean) : [];
  const text = lines.slice(mark).map((l) => JSON.parse(l) as { port: number; data: string }).filter((x) => x.port === port).map((x) => x.data).join('');
  return { lines: lines.length, text };
}

async function l7Flows(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 20; i++) {
    fs = await lab.flows(['--type', 'l7', '--pod', `${NS}/client`, '--since', since, '--last', '1000']);
    if (pred(fs)) return fs;
    await new Promise((r) => setTimeout(r, 250));
  }
  return fs;
}
type L7 = { type?: string; http?: { method?: string; url?: string; code?: number } };
const l7 = (f: Flow) => f.l7 as L7 | undefined;
const requests = (fs: Flow[], verdict: string) => fs.filter((f) => f.verdict === verdict && l7(f)?.type === 'REQUEST' && l7(f)?.http).map((f) => `${l7(f)!.http!.method} ${l7(f)!.http!.url}`);

const upgradeGet = `GET /v1/models HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
const PLAN: Step[][] = [
  // A: an upgrade the server does not take, then an unfinished forbidden request left behind
  [{ write: upgradeGet, wait: 700 }, { write: `DELETE /v1/files/file-abc HTTP/1.1\r\n${H}Content-Length: 0\r\nX-Pad: `, wait: 300 }, { close: true }],
  // B: the next connection of the same pod, an allowed request (it would complete A's DELETE)
  [{ write: `GET /v1/models HTTP/1.1\r\n${H}\r\n`, wait: 1200 }, { close: true }],
  // C: a forbidden request pipelined behind the upgrade request, in the same write
  [{ write: upgradeGet + `DELETE /v1/files/file-xyz HTTP/1.1\r\n${H}\r\n`, wait: 1200 }, { close: true }],
  // D: the same behind an h2c upgrade attempt
  [{ write: `GET /v1/models HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nDELETE /v1/files/file-h2c HTTP/1.1\r\n${H}\r\n`, wait: 1200 }, { close: true }],
];

/** The answers every target must give to PLAN (the positive controls included). */
function assertAnswers([a, b, c, d]: Reply[]): void {
  // the allowed upgrade request itself is served (as a plain request: the server did not switch)
  assert.deepEqual(seenByServer(a!.text), ['GET /v1/models'], `A: ${a!.text}`);
  // the next client's allowed request is answered for itself, not for a smuggled DELETE
  assert.deepEqual(statuses(b!.text), [200], `B: ${b!.text}`);
  assert.deepEqual(seenByServer(b!.text), ['GET /v1/models'], `B got the answer to another request: ${b!.text}`);
  // requests pipelined behind an upgrade the server did not take are judged: 403
  assert.deepEqual(statuses(c!.text), [200, 403], `C: ${c!.text}`);
  assert.deepEqual(seenByServer(c!.text), ['GET /v1/models']);
  assert.match(c!.text, /Access denied\r\n$/);
  assert.deepEqual(statuses(d!.text), [200, 403], `D: ${d!.text}`);
  assert.deepEqual(seenByServer(d!.text), ['GET /v1/models']);
  for (const x of [a, b, c, d]) assert.doesNotMatch(x!.text, /"method":"DELETE"/, 'no DELETE reached the server');
}

async function assertFlows(since: string, url: string): Promise<void> {
  const fs = await l7Flows(since, (x) => requests(x, 'DROPPED').length >= 2 && requests(x, 'FORWARDED').length >= 4);
  const dropped = requests(fs, 'DROPPED');
  assert.ok(dropped.includes(`DELETE ${url}/v1/files/file-xyz`), `a DROPPED flow for the pipelined DELETE: ${dropped.join(' | ')}`);
  assert.ok(dropped.includes(`DELETE ${url}/v1/files/file-h2c`), dropped.join(' | '));
  const forwarded = requests(fs, 'FORWARDED');
  assert.ok(forwarded.length >= 4 && forwarded.every((x) => x === `GET ${url}/v1/models`), forwarded.join(' | '));
}

async function originDesync(port: number, servername?: string): Promise<void> {
  const since = new Date().toISOString();
  const mark = originBytes(port, 0).lines;
  const replies = await attack({ host: ORIGIN, port, ...(servername ? { servername } : {}) }, PLAN);
  assertAnswers(replies);
  const [a, b, , d] = replies;
  assert.notEqual(originConn(b!.text), originConn(a!.text), 'B was served on an upstream connection of its own');
  // h2c: the origin would have switched protocols had it seen the upgrade; the headers were removed
  assert.match(d!.text, /"upgrade":null,"connection":null,"http2Settings":null/);
  // the evidence: not one byte of a DELETE ever arrived at the origin
  const got = originBytes(port, mark).text;
  assert.match(got, /GET \/v1\/models HTTP\/1\.1/);
  assert.doesNotMatch(got, /DELETE|file-abc|file-xyz|file-h2c/);
  await assertFlows(since, `${servername ? 'https' : 'http'}://api.openai.com`);
}

test('plain HTTP: an Upgrade the server does not take smuggles nothing, pipelined or through the upstream pool (origin logs every byte)', async () => {
  await originDesync(80);
});

test('TLS interception: the same attack inside the intercepted connection smuggles nothing', async () => {
  await originDesync(443, 'api.openai.com');
});

test('api.openai.com, the issue\'s target: the same attack, plain and intercepted', async () => {
  for (const [port, scheme] of [[80, 'http'], [443, 'https']] as const) {
    const since = new Date().toISOString();
    assertAnswers(await attack({ host: 'api.openai.com', port, ...(port === 443 ? { servername: 'api.openai.com' } : {}) }, PLAN));
    await assertFlows(since, `${scheme}://api.openai.com`);
  }
});

test('a WebSocket the server accepts with 101: a tunnel both ways (real client, and raw frames through TLS interception); a path the policy denies is refused', async () => {
  const since = new Date().toISOString();
  const mark = originBytes(80, 0).lines;
  // a real WebSocket client (Node's); inside the accepted WebSocket the bytes are the tunnel's
  const ws = JSON.parse(await run({ websocket: `ws://${ORIGIN}/ws`, messages: ['hello', `DELETE /v1/files/file-ws HTTP/1.1\r\n${H}\r\n`] })) as { opened: boolean; received: string[]; closeCode: number };
  assert.equal(ws.opened, true);
  assert.deepEqual(ws.received, ['echo:hello', `echo:DELETE /v1/files/file-ws HTTP/1.1\r\n${H}\r\n`]);
  assert.equal(ws.closeCode, 1000);
  assert.match(originBytes(80, mark).text, /^GET \/ws HTTP\/1\.1\r\n/);
  // the policy denies the upgrade to another path: 403, never opened
  const denied = JSON.parse(await run({ websocket: `ws://${ORIGIN}/v1/realtime`, messages: [] })) as { opened: boolean };
  assert.equal(denied.opened, false);

  // through interception: the handshake, then one masked text frame (RFC 6455 §5.2, mask key 0)
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const [t] = await attack({ host: ORIGIN, port: 443, servername: 'api.openai.com' }, [[
    { write: `GET /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`, wait: 700 },
    { write: '\x81\x85\x00\x00\x00\x00hello', wait: 700 }, { close: true },
  ]]);
  assert.match(t!.text, /^HTTP\/1\.1 101 Switching Protocols\r\n[^]*sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
  assert.ok(t!.text.endsWith('\x81\x0aecho:hello'), JSON.stringify(t!.text));

  const fs = await l7Flows(since, (x) => x.filter((f) => l7(f)?.http?.code === 101).length >= 2);
  const line = (f: Flow) => `${f.verdict} ${l7(f)!.type} ${l7(f)!.http!.method} ${l7(f)!.http!.url} ${l7(f)!.http!.code ?? 0}`;
  const lines = fs.filter((f) => l7(f)?.http).map(line);
  for (const scheme of ['http', 'https']) {
    const url = scheme === 'http' ? `http://${ORIGIN}/ws` : 'https://api.openai.com/ws';
    assert.ok(lines.includes(`FORWARDED REQUEST GET ${url} 0`), lines.join(' | '));
    assert.ok(lines.includes(`FORWARDED RESPONSE GET ${url} 101`), lines.join(' | '));
  }
  assert.ok(lines.includes(`DROPPED REQUEST GET http://${ORIGIN}/v1/realtime 0`), lines.join(' | '));
});
