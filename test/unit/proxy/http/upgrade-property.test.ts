/**
 * The attacker's property over the real proxy on loopback (issue 9, finding 3): whatever a
 * client sends — upgrade requests the server accepts or ignores, pipelined requests behind them,
 * forbidden requests, bodies that look like requests, WebSocket frames sent too early, half
 * heads — in any cut and timing, against a server that answers with or without 1xx and with or
 * without delay:
 *
 *   the server never parses a request the policy forbids (it reads the way Node's server does:
 *   an upgrade it accepts ends HTTP on that connection at once, an upgrade it ignores leaves
 *   HTTP), and the next client of the same pod (which may get the first one's upstream
 *   connection from the pool) gets the answer to its own request.
 *
 * Bounded in time (MEMBRANE_HTTP_FUZZ_SECS, default 4 s); MEMBRANE_HTTP_FUZZ_SEED replays.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { l7, redirectingProxy, takeRequest } from './harness.ts';

const SECS = Number(process.env.MEMBRANE_HTTP_FUZZ_SECS ?? 4);
const SEED = process.env.MEMBRANE_HTTP_FUZZ_SEED ? Number(process.env.MEMBRANE_HTTP_FUZZ_SEED) : undefined;
const H = 'Host: api.openai.com\r\n';

/** How the server answers, for one run. */
interface ServerStyle { delayMs: number; interim: boolean }
let style: ServerStyle = { delayMs: 0, interim: false };
/** Requests the server parsed as HTTP that the policy forbids: must stay empty. */
const violations: string[] = [];

let origin: net.Server;
let proxy: HttpProxy;
let port = 0;
let nextConn = 1;

before(async () => {
  origin = net.createServer((sock) => {
    const conn = nextConn++;
    let buf = '';
    let http = true;
    // answers leave in order, each after the style's delay
    let chain = Promise.resolve();
    const send = (s: string) => { chain = chain.then(() => new Promise<void>((r) => setTimeout(() => { if (!sock.destroyed) sock.write(s); r(); }, style.delayMs))); };
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      if (!http) { send(`tunnel:${d.toString('latin1')}`); return; }
      buf += d.toString('latin1');
      for (;;) {
        const t = takeRequest(buf);
        if (!t) return;
        const { headers } = t;
        buf = t.rest;
        const [method = '', target = ''] = t.line.split(' ');
        if (method !== 'GET' && method !== 'POST') violations.push(`conn ${conn}: ${t.line}`);
        const interim = style.interim ? 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n' : '';
        const upgrading = /upgrade/i.test(headers.get('connection') ?? '') && headers.get('upgrade') === 'websocket';
        if (upgrading && target === '/ws-accept') {
          // as Node's server: an upgrade it takes ends HTTP here; what follows is the new protocol's
          http = false;
          send(`${interim}HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`);
          if (buf) send(`tunnel:${buf}`);
          buf = '';
          return;
        }
        const body = `conn ${conn} ${method} ${target}`;
        send(`${interim}HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      }
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const policy = l7(['/v1/models', '/ws-accept', '/ws-decline'].flatMap((path) => [{ method: 'GET', path }, { method: 'POST', path }]));
  proxy = redirectingProxy((origin.address() as net.AddressInfo).port, policy, { headerTimeoutMs: 2000 });
  port = (await proxy.start()).egress!.port;
});
after(async () => {
  await proxy.stop();
  await new Promise<void>((r) => origin.close(() => r()));
});

const request = fc.record({
  method: fc.constantFrom('GET', 'GET', 'POST', 'DELETE'),
  path: fc.constantFrom('/v1/models', '/ws-accept', '/ws-accept', '/ws-decline', '/v1/files/x'),
  upgrade: fc.boolean(),
  body: fc.constantFrom('', '', `DELETE /v1/files/in-body HTTP/1.1\r\n${H}\r\n`, 'x'),
}).map((r) => `${r.method} ${r.path} HTTP/1.1\r\n${H}${r.upgrade ? 'Connection: Upgrade\r\nUpgrade: websocket\r\n' : ''}` +
  `${r.body ? `Content-Length: ${r.body.length}\r\n` : ''}\r\n${r.body}`);
const raw = fc.constantFrom(
  `DELETE /v1/files/raw HTTP/1.1\r\n${H}\r\n`, // meant for a tunnel that may not exist
  '\x81\x85\x00\x00\x00\x00hello', // a WebSocket frame, maybe before the 101
  'GET /v1/mod', // half a head
  '\r\n',
);
const step = fc.record({
  piece: fc.oneof({ weight: 3, arbitrary: request }, { weight: 1, arbitrary: raw }),
  cut: fc.nat(),
  waitMs: fc.constantFrom(0, 0, 20, 60),
});

/** Writes the steps on one connection (each piece in two writes at `cut`), then leaves. */
function attack(steps: { piece: string; cut: number; waitMs: number }[], lingerMs: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString('latin1'); });
    s.on('error', () => {});
    s.on('connect', async () => {
      for (const st of steps) {
        const at = st.cut % (st.piece.length + 1);
        if (s.destroyed) break;
        s.write(st.piece.slice(0, at), 'latin1');
        s.write(st.piece.slice(at), 'latin1');
        if (st.waitMs) await new Promise((r) => setTimeout(r, st.waitMs));
      }
      await new Promise((r) => setTimeout(r, lingerMs));
      s.destroy();
      resolve(text);
    });
  });
}

/** The next client of the same pod: one allowed request, its answer. */
function nextClient(): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(`GET /v1/models HTTP/1.1\r\n${H}\r\n`));
    let text = '';
    const t = setTimeout(() => { s.destroy(); resolve(text); }, 2000);
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (/\r\n\r\nconn \d+ GET \/v1\/models$/.test(text) || /tunnel:/.test(text)) { clearTimeout(t); s.destroy(); resolve(text); }
    });
    s.on('error', () => { clearTimeout(t); resolve(text); });
  });
}

test(`any client bytes, cut and timing, against a server that takes or ignores upgrades: it never parses a forbidden request, and the next client gets its own answer (${SECS} s)`, async (t) => {
  let runs = 0, tunnels = 0, refused = 0;
  await fc.assert(fc.asyncProperty(
    fc.array(step, { minLength: 1, maxLength: 5 }), fc.record({ delayMs: fc.constantFrom(0, 0, 30), interim: fc.boolean() }), fc.constantFrom(0, 50, 150),
    async (steps, st, lingerMs) => {
      runs++;
      style = st;
      violations.length = 0;
      const text = await attack(steps, lingerMs);
      if (/ 101 Switching/.test(text)) tunnels++;
      if (/ 403 Forbidden| 502 Bad Gateway| 400 Bad Request/.test(text)) refused++;
      const next = await nextClient();
      await new Promise((r) => setTimeout(r, style.delayMs + 20));
      const ctx = `${JSON.stringify(steps)} ${JSON.stringify(st)}\nfirst client got: ${JSON.stringify(text)}\nnext client got: ${JSON.stringify(next)}`;
      assert.deepEqual(violations, [], `the server parsed a forbidden request\n${ctx}`);
      assert.match(next, /^(HTTP\/1\.1 1\d\d [^\r]*\r\n(?:[^\r]+\r\n)*\r\n)*HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nconn \d+ GET \/v1\/models$/, `the next client did not get its own answer\n${ctx}`);
    },
  ), { numRuns: 100_000, interruptAfterTimeLimit: SECS * 1000, markInterruptAsFailure: false, ...(SEED !== undefined ? { seed: SEED } : {}) });
  t.diagnostic(`${runs} runs, ${tunnels} with a WebSocket tunnel, ${refused} with a refusal (403/400/502)`);
  assert.ok(runs >= 5, `${runs} runs`);
});
