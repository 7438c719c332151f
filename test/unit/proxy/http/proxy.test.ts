import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { startHarness, rawExchange, l7, forwardingProxy, type Harness } from './harness.ts';

let h: Harness;
before(async () => { h = await startHarness({ headerTimeoutMs: 300, maxHeadBytes: 4096 }); });
after(async () => { await h.close(); });

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: svc\r\n${extra}\r\n`;
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

test('full-path match: /public allowed, /public/x and /private answered 403 Access denied, keep-alive kept', async () => {
  h.setPolicy(l7([{ method: 'GET', path: '/public' }]));
  const r = await rawExchange(h.port, get('/public') + get('/public/x') + get('/private') + get('/public'));
  assert.deepEqual(statuses(r.text), [200, 403, 403, 200]);
  assert.equal(r.closed, false);
  assert.match(r.text, /HTTP\/1\.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text\/plain\r\n[^]*\r\n\r\nAccess denied\r\n/);
});

test('methods, host and header rules ORed; headerMatches mismatch actions rewrite the request', async () => {
  h.setPolicy(l7([
    { method: 'POST', path: '/v1/request-landing' },
    { method: 'GET', path: '/v1/.*', host: 'svc' },
    { headers: ['X-Token: secret'] },
    { path: '/add', headerMatches: [{ name: 'X-Env', value: 'prod', mismatch: 'ADD' }] },
    { path: '/replace', headerMatches: [{ name: 'X-Env', value: 'prod', mismatch: 'REPLACE' }] },
    { path: '/delete', headerMatches: [{ name: 'X-Env', value: 'prod', mismatch: 'DELETE' }] },
  ]));
  const before = h.upstreamRequests.length;
  const r = await rawExchange(h.port, [
    'POST /v1/request-landing HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\nship',
    'PUT /v1/exhaust-port HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\nboom',
    get('/v1/anything'),
    'GET /v1/x HTTP/1.1\r\nHost: other\r\n\r\n',
    get('/other', 'X-Token: secret\r\n'),
    get('/other', 'X-Token: wrong\r\n'),
    get('/add', 'X-Env: dev\r\n'),
    get('/replace', 'X-Env: dev\r\n'),
    get('/delete', 'X-Env: dev\r\n'),
  ]);
  assert.deepEqual(statuses(r.text), [200, 403, 200, 403, 200, 403, 200, 200, 200]);
  const seen = h.upstreamRequests.slice(before);
  assert.deepEqual(seen.map((s) => `${s.method} ${s.url}`), ['POST /v1/request-landing', 'GET /v1/anything', 'GET /other', 'GET /add', 'GET /replace', 'GET /delete']);
  assert.equal(seen[0]!.body, 'ship');
  assert.equal(seen[3]!.headers['x-env'], 'dev, prod');
  assert.equal(seen[4]!.headers['x-env'], 'prod');
  assert.equal(seen[5]!.headers['x-env'], undefined);
});

test('an L4-only rule (null L7) opens everything; no entry (drop) denies everything', async () => {
  h.setPolicy(l7(null));
  assert.deepEqual(statuses((await rawExchange(h.port, get('/x') + get('/y'))).text), [200, 200]);
  h.setPolicy(null);
  assert.deepEqual(statuses((await rawExchange(h.port, get('/x'))).text), [403]);
});

test('bodies stream (chunked requests and responses), pipelined order kept with slow responses', async () => {
  h.setPolicy(l7([{ path: '/slow.*' }, { path: '/chunked' }, { method: 'POST' }]));
  const r = await rawExchange(h.port, [
    'POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n',
    '4\r\ndefg\r\n0\r\n\r\n',
    get('/slow1') + get('/denied') + get('/slow2') + get('/chunked'),
  ], { gapMs: 20 });
  assert.deepEqual(statuses(r.text), [200, 200, 403, 200, 200]);
  assert.match(r.text, /POST \/up 7/);
  const order = [...r.text.matchAll(/slow \/slow\d|Access denied|part1-\r\n[0-9a-f]+\r\npart2/g)].map((m) => m[0].slice(0, 11));
  assert.deepEqual(order, ['slow /slow1', 'Access deni', 'slow /slow2', 'part1-\r\n5\r\n']);
});

test('abuse: smuggling variants, oversized head, slowloris each refused and recorded; others still served', async () => {
  h.setPolicy(l7(null));
  const cases: [string | string[], number, string][] = [
    ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'content_length_with_transfer_encoding'],
    ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde', 400, 'duplicate_content_length'],
    ['GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n', 400, 'obs_fold'],
    ['GET / HTTP/1.1\nHost: a\n\n', 400, 'bare_lf'],
    [`GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(5000)}\r\n\r\n`, 431, 'headers_too_large'],
  ];
  for (const [payload, status, reason] of cases) {
    const n = h.records.length;
    const r = await rawExchange(h.port, payload);
    assert.deepEqual(statuses(r.text), [status], reason);
    assert.equal(r.closed, true, reason);
    const recs = h.records.slice(n);
    assert.ok(recs.some((x) => x.type === 'request' && x.verdict === 'error' && x.reason === reason), `${reason}: ${JSON.stringify(recs)}`);
    assert.ok(recs.some((x) => x.type === 'response' && x.code === status));
  }
  // slowloris: a head trickling in is cut off with 408 while a normal client is served
  const n = h.records.length;
  const slow = rawExchange(h.port, ['GET / HTTP/1.1\r\n', 'Host: a\r\n', 'X-1: a\r\n', 'X-2: a\r\n', 'X-3: a\r\n', 'X-4: a\r\n'], { gapMs: 150, idleMs: 1500 });
  const normal = await rawExchange(h.port, get('/ok'));
  assert.deepEqual(statuses(normal.text), [200]);
  const s = await slow;
  assert.deepEqual(statuses(s.text), [408]);
  assert.ok(h.records.slice(n).some((x) => x.reason === 'header_timeout'));
});

test('a regex that is catastrophic for backtracking engines is decided in linear time', async () => {
  h.setPolicy(l7([{ path: '/(a+)+b' }]));
  const t0 = Date.now();
  const r = await rawExchange(h.port, get(`/${'a'.repeat(3000)}c`) + get('/aaab'));
  assert.deepEqual(statuses(r.text), [403, 200]);
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
});

test('records: trace context from traceparent, latency on responses, request headers as sent', async () => {
  h.setPolicy(l7(null));
  const n = h.records.length;
  await rawExchange(h.port, get('/t', 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nAuthorization: Bearer x\r\n'));
  const recs = h.records.slice(n);
  const req = recs.find((r) => r.type === 'request')!;
  const res = recs.find((r) => r.type === 'response')!;
  assert.equal(req.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(res.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(req.url, 'http://svc/t');
  assert.ok(res.latencyNs > 0);
  assert.equal(res.code, 200);
});

test('upstream unreachable: 503 and a record, the proxy keeps serving', async () => {
  const dead = net.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = (dead.address() as net.AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const records: HttpAccessRecord[] = [];
  const p = forwardingProxy(deadPort, { onRecord: (x) => records.push(x) });
  const l = await p.start();
  const r = await rawExchange(l.egress!.port, get('/x'));
  assert.deepEqual(statuses(r.text), [503]);
  assert.equal(r.closed, true);
  assert.deepEqual(records.map((x) => [x.type, x.verdict, x.code, x.reason, x.url]), [
    ['request', 'forwarded', 0, undefined, 'http://svc/x'],
    ['response', 'error', 503, 'upstream_reset_before_response_started', 'http://svc/x'],
  ]);
  // the proxy keeps serving: the next connection, to an upstream that is there, gets its 200
  const live = http.createServer((_q, s) => s.end('up'));
  await new Promise<void>((res) => live.listen(deadPort, '127.0.0.1', res));
  try {
    const again = await rawExchange(l.egress!.port, get('/y'), { idleMs: 1000 });
    assert.deepEqual(statuses(again.text), [200]);
    assert.match(again.text, /\r\n\r\nup$/);
    assert.deepEqual(records.slice(2).map((x) => [x.type, x.verdict, x.code]), [['request', 'forwarded', 0], ['response', 'forwarded', 200]]);
  } finally {
    await p.stop();
    live.closeAllConnections();
    await new Promise<void>((res) => live.close(() => res()));
  }
});

test('Connection: close from clients: each client connection closes, the upstream connection is reused', async () => {
  h.setPolicy(l7(null));
  const before = h.upstreamConnections();
  for (let i = 0; i < 5; i++) {
    const r = await rawExchange(h.port, get('/c', 'Connection: close\r\n'), { idleMs: 1000 });
    assert.deepEqual(statuses(r.text), [200]);
    assert.match(r.text, /\r\nconnection: close\r\n/i);
    // the origin's own Connection: keep-alive and Keep-Alive fields are hop-by-hop: removed
    assert.equal(r.text.match(/\r\n(connection|keep-alive):/gi)?.length, 1, r.text);
    assert.equal(r.closed, true);
  }
  assert.ok(h.upstreamConnections() - before <= 1, `${h.upstreamConnections() - before} upstream connections for 5 client connections`);
  const seen = h.upstreamRequests.slice(-5);
  assert.ok(seen.every((x) => x.headers.connection !== 'close'), 'Connection is hop-by-hop');
});

test('Connection: close from a client, an origin head without connection fields: the head goes as received with connection: close before its empty line, framing intact', async () => {
  const { createServer } = await import('node:net');
  const head = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-odd:   spaced value \r\n\r\n';
  const up = createServer((sock) => {
    // the whole answer in one write (head and body in one read at the proxy), and in pieces
    let n = 0;
    sock.on('data', () => {
      if (n++ === 0) sock.write(head + 'hello');
      else { sock.write(head.slice(0, 20)); setTimeout(() => sock.write(head.slice(20) + 'hel'), 20); setTimeout(() => sock.write('lo'), 40); }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const p = forwardingProxy((up.address() as net.AddressInfo).port);
  const l = await p.start();
  try {
    for (let i = 0; i < 2; i++) {
      const r = await rawExchange(l.egress!.port, get('/a', 'Connection: close\r\n'));
      assert.equal(r.text, 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-odd:   spaced value \r\nconnection: close\r\n\r\nhello');
      assert.equal(r.closed, true);
    }
    assert.equal(p.pool.size, 1, 'the upstream connection stays open for the next client');
  } finally {
    await p.stop();
    up.close();
  }
});

test('Connection: close from a client, a 20 kB body (written beside its head, not copied with it): head, connection: close and body arrive intact and in order', async () => {
  const { createServer } = await import('node:net');
  const body = 'b'.repeat(20_000) + 'end';
  const answer = `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const up = createServer((sock) => {
    sock.on('data', () => sock.write(answer));
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const p = forwardingProxy((up.address() as net.AddressInfo).port);
  const l = await p.start();
  try {
    const r = await rawExchange(l.egress!.port, get('/a', 'Connection: close\r\n'));
    assert.equal(r.text, `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    assert.equal(r.closed, true);
  } finally {
    await p.stop();
    up.close();
  }
});

test('large bodies stream through without being buffered whole (50 MiB upload, chunked and sized)', async () => {
  h.setPolicy(l7([{ method: 'POST', path: '/up' }]));
  const size = 50 * 1024 * 1024;
  const before = process.memoryUsage().rss;
  const { request } = await import('node:http');
  const send = (chunked: boolean) => new Promise<string>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: h.port, method: 'POST', path: '/up', headers: chunked ? {} : { 'content-length': String(size) } }, (res) => {
      let b = '';
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve(`${res.statusCode} ${b}`));
    });
    req.on('error', reject);
    const block = Buffer.alloc(64 * 1024, 120);
    let sent = 0;
    const base = h.upstreamBodyBytes();
    const pump = async () => {
      while (sent < size) {
        if (sent === size / 2) {
          // half sent: the upstream must already be reading (a proxy that buffers the whole body sends nothing yet)
          const t0 = Date.now();
          while (h.upstreamBodyBytes() - base < 1024 * 1024 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
          midway.push(h.upstreamBodyBytes() - base);
        }
        sent += block.length;
        if (!req.write(block)) { req.once('drain', () => void pump()); return; }
      }
      req.end();
    };
    void pump();
  });
  const midway: number[] = [];
  assert.equal(await send(false), `200 POST /up ${size}`);
  assert.equal(await send(true), `200 POST /up ${size}`);
  assert.equal(midway.length, 2);
  for (const got of midway) assert.ok(got >= 1024 * 1024 && got <= size / 2, `upstream had ${got} bytes when the client had sent half`);
  // the harness upstream concatenates bodies itself; the proxy adds far less than a body
  assert.ok(process.memoryUsage().rss - before < 400 * 1024 * 1024);
});

test('Upgrade: after 101 the connection is a tunnel both ways', async () => {
  const { createServer } = await import('node:net');
  const { createHttpProxy } = await import('../../../../src/proxy/http/proxy.ts');
  const up = createServer((s) => {
    s.once('data', (first: Buffer) => {
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      const rest = first.subarray(first.indexOf('\r\n\r\n') + 4);
      if (rest.length) s.write(`echo:${rest}`);
      s.on('data', (d) => s.write(`echo:${d}`));
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const p = createHttpProxy({
    policy: { endpointByIp: () => ({ id: 1, identity: 1, namespace: '', pod: '', labels: [] }), identityOf: () => 2, lookup: (_e, d) => (d === 'egress' ? { verdict: 'redirect', l7: l7([{ path: '/ws' }]) } : { verdict: 'forward', l7: null }), revision: () => 0 },
    listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: (up.address() as net.AddressInfo).port },
  });
  const l = await p.start();
  try {
    const r = await rawExchange(l.egress!.port, ['GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', 'ping', 'pong'], { gapMs: 100 });
    assert.match(r.text, /^HTTP\/1\.1 101 /);
    assert.match(r.text, /echo:pingecho:pong$/);
  } finally {
    await p.stop();
    up.close();
  }
});

test('a pooled upstream connection closed by the server as it is reused: bodiless requests are sent again', async () => {
  const { createServer } = await import('node:net');
  let conns = 0;
  const up = createServer((sock) => {
    conns++;
    let n = 0;
    sock.on('data', () => {
      n++;
      if (n === 1) sock.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst');
      else sock.destroy(); // the keep-alive race: the server gives up on the idle connection
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const p = forwardingProxy((up.address() as net.AddressInfo).port);
  const l = await p.start();
  try {
    const a = await rawExchange(l.egress!.port, get('/a', 'Connection: close\r\n'));
    assert.match(a.text, /first$/);
    assert.equal(p.pool.size, 1);
    const b = await rawExchange(l.egress!.port, get('/b', 'Connection: close\r\n'));
    assert.deepEqual(statuses(b.text), [200]);
    assert.match(b.text, /first$/);
    assert.equal(conns, 2);
  } finally {
    await p.stop();
    up.close();
  }
});

test('idle pooled upstream connections: one the server speaks on unasked or closes leaves the pool (its bytes reach no client); the sweep closes those idle too long', async () => {
  const { createServer } = await import('node:net');
  const socks: net.Socket[] = [];
  const up = createServer((sock) => {
    socks.push(sock);
    sock.on('data', () => { sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'); });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const p = forwardingProxy((up.address() as net.AddressInfo).port);
  const l = await p.start();
  const until = async (cond: () => boolean) => { for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10)); };
  try {
    // the attacker's origin answers a request nobody sent on an idle connection: a smuggled
    // response the next client of the pool must never read as its own
    assert.deepEqual(statuses((await rawExchange(l.egress!.port, get('/a', 'Connection: close\r\n'))).text), [200]);
    assert.equal(p.pool.size, 1);
    socks[0]!.write('HTTP/1.1 302 Found\r\nlocation: http://evil/\r\ncontent-length: 0\r\n\r\n');
    await until(() => p.pool.size === 0);
    assert.equal(p.pool.size, 0, 'the connection that spoke unasked left the pool');
    const b = await rawExchange(l.egress!.port, get('/b', 'Connection: close\r\n'));
    assert.deepEqual(statuses(b.text), [200]);
    assert.doesNotMatch(b.text, /302|evil/);
    assert.equal(socks.length, 2, 'the next client got a new upstream connection');
    // the server closes an idle connection: it leaves the pool
    assert.equal(p.pool.size, 1);
    socks[1]!.end();
    await until(() => p.pool.size === 0);
    assert.equal(p.pool.size, 0);
    // idle longer than the pool keeps them: the sweep closes it (and the server sees it closed)
    await rawExchange(l.egress!.port, get('/c', 'Connection: close\r\n'));
    assert.equal(p.pool.size, 1);
    const closed = new Promise<void>((r) => socks[2]!.once('close', () => r()));
    p.pool.sweep(Date.now() + 1000);
    assert.equal(p.pool.size, 1, 'not yet idle too long');
    p.pool.sweep(Date.now() + p.pool.idleMs + 1000);
    assert.equal(p.pool.size, 0);
    await closed;
  } finally {
    await p.stop();
    up.close();
  }
});

test('Connection: close with a body: the body is forwarded (in the same read as the head, or later), nothing after it is read', async () => {
  h.setPolicy(l7(null));
  const body = 'x'.repeat(10);
  const head = `POST /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n`;
  const same = await rawExchange(h.port, head + body + `DELETE /after HTTP/1.1\r\nHost: a\r\n\r\n`);
  assert.match(same.text, /^HTTP\/1\.1 200 [^]*connection: close\r\n[^]*POST \/close 10$/i);
  assert.equal(same.closed, true);
  const later = await rawExchange(h.port, [head, body.slice(0, 4), body.slice(4)], { gapMs: 30 });
  assert.match(later.text, /POST \/close 10$/);
  assert.ok(!h.upstreamRequests.some((r) => r.url === '/after'), 'nothing after the closing request is read');
});
