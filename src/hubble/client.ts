/**
 * Client side of the Hubble API: a gRPC transport to a hubble server given as
 * `unix:///path`, a bare socket path, `host:port`, `http://host:port` or `tls://host:port`
 * (TLS also when TLS options are given, as the hubble CLI's --tls and --tls-* flags).
 */
import { connect as netConnect } from 'node:net';
import { existsSync } from 'node:fs';
import { createClient, type Client, type Transport } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { MembraneError } from '../common/errors.ts';
import { Observer } from './gen/observer/observer_pb.js';
import { Health } from './gen/grpc/health/v1/health_pb.js';
import { clientTlsOptions, type HubbleClientTlsFiles } from './tls.ts';

export type ServerTarget = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number; tls?: boolean };
export type { HubbleClientTlsFiles } from './tls.ts';

export function parseServer(server: string): ServerTarget {
  if (server.startsWith('unix://')) return { kind: 'unix', path: server.slice('unix://'.length) };
  if (server.startsWith('/') || server.startsWith('.')) return { kind: 'unix', path: server };
  const tls = server.startsWith('tls://') || server.startsWith('https://');
  const rest = server.replace(/^(http|https|tls|grpc|dns):\/\/\/?/, '');
  const m = rest.match(/^\[?([^\]]*?)\]?:(\d+)$/);
  if (!m) throw new MembraneError('HUBBLE_BAD_SERVER', `invalid hubble server address "${server}"`, { hint: 'use unix:///path/to/hubble.sock or host:port' });
  return { kind: 'tcp', host: m[1] || 'localhost', port: Number(m[2]), ...(tls ? { tls } : {}) };
}

export function formatTarget(t: ServerTarget): string {
  return t.kind === 'unix' ? `unix://${t.path}` : `${t.tls ? 'tls://' : ''}${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** `tls` (any of its fields, or the target's tls://) makes the TCP connection TLS; a unix socket takes none. */
export function hubbleTransport(t: ServerTarget, tls?: HubbleClientTlsFiles & { enabled?: boolean }): Transport {
  const wantTls = t.kind === 'tcp' && (t.tls || tls?.enabled || !!(tls?.caFiles?.length || tls?.certFile || tls?.keyFile || tls?.serverName));
  if (t.kind === 'unix' && tls && (tls.enabled || tls.caFiles?.length || tls.certFile || tls.keyFile || tls.serverName)) {
    throw new MembraneError('HUBBLE_TLS_UNIX', `TLS options do not apply to the unix socket ${t.path}`, { hint: 'TLS is for host:port (4244); the socket is root-only instead' });
  }
  if (t.kind === 'unix') {
    if (!existsSync(t.path)) {
      throw new MembraneError('HUBBLE_UNAVAILABLE', `no hubble server at unix://${t.path} (socket does not exist)`, {
        hint: 'is the lab up? run `membrane up` (or pass --server / --node)',
      });
    }
    const path = t.path;
    return createGrpcTransport({ baseUrl: 'http://localhost', nodeOptions: { createConnection: () => netConnect(path) } });
  }
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  if (wantTls) return createGrpcTransport({ baseUrl: `https://${host}:${t.port}`, nodeOptions: clientTlsOptions(tls ?? {}) });
  return createGrpcTransport({ baseUrl: `http://${host}:${t.port}` });
}

export function observerClient(t: ServerTarget, tls?: HubbleClientTlsFiles & { enabled?: boolean }): Client<typeof Observer> {
  return createClient(Observer, hubbleTransport(t, tls));
}

export function healthClient(t: ServerTarget, tls?: HubbleClientTlsFiles & { enabled?: boolean }): Client<typeof Health> {
  return createClient(Health, hubbleTransport(t, tls));
}
