import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import koffi from 'koffi';
import { createHttpProxy } from '../../../../src/proxy/http/proxy.ts';
import type { ProxyConnection } from '../../../../src/proxy/http/connection.ts';

const libc = koffi.load('libc.so.6');
const getsockopt = libc.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)');
const IPPROTO_TCP = 6, TCP_NODELAY = 1;

function noDelay(fd: number): number {
  const v = Buffer.alloc(4), len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  assert.equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, v, len), 0);
  return v.readInt32LE();
}

const policy = {
  endpointByIp: () => ({ id: 1, identity: 1, namespace: '', pod: '', labels: [] }),
  identityOf: () => 2,
  lookup: () => ({ verdict: 'redirect' as const, l7: null }),
  revision: () => 0,
};

// Responses go out without Nagle's wait for the client's ACK of the one before (keep-alive,
// pipelining): the listener carries TCP_NODELAY and each accepted socket inherits it.
test('accepted client sockets have TCP_NODELAY, IPv4 and IPv6 listeners', async () => {
  const p = createHttpProxy({ policy, ipv6: true, listen: { egress: { host: '127.0.0.1', port: 0 } }, upstreamOverride: { host: '127.0.0.1', port: 1 } });
  const clients: net.Socket[] = [];
  try {
    const l = await p.start();
    for (const [host, port] of [['127.0.0.1', l.egress!.port], ['::1', l.egress!.ipv6!.port]] as const) {
      const c = net.connect({ host, port });
      clients.push(c);
      await new Promise<void>((r, j) => { c.once('connect', r); c.once('error', j); });
      // the proxy's side of it
      let conn: ProxyConnection | undefined;
      for (let i = 0; i < 100 && !conn; i++) {
        conn = [...p.conns].find((x) => x.client.port === c.localPort);
        if (!conn) await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(conn, `the proxy accepted the ${host} connection`);
      const fd = (conn.sock as unknown as { _handle: { fd: number } })._handle.fd;
      assert.ok(fd >= 0);
      assert.equal(noDelay(fd), 1, `TCP_NODELAY on the socket accepted from ${host}`);
    }
  } finally {
    for (const c of clients) c.destroy();
    await p.stop();
  }
});
