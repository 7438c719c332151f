/**
 * Upgrades, CONNECT, absolute-form targets and the upstream pool, against an origin that keeps
 * reading requests after an Upgrade it ignores and logs every byte it receives (the evidence:
 * nothing the policy forbids may arrive there). The policy allows `GET /v1/models`, `GET /ws`,
 * `POST /v1/chat/completions` and `CONNECT` to api.openai.com:443 only (CONNECT is refused anyway).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { startOrigin, type Origin } from '../../../integration/e2e/attack-http-origin.ts';
import { rawExchange, l7, forwardingProxy, redirectingProxy } from './harness.ts';

let origin: Origin;
let proxy: HttpProxy;
let port = 0;
const received: { conn: number; data: string }[] = [];
const records: HttpAccessRecord[] = [];

before(async () => {
  origin = await startOrigin({ port: 0, host: '127.0.0.1', onBytes: (conn, _p, d) => received.push({ conn, data: d.toString('latin1') }) });
  const policy = l7([
    { method: 'GET', path: '/v1/models' }, { method: 'GET', path: '/ws' }, { method: 'POST', path: '/v1/chat/completions' },
    { method: 'CONNECT', host: 'api\\.openai\\.com:443' },
  ]);
  proxy = redirectingProxy(origin.port, policy, { onRecord: (r) => records.push(r) });
  port = (await proxy.start()).egress!.port;
});
after(async () => {
  await proxy.stop();
  await origin.close();
});

const H = 'Host: api.openai.com\r\n';
const upgradeGet = (path: string, type = 'websocket') => `GET ${path} HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: ${type}\r\n\r\n`;
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
/** what the origin answered: {conn, method, target, ...} per request it read */
const answers = (text: string) => [...text.matchAll(/\{"conn"[^\n]*\}/g)].map((m) => JSON.parse(m[0]) as { conn: number; method: string; target: string; host: string; upgrade: string | null; connection: string | null; http2Settings: string | null });
const originSaw = () => received.map((r) => r.data).join('');
const settle = () => new Promise((r) => setTimeout(r, 50));

test('an Upgrade the server does not take: the next requests are still parsed and judged; nothing forbidden reaches it', async () => {
  const mark = received.length;
  const r = await rawExchange(port, upgradeGet('/v1/models') + `DELETE /v1/files/file-x HTTP/1.1\r\n${H}\r\n` + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(r.text), [200, 403, 200]);
  assert.match(r.text, /Access denied\r\n/);
  assert.deepEqual(answers(r.text).map((a) => `${a.method} ${a.target} ${a.upgrade}`), ['GET /v1/models websocket', 'GET /v1/models null']);
  assert.equal(r.closed, false);
  const seen = received.slice(mark).map((x) => x.data).join('');
  assert.doesNotMatch(seen, /DELETE/);
  assert.ok(records.some((x) => x.type === 'request' && x.verdict === 'denied' && x.method === 'DELETE' && x.path === '/v1/files/file-x'));
});

test('an upstream connection that carried an upgrade request never goes back to the pool (no desync into the next client)', async () => {
  proxy.pool.clear();
  const mark = received.length;
  // A: an upgrade the server ignores, then an unfinished forbidden head, then A leaves
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(upgradeGet('/v1/models')));
    s.once('data', () => {
      s.write(`DELETE /v1/files/file-abc HTTP/1.1\r\n${H}Content-Length: 0\r\nX-Pad: `);
      setTimeout(() => { s.end(); resolve(); }, 50);
    });
  });
  await settle();
  assert.equal(proxy.pool.size, 0, 'the upgrade request\'s upstream connection is not pooled');
  // B: the next client from the same source: its own request, on a connection of its own
  const b = await rawExchange(port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(b.text), [200]);
  const [ans] = answers(b.text);
  assert.equal(`${ans!.method} ${ans!.target}`, 'GET /v1/models');
  const aConn = received[mark]!.conn;
  assert.notEqual(ans!.conn, aConn, 'B did not get A\'s upstream connection');
  assert.doesNotMatch(originSaw(), /DELETE/);
  // positive control: a plain keep-alive exchange does leave its connection in the pool, and it is reused
  await settle();
  assert.equal(proxy.pool.size, 1);
  const c = await rawExchange(port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.equal(answers(c.text)[0]!.conn, ans!.conn);
});

test('a client that half-closes after its request still completes the exchange (pooled); a request body cut off is never pooled', async () => {
  proxy.pool.clear();
  // the client half-closes as soon as its request is sent
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.end(`GET /v1/models HTTP/1.1\r\n${H}\r\n`); });
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('close', () => resolve());
    setTimeout(() => { s.destroy(); resolve(); }, 500);
  });
  // a half-closing client still gets its whole response; that exchange is complete: pooled
  await settle();
  assert.equal(proxy.pool.size, 1);
  proxy.pool.clear();
  // a request body the client abandons half way: the upstream has part of it
  await rawExchange(port, `POST /v1/chat/completions HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n{"model":`, { idleMs: 100 });
  await settle();
  assert.equal(proxy.pool.size, 0);
});

test('no pooling after a response the proxy did not read to its end (the client left mid-body)', async () => {
  // the server sends the head and part of the body, then waits
  const slow = net.createServer((s) => s.once('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789')));
  await new Promise<void>((res) => slow.listen(0, '127.0.0.1', res));
  const p = forwardingProxy((slow.address() as net.AddressInfo).port);
  const l = await p.start();
  try {
    await new Promise<void>((resolve) => {
      const s = net.connect(l.egress!.port, '127.0.0.1', () => s.write(`GET /v1/models HTTP/1.1\r\n${H}\r\n`));
      s.once('data', () => { s.end(); setTimeout(() => { s.destroy(); resolve(); }, 50); });
    });
    await settle();
    assert.equal(p.pool.size, 0);
  } finally {
    await p.stop();
    slow.close();
  }
});

test('WebSocket: a 101 from the server turns the connection into a tunnel (a real WebSocket client); never pooled', async () => {
  proxy.pool.clear();
  const mark = records.length;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  const got: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => { ws.send('ping'); ws.send('DELETE /v1/files/x HTTP/1.1'); };
    ws.onmessage = (m) => { got.push(String(m.data)); if (got.length === 2) ws.close(); };
    ws.onclose = () => resolve();
    ws.onerror = () => reject(new Error('WebSocket error'));
  });
  assert.deepEqual(got, ['echo:ping', 'echo:DELETE /v1/files/x HTTP/1.1']);
  await settle();
  assert.equal(proxy.pool.size, 0);
  const rs = records.slice(mark);
  assert.deepEqual(rs.map((x) => `${x.type} ${x.verdict} ${x.method} ${x.path} ${x.code}`), ['request forwarded GET /ws 0', 'response forwarded GET /ws 101']);
});

test('a WebSocket upgrade the policy denies: 403 and the connection closes', async () => {
  const r = await rawExchange(port, upgradeGet('/v1/ws-admin') + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(r.text), [403]);
  assert.match(r.text, /connection: close\r\n/);
  assert.equal(r.closed, true);
});

test('a 101 after more client bytes, or to a request that did not ask for it, is refused with 502', async () => {
  // the upgrade request and a pipelined request in one write: the server answers 101 to the
  // first but would read the second as WebSocket data; the client did not wait for the switch
  const mark = records.length;
  const r = await rawExchange(port, upgradeGet('/ws') + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(r.text), [502]);
  assert.equal(r.closed, true);
  assert.ok(records.slice(mark).some((x) => x.type === 'response' && x.code === 502 && /^upgrade_pipelined/.test(x.reason ?? '')));
  // half a head after the upgrade request: the same
  const r2 = await rawExchange(port, upgradeGet('/ws') + 'GET /v1/mod');
  assert.deepEqual(statuses(r2.text), [502]);

  // a server that switches protocols unasked
  const rogue = net.createServer((s) => s.once('data', () => s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw')));
  await new Promise<void>((res) => rogue.listen(0, '127.0.0.1', res));
  const p = forwardingProxy((rogue.address() as net.AddressInfo).port);
  const l = await p.start();
  try {
    const r3 = await rawExchange(l.egress!.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(r3.text), [502]);
    assert.doesNotMatch(r3.text, /raw/);
  } finally {
    await p.stop();
    rogue.close();
  }
});

test('h2c: the upgrade headers are removed (as Envoy does) and the request goes on as HTTP/1.1', async () => {
  const r = await rawExchange(port, `GET /v1/models HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n` +
    `DELETE /v1/files/file-h2c HTTP/1.1\r\n${H}\r\n` + `GET /v1/models HTTP/1.1\r\n${H}Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n`);
  assert.deepEqual(statuses(r.text), [200, 403, 200]);
  const a = answers(r.text);
  assert.deepEqual(a.map((x) => [x.upgrade, x.connection, x.http2Settings]), [[null, null, null], [null, 'keep-alive', null]]);
  assert.doesNotMatch(originSaw(), /DELETE|h2c|HTTP2-Settings/i);
});

test('an Upgrade header without Connection: upgrade is no upgrade: the header is dropped', async () => {
  const r = await rawExchange(port, `GET /v1/models HTTP/1.1\r\n${H}Upgrade: websocket\r\n\r\n`);
  assert.deepEqual(statuses(r.text), [200]);
  assert.equal(answers(r.text)[0]!.upgrade, null);
});

test('other upgrades: 403 upgrade_failed before the policy, and the connection closes', async () => {
  const mark = records.length;
  const r = await rawExchange(port, upgradeGet('/v1/models', 'foo/1') + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(r.text), [403]);
  assert.match(r.text, /content-length: 0\r\n/);
  assert.equal(r.closed, true);
  const rq = records.slice(mark).find((x) => x.type === 'request')!;
  assert.equal(rq.verdict, 'error');
  assert.match(rq.reason!, /^upgrade_failed/);
  // several protocols offered: Envoy looks the whole value up, and so do we
  const r2 = await rawExchange(port, upgradeGet('/ws', 'websocket, foo/1'));
  assert.deepEqual(statuses(r2.text), [403]);
});

test('CONNECT: 403 upgrade_failed before the policy, allowed host or not (Envoy\'s CONNECT support is off as Cilium configures it); nothing is tunnelled', async () => {
  const mark = received.length;
  const rmark = records.length;
  const ok = await rawExchange(port, `CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\nGET /v1/files HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(ok.text), [403]);
  assert.match(ok.text, /content-length: 0\r\n/);
  assert.equal(ok.closed, true);
  const other = await rawExchange(port, 'CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n');
  assert.deepEqual(statuses(other.text), [403]);
  assert.equal(other.closed, true);
  assert.equal(received.length, mark, 'the origin got nothing');
  assert.deepEqual(records.slice(rmark).filter((x) => x.type === 'request').map((x) => `${x.verdict} ${x.method} ${x.host} ${x.reason}`),
    ['error CONNECT api.openai.com:443 upgrade_failed: CONNECT is not allowed', 'error CONNECT evil.example:443 upgrade_failed: CONNECT is not allowed']);
  const bad = await rawExchange(port, `CONNECT /v1/models HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(bad.text), [400]);
});

test('absolute-form: the path the policy sees is the real one, forwarded in origin-form; Host must name the same authority', async () => {
  const mark = records.length;
  const r = await rawExchange(port, `GET http://api.openai.com/v1/models HTTP/1.1\r\n${H}\r\n` + `GET http://API.openai.com:80/v1/models HTTP/1.1\r\n${H}\r\n` +
    `GET http://api.openai.com?/v1/models HTTP/1.1\r\n${H}\r\n` + `GET http://api.openai.com HTTP/1.1\r\n${H}\r\n`);
  assert.deepEqual(statuses(r.text), [200, 200, 403, 403]);
  assert.deepEqual(answers(r.text).map((a) => `${a.method} ${a.target} ${a.host}`), ['GET /v1/models api.openai.com', 'GET /v1/models API.openai.com:80']);
  assert.deepEqual(records.slice(mark).filter((x) => x.type === 'request').map((x) => `${x.verdict} ${x.path}`),
    ['forwarded /v1/models', 'forwarded /v1/models', 'denied /?/v1/models', 'denied /']);
  for (const [target, host] of [['http://evil.example/v1/models', 'api.openai.com'], ['http://api.openai.com@evil.example/v1/models', 'evil.example'], ['http://api.openai.com/v1/models#x', 'api.openai.com'], ['ftp://api.openai.com/v1/models', 'api.openai.com']] as const) {
    const bad = await rawExchange(port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.deepEqual(statuses(bad.text), [400], target);
    assert.equal(bad.closed, true);
  }
});
