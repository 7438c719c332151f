/**
 * Large bodies pass the proxy as views of its read buffers, and a side that does not read stops
 * the other: the attacker's slow reader (a client that asks for a large download and reads
 * nothing) or slow writer's peer (an origin that takes a large upload's head and then reads
 * nothing) must not make the proxy hold the body in memory. What the proxy holds for a connection
 * in user space is what Node holds in its two sockets' write queues (`writableLength`); while the
 * far side reads nothing it must stay near one read's worth (64 KiB, a read buffer's largest)
 * while the near side is held back (its bytes wait in the kernel, then in the sender). Removing
 * the pause of the reading side when a write does not fit (afterWrite, flushRun, feedRequests in
 * connection.ts) lets writableLength grow to the body's size: these tests then fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { forwardingProxy, withProxy } from './harness.ts';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';

/** a body larger than what the kernel's socket buffers on the way can hold (4 MiB send, up to 32 MiB receive) */
const BODY = 64 << 20;
const PIECE = Buffer.alloc(64 * 1024, 0x61);
/** at most what the proxy may hold for one connection in user space while the far side reads nothing */
const HELD_MAX = 1 << 20;

/**
 * Writes `n` bytes of PIECE to `s` as a well-behaved sender does (on until write() says the
 * buffer is full, then waits for drain); `sent()` is what the kernel took (write callbacks run).
 */
function pump(s: net.Socket, n: number): { sent(): number; done: Promise<void> } {
  let sent = 0;
  const done = new Promise<void>((resolve, reject) => {
    let queued = 0;
    const more = () => {
      while (queued < n) {
        const k = Math.min(PIECE.length, n - queued);
        queued += k;
        const ok = s.write(k === PIECE.length ? PIECE : PIECE.subarray(0, k), (e) => { if (!e) sent += k; if (sent === n) resolve(); });
        if (!ok) { s.once('drain', more); return; }
      }
    };
    s.once('error', reject);
    more();
  });
  return { sent: () => sent, done };
}

/** waits until `f()` has not changed for `stillMs` (at most `maxMs`) */
async function settled(f: () => number, stillMs = 600, maxMs = 15_000): Promise<number> {
  const t0 = Date.now();
  let v = f(), since = Date.now();
  while (Date.now() - t0 < maxMs) {
    await new Promise((r) => setTimeout(r, 50));
    const w = f();
    if (w !== v) { v = w; since = Date.now(); } else if (Date.now() - since >= stillMs) return v;
  }
  return v;
}

/** bytes the proxy holds in user space for its connections: Node's write queues of both sockets */
function held(p: HttpProxy): number {
  let n = 0;
  for (const c of p.conns) n += c.sock.writableLength + ((c as unknown as { upstream: net.Socket | null }).upstream?.writableLength ?? 0);
  return n;
}

/** An origin answering GET /N with N bytes (Content-Length or chunked) and POST with `ok` once it read the body; `stallReads` reads nothing after a request head until released. */
async function origin(opts: { chunkedResponse?: boolean; stallReads?: boolean }) {
  const conns = new Set<net.Socket>();
  let pumped: ReturnType<typeof pump> | null = null;
  let received = 0;
  let release: (() => void) | null = null;
  const srv = net.createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    c.on('error', () => {});
    let head = '';
    let want = -1;
    const onData = (d: Buffer) => {
      if (want < 0) {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        const m = /^(GET|POST) \/(\w+) /.exec(head)!;
        if (m[1] === 'GET') {
          const n = Number(m[2]);
          c.write(`HTTP/1.1 200 OK\r\n${opts.chunkedResponse ? 'transfer-encoding: chunked' : `content-length: ${n}`}\r\n\r\n`);
          if (opts.chunkedResponse) {
            // one chunk of n bytes, then the last: the body tracker runs through the chunk's data
            c.write(`${n.toString(16)}\r\n`);
            pumped = pump(c, n);
            void pumped.done.then(() => c.write('\r\n0\r\n\r\n'), () => {});
          } else pumped = pump(c, n);
          return;
        }
        want = Number(/content-length: (\d+)/i.exec(head)![1]);
        received = head.length - end - 4;
        if (opts.stallReads) {
          c.pause();
          release = () => c.resume();
        }
      } else received += d.length;
      if (received >= want) c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    };
    c.on('data', onData);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    pumped: () => pumped?.sent() ?? 0,
    received: () => received,
    release: () => release?.(),
    close: () => new Promise<void>((r) => { srv.close(() => r()); for (const c of conns) c.destroy(); }),
  };
}

for (const chunked of [false, true]) {
  test(`a client that reads nothing of a 64 MiB download (${chunked ? 'chunked' : 'Content-Length'}): the proxy holds at most ~one read of it, the origin is held back, then every byte arrives`, { timeout: 60_000 }, async () => {
    await withProxy(origin({ chunkedResponse: chunked }), (port) => forwardingProxy(port), async (o, p, port) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      try {
        await new Promise<void>((r) => c.on('connect', () => r()));
        c.pause();
        c.write(`GET /${BODY} HTTP/1.1\r\nhost: o\r\n\r\n`);
        const pumped = await settled(o.pumped);
        const h = held(p);
        assert.ok(h <= HELD_MAX, `the proxy holds ${h} bytes of the body in user space (at most ${HELD_MAX})`);
        assert.ok(pumped < BODY, `the origin sent the whole body (${pumped}): nothing held it back`);
        // then the client reads: the rest flows, every byte
        let got = 0;
        const all = new Promise<void>((r) => c.on('data', (d: Buffer) => { got += d.length; if (got >= BODY) r(); }));
        c.resume();
        await all;
        assert.ok(got >= BODY && got < BODY + 256, `${got} bytes received for a body of ${BODY}`);
      } finally {
        c.destroy();
      }
    });
  });
}

test('an origin that reads nothing of a 64 MiB upload after its head: the proxy holds at most ~one read of it, the client is held back, then the origin gets every byte', { timeout: 60_000 }, async () => {
  await withProxy(origin({ stallReads: true }), (port) => forwardingProxy(port), async (o, p, port) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    try {
      await new Promise<void>((r) => c.on('connect', () => r()));
      c.write(`POST /up HTTP/1.1\r\nhost: o\r\ncontent-length: ${BODY}\r\n\r\n`);
      const up = pump(c, BODY);
      const sent = await settled(up.sent);
      const h = held(p);
      assert.ok(h <= HELD_MAX, `the proxy holds ${h} bytes of the body in user space (at most ${HELD_MAX})`);
      assert.ok(sent < BODY, `the client sent the whole body (${sent}): nothing held it back`);
      const answer = new Promise<string>((r) => { let s = ''; c.on('data', (d: Buffer) => { s += d.toString(); if (s.endsWith('ok')) r(s); }); });
      o.release();
      await up.done;
      assert.match(await answer, /^HTTP\/1\.1 200 OK\r\n/);
      assert.equal(o.received(), BODY);
    } finally {
      c.destroy();
    }
  });
});
