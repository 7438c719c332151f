/**
 * Spike (issue 18, not production code): TLS interception's floor with Node's TLS machinery
 * replaced. OpenSSL (the node binary's own, through koffi) terminates the client's TLS on a socket
 * of our own (SSL_set_fd, a socket BIO: no TLSWrap, no memory BIOs, no JS stream, no
 * SetImmediate per write), driven by libuv's uv_poll readiness as src/sys/udp-poll.ts drives the
 * DNS proxy's sockets; each client gets a verified TLS upstream to the origin (from a pool of idle
 * ones, as floor-server.ts), and the plaintext is forwarded both ways unparsed (floor-server.ts's
 * shape: `Connection: close` cut on the way up, `connection: close` added to the response, the
 * client closed after it with a close_notify).
 *
 *   bin/node bench/tls/native-spike/server.ts --mode intercept --port P --origin O --dir D [--name N]
 * The arguments are bench/tls/proxy-server.ts's (bench/tls/ab.ts --b-server); D holds ica.crt/ica.key
 * (interception CA: the leaf for N is issued from it as membrane and floor-server.ts do) and ca.crt
 * (the origin's CA). Prints `ready` when listening; SIGUSR2 writes D/handshakes-P.json.
 * MEMBRANE_NATIVE_FORWARD_ONLY=1: no `Connection: close` search per read (the pure forwarder).
 */
import koffi from 'koffi';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CertificateIssuer, INTERCEPT_CIPHERS } from '../../../src/proxy/tls/issuer.ts';
import { openssl, uv, libc, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE, UV_READABLE, UV_WRITABLE } from './ffi.ts';

const { values } = parseArgs({ options: { mode: { type: 'string', default: 'intercept' }, port: { type: 'string' }, origin: { type: 'string' }, dir: { type: 'string' }, name: { type: 'string', default: 'api.bench.test' } } });
if (values.mode !== 'intercept') throw new Error('native-spike: only --mode intercept');
const dir = values.dir!;
const NAME = values.name!;
const PORT = Number(values.port);
const ORIGIN = Number(values.origin);
const FORWARD_ONLY = process.env.MEMBRANE_NATIVE_FORWARD_ONLY === '1';

// ---- contexts: the same leaf (issued for NAME from the interception CA), suites in membrane's order, server preference
const issuer = await CertificateIssuer.fromPem(readFileSync(join(dir, 'ica.crt'), 'utf8'), readFileSync(join(dir, 'ica.key'), 'utf8'));
const leaf = await issuer.certFor(NAME);
const leafFile = join(dir, `native-leaf-${PORT}.pem`);
// certPem is the leaf and the CA (the chain membrane's contexts send)
writeFileSync(leafFile, `${leaf.certPem.trim()}\n${leaf.keyPem.trim()}\n`, { mode: 0o600 });
const SSL_FILETYPE_PEM = 1;
const SSL_OP_CIPHER_SERVER_PREFERENCE = 0x00400000n;
const SSL_CTRL_MODE = 33;
const SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 2;
const SSL_CTRL_SET_TLSEXT_HOSTNAME = 55;
const SSL_VERIFY_PEER = 1;

function check(ok: boolean, what: string): void { if (!ok) throw new Error(`native-spike: ${what} failed`); }
const sctx = openssl.CTX_new(openssl.TLS_server_method());
check(openssl.CTX_use_certificate_chain_file(sctx, leafFile) === 1, 'SSL_CTX_use_certificate_chain_file');
check(openssl.CTX_use_PrivateKey_file(sctx, leafFile, SSL_FILETYPE_PEM) === 1, 'SSL_CTX_use_PrivateKey_file');
check(openssl.CTX_set_ciphersuites(sctx, INTERCEPT_CIPHERS.split(':').filter((c) => c.startsWith('TLS_')).join(':')) === 1, 'SSL_CTX_set_ciphersuites');
openssl.CTX_set_options(sctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
// OpenSSL's own stateless tickets (its process-wide random keys): 2 after a full handshake, 1 after a resumption, as HAProxy
check(openssl.CTX_set_num_tickets(sctx, 2) === 1, 'SSL_CTX_set_num_tickets');
openssl.CTX_ctrl(sctx, SSL_CTRL_MODE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, null);
// MEMBRANE_NATIVE_TICKET_KEYS=<160 hex digits>: this context's own ticket keys (name 16, HMAC 32, AES 32),
// what would bind tickets to a leaf's name in production (one context per name, its own keys)
const SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59;
const TICKET_KEYS = process.env.MEMBRANE_NATIVE_TICKET_KEYS ? Buffer.from(process.env.MEMBRANE_NATIVE_TICKET_KEYS, 'hex') : undefined;
if (TICKET_KEYS) check(TICKET_KEYS.length === 80 && openssl.CTX_ctrl(sctx, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, 80, TICKET_KEYS) === 1, 'SSL_CTX_set_tlsext_ticket_keys');
const cctx = openssl.CTX_new(openssl.TLS_client_method());
check(openssl.CTX_load_verify_locations(cctx, join(dir, 'ca.crt'), null) === 1, 'SSL_CTX_load_verify_locations');
openssl.CTX_set_verify(cctx, SSL_VERIFY_PEER, null);
openssl.CTX_ctrl(cctx, SSL_CTRL_MODE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, null);
const ALPN = Buffer.from([8, ...Buffer.from('http/1.1')]);

// ---- one read buffer for the process: every read is written to the peer before the next read
// (a write that would block is copied out first), so it is never held across turns
const BUF = Buffer.allocUnsafeSlow(16384);
const CLOSE_UP = Buffer.from('Connection: close\r\n');
const CLOSE_DOWN = Buffer.from('connection: close\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** one TLS side of a forwarded connection: its fd, SSL*, uv_poll_t */
interface Leg {
  fd: number;
  ssl: unknown;
  h: unknown;
  /** uv_poll_t's address: the poll callback's key */
  at: number;
  server: boolean;
  connecting: boolean;
  ready: boolean;
  /** events the poll handle watches now */
  events: number;
  /** plaintext a write of this leg could not take yet (a copy, retried as is) */
  out: Buffer | null;
  peer: Leg | null;
  /** the client asked to close (`Connection: close`): closed after the response */
  closing: boolean;
  /** a client's request went up and its response has not come back (its upstream is not reusable) */
  inflight: boolean;
  closed: boolean;
}

const legs = new Map<number, Leg>();
const idle: Leg[] = [];
const hs = { full: 0, resumed: 0 };
/** why legs closed, and upstreams made: printed with the handshakes (MEMBRANE_NATIVE_DEBUG=1) */
const why: Record<string, number> = {};
const DEBUG = process.env.MEMBRANE_NATIVE_DEBUG === '1';
const count = (k: string): void => { if (DEBUG) why[k] = (why[k] ?? 0) + 1; };
process.on('SIGUSR2', () => { writeFileSync(join(dir, `handshakes-${PORT}.json`), JSON.stringify(hs)); if (DEBUG) console.error(JSON.stringify(why)); });

const onPoll = koffi.register((at: number, status: number, events: number) => {
  const leg = legs.get(at);
  if (leg) { try { onEvent(leg, status, events); } catch (e) { console.error('native-spike:', e); closeLeg(leg); } }
}, uv.pollCb);
const closing = new Map<number, unknown>();
const onClosed = koffi.register((at: number) => {
  const h = closing.get(at);
  if (h === undefined) return;
  closing.delete(at);
  koffi.free(h);
}, uv.closeCb);

function setEvents(leg: Leg, ev: number): void {
  if (leg.events === ev || leg.closed) return;
  leg.events = ev;
  if (ev === 0) uv.poll_stop(leg.h);
  else uv.poll_start(leg.h, ev, onPoll);
}

function newLeg(fd: number, ssl: unknown, server: boolean): Leg {
  const h = koffi.alloc('uint8_t', uv.handleSize);
  check(uv.poll_init(uv.loop, h, fd) === 0, 'uv_poll_init');
  const at = Number(koffi.address(h));
  const leg: Leg = { fd, ssl, h, at, server, connecting: false, ready: false, events: 0, out: null, peer: null, closing: false, inflight: false, closed: false };
  legs.set(at, leg);
  return leg;
}

/** closes a leg exactly once: the poll stopped, SSL freed, fd closed, the handle freed in uv_close's callback */
function closeLeg(leg: Leg | null): void {
  if (!leg || leg.closed) return;
  leg.closed = true;
  uv.poll_stop(leg.h);
  legs.delete(leg.at);
  closing.set(leg.at, leg.h);
  uv.close(leg.h, onClosed);
  openssl.free(leg.ssl);
  libc.close(leg.fd);
  const peer = leg.peer;
  leg.peer = null;
  if (peer) {
    peer.peer = null;
    // a client gone between requests leaves its upstream reusable (floor-server.ts takes one only for a request)
    if (leg.server && peer.ready && !peer.out && !leg.inflight) release(peer);
    else closeLeg(peer);
  }
  if (!leg.server) {
    const i = idle.indexOf(leg);
    if (i >= 0) idle.splice(i, 1);
  }
}

function onEvent(leg: Leg, status: number, _events: number): void {
  if (status < 0) { count('status:' + side(leg)); closeLeg(leg); return; }
  if (leg.connecting) leg.connecting = false;
  if (!leg.ready && !handshake(leg)) return;
  if (leg.out && !flush(leg)) return;
  if (!leg.peer) { idleRead(leg); return; }
  pump(leg);
}

function handshake(leg: Leg): boolean {
  const r = openssl.do_handshake(leg.ssl);
  if (r === 1) {
    leg.ready = true;
    setEvents(leg, UV_READABLE);
    if (leg.server) {
      if (openssl.session_reused(leg.ssl)) hs.resumed++; else hs.full++;
      // the client's upstream, from the pool or connecting
      const up = upstream();
      if (!up) { count('noup:'); closeLeg(leg); return false; }
      leg.peer = up;
      up.peer = leg;
      return true;
    }
    // the other side held its reads for this one
    resume(leg.peer);
    return true;
  }
  const e = openssl.get_error(leg.ssl, r);
  if (e === SSL_ERROR_WANT_READ) setEvents(leg, UV_READABLE);
  else if (e === SSL_ERROR_WANT_WRITE) setEvents(leg, UV_WRITABLE);
  else { count('handshake:' + side(leg)); closeLeg(leg); }
  return false;
}

/**
 * `p`'s reads were held for its peer (a handshake, a blocked write): watched again, and read now
 * only when OpenSSL holds bytes of it already (level-triggered readiness reports the rest)
 */
function resume(p: Leg | null): void {
  if (!p || !p.ready || p.out || p.events !== 0) return;
  setEvents(p, UV_READABLE);
  if (openssl.has_pending(p.ssl)) pump(p);
}

/** writes leg.out (the same bytes as the write that would block); true once it is all taken */
function flush(leg: Leg): boolean {
  const out = leg.out!;
  const w = openssl.write(leg.ssl, out, out.length);
  if (w === out.length) {
    leg.out = null;
    setEvents(leg, UV_READABLE);
    if (leg.closing) { finishClose(leg); return false; }
    resume(leg.peer);
    return true;
  }
  const e = openssl.get_error(leg.ssl, w);
  if (e === SSL_ERROR_WANT_WRITE) setEvents(leg, UV_WRITABLE);
  else if (e === SSL_ERROR_WANT_READ) setEvents(leg, UV_READABLE);
  else { count('flush:' + side(leg)); closeLeg(leg); }
  return false;
}

/** writes BUF[0, n) to `dst`; false when it could not take it all now (copied to dst.out, the source held) */
function forward(src: Leg, dst: Leg, n: number): boolean {
  const w = openssl.write(dst.ssl, BUF, n);
  if (w === n) return true;
  const e = openssl.get_error(dst.ssl, w);
  if (e !== SSL_ERROR_WANT_WRITE && e !== SSL_ERROR_WANT_READ) { count('write:' + side(dst)); closeLeg(dst); return false; }
  count(`blocked-write:${side(dst)}`);
  dst.out = Buffer.from(BUF.subarray(0, n));
  setEvents(dst, e === SSL_ERROR_WANT_WRITE ? UV_WRITABLE : UV_READABLE);
  setEvents(src, 0);
  return false;
}

/** reads `src` and writes what it read to its peer, while OpenSSL holds more of it */
function pump(src: Leg): void {
  for (;;) {
    const dst = src.peer;
    if (!dst) return;
    if (!dst.ready || dst.out) { setEvents(src, 0); return; }
    let n = openssl.read(src.ssl, BUF, BUF.length);
    if (n <= 0) {
      const e = openssl.get_error(src.ssl, n);
      if (e === SSL_ERROR_WANT_READ) return;
      if (e === SSL_ERROR_WANT_WRITE) { setEvents(src, UV_READABLE | UV_WRITABLE); return; }
      count('read:' + side(src) + ':' + e); closeLeg(src);
      return;
    }
    let close = false;
    if (!FORWARD_ONLY) {
      if (src.server) {
        // the request's `Connection: close` is the client side's: the upstream stays pooled
        const i = BUF.subarray(0, n).indexOf(CLOSE_UP);
        if (i >= 0) { BUF.copy(BUF, i, i + CLOSE_UP.length, n); n -= CLOSE_UP.length; src.closing = true; }
      } else if (dst.closing) {
        const i = BUF.subarray(0, n).indexOf(HEAD_END);
        if (i >= 0) {
          BUF.copy(BUF, i + 2 + CLOSE_DOWN.length, i + 2, n);
          CLOSE_DOWN.copy(BUF, i + 2);
          n += CLOSE_DOWN.length;
          close = true;
        }
      }
    }
    if (src.server) src.inflight = true; else dst.inflight = false;
    if (!forward(src, dst, n)) return;
    if (close) { finishClose(dst); return; }
    if (!openssl.has_pending(src.ssl)) return;
  }
}

/** the response to a `Connection: close` request is written: close_notify, the client closed, its upstream back to the pool */
function finishClose(client: Leg): void {
  const up = client.peer;
  client.peer = null;
  if (up) {
    up.peer = null;
    if (up.ready && !up.out) release(up); else { count('notpooled:up'); closeLeg(up); }
  }
  openssl.shutdown(client.ssl);
  closeLeg(client);
}

/** an upstream back to the pool, watched for its close */
function release(up: Leg): void {
  idle.push(up);
  setEvents(up, UV_READABLE);
}

/** an idle pooled upstream is readable: its close, or bytes nobody asked for (closed) */
function idleRead(leg: Leg): void {
  const n = openssl.read(leg.ssl, BUF, BUF.length);
  if (n > 0) { count('idle-data:up'); closeLeg(leg); return; }
  const e = openssl.get_error(leg.ssl, n);
  if (e !== SSL_ERROR_WANT_READ) { count('idle-close:up:' + e); closeLeg(leg); }
}

const side = (l: Leg): string => (l.server ? 'client' : 'up');
function upstream(): Leg | null {
  while (idle.length) {
    const u = idle.pop()!;
    if (!u.closed) return u;
  }
  count('upstream-new');
  const fd = libc.tcpConnect(ORIGIN);
  if (fd < 0) return null;
  const ssl = openssl.new(cctx);
  openssl.set_fd(ssl, fd);
  openssl.set_connect_state(ssl);
  openssl.ctrl_str(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, NAME);
  openssl.set1_host(ssl, NAME);
  openssl.set_alpn_protos(ssl, ALPN, ALPN.length);
  openssl.set_read_ahead(ssl, 1);
  const leg = newLeg(fd, ssl, false);
  leg.connecting = true;
  setEvents(leg, UV_WRITABLE);
  return leg;
}

function onAccept(fd: number): void {
  const ssl = openssl.new(sctx);
  openssl.set_fd(ssl, fd);
  openssl.set_accept_state(ssl);
  openssl.set_read_ahead(ssl, 1);
  const client = newLeg(fd, ssl, true);
  setEvents(client, UV_READABLE);
}

// ---- the listening socket: our own fd, accepted on readiness
const lfd = libc.tcpListen(PORT);
check(lfd >= 0, `listen on 127.0.0.1:${PORT}`);
const lh = koffi.alloc('uint8_t', uv.handleSize);
check(uv.poll_init(uv.loop, lh, lfd) === 0, 'uv_poll_init(listener)');
const onListen = koffi.register(() => {
  for (;;) {
    const fd = libc.accept(lfd);
    if (fd < 0) return;
    try { onAccept(fd); } catch (e) { console.error('native-spike: accept', e); }
  }
}, uv.pollCb);
uv.poll_start(lh, UV_READABLE, onListen);
process.on('uncaughtException', (e) => { console.error('native-spike:', e); process.exit(1); });
// exits on the bench's SIGTERM (a --cpu-prof profile is written only on a normal exit)
process.on('SIGTERM', () => process.exit(0));
console.log('ready');
