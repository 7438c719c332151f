/**
 * Upstream connections are read into a buffer of their own, reused from read to read
 * (UpstreamLink with Node's `onread`). The attacker's view: bytes of one read must never be
 * overwritten by the next while something still points into them: a write to a client that
 * reads slowly (the kernel took part of it, the rest waits in Node), a response head cut across
 * reads, a client that has gone. A proxy that reused the buffer then would hand the client bytes
 * of a later response (another request's data, possibly another client's) in place of its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { forwardingProxy, withProxy } from './harness.ts';
import { UpstreamLink, type UpstreamOwner } from '../../../../src/proxy/http/upstream-pool.ts';

/** `n` bytes that differ from read to read and request to request (a misplaced range shows) */
function body(seed: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 10)) & 255;
  return b;
}

/** An origin answering each request `GET /<seed>/<bytes>` with that body, its head written in pieces `gapMs` apart. */
async function origin(gapMs: number): Promise<{ port: number; close(): Promise<void> }> {
  const conns = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    c.on('error', () => {});
    let buf = '';
    let chain = Promise.resolve();
    c.on('data', (d) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const [, seed, n] = /^GET \/(\d+)\/(\d+) /.exec(buf)!.map(Number) as [number, number, number];
        buf = buf.slice(end + 4);
        const head = `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-seed: ${seed}\r\ncontent-length: ${n}\r\n\r\n`;
        chain = chain.then(async () => {
          if (gapMs) {
            // cut in a field name, in a value and between CR and LF
            c.write(head.slice(0, 20));
            await new Promise((r) => setTimeout(r, gapMs));
            c.write(head.slice(20, 45));
            await new Promise((r) => setTimeout(r, gapMs));
            c.write(head.slice(45, head.length - 1));
            await new Promise((r) => setTimeout(r, gapMs));
            c.write(head.slice(head.length - 1));
          } else c.write(head);
          c.write(body(seed, n));
        });
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => { srv.close(() => r()); for (const c of conns) c.destroy(); }) };
}

/** Sends the requests pipelined; returns everything received once `total` bytes came. Reads nothing for `stallMs` first, then (`throttle`) every other 2 ms. */
async function exchange(port: number, reqs: [number, number][], total: number, stallMs: number, throttle = false): Promise<Buffer> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  await new Promise<void>((r) => c.on('connect', () => r()));
  c.pause();
  c.write(reqs.map(([seed, n]) => `GET /${seed}/${n} HTTP/1.1\r\nHost: o\r\n\r\n`).join(''));
  await new Promise((r) => setTimeout(r, stallMs));
  const chunks: Buffer[] = [];
  let got = 0;
  const timer = setTimeout(() => c.destroy(), 20_000);
  try {
    await new Promise<void>((resolve) => {
      c.on('data', (d: Buffer) => { chunks.push(d); got += d.length; if (got >= total) resolve(); });
      c.on('close', () => resolve());
      c.resume();
      // then a reader slower than the proxy: the kernel takes part of each write, the rest waits in Node
      if (throttle) {
        const t = setInterval(() => { if (c.isPaused()) c.resume(); else c.pause(); }, 2);
        c.on('close', () => clearInterval(t));
        c.on('data', () => { if (got >= total) clearInterval(t); });
      }
    });
  } finally {
    clearTimeout(timer);
    c.destroy();
  }
  return Buffer.concat(chunks);
}

function expected(reqs: [number, number][]): Buffer {
  return Buffer.concat(reqs.flatMap(([seed, n]) => [
    Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-seed: ${seed}\r\ncontent-length: ${n}\r\n\r\n`), body(seed, n),
  ]));
}

test('upstream read buffers: a slow client gets every response byte for byte (writes waiting in Node hold their read)', async () => {
  await withProxy(origin(0), (port) => forwardingProxy(port), async (_o, _p, port) => {
    // large and small responses pipelined, the client not reading at first: the proxy's writes
    // to it stay partly in Node while the upstream keeps being read (more than the kernel buffers
    // of both sockets hold: 4 MiB of send and 6 MiB of receive buffer at most by default)
    const reqs: [number, number][] = [[1, 24 << 20], [2, 100], [3, 70_000], [4, 5], [5, 8 << 20], [6, 17_000]];
    const want = expected(reqs);
    const got = await exchange(port, reqs, want.length, 400, true);
    assert.equal(got.length, want.length);
    assert.ok(got.equals(want), `first difference at byte ${got.findIndex((b, i) => b !== want[i])}`);
  });
});

test('upstream read buffers: response heads cut across reads (field name, value, CR|LF) arrive whole, the bodies after them intact', async () => {
  await withProxy(origin(25), (port) => forwardingProxy(port), async (_o, _p, port) => {
    const reqs: [number, number][] = [[7, 40_000], [8, 10], [9, 200_000]];
    const want = expected(reqs);
    const got = await exchange(port, reqs, want.length, 0);
    assert.equal(got.length, want.length);
    assert.ok(got.equals(want), `first difference at byte ${got.findIndex((b, i) => b !== want[i])}`);
  });
});

test('an UpstreamLink reading into its own buffer: the next read goes into the same buffer only when its owner no longer points into the last one', async () => {
  const peers: net.Socket[] = [];
  const srv = net.createServer((s) => { peers.push(s); s.on('error', () => {}); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const reads: Buffer[] = [];
  const copies: Buffer[] = [];
  let keeps = false;
  let wake: (() => void) | null = null;
  const owner: UpstreamOwner = {
    onUpstreamData(c) { reads.push(c); copies.push(Buffer.from(c)); wake?.(); },
    onUpstreamDrain() {}, onUpstreamEnd() {}, onUpstreamError() {},
    keepsRead: () => keeps,
  };
  const link = new UpstreamLink((onread) => new net.Socket({ allowHalfOpen: true, onread }), owner);
  try {
    (link.sock as net.Socket).connect(port, '127.0.0.1');
    await until(() => peers.length === 1, 'the connection');
    const send = async (text: string) => {
      const n = reads.length;
      peers[0]!.write(text);
      await new Promise<void>((r) => { wake = () => { if (reads.length > n) r(); }; });
    };
    await send('first');
    await send('second'); // the owner kept nothing: the same memory again
    assert.equal(reads[1]!.buffer, reads[0]!.buffer);
    keeps = true;
    await send('third'); // read into the same memory, but the owner still points into it...
    keeps = false;
    await send('fourth'); // ...so this read goes into a new buffer, and 'third' stays as it was
    assert.equal(reads[2]!.buffer, reads[1]!.buffer);
    assert.notEqual(reads[3]!.buffer, reads[2]!.buffer);
    assert.equal(reads[2]!.toString(), 'third');
    assert.deepEqual(reads.slice(3).map(String), copies.slice(3).map(String));
  } finally {
    link.sock.destroy();
    for (const p of peers) p.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  }
});

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok(), `waited for ${what}`);
}
