/**
 * An originated upstream as a Transport: a client TLS leg (leg-transport.ts holds what it shares
 * with the intercepted client's side) for UpstreamLink and ProxyConnection, with no Node stream
 * between them and OpenSSL.
 *
 * - The leg is opened on the fd while its connect(2) is under way (start; `connecting` until it
 *   completes): the handshake waits for it, writes are held for it.
 * - end() before the handshake is deferred behind it: the writes held for it, then a close_notify,
 *   reading on to the peer's end (a half-close: a tunnel's server may still answer).
 * - Failures: `error` with the origination's classified Error (its 502 reason), then `close`.
 * - Sessions to resume go to the origination (onSession).
 */
import { openTlsLeg, type TlsLegError, type TlsLegRole } from '../../sys/tls-leg.ts';
import type { TlsSession } from '../../sys/openssl.ts';
import type { Transport, TransportEvent } from '../transport.ts';
import { emit, LegTransport, listeners } from './leg-transport.ts';

export class UpstreamLegTransport extends LegTransport {
  readonly #classify: (e: TlsLegError) => Error;
  /** where the leg's sessions go (the leg keeps none without this handler) */
  readonly onSession: (s: TlsSession) => void;

  constructor(fd: number, classify: (e: TlsLegError) => Error, onSession: (s: TlsSession) => void) {
    super(fd, 'latin1');
    this.#classify = classify;
    this.onSession = onSession;
  }

  /** the leg on the (connecting) fd; a reason when it cannot be opened (the transport and its fd are closed then) */
  start(role: TlsLegRole & { role: 'client' }): TlsLegError | undefined {
    const r = openTlsLeg(this.fd, role, this);
    if (!r.leg) {
      this.destroy();
      return r.error;
    }
    this.attach(r.leg);
    return undefined;
  }

  /** a client leg whose connect has not completed */
  get connecting(): boolean {
    const leg = this.leg;
    return leg !== null && leg.connecting && !leg.destroyed;
  }

  // ------------------------------------------------------------------ the role's parts

  /** an end() asked before the handshake: now, after the writes held for it */
  onHandshake(): void {
    if (this.endCalled) this.leg!.end();
  }

  protected failed(err: TlsLegError): void {
    emit(this, this.ls.error, this.#classify(err));
  }

  /** the handshake's handler ends it; reading goes on to the peer's end */
  protected endBeforeHandshake(): void {
    this.resume();
  }

  protected release(): void {}

  resetAndDestroy(): this {
    return this.destroy();
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a Transport's listener type
type Listener = (...args: any[]) => void;

/**
 * An upstream that failed before a leg could be made (connect(2) refused at once, the leg's
 * setup): `error` with why, then `close`, on a later turn (as a socket's failed connect).
 */
export class FailedTransport implements Transport {
  /** @internal */
  readonly ls = listeners();
  readonly destroyed = true;
  readonly connecting = false;
  readonly writableLength = 0;
  readonly writableNeedDrain = false;
  readonly readableFlowing = false;
  readonly readableEnded = false;
  readonly readableLength = 0;
  constructor(err: Error) {
    process.nextTick(() => {
      emit(this, this.ls.error, err);
      emit(this, this.ls.close);
    });
  }
  write(): boolean { return false; }
  end(): this { return this; }
  destroy(): this { return this; }
  resetAndDestroy(): this { return this; }
  pause(): this { return this; }
  resume(): this { return this; }
  cork(): void {}
  uncork(): void {}
  isPaused(): boolean { return true; }
  on(event: TransportEvent, listener: Listener): this { this.ls[event].push(listener); return this; }
  once(event: TransportEvent, listener: Listener): this { return this.on(event, listener); }
  removeAllListeners(event: TransportEvent): this { this.ls[event] = []; return this; }
}
