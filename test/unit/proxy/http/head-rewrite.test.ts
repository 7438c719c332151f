import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeadParser } from '../../../../src/proxy/http/parser.ts';
import { rawWithoutConnection, withoutConnection } from '../../../../src/proxy/http/head-rewrite.ts';

const parse = (b: Buffer) => new HeadParser({ kind: 'request' }).push(b)!;

/** What the proxy sent before the raw cut: the head made again from the parsed fields, less the hop-by-hop ones. */
function rebuilt(raw: Buffer): Buffer {
  const h = parse(raw).head;
  let s = `${h.method} ${h.target} ${h.version}\r\n`;
  const f = withoutConnection(h.headers);
  for (let i = 0; i < f.length; i += 2) s += `${f[i]}: ${f[i + 1]}\r\n`;
  return Buffer.from(`${s}\r\n`, 'latin1');
}

const LINES = [
  'Host: a', 'host:b.example', 'Connection: close', 'CONNECTION:close', 'connection: keep-alive, close', 'Keep-Alive: timeout=5',
  'keep-alive:5', 'Proxy-Connection: close', 'PROXY-CONNECTION:  x  ', 'X-Connection: close', 'Connection-Extra: 1', 'Connectio: 2',
  'Keep-Alive2: 3', 'Proxy-Connectionx: 4', 'Content-Length: 4', 'X-Long: ' + 'v'.repeat(200), 'Accept: */*', 'Connection:', 'A: connection: close',
];

test('rawWithoutConnection: the same fields as the parsed list less Connection, Keep-Alive, Proxy-Connection, and every other line byte for byte', () => {
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let i = 0; i < 3000; i++) {
    const lines = ['Host: h'];
    for (let k = rnd(8); k > 0; k--) lines.push(LINES[rnd(LINES.length)]!);
    // the parser refuses two Host fields: keep the first
    const fields = lines.filter((l, j) => j === 0 || !/^host:/i.test(l));
    const raw = Buffer.from(`GET /p?q=${i} HTTP/1.1\r\n${fields.join('\r\n')}\r\n\r\n`, 'latin1');
    const out = rawWithoutConnection(raw);
    const got = parse(out).head, want = parse(rebuilt(raw)).head;
    assert.deepEqual(got.headers, want.headers, raw.toString('latin1'));
    assert.equal(got.target, want.target);
    assert.equal(got.contentLength, want.contentLength);
    assert.equal(got.keepAlive, true, 'no Connection option is left');
    // what stays is the received lines themselves, in order
    const kept = fields.filter((l) => !/^(connection|keep-alive|proxy-connection):/i.test(l));
    assert.equal(out.toString('latin1'), `GET /p?q=${i} HTTP/1.1\r\n${kept.map((l) => `${l}\r\n`).join('')}\r\n`);
    if (kept.length === fields.length) assert.equal(out, raw, 'nothing cut: the head itself');
  }
});

test('attacker: the framing and target survive the cut exactly (no field of the request lost or merged into the next)', () => {
  // a body after the head: the server must see the same Content-Length / chunked framing, or the
  // body's bytes would be read as another request (smuggling past the proxy's judgement)
  for (const framing of ['Content-Length: 11', 'Transfer-Encoding: chunked']) {
    for (const hop of ['Connection: close', 'Keep-Alive: 1', 'Proxy-Connection: close', 'connection:close']) {
      const raw = Buffer.from(`POST /judged HTTP/1.1\r\nHost: a\r\n${hop}\r\n${framing}\r\n${hop}\r\n\r\n`, 'latin1');
      const h = parse(rawWithoutConnection(raw)).head;
      const r = parse(raw).head;
      assert.equal(h.contentLength, r.contentLength);
      assert.equal(h.chunked, r.chunked);
      assert.equal(h.path, '/judged');
      assert.deepEqual(h.headers, ['Host', 'a', ...framing.split(': ')]);
      // the head ends where it did, less the cut lines: nothing after the empty line is part of it
      assert.equal(rawWithoutConnection(raw).length, raw.length - 2 * (hop.length + 2));
    }
  }
});
