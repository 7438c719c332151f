/**
 * A client that asked to close (`Connection: close`) and whose request is fully read is closed at
 * once after its response (no lingering close: no shutdown, no waiting for its FIN), as nginx does.
 * The attacker's and the slow client's view: closing must never cost a client its response. A
 * response Node still holds (a client reading slowly), a request body still coming (the server
 * answered early) or a connection the server closes while the client may still send: the proxy
 * ends its side and reads on to the client's FIN, so the kernel never answers with a reset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { forwardingProxy } from './harness.ts';
import { headOrigin, recording, sendAfter, type Closable, type RecordingSocket } from '../../../support/scripted-peers.ts';
import { until } from '../../../support/until.ts';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';

/** A client that keeps its own side open (allowHalfOpen): what it read, whether it saw the FIN, and any error (a reset). */
async function client(port: number): Promise<RecordingSocket<net.Socket>> {
  const c = recording(net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  await new Promise<void>((r) => c.sock.on('connect', () => r()));
  return c;
}

async function withProxy(o: Closable, body: (p: HttpProxy, port: number) => Promise<void>): Promise<void> {
  const p = forwardingProxy(o.port);
  try {
    const l = await p.start();
    await body(p, l.egress!.port);
  } finally {
    await p.stop();
    await o.close();
  }
}

test('Connection: close, request fully read: the client gets its response and the FIN, and the proxy closes without waiting for the client\'s FIN', async () => {
  const o = await headOrigin(() => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  await withProxy(o, async (p, port) => {
    for (let i = 0; i < 3; i++) {
      const c = await client(port);
      c.sock.write('GET /a HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n');
      await until('the response and the proxy\'s FIN', () => c.ended(), 3000);
      const text = c.got().toString('latin1');
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(text, /\r\nconnection: close\r\n/i);
      assert.ok(text.endsWith('\r\n\r\nok'), JSON.stringify(text));
      // the client has not closed its side: a lingering close would hold the connection until the
      // client's FIN or the sweep's 5 s; closed at once, it is gone and its read buffer is back
      await until('the proxy to close the connection', () => p.stats().connections === 0, 1500);
      assert.equal(p.readBuffers.idle, 1, 'the closed connection\'s read buffer went back to the pool');
      assert.equal(c.error(), '');
      c.sock.destroy();
    }
  });
});

test('Connection: close with a response larger than the socket buffers, read slowly: every byte arrives before the FIN (what Node still holds is not dropped)', async () => {
  const n = 8 << 20;
  const bodyBytes = Buffer.alloc(n, 0x61);
  for (let i = 0; i < n; i += 4096) bodyBytes[i] = 0x30 + ((i >> 12) % 10);
  const o = await headOrigin(() => Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\n\r\n`), bodyBytes]));
  await withProxy(o, async (_p, port) => {
    const c = await client(port);
    c.sock.pause();
    c.sock.write('GET /big HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n');
    // the proxy answers while the client reads nothing: the response waits in Node's buffer
    await new Promise((r) => setTimeout(r, 300));
    c.sock.resume();
    await until('the whole response and the FIN', () => c.ended(), 10_000);
    const got = c.got();
    const at = got.indexOf('\r\n\r\n') + 4;
    assert.equal(got.length - at, n, 'every body byte');
    assert.ok(got.subarray(at).equals(bodyBytes), 'the body byte for byte');
    assert.equal(c.error(), '');
    c.sock.destroy();
  });
});

test('Connection: close answered with a head the proxy rewrites (its own Connection field): head and body, corked together, all arrive before the FIN (closed only after Node wrote them)', async () => {
  // the head made again (closingResponseHead) and the body are two writes of one batch, corked:
  // at the close they are still in Node, not yet in the kernel
  const o = await headOrigin(() => 'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody');
  await withProxy(o, async (p, port) => {
    const c = await client(port);
    c.sock.write('GET /a HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n');
    await until('the response and the proxy\'s FIN', () => c.ended(), 3000);
    const text = c.got().toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/, JSON.stringify(text));
    assert.doesNotMatch(text, /keep-alive/i);
    assert.ok(text.endsWith('\r\n\r\nbody'), JSON.stringify(text));
    assert.equal(c.error(), '');
    // what was still in Node went out with end(): the proxy closes at the client's FIN
    c.sock.end();
    await until('the connection to close after the client\'s FIN', () => p.stats().connections === 0, 3000);
    c.sock.destroy();
  });
});

test('attacker: Connection: close answered before its body is in, the client sends the rest after the response: no reset, the response intact', async () => {
  const o = await headOrigin(() => 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly');
  await withProxy(o, async (p, port) => {
    const c = await client(port);
    c.sock.write('POST /up HTTP/1.1\r\nHost: o\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n0123456789');
    await until('the early response and the proxy\'s FIN', () => c.ended(), 3000);
    // the body goes on after the answer: closed at once, the proxy's kernel would answer it with a reset
    await sendAfter(c, Buffer.alloc(19_980, 0x62));
    assert.equal(c.error(), '', 'no reset for bytes the client was still sending');
    assert.ok(c.got().toString('latin1').endsWith('\r\n\r\nearly'));
    c.sock.end();
    await until('the connection to close after the client\'s FIN', () => p.stats().connections === 0, 3000);
    c.sock.destroy();
  });
});

test('attacker: a keep-alive client whose response closes the connection (the server said close) may still send: no reset', async () => {
  const o = await headOrigin(() => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
  await withProxy(o, async (p, port) => {
    const c = await client(port);
    c.sock.write('GET /a HTTP/1.1\r\nHost: o\r\n\r\n');
    await until('the response and the proxy\'s FIN', () => c.ended(), 3000);
    // the client did not ask to close: its next request may be under way as the proxy closes
    await sendAfter(c, 'GET /b HTTP/1.1\r\nHost: o\r\n\r\n');
    assert.equal(c.error(), '', 'no reset for a request sent before the client saw the FIN');
    assert.equal((c.got().toString('latin1').match(/HTTP\/1\.1 200/g) ?? []).length, 1);
    c.sock.end();
    await until('the connection to close after the client\'s FIN', () => p.stats().connections === 0, 3000);
    c.sock.destroy();
  });
});
