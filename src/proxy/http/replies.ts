/**
 * What the proxy writes to the client itself: local replies in Envoy's shape (Cilium's 403 is
 * `Access denied\r\n`), and a response head rewritten to close the client connection.
 */
import type { MessageHead } from './parser.ts';
import { withoutConnection } from './head-rewrite.ts';

export const DENIED_BODY = 'Access denied\r\n';

export const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout', 413: 'Payload Too Large', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 505: 'HTTP Version Not Supported',
};

let dateCache = '';
let dateAt = 0;
function httpDate(): string {
  const now = Date.now();
  if (now - dateAt >= 1000) {
    dateAt = now - (now % 1000);
    dateCache = new Date(dateAt).toUTCString();
  }
  return dateCache;
}

/** A local reply in Envoy's shape (Cilium's 403 is `Access denied\r\n`, text/plain). */
export function localReply(status: number, body: string, close: boolean, contentType = 'text/plain', extra: readonly string[] = []): Buffer {
  let fields = '';
  for (let i = 0; i + 1 < extra.length; i += 2) fields += `${extra[i]}: ${extra[i + 1]}\r\n`;
  return Buffer.from(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncontent-type: ${contentType}\r\n` +
    `${fields}date: ${httpDate()}\r\nserver: envoy\r\n${close ? 'connection: close\r\n' : ''}\r\n${body}`, contentType === 'text/plain' ? 'latin1' : 'utf8');
}

/** The field a closing response head ends with (closingResponseHead, or after the head as received). */
export const CLOSE_FIELD = Buffer.from('connection: close\r\n\r\n', 'latin1');

/** Whether a head names hop-by-hop connection fields (Connection, Keep-Alive, Proxy-Connection). */
export function hasConnectionFields(headers: readonly string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!;
    // only names of those lengths are lower-cased (no new string for the rest)
    if ((n.length === 10 || n.length === 16) && /^(connection|keep-alive|proxy-connection)$/i.test(n)) return true;
  }
  return false;
}

/** The response head with `connection: close` (the client asked to close; the upstream stays open). */
export function closingResponseHead(h: MessageHead): Buffer {
  let s = `${h.version} ${h.status} ${h.reason}\r\n`;
  const hs = withoutConnection(h.headers);
  for (let i = 0; i < hs.length; i += 2) s += `${hs[i]}: ${hs[i + 1]}\r\n`;
  return Buffer.from(`${s}connection: close\r\n\r\n`, 'latin1');
}
