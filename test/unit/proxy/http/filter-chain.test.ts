import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import net from 'node:net';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { FilterChain } from '../../../../src/proxy/filter-chain.ts';
import { rawExchange } from './harness.ts';

test('FilterChain: filters run in order; stop ends the chain', () => {
  const seen: string[] = [];
  const c = new FilterChain<string, string>()
    .addHttp({ name: 'a', decodeHeaders: (s) => { seen.push(`a:${s}`); return 'continue'; } })
    .addHttp({ name: 'b', decodeHeaders: (s) => { seen.push(`b:${s}`); return s === 'stop' ? 'stop' : 'continue'; } })
    .addHttp({ name: 'c', decodeHeaders: (s) => { seen.push(`c:${s}`); return 'continue'; } });
  assert.equal(c.decodeHeaders('go'), 'continue');
  assert.equal(c.decodeHeaders('stop'), 'stop');
  assert.deepEqual(seen, ['a:go', 'b:go', 'c:go', 'a:stop', 'b:stop']);
});

async function upstream(): Promise<{ port: number; close(): void; seen: http.IncomingHttpHeaders[] }> {
  const seen: http.IncomingHttpHeaders[] = [];
  const srv = http.createServer((req, res) => { seen.push(req.headers); req.resume(); res.end(`${req.method} ${req.url}`); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => { srv.closeAllConnections(); srv.close(); }, seen };
}

const policy = {
  endpointByIp: () => ({ id: 1, identity: 1, namespace: '', pod: '', labels: [] }),
  identityOf: () => 2,
  lookup: () => ({ verdict: 'redirect' as const, l7: { parser: 'http' as const, perSelector: [{ selector: 's', identities: 'all' as const, origins: [], http: [{ path: '/allowed.*' }] }] } }),
  revision: () => 0,
};

test('http filters plug in after the L7 policy: one rewrites the request, one answers locally and stops', async () => {
  const up = await upstream();
  const p = createHttpProxy({
    policy, listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: up.port },
    configure(chain) {
      chain.addHttp({ name: 'tag', decodeHeaders: (s) => { s.setHeaders([...s.head.headers, 'X-Filtered', 'yes']); return 'continue'; } });
      chain.addHttp({ name: 'teapot', decodeHeaders: (s) => { if (s.path === '/allowed/teapot') { s.reply(418, 'short and stout\r\n', 'teapot'); return 'stop'; } return 'continue'; } });
    },
  });
  try {
    const l = await p.start();
    const r = await rawExchange(l.egress!.port, 'GET /allowed HTTP/1.1\r\nHost: a\r\n\r\nGET /allowed/teapot HTTP/1.1\r\nHost: a\r\n\r\nGET /denied HTTP/1.1\r\nHost: a\r\n\r\n', { idleMs: 2000 });
    assert.deepEqual([...r.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ['200', '418', '403']);
    assert.equal(up.seen.length, 1);
    assert.equal(up.seen[0]!['x-filtered'], 'yes');
  } finally {
    // a failed assertion must not leave the servers open (the test process would never end)
    await p.stop();
    up.close();
  }
});

test('a network filter terminates TLS and adopts the TLS stream: HTTP policy applies inside (interception)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=api.example'], { stdio: 'ignore' });
  const key = readFileSync(join(dir, 'k.pem'));
  const cert = readFileSync(join(dir, 'c.pem'));
  rmSync(dir, { recursive: true, force: true });
  const up = await upstream();
  const p = createHttpProxy({
    policy, listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: up.port },
    configure(chain) {
      chain.addNetwork({
        name: 'tls-terminate',
        onNewConnection(conn) {
          conn.adopt(new tls.TLSSocket(conn.sock as net.Socket, { isServer: true, key, cert }));
          return 'continue';
        },
      });
    },
  });
  const l = await p.start();
  const text = await new Promise<string>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: l.egress!.port, rejectUnauthorized: false, servername: 'api.example' }, () => {
      s.write('GET /allowed/x HTTP/1.1\r\nHost: api.example\r\n\r\nGET /secret HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n');
    });
    const cs: Buffer[] = [];
    s.on('data', (c: Buffer) => cs.push(c));
    s.on('end', () => resolve(Buffer.concat(cs).toString()));
    s.on('error', () => resolve(Buffer.concat(cs).toString()));
  });
  assert.deepEqual([...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ['200', '403']);
  assert.match(text, /GET \/allowed\/x/);
  await p.stop();
  up.close();
});
