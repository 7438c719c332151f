/**
 * The HTTP proxy's IPv6 listener (enable-ipv6): beside the IPv4 listener, on ::1 and the same
 * port, judged by the same chain; the accepted socket's local address is the original
 * destination, so the records carry IPv6 addresses. Without `ipv6` there is no IPv6 listener.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { createHttpProxy } from '../../../../src/proxy/http/proxy.ts';
import type { HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { l7 } from './harness.ts';

function get(host: string, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
    req.on('error', reject);
  });
}

test('with ipv6 the proxy listens on ::1 too (same port), judges IPv6 connections and records their IPv6 ends; without it, IPv4 only', async () => {
  const upstream = http.createServer((req, res) => res.end(`${req.url}`));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const records: HttpAccessRecord[] = [];
  const mk = (ipv6: boolean) => createHttpProxy({
    policy: {
      endpointByIp: (ip) => (ip === '::1' || ip === '127.0.0.1' ? { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: [] } : undefined),
      identityOf: () => 2,
      lookup: () => ({ verdict: 'redirect', l7: l7([{ method: 'GET', path: '/public' }]) }),
      revision: () => 1,
    },
    onRecord: (r) => records.push(r),
    listen: { egress: { host: '127.0.0.1', port: 0 } },
    upstreamOverride: { host: '127.0.0.1', port: (upstream.address() as net.AddressInfo).port },
    ipv6,
  });
  const proxy = mk(true), plain = mk(false);
  try {
    const l = await proxy.start();
    assert.deepEqual([l.egress?.ipv6?.host, l.egress?.ipv6?.port], ['::1', l.egress!.port], 'the IPv6 listener: ::1, the IPv4 one\'s port');
    assert.ok(l.egress!.ipv6!.fd > 0 && l.egress!.ipv6!.fd !== l.egress!.fd, 'its own socket (its own sockmap slot)');
    assert.equal(await get('::1', l.egress!.port, '/public'), 200);
    assert.equal(await get('::1', l.egress!.port, '/private'), 403, 'the same L7 policy over IPv6');
    assert.equal(await get('127.0.0.1', l.egress!.port, '/private'), 403, 'and over IPv4');
    const v6 = records.filter((r) => r.type === 'request' && r.client.ip === '::1');
    assert.equal(v6.length, 2, JSON.stringify(records.map((r) => [r.type, r.client.ip])));
    assert.ok(v6.every((r) => r.server.ip === '::1'), 'the original destination is the accepted socket\'s IPv6 local address');
    const p = (await plain.start()).egress!;
    assert.equal(p.ipv6, undefined, 'no IPv6 listener without ipv6');
    await assert.rejects(get('::1', p.port, '/public'), /ECONNREFUSED/);
  } finally {
    await proxy.stop();
    await plain.stop();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
  }
});
