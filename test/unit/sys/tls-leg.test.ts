/**
 * TLS legs (src/sys/tls-leg.ts) over real loopback sockets, against Node's own TLS on the other
 * side: interop both roles, bytes both ways with stalled readers, verification refused, and the
 * attacker's cases. Every test closes what it opened and ends with no leg alive.
 * (`node --test` runs this file in a process of its own: a crash reads as this file failing.)
 */
import { test as nodeTest, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { serverContext, clientContext, type TlsContext } from '../../../src/sys/openssl.ts';
import { openTlsLeg, liveLegs, type TlsLeg, type TlsLegError, type TlsLegHandlers, type TlsLegRole } from '../../../src/sys/tls-leg.ts';
import { listenLoopback, acceptFd, connectLoopback, closeTcpFd } from '../../../src/sys/tcp-fd.ts';
import { CertificateIssuer, INTERCEPT_CIPHERS } from '../../../src/proxy/tls/issuer.ts';
import { opensslCA } from '../proxy/tls/helpers.ts';

const NAME = 'leg.membrane.test';
let ca1: { cert: string; key: string };
let ca2: { cert: string; key: string };
let leaf: { certPem: string; keyPem: string };
let sctx: TlsContext;
let cctx: TlsContext;
let cctxWrongCa: TlsContext;
let listener: { fd: number; port: number };

before(async () => {
  ca1 = opensslCA('leg CA 1');
  ca2 = opensslCA('leg CA 2');
  const issuer = await CertificateIssuer.fromPem(ca1.cert, ca1.key);
  leaf = await issuer.certFor(NAME);
  sctx = serverContext({ certPem: leaf.certPem, keyPem: leaf.keyPem, ciphers: INTERCEPT_CIPHERS });
  cctx = clientContext({ caPem: ca1.cert });
  cctxWrongCa = clientContext({ caPem: ca2.cert });
  listener = listenLoopback();
});

after(() => {
  sctx?.free();
  cctx?.free();
  cctxWrongCa?.free();
  if (listener) closeTcpFd(listener.fd);
});

/** what a test made: destroyed after it whatever its outcome (a failed test leaves nothing open) */
const made = { legs: new Set<TlsLeg>(), sockets: new Set<net.Socket>(), servers: new Set<net.Server>() };
function track<T extends net.Socket>(s: T): T {
  made.sockets.add(s);
  s.on('close', () => made.sockets.delete(s));
  return s;
}
/** a Node TLS server with `leaf`'s chain on loopback; its connections tracked */
async function nodeServer(opts: tls.TlsOptions, onConn: (s: tls.TLSSocket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const conns = new Set<net.Socket>();
  const srv = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem, ...opts }, (s) => { s.on('error', () => {}); onConn(s); });
  srv.on('tlsClientError', () => {});
  srv.on('connection', (s: net.Socket) => { conns.add(track(s)); s.on('close', () => conns.delete(s)); });
  made.servers.add(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    // its connections first: close() alone waits for them, forever when a failed test left one
    close: () => new Promise<void>((r) => { made.servers.delete(srv); for (const c of conns) c.destroy(); srv.close(() => r()); }),
  };
}
afterEach(async () => {
  for (const l of made.legs) l.destroy();
  for (const s of made.sockets) s.destroy();
  await Promise.all([...made.servers].map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  made.legs.clear();
  made.sockets.clear();
  made.servers.clear();
  // connections a failed test never accepted
  for (let fd = acceptFd(listener.fd); fd >= 0; fd = acceptFd(listener.fd)) closeTcpFd(fd);
});
/** every test has a deadline: a hang fails it, and afterEach still cleans up */
const test = (name: string, fn: () => Promise<void>): void => { nodeTest(name, { timeout: 30_000 }, fn); };

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** the next connection on the test listener (polled: the listener is a bare fd) */
async function accepted(): Promise<number> {
  for (let i = 0; i < 2000; i++) {
    const fd = acceptFd(listener.fd);
    if (fd >= 0) return fd;
    await tick(1);
  }
  throw new Error('no connection accepted in 2 s');
}

/** every leg freed (uv_close's callbacks run on a later turn) */
async function allFreed(): Promise<void> {
  for (let i = 0; i < 200 && liveLegs() !== 0; i++) await tick(1);
  assert.equal(liveLegs(), 0, 'every leg freed');
}

function open(fd: number, role: TlsLegRole, h: TlsLegHandlers): TlsLeg {
  const r = openTlsLeg(fd, role, h);
  if (!r.leg) { closeTcpFd(fd); throw new Error(`${r.error.code}: ${r.error.message}`); }
  made.legs.add(r.leg);
  return r.leg;
}

/** a server leg for the next accepted connection; its events as promises */
async function serverLeg(h: Partial<TlsLegHandlers> = {}): Promise<{ leg: TlsLeg; data: Buffer[]; error: Promise<TlsLegError>; handshake: Promise<void>; end: Promise<void> }> {
  const fd = await accepted();
  const data: Buffer[] = [];
  let onErr!: (e: TlsLegError) => void, onHs!: () => void, onEnd!: () => void;
  const error = new Promise<TlsLegError>((r) => { onErr = r; });
  const handshake = new Promise<void>((r) => { onHs = r; });
  const end = new Promise<void>((r) => { onEnd = r; });
  const leg = open(fd, { role: 'server', context: sctx }, {
    onData: h.onData ?? ((v) => { data.push(Buffer.from(v)); }),
    onHandshake: () => { h.onHandshake?.(); onHs(); },
    onError: (e) => { h.onError?.(e); onErr(e); },
    onEnd: () => { h.onEnd?.(); onEnd(); },
    ...(h.onDrain ? { onDrain: h.onDrain } : {}),
  });
  return { leg, data, error, handshake, end };
}

function nodeClient(opts: tls.ConnectionOptions = {}): tls.TLSSocket {
  return track(tls.connect({ port: listener.port, host: '127.0.0.1', servername: NAME, ca: ca1.cert, ALPNProtocols: ['http/1.1'], ...opts }));
}

test('a Node TLS client against a server leg: TLS 1.3, membrane\'s first suite, ALPN http/1.1, echo, then a resumption from its ticket', async () => {
  let session: Buffer | undefined;
  for (const resume of [false, true]) {
    const c = nodeClient(resume ? { session: session! } : {});
    c.on('session', (t: Buffer) => { session ??= t; });
    const secure = new Promise<void>((r) => c.once('secureConnect', () => r()));
    const s = await serverLeg();
    await s.handshake;
    await secure;
    assert.equal(s.leg.protocol(), 'TLSv1.3');
    assert.equal(s.leg.cipher(), 'TLS_AES_128_GCM_SHA256');
    assert.equal(s.leg.alpn(), 'http/1.1');
    assert.equal(s.leg.sessionReused(), resume);
    assert.equal(c.alpnProtocol, 'http/1.1');
    assert.equal(c.authorized, true);
    assert.equal(c.isSessionReused(), resume);
    c.write('ping from node');
    while (Buffer.concat(s.data).toString() !== 'ping from node') await tick(2);
    const got = new Promise<string>((r) => c.once('data', (d: Buffer) => r(d.toString())));
    assert.equal(s.leg.write(Buffer.from('pong from the leg')), true);
    assert.equal(await got, 'pong from the leg');
    // the client's close_notify is the leg's end
    const closed = new Promise<void>((r) => c.on('close', () => r()));
    c.end();
    await s.end;
    s.leg.close();
    await closed;
    if (!resume) while (!session) await tick(2);
  }
  await allFreed();
});

test('a client leg against a Node TLS server: SNI and ALPN seen by Node, writes before the handshake held then sent, echo', async () => {
  const seen: string[] = [];
  const srv = await nodeServer({ ALPNProtocols: ['http/1.1'] }, (s) => {
    seen.push(`${(s as tls.TLSSocket & { servername?: string }).servername}/${s.alpnProtocol}`);
    s.on('data', (d: Buffer) => s.write(d.toString().toUpperCase()));
  });
  try {
    const fd = connectLoopback(srv.port);
    const data: Buffer[] = [];
    let drained = 0;
    let hs = false;
    let err: TlsLegError | undefined;
    const leg = open(fd, { role: 'client', context: cctx, host: NAME }, {
      onData: (v) => data.push(Buffer.from(v)),
      onHandshake: () => { hs = true; },
      onDrain: () => { drained++; },
      onError: (e) => { err = e; },
    });
    assert.equal(leg.write(Buffer.from('hello ')), false, 'held until the handshake');
    assert.equal(leg.write(Buffer.from('upstream')), false, 'queued behind it');
    for (let i = 0; i < 1000 && !err && Buffer.concat(data).toString() !== 'HELLO UPSTREAM'; i++) await tick(2);
    assert.equal(err, undefined);
    assert.equal(Buffer.concat(data).toString(), 'HELLO UPSTREAM');
    assert.ok(hs);
    assert.equal(drained, 1);
    assert.equal(leg.alpn(), 'http/1.1');
    assert.equal(leg.protocol(), 'TLSv1.3');
    assert.deepEqual(seen, [`${NAME}/http/1.1`]);
    leg.close();
    assert.equal(leg.destroyed, true);
  } finally {
    await srv.close();
  }
  await allFreed();
});

test('8 MiB each way byte for byte, both readers stalling: held writes retried as is, onDrain, pause/resume', async () => {
  const SIZE = 8 << 20;
  const down = randomBytes(SIZE);
  const up = randomBytes(SIZE);
  const c = nodeClient();
  let drain: (() => void) | undefined;
  let drains = 0;
  const s = await serverLeg({ onDrain: () => { drains++; drain?.(); } });
  await s.handshake;
  // the leg does not read for 300 ms: the client's writes back up on TCP
  s.leg.pause();
  // nor does the Node client: the leg's writes are held
  c.pause();
  const got: Buffer[] = [];
  let gotLen = 0;
  c.on('data', (d: Buffer) => { got.push(d); gotLen += d.length; });
  let held = 0;
  const sent = (async () => {
    for (let off = 0; off < SIZE; off += 65536) {
      if (!s.leg.write(down.subarray(off, off + 65536))) {
        held++;
        await new Promise<void>((r) => { drain = r; });
      }
    }
  })();
  const clientSent = new Promise<void>((r) => c.write(up, () => r()));
  await tick(300);
  assert.ok(held > 0, 'a write was held while the client did not read');
  const upBefore = s.data.reduce((n, b) => n + b.length, 0);
  assert.ok(upBefore < SIZE, 'the paused leg did not read everything');
  c.resume();
  s.leg.resume();
  await sent;
  await clientSent;
  for (let i = 0; i < 3000 && (gotLen < SIZE || s.data.reduce((n, b) => n + b.length, 0) < SIZE); i++) await tick(5);
  assert.equal(gotLen, SIZE);
  assert.ok(Buffer.concat(got).equals(down), 'down byte for byte');
  const upGot = Buffer.concat(s.data);
  assert.equal(upGot.length, SIZE);
  assert.equal(createHash('sha256').update(upGot).digest('hex'), createHash('sha256').update(up).digest('hex'), 'up byte for byte');
  assert.equal(drains, held, 'each held write drained once');
  const closed = new Promise<void>((r) => c.on('close', () => r()));
  s.leg.close();
  c.end();
  await closed;
  await allFreed();
});

/** a client leg to a Node TLS server with `leaf`'s chain (CA 1); its error */
async function clientLegError(context: TlsContext, host: string): Promise<TlsLegError> {
  const srv = await nodeServer({}, () => {});
  try {
    const fd = connectLoopback(srv.port);
    return await new Promise<TlsLegError>((resolve, reject) => {
      open(fd, { role: 'client', context, host }, {
        onData: () => reject(new Error('data from a refused peer')),
        onHandshake: () => reject(new Error('handshake completed with a refused peer')),
        onError: resolve,
      });
    });
  } finally {
    await srv.close();
  }
}

test('a client leg refuses a chain from another CA: TLS_VERIFY_FAILED with the verify reason', async () => {
  const e = await clientLegError(cctxWrongCa, NAME);
  assert.equal(e.code, 'TLS_VERIFY_FAILED');
  // the chain sent ends in CA 1 itself: a self-signed root nobody here trusts
  assert.equal(e.verifyCode, 19); // X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
  assert.match(e.message, /self-signed certificate in certificate chain/);
  await allFreed();
});

test('a client leg refuses a certificate for another name: TLS_VERIFY_FAILED, hostname mismatch', async () => {
  const e = await clientLegError(cctx, 'other.membrane.test');
  assert.equal(e.code, 'TLS_VERIFY_FAILED');
  assert.equal(e.verifyCode, 62); // X509_V_ERR_HOSTNAME_MISMATCH
  assert.match(e.message, /hostname mismatch/);
  await allFreed();
});

test('attacker: plain HTTP to a server leg is a handshake failure, the leg freed', async () => {
  const c = track(net.connect(listener.port, '127.0.0.1'));
  c.on('error', () => {});
  c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const s = await serverLeg({ onData: () => assert.fail('no plaintext is data') });
  const e = await s.error;
  assert.equal(e.code, 'TLS_HANDSHAKE_FAILED');
  assert.match(e.message, /wrong version number|packet length|http request/i);
  assert.equal(s.leg.destroyed, true);
  await new Promise<void>((r) => { c.on('close', () => r()); });
  await allFreed();
});

test('attacker: the peer closes in the middle of its ClientHello', async () => {
  // a record header announcing 512 bytes of handshake, then 4 of them, then FIN
  const c = track(net.connect(listener.port, '127.0.0.1'));
  c.on('error', () => {});
  c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]));
  const s = await serverLeg();
  c.end();
  const e = await s.error;
  assert.equal(e.code, 'TLS_HANDSHAKE_FAILED');
  c.destroy();
  await allFreed();
});

test('attacker: the peer resets while the leg\'s writes are held: TLS_PEER_RESET, held bytes dropped', async () => {
  const raw = track(net.connect(listener.port, '127.0.0.1'));
  raw.on('error', () => {});
  const c = track(tls.connect({ socket: raw, servername: NAME, ca: ca1.cert }));
  c.on('error', () => {});
  const s = await serverLeg();
  await s.handshake;
  c.pause();
  const chunk = Buffer.alloc(65536, 7);
  let n = 0;
  while (s.leg.write(chunk) && n < 4096) n++;
  assert.ok(s.leg.heldBytes > 0, 'a write is held');
  raw.resetAndDestroy();
  const e = await s.error;
  assert.equal(e.code, 'TLS_PEER_RESET');
  assert.equal(s.leg.heldBytes, 0);
  assert.equal(s.leg.write(chunk), false, 'a destroyed leg takes nothing');
  await allFreed();
});

test('attacker: destroy twice, and from inside onData, then close and write on the dead leg', async () => {
  const c = nodeClient();
  c.on('error', () => {});
  let calls = 0;
  let leg!: TlsLeg;
  const s = await serverLeg({ onData: () => { calls++; leg.destroy(); leg.destroy(); } });
  leg = s.leg;
  await s.handshake;
  // ten records waiting in the socket: the first read takes them all into OpenSSL's buffer, so a
  // leg that read on after destroy() would hand out a second one
  leg.pause();
  for (let i = 0; i < 10; i++) { c.write('a'.repeat(100)); await tick(2); }
  await tick(30);
  leg.resume();
  await new Promise<void>((r) => c.on('close', () => r()));
  assert.equal(calls, 1, 'no read after destroy inside onData');
  leg.destroy();
  leg.close();
  assert.equal(leg.write(Buffer.from('x')), false);
  assert.equal(leg.protocol(), '');
  await allFreed();
});

test('a few hundred legs opened and closed, both roles, some mid-handshake: the live count returns to 0', async () => {
  const srv = await nodeServer({}, (s) => { s.end(); });
  try {
    const port = srv.port;
    for (let round = 0; round < 15; round++) {
      const waits: Promise<unknown>[] = [];
      for (let i = 0; i < 10; i++) {
        // a server leg: a Node client that completes its handshake and leaves
        const c = nodeClient();
        c.on('error', () => {});
        c.on('secureConnect', () => c.end());
        const s = await serverLeg({ onEnd: () => s.leg.close() });
        waits.push(Promise.race([s.end, s.error]), new Promise<void>((r) => c.on('close', () => r())));
        // a client leg: half destroyed before their handshake ends, half after
        const fd = connectLoopback(port);
        let done!: () => void;
        waits.push(new Promise<void>((r) => { done = r; }));
        const leg = open(fd, { role: 'client', context: cctx, host: NAME }, {
          onData: () => {},
          onHandshake: () => { leg.destroy(); done(); },
          onEnd: () => { leg.destroy(); done(); },
          onError: () => done(),
        });
        if (i % 2) { leg.destroy(); done(); }
      }
      await Promise.all(waits);
    }
  } finally {
    await srv.close();
  }
  await allFreed();
});

test('close(): the held writes first, then close_notify (the Node client reads all of it and its end)', async () => {
  const SIZE = 4 << 20;
  const down = randomBytes(SIZE);
  const c = nodeClient();
  const s = await serverLeg();
  await s.handshake;
  c.pause();
  assert.equal(s.leg.write(down), false, '4 MiB to a client that does not read is held');
  s.leg.close();
  assert.equal(s.leg.destroyed, false, 'alive until the held bytes are taken');
  assert.equal(s.leg.write(Buffer.from('late')), false, 'a closing leg takes nothing');
  const got: Buffer[] = [];
  let ended = false;
  c.on('data', (d: Buffer) => got.push(d));
  c.on('end', () => { ended = true; });
  const closed = new Promise<void>((r) => c.on('close', () => r()));
  await tick(50);
  c.resume();
  await closed;
  assert.ok(ended, 'close_notify reached the client');
  assert.ok(Buffer.concat(got).equals(down), 'every held byte before it');
  assert.equal(s.leg.destroyed, true);
  await allFreed();
});

test('attacker: a client offering only h2 is refused (no_application_protocol), the leg freed', async () => {
  const c = nodeClient({ ALPNProtocols: ['h2'] });
  const clientErr = new Promise<Error>((r) => c.on('error', r));
  const s = await serverLeg();
  const e = await s.error;
  assert.equal(e.code, 'TLS_HANDSHAKE_FAILED');
  assert.match(e.message, /no application protocol|no_application_protocol/i);
  assert.match(String((await clientErr).message), /no application protocol/i);
  await allFreed();
});

test('a handler that throws: the leg is destroyed and the exception is the process\'s uncaught one (a child: no crash of libuv\'s frames)', async () => {
  const { spawnSync } = await import('node:child_process');
  const root = new URL('../../../', import.meta.url).pathname;
  const script = `
    import tls from 'node:tls';
    import { serverContext } from '${root}src/sys/openssl.ts';
    import { openTlsLeg, liveLegs } from '${root}src/sys/tls-leg.ts';
    import { listenLoopback, acceptFd } from '${root}src/sys/tcp-fd.ts';
    const ctx = serverContext({ certPem: process.env.CERT, keyPem: process.env.KEY, ciphers: 'TLS_AES_128_GCM_SHA256' });
    const l = listenLoopback();
    process.on('uncaughtException', (e) => {
      setTimeout(() => { console.log(JSON.stringify({ message: e.message, live: liveLegs() })); process.exit(3); }, 20);
    });
    const c = tls.connect({ port: l.port, host: '127.0.0.1', servername: '${NAME}', ca: process.env.CA }, () => c.write('boom'));
    c.on('error', () => {});
    const t = setInterval(() => {
      const fd = acceptFd(l.fd);
      if (fd < 0) return;
      clearInterval(t);
      openTlsLeg(fd, { role: 'server', context: ctx }, { onData: () => { throw new Error('handler threw'); } });
    }, 1);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, CERT: leaf.certPem, KEY: leaf.keyPem, CA: ca1.cert }, encoding: 'utf8', timeout: 20000 });
  assert.equal(r.signal, null, `no crash: ${r.stderr}`);
  assert.equal(r.status, 3, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { message: 'handler threw', live: 0 });
});

test('a server context freed while a leg is open on it: the handshake and echo still work (SSL_new holds its own reference: issuer.ts frees a leaf\'s context when the leaf is gone)', async () => {
  const ctx = serverContext({ certPem: leaf.certPem, keyPem: leaf.keyPem, ciphers: INTERCEPT_CIPHERS });
  const c = nodeClient();
  const fd = await accepted();
  const got: Buffer[] = [];
  let leg!: TlsLeg;
  const echoed = new Promise<void>((resolve) => {
    leg = open(fd, { role: 'server', context: ctx }, { onData: (v) => { got.push(Buffer.from(v)); leg.write(v); resolve(); } });
  });
  ctx.free();
  await new Promise<void>((r) => c.once('secureConnect', () => r()));
  c.write('ping');
  await echoed;
  const back = await new Promise<string>((r) => c.once('data', (d: Buffer) => r(d.toString())));
  assert.equal(back, 'ping');
  leg.close();
  c.destroy();
  await allFreed();
});

test('end(): the held writes, one close_notify, and reads go on to the peer\'s own close_notify (a lingering close); a provided read buffer gets the bytes', async () => {
  const c = nodeClient({ allowHalfOpen: true } as tls.ConnectionOptions);
  const fd = await accepted();
  const mine = Buffer.alloc(64);
  const views: Buffer[] = [];
  let ended!: () => void, shaken!: () => void;
  const peerEnded = new Promise<void>((r) => { ended = r; });
  const handshake = new Promise<void>((r) => { shaken = r; });
  const leg = open(fd, { role: 'server', context: sctx }, {
    onHandshake: () => shaken(),
    readBuffer: () => mine,
    onData: (v) => { views.push(Buffer.from(v)); assert.equal(v.buffer, mine.buffer, 'the view is of the provided buffer'); },
    onEnd: () => ended(),
  });
  await handshake;
  let text = '';
  c.on('data', (d: Buffer) => { text += d.toString(); });
  const clientEnd = new Promise<void>((r) => c.once('end', () => r()));
  leg.write(Buffer.from('bye'));
  leg.end();
  assert.equal(leg.write(Buffer.from('late')), false, 'nothing is written after end()');
  await clientEnd;
  assert.equal(text, 'bye');
  assert.equal(leg.destroyed, false, 'the leg reads on');
  c.end('after');
  await peerEnded;
  assert.equal(Buffer.concat(views).toString(), 'after');
  leg.destroy();
  await allFreed();
});
