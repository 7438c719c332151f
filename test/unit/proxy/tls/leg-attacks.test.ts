/**
 * The attacker's view of an intercepted connection's TLS leg (ServerLegTransport: the fd off Node, the
 * ClientHello peeked, OpenSSL on the fd), with a plain HTTP upstream (terminatingTLS alone). The
 * checks that could crash the process on a use-after-free of a leg's native memory run in a child
 * process (leg-churn-child.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { liveLegs } from '../../../../src/sys/tls-leg.ts';
import { liveFdWatches } from '../../../../src/sys/fd-watch.ts';
import { connectTls, legSetup, until, NAME, type LegSetup } from './leg-setup.ts';

let s: LegSetup;
before(async () => { s = await legSetup({ handshakeTimeoutMs: 3000 }); });
after(async () => { await s.close(); });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** this process's open fds (the proxy's and the test's clients') */
const fds = (): number => readdirSync('/proc/self/fd').length;

/** a raw TCP client: writes `pieces` (a pause between each), then reads until the proxy closes; what it got and how it ended */
function raw(pieces: Buffer[], opts: { gapMs?: number; thenEnd?: boolean } = {}): Promise<{ got: Buffer; how: string }> {
  return new Promise((resolve) => {
    const c = net.connect(s.port, '127.0.0.1');
    c.setNoDelay(true);
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    c.on('error', (e: Error & { code?: string }) => resolve({ got: Buffer.concat(got), how: e.code ?? e.message }));
    c.on('close', () => resolve({ got: Buffer.concat(got), how: 'closed' }));
    // bounded: a proxy that keeps the connection would hold the test for ever
    setTimeout(() => { resolve({ got: Buffer.concat(got), how: 'still open after 4 s' }); c.destroy(); }, 4000).unref();
    c.on('connect', async () => {
      for (const p of pieces) {
        if (c.destroyed) return;
        c.write(p);
        if (opts.gapMs) await sleep(opts.gapMs);
      }
      if (opts.thenEnd) c.end();
    });
  });
}

/** records and connections settle: no connection, leg or watch left */
async function settled(): Promise<void> {
  const ok = await until(() => s.proxy.conns.size === 0 && liveLegs() === 0 && liveFdWatches() === 0);
  assert.ok(ok, `left: ${s.proxy.conns.size} connections, ${liveLegs()} legs, ${liveFdWatches()} watches`);
}

/** one request over a new intercepted connection: 200 */
async function positiveControl(): Promise<void> {
  const c = await connectTls(s);
  let text = '';
  c.on('data', (d: Buffer) => { text += d.toString(); });
  c.end('GET /get HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n');
  await new Promise((r) => c.on('close', r));
  assert.match(text, /^HTTP\/1\.1 200 /);
}

test('attacker: plain HTTP to an intercepted port is refused with a reset and a NOT_TLS record; nothing reaches the upstream', async () => {
  const lines0 = s.origin.lines.length, recs0 = s.tlsRecords.length;
  const r = await raw([Buffer.from('GET /get HTTP/1.1\r\nHost: x\r\n\r\n')]);
  assert.equal(r.got.length, 0);
  assert.equal(r.how, 'ECONNRESET');
  assert.deepEqual(s.tlsRecords.slice(recs0).map((x) => [x.verdict, /^NOT_TLS/.test(x.reason ?? '')]), [['error', true]]);
  assert.equal(s.origin.lines.length, lines0);
  await settled();
});

/** the first TLS record a real client sends (its ClientHello), taken off a connection to a listener of the test's */
async function clientHello(servername = NAME): Promise<Buffer> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<Buffer>((resolve) => {
      srv.once('connection', (c) => {
        let b = Buffer.alloc(0);
        c.on('data', (d: Buffer) => {
          b = Buffer.concat([b, d]);
          if (b.length >= 5 && b.length >= 5 + b.readUInt16BE(3)) { resolve(b.subarray(0, 5 + b.readUInt16BE(3))); c.destroy(); }
        });
      });
      const t = tls.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, servername });
      t.on('error', () => {});
    });
  } finally {
    srv.close();
  }
}

test('attacker: a ClientHello one byte at a time (a read per byte) is decided once whole and the handshake completes on it', async () => {
  // a relay that passes the client's first record one byte per segment, then all as it comes
  const relay = net.createServer((c) => {
    const u = net.connect(s.port, '127.0.0.1');
    u.setNoDelay(true);
    let head = Buffer.alloc(0);
    let passed = false;
    c.on('data', (d: Buffer) => {
      if (passed) { u.write(d); return; }
      head = Buffer.concat([head, d]);
      if (head.length < 5 || head.length < 5 + head.readUInt16BE(3)) return;
      passed = true;
      c.pause();
      void (async () => {
        for (const b of head) { if (u.destroyed) return; u.write(Buffer.from([b])); await sleep(1); }
        c.resume();
      })();
    });
    u.on('data', (d: Buffer) => c.write(d));
    c.on('end', () => u.end());
    u.on('end', () => c.end());
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  try {
    const recs0 = s.tlsRecords.length;
    const text = await new Promise<string>((resolve) => {
      // written, not ended: the relay (no half-open) would close the client at its FIN
      const c = tls.connect({ host: '127.0.0.1', port: (relay.address() as net.AddressInfo).port, servername: NAME, ca: s.ca }, () => {
        c.write('GET /get HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n');
      });
      let t = '';
      c.on('data', (d: Buffer) => { t += d.toString(); });
      c.on('error', (e: Error) => resolve(`error ${e.message}`));
      c.on('close', () => resolve(t));
    });
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.deepEqual(s.tlsRecords.slice(recs0).map((x) => [x.verdict, x.sni]), [['forwarded', NAME]]);
  } finally {
    relay.close();
  }
  await settled();
});

test('attacker: a ClientHello over 64 KiB is refused TOO_LARGE: one that says so in its header, and one in 1-byte records that never ends within what a peek can see', async () => {
  const recs0 = s.tlsRecords.length;
  // a handshake header announcing 70000 bytes of ClientHello
  const big = Buffer.from([22, 3, 1, 0, 8, 1, 0x01, 0x11, 0x70, 3, 3, 0, 0]);
  const a = await raw([big]);
  assert.equal(a.how, 'ECONNRESET');
  // a ClientHello of 60000 bytes (under the cap) sent as records of one byte each: 6 bytes on
  // the wire per byte of it, more than a peek of the socket holds before it ends
  const body = Buffer.alloc(4 + 60000);
  body[0] = 1;
  body.writeUIntBE(60000, 1, 3);
  const recs: Buffer[] = [];
  for (const b of body) recs.push(Buffer.from([22, 3, 1, 0, 1, b]));
  const wire = Buffer.concat(recs);
  const pieces: Buffer[] = [];
  for (let i = 0; i < wire.length; i += 8192) pieces.push(wire.subarray(i, i + 8192));
  const b = await raw(pieces, { gapMs: 1 });
  assert.equal(b.how, 'ECONNRESET');
  const got = s.tlsRecords.slice(recs0).map((x) => [x.verdict, (x.reason ?? '').split(':')[0]]);
  assert.deepEqual(got, [['error', 'TOO_LARGE'], ['error', 'TOO_LARGE']]);
  await settled();
  await positiveControl();
});

test('attacker: a close mid-hello (FIN, and a reset) is recorded HANDSHAKE_ABORTED at once; nothing is left', async () => {
  const hello = await clientHello();
  const recs0 = s.tlsRecords.length;
  const fd0 = fds();
  const t0 = Date.now();
  await raw([hello.subarray(0, 40)], { thenEnd: true });
  await new Promise<void>((resolve) => {
    const c = net.connect(s.port, '127.0.0.1', () => { c.write(hello.subarray(0, 100)); setTimeout(() => { c.resetAndDestroy(); resolve(); }, 20); });
    c.on('error', () => {});
  });
  await until(() => s.tlsRecords.length - recs0 >= 2);
  assert.ok(Date.now() - t0 < 2000, 'long before the handshake deadline (3 s here)');
  assert.deepEqual(s.tlsRecords.slice(recs0).map((x) => [x.verdict, (x.reason ?? '').split(':')[0]]), [['error', 'HANDSHAKE_ABORTED'], ['error', 'HANDSHAKE_ABORTED']]);
  await settled();
  assert.ok(await until(() => fds() <= fd0), `fds ${fds()} > ${fd0} at the start`);
});

test('attacker: bytes after the client asked to close (a request behind a Connection: close one): the response whole, then the close; the second request never reaches the upstream', async () => {
  const lines0 = s.origin.lines.length;
  for (let i = 0; i < 20; i++) {
    const c = await connectTls(s);
    let text = '';
    c.on('data', (d: Buffer) => { text += d.toString(); });
    const closed = new Promise<string>((r) => { c.on('error', (e: Error & { code?: string }) => r(e.code ?? e.message)); c.on('close', () => r('closed')); });
    c.write('GET /get HTTP/1.1\r\nHost: x\r\nx-size: 20000\r\nconnection: close\r\n\r\n');
    // more bytes right after: another request, in the same or a later record
    if (i % 2) c.write('GET /get HTTP/1.1\r\nHost: x\r\n\r\n');
    else setTimeout(() => { if (!c.destroyed) c.write('GET /get HTTP/1.1\r\nHost: x\r\n\r\n'); }, 2);
    await closed;
    const m = /^HTTP\/1\.1 200 OK\r\ncontent-length: 20000\r\nconnection: close\r\n\r\n(a*)$/.exec(text);
    assert.ok(m && m[1]!.length === 20000, `response ${i} whole: ${text.length} bytes`);
  }
  assert.equal(s.origin.lines.length - lines0, 20, 'one request upstream per connection');
  await settled();
});

test('attacker: pipelined requests with bodies, cut anywhere, to a plain upstream that stalls, reach it byte for byte (the reads the kernel did not take at once stay intact)', async () => {
  const c = await connectTls(s);
  const bodies = Array.from({ length: 40 }, (_, i) => randomBytes(i === 39 ? 1 << 20 : 1 + ((i * 7919) % 30000)));
  const wire = Buffer.concat(bodies.map((b) => Buffer.concat([Buffer.from(`POST /up HTTP/1.1\r\nHost: x\r\ncontent-length: ${b.length}\r\n\r\n`), b])));
  let text = '';
  c.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  s.origin.stall(true);
  for (let i = 0; i < wire.length;) {
    const n = 1 + ((i * 31) % 5000);
    c.write(wire.subarray(i, i + n));
    i += n;
  }
  await sleep(200);
  s.origin.stall(false);
  const want = bodies.map((b) => createHash('sha256').update(b).digest('hex'));
  const done = await until(() => [...text.matchAll(/HTTP\/1\.1 200 OK\r\ncontent-length: 64\r\n\r\n([0-9a-f]{64})/g)].length === want.length, 10_000);
  const got = [...text.matchAll(/HTTP\/1\.1 200 OK\r\ncontent-length: 64\r\n\r\n([0-9a-f]{64})/g)].map((m) => m[1]);
  assert.ok(done, `${got.length} of ${want.length} answered`);
  assert.deepEqual(got, want);
  c.end();
  await new Promise((r) => c.on('close', r));
  await settled();
});

/** runs a check of leg-churn-child.ts in a process of its own: its JSON line */
function child(check: string): Record<string, unknown> {
  const out = execFileSync(process.execPath, [join(import.meta.dirname, 'leg-churn-child.ts'), check], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}

test('attacker (child process): 300 connections at once, half destroyed mid-handshake: every leg freed (liveLegs 0), no watch, no connection, the fd count back to its start', () => {
  const r = child('churn');
  assert.equal(r.ok, 150, JSON.stringify(r));
  assert.equal(r.aborted, 150, JSON.stringify(r));
  assert.equal(r.settled, true, JSON.stringify(r));
});

test('attacker (child process): a client that stops reading a large response (the leg holds writes) and resets: the leg is freed, the fd count back to its start', () => {
  const r = child('reset-held');
  assert.equal(r.held, true, JSON.stringify(r));
  assert.equal(r.settled, true, JSON.stringify(r));
});
