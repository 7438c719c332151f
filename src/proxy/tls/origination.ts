/**
 * TLS origination toward the upstream (`originatingTLS`, spec/policy.md §3.7): each new upstream
 * connection of an intercepted client is a client TLS leg (src/sys/tls-leg.ts: the node binary's
 * OpenSSL on the upstream's own fd, no TLSSocket, no net.Socket) with the server name as SNI and
 * as the name the certificate must hold, verified against the Secret's trusted CA only; never
 * skipped. Issue 18: Node's TLSSocket per upstream connection was most of what a new intercepted
 * connection cost over HAProxy (bench/tls/native-spike).
 *
 * Per trust bundle (the CA's PEM text): one client context (parsing the CA per connection is
 * measurable), the newest verified session per server name (a new connection resumes it: TLS 1.3
 * tickets, as HAProxy's servers reuse their last session), and an origination per name (the pool
 * tag and the opener, made once, not per connection). A changed CA is another bundle: another
 * context, sessions and pool tag, so nothing verified under the old one is used under the new.
 * Bounded: past MAX_TRUSTS bundles the oldest goes (its context freed: legs made on it keep
 * OpenSSL's own reference until they are freed; its sessions freed); past MAX_NAMES names a
 * bundle's sessions and originations start over.
 *
 * Failures: a certificate or name refused (TLS_VERIFY_FAILED) or another handshake failure
 * (TLS_HANDSHAKE_FAILED) answer 502 with `upstream_tls_error: <code>: <reason> (server name …)`;
 * a connect that fails is the plain upstream's 503, as before origination.
 */
import { clientContext, type TlsContext, type TlsSession } from '../../sys/openssl.ts';
import type { TlsLegError } from '../../sys/tls-leg.ts';
import { connectTcp } from '../../sys/tcp-fd.ts';
import type { UpstreamOrigin } from '../http/connection.ts';
import { UpstreamLegTransport, FailedTransport } from './upstream-leg.ts';

/** trust bundles kept (a Secret's CA each) */
export const MAX_TRUSTS = 64;
/** server names kept per trust bundle (sessions and originations) */
export const MAX_NAMES = 1024;

/** an upstream failure the HTTP proxy answers with its own status and reason */
export type ClassifiedError = Error & { code?: string; proxyStatus?: number; proxyReason?: string };

class Trust {
  static #serial = 0;
  readonly id = ++Trust.#serial;
  readonly ctx: TlsContext;
  /** the newest verified session per server name */
  readonly sessions = new Map<string, TlsSession>();
  readonly origins = new Map<string, Origination>();
  constructor(ca: string) {
    this.ctx = clientContext({ caPem: ca });
  }
  /** keeps `s` as `name`'s newest session (the one it replaces freed) */
  keep(name: string, s: TlsSession): void {
    const old = this.sessions.get(name);
    if (old === s) return;
    if (old) old.free();
    else if (this.sessions.size >= MAX_NAMES) this.forgetSessions();
    this.sessions.set(name, s);
  }
  forgetSessions(): void {
    for (const s of this.sessions.values()) s.free();
    this.sessions.clear();
  }
  /** out of the cache: its sessions freed now, its context once the last leg made on it is freed (OpenSSL's count) */
  retire(): void {
    this.forgetSessions();
    this.origins.clear();
    this.ctx.free();
  }
}

const trusts = new Map<string, Trust>();

function trustFor(ca: string): Trust {
  let t = trusts.get(ca);
  if (t) return t;
  if (trusts.size >= MAX_TRUSTS) {
    const [oldestCa, oldest] = trusts.entries().next().value!;
    trusts.delete(oldestCa);
    oldest.retire();
  }
  t = new Trust(ca);
  trusts.set(ca, t);
  return t;
}

/** One server name under one trust bundle: what ProxyConnection opens its upstream connections with. */
class Origination implements UpstreamOrigin {
  readonly tag: string;
  readonly trust: Trust;
  readonly name: string;
  /** the leg's onSession: the newest session becomes the name's (bound once) */
  readonly onSession = (s: TlsSession): void => {
    // a bundle retired meanwhile keeps nothing
    if (this.trust.ctx.freed) s.free();
    else this.trust.keep(this.name, s);
  };
  readonly classify: (e: TlsLegError) => ClassifiedError;

  constructor(trust: Trust, name: string) {
    this.trust = trust;
    this.name = name;
    // the bundle by its serial: a changed CA never shares a pool key with the old one
    this.tag = `|${name}|trust${trust.id}`;
    this.classify = (e) => classify(e, name);
  }

  open(fd: number, ip: string, port: number): UpstreamLegTransport | FailedTransport {
    const c = connectTcp(ip, port, fd);
    if (c.errno !== undefined) return new FailedTransport(plainError('TLS_CONNECT_FAILED', c.message, c.errno));
    const t = new UpstreamLegTransport(c.fd, this.classify, this.onSession);
    const err = t.start({ role: 'client', context: this.trust.ctx, host: this.name, session: this.trust.sessions.get(this.name) ?? null });
    return err ? new FailedTransport(classify(err, this.name)) : t;
  }
}

/** The origination for `name` under the trust bundle `ca` (made once per pair, bounded). */
export function originationFor(ca: string, name: string): UpstreamOrigin {
  const t = trustFor(ca);
  let o = t.origins.get(name);
  if (!o) {
    if (t.origins.size >= MAX_NAMES) t.origins.clear();
    t.origins.set(name, (o = new Origination(t, name)));
  }
  return o;
}

function plainError(code: string, message: string, errno?: number): ClassifiedError {
  const e: ClassifiedError & { errno?: number } = new Error(message);
  e.code = code;
  if (errno !== undefined) e.errno = errno;
  return e;
}

/** A leg's failure as the HTTP proxy's: TLS's own failures are 502 with the reason, the rest as a plain upstream's */
export function classify(e: TlsLegError, name: string): ClassifiedError {
  const err = plainError(e.code, e.message, e.errno);
  if (e.code === 'TLS_VERIFY_FAILED' || e.code === 'TLS_HANDSHAKE_FAILED' || e.code === 'TLS_PROTOCOL_ERROR' || e.code === 'TLS_LEG_SETUP') {
    err.proxyStatus = 502;
    err.proxyReason = `upstream_tls_error: ${e.code}: ${e.message} (server name ${name})`;
  }
  return err;
}

/** @internal for tests: bundles, sessions and originations kept now */
export function originationState(): { trusts: number; sessions: number } {
  let sessions = 0;
  for (const t of trusts.values()) sessions += t.sessions.size;
  return { trusts: trusts.size, sessions };
}

/** @internal for tests: every bundle retired (contexts and sessions freed) */
export function resetOriginations(): void {
  for (const t of trusts.values()) t.retire();
  trusts.clear();
}
