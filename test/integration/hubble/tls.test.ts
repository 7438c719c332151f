/**
 * Hubble's access control without a lab: the real server (createHubble) on a unix socket and on a
 * TCP port with the certificates the lab issues (ensureHubbleCerts), queried by membrane's gRPC
 * client, raw TLS sockets and the upstream hubble CLI. Mutual TLS accepts only client certificates
 * the Hubble CA signed for client use; plain text is refused unless set explicitly; the socket is
 * root-only. Needs root (the socket check runs a client as `nobody`).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect } from 'node:net';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHubble, type Hubble } from '../../../src/hubble/index.ts';
import { observerClient, type ServerTarget } from '../../../src/hubble/client.ts';
import { hubbleServerName } from '../../../src/hubble/tls.ts';
import { ensureHubbleCerts, type HubbleTlsPaths } from '../../../src/lab/hubble-certs.ts';
import { ensureCA, issueCert } from '../../../src/lab/ca.ts';
import { MembraneError } from '../../../src/common/errors.ts';
import { ev, resolver } from '../../unit/hubble/fixtures.ts';
import { hubbleCli } from '../support/hubble-cli.ts';
import { runCommand } from '../../support/run.ts';

const HUBBLE = hubbleCli();
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
let dir: string;
let sock: string;
let pki: HubbleTlsPaths;
let hubble: Hubble;
let tcp: ServerTarget;
let port: number;
const SERVER_NAME = hubbleServerName('node1');
/** client credentials that must be refused */
const rogue = { caCert: '', cert: '', key: '' };

const run = (cmd: string, args: string[], timeout = 20_000) => runCommand(cmd, args, { timeout });

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'membrane-hubble-tls-'));
  chmodSync(dir, 0o755); // traversable by anyone: only the socket's own mode may keep `nobody` out
  pki = await ensureHubbleCerts(dir, ['node1']);
  // a second CA, with a client certificate of the right shape: the server must still refuse it
  const other = await ensureCA(join(dir, 'other-ca'), 'CN=not the hubble CA');
  const c = await issueCert(other, { commonName: '*.hubble-relay.cilium.io', names: ['*.hubble-relay.cilium.io'], usage: 'client' });
  rogue.caCert = other.certPath;
  rogue.cert = join(dir, 'rogue.crt');
  rogue.key = join(dir, 'rogue.key');
  writeFileSync(rogue.cert, c.cert);
  writeFileSync(rogue.key, c.key, { mode: 0o600 });
  sock = join(dir, 'hubble.sock');
  hubble = createHubble({
    nodeName: 'node1', resolver, socketPath: sock, capacity: 63,
    tcpPort: 0, tcpHost: '127.0.0.1', tcpSecurity: { tls: pki.server('node1') },
  });
  await hubble.start();
  port = hubble.server.tcpAddress()!.port;
  tcp = { kind: 'tcp', host: '127.0.0.1', port };
  const now = BigInt(Date.now()) * 1_000_000n;
  for (let i = 0; i < 5; i++) hubble.ingest(ev({ timeNs: now, srcPort: 41000 + i }));
});

after(async () => {
  await hubble.stop();
  rmSync(dir, { recursive: true, force: true });
});

const good = () => ({ caFiles: [pki.caCert], certFile: pki.clientCert, keyFile: pki.clientKey, serverName: SERVER_NAME });

const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
const SETTINGS_FRAME = '000000040000000000'; // the server's first HTTP/2 frame: empty SETTINGS

/**
 * One raw TLS connection that sends the HTTP/2 preface: `h2` when the server answered with its
 * SETTINGS frame (it serves this client), else how the connection ended.
 */
function h2Probe(o: { cert?: string; key?: string; ca?: string } = {}): Promise<string> {
  return new Promise((res) => {
    const s = tlsConnect({
      host: '127.0.0.1', port, servername: SERVER_NAME, ca: readFileSync(o.ca ?? pki.caCert), ALPNProtocols: ['h2'],
      ...(o.cert ? { cert: readFileSync(o.cert), key: readFileSync(o.key!) } : {}),
    });
    let got = Buffer.alloc(0);
    s.once('secureConnect', () => s.write(PREFACE));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.subarray(0, 9).toString('hex') === SETTINGS_FRAME) { s.destroy(); res('h2'); }
    });
    s.once('error', (e: NodeJS.ErrnoException) => res(`error ${e.code}`));
    s.once('close', () => res(`closed after ${got.length} bytes`));
  });
}

async function flowCount(t: ServerTarget, tls?: Parameters<typeof observerClient>[1]): Promise<number> {
  let n = 0;
  for await (const r of observerClient(t, tls).getFlows({ number: 100n }, { timeoutMs: 5000 })) if (r.responseTypes.case === 'flow') n++;
  return n;
}

test('the lab issues Hubble certificates as Cilium does: CA, per-node server name, client certificate; keys 0600 in 0700 directories', () => {
  const mode = (f: string) => statSync(f).mode & 0o777;
  assert.equal(mode(pki.dir), 0o700);
  for (const k of [join(pki.dir, 'ca.key'), pki.clientKey, pki.server('node1').keyFile]) assert.equal(mode(k), 0o600, k);
  const ca = new X509Certificate(readFileSync(pki.caCert));
  assert.equal(ca.ca, true);
  const server = new X509Certificate(readFileSync(pki.server('node1').certFile));
  assert.equal(server.subjectAltName, 'DNS:node1.default.hubble-grpc.cilium.io');
  assert.equal(server.checkHost('node1.default.hubble-grpc.cilium.io'), 'node1.default.hubble-grpc.cilium.io');
  assert.equal(server.checkHost('node2.default.hubble-grpc.cilium.io'), undefined);
  assert.ok(server.verify(ca.publicKey));
  assert.deepEqual(server.keyUsage, ['1.3.6.1.5.5.7.3.1']); // serverAuth only
  const client = new X509Certificate(readFileSync(pki.clientCert));
  assert.ok(client.verify(ca.publicKey));
  assert.deepEqual(client.keyUsage, ['1.3.6.1.5.5.7.3.2']); // clientAuth only
  assert.match(client.subject, /CN=\*\.hubble-relay\.cilium\.io/);
  assert.equal(hubbleServerName('a.b', 'my.cluster'), 'a-b.my-cluster.hubble-grpc.cilium.io');
});

test('ensureHubbleCerts is idempotent and reissues a certificate the current CA did not sign', async () => {
  const before = readFileSync(pki.clientCert, 'utf8');
  await ensureHubbleCerts(dir, ['node1']);
  assert.equal(readFileSync(pki.clientCert, 'utf8'), before);
  const scratch = mkdtempSync(join(tmpdir(), 'membrane-hubble-re-'));
  try {
    const p = await ensureHubbleCerts(scratch, ['node1', 'node2']);
    writeFileSync(p.server('node2').certFile, readFileSync(rogue.cert)); // signed by another CA
    await ensureHubbleCerts(scratch, ['node1', 'node2']);
    const ca = new X509Certificate(readFileSync(p.caCert));
    assert.ok(new X509Certificate(readFileSync(p.server('node2').certFile)).verify(ca.publicKey));
    assert.equal(new X509Certificate(readFileSync(p.server('node2').certFile)).subjectAltName, 'DNS:node2.default.hubble-grpc.cilium.io');
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('mutual TLS: the lab client certificate reads flows; GetNodes and Peer report TLS with the server name', async () => {
  assert.equal(await flowCount(tcp, good()), 5);
  const nodes = await observerClient(tcp, good()).getNodes({});
  assert.equal(nodes.nodes[0]!.tls?.enabled, true);
  assert.equal(nodes.nodes[0]!.tls?.serverName, SERVER_NAME);
  assert.deepEqual(hubble.listener(), { address: `127.0.0.1:${port}`, tls: true, serverName: SERVER_NAME });
});

test('positive control of the raw probe: the lab client certificate gets the HTTP/2 SETTINGS frame', async () => {
  assert.equal(await h2Probe({ cert: pki.clientCert, key: pki.clientKey }), 'h2');
});

test('plain-text HTTP/2 to the TLS port gets no HTTP/2 answer', async () => {
  await assert.rejects(flowCount(tcp));
  const answer = await new Promise<Buffer>((res) => {
    const s = netConnect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    s.once('connect', () => s.write(PREFACE + '\x00\x00\x00\x04\x00\x00\x00\x00\x00'));
    s.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
    s.once('close', () => res(got));
    s.once('error', () => { /* close follows */ });
  });
  assert.notEqual(answer.subarray(0, 9).toString('hex'), SETTINGS_FRAME);
  assert.ok(answer.length === 0 || answer[0] === 0x15, `nothing or a TLS alert record, got ${answer.toString('hex')}`);
});

test('TLS without a client certificate is refused during the handshake (certificate_required alert)', async () => {
  await assert.rejects(flowCount(tcp, { caFiles: [pki.caCert], serverName: SERVER_NAME }), /certificate required/i);
  assert.equal(await h2Probe(), 'error ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
});

test('a client certificate from another CA is refused: the server closes without speaking HTTP/2', async () => {
  await assert.rejects(flowCount(tcp, { caFiles: [pki.caCert], certFile: rogue.cert, keyFile: rogue.key, serverName: SERVER_NAME }));
  assert.equal(await h2Probe({ cert: rogue.cert, key: rogue.key }), 'closed after 0 bytes');
});

test('a certificate of the Hubble CA issued for server use is not a client certificate (extended key usage)', async () => {
  const s = pki.server('node1');
  await assert.rejects(flowCount(tcp, { caFiles: [pki.caCert], certFile: s.certFile, keyFile: s.keyFile, serverName: SERVER_NAME }));
  assert.equal(await h2Probe({ cert: s.certFile, key: s.keyFile }), 'closed after 0 bytes');
});

test('the client verifies the server: another node\'s name or another CA fails before any request', async () => {
  await assert.rejects(flowCount(tcp, { ...good(), serverName: hubbleServerName('node2') }), /is not in the cert's altnames: DNS:node1\.default\.hubble-grpc\.cilium\.io/);
  await assert.rejects(flowCount(tcp, { ...good(), caFiles: [rogue.caCert] }), /self-signed certificate in certificate chain/);
});

test('TLS 1.2 is refused (TLS 1.3 only, as Cilium\'s Hubble server)', async () => {
  const attempt = (maxVersion: 'TLSv1.2' | 'TLSv1.3') => new Promise<string>((res) => {
    const s = tlsConnect({
      host: '127.0.0.1', port, servername: SERVER_NAME, ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey),
      maxVersion, ALPNProtocols: ['h2'],
    });
    s.once('secureConnect', () => { const v = s.getProtocol() ?? '?'; s.destroy(); res(v); });
    s.once('error', (e) => res(`error: ${e.message}`));
  });
  assert.equal(await attempt('TLSv1.3'), 'TLSv1.3');
  assert.match(await attempt('TLSv1.2'), /^error: .*(protocol version|alert)/i);
});

test('the upstream hubble CLI: mutual TLS works, plain text and a missing client certificate do not', async () => {
  const base = ['--server', `127.0.0.1:${port}`, '--timeout', '3s'];
  const tls = ['--tls', '--tls-ca-cert-files', pki.caCert, '--tls-server-name', SERVER_NAME];
  const ok = await run(HUBBLE, ['observe', ...base, ...tls, '--tls-client-cert-file', pki.clientCert, '--tls-client-key-file', pki.clientKey, '--last', '5', '-o', 'json']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.trim().split('\n').filter((l) => JSON.parse(l).flow).length, 5);
  const plain = await run(HUBBLE, ['observe', ...base, '--last', '5']);
  assert.notEqual(plain.code, 0);
  assert.match(plain.stderr, /Unavailable/);
  const noCert = await run(HUBBLE, ['observe', ...base, ...tls, '--last', '5']);
  assert.notEqual(noCert.code, 0);
  assert.match(noCert.stderr, /certificate required|broken pipe|connection reset|EOF/);
  const rogueCert = await run(HUBBLE, ['observe', ...base, ...tls, '--tls-client-cert-file', rogue.cert, '--tls-client-key-file', rogue.key, '--last', '5']);
  assert.notEqual(rogueCert.code, 0);
  assert.match(rogueCert.stderr, /unknown certificate authority|bad certificate|broken pipe|connection reset|EOF/);
});

test('the unix socket is root-only: mode 0600; `nobody` cannot connect, root can', async () => {
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  const asNobody = () => run('setpriv', [...NOBODY, HUBBLE, 'status', '--server', `unix://${sock}`, '--timeout', '3s']);
  const denied = await asNobody();
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /permission denied/);
  const root = await run(HUBBLE, ['status', '--server', `unix://${sock}`]);
  assert.equal(root.code, 0, root.stderr);
  assert.match(root.stdout, /Healthcheck .*: Ok/);
  // positive control: the same `nobody` client gets through when the mode allows it (the path is traversable)
  chmodSync(sock, 0o666);
  try {
    const allowed = await asNobody();
    assert.equal(allowed.code, 0, allowed.stderr);
  } finally {
    chmodSync(sock, 0o600);
  }
});

test('bad TLS setups serve nothing: no TLS configuration, a loose key, no client CA, a key of another certificate', async () => {
  const s = join(dir, 'bad.sock');
  const attempt = async (tcpSecurity: Parameters<typeof createHubble>[0]['tcpSecurity'], code: string) => {
    const h = createHubble({ nodeName: 'node1', resolver, socketPath: s, tcpPort: 0, tcpHost: '127.0.0.1', ...(tcpSecurity ? { tcpSecurity } : {}) });
    await assert.rejects(h.start(), (e) => e instanceof MembraneError && e.code === code);
    assert.equal(existsSync(s), false, 'nothing listens');
    assert.equal(h.server.tcpAddress(), undefined);
  };
  await attempt(undefined, 'HUBBLE_TLS_REQUIRED');
  const loose = join(dir, 'loose.key');
  writeFileSync(loose, readFileSync(pki.server('node1').keyFile), { mode: 0o644 });
  chmodSync(loose, 0o644);
  await attempt({ tls: { ...pki.server('node1'), keyFile: loose } }, 'HUBBLE_TLS_KEY_MODE');
  await attempt({ tls: { ...pki.server('node1'), clientCaFiles: [] } }, 'HUBBLE_TLS_NO_CLIENT_CA');
  await attempt({ tls: { ...pki.server('node1'), keyFile: pki.clientKey } }, 'HUBBLE_TLS_FILE');
  await attempt({ tls: { ...pki.server('node1'), certFile: join(dir, 'missing.crt') } }, 'HUBBLE_TLS_FILE');
  // a message names the file, never its content
  const garbage = join(dir, 'garbage.key');
  writeFileSync(garbage, '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
  const h = createHubble({ nodeName: 'node1', resolver, socketPath: s, tcpPort: 0, tcpHost: '127.0.0.1', tcpSecurity: { tls: { ...pki.server('node1'), keyFile: garbage } } });
  await assert.rejects(h.start(), (e) => e instanceof MembraneError && e.message.includes(garbage) && !/c2VjcmV0/.test(`${e.message}${e.hint ?? ''}`));
});

test('plain text only when asked for explicitly: then h2c works and GetNodes says TLS is off', async () => {
  const s = join(dir, 'plain.sock');
  const h = createHubble({ nodeName: 'node1', resolver, socketPath: s, tcpPort: 0, tcpHost: '127.0.0.1', tcpSecurity: { plaintext: true } });
  await h.start();
  try {
    h.ingest(ev({ timeNs: BigInt(Date.now()) * 1_000_000n }));
    const t: ServerTarget = { kind: 'tcp', host: '127.0.0.1', port: h.server.tcpAddress()!.port };
    assert.equal(await flowCount(t), 1);
    assert.equal((await observerClient(t).getNodes({})).nodes[0]!.tls?.enabled, false);
    assert.deepEqual(h.listener(), { address: `127.0.0.1:${t.port}`, tls: false });
    // and a TLS client finds no TLS there
    await assert.rejects(flowCount({ ...t, tls: true }, good()));
  } finally {
    await h.stop();
  }
});

test('HTTP/1.1 over TLS is not served (h2 only)', async () => {
  const s = http2.connect(`https://127.0.0.1:${port}`, { ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), servername: SERVER_NAME });
  const proto = await new Promise<string>((res, rej) => { s.once('connect', () => res(s.alpnProtocol ?? '')); s.once('error', rej); });
  s.close();
  assert.equal(proto, 'h2');
  const h1 = await new Promise<string>((res) => {
    const c = tlsConnect({ host: '127.0.0.1', port, servername: SERVER_NAME, ca: readFileSync(pki.caCert), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), ALPNProtocols: ['http/1.1'] });
    c.once('secureConnect', () => { c.destroy(); res('connected'); });
    c.once('error', (e) => res(`error: ${e.message}`));
  });
  assert.match(h1, /^error: .*(application protocol|ALPN|no_application_protocol|alert)/i);
});
