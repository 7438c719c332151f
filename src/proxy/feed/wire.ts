/**
 * The feed socket's framing: one JSON message per line, both ways. Agent → proxy: snapshots and
 * requests; proxy → agent: hello, acks, access records, status and replies.
 */
import type { Socket } from 'node:net';
import type { AccessLogRecord } from '../../common/access-log.ts';
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
  | { t: 'records'; items: AccessLogRecord[]; lost?: number }
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
