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
