/**
 * The SNI proxy (HTTP proxy machinery + the tls.sni network filter) on loopback with a fixed
 * upstream TLS server: names decided by policy, hellos fragmented to single bytes, refusals as
 * TCP resets with flows, and bad input that never breaks the proxy.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { redirectingProxy } from '../http/harness.ts';
import { createSniFilter } from '../../../../src/proxy/tls/sni-filter.ts';
import { createL7Parser } from '../../../../src/hubble/l7-parser.ts';
import type { TlsAccessRecord } from '../../../../src/common/access-log.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { Verdict } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { opensslCA, tlsUpstream } from './helpers.ts';

const sniPolicy = (names: string[]): L7Policy => ({ parser: 'tls', perSelector: [{ selector: 's', identities: 'all', origins: [], serverNames: names }] });

let upstreamCA: { cert: string; key: string };
let up: Awaited<ReturnType<typeof tlsUpstream>>;
let proxy: HttpProxy;
let port = 0;
let policy: L7Policy = sniPolicy(['api.openai.com', '*.example.com']);
let rev = 0;
const records: TlsAccessRecord[] = [];

before(async () => {
  upstreamCA = opensslCA('upstream CA');
  up = await tlsUpstream(await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key));
  proxy = redirectingProxy(up.port, () => policy, {
    revision: () => rev,
    configure: (chain) => { chain.addNetwork(createSniFilter({ onRecord: (r) => records.push(r), helloTimeoutMs: 2500, maxHelloBytes: 16 * 1024 })); },
  });
  port = (await proxy.start()).egress!.port;
});
after(async () => { await proxy.stop(); up.close(); });

function httpsGet(servername: string | undefined, path = '/'): Promise<{ ok: boolean; body?: string; error?: string }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), ca: upstreamCA.cert, rejectUnauthorized: !!servername }, () => {
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${servername}\r\n\r\n`);
    });
    let body = '';
    s.on('data', (c: Buffer) => {
      body += c.toString();
      if (/\r\n\r\n\{.*\}$/.test(body)) { resolve({ ok: true, body }); s.end(); }
    });
    s.on('error', (e: Error & { code?: string }) => resolve({ ok: false, error: e.code ?? e.message }));
    s.on('close', () => resolve({ ok: false, error: 'closed' }));
  });
}

/** Sends raw bytes (in pieces) and reports what came back: bytes, reset or close. */
function raw(pieces: Buffer[], gapMs = 0): Promise<{ bytes: Buffer; reset: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let reset = false;
    s.on('data', (c: Buffer) => { got.push(c); if (Buffer.concat(got).length >= 5) s.destroy(); });
    s.on('error', (e: Error & { code?: string }) => { if (e.code === 'ECONNRESET') reset = true; });
    s.on('close', () => resolve({ bytes: Buffer.concat(got), reset }));
    s.on('connect', async () => {
      for (const p of pieces) {
        if (s.destroyed) break;
        s.write(p);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    });
    setTimeout(() => s.destroy(), 5000);
  });
}

/** A real ClientHello from node's TLS client for `servername` (minVersion/maxVersion as given). */
async function captureHello(servername: string, o: tls.ConnectionOptions = {}): Promise<Buffer> {
  const srv = net.createServer((s) => s.once('data', (c: Buffer) => { srv.emit('hello', c); s.destroy(); }));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const hello = new Promise<Buffer>((r) => srv.once('hello', r));
  const c = tls.connect({ host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, servername, ...o });
  c.on('error', () => {});
  const h = await hello;
  srv.close();
  return h;
}

function hello(fields: { sni?: string | Buffer; extraExt?: Buffer; recordVersion?: number; legacyVersion?: number }): Buffer {
  const exts: Buffer[] = [];
  if (fields.sni !== undefined) {
    const name = Buffer.isBuffer(fields.sni) ? fields.sni : Buffer.from(fields.sni);
    const entry = Buffer.concat([Buffer.from([0, name.length >> 8, name.length & 255]), name]);
    const list = Buffer.concat([Buffer.from([entry.length >> 8, entry.length & 255]), entry]);
    exts.push(Buffer.from([0, 0, list.length >> 8, list.length & 255]), list);
  }
  if (fields.extraExt) exts.push(fields.extraExt);
  const extBytes = Buffer.concat(exts);
  const lv = fields.legacyVersion ?? 0x0303;
  const body = Buffer.concat([
    Buffer.from([lv >> 8, lv & 255]), Buffer.alloc(32, 7), Buffer.from([0]), Buffer.from([0, 2, 0x00, 0x2f]), Buffer.from([1, 0]),
    Buffer.from([extBytes.length >> 8, extBytes.length & 255]), extBytes,
  ]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 255, body.length & 255]), body]);
  const rv = fields.recordVersion ?? 0x0301;
  const out: Buffer[] = [];
  for (let i = 0; i < hs.length; i += 16384) {
    const part = hs.subarray(i, i + 16384);
    out.push(Buffer.from([22, rv >> 8, rv & 255, part.length >> 8, part.length & 255]), part);
  }
  return Buffer.concat(out);
}

test('allowed names pass through unchanged (end-to-end TLS with the upstream); others are reset with a flow', async () => {
  records.length = 0;
  const ok = await httpsGet('api.openai.com', '/v1/models');
  assert.ok(ok.ok, ok.error);
  assert.match(ok.body!, /"line":"GET \/v1\/models HTTP\/1.1","sni":"api.openai.com"/);
  assert.ok((await httpsGet('www.example.com')).ok, '*.example.com');
  const evil = await httpsGet('evil.example');
  assert.equal(evil.ok, false);
  assert.equal(evil.error, 'ECONNRESET');
  assert.equal((await httpsGet('a.b.example.com')).error, 'ECONNRESET', '*.x is one label');
  assert.equal((await httpsGet(undefined)).error, 'ECONNRESET', 'no SNI');
  assert.deepEqual(records.map((r) => [r.verdict, r.sni ?? '']), [
    ['forwarded', 'api.openai.com'], ['forwarded', 'www.example.com'], ['denied', 'evil.example'], ['denied', 'a.b.example.com'], ['denied', ''],
  ]);
  assert.match(records[2]!.reason!, /server name not allowed/);
  assert.match(records[4]!.reason!, /no SNI/);
  const build = createL7Parser({ nodeName: 'n1', resolver: { byIp: () => undefined, identityLabels: () => undefined } });
  const f = build(records[2]!);
  assert.equal(f.verdict, Verdict.DROPPED);
  assert.deepEqual(f.destinationNames, ['evil.example']);
  assert.match(f.Summary, /^TLS ClientHello SNI evil\.example refused: policy: server name not allowed/);
  assert.match(build(records[0]!).Summary, /^TLS ClientHello SNI api\.openai\.com \(TLS 1\.3/);
});

test('a ClientHello in 1-byte segments, and split over several TLS records, is reassembled and passed on byte for byte', async () => {
  records.length = 0;
  const h = await captureHello('api.openai.com');
  // every header byte alone (record, handshake, version, random, session id), then 16-byte pieces:
  // a few hundred 1 ms timers would outlast the 2.5 s hello timeout on a loaded machine
  const pieces: Buffer[] = [...h.subarray(0, 80)].map((b) => Buffer.from([b]));
  for (let i = 80; i < h.length; i += 16) pieces.push(h.subarray(i, i + 16));
  const r = await raw(pieces, 1);
  assert.equal(r.reset, false);
  assert.equal(r.bytes[0], 22, 'the upstream answered the forwarded hello with a handshake record');
  // the same handshake message re-framed as 3 records of the first one's version
  const msg = h.subarray(5);
  const third = Math.ceil(msg.length / 3);
  const recs = [0, 1, 2].map((i) => { const p = msg.subarray(i * third, (i + 1) * third); return Buffer.concat([Buffer.from([22, 3, 1, p.length >> 8, p.length & 255]), p]); });
  const r2 = await raw(recs, 5);
  assert.equal(r2.bytes[0], 22);
  assert.deepEqual(records.map((x) => x.verdict), ['forwarded', 'forwarded']);
});

test('bad input is refused with a reset and a flow, never a crash; the proxy keeps serving', async () => {
  records.length = 0;
  const h = await captureHello('api.openai.com');
  const cases: [string, Buffer[], RegExp][] = [
    ['plain HTTP', [Buffer.from('GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n')], /^NOT_TLS/],
    ['SSLv2 hello', [Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15])], /^SSLV2/],
    ['truncated inner lengths', [hello({ sni: 'api.openai.com' }).subarray(0, 60)], /^HELLO_TIMEOUT/],
    ['malformed: record length 0', [Buffer.from([22, 3, 1, 0, 0])], /^BAD_RECORD/],
    ['malformed: not a ClientHello', [Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0])], /^(NOT_CLIENT_HELLO|TRUNCATED)/],
    ['SNI list length lies', [hello({ sni: 'api.openai.com' }).fill(0xff, 60, 62)], /^(TRUNCATED|BAD_EXTENSION|BAD_SNI)/],
    ['giant extension (64 KiB)', [hello({ sni: 'api.openai.com', extraExt: Buffer.concat([Buffer.from([0x12, 0x34, 0xff, 0xf0]), Buffer.alloc(0xfff0)]) })], /^TOO_LARGE/],
    ['SNI with illegal characters', [hello({ sni: 'api.openai.com\u0000.evil' })], /^BAD_SNI/],
    ['SNI with a space and a slash', [hello({ sni: 'api openai/com' })], /^BAD_SNI/],
    ['handshake truncated mid-record, then EOF', [h.subarray(0, h.length - 10)], /.*/],
  ];
  for (const [name, pieces, reason] of cases) {
    const before = records.length;
    const r = await raw(pieces);
    assert.ok(r.bytes.length === 0 || r.bytes[0] !== 22, `${name}: nothing from the upstream`);
    if (name.includes('EOF')) continue; // the client gave up first: no decision either way
    assert.equal(records.length, before + 1, `${name}: one record`);
    const rec = records.at(-1)!;
    assert.notEqual(rec.verdict, 'forwarded', name);
    assert.match(rec.reason!, reason, `${name}: ${rec.reason}`);
    assert.ok(r.reset, `${name}: reset`);
  }
  assert.ok((await httpsGet('api.openai.com')).ok, 'still serving');
});

test('TLS 1.0 and SSLv3-era hellos: decided by their SNI like any other (the upstream decides the version)', async () => {
  records.length = 0;
  // record version 3.0 (SSLv3), legacy_version TLS 1.0, allowed name: passed to the upstream (which refuses it)
  const r1 = await raw([hello({ sni: 'api.openai.com', recordVersion: 0x0300, legacyVersion: 0x0301 })]);
  assert.equal(r1.reset, false);
  // an SSLv3 hello carries no extensions: no SNI ⇒ refused where names are required
  const r2 = await raw([hello({ recordVersion: 0x0300, legacyVersion: 0x0300 })]);
  assert.ok(r2.reset);
  const r3 = await raw([hello({ sni: 'evil.example', recordVersion: 0x0301, legacyVersion: 0x0301 })]);
  assert.ok(r3.reset);
  assert.deepEqual(records.map((x) => [x.verdict, x.sni ?? '', x.version ?? '']), [
    ['forwarded', 'api.openai.com', 'TLS 1.0'], ['denied', '', 'SSLv3'], ['denied', 'evil.example', 'TLS 1.0'],
  ]);
  assert.ok((await httpsGet('api.openai.com')).ok, 'still serving');
});

test('a policy change applies to new connections; an L4-only rule on the port (no serverNames) allows any name', async () => {
  policy = sniPolicy(['evil.example']);
  rev++;
  assert.equal((await httpsGet('api.openai.com')).error, 'ECONNRESET');
  policy = { parser: 'tls', perSelector: [{ selector: 's', identities: 'all', origins: [] }] };
  rev++;
  assert.ok((await httpsGet('api.openai.com')).ok);
  policy = sniPolicy(['api.openai.com', '*.example.com']);
  rev++;
});
