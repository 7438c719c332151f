/**
 * The proxy keeps each connection's parser state (head parsers, body trackers) in a pool: a new
 * connection takes the state a closed one handed back. The attacker's view: a connection cut in
 * the middle of a head or a body must leave nothing behind for the next one: a half-read head
 * glued to the next connection's bytes would be a request nobody sent (or the next client's
 * request judged as the first client's), and the smuggling refusals must hold on reused state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ParserPool } from '../../../../src/proxy/http/parser.ts';
import { l7, rawExchange, startHarness, type Harness } from './harness.ts';

const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

/** Sends `bytes`, then closes (FIN, or RST with `reset`) without waiting for an answer; resolves once the proxy has destroyed the connection. */
async function cut(h: Harness, bytes: string, reset = false): Promise<void> {
  const s = net.connect(h.port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise<void>((r) => s.on('connect', () => r()));
  await new Promise<void>((r) => s.write(bytes, () => r()));
  // the proxy read it (a head waits: no answer comes)
  await new Promise((r) => setTimeout(r, 50));
  if (reset) s.resetAndDestroy();
  else s.end();
  await until(() => h.proxy.stats().connections === 0, 'the proxy to destroy the cut connection');
  s.destroy();
}

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), `waited for ${what}`);
}

test('pooled parser state: a connection cut mid-head or mid-body leaves nothing for the next; smuggling stays refused on reused state', async () => {
  const h = await startHarness();
  try {
    h.setPolicy(l7([{ method: 'GET', path: '/ok/.*' }, { method: 'POST', path: '/up' }]));
    const cuts: [string, string, boolean][] = [
      // a head cut after a field's name and part of its value: glued to the next bytes, the
      // next connection's request line would become this field's value
      ['mid-head', 'GET /ok/first HTTP/1.1\r\nHost: a.example\r\nX-Cut: abc', false],
      // a head cut between CR and LF (the parser remembers the CR)
      ['mid-line-end', 'GET /ok/first HTTP/1.1\r\nHost: a.example\r', true],
      // a chunked body cut in a chunk's data (its tracker expects 3 more bytes)
      ['mid-body', 'POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', false],
      // a denied request's head cut in the middle of the next head
      ['after-denied', 'GET /denied HTTP/1.1\r\nHost: a.example\r\n\r\nGET /ok/x HTTP/1.1\r\nHo', true],
    ];
    for (const [name, bytes, reset] of cuts) {
      const before = h.upstreamRequests.length;
      await cut(h, bytes, reset);
      // the cut connection's state went back to the pool: the next connection takes it
      assert.equal(h.proxy.parsers.size, 1, `${name}: one parser set kept`);
      const n = h.records.length;
      const next = net.connect(h.port, '127.0.0.1');
      await new Promise<void>((r) => next.on('connect', () => r()));
      await until(() => h.proxy.parsers.size === 0, `${name}: the next connection to take the kept parser set`);
      const answer = await new Promise<string>((resolve) => {
        let got = '';
        next.on('data', (d) => { got += d.toString('latin1'); if (/\r\n\r\n[^]*GET \/ok\/second 0$/.test(got)) resolve(got); });
        next.on('close', () => resolve(got));
        next.write('GET /ok/second HTTP/1.1\r\nHost: b.example\r\n\r\n');
      });
      next.destroy();
      assert.deepEqual(statuses(answer), [200], `${name}: ${JSON.stringify(answer)}`);
      assert.ok(answer.endsWith('GET /ok/second 0'), `${name}: ${JSON.stringify(answer)}`);
      // upstream: only what was judged and allowed (the mid-body POST went up as far as it came), then exactly the second request
      const up = h.upstreamRequests.slice(before).filter((r) => r.url !== '/up');
      assert.deepEqual(up.map((r) => [r.method, r.url, r.headers.host, r.headers['x-cut']]), [['GET', '/ok/second', 'b.example', undefined]], name);
      const recs = h.records.slice(n).filter((r) => r.type === 'request');
      assert.deepEqual(recs.map((r) => [r.verdict, r.path, r.host]), [['forwarded', '/ok/second', 'b.example']], name);
      await until(() => h.proxy.stats().connections === 0, `${name}: the second connection to close`);
    }
    // the request smuggling vectors, each on a connection that reuses a pooled set: still refused, never forwarded
    const smuggling: [string, string][] = [
      ['POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde', 'duplicate_content_length'],
      ['POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'content_length_with_transfer_encoding'],
      ['GET /ok/f HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n', 'obs_fold'],
    ];
    for (const [payload, reason] of smuggling) {
      await until(() => h.proxy.parsers.size >= 1, 'a kept parser set');
      const before = h.upstreamRequests.length;
      const n = h.records.length;
      const r = await rawExchange(h.port, payload);
      assert.deepEqual(statuses(r.text), [400], reason);
      assert.equal(r.closed, true, reason);
      assert.ok(h.records.slice(n).some((x) => x.type === 'request' && x.verdict === 'error' && x.reason === reason), reason);
      assert.equal(h.upstreamRequests.length, before, `${reason}: nothing forwarded`);
      await until(() => h.proxy.stats().connections === 0, `${reason}: the connection to close`);
    }
  } finally {
    await h.close();
  }
});

test('ParserPool: a set handed back is reset (no half-read head, no body state) and keeps its head bound', () => {
  const pool = new ParserPool(64, 2);
  const a = pool.take();
  assert.equal(a.reqHead.push(Buffer.from('GET /a HTTP/1.1\r\nHost: x\r\nX-Half: '), 0), undefined);
  assert.ok(a.reqHead.pending > 0);
  a.reqBody.startRequest({ chunked: true, contentLength: -1 } as never);
  a.reqBody.feed(Buffer.from('5\r\nab'), 0);
  assert.equal(a.reqBody.done, false);
  pool.put(a);
  const b = pool.take();
  assert.equal(b, a, 'the set is reused');
  assert.equal(b.reqHead.pending, 0);
  assert.equal(b.reqBody.done, true);
  assert.equal(b.reqBody.bytes, 0);
  const r = b.reqHead.push(Buffer.from('GET /b HTTP/1.1\r\nHost: y\r\n\r\n'), 0);
  assert.ok(r);
  assert.equal(r.head.path, '/b');
  assert.deepEqual(r.head.headers, ['Host', 'y']);
  // the pool's head bound (the proxy's maxHeadBytes) holds for reused sets
  pool.put(b);
  const c = pool.take();
  assert.throws(() => c.reqHead.push(Buffer.from(`GET / HTTP/1.1\r\nHost: y\r\nX: ${'a'.repeat(80)}\r\n\r\n`), 0), /larger than 64 bytes/);
  // at most `max` kept
  const sets = [pool.take(), pool.take(), pool.take()];
  for (const s of sets) pool.put(s);
  assert.equal(pool.size, 2);
});
