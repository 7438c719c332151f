/**
 * TLS interception in the HTTP proxy (`terminatingTLS` + `originatingTLS` with HTTP rules, spec/
 * policy.md §3.7): a network filter that, when the connection's L7 entry for its peer carries a
 * terminatingTLS context, takes the accepted socket's fd off Node and terminates TLS on it with
 * OpenSSL itself (a TLS leg: ServerLegTransport over sys/tls-leg.ts), which the HTTP proxy then reads
 * and writes as its client side (no TLSSocket, no Node stream between). The leaf for the
 * requested name is issued on the fly by the CA of the referenced Secret (CertificateIssuer,
 * cached); the HTTP rules and visibility then apply to the decrypted requests (flows with
 * `https://` URLs, marked intercepted). With originatingTLS, each upstream connection is TLS
 * with the same server name (a client TLS leg, origination.ts), verified against the Secret's trusted CA (`ca.crt` by default) and
 * the name; verification is never skipped: an upstream certificate error fails the request with
 * 502 and a flow that says why.
 *
 * A refused name (serverNames), a missing Secret, no SNI, or a failed handshake ⇒ TCP reset and
 * a DROPPED TLS flow. A connection closed before its handshake completed is an error record at
 * once (not a HANDSHAKE_TIMEOUT 10 s later, holding the connection that long).
 */
import tls from 'node:tls';
import type net from 'node:net';
import type { NetworkFilter } from '../filter-chain.ts';
import type { ProxyConnection } from '../http/connection.ts';
import type { TlsLeg, TlsLegError } from '../../sys/tls-leg.ts';
import { ServerLegTransport, type LegOwner } from './server-leg.ts';
import { UV_DISCONNECT } from '../../sys/fd-watch.ts';
import { leafContext, type IssuedCert } from './issuer.ts';
import type { L7Policy } from '../../policy/types.ts';
import type { TLSContext } from '../../api/types.ts';
import { ClientHelloReader, serverName } from './clienthello.ts';
import { createSniFilter, sniVerdict } from './sni-filter.ts';
import type { TlsAccessRecord } from '../../common/access-log.ts';
import type { TlsSecrets } from './secrets.ts';
import { originationFor } from './origination.ts';

export interface InterceptOptions {
  secrets: TlsSecrets;
  onRecord(r: TlsAccessRecord): void;
  /** the handshake must complete this long after the connection opened (default 10 s) */
  handshakeTimeoutMs?: number;
  proxyPort?: number;
  logger?: { debug(o: unknown, m?: string): void };
}

type Entry = L7Policy['perSelector'][number];

/** The TLS contexts that apply to a connection: the first entry for the peer with terminatingTLS. */
export function interceptionEntry(conn: ProxyConnection): Entry | undefined {
  const pol = conn.policy();
  if (pol.verdict !== 'redirect' || !pol.l7 || pol.l7.parser !== 'http') return undefined;
  for (const e of pol.l7.perSelector) {
    if (e.terminatingTLS && (e.identities === 'all' || e.identities.has(conn.remoteIdentity))) return e;
  }
  return undefined;
}

/** ALPN's wire form, encoded once (an array is converted per connection) */
const ALPN_HTTP1 = Buffer.from([8, ...Buffer.from('http/1.1')]);
/** the record's ALPN when it is http/1.1 (the only one offered): shared, records are never changed */
const ALPN_HTTP1_NAMES = ['http/1.1'];
/** `TLSv1.3` -> `TLS 1.3`, once per version */
const versionTexts = new Map<string, string>();
function versionText(proto: string | null): string | undefined {
  if (!proto) return undefined;
  let v = versionTexts.get(proto);
  if (v === undefined) versionTexts.set(proto, (v = proto.replace('TLSv', 'TLS ')));
  return v;
}

/** Whether the port's HTTP policy is about TLS for some peer (serverNames or terminatingTLS). */
function isTlsPort(conn: ProxyConnection): boolean {
  const pol = conn.policy();
  return !!pol.l7 && pol.l7.parser === 'http' && pol.l7.perSelector.some((e) => e.serverNames || e.terminatingTLS);
}

/**
 * The ClientHello peeked per wake-up (all of what waits: a hello and its record headers up to the
 * reader's cap, and then some): one buffer for the process, read and parsed within one call.
 */
const HELLO_CAP = 64 * 1024;
const PEEK = Buffer.allocUnsafeSlow(HELLO_CAP + 8 * 1024);
/** a hello watch woken with nothing new and no end (memory pressure) looks again this much later */
const PRESSURE_RETRY_MS = 5;

/**
 * One intercepted connection, from its ClientHello to the end of its TLS handshake. The accepted
 * socket's fd is taken off Node before any byte is read (ProxyConnection.handOff) and becomes a
 * TLS leg's (ServerLegTransport: OpenSSL on the fd, no TLSSocket). The ClientHello is peeked from the
 * kernel, not consumed (ClientHelloReader: split over records and segments; SO_RCVLOWAT wakes the
 * watch only for bytes not yet seen), decided by its server name (serverNames, the name's
 * origination), and only then is the leg opened, with the context of the leaf for that name: a
 * session ticket is opened only by the context of the name it was issued for (per-context ticket
 * keys, issuer.ts leafContext), and no SNI callback runs. OpenSSL then reads the hello for real.
 */
class Interception implements LegOwner {
  readonly conn: ProxyConnection;
  readonly term: TLSContext;
  readonly orig: TLSContext | undefined;
  readonly ns: string;
  readonly t: ServerLegTransport;
  reader: ClientHelloReader | null = new ClientHelloReader({ maxBytes: HELLO_CAP });
  /** hello bytes pushed into the reader (the peek's first bytes are those seen before) */
  seen = 0;
  sni: string | undefined;
  /** refused (reset, recorded) or handshake done: nothing more to decide */
  settled = false;
  secure = false;
  readonly filter: FilterState;

  constructor(filter: FilterState, conn: ProxyConnection, entry: Entry, fd: number) {
    this.filter = filter;
    this.conn = conn;
    this.term = entry.terminatingTLS as TLSContext;
    this.orig = entry.originatingTLS;
    this.ns = conn.endpoint?.namespace || 'default';
    this.t = new ServerLegTransport(fd, this);
  }

  refuse(verdict: 'denied' | 'error', reason: string): void {
    if (this.settled) return;
    this.settled = true;
    this.reader = null;
    this.filter.record(this.conn, verdict, this.sni, reason);
    // Cilium answers a refused server name with a TCP reset
    if (!this.t.destroyed) this.t.resetAndDestroy();
  }

  readonly onDeadline = (): void => { if (!this.secure) this.refuse('error', 'HANDSHAKE_TIMEOUT: TLS handshake not complete in time'); };

  /** The fd is readable before the leg: the ClientHello so far, peeked and decided. */
  onReadable(status: number, events: number): void {
    const reader = this.reader;
    const t = this.t;
    if (!reader || this.settled) { t.stopWatching(); return; }
    if (status < 0) { this.refuse('error', 'HANDSHAKE_ABORTED: the connection failed before the TLS handshake completed'); return; }
    const n = t.peek(PEEK);
    if (n === -1) return; // nothing waits after all
    if (n === 0) { this.refuse('error', 'HANDSHAKE_ABORTED: the connection closed before the TLS handshake completed'); return; }
    if (n < 0) { this.refuse('error', `HANDSHAKE_ABORTED: the connection failed before the TLS handshake completed (errno ${-n})`); return; }
    if (n <= this.seen) {
      // nothing new: the peer's end (recv reports it only once the bytes before it are read), or
      // a wake-up under receive-memory pressure (tiny segments), which SO_RCVLOWAT does not hold back
      if (events & UV_DISCONNECT) this.refuse('error', 'HANDSHAKE_ABORTED: the client ended its side mid-ClientHello');
      else t.retryLater(PRESSURE_RETRY_MS);
      return;
    }
    // The reader keeps what it was given while it needs more: the peek buffer only when this push
    // decides (nearly always: the whole hello in one segment), else copies
    let r;
    if (this.seen === 0) {
      r = reader.push(PEEK.subarray(0, n));
      if (r.state === 'need-more') {
        const fresh = (this.reader = new ClientHelloReader({ maxBytes: HELLO_CAP }));
        r = fresh.push(Buffer.from(PEEK.subarray(0, n)));
      }
    } else r = reader.push(Buffer.from(PEEK.subarray(this.seen, n)));
    this.seen = n;
    if (r.state === 'need-more') {
      if (n === PEEK.length) { this.refuse('error', `TOO_LARGE: ClientHello larger than ${HELLO_CAP} bytes`); return; }
      t.needMore(n);
      return;
    }
    this.reader = null;
    t.stopWatching();
    if (r.state === 'error') { this.refuse('error', `${r.code}: ${r.message}`); return; }
    if (r.hello.sni === undefined) { this.refuse('denied', 'policy: no SNI in the ClientHello (interception needs a server name)'); return; }
    if (this.decide(r.hello.sni)) return;
    const f = this.filter;
    const issuer = f.secrets.issuerNow(this.term, this.ns);
    const leaf = issuer?.certNow(this.sni!);
    if (leaf) { this.startTls(leaf); return; }
    // the first connection of a name (or of a changed Secret): the leaf is issued first
    f.secrets.issuer(this.term, this.ns).then((iss) => iss.certFor(this.sni!)).then(
      (c) => { if (!this.settled && !t.destroyed) this.startTls(c); },
      (e: Error) => { this.refuse('error', `terminatingTLS: ${e.message}`); },
    );
  }

  /** The policy for the server name (serverNames), and origination set up for it; true when refused. */
  decide(name: string): boolean {
    const checked = serverName(name);
    this.sni = checked.name;
    if (checked.problem) { this.refuse('error', `BAD_SNI: ${checked.problem}`); return true; }
    const conn = this.conn;
    const v = sniVerdict(conn, checked.name);
    if (!v.allowed) { this.refuse('denied', v.reason); return true; }
    if (this.orig) {
      // the Secret as it is now (read per connection: a changed CA applies to the next one)
      const ca = this.filter.secrets.item(this.orig, this.ns, 'trustedCA');
      if ('error' in ca) { this.refuse('error', `originatingTLS: ${ca.error}`); return true; }
      conn.upstreamOrigin = originationFor(ca.value, checked.name);
    }
    conn.tls = { sni: checked.name, intercepted: true };
    return false;
  }

  /** The TLS leg on the fd, with the leaf's context; OpenSSL reads the ClientHello from the kernel. */
  startTls(leaf: IssuedCert): void {
    let ctx;
    try {
      ctx = leafContext(leaf);
    } catch (e) {
      this.refuse('error', `terminatingTLS: ${(e as Error).message}`);
      return;
    }
    const err = this.t.startTls(ctx);
    if (err) this.refuse('error', `${err.code}: ${err.message}`);
  }

  onSecure(): void {
    if (this.settled) return;
    this.secure = true;
    this.settled = true;
    const conn = this.conn;
    conn.deadline = 0;
    conn.onDeadline = null;
    const leg = this.t.leg!;
    this.filter.record(conn, 'forwarded', this.sni, undefined, leg);
  }

  onHandshakeError(e: TlsLegError): void {
    // the peer gone mid-handshake is an abort (as a close before the hello); anything else is the handshake's failure
    const aborted = e.code === 'TLS_HANDSHAKE_FAILED' && (e.errno !== undefined || e.message === 'the peer closed the connection');
    this.refuse('error', aborted ? `HANDSHAKE_ABORTED: ${e.message}` : `${e.code}: ${e.message}`);
    this.filter.logger?.debug({ err: e.message }, 'tls interception');
  }
}

interface FilterState {
  secrets: TlsSecrets;
  record(conn: ProxyConnection, verdict: TlsAccessRecord['verdict'], sni: string | undefined, reason?: string, leg?: TlsLeg): void;
  logger?: { debug(o: unknown, m?: string): void } | undefined;
}

export function createInterceptFilter(opts: InterceptOptions): NetworkFilter<ProxyConnection> {
  // Peers of a TLS port without terminatingTLS for them (e.g. another selector's serverNames-only
  // rule on the same port): decided by SNI and passed through, as on the tls slot.
  const sniFilter = createSniFilter({ onRecord: opts.onRecord, ...(opts.proxyPort ? { proxyPort: opts.proxyPort } : {}) });
  const passthrough = new WeakSet<ProxyConnection>();
  // one object per record, optional fields set when present (a record per intercepted connection:
  // no spread temporaries)
  const record = (conn: ProxyConnection, verdict: TlsAccessRecord['verdict'], sni: string | undefined, reason?: string, leg?: TlsLeg) => {
    const r: TlsAccessRecord = {
      l7: 'tls', verdict, direction: conn.direction, timeMs: Date.now(), client: conn.client, server: conn.server, endpointId: conn.endpoint?.id ?? 0, intercepted: true,
    };
    if (sni) r.sni = sni;
    if (reason) r.reason = reason;
    if (opts.proxyPort) r.proxyPort = opts.proxyPort;
    if (leg) {
      const version = versionText(leg.protocol());
      if (version) r.version = version;
      const alpn = leg.alpn();
      if (alpn === 'http/1.1') r.alpn = ALPN_HTTP1_NAMES;
      else if (alpn) r.alpn = [alpn];
      if (leg.sessionReused()) r.resumed = true;
    }
    try {
      opts.onRecord(r);
    } catch { /* the access log never breaks the proxy */ }
  };
  const filterState: FilterState = { secrets: opts.secrets, record, logger: opts.logger };
  return {
    name: 'tls.intercept',
    onData(conn, chunk) {
      // an intercepted connection's bytes are the leg's plaintext (its hello was peeked), for the HTTP proxy
      return passthrough.has(conn) ? sniFilter.onData!(conn, chunk) : 'continue';
    },
    onNewConnection(conn) {
      const entry = interceptionEntry(conn);
      if (!entry) {
        if (!isTlsPort(conn)) return 'continue';
        passthrough.add(conn);
        return sniFilter.onNewConnection!(conn);
      }
      // the accepted socket off Node, before any byte is read: the fd is the leg's
      const fd = conn.handOff();
      if (fd < 0) {
        record(conn, 'error', undefined, 'TLS_LEG_SETUP: the accepted socket has no fd to terminate TLS on');
        conn.sock.resetAndDestroy();
        return 'stop';
      }
      const st = new Interception(filterState, conn, entry, fd);
      conn.adopt(st.t);
      // checked by the proxy's sweep (no timer per connection); cleared once the handshake is done.
      // A client that closes before the handshake ends is decided at once (the peek's end, the
      // leg's failure): nothing waits for the deadline.
      conn.deadline = Date.now() + (opts.handshakeTimeoutMs ?? 10_000);
      conn.onDeadline = st.onDeadline;
      const why = st.t.watchHello();
      if (why) st.refuse('error', `TLS_LEG_SETUP: ${why}`);
      return 'continue';
    },
  };
}
