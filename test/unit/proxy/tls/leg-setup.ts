/**
 * An intercepting proxy whose client side is a TLS leg (terminatingTLS only: the upstream is
 * plain HTTP) in front of a plain origin that answers each request with the SHA-256 of its body
 * (byte for byte checks), can stall its reads, and answers `x-size: n` with a body of n bytes.
 * Shared by leg-attacks.test.ts and its child process (leg-churn-child.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import { createHash } from 'node:crypto';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { redirectingProxy } from '../http/harness.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import type { HttpAccessRecord, TlsAccessRecord } from '../../../../src/common/access-log.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { opensslCA } from './helpers.ts';

export interface LegSetup {
  proxy: HttpProxy;
  port: number;
  ca: string;
  tlsRecords: TlsAccessRecord[];
  httpRecords: HttpAccessRecord[];
  origin: PlainOrigin;
  close(): Promise<void>;
}

export interface PlainOrigin {
  port: number;
  /** while true, the origin reads nothing (the proxy's writes to it back up) */
  stall(on: boolean): void;
  /** request lines answered */
  lines: string[];
  close(): Promise<void>;
}

/** A plain HTTP/1.1 origin: content-length bodies, answered 200 with the body's SHA-256 (hex), or a body of `x-size` bytes. */
export async function plainOrigin(): Promise<PlainOrigin> {
  const socks = new Set<net.Socket>();
  const lines: string[] = [];
  let stalled = false;
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => {});
    if (stalled) s.pause();
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.subarray(end + 4, end + 4 + len);
        buf = buf.subarray(end + 4 + len);
        lines.push(head.slice(0, head.indexOf('\r\n')));
        const size = /\r\nx-size: *(\d+)/i.exec(head);
        const out = size ? Buffer.alloc(Number(size[1]), 0x61) : Buffer.from(createHash('sha256').update(body).digest('hex'));
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${out.length}\r\n\r\n`);
        s.write(out);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    lines,
    stall(on) {
      stalled = on;
      for (const s of socks) if (on) s.pause(); else s.resume();
    },
    close: () => new Promise<void>((r) => { for (const s of socks) s.destroy(); srv.close(() => r()); }),
  };
}

export const NAME = 'api.example.test';

export async function legSetup(opts: { handshakeTimeoutMs?: number } = {}): Promise<LegSetup> {
  const ca = opensslCA('leg interception CA');
  const secrets = new TlsSecrets();
  secrets.set('default', 'intercept', { 'tls.crt': ca.cert, 'tls.key': ca.key });
  const policy: L7Policy = {
    parser: 'http',
    perSelector: [{
      selector: 's', identities: 'all', origins: [],
      http: [{ method: 'POST', path: '/up' }, { method: 'GET', path: '/get' }],
      terminatingTLS: { secret: { name: 'intercept' } },
    }],
  };
  const origin = await plainOrigin();
  const tlsRecords: TlsAccessRecord[] = [];
  const httpRecords: HttpAccessRecord[] = [];
  const proxy = redirectingProxy(origin.port, policy, {
    onRecord: (r) => httpRecords.push(r),
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: (r) => tlsRecords.push(r), ...(opts.handshakeTimeoutMs ? { handshakeTimeoutMs: opts.handshakeTimeoutMs } : {}) })); },
  });
  const port = (await proxy.start()).egress!.port;
  return {
    proxy, port, ca: ca.cert, tlsRecords, httpRecords, origin,
    close: async () => { await proxy.stop(); await origin.close(); },
  };
}

/** A verified TLS connection to the proxy for `name` (trusting only the interception CA). */
export function connectTls(s: LegSetup, name = NAME, extra: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port: s.port, servername: name, ca: s.ca, ...extra }, () => resolve(c));
    c.once('error', reject);
  });
}

/** until `f()` or `ms` passed; its last value */
export async function until<T>(f: () => T, ms = 3000): Promise<T> {
  const t0 = Date.now();
  let v = f();
  while (!v && Date.now() - t0 < ms) {
    await new Promise((r) => setTimeout(r, 10));
    v = f();
  }
  return v;
}
