/**
 * The feed socket's framing: one JSON message per line, both ways. Agent → proxy: snapshots and
 * requests; proxy → agent: hello, acks, access records, status and replies.
 */
import type { Socket } from 'node:net';
import type { AccessLogRecord, AccessPeer, AccessVerdict, HttpAccessRecord } from '../../common/access-log.ts';
import type { IpcacheDelta, ProxySnapshot } from './snapshot.ts';

export interface ProxyStatusRow { name: string; port: number; state: string }

/**
 * An allowed DNS answer's IPs, reported by the DNS proxy to the agent (Cilium's standalone DNS
 * proxy: the FQDN → IP mapping the agent's name manager turns into identities and map writes).
 * `id` > 0: the proxy holds the answer until the agent says `dns-done` for it; 0: sent already.
 */
export interface DnsAnswerReport { id: number; ep: number; name: string; ips: string[]; ttl: number }

export type ProxyRequest = 'ai-usage' | 'metrics' | 'dns-stats';

export type ToProxy =
  | { t: 'snapshot'; seq: number; snap: ProxySnapshot }
  | ({ t: 'ipcache'; seq: number } & IpcacheDelta)
  | { t: 'req'; id: number; what: ProxyRequest }
  /** the datapath (and this proxy's snapshot, sent before) has these reports' IPs */
  | { t: 'dns-done'; ids: number[] };

export type ToAgent =
  | { t: 'hello'; pid: number }
  | { t: 'ack'; seq: number }
  | { t: 'records'; items: (AccessLogRecord | WireHttpRecord)[]; peers?: AccessPeer[]; lost?: number }
  | { t: 'dns-answers'; items: DnsAnswerReport[] }
  | { t: 'status'; rows: ProxyStatusRow[] }
  | { t: 'res'; id: number; ok: boolean; body?: unknown; error?: string };

/** Largest line accepted (a snapshot of a big node is a few MB; a line past this ends the connection). */
const MAX_LINE = 64 * 1024 * 1024;

/** Calls `onMessage` per line; a line that is not JSON or too long closes the socket. */
export function readLines<T>(sock: Socket, onMessage: (m: T) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let m: T;
      try { m = JSON.parse(line) as T; } catch { sock.destroy(); return; }
      onMessage(m);
    }
    if (buf.length > MAX_LINE) sock.destroy();
  });
}

export function send(sock: Socket, m: ToProxy | ToAgent): boolean {
  if (sock.destroyed) return false;
  return sock.write(`${JSON.stringify(m)}\n`);
}

/** Where a node's agent serves the feed, and the proxy process's own files, in the node's state directory. */
export function proxyFiles(nodeDir: string): { feed: string; pid: string; log: string; supervisor: string } {
  return { feed: `${nodeDir}/l7proxy.sock`, pid: `${nodeDir}/l7proxy.pid`, log: `${nodeDir}/l7proxy.log`, supervisor: `${nodeDir}/l7proxy-supervisor.json` };
}

/**
 * An HTTP access record without the optional fields (the record of nearly every request and
 * response) on the wire: its values by position, its client and server by index into the
 * message's `peers` (a connection's records share the same two). Against the record as a JSON
 * object: 193 bytes instead of 456 for a plain GET and its 200, and per record ~0.5 us instead
 * of ~1.3 us to encode, ~0.6 us instead of ~1.5 us to read back (thread CPU, 128 a message).
 * Any other record goes as the object it is.
 */
export type WireHttpRecord = [
  type: 0 | 1, verdict: AccessVerdict, direction: 0 | 1, timeMs: number, client: number, server: number, endpointId: number,
  method: string, url: string, host: string, path: string, protocol: string, headers: readonly string[], code: number, latencyNs: number,
  requestTimeMs: number,
];

/** The `records` message of a batch of access records. */
export function recordsMessage(items: readonly AccessLogRecord[], lost: number): Extract<ToAgent, { t: 'records' }> {
  const peers: AccessPeer[] = [];
  const index = new Map<AccessPeer, number>();
  const peer = (p: AccessPeer) => {
    let i = index.get(p);
    if (i === undefined) { i = peers.length; index.set(p, i); peers.push(p); }
    return i;
  };
  const out: (AccessLogRecord | WireHttpRecord)[] = new Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const r = items[i]!;
    out[i] = r.l7 === 'http' && r.traceId === undefined && r.parentSpanId === undefined && r.reason === undefined && r.headerActions === undefined && r.tls === undefined && r.ai === undefined
      ? [r.type === 'request' ? 0 : 1, r.verdict, r.direction === 'egress' ? 0 : 1, r.timeMs, peer(r.client), peer(r.server), r.endpointId,
        r.method, r.url, r.host, r.path, r.protocol, r.headers, r.code, r.latencyNs, r.requestTimeMs ?? -1]
      : r;
  }
  return lost ? { t: 'records', items: out, peers, lost } : { t: 'records', items: out, peers };
}

/** The access records of a `records` message (objects, as the proxy made them). */
export function recordsOf(m: Extract<ToAgent, { t: 'records' }>): AccessLogRecord[] {
  const peers = m.peers ?? [];
  return m.items.map((w): AccessLogRecord => {
    if (!Array.isArray(w)) return w;
    const client = peers[w[4]], server = peers[w[5]];
    if (!client || !server) throw new Error(`records message: peer ${w[4]} or ${w[5]} not in its ${peers.length} peers`);
    const rec: HttpAccessRecord = {
      l7: 'http', type: w[0] === 0 ? 'request' : 'response', verdict: w[1], direction: w[2] === 0 ? 'egress' : 'ingress', timeMs: w[3],
      client, server, endpointId: w[6], method: w[7], url: w[8], host: w[9], path: w[10], protocol: w[11], headers: w[12], code: w[13], latencyNs: w[14],
    };
    if (w[15] >= 0) rec.requestTimeMs = w[15];
    return rec;
  });
}
