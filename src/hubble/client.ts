/**
 * Client side of the Hubble API: a gRPC transport to a hubble server given as
 * `unix:///path`, a bare socket path, `host:port` or `http://host:port`.
 */
import { connect as netConnect } from 'node:net';
import { existsSync } from 'node:fs';
import { createClient, type Client, type Transport } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { MembraneError } from '../common/errors.ts';
import { Observer } from './gen/observer/observer_pb.js';
import { Health } from './gen/grpc/health/v1/health_pb.js';

export type ServerTarget = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export function parseServer(server: string): ServerTarget {
  if (server.startsWith('unix://')) return { kind: 'unix', path: server.slice('unix://'.length) };
  if (server.startsWith('/') || server.startsWith('.')) return { kind: 'unix', path: server };
  if (server.startsWith('tls://') || server.startsWith('https://')) {
    throw new MembraneError('HUBBLE_TLS_UNSUPPORTED', `TLS connections to hubble are not supported yet: ${server}`, { hint: 'use the unix socket or a plaintext host:port' });
  }
  const rest = server.replace(/^(http|grpc|dns):\/\/\/?/, '');
  const m = rest.match(/^\[?([^\]]*?)\]?:(\d+)$/);
  if (!m) throw new MembraneError('HUBBLE_BAD_SERVER', `invalid hubble server address "${server}"`, { hint: 'use unix:///path/to/hubble.sock or host:port' });
  return { kind: 'tcp', host: m[1] || 'localhost', port: Number(m[2]) };
}

export function formatTarget(t: ServerTarget): string {
  return t.kind === 'unix' ? `unix://${t.path}` : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

export function hubbleTransport(t: ServerTarget): Transport {
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
  return createGrpcTransport({ baseUrl: `http://${host}:${t.port}` });
}

export function observerClient(t: ServerTarget): Client<typeof Observer> {
  return createClient(Observer, hubbleTransport(t));
}

export function healthClient(t: ServerTarget): Client<typeof Health> {
  return createClient(Health, hubbleTransport(t));
}
