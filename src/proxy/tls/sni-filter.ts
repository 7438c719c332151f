/**
 * TLS SNI enforcement without decryption (`serverNames` without L7 rules, spec/policy.md §3.7):
 * a network filter of the proxy on the `tls` slot. It reads the ClientHello (reassembled across
 * records and segments by ClientHelloReader), decides by server name with decideSNI (Cilium's
 * FQDN wildcard rules) for the connection's MapState entry, then lets the connection through
 * unparsed (`passThrough`: the buffered hello first, then every byte both ways, unchanged).
 *
 * No SNI where names are required, a malformed hello, a name the policy does not allow, or no
 * hello within the timeout ⇒ TCP reset (as Cilium: `Connection reset by peer`) and a DROPPED flow
 * with the name and the reason. The listener, peers, policy lookup and transparent upstream are
 * the HTTP proxy's (one `HttpProxy` instance per slot, src/proxy/http/proxy.ts).
 */
import type { NetworkFilter } from '../filter-chain.ts';
import type { ProxyConnection } from '../http/connection.ts';
import { decideSNI } from '../../policy/l7.ts';
import { ClientHelloReader, tlsVersionName, type ClientHelloInfo } from './clienthello.ts';
import type { TlsAccessRecord } from '../../common/access-log.ts';

export interface SniFilterOptions {
  onRecord(r: TlsAccessRecord): void;
  /** the ClientHello must be complete this long after the connection opened (default 10 s) */
  helloTimeoutMs?: number;
  /** largest ClientHello accepted (default 64 KiB; larger ⇒ TOO_LARGE) */
  maxHelloBytes?: number;
  proxyPort?: number;
}

interface HelloState {
  reader: ClientHelloReader;
  chunks: Buffer[];
  timer: NodeJS.Timeout;
}

/** The SNI decision of a connection's policy (and of its local destination's ingress, when that redirects too). */
export function sniVerdict(conn: ProxyConnection, sni: string | undefined): { allowed: true } | { allowed: false; reason: string } {
  const pol = conn.policy();
  if (pol.verdict === 'drop') return { allowed: false, reason: 'policy: no allow entry for this connection' };
  const check = (l7: NonNullable<typeof pol.l7>, identity: number): string | undefined => {
    if (decideSNI(l7, identity, sni).allowed) return undefined;
    return sni === undefined ? 'policy: no SNI in the ClientHello (serverNames require one)' : 'policy: server name not allowed by policy';
  };
  if (pol.verdict === 'redirect' && pol.l7) {
    const r = check(pol.l7, conn.remoteIdentity);
    if (r) return { allowed: false, reason: r };
  }
  const peer = conn.peerIngress();
  if (peer?.l7 && peer.l7 !== pol.l7) {
    const r = check(peer.l7, conn.client.identity);
    if (r) return { allowed: false, reason: `${r} (destination's ingress)` };
  }
  return { allowed: true };
}

export function createSniFilter(opts: SniFilterOptions): NetworkFilter<ProxyConnection> {
  const states = new WeakMap<ProxyConnection, HelloState>();
  const timeout = opts.helloTimeoutMs ?? 10_000;
  const record = (conn: ProxyConnection, verdict: TlsAccessRecord['verdict'], hello: Partial<ClientHelloInfo> | undefined, reason?: string) => {
    try {
      opts.onRecord({
        l7: 'tls', verdict, direction: conn.direction, timeMs: Date.now(), client: conn.client, server: conn.server, endpointId: conn.endpoint?.id ?? 0,
        ...(hello?.sni ? { sni: hello.sni } : {}),
        ...(hello?.maxVersion ? { version: tlsVersionName(hello.maxVersion) } : {}),
        ...(hello?.alpn?.length ? { alpn: hello.alpn } : {}),
        ...(reason ? { reason } : {}),
        ...(opts.proxyPort ? { proxyPort: opts.proxyPort } : {}),
      });
    } catch { /* the access log never breaks the proxy */ }
  };
  const refuse = (conn: ProxyConnection, st: HelloState | undefined, verdict: 'denied' | 'error', hello: Partial<ClientHelloInfo> | undefined, reason: string) => {
    if (st) clearTimeout(st.timer);
    states.delete(conn);
    record(conn, verdict, hello, reason);
    // Cilium answers a refused server name with a TCP reset
    const s = conn.sock;
    if (!s.destroyed) {
      if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
      else s.destroy();
    }
  };
  return {
    name: 'tls.sni',
    onNewConnection(conn) {
      const st: HelloState = {
        reader: new ClientHelloReader({ maxBytes: opts.maxHelloBytes ?? 64 * 1024 }),
        chunks: [],
        timer: setTimeout(() => {
          if (states.get(conn) === st) refuse(conn, st, 'error', undefined, 'HELLO_TIMEOUT: no complete ClientHello in time');
        }, timeout),
      };
      st.timer.unref();
      states.set(conn, st);
      conn.sock.once('close', () => { clearTimeout(st.timer); states.delete(conn); });
      conn.sock.once('end', () => {
        if (states.get(conn) === st) refuse(conn, st, 'error', undefined, 'TRUNCATED: the client closed before the ClientHello was complete');
      });
      return 'continue';
    },
    onData(conn, chunk) {
      const st = states.get(conn);
      if (!st) return 'stop'; // refused: nothing more is read
      st.chunks.push(chunk);
      const r = st.reader.push(chunk);
      if (r.state === 'need-more') return 'stop';
      if (r.state === 'error') {
        refuse(conn, st, 'error', undefined, `${r.code}: ${r.message}`);
        return 'stop';
      }
      const v = sniVerdict(conn, r.hello.sni);
      if (!v.allowed) {
        refuse(conn, st, 'denied', r.hello, v.reason);
        return 'stop';
      }
      clearTimeout(st.timer);
      states.delete(conn);
      conn.tls = { sni: r.hello.sni ?? '', intercepted: false };
      record(conn, 'forwarded', r.hello);
      conn.passThrough(st.chunks.length === 1 ? st.chunks[0]! : Buffer.concat(st.chunks));
      return 'stop';
    },
  };
}
