/**
 * A closed connection's sockets are cut from what they point to a turn after their 'close'
 * (connection.ts sever): listener arrays emptied (V8 may have made them in the old generation,
 * where they keep their listeners and what those hold until a mark-compact), no listener left but
 * a no-op 'error' one, no connection, read buffer or filter state (the interception) on them.
 * Attacker's side: clients that close mid-hello, mid-handshake and mid-request are severed too,
 * and a late event on a severed socket (an 'error', a read) is harmless.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import type { ProxyConnection } from '../../../../src/proxy/http/connection.ts';
import { redirectingProxy } from '../http/harness.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { opensslCA, tlsUpstream } from './helpers.ts';

const NAME = 'api.openai.com';
let interceptCA: { cert: string; key: string };
let up: Awaited<ReturnType<typeof tlsUpstream>>;
let proxy: HttpProxy;
let port = 0;

/** per accepted connection: the connection, its accepted socket, and the listener arrays both sockets had at 'close' */
interface Seen { conn: ProxyConnection; raw: net.Socket; tlsSock?: net.Socket; arrays: unknown[][]; closed: boolean }
const seen: Seen[] = [];
type Events = { _events?: Record<string, unknown> };
const arraysOf = (s: net.Socket): unknown[][] => Object.values((s as unknown as Events)._events ?? {}).filter((l): l is unknown[] => Array.isArray(l));

before(async () => {
  interceptCA = opensslCA('interception CA');
  const upstreamCA = opensslCA('upstream CA');
  const secrets = new TlsSecrets();
  secrets.set('default', 'intercept', { 'tls.crt': interceptCA.cert, 'tls.key': interceptCA.key });
  secrets.set('default', 'upstream-ca', { 'ca.crt': upstreamCA.cert });
  up = await tlsUpstream(await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key));
  const policy: L7Policy = {
    parser: 'http',
    perSelector: [{
      selector: 's', identities: 'all', origins: [], http: [{ method: 'GET', path: '/v1/models' }],
      terminatingTLS: { secret: { name: 'intercept' } }, originatingTLS: { secret: { name: 'upstream-ca' } },
    }],
  };
  proxy = redirectingProxy(up.port, policy, {
    configure: (chain) => {
      chain.addNetwork(createInterceptFilter({ secrets, onRecord: () => {} }));
      // after the interception filter: records each connection and, at its sockets' 'close' (the
      // sever comes a turn later), the listener arrays they hold
      chain.addNetwork({
        name: 'test.seen',
        onNewConnection(conn) {
          const s: Seen = { conn, raw: conn.sock, arrays: [], closed: false };
          seen.push(s);
          conn.sock.on('close', () => {
            s.closed = true;
            s.arrays.push(...arraysOf(s.raw));
            if (conn.sock !== s.raw) { s.tlsSock = conn.sock; s.arrays.push(...arraysOf(conn.sock)); }
          });
          return 'continue';
        },
      });
    },
  });
  port = (await proxy.start()).egress!.port;
});
after(async () => { await proxy.stop(); up.close(); });

const turns = async (n: number): Promise<void> => { for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r)); };
async function closedAndSevered(s: Seen): Promise<void> {
  for (let i = 0; i < 200 && !s.closed; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(s.closed, 'the accepted socket closed');
  await turns(3);
}
const symbolValues = (o: object, names: string[]): unknown[] =>
  Object.getOwnPropertySymbols(o).filter((k) => names.includes(k.description ?? '')).map((k) => (o as Record<symbol, unknown>)[k]).filter((v) => v !== undefined);
/** Node's onread callback on a socket made with `onread` (ownReadSocket) */
const onreadOf = (s: net.Socket): ((n: number, b: Buffer) => boolean) | undefined => {
  const k = Object.getOwnPropertySymbols(s).find((x) => x.description === 'kBufferCb');
  return k ? (s as unknown as Record<symbol, (n: number, b: Buffer) => boolean>)[k] : undefined;
};

function assertSevered(s: Seen): void {
  for (const sock of [s.raw, ...(s.tlsSock ? [s.tlsSock] : [])]) {
    assert.deepEqual(sock.eventNames(), ['error'], 'only the no-op error listener is left');
    assert.equal(sock.listenerCount('error'), 1);
    assert.deepEqual(symbolValues(sock, ['proxyConnection', 'readBuffer', 'filterState']), [], 'no connection, read buffer or filter state');
    // late events on a severed socket: an 'error' is heard (not thrown), a read is refused
    assert.doesNotThrow(() => sock.emit('error', Object.assign(new Error('late'), { code: 'ECONNRESET' })));
    assert.doesNotThrow(() => sock.emit('data', Buffer.from('late bytes')));
  }
  for (const a of s.arrays) assert.equal(a.length, 0, 'each listener array held at close was emptied');
  const onread = onreadOf(s.raw);
  assert.ok(onread, 'the accepted socket reads into its own buffer');
  assert.equal(onread.call(s.raw, 5, Buffer.alloc(5)), false, 'a late read into a severed socket is refused');
}

test('an intercepted connection closed after its request: both sockets severed, late events harmless', async () => {
  seen.length = 0;
  const text = await new Promise<string>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert }, () => {
      c.write(`GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\nconnection: close\r\n\r\n`);
    });
    let t = '';
    c.on('data', (d: Buffer) => { t += d.toString(); });
    c.on('end', () => resolve(t));
    c.on('error', reject);
  });
  assert.match(text, /^HTTP\/1\.1 200/);
  assert.equal(seen.length, 1);
  await closedAndSevered(seen[0]!);
  assert.ok(seen[0]!.tlsSock, 'the TLS server stream was adopted');
  assert.ok(seen[0]!.arrays.length >= 2, 'the sockets held listener arrays at close');
  assertSevered(seen[0]!);
});

test('attacker: clients closing mid-hello, mid-handshake and mid-request are severed; the proxy serves the next', async () => {
  seen.length = 0;
  // mid-hello: a TLS record header and a few bytes of a ClientHello, then a reset
  await new Promise<void>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])); setTimeout(() => s.resetAndDestroy(), 50); });
    s.on('close', () => resolve());
    s.on('error', () => {});
  });
  // mid-handshake: the whole ClientHello, closed before the client's Finished
  await new Promise<void>((resolve) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert });
    c.once('secureConnect', () => {});
    // the first bytes from the server (its ServerHello flight) end it before the client finishes
    (c as unknown as { _parent?: net.Socket })._parent?.once('data', () => c.destroy());
    setTimeout(() => c.destroy(), 200);
    c.on('close', () => resolve());
    c.on('error', () => {});
  });
  // mid-request: handshake done, half a request head, then gone
  await new Promise<void>((resolve) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert }, () => {
      c.write(`GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\n`);
      setTimeout(() => c.destroy(), 50);
    });
    c.on('close', () => resolve());
    c.on('error', () => {});
  });
  assert.equal(seen.length, 3);
  for (const s of seen) {
    await closedAndSevered(s);
    assertSevered(s);
  }
  // and the proxy still intercepts the next connection
  const text = await new Promise<string>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert }, () => {
      c.write(`GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\nconnection: close\r\n\r\n`);
    });
    let t = '';
    c.on('data', (d: Buffer) => { t += d.toString(); });
    c.on('end', () => resolve(t));
    c.on('error', reject);
  });
  assert.match(text, /^HTTP\/1\.1 200/);
});
