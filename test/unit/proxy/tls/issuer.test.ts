import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, connect, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';

function opensslCA(kind: 'ec' | 'rsa', ca = true): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mbr-ca-'));
  try {
    const key = join(dir, 'ca.key');
    const crt = join(dir, 'ca.crt');
    if (kind === 'ec') execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    else execFileSync('openssl', ['genrsa', '-traditional', '-out', key, '2048'], { stdio: 'ignore' });
    execFileSync('openssl', ['req', '-x509', '-new', '-key', key, '-subj', '/CN=interception CA', '-days', '2', '-out', crt,
      '-addext', `basicConstraints=critical,CA:${ca ? 'TRUE' : 'FALSE'}`, '-addext', 'keyUsage=critical,keyCertSign,digitalSignature']);
    return { cert: readFileSync(crt, 'utf8'), key: readFileSync(key, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function handshake(issuer: CertificateIssuer, ca: string, servername: string): Promise<{ authorized: boolean; error?: string; cn?: string }> {
  const server = createServer({
    SNICallback: (name, cb) => { issuer.certFor(name).then((c) => cb(null, c.context), (e: Error) => cb(e)); },
  }, (s) => s.end('hi'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await new Promise((resolve) => {
      const c: TLSSocket = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername, ca, rejectUnauthorized: false }, () => {
        const cn = c.getPeerCertificate().subject?.CN;
        resolve({ authorized: c.authorized, ...(c.authorizationError ? { error: String(c.authorizationError) } : {}), ...(typeof cn === 'string' ? { cn } : {}) });
        c.destroy();
      });
      c.on('error', (e) => resolve({ authorized: false, error: e.message }));
    });
  } finally {
    server.close();
  }
}

for (const kind of ['ec', 'rsa'] as const) {
  test(`issues leaves a client verifies against the ${kind.toUpperCase()} interception CA`, async () => {
    const ca = opensslCA(kind);
    const issuer = await CertificateIssuer.fromPem(ca.cert, ca.key);
    const r = await handshake(issuer, ca.cert, 'api.openai.com');
    assert.deepEqual(r, { authorized: true, cn: 'api.openai.com' });
    // Another CA does not verify it: the client's trust decides, nothing is skipped.
    const other = opensslCA('ec');
    const r2 = await handshake(issuer, other.cert, 'api.openai.com');
    assert.equal(r2.authorized, false);
  });
}

test('leaves are cached per name and re-issued near expiry; bad names and non-CA certificates are refused', async () => {
  const ca = opensslCA('ec');
  let now = Date.now();
  const issuer = await CertificateIssuer.fromPem(ca.cert, ca.key, { validityMs: 3600_000, now: () => now });
  const a = await issuer.certFor('API.openai.com.');
  const b = await issuer.certFor('api.openai.com');
  assert.equal(a, b);
  assert.equal(a.name, 'api.openai.com');
  now += 50 * 60_000; // less than a quarter of the validity left
  const c = await issuer.certFor('api.openai.com');
  assert.notEqual(c.certPem, a.certPem);
  await assert.rejects(issuer.certFor('bad name!'), { code: 'TLS_NAME_INVALID' });
  const leafOnly = opensslCA('ec', false);
  await assert.rejects(CertificateIssuer.fromPem(leafOnly.cert, leafOnly.key), { code: 'TLS_CA_INVALID' });
  await assert.rejects(CertificateIssuer.fromPem('nope', ca.key), { code: 'TLS_CA_INVALID' });
});
