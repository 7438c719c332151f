/**
 * OpenSSL of this node binary, through koffi (the binary exports libssl and libcrypto:
 * `nm -D $(command -v node) | grep ' T SSL_'`): the bindings a TLS leg (tls-leg.ts) drives, each
 * symbol resolved once, and the contexts it runs on, built from PEM in memory (no file of a key on
 * disk) and freed explicitly. Measured by bench/tls/native-spike (issue 18): per keep-alive request
 * 20.8 µs of CPU against Node's TLSSocket floor 27.7 µs and HAProxy 25.7 µs; per new connection 278
 * against 475 and 341 µs.
 *
 * The error queue is per thread and shared with Node's own crypto: every failure read here is
 * taken off it (reason()), so Node never finds an error of ours.
 */
import koffi from 'koffi';
import { randomBytes } from 'node:crypto';
import { MembraneError } from '../common/errors.ts';

const self = koffi.load(null as unknown as string);

export const SSL_ERROR_SSL = 1;
export const SSL_ERROR_WANT_READ = 2;
export const SSL_ERROR_WANT_WRITE = 3;
export const SSL_ERROR_SYSCALL = 5;
export const SSL_ERROR_ZERO_RETURN = 6;
/** ERR_GET_REASON of "unexpected eof while reading": the peer's TCP FIN without a close_notify */
export const SSL_R_UNEXPECTED_EOF_WHILE_READING = 294;
const ERR_REASON_MASK = 0x7fffff;
const ERR_SYSTEM_FLAG = 0x80000000;

const SSL_FILETYPE_PEM = 1;
const SSL_OP_CIPHER_SERVER_PREFERENCE = 0x00400000n;
/** TLS 1.2 renegotiation: a client-driven CPU sink, never needed by a forwarder */
const SSL_OP_NO_RENEGOTIATION = 0x40000000n;
const SSL_CTRL_MODE = 33;
const SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 2;
const SSL_CTRL_SET_TLSEXT_HOSTNAME = 55;
const TLSEXT_NAMETYPE_host_name = 0;
const SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59;
const SSL_CTRL_CHAIN_CERT = 89;
const SSL_CTRL_SET_MIN_PROTO_VERSION = 123;
const TLS1_2_VERSION = 0x0303;
const SSL_VERIFY_PEER = 1;
const SSL_TLSEXT_ERR_OK = 0;
const SSL_TLSEXT_ERR_ALERT_FATAL = 2;
const OPENSSL_NPN_NEGOTIATED = 1;

const alpnSelectCb = koffi.pointer(koffi.proto('int mb_tls_alpn_select_cb(void *ssl, void *out, void *outlen, void *in, unsigned int inlen, void *arg)'));

/** The functions a TLS leg calls per event: typed, resolved once. */
export const ssl = {
  new: self.func('void *SSL_new(void *ctx)') as (ctx: unknown) => unknown,
  free: self.func('void SSL_free(void *ssl)') as (s: unknown) => void,
  setFd: self.func('int SSL_set_fd(void *ssl, int fd)') as (s: unknown, fd: number) => number,
  setAcceptState: self.func('void SSL_set_accept_state(void *ssl)') as (s: unknown) => void,
  setConnectState: self.func('void SSL_set_connect_state(void *ssl)') as (s: unknown) => void,
  /** a record in one read(2), not its header then its body */
  setReadAhead: self.func('void SSL_set_read_ahead(void *ssl, int yes)') as (s: unknown, yes: number) => void,
  set1Host: self.func('int SSL_set1_host(void *ssl, const char *host)') as (s: unknown, host: string) => number,
  ctrlStr: self.func('SSL_ctrl', 'long', ['void *', 'int', 'long', 'str']) as (s: unknown, cmd: number, larg: number, parg: string) => number,
  doHandshake: self.func('int SSL_do_handshake(void *ssl)') as (s: unknown) => number,
  read: self.func('int SSL_read(void *ssl, void *buf, int num)') as (s: unknown, buf: Buffer, n: number) => number,
  write: self.func('int SSL_write(void *ssl, const void *buf, int num)') as (s: unknown, buf: Uint8Array, n: number) => number,
  getError: self.func('int SSL_get_error(const void *ssl, int ret)') as (s: unknown, ret: number) => number,
  hasPending: self.func('int SSL_has_pending(const void *ssl)') as (s: unknown) => number,
  shutdown: self.func('int SSL_shutdown(void *ssl)') as (s: unknown) => number,
  sessionReused: self.func('int SSL_session_reused(const void *ssl)') as (s: unknown) => number,
  getVerifyResult: self.func('long SSL_get_verify_result(const void *ssl)') as (s: unknown) => number,
  getVersion: self.func('const char *SSL_get_version(const void *ssl)') as (s: unknown) => string,
  getCurrentCipher: self.func('const void *SSL_get_current_cipher(const void *ssl)') as (s: unknown) => unknown,
  cipherName: self.func('const char *SSL_CIPHER_get_name(const void *c)') as (c: unknown) => string,
  get0AlpnSelected: self.func('void SSL_get0_alpn_selected(const void *ssl, _Out_ void **data, _Out_ unsigned int *len)') as (s: unknown, data: unknown[], len: number[]) => void,
};

const ctxFn = {
  serverMethod: self.func('const void *TLS_server_method()') as () => unknown,
  clientMethod: self.func('const void *TLS_client_method()') as () => unknown,
  new: self.func('void *SSL_CTX_new(const void *method)') as (m: unknown) => unknown,
  free: self.func('void SSL_CTX_free(void *ctx)') as (c: unknown) => void,
  useCertificate: self.func('int SSL_CTX_use_certificate(void *ctx, void *x509)') as (c: unknown, x: unknown) => number,
  usePrivateKey: self.func('int SSL_CTX_use_PrivateKey(void *ctx, void *pkey)') as (c: unknown, k: unknown) => number,
  checkPrivateKey: self.func('int SSL_CTX_check_private_key(const void *ctx)') as (c: unknown) => number,
  setCiphersuites: self.func('int SSL_CTX_set_ciphersuites(void *ctx, const char *str)') as (c: unknown, s: string) => number,
  setCipherList: self.func('int SSL_CTX_set_cipher_list(void *ctx, const char *str)') as (c: unknown, s: string) => number,
  setOptions: self.func('uint64_t SSL_CTX_set_options(void *ctx, uint64_t op)') as (c: unknown, op: bigint) => bigint,
  ctrl: self.func('long SSL_CTX_ctrl(void *ctx, int cmd, long larg, void *parg)') as (c: unknown, cmd: number, larg: number, parg: unknown) => number,
  setNumTickets: self.func('int SSL_CTX_set_num_tickets(void *ctx, size_t n)') as (c: unknown, n: number) => number,
  setVerify: self.func('void SSL_CTX_set_verify(void *ctx, int mode, void *cb)') as (c: unknown, mode: number, cb: null) => void,
  getCertStore: self.func('void *SSL_CTX_get_cert_store(const void *ctx)') as (c: unknown) => unknown,
  setAlpnProtos: self.func('int SSL_CTX_set_alpn_protos(void *ctx, const uint8_t *protos, unsigned int len)') as (c: unknown, p: Buffer, n: number) => number,
  setAlpnSelectCb: self.func('void SSL_CTX_set_alpn_select_cb(void *ctx, mb_tls_alpn_select_cb *cb, void *arg)') as (c: unknown, cb: unknown, arg: unknown) => void,
  selectNextProto: self.func('int SSL_select_next_proto(void *out, void *outlen, const void *server, unsigned int server_len, const void *client, unsigned int client_len)') as (out: unknown, outlen: unknown, server: unknown, serverLen: number, client: unknown, clientLen: number) => number,
};

const crypto = {
  bioNewMemBuf: self.func('void *BIO_new_mem_buf(const void *buf, int len)') as (b: Buffer, n: number) => unknown,
  bioFree: self.func('int BIO_free(void *bio)') as (b: unknown) => number,
  readX509: self.func('void *PEM_read_bio_X509(void *bio, void *x, void *cb, void *u)') as (b: unknown, x: null, cb: null, u: null) => unknown,
  readPrivateKey: self.func('void *PEM_read_bio_PrivateKey(void *bio, void *x, void *cb, void *u)') as (b: unknown, x: null, cb: null, u: null) => unknown,
  x509Free: self.func('void X509_free(void *x)') as (x: unknown) => void,
  pkeyFree: self.func('void EVP_PKEY_free(void *k)') as (k: unknown) => void,
  storeAddCert: self.func('int X509_STORE_add_cert(void *store, void *x)') as (s: unknown, x: unknown) => number,
  verifyErrorString: self.func('const char *X509_verify_cert_error_string(long n)') as (n: number) => string,
  errGet: self.func('unsigned long ERR_get_error()') as () => number | bigint,
  errPeek: self.func('unsigned long ERR_peek_error()') as () => number | bigint,
  errString: self.func('void ERR_error_string_n(unsigned long e, _Out_ char *buf, size_t len)') as (e: number | bigint, buf: Buffer, n: number) => void,
  errClear: self.func('void ERR_clear_error()') as () => void,
};

const errBuf = Buffer.alloc(256);
/**
 * The first error on this thread's OpenSSL queue as text (`error:0A00010B:SSL routines::wrong
 * version number`), the queue emptied; '' when empty.
 */
export function reason(): string {
  const e = crypto.errGet();
  let text = '';
  if (e !== 0 && e !== 0n) {
    crypto.errString(e, errBuf, errBuf.length);
    const end = errBuf.indexOf(0);
    text = errBuf.toString('latin1', 0, end < 0 ? errBuf.length : end);
  }
  crypto.errClear();
  return text;
}

/** ERR_GET_REASON of the first queued error (0: none, or a system error), the queue left as is */
export function peekReasonCode(): number {
  const e = Number(crypto.errPeek());
  if (e === 0 || (e & ERR_SYSTEM_FLAG) !== 0) return 0;
  return e & ERR_REASON_MASK;
}

/** X509_verify_cert_error_string of SSL_get_verify_result's value */
export function verifyReason(code: number): string {
  return crypto.verifyErrorString(code);
}

/** empties the thread's error queue (before an operation whose SSL_get_error is read) */
export const clearErrors = crypto.errClear;

function fail(code: string, what: string, hint?: string): never {
  const why = reason();
  throw new MembraneError(code, `${what}${why ? `: ${why}` : ''}`, hint === undefined ? {} : { hint });
}

/** every certificate of a PEM text, in order (X509* each, owned by the caller) */
function readCertificates(pem: string): unknown[] {
  const bytes = Buffer.from(pem);
  const bio = crypto.bioNewMemBuf(bytes, bytes.length);
  if (!bio) fail('TLS_CONTEXT', 'BIO_new_mem_buf');
  const certs: unknown[] = [];
  try {
    for (;;) {
      const x = crypto.readX509(bio, null, null, null);
      if (!x) break;
      certs.push(x);
    }
  } finally {
    crypto.bioFree(bio);
    // the read past the last certificate queues "no start line"
    crypto.errClear();
  }
  return certs;
}

function readPrivateKey(pem: string): unknown {
  const bytes = Buffer.from(pem);
  const bio = crypto.bioNewMemBuf(bytes, bytes.length);
  if (!bio) fail('TLS_CONTEXT', 'BIO_new_mem_buf');
  try {
    const k = crypto.readPrivateKey(bio, null, null, null);
    if (!k) fail('TLS_CONTEXT_KEY', 'the private key PEM does not parse', 'an unencrypted PKCS#8, SEC1 or PKCS#1 PEM key');
    return k;
  } finally {
    crypto.bioFree(bio);
  }
}

/** ALPN's wire form: each name prefixed by its length */
function alpnWire(names: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const n of names) {
    const b = Buffer.from(n, 'latin1');
    if (b.length === 0 || b.length > 255) throw new MembraneError('TLS_CONTEXT_ALPN', `ALPN protocol name of ${b.length} bytes`, { hint: '1 to 255 bytes each' });
    parts.push(Buffer.from([b.length]), b);
  }
  return Buffer.concat(parts);
}

/**
 * An SSL_CTX: legs are made on it while it lives. free() gives back this owner's reference; legs
 * made on it hold OpenSSL's own until they are freed, and finish on it.
 */
export class TlsContext {
  #ptr: unknown;
  readonly role: 'server' | 'client';
  constructor(ptr: unknown, role: 'server' | 'client') {
    this.#ptr = ptr;
    this.role = role;
  }
  /** the SSL_CTX*; throws once freed (a leg made on a freed context would be a use after free) */
  get ptr(): unknown {
    if (this.#ptr === null) throw new MembraneError('TLS_CONTEXT_FREED', `the ${this.role} TLS context was freed`);
    return this.#ptr;
  }
  get freed(): boolean { return this.#ptr === null; }
  /** SSL_CTX_free; a second call does nothing */
  free(): void {
    if (this.#ptr === null) return;
    ctxFn.free(this.#ptr);
    this.#ptr = null;
  }
}

export interface ServerContextOptions {
  /** the leaf's certificate first, then its chain (what the server sends), PEM */
  certPem: string;
  /** the leaf's private key, PEM */
  keyPem: string;
  /** Node's form: TLS 1.3 suite names (`TLS_…`, their order is the server's preference) and TLS 1.2 cipher names, ':'-separated */
  ciphers: string;
  /** ALPN protocols the server selects, in its order of preference (default ['http/1.1']); a client offering none of them is refused (no_application_protocol) */
  alpn?: readonly string[];
  /** session tickets sent after a full handshake (default 2; 1 after a resumption, as OpenSSL does) */
  tickets?: number;
  /** the context's ticket keys (80 bytes: name 16, HMAC 32, AES 32); default random, this context's alone */
  ticketKeys?: Buffer;
}

let selectCb: unknown = null;
/**
 * Server ALPN lists by SSL_CTX address: the one select callback of the process finds its
 * context's. An entry outlives its context's free() (a leg still alive may handshake on it) and
 * is replaced, its memory freed, when a new context gets the address (the old one is gone then).
 */
const serverAlpn = new Map<bigint, { mem: unknown; len: number }>();

function ctxAddress(ctx: unknown): bigint {
  const a = koffi.address(ctx);
  return typeof a === 'bigint' ? a : BigInt(a as number);
}

function newContext(server: boolean): unknown {
  const ctx = ctxFn.new(server ? ctxFn.serverMethod() : ctxFn.clientMethod());
  if (!ctx) fail('TLS_CONTEXT', 'SSL_CTX_new');
  ctxFn.ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, null);
  // a held write is retried from a copy: same bytes, another address
  ctxFn.ctrl(ctx, SSL_CTRL_MODE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, null);
  ctxFn.setOptions(ctx, SSL_OP_NO_RENEGOTIATION);
  return ctx;
}

function setCiphers(ctx: unknown, ciphers: string): void {
  const all = ciphers.split(':').filter(Boolean);
  const v13 = all.filter((c) => c.startsWith('TLS_'));
  const v12 = all.filter((c) => !c.startsWith('TLS_'));
  if (v13.length && ctxFn.setCiphersuites(ctx, v13.join(':')) !== 1) fail('TLS_CONTEXT_CIPHERS', `SSL_CTX_set_ciphersuites(${v13.join(':')})`);
  if (v12.length && ctxFn.setCipherList(ctx, v12.join(':')) !== 1) fail('TLS_CONTEXT_CIPHERS', `SSL_CTX_set_cipher_list(${v12.join(':')})`);
}

/**
 * A server context: the leaf and its chain, the suites in the caller's order with the server's
 * preference, OpenSSL's own stateless tickets under keys of this context alone (a ticket of one
 * leaf's context never resumes on another's), ALPN selection.
 */
export function serverContext(o: ServerContextOptions): TlsContext {
  const ctx = newContext(true);
  const certs: unknown[] = [];
  let key: unknown = null;
  try {
    certs.push(...readCertificates(o.certPem));
    if (certs.length === 0) throw new MembraneError('TLS_CONTEXT_CERT', 'no certificate in the PEM', { hint: 'the leaf first, then its chain' });
    key = readPrivateKey(o.keyPem);
    if (ctxFn.useCertificate(ctx, certs[0]) !== 1) fail('TLS_CONTEXT_CERT', 'SSL_CTX_use_certificate');
    for (const x of certs.slice(1)) {
      // add1: the context takes its own reference
      if (ctxFn.ctrl(ctx, SSL_CTRL_CHAIN_CERT, 1, x) !== 1) fail('TLS_CONTEXT_CERT', 'SSL_CTX_add1_chain_cert');
    }
    if (ctxFn.usePrivateKey(ctx, key) !== 1) fail('TLS_CONTEXT_KEY', 'SSL_CTX_use_PrivateKey');
    if (ctxFn.checkPrivateKey(ctx) !== 1) fail('TLS_CONTEXT_KEY', 'the private key is not the leaf certificate\'s');
    setCiphers(ctx, o.ciphers);
    ctxFn.setOptions(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (ctxFn.setNumTickets(ctx, o.tickets ?? 2) !== 1) fail('TLS_CONTEXT', 'SSL_CTX_set_num_tickets');
    const keys = o.ticketKeys ?? randomBytes(80);
    if (keys.length !== 80) throw new MembraneError('TLS_CONTEXT_TICKETS', `ticket keys of ${keys.length} bytes`, { hint: '80 bytes: name 16, HMAC 32, AES 32' });
    if (ctxFn.ctrl(ctx, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, 80, keys) !== 1) fail('TLS_CONTEXT_TICKETS', 'SSL_CTX_set_tlsext_ticket_keys');
    keys.fill(0);
    const wire = alpnWire(o.alpn ?? ['http/1.1']);
    // OpenSSL's answer points into this list: memory of its own, never moved
    const mem = koffi.alloc('uint8_t', wire.length);
    koffi.encode(mem, 'uint8_t', Array.from(wire), wire.length);
    const stale = serverAlpn.get(ctxAddress(ctx));
    if (stale) koffi.free(stale.mem);
    serverAlpn.set(ctxAddress(ctx), { mem, len: wire.length });
    selectCb ??= koffi.register((_ssl: unknown, out: unknown, outlen: unknown, inp: unknown, inlen: number, _arg: unknown) => {
      const own = serverAlpn.get(ctxAddress(_arg));
      if (!own) return SSL_TLSEXT_ERR_ALERT_FATAL;
      // the server's list first: its order is the preference
      return ctxFn.selectNextProto(out, outlen, own.mem, own.len, inp, inlen) === OPENSSL_NPN_NEGOTIATED ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_ALERT_FATAL;
    }, alpnSelectCb);
    ctxFn.setAlpnSelectCb(ctx, selectCb, ctx);
    return new TlsContext(ctx, 'server');
  } catch (e) {
    ctxFn.free(ctx);
    throw e;
  } finally {
    for (const x of certs) crypto.x509Free(x);
    if (key) crypto.pkeyFree(key);
    crypto.errClear();
  }
}

export interface ClientContextOptions {
  /** the CAs trusted for the peer's chain, PEM (one or more certificates); nothing else is trusted */
  caPem: string;
  /** ALPN protocols offered (default ['http/1.1']) */
  alpn?: readonly string[];
  /** Node's form, as ServerContextOptions.ciphers (default OpenSSL's) */
  ciphers?: string;
  /** the largest certificate chain the peer may send (default MAX_CERT_LIST_BYTES) */
  maxCertListBytes?: number;
}

/** the bytes of a peer's certificate chain a client context accepts (OpenSSL's default is 100 KiB) */
export const MAX_CERT_LIST_BYTES = 64 * 1024;

/** A client context: the peer verified (SSL_VERIFY_PEER) against `caPem` only; the name is set per leg (SSL_set1_host). */
export function clientContext(o: ClientContextOptions): TlsContext {
  const ctx = newContext(false);
  const certs: unknown[] = [];
  try {
    certs.push(...readCertificates(o.caPem));
    if (certs.length === 0) throw new MembraneError('TLS_CONTEXT_CA', 'no certificate in the trusted CA PEM', { hint: 'one or more PEM certificates' });
    const store = ctxFn.getCertStore(ctx);
    for (const x of certs) if (crypto.storeAddCert(store, x) !== 1) fail('TLS_CONTEXT_CA', 'X509_STORE_add_cert');
    ctxFn.setVerify(ctx, SSL_VERIFY_PEER, null);
    if (o.ciphers) setCiphers(ctx, o.ciphers);
    const wire = alpnWire(o.alpn ?? ['http/1.1']);
    // 0 is success here (OpenSSL's one inverted return)
    if (ctxFn.setAlpnProtos(ctx, wire, wire.length) !== 0) fail('TLS_CONTEXT_ALPN', 'SSL_CTX_set_alpn_protos');
    // the peer's certificate chain is buffered whole before it is verified: an origin's chain is
    // a few KiB, an attacker's could be OpenSSL's default 100 KiB on every connection
    ctxFn.ctrl(ctx, SSL_CTRL_SET_MAX_CERT_LIST, o.maxCertListBytes ?? MAX_CERT_LIST_BYTES, null);
    clientSessions(ctx);
    return new TlsContext(ctx, 'client');
  } catch (e) {
    ctxFn.free(ctx);
    throw e;
  } finally {
    for (const x of certs) crypto.x509Free(x);
    crypto.errClear();
  }
}

/** SNI and the name the peer's certificate must hold, on a client SSL*; false when OpenSSL refused the name */
export function setPeerName(s: unknown, host: string): boolean {
  if (ssl.set1Host(s, host) !== 1) return false;
  // SNI carries DNS names only (RFC 6066 §3); an address is verified without one
  if (!/^[\d.]+$|:/.test(host) && ssl.ctrlStr(s, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, host) !== 1) return false;
  return true;
}

/** the protocol ALPN selected on `s` ('' when none) */
export function alpnSelected(s: unknown): string {
  const data: unknown[] = [null];
  const len: number[] = [0];
  ssl.get0AlpnSelected(s, data, len);
  if (!data[0] || !len[0]) return '';
  return Buffer.from(koffi.decode(data[0], 'uint8_t', len[0]) as number[]).toString('latin1');
}

// ------------------------------------------------------------------ client sessions (resumption)

const SSL_CTRL_SET_MAX_CERT_LIST = 51;
const SSL_CTRL_SET_SESS_CACHE_MODE = 44;
const SSL_SESS_CACHE_CLIENT = 0x0001;
/** no lookup in and no store into the context's own cache: a session is offered only when set on a leg */
const SSL_SESS_CACHE_NO_INTERNAL = 0x0300;

const newSessionCb = koffi.pointer(koffi.proto('int mb_tls_new_session_cb(void *ssl, void *session)'));
const sessFn = {
  setSession: self.func('int SSL_set_session(void *ssl, void *session)') as (s: unknown, sess: unknown) => number,
  free: self.func('void SSL_SESSION_free(void *session)') as (sess: unknown) => void,
  dup: self.func('void *SSL_SESSION_dup(const void *session)') as (sess: unknown) => unknown,
  isResumable: self.func('int SSL_SESSION_is_resumable(const void *session)') as (sess: unknown) => number,
  setNewCb: self.func('void SSL_CTX_sess_set_new_cb(void *ctx, mb_tls_new_session_cb *cb)') as (c: unknown, cb: unknown) => void,
  setShutdown: self.func('void SSL_set_shutdown(void *ssl, int mode)') as (s: unknown, mode: number) => void,
};
const SSL_SENT_SHUTDOWN = 1;
const SSL_RECEIVED_SHUTDOWN = 2;

/**
 * Before a client SSL* is freed without a close_notify exchanged (destroyed, reset, pooled and
 * dropped): SSL_free would mark its session not resumable (OpenSSL's TLS 1.2-era guard against
 * truncation, ssl_clear_bad_session), and that session is the one handed out (the newest
 * ticket's) or set from the cache, so a pooled upstream dropped would spoil the cache's session
 * for every later connection. A TLS 1.3 ticket is not made bad by how its connection ended.
 */
export function keepSessionResumable(s: unknown): void {
  sessFn.setShutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

let sessions = 0;
/** sessions handed out (TlsSession) and not yet freed */
export function liveSessions(): number {
  return sessions;
}

/**
 * A client's TLS session (SSL_SESSION*, one reference of its own), for the peer `host` under the
 * client context `context`: what a new leg to the same peer resumes (setSession). free() gives
 * the reference back exactly once; a leg it was set on holds OpenSSL's own.
 */
export class TlsSession {
  #ptr: unknown;
  readonly host: string;
  readonly context: TlsContext;
  /** @internal made by the leg that received it */
  constructor(ptr: unknown, host: string, context: TlsContext) {
    this.#ptr = ptr;
    this.host = host;
    this.context = context;
    sessions++;
  }
  get freed(): boolean { return this.#ptr === null; }
  /** SSL_SESSION_free of this owner's reference; a second call does nothing */
  free(): void {
    if (this.#ptr === null) return;
    sessFn.free(this.#ptr);
    this.#ptr = null;
    sessions--;
  }
  /**
   * @internal SSL_set_session of a copy on a client SSL* not yet handshaken: true when OpenSSL
   * took it. A copy: OpenSSL's client marks a TLS 1.3 session it resumed not resumable (it
   * encourages single use); this one stays for the next leg, as HAProxy's servers reuse their
   * last session, until the name's next ticket replaces it.
   */
  setOn(s: unknown): boolean {
    if (this.#ptr === null) return false;
    const copy = sessFn.dup(this.#ptr);
    if (!copy) return false;
    const ok = sessFn.setSession(s, copy) === 1;
    // the SSL holds its own reference now
    sessFn.free(copy);
    return ok;
  }
}

/**
 * Who receives a client context's new sessions (tls-leg.ts): the SSL*'s address and the
 * SSL_SESSION* (a reference now the receiver's when it returns true; false: OpenSSL frees it).
 */
let sessionSink: ((sslAt: number, session: unknown) => boolean) | null = null;
export function onClientSession(sink: (sslAt: number, session: unknown) => boolean): void {
  sessionSink = sink;
}

let newSessionFn: unknown = null;
/**
 * A client context's sessions go to sessionSink as OpenSSL makes them (TLS 1.2: at the end of the
 * handshake; TLS 1.3: each NewSessionTicket, read after it), never into the context's own cache.
 */
function clientSessions(ctx: unknown): void {
  newSessionFn ??= koffi.register((s: unknown, session: unknown) => {
    try {
      return sessionSink !== null && sessFn.isResumable(session) === 1 && sessionSink(addressOf(s), session) ? 1 : 0;
    } catch {
      return 0;
    }
  }, newSessionCb);
  ctxFn.ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL, null);
  sessFn.setNewCb(ctx, newSessionFn);
}

/** a pointer's address as a number (user-space addresses fit a double exactly) */
export function addressOf(p: unknown): number {
  const a = koffi.address(p);
  return typeof a === 'bigint' ? Number(a) : (a as number);
}
