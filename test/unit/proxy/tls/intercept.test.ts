/**
 * TLS interception in the HTTP proxy on loopback: the client trusts the interception CA (from a
 * Secret), the proxy issues a leaf for the SNI, applies HTTP rules to the decrypted requests and
 * originates TLS to the upstream verified against the originatingTLS Secret's ca.crt.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { redirectingProxy } from '../http/harness.ts';
import { ServerLegTransport } from '../../../../src/proxy/tls/server-leg.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import type { HttpAccessRecord, TlsAccessRecord } from '../../../../src/common/access-log.ts';
import { createL7Parser } from '../../../../src/hubble/l7-parser.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { opensslCA, tlsUpstream } from './helpers.ts';
import { UpstreamLegTransport } from '../../../../src/proxy/tls/upstream-leg.ts';
import { liveLegs } from '../../../../src/sys/tls-leg.ts';

let interceptCA: { cert: string; key: string };
let upstreamCA: { cert: string; key: string };
let otherCA: { cert: string; key: string };
let up: Awaited<ReturnType<typeof tlsUpstream>>;
let proxy: HttpProxy;
let port = 0;
const secrets = new TlsSecrets();
const tlsRecords: TlsAccessRecord[] = [];
const httpRecords: HttpAccessRecord[] = [];
let rev = 0;

const policyFor = (origSecret: string, serverNames?: string[]): L7Policy => ({
  parser: 'http',
  perSelector: [{
    selector: 's', identities: 'all', origins: [],
    http: [{ method: 'POST', path: '/v1/chat/completions' }, { method: 'GET', path: '/v1/models' }],
    terminatingTLS: { secret: { name: 'intercept' } },
    originatingTLS: { secret: { name: origSecret } },
    ...(serverNames ? { serverNames } : {}),
  }],
});
let policy = policyFor('upstream-ca');

before(async () => {
  interceptCA = opensslCA('interception CA');
  upstreamCA = opensslCA('upstream CA');
  otherCA = opensslCA('some other CA');
  secrets.set('default', 'intercept', { 'tls.crt': interceptCA.cert, 'tls.key': interceptCA.key });
  secrets.set('default', 'upstream-ca', { 'ca.crt': upstreamCA.cert });
  secrets.set('default', 'wrong-ca', { 'ca.crt': otherCA.cert });
  up = await tlsUpstream(await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key));
  proxy = redirectingProxy(up.port, () => policy, {
    revision: () => rev,
    onRecord: (r) => httpRecords.push(r),
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: (r) => tlsRecords.push(r) })); },
  });
  port = (await proxy.start()).egress!.port;
});
after(async () => { await proxy.stop(); up.close(); });

/** Requests over one TLS connection that trusts only the interception CA. */
function exchange(servername: string, reqs: string[]): Promise<{ statuses: number[]; text: string; error?: string; issuer?: string }> {
  return new Promise((resolve) => {
    let issuer: string | undefined;
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca: interceptCA.cert }, () => {
      issuer = String(s.getPeerCertificate().issuer?.CN ?? '');
      s.write(reqs.map((r, i) => `${r} HTTP/1.1\r\nHost: ${servername}\r\ncontent-length: 0\r\n${i === reqs.length - 1 ? 'connection: close\r\n' : ''}\r\n`).join(''));
    });
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString(); });
    const done = (error?: string) => resolve({ statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])), text, ...(error ? { error } : {}), ...(issuer ? { issuer } : {}) });
    s.on('error', (e: Error & { code?: string }) => done(e.code ?? e.message));
    s.on('end', () => done());
  });
}

test('intercepted: the client sees a leaf for the SNI from the interception CA; HTTP rules apply inside; the upstream is verified TLS with SNI', async () => {
  httpRecords.length = 0;
  tlsRecords.length = 0;
  const r = await exchange('api.openai.com', ['POST /v1/chat/completions', 'GET /v1/files', 'GET /v1/models']);
  assert.equal(r.error, undefined);
  assert.equal(r.issuer, 'interception CA');
  assert.deepEqual(r.statuses, [200, 403, 200]);
  assert.match(r.text, /"line":"POST \/v1\/chat\/completions HTTP\/1.1","sni":"api.openai.com"/);
  assert.ok(up.names.includes('api.openai.com'), 'origination sets the SNI');
  const reqs = httpRecords.filter((x) => x.type === 'request');
  assert.deepEqual(reqs.map((x) => [x.verdict, x.method, x.url]), [
    ['forwarded', 'POST', 'https://api.openai.com/v1/chat/completions'], ['denied', 'GET', 'https://api.openai.com/v1/files'], ['forwarded', 'GET', 'https://api.openai.com/v1/models'],
  ]);
  assert.deepEqual(reqs[0]!.tls, { sni: 'api.openai.com', intercepted: true });
  const build = createL7Parser({ nodeName: 'n', resolver: { byIp: () => undefined, identityLabels: () => undefined } });
  assert.match(build(reqs[1]!).Summary, /^HTTP\/1\.1 GET https:\/\/api\.openai\.com\/v1\/files \[TLS intercepted, SNI api\.openai\.com\]$/);
  assert.deepEqual(tlsRecords.map((x) => [x.verdict, x.sni, x.intercepted]), [['forwarded', 'api.openai.com', true]]);
});

test('upstream certificate error (origination trusts the wrong CA): 502 and an error record that says why', async () => {
  httpRecords.length = 0;
  policy = policyFor('wrong-ca');
  rev++;
  const r = await exchange('api.openai.com', ['POST /v1/chat/completions']);
  assert.deepEqual(r.statuses, [502]);
  const res = httpRecords.find((x) => x.type === 'response')!;
  assert.equal(res.verdict, 'error');
  assert.equal(res.code, 502);
  assert.match(res.reason!, /^upstream_tls_error: .*(UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify|self.signed|local issuer).*api\.openai\.com/i);
  policy = policyFor('upstream-ca');
  rev++;
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200], 'trusted CA again: works (no pooled connection of the other trust)');
});

test('serverNames with interception: other names are reset; a missing Secret resets with a clear record', async () => {
  tlsRecords.length = 0;
  policy = policyFor('upstream-ca', ['api.openai.com']);
  rev++;
  const evil = await exchange('evil.example', ['GET /v1/models']);
  assert.equal(evil.error, 'ECONNRESET');
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
  policy = policyFor('missing');
  rev++;
  const m = await exchange('api.openai.com', ['GET /v1/models']);
  assert.equal(m.error, 'ECONNRESET');
  assert.deepEqual(tlsRecords.map((x) => [x.verdict, x.sni]), [['denied', 'evil.example'], ['forwarded', 'api.openai.com'], ['error', 'api.openai.com']]);
  assert.match(tlsRecords[2]!.reason!, /originatingTLS: secret default\/missing not found/);
  policy = policyFor('upstream-ca');
  rev++;
});

test('no SNI and garbage are refused with records; the proxy keeps serving', async () => {
  tlsRecords.length = 0;
  const noSni = await new Promise<string>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: interceptCA.cert, rejectUnauthorized: false });
    s.on('secureConnect', () => resolve('connected'));
    s.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
  });
  assert.notEqual(noSni, 'connected');
  const net = await import('node:net');
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from([22, 3, 1, 0, 5, 1, 0, 0, 1, 0xff])));
    s.on('error', () => {});
    s.on('close', () => resolve());
  });
  assert.equal(tlsRecords.length, 2);
  assert.equal(tlsRecords[0]!.verdict, 'denied');
  assert.match(tlsRecords[0]!.reason!, /no SNI/);
  assert.equal(tlsRecords[1]!.verdict, 'error');
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
});

test('a resumed TLS session (TLS 1.3 ticket) is decided by its SNI too: allowed passes, refused is reset', async () => {
  tlsRecords.length = 0;
  policy = policyFor('upstream-ca', ['api.openai.com']);
  rev++;
  const session = await new Promise<Buffer>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.com', ca: interceptCA.cert, ALPNProtocols: ['http/1.1'] });
    s.once('session', (sess: Buffer) => { resolve(sess); s.destroy(); });
    s.on('error', () => {});
  });
  const again = (servername: string) => new Promise<{ reused: boolean; status: string }>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca: interceptCA.cert, session, checkServerIdentity: () => undefined }, () => {
      s.write(`GET /v1/models HTTP/1.1\r\nHost: ${servername}\r\nconnection: close\r\n\r\n`);
    });
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString(); });
    s.on('end', () => resolve({ reused: s.isSessionReused(), status: /HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? '' }));
    s.on('error', (e: Error & { code?: string }) => resolve({ reused: false, status: e.code ?? e.message }));
  });
  const ok = await again('api.openai.com');
  assert.deepEqual(ok, { reused: true, status: '200' });
  const evil = await again('evil.example');
  assert.notEqual(evil.status, '200');
  assert.ok(tlsRecords.some((r) => r.verdict === 'forwarded' && r.resumed), JSON.stringify(tlsRecords));
  // the forwarded records say the version, the ALPN agreed (the first client offered http/1.1, the
  // second none), and resumed only when it was (the first, full, handshake not)
  const forwarded = tlsRecords.filter((r) => r.verdict === 'forwarded').map((r) => ({ sni: r.sni, version: r.version, alpn: r.alpn, resumed: !!r.resumed }));
  assert.deepEqual(forwarded, [{ sni: 'api.openai.com', version: 'TLS 1.3', alpn: ['http/1.1'], resumed: false }, { sni: 'api.openai.com', version: 'TLS 1.3', alpn: undefined, resumed: true }]);
  assert.ok(tlsRecords.some((r) => r.verdict === 'denied' && r.sni === 'evil.example'));
  policy = policyFor('upstream-ca');
  rev++;
});

test('attacker: a ticket issued for one server name does not resume an intercepted session for another (both allowed): a full handshake with the leaf of the name asked', async () => {
  // openssl s_client offers whatever session it is given (Node's client does not offer one for
  // another name, so it cannot play the attacker here)
  const { execFile } = await import('node:child_process');
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'mbr-tls-resume-'));
  const caFile = join(dir, 'ca.pem'), sess = join(dir, 'sess.pem');
  writeFileSync(caFile, interceptCA.cert);
  const sClient = (servername: string, sessArgs: string) => new Promise<{ reused: boolean; status: string; subject: string }>((resolve) => {
    const req = `GET /v1/models HTTP/1.1\\r\\nHost: ${servername}\\r\\nconnection: close\\r\\n\\r\\n`;
    execFile('sh', ['-c', `printf '${req}' | timeout 10 openssl s_client -connect 127.0.0.1:${port} -servername ${servername} -CAfile ${caFile} -ign_eof ${sessArgs} 2>&1`], (_e, out) => {
      resolve({ reused: /^Reused, TLSv1\.3/m.test(out), status: /HTTP\/1\.1 (\d+)/.exec(out)?.[1] ?? '', subject: /^subject=.*CN\s*=\s*([^\s,/]+)/m.exec(out)?.[1] ?? '' });
    });
  });
  try {
    tlsRecords.length = 0;
    policy = policyFor('upstream-ca', ['api.openai.com', 'second.example']);
    rev++;
    assert.deepEqual(await sClient('api.openai.com', `-sess_out ${sess}`), { reused: false, status: '200', subject: 'api.openai.com' });
    // positive control: the ticket resumes the name it was issued for
    const same = await sClient('api.openai.com', `-sess_in ${sess}`);
    assert.deepEqual([same.reused, same.status], [true, '200'], JSON.stringify(same));
    // the attack: api.openai.com's ticket in a ClientHello for second.example
    const other = await sClient('second.example', `-sess_in ${sess}`);
    assert.deepEqual(other, { reused: false, status: '200', subject: 'second.example' }, 'a full handshake with the leaf of the name asked');
    const forwarded = tlsRecords.filter((r) => r.verdict === 'forwarded').map((r) => [r.sni, !!r.resumed]);
    assert.deepEqual(forwarded, [['api.openai.com', false], ['api.openai.com', true], ['second.example', false]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    policy = policyFor('upstream-ca');
    rev++;
  }
});

test('the intercepting side negotiates TLS_AES_128_GCM_SHA256 in its own order (as Envoy\'s BoringSSL), also with a client that prefers AES-256; a client that offers only AES-256 or only ChaCha20 still connects with it', async () => {
  // Each connection makes a request and reads its answer before it ends: a client that closed right
  // after its own handshake callback could go before its Finished reached the proxy, and the
  // proxy's HANDSHAKE_ABORTED record of it would land in the next test.
  const cipherOf = (ciphers: string) => new Promise<{ cipher: string; status: number; error?: string }>((resolve) => {
    let cipher = '';
    let text = '';
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.com', ca: interceptCA.cert, ciphers }, () => {
      cipher = s.getCipher().name;
      s.write('GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nconnection: close\r\n\r\n');
    });
    s.on('data', (c: Buffer) => { text += c.toString(); });
    s.on('end', () => resolve({ cipher, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) }));
    s.on('error', (e: Error & { code?: string }) => resolve({ cipher, status: 0, error: e.code ?? e.message }));
  });
  tlsRecords.length = 0;
  // OpenSSL's (and Node's) default order: AES-256 first
  assert.deepEqual(await cipherOf('TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256'), { cipher: 'TLS_AES_128_GCM_SHA256', status: 200 });
  assert.deepEqual(await cipherOf('TLS_AES_256_GCM_SHA384'), { cipher: 'TLS_AES_256_GCM_SHA384', status: 200 });
  assert.deepEqual(await cipherOf('TLS_CHACHA20_POLY1305_SHA256'), { cipher: 'TLS_CHACHA20_POLY1305_SHA256', status: 200 });
  assert.deepEqual(tlsRecords.map((r) => [r.verdict, r.sni]), [['forwarded', 'api.openai.com'], ['forwarded', 'api.openai.com'], ['forwarded', 'api.openai.com']]);
});

test('a peer without terminatingTLS on an intercepted port (another selector: serverNames only) is decided by SNI and passed through', async () => {
  tlsRecords.length = 0;
  const base = policyFor('upstream-ca').perSelector[0]!;
  policy = { parser: 'http', perSelector: [{ ...base, identities: new Set([4242]) }, { selector: 'sni-only', identities: 'all', origins: [], serverNames: ['api.openai.com'], http: null }] };
  rev++;
  try {
    const ok = await new Promise<string>((resolve) => {
      // trusts only the upstream's CA: the real server's certificate, nothing intercepted
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.com', ca: upstreamCA.cert }, () => s.write('GET /v1/files HTTP/1.1\r\nHost: api.openai.com\r\nconnection: close\r\n\r\n'));
      let text = '';
      s.on('data', (c: Buffer) => { text += c.toString(); if (text.includes('}')) { resolve(text); s.destroy(); } });
      s.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
    });
    assert.match(ok, /HTTP\/1\.1 200 OK[\s\S]*GET \/v1\/files/, 'no HTTP rules for this peer, no interception');
    const evil = await exchange('evil.example', ['GET /v1/models']);
    assert.equal(evil.error, 'ECONNRESET');
    assert.deepEqual(tlsRecords.map((r) => [r.verdict, r.sni, r.intercepted ?? false]), [['forwarded', 'api.openai.com', false], ['denied', 'evil.example', false]]);
  } finally {
    // restored even when an assertion fails: a leftover sni-only policy failed every test after it
    policy = policyFor('upstream-ca');
    rev++;
  }
});

test('attacker: connections closed before the TLS handshake are recorded at once and hold nothing until the handshake timeout', async () => {
  const { connect } = await import('node:net');
  const before = tlsRecords.length;
  const t0 = Date.now();
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        // half a ClientHello record header, or nothing at all
        if (i % 2) c.write(Buffer.from([0x16, 0x03, 0x01]));
        setTimeout(() => { c.destroy(); resolve(); }, 5);
      });
      c.on('error', () => resolve());
    });
  }
  while (tlsRecords.length - before < 20 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
  const recs = tlsRecords.slice(before);
  assert.equal(recs.length, 20, JSON.stringify(recs.map((r) => r.reason)));
  assert.ok(Date.now() - t0 < 3000, 'recorded long before the 10 s handshake timeout');
  assert.ok(recs.every((r) => r.verdict === 'error' && /^HANDSHAKE_ABORTED/.test(r.reason ?? '')), JSON.stringify(recs.map((r) => [r.verdict, r.reason])));
  // positive control: the proxy still intercepts
  const r = await exchange('api.openai.com', ['GET /v1/models']);
  assert.deepEqual(r.statuses, [200], r.error);
});

test('attacker: a ClientHello cut into 1-byte and 64-byte TCP segments and re-framed as 3 TLS records is decided and handed whole to the TLS server, for a cached leaf and for one issued meanwhile; a record sent after it while the leaf is issued reaches the TLS server too (never dropped)', async () => {
  const { connect, createServer } = await import('node:net');
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  // between the TLS client and the proxy: the client's first record (its ClientHello) re-framed as
  // 3 records and written in pieces, each after a pause (a read of its own); then `after`, if set;
  // everything else unchanged both ways
  const mode: { after: Buffer | null } = { after: null };
  const relay = createServer((c) => {
    const u = connect(port, '127.0.0.1');
    u.setNoDelay(true);
    let head = Buffer.alloc(0);
    let passed = false;
    c.on('data', (d: Buffer) => {
      if (passed) { u.write(d); return; }
      head = Buffer.concat([head, d]);
      if (head.length < 5 || head.length < 5 + head.readUInt16BE(3)) return;
      passed = true;
      c.pause();
      const n = 5 + head.readUInt16BE(3);
      const msg = head.subarray(5, n);
      const rest = head.subarray(n);
      const third = Math.ceil(msg.length / 3);
      const hello = Buffer.concat([0, 1, 2].map((i) => { const p = msg.subarray(i * third, (i + 1) * third); return Buffer.concat([Buffer.from([22, 3, 1, p.length >> 8, p.length & 255]), p]); }));
      const pieces: Buffer[] = [...hello.subarray(0, 12)].map((b) => Buffer.from([b]));
      for (let i = 12; i < hello.length; i += 64) pieces.push(hello.subarray(i, i + 64));
      void (async () => {
        for (const p of pieces) { if (u.destroyed) return; u.write(p); await sleep(1); }
        if (mode.after) u.write(mode.after);
        if (rest.length) u.write(rest);
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
  const relayPort = (relay.address() as import('node:net').AddressInfo).port;
  const viaRelay = (servername: string, ca: string) => new Promise<{ statuses: number[]; error?: string }>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: relayPort, servername, ca }, () => {
      s.write(`GET /v1/models HTTP/1.1\r\nHost: ${servername}\r\nconnection: close\r\n\r\n`);
    });
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString(); });
    const done = (error?: string) => resolve({ statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])), ...(error ? { error } : {}) });
    s.on('error', (e: Error & { code?: string }) => done(e.code ?? e.message));
    s.on('end', () => done());
  });
  const kept = secrets.get('default', 'intercept')!;
  try {
    // a cached leaf: the hello is decided at its last piece and handed on at once
    assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
    const before = tlsRecords.length;
    assert.deepEqual(await viaRelay('api.openai.com', interceptCA.cert), { statuses: [200] });
    // a leaf issued after the hello (a new CA in the Secret: a new issuer, then the leaf)
    const ca2 = opensslCA('interception CA, second');
    secrets.set('default', 'intercept', { 'tls.crt': ca2.cert, 'tls.key': ca2.key });
    assert.deepEqual(await viaRelay('split.example.com', ca2.cert), { statuses: [200] });
    assert.deepEqual(tlsRecords.slice(before).map((r) => [r.verdict, r.sni]), [['forwarded', 'api.openai.com'], ['forwarded', 'split.example.com']]);
    // a record after the hello while the leaf is issued (a third CA): it must reach the TLS server,
    // which refuses it (not a TLS record), rather than vanish before TLS starts
    const ca3 = opensslCA('interception CA, third');
    secrets.set('default', 'intercept', { 'tls.crt': ca3.cert, 'tls.key': ca3.key });
    mode.after = Buffer.from([23, 3, 3, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    const r = await viaRelay('after.example.com', ca3.cert);
    assert.ok(r.error !== undefined && r.statuses.length === 0, `the handshake failed: ${JSON.stringify(r)}`);
    const rec = tlsRecords.at(-1)!;
    assert.equal(rec.sni, 'after.example.com');
    assert.equal(rec.verdict, 'error', JSON.stringify(rec));
  } finally {
    mode.after = null;
    secrets.set('default', 'intercept', kept);
    relay.close();
  }
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
});

test('attacker: a client that stalls its TLS handshake (half a ClientHello, or a full one and nothing after) is reset at the handshake deadline with a HANDSHAKE_TIMEOUT record', async () => {
  const { connect, createServer } = await import('node:net');
  const recs: TlsAccessRecord[] = [];
  const slow = redirectingProxy(up.port, () => policy, {
    revision: () => rev,
    headerTimeoutMs: 400, // the sweep then runs every 100 ms
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: (r) => recs.push(r), handshakeTimeoutMs: 300 })); },
  });
  const slowPort = (await slow.start()).egress!.port;
  // a real ClientHello for an allowed name, captured from a TLS client by a server that never answers
  const hello = await new Promise<Buffer>((resolve) => {
    const srv = createServer((c) => c.once('data', (d: Buffer) => { resolve(d); c.destroy(); srv.close(); }));
    srv.listen(0, '127.0.0.1', () => {
      const t = tls.connect({ host: '127.0.0.1', port: (srv.address() as import('node:net').AddressInfo).port, servername: 'api.openai.com' });
      t.on('error', () => {});
    });
  });
  try {
    const t0 = Date.now();
    const outcomes = await Promise.all([0, 1].map((i) => new Promise<{ error: string; ms: number }>((resolve) => {
      // half a record header; or the whole ClientHello (the proxy answers it) and then nothing
      const c = connect(slowPort, '127.0.0.1', () => c.write(i === 0 ? Buffer.from([0x16, 0x03, 0x01]) : hello));
      c.on('error', (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message, ms: Date.now() - t0 }));
      c.on('close', () => resolve({ error: 'closed', ms: Date.now() - t0 }));
      // bounded: a proxy that never resets would hold this test for ever
      setTimeout(() => { c.destroy(); resolve({ error: 'still open after 5 s', ms: Date.now() - t0 }); }, 5000).unref();
    })));
    for (const o of outcomes) {
      assert.equal(o.error, 'ECONNRESET', JSON.stringify(outcomes));
      assert.ok(o.ms >= 250, `not reset before the deadline (${o.ms} ms)`);
    }
    assert.deepEqual(recs.map((r) => [r.verdict, /^HANDSHAKE_TIMEOUT/.test(r.reason ?? '')]), [['error', true], ['error', true]]);
    // a connection that completes its handshake in time is not touched by the deadline afterwards
    const ok = await new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: slowPort, servername: 'api.openai.com', ca: interceptCA.cert }, () => {
        setTimeout(() => s.write('GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nconnection: close\r\n\r\n'), 600);
      });
      let text = '';
      s.on('data', (c: Buffer) => { text += c.toString(); });
      s.on('end', () => resolve(text));
      s.on('error', (e: Error & { code?: string }) => resolve(e.code ?? e.message));
    });
    assert.match(ok, /^HTTP\/1\.1 200/);
    assert.equal(recs.length, 3);
    assert.equal(recs[2]!.verdict, 'forwarded');
  } finally {
    await slow.stop();
  }
});

test('a pooled TLS upstream is the client leg\'s transport, with the link\'s listeners only (none piles up), read into the link\'s buffer; cleared, its leg is freed', async () => {
  proxy.pool.clear();
  await new Promise((r) => setTimeout(r, 5));
  const legs0 = liveLegs();
  // positive control: an intercepted exchange leaves its verified TLS upstream in the pool
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
  const idle = (proxy.pool as unknown as { idle: Map<string, { sock: UpstreamLegTransport }[]> }).idle;
  const pooled = [...idle.values()].flat().map((l) => l.sock);
  assert.equal(pooled.length, 1);
  const s = pooled[0]!;
  assert.ok(s instanceof UpstreamLegTransport && !s.destroyed, 'the pooled upstream is a client TLS leg');
  assert.equal(liveLegs(), legs0 + 1);
  const counts = () => Object.fromEntries(Object.entries(s.ls).map(([k, v]) => [k, v.length]));
  // the link's own: no `data` (it reads into its buffer), one each of the others
  assert.deepEqual(counts(), { data: 0, end: 1, drain: 1, error: 1, close: 1 });
  // taken again by the next exchange and put back: the same leg, the same listeners
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
  assert.deepEqual([...idle.values()].flat().map((l) => l.sock), [s], 'reused, not replaced');
  assert.deepEqual(counts(), { data: 0, end: 1, drain: 1, error: 1, close: 1 });
  proxy.pool.clear();
  assert.equal(s.destroyed, true);
  for (let i = 0; i < 100 && liveLegs() > legs0; i++) await new Promise((r) => setTimeout(r, 2));
  assert.equal(liveLegs(), legs0, 'the leg (its SSL* and poll handle) is freed');
});

test('a new TLS upstream connection resumes the last verified session of its name and trust bundle; another name, or the same name under another CA, makes a full verified handshake', async () => {
  const fresh = async (name: string) => {
    proxy.pool.clear();
    const n = up.resumed.length;
    const r = await exchange(name, ['GET /v1/models']);
    return { statuses: r.statuses, resumed: up.resumed.slice(n) };
  };
  assert.deepEqual(await fresh('resume.example'), { statuses: [200], resumed: [false] }, 'first connection: full handshake');
  assert.deepEqual(await fresh('resume.example'), { statuses: [200], resumed: [true] }, 'second: resumed');
  assert.deepEqual(await fresh('other.example'), { statuses: [200], resumed: [false] }, 'a session is never offered for another name');
  // attacker: the origin's certificate does not verify under the new trust bundle; a session made
  // under the old one must not let the connection skip verification
  policy = policyFor('wrong-ca');
  rev++;
  const wrong = await fresh('resume.example');
  assert.deepEqual(wrong.statuses, [502]);
  assert.deepEqual(wrong.resumed, [], 'the handshake never completed on the origin');
  policy = policyFor('upstream-ca');
  rev++;
  assert.deepEqual(await fresh('resume.example'), { statuses: [200], resumed: [true] }, 'back to the trusted CA: its session resumes');
});

test('a resumed connection gets a new session ticket, so clients that use a TLS 1.3 ticket once (OpenSSL: wrk, curl) resume every time; a ticket the proxy did not seal is a full handshake', async () => {
  const connect = (session?: Buffer) => new Promise<{ reused: boolean; status: string; next?: Buffer }>((resolve) => {
    let next: Buffer | undefined;
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.com', ca: interceptCA.cert, ...(session ? { session } : {}) }, () => {
      s.write('GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nconnection: close\r\n\r\n');
    });
    s.on('session', (x: Buffer) => { next = x; });
    let text = '';
    s.on('data', (c: Buffer) => { text += c.toString(); });
    s.on('end', () => resolve({ reused: s.isSessionReused(), status: /HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? '', ...(next ? { next } : {}) }));
    s.on('error', (e: Error & { code?: string }) => resolve({ reused: false, status: e.code ?? e.message }));
  });
  let r = await connect();
  assert.equal(r.status, '200');
  for (let i = 0; i < 3; i++) {
    assert.ok(r.next, `connection ${i} got a ticket`);
    r = await connect(r.next);
    assert.deepEqual([r.reused, r.status], [true, '200'], `resumption ${i + 1} with the ticket of the previous, resumed, connection`);
  }
  // attacker: a ticket sealed by another server for the same name is not opened (full handshake, policy as usual)
  const other = await (await CertificateIssuer.fromPem(otherCA.cert, otherCA.key)).certFor('api.openai.com');
  const srv = tls.createServer({ cert: other.certPem, key: other.keyPem }, (s) => { s.on('error', () => {}); s.on('data', () => s.end('ok')); });
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const foreign = await new Promise<Buffer>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: (srv.address() as import('node:net').AddressInfo).port, servername: 'api.openai.com', rejectUnauthorized: false }, () => s.write('hi'));
    s.once('session', (x: Buffer) => { resolve(x); s.destroy(); });
    s.on('error', () => {});
  });
  srv.close();
  assert.deepEqual(await connect(foreign).then((x) => [x.reused, x.status]), [false, '200']);
});

test('attacker: after the handshake, bytes around TLS, garbage HTTP, a half-close after a denied request or mid-head, and a reset mid-head forward nothing unjudged and leave no connection', async () => {
  const { connect } = await import('node:net');
  proxy.pool.clear();
  httpRecords.length = 0;
  const lines0 = up.lines.length;
  /** a verified TLS connection over a TCP socket of the test's own (to write around TLS, or reset it) */
  const open = () => new Promise<{ raw: import('node:net').Socket; s: tls.TLSSocket; text: () => string; closed: Promise<string> }>((resolve, reject) => {
    const raw = connect(port, '127.0.0.1');
    let text = '';
    const s = tls.connect({ socket: raw, servername: 'api.openai.com', ca: interceptCA.cert }, () => resolve({ raw, s, text: () => text, closed }));
    s.on('data', (c: Buffer) => { text += c.toString(); });
    // bounded: a proxy that keeps the connection would hold this test for ever
    const closed = new Promise<string>((r) => {
      s.on('error', (e: Error & { code?: string }) => r(e.code ?? e.message));
      s.on('close', () => r('closed'));
      setTimeout(() => { s.destroy(); r('still open after 3 s'); }, 3000).unref();
    }).then((how) => { assert.notEqual(how, 'still open after 3 s'); return how; });
    s.once('error', reject);
  });
  const noConnections = async () => {
    const t0 = Date.now();
    while (proxy.conns.size > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
    assert.equal(proxy.conns.size, 0, 'the proxy holds no connection once the client is gone');
  };
  const ok = 'GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n';

  // a request written around TLS, as plaintext on the TCP connection: not a TLS record, never parsed
  const a = await open();
  a.raw.write(`${ok}connection: close\r\n\r\n`);
  await a.closed;
  assert.equal(a.text(), '', 'no answer to bytes that are not TLS records');
  await noConnections();

  // a denied request, then the client half-closes: answered 403 and closed, nothing upstream
  const b = await open();
  b.s.end(`GET /admin HTTP/1.1\r\nHost: api.openai.com\r\n\r\n`);
  await b.closed;
  assert.match(b.text(), /^HTTP\/1\.1 403 /);
  await noConnections();

  // an allowed head cut short by a half-close, and another by a TCP reset: a head never judged
  // whole goes nowhere
  const c = await open();
  c.s.end(ok);
  await c.closed;
  const d = await open();
  d.s.write(ok);
  await new Promise((r) => setTimeout(r, 50));
  d.raw.resetAndDestroy();
  await d.closed;
  await noConnections();

  // an allowed request, then bytes that are not HTTP, then a request that would be allowed: the
  // first is forwarded, the garbage answered 400 and the connection closed; what follows it is not read
  const e = await open();
  e.s.write(`${ok}\r\n\x00\x01garbage \r\n\r\n${ok}\r\n`);
  await e.closed;
  assert.deepEqual([...e.text().matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])), [200, 400], e.text());
  await noConnections();

  assert.deepEqual(up.lines.slice(lines0), ['GET /v1/models HTTP/1.1'], 'the upstream got the one request judged and allowed');
  assert.deepEqual(httpRecords.filter((x) => x.type === 'request').map((x) => [x.verdict, x.path]), [['denied', '/admin'], ['forwarded', '/v1/models'], ['error', '']]);
  // positive control: the proxy still intercepts
  assert.deepEqual((await exchange('api.openai.com', ['GET /v1/models'])).statuses, [200]);
});

test('soak in small (issue 18): 60 intercepted connections, a new TLS connection each, and 20 aborted handshakes leave no connection, TLS socket or pooled upstream beyond the pool\'s bound once closed', async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const { connect } = await import('node:net');
  proxy.pool.clear();
  const refs: WeakRef<object>[] = [];
  const seen = new WeakSet<object>();
  // every downstream connection and the stream it adopted (the server TLSSocket), as they pass
  const watch = () => { for (const c of proxy.conns) if (!seen.has(c)) { seen.add(c); refs.push(new WeakRef(c), new WeakRef(c.sock)); } };
  const timer = setInterval(watch, 1);
  try {
    for (let i = 0; i < 60; i++) {
      const r = await exchange('api.openai.com', ['GET /v1/models']);
      assert.deepEqual(r.statuses, [200], r.error);
      if (i % 3 === 0) {
        await new Promise<void>((resolve) => {
          const c = connect(port, '127.0.0.1', () => { c.write(Buffer.from([0x16, 0x03, 0x01])); setTimeout(() => { watch(); c.destroy(); resolve(); }, 2); });
          c.on('error', () => resolve());
        });
      }
    }
  } finally {
    clearInterval(timer);
  }
  // positive control: the watch saw the connections (at least one per exchange, and their TLS sockets)
  assert.ok(refs.length >= 2 * 60, `watched ${refs.length / 2} connections`);
  assert.ok(refs.some((r) => r.deref() instanceof ServerLegTransport), 'the adopted TLS transports are watched too');
  const t0 = Date.now();
  while (proxy.conns.size > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(proxy.conns.size, 0, 'every connection ended');
  assert.ok(proxy.pool.size <= 1, `one idle upstream per key at this concurrency, pooled ${proxy.pool.size}`);
  proxy.pool.clear();
  let alive = refs.length;
  for (let i = 0; i < 20 && alive > 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
    gc();
    alive = refs.filter((r) => r.deref() !== undefined).length;
  }
  assert.equal(alive, 0, `${alive} of ${refs.length} connections and TLS sockets still reachable after they closed`);
});

test('attacker: an intercepted connection\'s decrypted bytes pass byte for byte both ways: pipelined bodies from 1 byte to 2 MB, written in pieces (heads cut anywhere), to an upstream that stalls, echoed back to a client that stalls too', async () => {
  const { createHash, randomBytes } = await import('node:crypto');
  const { takeRequest } = await import('../http/harness.ts');
  const issuer = await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key);
  // an origin that reads nothing for its first 300 ms (the proxy's writes back up, its TLS socket
  // is paused and resumed), then answers each request with its body's length and hash, then the body
  const srv = tls.createServer({
    SNICallback: (name, cb) => { issuer.certFor(name).then((c) => cb(null, c.context), (e: Error) => cb(e)); },
    ALPNProtocols: ['http/1.1'],
  }, (s) => {
    s.pause();
    setTimeout(() => s.resume(), 300);
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => {
      buf += c;
      for (let r = takeRequest(buf); r; r = takeRequest(buf)) {
        buf = r.rest;
        // the body back after a line with its length and hash: responses of 1 byte to 2 MB through the upstream leg
        const body = `${r.line} ${r.body.length} ${createHash('sha256').update(Buffer.from(r.body, 'latin1')).digest('hex')}\n${r.body}`;
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`, 'latin1');
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const p2 = redirectingProxy((srv.address() as import('node:net').AddressInfo).port, () => policy, {
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: () => {} })); },
  });
  const port2 = (await p2.start()).egress!.port;
  try {
    const sizes = [1, 1000, 1024, 1025, 4096, 70_000, 300_000, 2_000_000, 17];
    const bodies = sizes.map((n) => randomBytes(n));
    const wire = Buffer.concat(bodies.flatMap((b, i) => [
      Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\ncontent-length: ${b.length}\r\n${i === bodies.length - 1 ? 'connection: close\r\n' : ''}\r\n`), b,
    ]));
    const text = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: port2, servername: 'api.openai.com', ca: interceptCA.cert }, async () => {
        // in pieces of 1 byte to 64 KiB, each its own TLS record: heads and bodies cut anywhere
        for (let at = 0, i = 0; at < wire.length; i++) {
          const n = [1, 7, 300, 1500, 65_536][i % 5]!;
          const ok = s.write(wire.subarray(at, at + n));
          at += n;
          if (!ok) await new Promise((r) => s.once('drain', r));
        }
      });
      let t = '';
      s.setEncoding('latin1');
      s.on('data', (c: string) => { t += c; });
      // the client reads nothing for its first 600 ms: the proxy's writes to it back up and the upstream is paused
      s.pause();
      setTimeout(() => s.resume(), 600);
      s.on('end', () => resolve(t));
      s.on('error', reject);
    });
    const answers = [...text.matchAll(/HTTP\/1\.1 200 OK\r\ncontent-length: (\d+)\r\n(?:connection: close\r\n)?\r\n/g)].map((m) => text.slice(m.index + m[0].length, m.index + m[0].length + Number(m[1])));
    assert.deepEqual(answers.map((a) => a.slice(0, a.indexOf('\n'))), bodies.map((b) => `POST /v1/chat/completions HTTP/1.1 ${b.length} ${createHash('sha256').update(b).digest('hex')}`));
    assert.deepEqual(answers.map((a) => createHash('sha256').update(Buffer.from(a.slice(a.indexOf('\n') + 1), 'latin1')).digest('hex')), bodies.map((b) => createHash('sha256').update(b).digest('hex')), 'every body came back whole');
  } finally {
    await p2.stop();
    srv.close();
  }
});
