/**
 * One TLS side of a connection, terminated by OpenSSL itself on a connected non-blocking fd
 * (SSL_set_fd: OpenSSL reads and writes the socket; no TLSWrap, no memory BIO, no JS stream),
 * driven by libuv's uv_poll readiness on Node's loop (uv.ts, as udp-poll.ts). bench/tls/native-spike
 * measured the lever (issue 18): per keep-alive request 20.8 µs of CPU against Node's TLSSocket
 * floor 27.7 µs.
 *
 * Contract:
 * - onData(view): a borrowed view of one process-wide 16 KiB buffer, valid during the call only
 *   (the next read overwrites it); copy what must outlive the call. With readBuffer (a provider,
 *   as Node's onread), each read goes into the buffer it returns, asked right before the read, and
 *   the view is of that buffer: the owner decides when it is read into again.
 * - write(bytes): true when OpenSSL took all of it; false when it is held (a copy, retried as is
 *   once the socket can take it; later writes queue behind it) and onDrain follows when all is
 *   taken. Writes before the handshake completes are held the same way.
 * - Readiness is level-triggered: a leg reads once per wake-up and again while OpenSSL holds a
 *   record already (SSL_has_pending); pause() stops the reads (the peer's sending stalls on TCP).
 * - Errors are values (TlsLegError, a stable code): the leg is destroyed first, then onError runs.
 *   The peer's close_notify is onEnd (reads stop; writing still works, TLS 1.3's half-close).
 * - close(): the held writes first, then one close_notify and the fd closed at once (no wait for
 *   the peer's); destroy(): at once. Both are idempotent and safe from inside any callback.
 * - end(): the held writes first, then one close_notify; reads go on (a lingering close: the owner
 *   closes at the peer's close_notify, onEnd, or its failure, onError).
 * - Each leg's uv_poll_t and SSL* are freed exactly once, in uv_close's callback (a later turn);
 *   liveLegs() counts the legs made and not yet freed. The fd is the leg's from creation on.
 */
import koffi from 'koffi';
import { constants as osConstants } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import {
  ssl, reason, peekReasonCode, verifyReason, clearErrors, setPeerName, alpnSelected, onClientSession, addressOf, keepSessionResumable, TlsSession, type TlsContext,
  SSL_ERROR_SSL, SSL_ERROR_SYSCALL, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE, SSL_ERROR_ZERO_RETURN, SSL_R_UNEXPECTED_EOF_WHILE_READING,
} from './openssl.ts';
import { closeTcpFd, socketError } from './tcp-fd.ts';
import { errnoName } from './errno.ts';
import { handleAddress, uvPoll, UV_READABLE, UV_WRITABLE, type UvPoll } from './uv.ts';

export type TlsLegErrorCode =
  /** a client leg's connect failed (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, …: the errno) before any TLS */
  | 'TLS_CONNECT_FAILED'
  /** the TLS handshake failed: not TLS, no common suite or ALPN protocol, the peer gone, … (message: OpenSSL's reason) */
  | 'TLS_HANDSHAKE_FAILED'
  /** a client leg refused the peer's certificate (verifyCode, message: SSL_get_verify_result's reason) */
  | 'TLS_VERIFY_FAILED'
  /** the peer reset the connection (ECONNRESET, EPIPE) after the handshake */
  | 'TLS_PEER_RESET'
  /** the peer closed TCP without a close_notify after the handshake (a truncation, or a careless peer) */
  | 'TLS_PEER_EOF'
  /** a TLS protocol error after the handshake (a bad record, a bad MAC, an alert) */
  | 'TLS_PROTOCOL_ERROR'
  /** another system error on the socket (errno) */
  | 'TLS_IO_ERROR'
  /** the leg could not be set up (SSL_new, uv_poll_init, the peer's name): the fd stays the caller's */
  | 'TLS_LEG_SETUP';

export interface TlsLegError {
  code: TlsLegErrorCode;
  message: string;
  hint?: string;
  /** SSL_get_verify_result's value (TLS_VERIFY_FAILED) */
  verifyCode?: number;
  /** the socket's errno, when the failure was a system call's */
  errno?: number;
}

export interface TlsLegHandlers {
  /** the handshake completed (the leg's protocol(), cipher(), alpn(), sessionReused() are known) */
  onHandshake?(): void;
  /** decrypted bytes: a view valid during this call only (of readBuffer's buffer when given) */
  onData(view: Buffer): void;
  /** where the next read goes (asked right before each read); default the process-wide buffer */
  readBuffer?(): Buffer;
  /** every held write was taken */
  onDrain?(): void;
  /** the peer's close_notify: no more reads */
  onEnd?(): void;
  /** a failure: the leg is destroyed already */
  onError?(err: TlsLegError): void;
  /**
   * A client leg's verified session to resume later (TLS 1.2: at the handshake's end; TLS 1.3:
   * each ticket, read after it): the receiver's now, to free() exactly once. Called between
   * OpenSSL's calls, never from inside one; a leg without this handler keeps none.
   */
  onSession?(session: TlsSession): void;
  /** the leg was destroyed (by destroy(), close(), or a failure: then before onError); its fd is closed */
  onClose?(): void;
}

export type TlsLegRole = { role: 'server'; context: TlsContext } | {
  role: 'client'; context: TlsContext; host: string;
  /** offered for resumption: only a session of this context and this host is (another is a full handshake) */
  session?: TlsSession | null;
};

const ECONNRESET = osConstants.errno.ECONNRESET;
const EPIPE = osConstants.errno.EPIPE;

const uvOrWhy = uvPoll();
/** libuv's poll functions (this module is only imported where they are reachable: the node binary exports them) */
const uv: UvPoll = typeof uvOrWhy === 'string' ? ((): never => { throw new Error(uvOrWhy); })() : uvOrWhy;

/** the one read buffer of the process: a read is handed to onData and done with before the next */
const BUF = Buffer.allocUnsafeSlow(16384);

/** legs by their uv_poll_t's address: the poll callback's key */
const legs = new Map<number, TlsLeg>();
/** client legs that take their sessions (onSession), by their SSL*'s address: the new-session callback's key */
const sessionLegs = new Map<number, TlsLeg>();
onClientSession((sslAt, session) => {
  const leg = sessionLegs.get(sslAt);
  return leg !== undefined && leg.takeSession(session);
});
/** handles closing: freed (with their SSL*) in uv_close's callback */
const closing = new Map<number, { h: unknown; ssl: unknown }>();
let live = 0;
/** TLS legs made and not yet freed (their uv_close callback not yet run) */
export function liveLegs(): number {
  return live;
}

const onPoll = koffi.register((at: number, status: number) => {
  const leg = legs.get(at);
  if (leg) leg.onPoll(status);
}, uv.pollCbType);
const onClosed = koffi.register((at: number) => {
  const c = closing.get(at);
  if (!c) return;
  closing.delete(at);
  ssl.free(c.ssl);
  koffi.free(c.h);
  live--;
}, uv.closeCbType);


/**
 * A TLS leg on `fd` (connected, or connecting for a client: the handshake waits for it), the fd
 * the leg's from now on. No leg (and why) when it cannot be set up: the fd stays the caller's.
 * Nothing is called back before this returns.
 */
export function openTlsLeg(fd: number, role: TlsLegRole, handlers: TlsLegHandlers): { leg: TlsLeg; error?: undefined } | { leg: null; error: TlsLegError } {
  if (!isMainThread) return { leg: null, error: { code: 'TLS_LEG_SETUP', message: 'not the main thread (uv_default_loop is its loop)' } };
  clearErrors();
  const s = ssl.new(role.context.ptr);
  if (!s) return { leg: null, error: { code: 'TLS_LEG_SETUP', message: `SSL_new: ${reason()}` } };
  if (ssl.setFd(s, fd) !== 1 || (role.role === 'client' && !setPeerName(s, role.host))) {
    const why = reason();
    ssl.free(s);
    return { leg: null, error: { code: 'TLS_LEG_SETUP', message: role.role === 'client' ? `the peer name ${JSON.stringify(role.host)} or the fd: ${why}` : `SSL_set_fd: ${why}` } };
  }
  if (role.role === 'server') ssl.setAcceptState(s);
  else {
    ssl.setConnectState(s);
    // a session verified for another name (or under another trust) would skip this name's verification
    if (role.session && role.session.host === role.host && role.session.context === role.context) role.session.setOn(s);
    clearErrors();
  }
  ssl.setReadAhead(s, 1);
  const h = koffi.alloc('uint8_t', uv.handleSize);
  if (uv.init(uv.loop, h, fd) !== 0) {
    // never a handle of the loop: nothing to close
    koffi.free(h);
    ssl.free(s);
    return { leg: null, error: { code: 'TLS_LEG_SETUP', message: `uv_poll_init refused fd ${fd}` } };
  }
  live++;
  const leg = new TlsLeg(fd, s, h, role.role === 'server', handlers);
  legs.set(leg.at, leg);
  if (role.role === 'client') {
    leg.connecting = true;
    if (handlers.onSession) {
      leg.peer = { host: role.host, context: role.context, sslAt: addressOf(s) };
      sessionLegs.set(leg.peer.sslAt, leg);
    }
  }
  // a server waits for the ClientHello; a client for its connect to complete
  leg.watch(role.role === 'server' ? UV_READABLE : UV_WRITABLE);
  return { leg };
}

export class TlsLeg {
  readonly fd: number;
  readonly server: boolean;
  /** @internal the uv_poll_t's address */
  readonly at: number;
  #ssl: unknown;
  #h: unknown;
  #on: TlsLegHandlers;
  #ready = false;
  #destroyed = false;
  #paused = false;
  #ended = false;
  /** close() waits for the held writes */
  #closing = false;
  /** end() waits for the held writes; then the close_notify is sent once (#shut) */
  #ending = false;
  #shut = false;
  /** what the handshake or a held write waits for (UV_READABLE / UV_WRITABLE) */
  #wants = 0;
  /** a read wants the socket writable (SSL_read's WANT_WRITE: a key update's answer) */
  #readWantsWrite = false;
  /** the events the poll handle watches now (changed only on a state change: uv_poll_start costs an epoll_ctl) */
  #events = 0;
  /** writes OpenSSL has not taken: copies, the first retried as is */
  #held: Buffer[] = [];
  /** a client leg whose connect has not completed (the fd not yet writable once) */
  connecting = false;
  /** @internal a client leg taking its sessions: its peer and SSL*'s address */
  peer: { host: string; context: TlsContext; sslAt: number } | null = null;
  /** the newest session OpenSSL handed over during its last call, for onSession after it */
  #session: TlsSession | null = null;

  /** @internal made by openTlsLeg */
  constructor(fd: number, s: unknown, h: unknown, server: boolean, on: TlsLegHandlers) {
    this.fd = fd;
    this.#ssl = s;
    this.#h = h;
    this.server = server;
    this.#on = on;
    this.at = handleAddress(h);
  }

  get destroyed(): boolean { return this.#destroyed; }
  get handshaken(): boolean { return this.#ready; }
  /** bytes of writes held (not yet taken by OpenSSL) */
  get heldBytes(): number {
    let n = 0;
    for (const b of this.#held) n += b.length;
    return n;
  }
  protocol(): string { return this.#destroyed ? '' : ssl.getVersion(this.#ssl); }
  cipher(): string {
    if (this.#destroyed) return '';
    const c = ssl.getCurrentCipher(this.#ssl);
    return c ? ssl.cipherName(c) : '';
  }
  alpn(): string { return this.#destroyed ? '' : alpnSelected(this.#ssl); }
  sessionReused(): boolean { return !this.#destroyed && ssl.sessionReused(this.#ssl) === 1; }

  /**
   * @internal OpenSSL's new-session callback, inside its call: the session kept (true: its
   * reference is the leg's) when this leg takes sessions, lives and verified its peer; the newest
   * replaces one not yet handed over.
   */
  takeSession(session: unknown): boolean {
    const p = this.peer;
    if (this.#destroyed || !p || ssl.getVerifyResult(this.#ssl) !== 0) return false;
    this.#session?.free();
    this.#session = new TlsSession(session, p.host, p.context);
    return true;
  }

  /** the session OpenSSL handed over, to onSession (after OpenSSL's call returned) */
  #giveSession(): void {
    const sess = this.#session!;
    this.#session = null;
    if (this.#destroyed) { sess.free(); return; }
    this.#on.onSession!(sess);
  }

  /** @internal sets the watched events (initially, and from the state below) */
  watch(ev: number): void {
    if (this.#destroyed || this.#events === ev) return;
    this.#events = ev;
    if (ev === 0) uv.stop(this.#h);
    else uv.start(this.#h, ev, onPoll);
  }

  #update(): void {
    if (!this.#ready) { this.watch(this.#wants); return; }
    let ev = 0;
    if (!this.#paused && !this.#ended) ev |= UV_READABLE;
    if (this.#held.length) ev |= this.#wants;
    if (this.#readWantsWrite) ev |= UV_WRITABLE;
    this.watch(ev);
  }

  /** @internal libuv's readiness (status < 0: the socket reported an error and libuv stopped the handle) */
  onPoll(status: number): void {
    if (this.#destroyed) return;
    try {
      if (status < 0) {
        this.#events = 0;
        const errno = socketError(this.fd);
        if (this.connecting) { this.#fail(connectFailed(errno)); return; }
        this.#fail(this.#ready
          ? this.#ioError(errno, 'the socket reported an error')
          : { code: 'TLS_HANDSHAKE_FAILED', message: `the socket failed during the handshake: ${errnoName(errno)}`, errno });
        return;
      }
      if (this.connecting) {
        // writable: the connect completed, or failed (SO_ERROR)
        const errno = socketError(this.fd);
        if (errno !== 0) { this.#fail(connectFailed(errno)); return; }
        this.connecting = false;
      }
      if (!this.#ready) {
        this.#handshake();
        if (this.#session) this.#giveSession();
        if (!this.#ready || this.#destroyed) return;
      }
      if (this.#held.length) {
        this.#flush();
        if (this.#destroyed) return;
      }
      if (this.#readWantsWrite) { this.#readWantsWrite = false; this.#update(); }
      if (!this.#paused && !this.#ended) this.#read();
      if (this.#session) this.#giveSession();
    } catch (e) {
      // a handler threw: its owner's state is unknown, so the leg goes; the exception reaches the
      // process as any event handler's does, not through libuv's C frames
      this.destroy();
      process.nextTick(() => { throw e; });
    }
  }

  #handshake(): void {
    clearErrors();
    const r = ssl.doHandshake(this.#ssl);
    if (r === 1) {
      if (!this.server) {
        // SSL_VERIFY_PEER fails the handshake on a bad chain; this holds it should that ever change
        const v = ssl.getVerifyResult(this.#ssl);
        if (v !== 0) { this.#fail({ code: 'TLS_VERIFY_FAILED', message: verifyReason(v), verifyCode: v }); return; }
      }
      this.#ready = true;
      this.#wants = 0;
      this.#update();
      this.#on.onHandshake?.();
      return;
    }
    const errno = koffi.errno();
    const e = ssl.getError(this.#ssl, r);
    if (e === SSL_ERROR_WANT_READ) { this.#wants = UV_READABLE; this.#update(); return; }
    if (e === SSL_ERROR_WANT_WRITE) { this.#wants = UV_WRITABLE; this.#update(); return; }
    if (!this.server) {
      const v = ssl.getVerifyResult(this.#ssl);
      if (v !== 0) { clearErrors(); this.#fail({ code: 'TLS_VERIFY_FAILED', message: verifyReason(v), verifyCode: v, hint: 'the peer\'s chain must lead to a trusted CA and name the host' }); return; }
    }
    const why = reason();
    const message = why || (e === SSL_ERROR_SYSCALL ? (errno ? errnoName(errno) : 'the peer closed the connection') : `SSL_get_error ${e}`);
    this.#fail({ code: 'TLS_HANDSHAKE_FAILED', message, ...(e === SSL_ERROR_SYSCALL && errno ? { errno } : {}) });
  }

  #ioError(errno: number, what: string): TlsLegError {
    if (errno === ECONNRESET || errno === EPIPE) return { code: 'TLS_PEER_RESET', message: `${what}: ${errnoName(errno)}`, errno };
    if (errno === 0) return { code: 'TLS_PEER_EOF', message: `${what}: the peer closed without close_notify` };
    return { code: 'TLS_IO_ERROR', message: `${what}: ${errnoName(errno)}`, errno };
  }

  /** the failure after SSL_read/SSL_write returned `r` (not a WANT_*) */
  #opError(e: number, errno: number, what: string): TlsLegError {
    if (e === SSL_ERROR_SYSCALL) { clearErrors(); return this.#ioError(errno, what); }
    if (e === SSL_ERROR_SSL && peekReasonCode() === SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      clearErrors();
      return { code: 'TLS_PEER_EOF', message: `${what}: the peer closed without close_notify` };
    }
    return { code: 'TLS_PROTOCOL_ERROR', message: `${what}: ${reason() || `SSL_get_error ${e}`}` };
  }

  #read(): void {
    const provide = this.#on.readBuffer;
    for (;;) {
      const buf = provide ? provide.call(this.#on) : BUF;
      clearErrors();
      const n = ssl.read(this.#ssl, buf, buf.length);
      if (n > 0) {
        this.#on.onData(buf.subarray(0, n));
        if (this.#destroyed || this.#paused) return;
        if (!ssl.hasPending(this.#ssl)) return;
        continue;
      }
      const errno = koffi.errno();
      const e = ssl.getError(this.#ssl, n);
      if (e === SSL_ERROR_WANT_READ) return;
      if (e === SSL_ERROR_WANT_WRITE) { this.#readWantsWrite = true; this.#update(); return; }
      if (e === SSL_ERROR_ZERO_RETURN) {
        this.#ended = true;
        this.#update();
        this.#on.onEnd?.();
        return;
      }
      this.#fail(this.#opError(e, errno, 'read'));
      return;
    }
  }

  /** writes the held copies in order; onDrain (or close's end) once all are taken */
  #flush(): void {
    while (this.#held.length) {
      const b = this.#held[0]!;
      clearErrors();
      const w = ssl.write(this.#ssl, b, b.length);
      if (w === b.length) { this.#held.shift(); continue; }
      const errno = koffi.errno();
      const e = ssl.getError(this.#ssl, w);
      if (e === SSL_ERROR_WANT_WRITE || e === SSL_ERROR_WANT_READ) {
        this.#wants = e === SSL_ERROR_WANT_WRITE ? UV_WRITABLE : UV_READABLE;
        this.#update();
        return;
      }
      this.#fail(this.#opError(e, errno, 'write'));
      return;
    }
    this.#wants = 0;
    this.#update();
    if (this.#closing) { this.#finishClose(); return; }
    if (this.#ending) this.#sendCloseNotify();
    this.#on.onDrain?.();
  }

  /**
   * Encrypts and sends `bytes`: true when OpenSSL took all of them, false when they are held (a
   * copy: the caller may reuse `bytes` at once) until the socket takes them (onDrain). A
   * destroyed or closing leg takes nothing (false, no onDrain).
   */
  write(bytes: Uint8Array): boolean {
    if (this.#destroyed || this.#closing || this.#ending) return false;
    if (bytes.length === 0) return this.#held.length === 0;
    if (!this.#ready || this.#held.length) {
      this.#held.push(Buffer.from(bytes));
      return false;
    }
    clearErrors();
    const w = ssl.write(this.#ssl, bytes, bytes.length);
    if (w === bytes.length) return true;
    const errno = koffi.errno();
    const e = ssl.getError(this.#ssl, w);
    if (e === SSL_ERROR_WANT_WRITE || e === SSL_ERROR_WANT_READ) {
      // OpenSSL may have sent records of it already: the retry must be the same bytes (a copy may move: ACCEPT_MOVING_WRITE_BUFFER)
      this.#held.push(Buffer.from(bytes));
      this.#wants = e === SSL_ERROR_WANT_WRITE ? UV_WRITABLE : UV_READABLE;
      this.#update();
      return false;
    }
    this.#fail(this.#opError(e, errno, 'write'));
    return false;
  }

  /** stops reading (the peer's sending stalls on TCP's window) */
  pause(): void {
    if (this.#destroyed || this.#paused) return;
    this.#paused = true;
    if (this.#ready) this.#update();
  }

  /** reads again; what OpenSSL holds already is delivered now */
  resume(): void {
    if (this.#destroyed || !this.#paused) return;
    this.#paused = false;
    if (!this.#ready) return;
    this.#update();
    if (!this.#ended && ssl.hasPending(this.#ssl)) this.#read();
    if (this.#session) this.#giveSession();
  }

  /** the held writes, then one close_notify, then the fd closed (the peer's close_notify is not waited for) */
  close(): void {
    if (this.#destroyed || this.#closing) return;
    this.#closing = true;
    if (this.#ready && this.#held.length) { this.#paused = true; this.#update(); return; }
    this.#finishClose();
  }

  /**
   * The held writes, then one close_notify; reads go on (the peer's close_notify is onEnd, its
   * FIN without one onError): a lingering close, which the owner ends with destroy(). Before the
   * handshake completed there is nothing to end: destroy().
   */
  end(): void {
    if (this.#destroyed || this.#closing || this.#ending) return;
    if (!this.#ready) { this.destroy(); return; }
    this.#ending = true;
    if (this.#held.length === 0) this.#sendCloseNotify();
  }

  #sendCloseNotify(): void {
    if (this.#shut) return;
    this.#shut = true;
    clearErrors();
    // one try: an alert the socket cannot take now is not waited for (the peer's end or the owner's deadline closes)
    ssl.shutdown(this.#ssl);
    clearErrors();
  }

  #finishClose(): void {
    if (this.#ready) {
      clearErrors();
      // one try: a socket that cannot take the alert now is closed anyway (close at once)
      ssl.shutdown(this.#ssl);
      clearErrors();
    }
    this.destroy();
  }

  /** the fd closed at once, nothing sent; the SSL* and the uv_poll_t freed in uv_close's callback */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#held = [];
    legs.delete(this.at);
    if (this.peer) sessionLegs.delete(this.peer.sslAt);
    if (!this.server) keepSessionResumable(this.#ssl);
    this.#session?.free();
    this.#session = null;
    closing.set(this.at, { h: this.#h, ssl: this.#ssl });
    // uv_close stops the watch at once: the fd may close now (its number reused safely)
    uv.close(this.#h, onClosed);
    closeTcpFd(this.fd);
    this.#on.onClose?.();
  }

  #fail(err: TlsLegError): void {
    if (this.#destroyed) return;
    this.destroy();
    this.#on.onError?.(err);
  }
}

function connectFailed(errno: number): TlsLegError {
  return { code: 'TLS_CONNECT_FAILED', message: `connect: ${errno ? errnoName(errno) : 'the socket closed'}`, errno, hint: 'the peer refused or is unreachable' };
}
