/**
 * TLS interception in the HTTP proxy (`terminatingTLS` + `originatingTLS` with HTTP rules, spec/
 * policy.md §3.7): a network filter that, when the connection's L7 entry for its peer carries a
 * terminatingTLS context, adopts a TLS server stream over the accepted socket. The leaf for the
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
import { kCloseOnFinal, type ProxyConnection } from '../http/connection.ts';
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
 * One intercepted connection, from its ClientHello to the end of its TLS handshake. The ClientHello
 * is read from the accepted socket before any TLS (ClientHelloReader: split over records and
 * segments), decided by its server name (serverNames, the name's origination), and only then is
 * the TLSSocket made, with the context of the leaf for that name: a session ticket is opened only
 * by the context of the name it was issued for (issuer.ts renewingTickets), and no SNI callback
 * runs. The bytes read go back to the socket (unshift) for the TLSSocket, which takes them first.
 * Its handlers are methods bound once per connection (no closures per event).
 */
class Interception {
  readonly conn: ProxyConnection;
  readonly term: TLSContext;
  readonly orig: TLSContext | undefined;
  readonly ns: string;
  /** the accepted TCP socket (under the TLS socket once there is one) */
  readonly raw: net.Socket;
  reader: ClientHelloReader | null = new ClientHelloReader({ maxBytes: 64 * 1024 });
  chunks: Buffer[] = [];
  sni: string | undefined;
  server: tls.TLSSocket | null = null;
  /** refused (reset, recorded) or handshake done: nothing more to decide */
  settled = false;
  secure = false;
  readonly filter: FilterState;

  constructor(filter: FilterState, conn: ProxyConnection, entry: Entry) {
    this.filter = filter;
    this.conn = conn;
    this.term = entry.terminatingTLS as TLSContext;
    this.orig = entry.originatingTLS;
    this.ns = conn.endpoint?.namespace || 'default';
    this.raw = conn.sock as net.Socket;
  }

  refuse(verdict: 'denied' | 'error', reason: string): void {
    if (this.settled) return;
    this.settled = true;
    this.reader = null;
    this.chunks.length = 0;
    this.filter.record(this.conn, verdict, this.sni, reason);
    // Cilium answers a refused server name with a TCP reset (the TLS socket goes with its TCP one)
    const raw = this.raw;
    if (!raw.destroyed) {
      if (typeof raw.resetAndDestroy === 'function') raw.resetAndDestroy();
      else raw.destroy();
    }
  }

  readonly onDeadline = (): void => { if (!this.secure) this.refuse('error', 'HANDSHAKE_TIMEOUT: TLS handshake not complete in time'); };
  readonly onClose = (): void => { if (!this.secure) this.refuse('error', 'HANDSHAKE_ABORTED: the connection closed before the TLS handshake completed'); };

  /** Client bytes before the TLS handshake: the ClientHello, read and decided. */
  onHello(chunk: Buffer): void {
    const reader = this.reader;
    if (!reader || this.settled) return;
    this.chunks.push(chunk);
    const r = reader.push(chunk);
    if (r.state === 'need-more') return;
    this.reader = null;
    const raw = this.raw;
    raw.pause();
    if (r.state === 'error') { this.refuse('error', `${r.code}: ${r.message}`); return; }
    if (r.hello.sni === undefined) { this.refuse('denied', 'policy: no SNI in the ClientHello (interception needs a server name)'); return; }
    if (this.decide(r.hello.sni)) return;
    const f = this.filter;
    const issuer = f.secrets.issuerNow(this.term, this.ns);
    const leaf = issuer?.certNow(this.sni!);
    if (leaf) { this.startTls(leaf.context); return; }
    // the first connection of a name (or of a changed Secret): the leaf is issued first
    f.secrets.issuer(this.term, this.ns).then((iss) => iss.certFor(this.sni!)).then(
      (c) => { if (!this.settled && !raw.destroyed) this.startTls(c.context); },
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

  /** The TLS server over the accepted socket, with the leaf's context; the ClientHello read goes first. */
  startTls(secureContext: tls.SecureContext): void {
    const raw = this.raw;
    const chunks = this.chunks;
    for (let i = chunks.length - 1; i >= 0; i--) raw.unshift(chunks[i]!);
    chunks.length = 0;
    const server = new InterceptedSocket(raw, { isServer: true, secureContext, ALPNProtocols: ALPN_HTTP1 });
    this.server = server;
    (server as TlsWithState)[kState] = this;
    server.on('secure', onSecure);
    server.on('error', onServerError);
    this.conn.adopt(server);
  }
}

/** libuv's stream handle under a net.Socket: the bytes it holds that the kernel has not taken */
interface StreamHandle { writeQueueSize?: number }

/**
 * The intercepting TLS server stream. Ending it (end()) writes every response byte, then in
 * _final the close_notify and a shutdown of the TCP connection, and Node closes it only at the
 * client's own close_notify/FIN. When the connection says the client asked to close and nothing of
 * it is expected (kCloseOnFinal, connection.ts), it closes right after the close_notify instead:
 * _final runs once every write completed (the response is in the kernel) and writes the
 * close_notify at once when nothing else is pending; closed only if libuv holds nothing (the
 * kernel took the close_notify too), the kernel then sends all of it and the FIN from the closed
 * socket. Saves the shutdown's wake-up and completion, the read and decryption of the client's
 * close_notify and FIN, and Node's end/finish ticks. A client that sends more after asking to
 * close may get a reset (as for plain HTTP).
 */
class InterceptedSocket extends tls.TLSSocket {
  [kCloseOnFinal] = false;
  /** the accepted TCP socket under it */
  readonly raw: net.Socket;

  constructor(raw: net.Socket, opts: tls.TLSSocketOptions) {
    super(raw, opts);
    this.raw = raw;
  }

  override _final(cb: (error?: Error | null) => void): void {
    super._final(cb);
    if (this[kCloseOnFinal] && !this.destroyed && takenByKernel(this.raw)) this.destroy();
  }
}

/** Whether the kernel took every byte written on the accepted socket (libuv holds none). */
function takenByKernel(raw: net.Socket): boolean {
  const h = (raw as unknown as { _handle?: StreamHandle | null })._handle;
  return !!h && h.writeQueueSize === 0;
}

const kState = Symbol('interception');
type TlsWithState = tls.TLSSocket & { [kState]?: Interception };
/** the handshake completed: one function for all connections, finding theirs on the socket */
function onSecure(this: TlsWithState): void {
  const st = this[kState]!;
  if (st.settled) return;
  st.secure = true;
  st.settled = true;
  const conn = st.conn;
  conn.deadline = 0;
  conn.onDeadline = null;
  st.filter.record(conn, 'forwarded', st.sni, undefined, this, this.isSessionReused());
}
function onServerError(this: TlsWithState, e: Error & { code?: string }): void {
  const st = this[kState]!;
  if (!st.secure) st.refuse('error', `${e.code ?? 'TLS_HANDSHAKE'}: ${e.message}`);
  st.filter.logger?.debug({ err: e.message }, 'tls interception');
}

interface FilterState {
  secrets: TlsSecrets;
  record(conn: ProxyConnection, verdict: TlsAccessRecord['verdict'], sni: string | undefined, reason?: string, server?: tls.TLSSocket, resumed?: boolean): void;
  logger?: { debug(o: unknown, m?: string): void } | undefined;
}

export function createInterceptFilter(opts: InterceptOptions): NetworkFilter<ProxyConnection> {
  // Peers of a TLS port without terminatingTLS for them (e.g. another selector's serverNames-only
  // rule on the same port): decided by SNI and passed through, as on the tls slot.
  const sniFilter = createSniFilter({ onRecord: opts.onRecord, ...(opts.proxyPort ? { proxyPort: opts.proxyPort } : {}) });
  const passthrough = new WeakSet<ProxyConnection>();
  const hellos = new WeakMap<ProxyConnection, Interception>();
  // one object per record, optional fields set when present (a record per intercepted connection:
  // no spread temporaries)
  const record = (conn: ProxyConnection, verdict: TlsAccessRecord['verdict'], sni: string | undefined, reason?: string, server?: tls.TLSSocket, resumed?: boolean) => {
    const r: TlsAccessRecord = {
      l7: 'tls', verdict, direction: conn.direction, timeMs: Date.now(), client: conn.client, server: conn.server, endpointId: conn.endpoint?.id ?? 0, intercepted: true,
    };
    if (sni) r.sni = sni;
    if (reason) r.reason = reason;
    if (opts.proxyPort) r.proxyPort = opts.proxyPort;
    if (server) {
      const version = versionText(server.getProtocol());
      if (version) r.version = version;
      if (server.alpnProtocol === 'http/1.1') r.alpn = ALPN_HTTP1_NAMES;
      else if (server.alpnProtocol) r.alpn = [server.alpnProtocol];
    }
    if (resumed) r.resumed = true;
    try {
      opts.onRecord(r);
    } catch { /* the access log never breaks the proxy */ }
  };
  const filterState: FilterState = { secrets: opts.secrets, record, logger: opts.logger };
  return {
    name: 'tls.intercept',
    onData(conn, chunk) {
      if (passthrough.has(conn)) return sniFilter.onData!(conn, chunk);
      const st = hellos.get(conn);
      if (!st) return 'continue';
      // after the ClientHello: the TLS socket's plaintext, for the HTTP proxy
      if (st.server) return 'continue';
      st.onHello(chunk);
      return 'stop';
    },
    onNewConnection(conn) {
      const entry = interceptionEntry(conn);
      if (!entry) {
        if (!isTlsPort(conn)) return 'continue';
        passthrough.add(conn);
        return sniFilter.onNewConnection!(conn);
      }
      const st = new Interception(filterState, conn, entry);
      hellos.set(conn, st);
      // checked by the proxy's sweep (no timer per connection); cleared once the handshake is done
      conn.deadline = Date.now() + (opts.handshakeTimeoutMs ?? 10_000);
      conn.onDeadline = st.onDeadline;
      // A client that closes before the handshake ends: decided now, so nothing (the connection,
      // its sockets) waits for the deadline. The accepted socket's close is the TLS socket's too.
      conn.sock.once('close', st.onClose);
      return 'continue';
    },
  };
}
