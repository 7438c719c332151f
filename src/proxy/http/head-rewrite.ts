/**
 * Rewrites of a judged request head before it goes upstream (hop-by-hop and upgrade headers, the
 * Host of an absolute-form target), and the upgrades refused before any filter (Envoy's
 * `upgrade_failed`, README.md "Upgrades, CONNECT and the upstream pool").
 */
import type { MessageHead } from './parser.ts';

export function without(headers: readonly string[], names: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (!names.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  return out;
}

/**
 * An h2c upgrade request as Envoy's HTTP/1 codec passes it on: without Upgrade, HTTP2-Settings
 * and the `upgrade` / `http2-settings` Connection options (an empty Connection is dropped).
 */
export function withoutH2cUpgrade(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase();
    if (n === 'upgrade' || n === 'http2-settings') continue;
    if (n === 'connection') {
      const v = headers[i + 1]!.split(',').map((t) => t.trim()).filter((t) => t && !/^(upgrade|http2-settings)$/i.test(t)).join(', ');
      if (v) out.push(headers[i]!, v);
      continue;
    }
    out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

/**
 * Why an upgrade request is refused before the filters: Cilium's listener configures
 * `upgrade_configs: [websocket]` only, and Envoy answers any other upgrade with 403
 * `upgrade_failed` (h2c never gets here: its upgrade headers are removed first). CONNECT is an
 * upgrade to Envoy whose support is off unless `CONNECT` is in upgrade_configs: 403 as well.
 */
export function upgradeRefusal(head: MessageHead): string | undefined {
  if (head.method === 'CONNECT') return 'upgrade_failed: CONNECT is not allowed';
  if (head.upgrade && head.upgradeType !== 'websocket' && head.upgradeType !== 'h2c') return `upgrade_failed: upgrade "${head.upgradeType.slice(0, 40)}" is not allowed`;
  return undefined;
}

/** The header fields with Host set to `host` (added when absent). */
export function withHost(headers: readonly string[], host: string): string[] {
  const out: string[] = [];
  let seen = false;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === 'host') {
      if (!seen) out.push(headers[i]!, host);
      seen = true;
    } else out.push(headers[i]!, headers[i + 1]!);
  }
  if (!seen) out.unshift('Host', host);
  return out;
}

export function withoutConnection(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase();
    if (n !== 'connection' && n !== 'keep-alive' && n !== 'proxy-connection') out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

/** `connection`, `keep-alive`, `proxy-connection` (lower case, as bytes) */
const HOP_NAMES = ['connection', 'keep-alive', 'proxy-connection'].map((n) => Buffer.from(n, 'latin1'));

/** Whether raw[pos, pos + name.length) is `name` in any case, followed by the colon. */
function namedLine(raw: Buffer, pos: number, name: Buffer): boolean {
  const n = name.length;
  if (raw[pos + n] !== 0x3a) return false;
  // a field name is token characters only (the parser checked): `| 0x20` lower-cases letters and leaves `-` as it is
  for (let k = 0; k < n; k++) if ((raw[pos + k]! | 0x20) !== name[k]) return false;
  return true;
}

/**
 * The head as received without its Connection, Keep-Alive and Proxy-Connection lines, the rest
 * byte for byte: the same fields as `withoutConnection` (the parsed list) gives, without making
 * the head again from strings. For a head the parser accepted: every line ends in CRLF, a field
 * name runs up to the colon (no whitespace before it). Returns `raw` itself when nothing goes.
 */
export function rawWithoutConnection(raw: Buffer): Buffer {
  let pos = raw.indexOf(0x0a) + 1; // past the request line
  let kept: number[] | null = null; // [start, end) pairs of what stays, once a line goes
  let from = 0;
  while (pos < raw.length) {
    const eol = raw.indexOf(0x0a, pos);
    if (eol < 0 || eol === pos + 1) break; // the empty line
    if (namedLine(raw, pos, HOP_NAMES[0]!) || namedLine(raw, pos, HOP_NAMES[1]!) || namedLine(raw, pos, HOP_NAMES[2]!)) {
      (kept ??= []).push(from, pos);
      from = eol + 1;
    }
    pos = eol + 1;
  }
  if (!kept) return raw;
  kept.push(from, raw.length);
  let len = 0;
  for (let i = 0; i < kept.length; i += 2) len += kept[i + 1]! - kept[i]!;
  const out = Buffer.allocUnsafe(len);
  let at = 0;
  for (let i = 0; i < kept.length; i += 2) at += raw.copy(out, at, kept[i]!, kept[i + 1]!);
  return out;
}
