/**
 * The lab's certificate authority: one per lab, generated on first use with node:crypto and
 * @peculiar/x509 (ECDSA P-256), kept under `<stateDir>/ca/` (`ca.key` never leaves it). World
 * hosts serve leaf certificates it signs, so FQDN, SNI and TLS-interception tests run offline.
 *
 *   membrane up prints the CA certificate's path; a pod trusts it with e.g.
 *   `NODE_EXTRA_CA_CERTS=<stateDir>/ca/ca.crt` or `curl --cacert <stateDir>/ca/ca.crt`.
 *
 * The same primitives make the lab's other CAs (the Hubble CA of ./hubble-certs.ts): private keys
 * are written 0600 in 0700 directories and never printed.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { x509, subtle, pem, randomSerial, type CryptoKey, type CryptoKeyPair } from '../proxy/tls/x509.ts';
import { writeFileAtomic } from '../common/atomic-file.ts';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface LabCA {
  certPem: string;
  certPath: string;
  cert: X509.X509Certificate;
  key: CryptoKey;
}

export function caDir(stateDir: string): string {
  return join(stateDir, 'ca');
}
export function caCertPath(stateDir: string): string {
  return join(caDir(stateDir), 'ca.crt');
}

function unpem(text: string): Buffer {
  return Buffer.from(text.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}



/** The lab CA (created once per state dir; later calls load it). */
export async function ensureLabCA(stateDir: string): Promise<LabCA> {
  return ensureCA(caDir(stateDir), 'CN=membrane lab CA, O=membrane');
}

/** A CA kept as `ca.crt` + `ca.key` (0600) in `dir` (0700): created on first use, loaded after. */
export async function ensureCA(dir: string, subject: string): Promise<LabCA> {
  const certPath = join(dir, 'ca.crt');
  const keyPath = join(dir, 'ca.key');
  if (existsSync(certPath) && existsSync(keyPath)) {
    const certPem = await readFile(certPath, 'utf8');
    const key = await subtle.importKey('pkcs8', unpem(await readFile(keyPath, 'utf8')), ALG, true, ['sign']);
    return { certPem, certPath, cert: new x509.X509Certificate(certPem), key };
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keys = await subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(), name: subject, keys, signingAlgorithm: SIGN,
    notBefore: new Date(now - 3600_000), notAfter: new Date(now + 3650 * 86400_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  await writeFileAtomic(keyPath, pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)), { mode: 0o600 });
  const certPem = cert.toString('pem') + '\n';
  await writeFileAtomic(certPath, certPem);
  return { certPem, certPath, cert, key: keys.privateKey };
}

/** A server certificate for `names` signed by the lab CA: PEM cert (leaf + CA) and PKCS#8 key. */
export async function issueServerCert(ca: LabCA, names: string[]): Promise<{ cert: string; key: string }> {
  return issueCert(ca, { commonName: names[0] ?? 'lab', names, usage: 'server' });
}

/**
 * A leaf certificate signed by `ca`: `server` (serverAuth, the SANs a client verifies) or `client`
 * (clientAuth, for mutual TLS). PEM cert (leaf + CA) and PKCS#8 key.
 */
export async function issueCert(ca: LabCA, o: { commonName: string; names: string[]; usage: 'server' | 'client'; days?: number }): Promise<{ cert: string; key: string }> {
  const keys = await subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair;
  const now = Date.now();
  const isIp = (n: string) => /^\d+\.\d+\.\d+\.\d+$/.test(n) || n.includes(':');
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(), subject: `CN=${o.commonName}`, issuer: ca.cert.subject, publicKey: keys.publicKey,
    signingKey: ca.key, signingAlgorithm: SIGN, notBefore: new Date(now - 3600_000), notAfter: new Date(now + (o.days ?? 365) * 86400_000),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([o.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
      ...(o.names.length ? [new x509.SubjectAlternativeNameExtension(o.names.map((n) => (isIp(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })))] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert: leaf.toString('pem') + '\n' + ca.certPem, key: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)) };
}
