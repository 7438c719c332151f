/**
 * The client side of an intercepted connection as a Transport: a server TLS leg
 * (leg-transport.ts holds what it shares with the upstream's). The fd is the transport's from
 * creation on (ProxyConnection.handOff gave it up by Node).
 *
 * Before the leg: the ClientHello is peeked (watchHello, peek: nothing is consumed) so that its
 * server name picks the leaf's context before SSL_new; startTls then opens the leg and OpenSSL
 * reads the hello from the kernel for real. The interception (LegOwner) hears of the handshake
 * and of a failure before it; an end() before the handshake closes at once.
 */
import type { TlsContext } from '../../sys/openssl.ts';
import { openTlsLeg, type TlsLegError } from '../../sys/tls-leg.ts';
import { peekFd, resetOnClose, setRcvLowat } from '../../sys/tcp-fd.ts';
import { watchFd, type FdWatch } from '../../sys/fd-watch.ts';
import { emit, LegTransport, TlsTransportError } from './leg-transport.ts';

/** Who drives the transport before and during its handshake (the interception). */
export interface LegOwner {
  /** the fd is readable before the leg exists (status < 0: the socket reported an error; events: UV_DISCONNECT when the peer ended its side) */
  onReadable(status: number, events: number): void;
  /** the handshake completed */
  onSecure(): void;
  /** the leg failed before its handshake completed (the transport is destroyed already) */
  onHandshakeError(err: TlsLegError): void;
}

export class ServerLegTransport extends LegTransport {
  #owner: LegOwner;
  #watch: FdWatch | null = null;
  /** SO_RCVLOWAT was raised (a partial hello): set back to 1 before the leg reads */
  #lowat = false;

  constructor(fd: number, owner: LegOwner) {
    super(fd, 'utf8');
    this.#owner = owner;
  }

  // ------------------------------------------------------------------ before the leg

  /** watches for the ClientHello; a reason when the fd cannot be watched */
  watchHello(): string | undefined {
    if (this.destroyed) return 'destroyed';
    if (this.#watch) { this.#watch.start(); return undefined; }
    const owner = this.#owner;
    const w = watchFd(this.fd, (status, events) => owner.onReadable(status, events));
    if (typeof w === 'string') return w;
    this.#watch = w;
    return undefined;
  }

  /** no more readability calls until watchHello again (the hello is complete: the leaf is being issued) */
  stopWatching(): void {
    this.#watch?.stop();
  }

  /** the bytes waiting, copied into `buf` and left in the kernel (tcp-fd.ts peekFd's answer) */
  peek(buf: Buffer): number {
    return this.destroyed ? 0 : peekFd(this.fd, buf);
  }

  /** readable again only once more than `seen` bytes wait (or at the end, or an error) */
  needMore(seen: number): void {
    if (!this.destroyed && setRcvLowat(this.fd, seen + 1)) this.#lowat = true;
  }

  /**
   * Readable with nothing new: the kernel wakes a reader under receive-memory pressure whatever
   * SO_RCVLOWAT says (tcp_epollin_ready: many tiny segments), and a peek takes nothing off, so the
   * watch would fire again at once: it is stopped and started again `ms` later instead.
   */
  retryLater(ms: number): void {
    const w = this.#watch;
    if (!w || this.destroyed) return;
    w.stop();
    setTimeout(() => { if (!this.destroyed && this.#watch === w) w.start(); }, ms).unref();
  }

  /** the leg, with the leaf's server context; a reason when it cannot be opened (the transport is destroyed then) */
  startTls(context: TlsContext): TlsLegError | undefined {
    if (this.destroyed) return { code: 'TLS_LEG_SETUP', message: 'the connection is gone' };
    this.#watch?.close();
    this.#watch = null;
    if (this.#lowat) { setRcvLowat(this.fd, 1); this.#lowat = false; }
    const r = openTlsLeg(this.fd, { role: 'server', context }, this);
    if (!r.leg) {
      this.destroy();
      return r.error;
    }
    this.attach(r.leg);
    return undefined;
  }

  // ------------------------------------------------------------------ the role's parts

  onHandshake(): void {
    this.#owner.onSecure();
  }

  protected failed(err: TlsLegError): void {
    if (!this.leg?.handshaken) { this.#owner.onHandshakeError(err); return; }
    emit(this, this.ls.error, new TlsTransportError(err));
  }

  /** nothing was read yet, nothing is owed: closed at once */
  protected endBeforeHandshake(): void {
    this.destroy();
  }

  protected release(): void {
    this.#watch?.close();
    this.#watch = null;
  }

  resetAndDestroy(): this {
    if (this.destroyed) return this;
    resetOnClose(this.fd);
    return this.destroy();
  }
}
