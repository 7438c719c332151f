/**
 * TLS origination (the upstream side of interception) against the attacker's origin: a
 * certificate for another name, one from another CA, a reset in the middle of a response, a
 * second response nobody asked for while the connection is pooled, garbage for a ServerHello, a
 * refused connect. The answers are the ones the proxy gave with Node's tls.connect origination
 * (checked against main before the leg replaced it): 502 with the reason, nothing of one client
 * reaching another, and no upstream leg, session or context left behind.
 */
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { redirectingProxy } from '../http/harness.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { opensslCA } from './helpers.ts';
import { originationFor, originationState, resetOriginations, MAX_TRUSTS } from '../../../../src/proxy/tls/origination.ts';
import { liveSessions } from '../../../../src/sys/openssl.ts';
import { liveLegs } from '../../../../src/sys/tls-leg.ts';

const NAME = 'origin.example';
let interceptCA: { cert: string; key: string };
let upstreamCA: { cert: string; key: string };
let otherCA: { cert: string; key: string };
const secrets = new TlsSecrets();
const records: HttpAccessRecord[] = [];
let rev = 0;
let origSecret = 'upstream-ca';
const policy = (): L7Policy => ({
  parser: 'http',
  perSelector: [{
    selector: 's', identities: 'all', origins: [], http: [{}],
    terminatingTLS: { secret: { name: 'intercept' } },
    originatingTLS: { secret: { name: origSecret } },
  }],
});
const test = (name: string, fn: () => Promise<void>): void => { nodeTest(name, { timeout: 30_000 }, fn); };
const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  interceptCA = opensslCA('interception CA');
  upstreamCA = opensslCA('upstream CA');
  otherCA = opensslCA('other CA');
  secrets.set('default', 'intercept', { 'tls.crt': interceptCA.cert, 'tls.key': interceptCA.key });
  secrets.set('default', 'upstream-ca', { 'ca.crt': upstreamCA.cert });
  secrets.set('default', 'wrong-ca', { 'ca.crt': otherCA.cert });
});

/**
 * A scripted TLS origin: its leaf is `certFor(name)` of the issuer given (whatever the SNI), and
 * each request's path says what it does: `/ok` answers (the body names the connection and the
 * request count), `/reset` sends a head and half a body and resets, `/unasked` answers and 30 ms
 * later sends a second response nobody asked for, `/end` answers and 30 ms later ends (close_notify, FIN).
 */
async function origin(issuer: CertificateIssuer, certName = NAME): Promise<{ port: number; conns: number; close(): Promise<void> }> {
  const leaf = await issuer.certFor(certName);
  const socks = new Set<net.Socket>();
  const st = { port: 0, conns: 0, close: async () => { for (const s of socks) s.destroy(); await new Promise<void>((r) => srv.close(() => r())); } };
  const srv = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem, ALPNProtocols: ['http/1.1'] }, (s) => {
    const conn = ++st.conns;
    let n = 0;
    let buf = '';
    s.on('error', () => {});
    s.on('data', (c: Buffer) => {
      buf += c.toString();
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const path = buf.slice(0, buf.indexOf('\r\n')).split(' ')[1]!;
        buf = buf.slice(end + 4);
        n++;
        const body = `conn ${conn} req ${n} ${path}`;
        if (path === '/reset') {
          s.write(`HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n${'r'.repeat(100)}`);
          setTimeout(() => (s as unknown as { _parent?: net.Socket })._parent?.resetAndDestroy() ?? s.destroy(), 20);
          continue;
        }
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
        if (path === '/unasked') setTimeout(() => { if (!s.destroyed) s.write('HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nUNASKED'); }, 30);
        if (path === '/end') setTimeout(() => s.end(), 30);
      }
    });
  });
  srv.on('tlsClientError', () => {});
  srv.on('connection', (s: net.Socket) => { socks.add(s); s.on('close', () => socks.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  st.port = (srv.address() as net.AddressInfo).port;
  return st;
}

/** the proxy in front of `port`, intercepting with originatingTLS */
async function proxyTo(port: number): Promise<{ proxy: HttpProxy; port: number }> {
  const proxy = redirectingProxy(port, policy, {
    revision: () => rev,
    onRecord: (r) => records.push(r),
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: () => {} })); },
  });
  return { proxy, port: (await proxy.start()).egress!.port };
}

/** one request over a new intercepted connection; what came back, until the proxy closed it */
function request(port: number, path: string, close = true): Promise<{ status: number; text: string; error?: string }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert }, () => {
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${NAME}\r\n${close ? 'connection: close\r\n' : ''}\r\n`);
    });
    let text = '';
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text, ...(error ? { error } : {}) });
      s.destroy();
    };
    s.on('data', (c: Buffer) => { text += c.toString(); if (!close && /\r\n\r\n.*conn \d+ req \d+ \S+$/s.test(text)) finish(); });
    s.on('error', (e: Error & { code?: string }) => finish(e.code ?? e.message));
    s.on('close', () => finish());
  });
}

function lastResponse(): HttpAccessRecord {
  const r = records.filter((x) => x.type === 'response').at(-1);
  assert.ok(r, 'a response record');
  return r;
}

async function withOrigin(o: Awaited<ReturnType<typeof origin>>, fn: (port: number, proxy: HttpProxy) => Promise<void>): Promise<void> {
  const p = await proxyTo(o.port);
  try {
    await fn(p.port, p.proxy);
  } finally {
    await p.proxy.stop();
    await o.close();
  }
}

let upstreamIssuer: CertificateIssuer;
before(async () => { upstreamIssuer = await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key); });
after(() => { origSecret = 'upstream-ca'; });

test('an origin presenting a certificate for another name: 502, upstream_tls_error naming the mismatch and the server name', async () => {
  await withOrigin(await origin(upstreamIssuer, 'someone-else.example'), async (port) => {
    records.length = 0;
    const r = await request(port, '/ok');
    assert.equal(r.status, 502);
    const res = lastResponse();
    assert.equal(res.code, 502);
    assert.equal(res.verdict, 'error');
    assert.match(res.reason!, /^upstream_tls_error: .*(hostname mismatch|ERR_TLS_CERT_ALTNAME_INVALID|altnames).*\(server name origin\.example\)$/i);
  });
});

test('an origin with a certificate from another CA: 502, upstream_tls_error naming the verification failure', async () => {
  const otherIssuer = await CertificateIssuer.fromPem(otherCA.cert, otherCA.key);
  await withOrigin(await origin(otherIssuer), async (port) => {
    records.length = 0;
    const r = await request(port, '/ok');
    assert.equal(r.status, 502);
    assert.match(lastResponse().reason!, /^upstream_tls_error: .*(self.signed|unable to verify|local issuer|UNABLE_TO_VERIFY).*\(server name origin\.example\)$/i);
  });
});

test('the same origin under a trust bundle that does not hold its CA: 502; back to the right one: 200 (nothing pooled or resumed across trusts)', async () => {
  await withOrigin(await origin(upstreamIssuer), async (port) => {
    assert.equal((await request(port, '/ok')).status, 200);
    origSecret = 'wrong-ca';
    rev++;
    try {
      records.length = 0;
      assert.equal((await request(port, '/ok')).status, 502, 'neither the pooled connection nor the session of the other trust is used');
      assert.match(lastResponse().reason!, /^upstream_tls_error: /);
    } finally {
      origSecret = 'upstream-ca';
      rev++;
    }
    assert.equal((await request(port, '/ok')).status, 200);
  });
});

test('an origin that resets in the middle of a response: the client gets what came and the connection closes; the next client is served', async () => {
  await withOrigin(await origin(upstreamIssuer), async (port) => {
    const r = await request(port, '/reset');
    assert.equal(r.status, 200);
    assert.ok(r.text.includes('r'.repeat(100)) && !r.text.includes('r'.repeat(101)), 'the part sent, nothing more');
    const next = await request(port, '/ok');
    assert.equal(next.status, 200);
    assert.match(next.text, /conn 2 req 1 \/ok$/, 'a new upstream connection');
  });
});

test('an origin that sends a second response unasked while its connection is pooled: dropped, the next client gets its own answer', async () => {
  await withOrigin(await origin(upstreamIssuer), async (port, proxy) => {
    const a = await request(port, '/unasked');
    assert.equal(a.status, 200);
    assert.match(a.text, /conn 1 req 1 \/unasked$/);
    assert.equal(proxy.pool.size, 1, 'pooled after a complete exchange');
    await tick(120);
    assert.equal(proxy.pool.size, 0, 'the unasked bytes dropped it');
    const b = await request(port, '/ok');
    assert.equal(b.status, 200);
    assert.doesNotMatch(b.text, /UNASKED/);
    assert.match(b.text, /conn 2 req 1 \/ok$/, 'a new upstream connection, not the one that spoke unasked');
  });
});

test('an origin that ends its side while its connection is pooled: dropped, the next client gets a new one', async () => {
  await withOrigin(await origin(upstreamIssuer), async (port, proxy) => {
    assert.equal((await request(port, '/end')).status, 200);
    assert.equal(proxy.pool.size, 1);
    await tick(120);
    assert.equal(proxy.pool.size, 0, 'the end dropped it');
    const b = await request(port, '/ok');
    assert.equal(b.status, 200);
    assert.match(b.text, /conn 2 req 1 \/ok$/);
  });
});

test('a pooled upstream is reused by the next client of the same name and trust (keep-alive origin, one TLS connection)', async () => {
  await withOrigin(await origin(upstreamIssuer), async (port) => {
    for (let i = 1; i <= 3; i++) {
      const r = await request(port, '/ok');
      assert.equal(r.status, 200);
      assert.match(r.text, new RegExp(`conn 1 req ${i} /ok$`));
    }
  });
});

test('garbage for a ServerHello: 502 upstream_tls_error; a refused connect: 503 as for plain HTTP', async () => {
  const junk = net.createServer((s) => { s.on('error', () => {}); s.once('data', () => s.end('HTTP/1.1 400 Bad Request\r\n\r\n')); });
  await new Promise<void>((r) => junk.listen(0, '127.0.0.1', r));
  const jport = (junk.address() as net.AddressInfo).port;
  const p = await proxyTo(jport);
  try {
    records.length = 0;
    assert.equal((await request(p.port, '/ok')).status, 502);
    assert.match(lastResponse().reason!, /^upstream_tls_error: .*(wrong version number|packet length|record).*\(server name origin\.example\)$/is);
    await new Promise<void>((r) => junk.close(() => r()));
    records.length = 0;
    const refused = await request(p.port, '/ok');
    assert.equal(refused.status, 503);
    assert.equal(lastResponse().reason, 'upstream_reset_before_response_started');
  } finally {
    await p.proxy.stop();
    junk.close();
  }
});

test('trust bundles are bounded: past MAX_TRUSTS the oldest goes, its context and sessions freed; the next connection under it makes a new one; every leg freed', async () => {
  resetOriginations();
  await withOrigin(await origin(upstreamIssuer), async (port, proxy) => {
    assert.equal((await request(port, '/ok')).status, 200);
    for (let i = 0; i < 100 && liveSessions() === 0; i++) await tick(2);
    assert.equal(originationState().trusts, 1);
    assert.equal(originationState().sessions, 1, 'the name\'s session kept');
    assert.equal(liveSessions(), 1);
    const first = originationFor(upstreamCA.cert, NAME) as unknown as { trust: { ctx: { freed: boolean } } };
    // as many other bundles (the same CA, other text: other keys) as the bound
    for (let i = 1; i <= MAX_TRUSTS; i++) originationFor(`${upstreamCA.cert}${'\n'.repeat(i)}`, NAME);
    assert.equal(originationState().trusts, MAX_TRUSTS);
    assert.equal(first.trust.ctx.freed, true, 'the oldest bundle\'s context freed');
    assert.equal(liveSessions(), 0, 'its session freed');
    // the bundle made again: a new context, a full handshake, a new pool key (the retired
    // bundle's pooled leg, on OpenSSL's own reference to its context, waits for the sweep)
    assert.match((await request(port, '/ok')).text, /conn 2 req 1 \/ok$/);
    assert.equal(proxy.pool.size, 2);
    proxy.pool.clear();
  });
  resetOriginations();
  for (let i = 0; i < 100 && liveLegs() > 0; i++) await tick(2);
  assert.equal(liveLegs(), 0, 'every upstream leg freed');
  assert.equal(liveSessions(), 0);
});
