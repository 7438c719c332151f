/**
 * The attacker's tests of the upgrade, framing and pool rules (issue 9, finding 3), against
 * scripted servers that answer the way a careless or hostile server could: a 101 before the
 * upgrade request's body is in, 1xx interim answers, a 101 to another protocol, bodiless HEAD and
 * 304 answers with a Content-Length, Transfer-Encoding beside Content-Length; CONNECT (refused,
 * as Cilium's Envoy does); and the Upgrade desync with pool reuse inside TLS interception.
 * Every server logs each byte it receives: nothing the policy forbids may arrive there. Each
 * attack sits beside its positive control.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import { startOrigin } from '../../../integration/e2e/attack-http-origin.ts';
import { opensslCA } from '../tls/helpers.ts';
import { rawExchange, l7, redirectingProxy, takeRequest } from './harness.ts';

const H = 'Host: api.openai.com\r\n';
const RULES = l7([
  { method: 'GET', path: '/v1/models' }, { method: 'HEAD', path: '/v1/models' }, { method: 'GET', path: '/ws' }, { method: 'POST', path: '/ws' },
  { method: 'GET', path: '/etag' }, { method: 'POST', path: '/v1/chat/completions' }, { method: 'CONNECT', host: 'api\\.openai\\.com:443' },
]);
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
const settle = (ms = 50) => new Promise((r) => setTimeout(r, ms));
const wsUpgrade = (path = '/ws', extra = '') => `GET ${path} HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\n${extra}\r\n`;

/** A request as a scripted server read it (head only; a body is read by Content-Length). */
interface SeenRequest { conn: number; line: string; headers: Map<string, string>; body: string }

/**
 * A server that answers each request head with what `answer` returns (raw bytes, written as
 * is), reads bodies by Content-Length, and after a 101 it wrote echoes raw bytes back prefixed
 * `tunnel:`. `bytes` is everything it received, per connection.
 */
async function scripted(answer: (r: SeenRequest, sock: net.Socket) => string | null) {
  const bytes: string[] = [];
  const seen: SeenRequest[] = [];
  let next = 1;
  const srv = net.createServer((sock) => {
    const conn = next++;
    bytes[conn] = '';
    let buf = '';
    let tunnel = false;
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      const s = d.toString('latin1');
      bytes[conn] += s;
      if (tunnel) { sock.write(`tunnel:${s}`); return; }
      buf += s;
      for (;;) {
        const t = takeRequest(buf);
        if (!t) return;
        const r: SeenRequest = { conn, line: t.line, headers: t.headers, body: t.body };
        buf = t.rest;
        seen.push(r);
        const out = answer(r, sock);
        if (out === null) continue;
        sock.write(out);
        if (out.includes('HTTP/1.1 101 ')) {
          tunnel = true;
          if (buf) { sock.write(`tunnel:${buf}`); buf = ''; }
          return;
        }
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, bytes: () => bytes.join(''), seen, connections: () => next - 1, close: () => srv.close() };
}

const proxies: HttpProxy[] = [];
after(async () => { for (const p of proxies) await p.stop(); });

async function proxyTo(upstreamPort: number, records: HttpAccessRecord[] = [], policy: L7Policy = RULES): Promise<{ proxy: HttpProxy; port: number; records: HttpAccessRecord[] }> {
  const proxy = redirectingProxy(upstreamPort, policy, { onRecord: (r) => records.push(r) });
  proxies.push(proxy);
  return { proxy, port: (await proxy.start()).egress!.port, records };
}

const OK = (body: string) => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
const SWITCH = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';

test('a 101 before the upgrade request\'s body is in is refused (502): the rest of the body never becomes tunnel bytes; a body sent whole is fine', async () => {
  // the server switches as soon as it has the head (it ignores Content-Length on an upgrade)
  const early = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => sock.write(SWITCH));
  });
  await new Promise<void>((r) => early.listen(0, '127.0.0.1', r));
  try {
    const p = await proxyTo((early.address() as net.AddressInfo).port);
    const r = await rawExchange(p.port, [wsUpgrade('/ws', 'Content-Length: 40\r\n') + 'DELETE /v1/', `files/x HTTP/1.1\r\n${H}\r\n012345`], { gapMs: 100 });
    assert.deepEqual(statuses(r.text), [502]);
    assert.doesNotMatch(r.text, /101/);
    assert.equal(r.closed, true);
    assert.ok(p.records.some((x) => x.type === 'response' && x.code === 502 && /^upgrade_pipelined/.test(x.reason ?? '')));
  } finally {
    early.close();
  }
  // positive control: the body arrives whole, the server reads it, then switches
  const whole = await scripted((r) => (r.line.startsWith('POST /ws') ? SWITCH : OK('x')));
  try {
    const p = await proxyTo(whole.port);
    const r = await rawExchange(p.port, [`POST /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello`, 'frame'], { gapMs: 150 });
    assert.deepEqual(statuses(r.text), [101]);
    assert.ok(r.text.endsWith('tunnel:frame'), r.text);
    assert.equal(whole.seen[0]!.body, 'hello');
  } finally {
    whole.close();
  }
});

test('1xx interim answers: passed on; a 101 after them starts the tunnel, a final 200 after them leaves HTTP that is still judged', async () => {
  const srv = await scripted((r) => {
    const interim = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n';
    if (r.line.startsWith('GET /ws')) return interim + SWITCH;
    return interim + OK(r.line);
  });
  try {
    const p = await proxyTo(srv.port);
    const t = await rawExchange(p.port, [wsUpgrade('/ws'), 'after the switch'], { gapMs: 150 });
    assert.deepEqual(statuses(t.text), [100, 103, 101]);
    assert.ok(t.text.endsWith('tunnel:after the switch'), t.text);
    // the server does not take this upgrade: interim answers, then 200; the pipelined DELETE is judged
    const h = await rawExchange(p.port, wsUpgrade('/v1/models') + `DELETE /v1/files/x HTTP/1.1\r\n${H}\r\n` + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(h.text), [100, 103, 200, 403, 100, 103, 200]);
    assert.doesNotMatch(srv.bytes(), /DELETE/);
  } finally {
    srv.close();
  }
});

test('a 101 that switches to another protocol than the websocket asked for, or without Connection: upgrade, is refused (502)', async () => {
  for (const reply of [
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n',
    'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n',
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
  ]) {
    const srv = await scripted(() => reply);
    try {
      const p = await proxyTo(srv.port);
      const r = await rawExchange(p.port, [wsUpgrade('/ws'), 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'], { gapMs: 150 });
      assert.deepEqual(statuses(r.text), [502], reply);
      assert.equal(r.closed, true);
      assert.doesNotMatch(srv.bytes(), /PRI/, 'nothing went on as another protocol');
      assert.ok(p.records.some((x) => x.type === 'response' && x.code === 502 && /^upgrade_mismatch/.test(x.reason ?? '')), reply);
    } finally {
      srv.close();
    }
  }
});

test('HEAD and 304 answers carry no body whatever their Content-Length says: the next answer is read as an answer, and the connection is pooled clean', async () => {
  const srv = await scripted((r) => {
    if (r.line.startsWith('HEAD')) return 'HTTP/1.1 200 OK\r\ncontent-length: 47\r\n\r\n';
    if (r.line.startsWith('GET /etag')) return 'HTTP/1.1 304 Not Modified\r\ncontent-length: 47\r\netag: "x"\r\n\r\n';
    return OK(`conn ${r.conn} ${r.line}`);
  });
  try {
    const p = await proxyTo(srv.port);
    const r = await rawExchange(p.port, `HEAD /v1/models HTTP/1.1\r\n${H}\r\n` + `GET /etag HTTP/1.1\r\n${H}\r\n` + `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(r.text), [200, 304, 200]);
    assert.ok(r.text.endsWith('conn 1 GET /v1/models HTTP/1.1'), r.text);
    await settle();
    assert.equal(p.proxy.pool.size, 1);
    // the next client gets the pooled connection, and its own answer
    const b = await rawExchange(p.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.ok(b.text.endsWith('conn 1 GET /v1/models HTTP/1.1'), b.text);
    assert.equal(srv.connections(), 1);
  } finally {
    srv.close();
  }
});

test('Transfer-Encoding beside Content-Length: a request is refused (400) before anything is forwarded; a response is refused (502) and its connection is never pooled', async () => {
  let smuggle = false;
  const srv = await scripted((r) => (smuggle && r.line.startsWith('GET /v1/models')
    ? 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled'
    : OK(`conn ${r.conn}`)));
  try {
    const p = await proxyTo(srv.port);
    const bad = await rawExchange(p.port, `POST /v1/chat/completions HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nDELETE /v1/files/x HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(bad.text), [400]);
    assert.equal(bad.closed, true);
    assert.equal(srv.bytes(), '', 'nothing of it reached the server');
    // positive control
    assert.deepEqual(statuses((await rawExchange(p.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`)).text), [200]);
    await settle();
    p.proxy.pool.clear();
    smuggle = true;
    const r = await rawExchange(p.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(r.text), [502]);
    assert.doesNotMatch(r.text, /smuggled/);
    await settle();
    assert.equal(p.proxy.pool.size, 0);
    smuggle = false;
    const next = await rawExchange(p.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`);
    assert.deepEqual(statuses(next.text), [200]);
    assert.doesNotMatch(next.text, /smuggled/);
  } finally {
    srv.close();
  }
});

test('CONNECT: refused (403 upgrade_failed, the connection closes) to any port, the one a rule names included; a CONNECT with a body is a 400', async () => {
  const srv = await scripted(() => OK('x'));
  try {
    const p = await proxyTo(srv.port);
    for (const port of [22, 80, 443, 65535]) {
      const r = await rawExchange(p.port, `CONNECT api.openai.com:${port} HTTP/1.1\r\nHost: api.openai.com:${port}\r\n\r\nSSH-2.0-x\r\n`);
      assert.deepEqual(statuses(r.text), [403], String(port));
      assert.equal(r.closed, true);
    }
    const body = await rawExchange(p.port, `CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\nContent-Length: 3\r\n\r\nabc`);
    assert.deepEqual(statuses(body.text), [400]);
    assert.equal(srv.bytes(), '', 'the server got nothing');
    const reqs = p.records.filter((x) => x.type === 'request').map((x) => `${x.verdict} ${x.method} ${x.host}`);
    assert.deepEqual(reqs, ['error CONNECT api.openai.com:22', 'error CONNECT api.openai.com:80', 'error CONNECT api.openai.com:443', 'error CONNECT api.openai.com:65535', 'error  ']);
    // positive control: the same connection shape with an allowed request is served
    assert.deepEqual(statuses((await rawExchange(p.port, `GET /v1/models HTTP/1.1\r\n${H}\r\n`)).text), [200]);
  } finally {
    srv.close();
  }
});

test('an empty line split between reads before a request is skipped, as llhttp does', async () => {
  const srv = await scripted((r) => OK(r.line));
  try {
    const p = await proxyTo(srv.port);
    const r = await rawExchange(p.port, ['\r', `\nGET /v1/models HTTP/1.1\r\n${H}\r\n`], { gapMs: 50 });
    assert.deepEqual(statuses(r.text), [200]);
    const bad = await rawExchange(p.port, ['\r', `GET /v1/models HTTP/1.1\r\n${H}\r\n`], { gapMs: 50 });
    assert.deepEqual(statuses(bad.text), [400]);
  } finally {
    srv.close();
  }
});

test('TLS interception: the Upgrade desync with pool reuse smuggles nothing (the origin logs every decrypted byte); a WebSocket the origin accepts works', async () => {
  const interceptCA = opensslCA('interception CA');
  const originCA = opensslCA('origin CA');
  const issuer = await CertificateIssuer.fromPem(originCA.cert, originCA.key);
  const received: { conn: number; data: string }[] = [];
  const origin = await startOrigin({ port: 0, host: '127.0.0.1', tlsContext: async (n) => (await issuer.certFor(n)).context, onBytes: (conn, _p, d) => received.push({ conn, data: d.toString('latin1') }) });
  const secrets = new TlsSecrets();
  secrets.set('default', 'intercept', { 'tls.crt': interceptCA.cert, 'tls.key': interceptCA.key, 'ca.crt': originCA.cert });
  const policy: L7Policy = {
    parser: 'http',
    perSelector: [{
      selector: 's', identities: 'all', origins: [], http: RULES.perSelector[0]!.http,
      terminatingTLS: { secret: { name: 'intercept' } }, originatingTLS: { secret: { name: 'intercept' } },
    }],
  };
  const records: HttpAccessRecord[] = [];
  const proxy = redirectingProxy(origin.port, policy, {
    onRecord: (r) => records.push(r),
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: () => {} })); },
  });
  proxies.push(proxy);
  const port = (await proxy.start()).egress!.port;
  /**
   * One TLS connection: write each step, wait until what it expects came back (a loaded machine can
   * take far longer than the quiet `wait`), then `wait` more so that anything extra (a smuggled
   * response) would be seen too; collect what comes back.
   */
  const session = (steps: { write: string; wait: number; until?: (text: string) => boolean }[]) => new Promise<{ text: string; closed: boolean }>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.com', ca: interceptCA.cert });
    let text = '';
    let closed = false;
    s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
    s.on('end', () => { closed = true; });
    s.on('error', () => { closed = true; });
    s.once('secureConnect', async () => {
      for (const st of steps) {
        s.write(Buffer.from(st.write, 'latin1'));
        for (const deadline = Date.now() + 15_000; st.until && !st.until(text) && !closed && Date.now() < deadline;) await settle(10);
        await settle(st.wait);
      }
      s.end();
      await settle(100);
      s.destroy();
      resolve({ text, closed });
    });
  });
  try {
    // A: an upgrade the origin ignores (not /ws), then an unfinished forbidden head, then A leaves
    const a = await session([{ write: wsUpgrade('/v1/models'), until: (t: string) => statuses(t).length >= 1, wait: 200 }, { write: `DELETE /v1/files/file-abc HTTP/1.1\r\n${H}Content-Length: 0\r\nX-Pad: `, wait: 100 }]);
    assert.deepEqual(statuses(a.text), [200]);
    await settle();
    assert.equal(proxy.pool.size, 0, 'the upgrade request\'s upstream connection is not pooled');
    // B: the next client's allowed request is answered for itself, on a connection of its own
    const b = await session([{ write: `GET /v1/models HTTP/1.1\r\n${H}\r\n`, until: (t: string) => statuses(t).length >= 1, wait: 200 }]);
    assert.deepEqual(statuses(b.text), [200]);
    assert.match(b.text, /"method":"GET","target":"\/v1\/models"/);
    const aConn = Number(/"conn":(\d+)/.exec(a.text)![1]);
    assert.notEqual(Number(/"conn":(\d+)/.exec(b.text)![1]), aConn);
    // C: a forbidden request pipelined behind the upgrade request is judged
    const c = await session([{ write: wsUpgrade('/v1/models') + `DELETE /v1/files/file-xyz HTTP/1.1\r\n${H}\r\n`, until: (t: string) => statuses(t).length >= 2, wait: 300 }]);
    assert.deepEqual(statuses(c.text), [200, 403]);
    // D: a WebSocket the origin accepts: the handshake, then one masked text frame (mask key 0)
    const d = await session([{ write: wsUpgrade('/ws', 'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'), until: (t: string) => statuses(t).length >= 1, wait: 200 }, { write: '\x81\x85\x00\x00\x00\x00hello', until: (t: string) => t.endsWith('echo:hello'), wait: 200 }]);
    assert.deepEqual(statuses(d.text), [101]);
    assert.ok(d.text.endsWith('\x81\x0aecho:hello'), JSON.stringify(d.text));
    const all = received.map((x) => x.data).join('');
    assert.match(all, /GET \/v1\/models HTTP\/1\.1/);
    assert.doesNotMatch(all, /DELETE|file-abc|file-xyz/);
    assert.ok(records.some((x) => x.type === 'request' && x.verdict === 'denied' && x.method === 'DELETE' && x.url === 'https://api.openai.com/v1/files/file-xyz'));
  } finally {
    await origin.close();
  }
});
