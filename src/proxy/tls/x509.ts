/**
 * @peculiar/x509 on node:crypto's WebCrypto, loaded once for the whole agent.
 *
 * The library pulls in tsyringe, which insists on a Reflect metadata polyfill that is not
 * installed (@abraham/reflection is an optional peer). It only reads metadata, so a minimal one
 * is enough; it must exist before the module loads, hence the dynamic import.
 */
import { webcrypto, createPrivateKey } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

const R = Reflect as unknown as Record<string, unknown>;
if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<object, Map<unknown, unknown>>();
  R.defineMetadata = (k: unknown, v: unknown, t: object) => { let m = store.get(t); if (!m) store.set(t, (m = new Map())); m.set(k, v); };
  R.getMetadata = (k: unknown, t: object) => { for (let o: object | null = t; o; o = Object.getPrototypeOf(o)) { const v = store.get(o)?.get(k); if (v !== undefined) return v; } return undefined; };
  R.getOwnMetadata = (k: unknown, t: object) => store.get(t)?.get(k);
  R.hasMetadata = (k: unknown, t: object) => (R.getMetadata as (k: unknown, t: object) => unknown)(k, t) !== undefined;
  R.metadata = (k: unknown, v: unknown) => (t: object) => (R.defineMetadata as (k: unknown, v: unknown, t: object) => void)(k, v, t);
}
export const x509: typeof X509 = await import('@peculiar/x509');
export const subtle = webcrypto.subtle;
x509.cryptoProvider.set(webcrypto as never);

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;

export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

export function pem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der as Uint8Array).toString('base64').replace(/(.{64})/g, '$1\n').trimEnd();
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

export function randomSerial(): string {
  // Positive 96-bit serial (the top bit clear so DER needs no sign byte).
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(12))).toString('hex').replace(/^[89a-f]/, '1');
}

/**
 * Imports a PEM private key of any common encoding (PKCS#8, SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA
 * PRIVATE KEY`) as a WebCrypto signing key, with the signature algorithm to use with it.
 */
export async function importSigningKey(keyPem: string): Promise<{ key: CryptoKey; algorithm: { name: string; hash: string } }> {
  const k = createPrivateKey(keyPem);
  const der = k.export({ type: 'pkcs8', format: 'der' });
  if (k.asymmetricKeyType === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    const namedCurve = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : undefined;
    if (!namedCurve) throw new Error(`unsupported EC curve ${curve}`);
    const hash = namedCurve === 'P-256' ? 'SHA-256' : namedCurve === 'P-384' ? 'SHA-384' : 'SHA-512';
    return { key: await subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve }, false, ['sign']), algorithm: { name: 'ECDSA', hash } };
  }
  if (k.asymmetricKeyType === 'rsa') {
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    return { key: await subtle.importKey('pkcs8', der, algorithm, false, ['sign']), algorithm };
  }
  throw new Error(`unsupported key type ${k.asymmetricKeyType}`);
}
