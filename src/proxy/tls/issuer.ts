/**
 * Certificates for TLS interception, issued on the fly: when a pod opens TLS to a name the
 * policy intercepts (`terminatingTLS`), the proxy answers with a leaf for exactly that name,
 * signed by the CA of the referenced Secret. Leaves are cached per name; one leaf key pair per
 * issuer is generated in memory and never written anywhere, and the CA key stays in the agent.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { createHmac, randomBytes } from 'node:crypto';
import { DEFAULT_CIPHERS, createSecureContext, type SecureContext } from 'node:tls';
import { MembraneError } from '../../common/errors.ts';
import { hostNameProblem } from './clienthello.ts';
import { serverContext, type TlsContext } from '../../sys/openssl.ts';
import { EC_P256, importSigningKey, pem, randomSerial, subtle, x509, type CryptoKey, type CryptoKeyPair } from './x509.ts';

/**
 * This process's session ticket keys for interception (random, never written anywhere): the HMAC
 * and AES keys, and the secret from which each server name's ticket key name is derived.
 */
const TICKET_HMAC = randomBytes(16), TICKET_AES = randomBytes(16), TICKET_NAME_SECRET = randomBytes(32);
type TicketKeyCallback = (name: Buffer, iv: Buffer, enc: boolean) => [number, Buffer, Buffer, Buffer?, Buffer?];
/**
 * Each sealed ticket's IV: 16 fresh random bytes cut from a pool filled from the CSPRNG 4 KiB at a
 * time (Node copies them out before the callback returns). randomBytes(16) per ticket, i.e. per
 * intercepted connection, cost ~4.5 µs of CPU each (a native call and a Buffer per call).
 */
let ivPool = Buffer.alloc(0);
let ivAt = 0;
function ticketIv(): Buffer {
  if (ivAt + 16 > ivPool.length) {
    ivPool = randomBytes(4096);
    ivAt = 0;
  }
  const iv = ivPool.subarray(ivAt, ivAt + 16);
  ivAt += 16;
  return iv;
}
// 2: valid, and the client gets a new ticket (0: not ours, a full handshake); Node only reads these
const OPEN_RENEW: [number, Buffer, Buffer] = [2, TICKET_HMAC, TICKET_AES];
const NOT_OURS: [number, Buffer, Buffer] = [0, TICKET_HMAC, TICKET_AES];

/** The ticket key name of a server name: tickets of one name never open a session for another. */
export function ticketKeyName(serverName: string): Buffer {
  return createHmac('sha256', TICKET_NAME_SECRET).update(serverName).digest().subarray(0, 16);
}

/**
 * A leaf's server context whose TLS 1.3 session tickets are bound to its server name and renewed
 * on every resumed handshake, as OpenSSL's own default and HAProxy do.
 *
 * Renewal: Node's ticket callback never asks for it, so a resumed connection got no new ticket,
 * and OpenSSL clients use a TLS 1.3 ticket once: every other connection of such a client (wrk,
 * curl, Python, anything on OpenSSL) was a full handshake with the leaf's signature again.
 *
 * The name: TLS 1.3 lets a client offer a ticket of one name in a ClientHello for another, and
 * OpenSSL (and Node's default ticket keys) resume it. Interception therefore opens each
 * connection with the context of the name its ClientHello asked for (read before the handshake,
 * intercept.ts), and that context seals and opens only tickets whose key name is the name's: a
 * ticket issued for api.example presented for other.example is not ours (a full handshake with
 * other.example's leaf). The HMAC covers the key name, so it cannot be changed in a ticket.
 * Node's ticket key callback on the native context (what its own tests use for renewal); where
 * a Node lacks it, the context keeps Node's default tickets.
 */
export function renewingTickets(sc: SecureContext, serverName: string): SecureContext {
  const native = (sc as SecureContext & { context?: { enableTicketKeyCallback?: () => void; onticketkeycallback?: TicketKeyCallback } }).context;
  if (native && typeof native.enableTicketKeyCallback === 'function') {
    const keyName = ticketKeyName(serverName);
    native.enableTicketKeyCallback();
    native.onticketkeycallback = (name: Buffer, _iv: Buffer, enc: boolean): ReturnType<TicketKeyCallback> => {
      if (enc) return [1, TICKET_HMAC, TICKET_AES, keyName, ticketIv()];
      return name.equals(keyName) ? OPEN_RENEW : NOT_OURS;
    };
  }
  return sc;
}

/**
 * The suites of interception's server side: TLS_AES_128_GCM_SHA256 first, in the server's order
 * (what Envoy's BoringSSL picks on AES hardware, whatever the client's order), then Node's
 * defaults (TLS 1.2 unchanged). Its key schedule hashes with SHA-256, which SHA-NI computes at
 * about twice SHA-384's speed on small inputs, and AES-128 runs 10 rounds to AES-256's 14: with
 * Node's order (TLS_AES_256_GCM_SHA384 first, as OpenSSL clients offer it) SHA-384 was ~3 % of a
 * new intercepted connection's CPU.
 */
export const INTERCEPT_CIPHERS = ['TLS_AES_128_GCM_SHA256', ...DEFAULT_CIPHERS.split(':').filter((c) => c !== 'TLS_AES_128_GCM_SHA256')].join(':');

export interface IssuedCert {
  name: string;
  certPem: string;
  keyPem: string;
  context: SecureContext;
  notAfter: Date;
  /** the leaf's OpenSSL server context (leafContext), made on first use */
  native?: TlsContext;
}

/**
 * A leaf's native context is freed once the leaf is gone (out of the cache, replaced, and held by
 * no connection still deciding): SSL_new takes a reference of its own to the SSL_CTX, so legs
 * made on it live on after the free (OpenSSL frees it with the last SSL*).
 */
const freeNative = new FinalizationRegistry<TlsContext>((c) => c.free());

/**
 * The OpenSSL server context of an issued leaf, for a TLS leg (sys/tls-leg.ts): the leaf and the
 * CA, INTERCEPT_CIPHERS in the server's order, ALPN http/1.1, and ticket keys of this context
 * alone (random, per context): a ticket sealed for one name's leaf never opens a session on
 * another's (a full handshake with the leaf of the name asked), as renewingTickets binds them
 * for Node's contexts; OpenSSL renews a ticket on every resumption by itself.
 */
export function leafContext(c: IssuedCert): TlsContext {
  let n = c.native;
  if (n) return n;
  n = c.native = serverContext({ certPem: c.certPem, keyPem: c.keyPem, ciphers: INTERCEPT_CIPHERS, alpn: ['http/1.1'] });
  freeNative.register(c, n);
  return n;
}

export interface IssuerOptions {
  /** validity of issued leaves (default 24 h; re-issued when less than a quarter is left) */
  validityMs?: number;
  /** leaves kept (default 2048, least recently used dropped) */
  cacheSize?: number;
  now?: () => number;
}

export class CertificateIssuer {
  readonly caCert: InstanceType<typeof x509.X509Certificate>;
  readonly #caPem: string;
  readonly #caKey: CryptoKey;
  readonly #sigAlg: { name: string; hash: string };
  readonly #opts: Required<IssuerOptions>;
  #leafKeys: Promise<{ pair: CryptoKeyPair; keyPem: string }> | undefined;
  /** least recently used out first: a leaf costs a key pair's signature to make again */
  readonly #cache: BoundedCache<string, Promise<IssuedCert>>;
  /** the leaves issued, by their promise in #cache: looked up without a promise per connection */
  readonly #settled = new WeakMap<Promise<IssuedCert>, IssuedCert>();

  private constructor(caPem: string, caCert: InstanceType<typeof x509.X509Certificate>, caKey: CryptoKey, sigAlg: { name: string; hash: string }, opts: IssuerOptions) {
    this.#caPem = caPem;
    this.caCert = caCert;
    this.#caKey = caKey;
    this.#sigAlg = sigAlg;
    this.#opts = { validityMs: opts.validityMs ?? 24 * 3600_000, cacheSize: opts.cacheSize ?? 2048, now: opts.now ?? Date.now };
    this.#cache = new BoundedCache(Math.max(1, this.#opts.cacheSize), 'oldest');
  }

  /** From a Secret's `tls.crt` (the CA, first certificate) and `tls.key`. */
  static async fromPem(caCertPem: string, caKeyPem: string, opts: IssuerOptions = {}): Promise<CertificateIssuer> {
    let cert: InstanceType<typeof x509.X509Certificate>;
    try {
      cert = new x509.X509Certificate(firstCertificate(caCertPem));
    } catch (e) {
      throw new MembraneError('TLS_CA_INVALID', `the interception CA certificate does not parse: ${(e as Error).message}`, { hint: 'the Secret needs a PEM CA certificate in tls.crt' });
    }
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) throw new MembraneError('TLS_CA_INVALID', `certificate "${cert.subject}" is not a CA (basicConstraints CA:false)`, { hint: 'terminatingTLS needs a CA certificate and key that may sign leaves' });
    let imported: Awaited<ReturnType<typeof importSigningKey>>;
    try {
      imported = await importSigningKey(caKeyPem);
    } catch (e) {
      throw new MembraneError('TLS_CA_INVALID', `the interception CA key does not load: ${(e as Error).message}`, { hint: 'tls.key must be a PEM EC (P-256/384/521) or RSA private key' });
    }
    return new CertificateIssuer(firstCertificate(caCertPem), cert, imported.key, imported.algorithm, opts);
  }

  /** The leaf for `name` (lower-cased), from the cache when still fresh. */
  certFor(rawName: string): Promise<IssuedCert> {
    const name = rawName.toLowerCase().replace(/\.$/, '');
    const problem = hostNameProblem(name);
    if (problem) return Promise.reject(new MembraneError('TLS_NAME_INVALID', problem));
    const hit = this.#cache.use(name);
    if (hit) {
      return hit.then((c) => (c.notAfter.getTime() - this.#opts.now() > this.#opts.validityMs / 4 ? c : this.#reissue(name)));
    }
    return this.#reissue(name);
  }

  /**
   * The cached leaf for `name` (already normal: lower-cased, no trailing dot) when it is issued and
   * still fresh, else undefined (then certFor). No promise, nothing made: the per-connection path.
   */
  certNow(name: string): IssuedCert | undefined {
    const p = this.#cache.get(name);
    const c = p && this.#settled.get(p);
    return c && c.notAfter.getTime() - this.#opts.now() > this.#opts.validityMs / 4 ? c : undefined;
  }

  #reissue(name: string): Promise<IssuedCert> {
    const p = this.#issue(name);
    this.#cache.set(name, p);
    p.then((c) => { this.#settled.set(p, c); }, () => this.#cache.delete(name));
    return p;
  }

  async #issue(name: string): Promise<IssuedCert> {
    this.#leafKeys ??= (async () => {
      const pair = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
      return { pair, keyPem: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', pair.privateKey)) };
    })();
    const { pair, keyPem } = await this.#leafKeys;
    const now = this.#opts.now();
    const notAfter = new Date(now + this.#opts.validityMs);
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(), subject: `CN=${name}`, issuer: this.caCert.subject, publicKey: pair.publicKey,
      signingKey: this.#caKey, signingAlgorithm: this.#sigAlg, notBefore: new Date(now - 300_000), notAfter,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
        await x509.AuthorityKeyIdentifierExtension.create(this.caCert),
      ],
    });
    const certPem = leaf.toString('pem') + '\n' + this.#caPem;
    return { name, certPem, keyPem, notAfter, context: renewingTickets(createSecureContext({ cert: certPem, key: keyPem, ciphers: INTERCEPT_CIPHERS, honorCipherOrder: true }), name) };
  }
}

function firstCertificate(text: string): string {
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(text);
  if (!m) throw new MembraneError('TLS_CA_INVALID', 'no PEM certificate found', { hint: 'tls.crt must hold a PEM certificate' });
  return m[0] + '\n';
}
