/**
 * A proxy on loopback with a fixed upstream (no datapath): the policy source answers with one
 * L7 policy for every connection, records are collected.
 */
import net from 'node:net';
import http from 'node:http';
import { createHttpProxy, type HttpProxy, type HttpProxyOptions } from '../../../../src/proxy/http/proxy.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import type { PortRuleHTTP } from '../../../../src/api/types.ts';

export function l7(rules: PortRuleHTTP[] | null, identities: ReadonlySet<number> | 'all' = 'all'): L7Policy {
  return { parser: 'http', perSelector: [{ selector: 'test', identities, http: rules, origins: [] }] };
}

/**
 * A proxy on loopback's egress listener that forwards every request (no L7 rules) to the origin on
 * loopback port `upstreamPort`: for the tests that bring an origin of their own.
 */
export function forwardingProxy(upstreamPort: number, extra: Partial<HttpProxyOptions> = {}): HttpProxy {
  return createHttpProxy({
    policy: { endpointByIp: () => ({ id: 1, identity: 1, namespace: '', pod: '', labels: [] }), identityOf: () => 2, lookup: () => ({ verdict: 'forward', l7: null }), revision: () => 0 },
    listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: upstreamPort },
    ...extra,
  });
}

/**
 * A proxy on loopback's egress listener where every connection is the client pod (identity 1000)
 * to identity 2000 with `policy` on egress (a function: read per lookup, for tests that change
 * it; `revision` then says when), upstreams on loopback port `upstreamPort`.
 */
export function redirectingProxy(
  upstreamPort: number, policy: L7Policy | (() => L7Policy),
  extra: Partial<HttpProxyOptions> & { revision?: () => number } = {},
): HttpProxy {
  const current = typeof policy === 'function' ? policy : () => policy;
  const { revision = () => 0, ...rest } = extra;
  return createHttpProxy({
    policy: {
      endpointByIp: () => ({ id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: [] }),
      identityOf: () => 2000,
      lookup: (_ep, dir) => (dir === 'egress' ? { verdict: 'redirect', l7: current() } : { verdict: 'forward', l7: null }),
      revision,
    },
    listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: upstreamPort },
    ...rest,
  });
}

/**
 * Runs `fn` with an origin and a started proxy in front of it (`proxyOf` the origin's port), then
 * stops the proxy and closes the origin, also when `fn` (or the start) fails.
 */
export async function withProxy<O extends { port: number; close(): Promise<void> }>(
  origin: Promise<O>, proxyOf: (originPort: number) => HttpProxy, fn: (o: O, p: HttpProxy, port: number) => Promise<void>,
): Promise<void> {
  const o = await origin;
  try {
    const p = proxyOf(o.port);
    try {
      const l = await p.start();
      await fn(o, p, l.egress!.port);
    } finally {
      await p.stop();
    }
  } finally {
    await o.close();
  }
}

/** A request head (and body, by its content-length) at the start of `buf`, as a scripted origin reads it; undefined until it is all there. */
export function takeRequest(buf: string): { line: string; headers: Map<string, string>; body: string; rest: string } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.slice(0, end).split('\r\n');
  const headers = new Map<string, string>();
  for (const l of lines.slice(1)) headers.set(l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim());
  const len = Number(headers.get('content-length') ?? 0);
  if (buf.length < end + 4 + len) return undefined;
  return { line: lines[0]!, headers, body: buf.slice(end + 4, end + 4 + len), rest: buf.slice(end + 4 + len) };
}

export interface Harness {
  proxy: HttpProxy;
  port: number;
  upstreamPort: number;
  records: HttpAccessRecord[];
  setPolicy(p: L7Policy | null): void;
  upstreamRequests: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  upstreamConnections(): number;
  /** request body bytes the upstream has read so far, all requests together (counted as they arrive) */
  upstreamBodyBytes(): number;
  close(): Promise<void>;
}

export async function startHarness(opts: { headerTimeoutMs?: number; maxHeadBytes?: number } = {}): Promise<Harness> {
  const upstreamRequests: Harness['upstreamRequests'] = [];
  let bodyBytes = 0;
  const upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => { chunks.push(c); bodyBytes += c.length; });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      upstreamRequests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part1-');
        setTimeout(() => res.end('part2'), 20);
        return;
      }
      if (req.url?.startsWith('/slow')) {
        setTimeout(() => res.end(`slow ${req.url}`), 50);
        return;
      }
      res.setHeader('content-type', 'text/plain');
      res.end(`${req.method} ${req.url} ${body.length}`);
    });
  });
  upstream.keepAliveTimeout = 30_000;
  let conns = 0;
  upstream.on('connection', () => conns++);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  let policy: L7Policy | null = l7(null);
  let rev = 0;
  const records: HttpAccessRecord[] = [];
  const proxy = createHttpProxy({
    policy: {
      endpointByIp: () => ({ id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: [] }),
      identityOf: () => 2000,
      lookup: (_ep, dir) => (dir === 'ingress' ? { verdict: 'forward', l7: null } : policy ? { verdict: 'redirect', l7: policy } : { verdict: 'drop', l7: null }),
      revision: () => rev,
    },
    onRecord: (r) => records.push(r),
    listen: { egress: { host: '127.0.0.1', port: 0 } },
    upstreamOverride: { host: '127.0.0.1', port: upstreamPort },
    ...opts,
  });
  const l = await proxy.start();
  return {
    proxy, port: l.egress!.port, upstreamPort, records, upstreamRequests, upstreamConnections: () => conns, upstreamBodyBytes: () => bodyBytes,
    setPolicy(p) { policy = p; rev++; },
    async close() {
      await proxy.stop();
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream.close(() => r()));
    },
  };
}

/** Sends raw bytes, collects everything until the server closes or `idleMs` passes without data. */
export function rawExchange(port: number, payload: string | Buffer | (string | Buffer)[], opts: { idleMs?: number; gapMs?: number } = {}): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout;
    let closed = false;
    const done = () => { clearTimeout(timer); s.destroy(); resolve({ text: Buffer.concat(chunks).toString('latin1'), closed }); };
    // quiet for idleMs ends the exchange; before the first byte the wait is longer (a cold proxy
    // on a loaded machine may take a few hundred ms to answer at all)
    const arm = () => { clearTimeout(timer); timer = setTimeout(done, chunks.length ? opts.idleMs ?? 400 : Math.max(opts.idleMs ?? 400, 2000)); };
    s.on('data', (c) => { chunks.push(c); arm(); });
    s.on('end', () => { closed = true; done(); });
    s.on('error', () => { closed = true; done(); });
    s.on('connect', async () => {
      const parts = Array.isArray(payload) ? payload : [payload];
      for (const p of parts) {
        s.write(p);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      arm();
    });
  });
}
