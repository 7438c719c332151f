/**
 * Accepted client connections are read into a buffer of their own, reused from read to read
 * (ownReadSocket: Node's `onread` on the accepted handle). The attacker's view: a proxy never
 * forwards bytes it has not judged, so a reused buffer must never hand one read's bytes to a
 * later use after the next read overwrote them: request bodies waiting in Node for a slow
 * upstream, a head cut across reads, a request the proxy sends again after the pool's
 * keep-alive race (the client meanwhile sent the start of another request, not yet judged), a
 * connection reset in the middle of a body followed by another connection, a buffer given back to
 * the proxy's pool by a closed connection and read into by the next.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { l7, redirectingProxy, withProxy } from './harness.ts';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { BufferPool, ReadBuffer } from '../../../../src/proxy/http/read-buffer.ts';

const POLICY = l7([{ method: 'GET', path: '/ok/.*' }, { method: 'POST', path: '/up/.*' }]);

/** `n` bytes that differ from request to request and along the body (a misplaced range shows) */
function body(seed: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 10)) & 255;
  return b;
}

interface Origin {
  port: number;
  /** every byte each upstream connection received, in the order the connections came */
  received: Buffer[][];
  /** connections whose `n`-th request (0-based, by head count) is dropped: the origin closes instead of answering */
  closeOn: (conn: number, n: number) => boolean;
  /** the origin reads nothing for this long after a connection's first bytes (a slow upstream) */
  stallMs: number;
  close(): Promise<void>;
}

/** A scripted origin: answers each request head (and content-length body) with `200 <method> <path> <body length>`. */
async function origin(): Promise<Origin> {
  const conns = new Set<net.Socket>();
  const o: Origin = { port: 0, received: [], closeOn: () => false, stallMs: 0, close: async () => {} };
  const srv = net.createServer((c) => {
    conns.add(c);
    const index = o.received.length;
    const got: Buffer[] = [];
    o.received.push(got);
    c.on('close', () => conns.delete(c));
    c.on('error', () => {});
    // what is not parsed yet: a head's bytes, or the count of body bytes still to come
    let head = '';
    let bodyLeft = 0;
    let answer = '';
    let served = 0;
    let stalled = false;
    const take = (d: Buffer) => {
      let at = 0;
      while (at < d.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, d.length - at);
          bodyLeft -= n;
          at += n;
        } else {
          const full = head + d.subarray(at).toString('latin1');
          const e = full.indexOf('\r\n\r\n');
          if (e < 0) { head = full; return; }
          at += e + 4 - head.length;
          head = '';
          const h = full.slice(0, e);
          bodyLeft = Number(/content-length: (\d+)/i.exec(h)?.[1] ?? 0);
          const [method, path] = h.split(' ');
          answer = `${method} ${path} ${bodyLeft}`;
        }
        if (bodyLeft === 0 && answer) {
          const text = answer;
          answer = '';
          if (o.closeOn(index, served++)) {
            setTimeout(() => c.destroy(), 60);
            return;
          }
          c.write(`HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\n\r\n${text}`);
        }
      }
    };
    c.on('data', (d: Buffer) => {
      got.push(Buffer.from(d));
      if (o.stallMs && !stalled) {
        // the first bytes wait with the rest: nothing more is read for a while
        stalled = true;
        c.pause();
        setTimeout(() => c.resume(), o.stallMs);
      }
      take(d);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  o.port = (srv.address() as net.AddressInfo).port;
  o.close = () => new Promise((r) => { srv.close(() => r()); for (const c of conns) c.destroy(); });
  return o;
}

/** A client connection: writes each part `gapMs` apart, collects what comes back until `until` holds or it closes. */
async function client(port: number, parts: (string | Buffer)[], gapMs: number, until: (text: string) => boolean, opts: { reset?: boolean } = {}): Promise<string> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  await new Promise<void>((r) => c.on('connect', () => r()));
  let text = '';
  const done = new Promise<void>((resolve) => {
    const t = setTimeout(resolve, 10_000);
    c.on('data', (d: Buffer) => { text += d.toString('latin1'); if (until(text)) { clearTimeout(t); resolve(); } });
    c.on('close', () => { clearTimeout(t); resolve(); });
  });
  for (const p of parts) {
    c.write(p);
    await new Promise((r) => setTimeout(r, gapMs));
  }
  if (opts.reset) {
    c.resetAndDestroy();
    return text;
  }
  await done;
  c.destroy();
  return text;
}

const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), `waited for ${what}`);
}

/** The fast path is on: the proxy's accepted sockets emit no `data` (they read into their own buffer). */
function readsOwnBuffer(p: HttpProxy): boolean {
  const conns = [...p.conns];
  return conns.length > 0 && conns.every((c) => (c.sock as net.Socket).listenerCount('data') === 0);
}

test('client read buffers: pipelined bodies waiting in Node for a slow upstream arrive byte for byte; a head cut across reads goes up whole, after it was judged', async () => {
  await withProxy(origin(), (port) => redirectingProxy(port, POLICY), async (o, p, port) => {
    o.stallMs = 300; // the upstream reads nothing at first: the proxy's writes to it wait in Node
    // more than the kernel's buffers of both sockets hold while the upstream reads nothing
    const sizes = [3000, 200_000, 17, 12_000_000, 70_000, 9_000_000, 5];
    const reqs = sizes.map((n, i) => Buffer.concat([Buffer.from(`POST /up/${i} HTTP/1.1\r\nHost: o\r\ncontent-length: ${n}\r\n\r\n`), body(i, n)]));
    const all = Buffer.concat(reqs);
    // in pieces that cut heads and bodies anywhere
    const parts: Buffer[] = [];
    for (let at = 0; at < all.length;) {
      const n = Math.min(all.length - at, 1000 + ((at * 7919) % 90_000));
      parts.push(all.subarray(at, at + n));
      at += n;
    }
    const conn = net.connect(port, '127.0.0.1');
    conn.on('error', () => {});
    await new Promise<void>((r) => conn.on('connect', () => r()));
    await until(() => p.conns.size === 1, 'the proxy to accept');
    assert.ok(readsOwnBuffer(p), 'accepted sockets read into a buffer of their own');
    let text = '';
    const done = new Promise<void>((resolve) => {
      conn.on('data', (d: Buffer) => { text += d.toString('latin1'); if (/GET \/ok\/last 0$/.test(text)) resolve(); });
      conn.on('close', () => resolve());
    });
    for (const part of parts) conn.write(part);
    await until(() => o.received.flat().reduce((n, b) => n + b.length, 0) === all.length, 'the bodies upstream');
    // a head cut in a value, read on its own; its end in the next read: only then is it
    // complete, judged and sent
    conn.write('GET /ok/last HTTP/1.1\r\nHost: o\r\nX-Cut: abc');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(o.received.flat().reduce((n, b) => n + b.length, 0), all.length, 'nothing of a head goes upstream before it is complete and judged');
    conn.write('def\r\n\r\n');
    await done;
    conn.destroy();
    assert.deepEqual(statuses(text), [...sizes.map(() => 200), 200], text.slice(0, 300));
    const want = Buffer.concat([...reqs, Buffer.from('GET /ok/last HTTP/1.1\r\nHost: o\r\nX-Cut: abcdef\r\n\r\n')]);
    const got = Buffer.concat(o.received.flat());
    assert.equal(got.length, want.length);
    assert.ok(got.equals(want), `first difference at byte ${got.findIndex((b, i) => b !== want[i])}`);
  });
});

test('client read buffers: a request sent again after the pool\'s keep-alive race is the judged one, never bytes read after it (the next, unjudged head)', async () => {
  await withProxy(origin(), (port) => redirectingProxy(port, POLICY), async (o, p, port) => {
    // the first client leaves an idle upstream connection in the pool
    const first = await client(port, ['GET /ok/first HTTP/1.1\r\nHost: o\r\n\r\n'], 0, (t) => t.endsWith('GET /ok/first 0'));
    assert.deepEqual(statuses(first), [200]);
    await until(() => p.pool.size === 1, 'an idle upstream in the pool');
    // the pooled connection's next request is never answered: the origin closes it (the race)
    o.closeOn = (conn, n) => conn === 0 && n === 1;
    // the second client's request goes up on the pooled connection; before the origin closes it,
    // the client sends the start of a denied request (read into the same buffer, not yet judged)
    const text = await client(port, [
      'GET /ok/second HTTP/1.1\r\nHost: o\r\nX-Pad: 0123456789\r\n\r\n',
      'POST /denied/xxxxxxxxxxxxxxxxxxxxxxxx HTTP/1.1\r\nHo',
      'st: o\r\ncontent-length: 0\r\n\r\n',
    ], 40, (t) => statuses(t).length >= 2);
    assert.deepEqual(statuses(text), [200, 403], text);
    assert.ok(text.includes('GET /ok/second 0'), text);
    // sent twice (the pooled connection, then a new one), the same judged bytes both times
    const want = 'GET /ok/second HTTP/1.1\r\nHost: o\r\nX-Pad: 0123456789\r\n\r\n';
    assert.equal(o.received.length, 2, 'one new upstream connection for the retry');
    assert.equal(Buffer.concat(o.received[1]!).toString('latin1'), want);
    assert.equal(Buffer.concat(o.received[0]!).toString('latin1'), 'GET /ok/first HTTP/1.1\r\nHost: o\r\n\r\n' + want);
    assert.ok(!Buffer.concat(o.received.flat()).toString('latin1').includes('denied'), 'the denied head never went upstream');
  });
});

test('client read buffers: a connection reset in the middle of a body, then other connections: each upstream gets only its own judged bytes', async () => {
  await withProxy(origin(), (port) => redirectingProxy(port, POLICY), async (o, p, port) => {
    const half = Buffer.concat([Buffer.from('POST /up/cut HTTP/1.1\r\nHost: o\r\ncontent-length: 5000\r\n\r\n'), body(1, 2500)]);
    await client(port, [half], 50, () => false, { reset: true });
    await until(() => p.conns.size === 0, 'the reset connection to go');
    // the next connections: pipelined requests, one denied, one cut mid-head and completed later
    const text = await client(port, [
      'GET /ok/a HTTP/1.1\r\nHost: o\r\n\r\nGET /nope HTTP/1.1\r\nHost: o\r\n\r\nGET /ok/b HTTP/1.1\r\nHo',
      'st: o\r\n\r\n',
    ], 40, (t) => statuses(t).length >= 3);
    assert.deepEqual(statuses(text), [200, 403, 200], text);
    const upstream = o.received.map((c) => Buffer.concat(c).toString('latin1'));
    // the cut POST went up as far as it came (it was judged), on a connection of its own that is closed
    assert.equal(upstream[0], half.toString('latin1'));
    assert.equal(upstream.slice(1).join(''), 'GET /ok/a HTTP/1.1\r\nHost: o\r\n\r\nGET /ok/b HTTP/1.1\r\nHost: o\r\n\r\n');
  });
});

test('ReadBuffer with a pool: a kept read is never handed out again; a closed socket gives back only the buffer of its next read', () => {
  const pool = new BufferPool(64, 4);
  const rb = new ReadBuffer(64, 1024, pool);
  const first = rb.next();
  rb.done(10, first, false);
  assert.equal(rb.next(), first, 'nothing kept: the same buffer');
  rb.done(10, first, true);
  const second = rb.next();
  assert.notEqual(second, first, 'kept: a new buffer for the next read');
  rb.done(64, second, false);
  const third = rb.next();
  assert.equal(third.length, 256, 'a read that filled it: a larger one');
  // closed: the buffer of the next read is not the pool's size (grown), so it is left to the GC
  rb.recycle();
  assert.equal(pool.idle, 0);
  const rb2 = new ReadBuffer(64, 1024, pool);
  const b = rb2.next();
  rb2.done(5, b, true);
  const next = rb2.next();
  rb2.recycle();
  assert.equal(pool.idle, 1);
  const taken = pool.take();
  assert.equal(taken, next, 'the unused buffer of the next read goes back');
  assert.notEqual(taken, b, 'the kept one never does');
  assert.notEqual(taken, first);
});

test('client read buffers: closed connections give their read buffers back to the proxy, and later connections read into them', async () => {
  await withProxy(origin(), (port) => redirectingProxy(port, POLICY), async (o, p, port) => {
    for (let i = 0; i < 3; i++) {
      const text = await client(port, [`GET /ok/${i} HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n`], 0, (t) => t.includes(`GET /ok/${i} 0`));
      assert.deepEqual(statuses(text), [200]);
      await until(() => p.conns.size === 0 && p.readBuffers.idle === 1, 'the connection to close and its buffer to go back');
    }
    assert.equal(o.received.map((c) => Buffer.concat(c).toString('latin1')).join(''),
      [0, 1, 2].map((i) => `GET /ok/${i} HTTP/1.1\r\nHost: o\r\n\r\n`).join(''));
  });
});
