/**
 * An intercepted client that asked to close (`Connection: close`), its request fully read, is
 * closed right after its response and the proxy's close_notify are in the kernel: no waiting for
 * the client's close_notify and FIN. The attacker's and the slow client's view: the close must
 * never cost a client its response or the close_notify (a TLS client that gets a FIN without it
 * sees a truncation attack), and a client that may still send (a body still coming, a keep-alive
 * client the server closed) gets the lingering close, never a reset.
 *
 * The client talks through a plain TCP relay that records every byte the proxy sent it and can
 * stop reading (the proxy's kernel buffers fill): the close_notify is the last record before the
 * proxy's FIN (TLS 1.3, AES-GCM: an application_data record of 2 + 1 + 16 = 19 bytes).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { HttpProxy } from '../../../../src/proxy/http/proxy.ts';
import { redirectingProxy } from '../http/harness.ts';
import { createInterceptFilter } from '../../../../src/proxy/tls/intercept.ts';
import { TlsSecrets } from '../../../../src/proxy/tls/secrets.ts';
import { CertificateIssuer } from '../../../../src/proxy/tls/issuer.ts';
import type { L7Policy } from '../../../../src/policy/types.ts';
import { opensslCA } from './helpers.ts';
import { headOrigin, recording, sendAfter, tapRelay, type Closable, type RecordingSocket } from '../../../support/scripted-peers.ts';
import { until } from '../../../support/until.ts';

const NAME = 'api.openai.com';
let interceptCA: { cert: string; key: string };
const secrets = new TlsSecrets();
const policy: L7Policy = {
  parser: 'http',
  perSelector: [{
    selector: 's', identities: 'all', origins: [],
    http: [{ method: 'GET', path: '/v1/models' }, { method: 'POST', path: '/v1/chat/completions' }],
    terminatingTLS: { secret: { name: 'intercept' } },
    originatingTLS: { secret: { name: 'upstream-ca' } },
  }],
};

/** What the origin answers per request head: a body of `x-size` bytes (a pattern), and its own Connection field if `x-close`. */
let origin: Closable;
before(async () => {
  interceptCA = opensslCA('interception CA');
  const upstreamCA = opensslCA('upstream CA');
  secrets.set('default', 'intercept', { 'tls.crt': interceptCA.cert, 'tls.key': interceptCA.key });
  secrets.set('default', 'upstream-ca', { 'ca.crt': upstreamCA.cert });
  const issuer = await CertificateIssuer.fromPem(upstreamCA.cert, upstreamCA.key);
  origin = await headOrigin((head) => {
    const n = Number(/\r\nx-size: (\d+)/i.exec(head)?.[1] ?? 2);
    return [`HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\n${/\r\nx-close:/i.test(head) ? 'Connection: close\r\n' : ''}\r\n`, body(n)];
  }, {
    tls: {
      SNICallback: (name, cb) => { issuer.certFor(name).then((c) => cb(null, c.context), (e: Error) => cb(e)); },
      ALPNProtocols: ['http/1.1'],
    },
  });
});
after(async () => { await origin.close(); });

function body(n: number): Buffer {
  const b = Buffer.alloc(n, 0x61);
  for (let i = 0; i < n; i += 1000) b[i] = 0x30 + ((i / 1000) % 10);
  return b;
}

/** The TLS records in what the proxy sent: [type, length] each; throws on a cut record. */
function records(b: Buffer): [number, number][] {
  const out: [number, number][] = [];
  for (let at = 0; at < b.length;) {
    assert.ok(at + 5 <= b.length, 'a record header cut at the end');
    const len = b.readUInt16BE(at + 3);
    assert.ok(at + 5 + len <= b.length, 'a record cut at the end');
    out.push([b[at]!, len]);
    at += 5 + len;
  }
  return out;
}

/** A TLS client (trusting the interception CA) through a relay, keeping its own side open. */
async function client(port: number): Promise<RecordingSocket<tls.TLSSocket>> {
  // allowHalfOpen (read by Node's TLSSocket, not in its option types): the client's TLS socket does
  // not answer the proxy's close_notify and FIN with its own
  const opts: tls.ConnectionOptions & { allowHalfOpen: boolean } = { host: '127.0.0.1', port, servername: NAME, ca: interceptCA.cert, allowHalfOpen: true };
  const c = recording(tls.connect(opts));
  await new Promise<void>((r, j) => { c.sock.once('secureConnect', () => r()); c.sock.once('error', j); });
  return c;
}

async function withProxy(run: (p: HttpProxy, port: number) => Promise<void>): Promise<void> {
  const p = redirectingProxy(origin.port, policy, {
    configure: (chain) => { chain.addNetwork(createInterceptFilter({ secrets, onRecord: () => {} })); },
  });
  try {
    await run(p, (await p.start()).egress!.port);
  } finally {
    await p.stop();
  }
}

test('Connection: close over interception, bodies 1 B to 1 MB read slowly: the whole body, then the close_notify, then the FIN; the proxy closes without waiting for the client\'s close_notify or FIN', async () => {
  await withProxy(async (p, port) => {
    for (const n of [1, 1000, 16_383, 16_384, 16_385, 70_000, 300_000, 1 << 20]) {
      const r = await tapRelay(port);
      try {
        const c = await client(r.port);
        // the relay reads nothing from the proxy for 300 ms: the response backs up in the proxy's
        // kernel buffers (and in Node, for the larger bodies) while the proxy ends the connection
        r.hold(300);
        c.sock.write(`GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\nx-size: ${n}\r\nConnection: close\r\n\r\n`);
        await until(`the ${n} B response, the close_notify and the FIN`, () => c.ended() && r.proxyEnded(), 10_000);
        const got = c.got();
        const at = got.indexOf('\r\n\r\n') + 4;
        assert.match(got.subarray(0, at).toString('latin1'), /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n/i);
        assert.equal(got.length - at, n, `every body byte of ${n}`);
        assert.ok(got.subarray(at).equals(body(n)), `the ${n} B body byte for byte`);
        const recs = records(r.fromProxy());
        assert.deepEqual(recs.at(-1), [23, 19], `the last record before the FIN is the close_notify (${n} B)`);
        assert.equal(c.error(), '');
        // the client has not closed its side (allowHalfOpen: no close_notify, no FIN of its own):
        // a lingering close would hold the connection until the sweep's 5 s
        await until('the proxy to close the connection', () => p.stats().connections === 0, 1500);
        c.sock.destroy();
      } finally {
        await r.close();
      }
    }
  });
});

test('attacker: Connection: close over interception answered before its body is in, the client sends the rest after the response: no reset, the response and close_notify intact', async () => {
  await withProxy(async (p, port) => {
    const r = await tapRelay(port);
    try {
      const c = await client(r.port);
      c.sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: ${NAME}\r\nx-size: 5\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n0123456789`);
      await until('the early response and the proxy\'s close_notify', () => c.ended(), 3000);
      await sendAfter(c, 'b'.repeat(19_990));
      assert.equal(r.proxyError(), '', 'no reset from the proxy for bytes the client was still sending');
      assert.equal(c.error(), '', 'no reset for bytes the client was still sending');
      assert.ok(c.got().toString('latin1').endsWith(`\r\n\r\n${body(5).toString('latin1')}`));
      assert.deepEqual(records(r.fromProxy()).at(-1), [23, 19]);
      c.sock.end();
      await until('the connection to close after the client\'s FIN', () => p.stats().connections === 0, 3000);
      c.sock.destroy();
    } finally {
      await r.close();
    }
  });
});

test('attacker: a keep-alive intercepted client whose response closes the connection (the server said close) may still send: no reset', async () => {
  await withProxy(async (p, port) => {
    const r = await tapRelay(port);
    try {
      const c = await client(r.port);
      c.sock.write(`GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\nx-close: 1\r\n\r\n`);
      await until('the response and the proxy\'s close_notify', () => c.ended(), 3000);
      await sendAfter(c, `GET /v1/models HTTP/1.1\r\nHost: ${NAME}\r\n\r\n`);
      assert.equal(r.proxyError(), '', 'no reset from the proxy for a request sent before the client saw the close_notify');
      assert.equal(c.error(), '', 'no reset for a request sent before the client saw the close_notify');
      assert.equal((c.got().toString('latin1').match(/HTTP\/1\.1 200/g) ?? []).length, 1);
      c.sock.end();
      await until('the connection to close after the client\'s FIN', () => p.stats().connections === 0, 3000);
      c.sock.destroy();
    } finally {
      await r.close();
    }
  });
});
