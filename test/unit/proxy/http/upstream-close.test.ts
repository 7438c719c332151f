/**
 * Upstream connections the server closes (issue 18's soak found them): the proxy closes its side
 * too. An upstream that accepts and closes at once, or closes a kept-alive connection while the
 * client's stays open, left the proxy's socket half-open (CLOSE-WAIT) for good: one file
 * descriptor per request until the process hit EMFILE (a 10-minute soak died of it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rawExchange, forwardingProxy } from './harness.ts';

/** An origin whose accepted connections are counted until they are fully closed (both sides). */
async function origin(onConn: (s: net.Socket) => void): Promise<{ port: number; open(): Promise<number>; accepted(): number; close(): Promise<void> }> {
  let accepted = 0;
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => { accepted++; socks.add(s); s.on('close', () => socks.delete(s)); s.on('error', () => {}); onConn(s); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    accepted: () => accepted,
    open: () => new Promise((r) => srv.getConnections((_e, n) => r(n))),
    close: () => new Promise((r) => { for (const s of socks) s.destroy(); srv.close(() => r()); }),
  };
}

async function proxyTo(port: number) {
  const p = forwardingProxy(port, { onRecord: () => {} });
  return { p, port: (await p.start()).egress!.port };
}

async function settle(o: { open(): Promise<number> }): Promise<number> {
  const t0 = Date.now();
  let n = await o.open();
  while (n > 0 && Date.now() - t0 < 2000) {
    await new Promise((r) => setTimeout(r, 20));
    n = await o.open();
  }
  return n;
}

const get = (path: string, close = false) => `GET ${path} HTTP/1.1\r\nHost: svc\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;

test('attacker upstream: accepts and closes at once: each request gets its 503 and the proxy closes its side of every upstream connection', async () => {
  const o = await origin((s) => { s.resume(); s.end(); });
  const { p, port } = await proxyTo(o.port);
  try {
    for (let i = 0; i < 20; i++) {
      const r = await rawExchange(port, get(`/x${i}`));
      assert.match(r.text, /^HTTP\/1\.1 503 /, r.text);
    }
    // positive control: the requests reached the origin, one connection each
    assert.equal(o.accepted(), 20);
    assert.equal(await settle(o), 0, 'every upstream connection closed on both sides (none left half-open in the proxy)');
  } finally {
    await p.stop();
    await o.close();
  }
});

test('an upstream that closes a kept-alive connection while the client keeps its own open: the proxy closes its side', async () => {
  // answers one request keep-alive, then closes the connection 30 ms later (a server's idle timeout)
  const o = await origin((s) => {
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      setTimeout(() => s.end(), 30);
    });
  });
  const { p, port } = await proxyTo(o.port);
  const clients: net.Socket[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      const c = net.connect(port, '127.0.0.1');
      clients.push(c);
      const text = await new Promise<string>((resolve) => {
        let t = '';
        c.on('data', (d: Buffer) => { t += d; if (t.endsWith('ok')) resolve(t); });
        c.write(get(`/k${i}`));
      });
      assert.match(text, /^HTTP\/1\.1 200 /);
    }
    assert.equal(o.accepted(), 10);
    assert.equal(await settle(o), 0, 'the upstream connections the server closed are closed by the proxy too');
    // positive control: the client connections are still open and served (a new upstream connection)
    const again = await new Promise<string>((resolve) => {
      let t = '';
      clients[0]!.on('data', (d: Buffer) => { t += d; if (t.endsWith('ok')) resolve(t); });
      clients[0]!.write(get('/again'));
    });
    assert.match(again, /^HTTP\/1\.1 200 /);
  } finally {
    for (const c of clients) c.destroy();
    await p.stop();
    await o.close();
  }
});
