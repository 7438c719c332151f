/**
 * The idle upstream pool holds only what it keeps: a key (source, mark, destination) has an entry
 * while a connection idles under it, so keys seen once do not pile up over a long run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { UpstreamPool } from '../../../../src/proxy/http/upstream-pool.ts';

const keys = (p: UpstreamPool) => (p as unknown as { idle: Map<string, net.Socket[]> }).idle.size;

test('sockets the pool refuses (closed, not open) leave no key behind; kept ones do until taken or dropped', async () => {
  const srv = net.createServer((s) => s.on('error', () => {}));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const pool = new UpstreamPool(2, 4000);
  try {
    for (let i = 0; i < 500; i++) {
      const s = new net.Socket();
      s.destroy();
      pool.put(`10.0.${i >> 8}.${i & 255}|0|dst:80`, s);
    }
    assert.equal(keys(pool), 0, 'no key for a socket the pool did not keep');
    // positive control: an open socket is kept under its key, then taken and the key goes
    const open = net.connect(port, '127.0.0.1');
    await new Promise((r) => open.once('connect', r));
    pool.put('k', open);
    assert.equal(keys(pool), 1);
    assert.equal(pool.size, 1);
    assert.equal(pool.take('k'), open);
    assert.equal(keys(pool), 0);
    // beyond maxPerKey: refused and destroyed, the kept ones stay
    const socks = await Promise.all([0, 1, 2].map(() => new Promise<net.Socket>((r) => { const c = net.connect(port, '127.0.0.1', () => r(c)); })));
    for (const c of socks) pool.put('k', c);
    assert.equal(pool.size, 2);
    assert.equal(socks[2]!.destroyed, true);
    open.destroy();
  } finally {
    pool.clear();
    await new Promise((r) => srv.close(r));
  }
});
