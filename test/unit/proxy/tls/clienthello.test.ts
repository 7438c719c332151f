import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import fc from 'fast-check';
import { ClientHelloReader, hostNameProblem, serverName, tlsVersionName } from '../../../../src/proxy/tls/clienthello.ts';

/** The first flight a real Node/OpenSSL client sends for these options. */
async function realHello(opts: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const got = new Promise<Buffer>((resolve) => {
      server.once('connection', (s) => {
        const chunks: Buffer[] = [];
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          const all = Buffer.concat(chunks);
          if (all.length >= 5 && all.length >= 5 + all.readUInt16BE(3)) { resolve(all); s.destroy(); }
        });
      });
    });
    const c = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    c.on('error', () => {});
    const hello = await got;
    c.destroy();
    return hello;
  } finally {
    server.close();
  }
}

/** Re-frames a single-record hello into records of `size` bytes of handshake data each. */
function refragment(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const h = Buffer.from([22, hello[1]!, hello[2]!, 0, 0]);
    h.writeUInt16BE(part.length, 3);
    out.push(h, part);
  }
  return Buffer.concat(out);
}

function feed(bytes: Buffer, cuts: number[] = []): ReturnType<ClientHelloReader['push']> {
  const r = new ClientHelloReader();
  let last = 0;
  for (const c of [...cuts.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length]) {
    r.push(bytes.subarray(last, c));
    last = c;
  }
  return r.result;
}

test('reads SNI, ALPN and versions from a real ClientHello', async () => {
  const hello = await realHello({ servername: 'API.OpenAI.com', ALPNProtocols: ['h2', 'http/1.1'] });
  const r = feed(hello);
  assert.equal(r.state, 'done');
  if (r.state !== 'done') return;
  assert.equal(r.hello.sni, 'api.openai.com');
  assert.deepEqual(r.hello.alpn, ['h2', 'http/1.1']);
  assert.equal(tlsVersionName(r.hello.maxVersion), 'TLS 1.3');
  assert.equal(r.hello.bytes, hello.length);
});

test('no SNI (IP literal target) reads as undefined', async () => {
  const r = feed(await realHello({}));
  assert.equal(r.state, 'done');
  assert.equal(r.state === 'done' ? r.hello.sni : 'x', undefined);
});

test('byte-by-byte, across many records, and across records split mid-header: same answer', async () => {
  const hello = await realHello({ servername: 'a.example.com' });
  const byteByByte = new ClientHelloReader();
  let res = byteByByte.result;
  for (let i = 0; i < hello.length; i++) {
    res = byteByByte.push(hello.subarray(i, i + 1));
    if (i < hello.length - 1) assert.equal(res.state, 'need-more', `state at byte ${i}`);
  }
  assert.equal(res.state === 'done' && res.hello.sni, 'a.example.com');
  for (const size of [1, 7, 64, 300]) {
    const r = feed(refragment(hello, size), [3, 11, 200]);
    assert.equal(r.state === 'done' && r.hello.sni, 'a.example.com', `records of ${size}`);
  }
});

test('property: any fragmentation of a hello gives the same result', async () => {
  const hello = await realHello({ servername: 'www.example.com', ALPNProtocols: ['http/1.1'] });
  fc.assert(fc.property(fc.integer({ min: 1, max: 600 }), fc.array(fc.integer({ min: 0, max: 4000 }), { maxLength: 20 }), (size, cuts) => {
    const r = feed(refragment(hello, size), cuts);
    assert.equal(r.state, 'done');
    assert.equal(r.state === 'done' && r.hello.sni, 'www.example.com');
  }), { numRuns: 200 });
});

test('property: arbitrary bytes never throw, and end in need-more, done or a coded error', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, asRecord) => {
    let b = Buffer.from(bytes);
    if (asRecord) b = Buffer.concat([Buffer.from([22, 3, 1, b.length >> 8, b.length & 0xff]), b]);
    const r = feed(b, [1, 5, 9]);
    assert.ok(['need-more', 'done', 'error'].includes(r.state));
  }), { numRuns: 1000 });
});

test('bad input: each refused with its code', async () => {
  const hello = await realHello({ servername: 'ok.example.com' });
  const cases: [string, Buffer, string][] = [
    ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'NOT_TLS'],
    ['SSLv2 hello', Buffer.from([0x80, 0x2e, 0x01, 0x00, 0x02]), 'SSLV2'],
    ['zero-length record', Buffer.from([22, 3, 1, 0, 0]), 'BAD_RECORD'],
    ['alert record', Buffer.from([21, 3, 3, 0, 2, 2, 40]), 'NOT_TLS'],
    ['server hello', Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0]), 'NOT_CLIENT_HELLO'],
    ['inner length past the end', (() => { const b = Buffer.from(hello); b[5 + 4 + 34] = 200; return b; })(), 'TRUNCATED'],
  ];
  for (const [name, bytes, code] of cases) {
    const r = feed(bytes);
    assert.equal(r.state, 'error', name);
    assert.equal(r.state === 'error' && r.code, code, name);
  }
  // A hello announcing 1 MiB: refused before buffering it.
  const giant = Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0x10, 0x00, 0x00]);
  const g = new ClientHelloReader({ maxBytes: 64 * 1024 });
  assert.equal(g.push(giant).state, 'error');
  // A truncated hello is simply incomplete.
  assert.equal(feed(hello.subarray(0, hello.length - 10)).state, 'need-more');
});

test('SNI with illegal characters is refused; TLS 1.0 and SSLv3 record versions are reported', async () => {
  const hello = await realHello({ servername: 'abcdefghijklm.example.com' });
  const bad = Buffer.from(hello);
  const at = bad.indexOf('abcdefghijklm');
  bad.write('evil/\x00name!', at, 'latin1');
  const r = feed(bad);
  assert.equal(r.state === 'error' && r.code, 'BAD_SNI');
  const tls10 = Buffer.from(hello);
  tls10.writeUInt16BE(0x0300, 1);
  const r10 = feed(tls10);
  assert.equal(r10.state === 'done' && tlsVersionName(r10.hello.recordVersion), 'SSLv3');
  assert.equal(hostNameProblem('api.openai.com'), undefined);
  assert.ok(hostNameProblem('a..b'));
  assert.ok(hostNameProblem('x'.repeat(64) + '.com'));
});

test('serverName: the normal form and the host-name check of a name as sent, kept per name', () => {
  // the same as the pure functions it keeps, for good, bad and mixed-case names, asked twice
  fc.assert(fc.property(fc.oneof(fc.domain(), fc.string({ maxLength: 70 }), fc.constantFrom('API.OpenAI.com.', 'a..b', 'x'.repeat(64) + '.com', '', 'Ünïcode.example')), (raw) => {
    for (let i = 0; i < 2; i++) {
      const c = serverName(raw);
      assert.equal(c.name, raw.toLowerCase().replace(/\.$/, ''));
      assert.equal(c.problem, hostNameProblem(raw));
    }
  }));
  // a name seen before makes nothing new
  assert.equal(serverName('Kept.Example'), serverName('Kept.Example'));
  // a name too long to be one is still judged, and not kept
  const long = 'a'.repeat(300);
  assert.ok(serverName(long).problem);
  assert.notEqual(serverName(long), serverName(long));
});
