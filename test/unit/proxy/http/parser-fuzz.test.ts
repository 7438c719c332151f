/**
 * Properties of the request parser: any split of a pipeline of valid requests yields the same
 * messages and body bytes as parsing it whole; arbitrary bytes only ever produce messages or an
 * HttpParseError (never another exception, never a hang).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BodyTracker, HeadParser, HttpParseError, HTTP_METHODS } from '../../../../src/proxy/http/parser.ts';

interface Msg { method: string; target: string; body: string }

function parse(chunks: Buffer[]): Msg[] {
  const hp = new HeadParser({ kind: 'request' });
  const bt = new BodyTracker();
  const out: Msg[] = [];
  let cur: Msg | null = null;
  let body: Buffer[] = [];
  for (const chunk of chunks) {
    let pos = 0;
    while (pos < chunk.length) {
      if (!cur) {
        const r = hp.push(chunk, pos);
        if (!r) break;
        cur = { method: r.head.method, target: r.head.target, body: '' };
        bt.startRequest(r.head);
        pos = r.bodyStart;
        body = [];
      }
      const end = bt.feed(chunk, pos);
      body.push(chunk.subarray(pos, end));
      pos = end;
      if (bt.done) {
        cur.body = Buffer.concat(body).toString('latin1');
        out.push(cur);
        cur = null;
      }
    }
  }
  return out;
}

const token = fc.constantFrom(...[...HTTP_METHODS].filter((m) => m !== 'CONNECT'));
const path = fc.stringMatching(/^\/[a-z0-9/._~-]{0,30}$/);
const payload = fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x'));
const request = fc.record({ method: token, target: path, body: payload, chunked: fc.boolean(), pieces: fc.integer({ min: 1, max: 4 }) }).map((r) => {
  let wire = `${r.method} ${r.target} HTTP/1.1\r\nHost: h\r\n`;
  let framed: string;
  if (r.chunked) {
    const size = Math.ceil(r.body.length / r.pieces) || 1;
    framed = '';
    for (let i = 0; i < r.body.length; i += size) {
      const part = r.body.slice(i, i + size);
      framed += `${part.length.toString(16)}\r\n${part}\r\n`;
    }
    framed += '0\r\n\r\n';
    wire += 'Transfer-Encoding: chunked\r\n\r\n';
  } else {
    framed = r.body;
    wire += `Content-Length: ${r.body.length}\r\n\r\n`;
  }
  return { wire: wire + framed, expect: { method: r.method, target: r.target, body: framed } };
});

test('any split of a valid pipeline parses to the same messages and body bytes', () => {
  fc.assert(fc.property(fc.array(request, { minLength: 1, maxLength: 5 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }), (reqs, cuts) => {
    const wire = Buffer.from(reqs.map((r) => r.wire).join(''), 'latin1');
    const chunks: Buffer[] = [];
    let pos = 0;
    for (let i = 0; pos < wire.length; i++) {
      const n = cuts[i % cuts.length]!;
      chunks.push(wire.subarray(pos, pos + n));
      pos += n;
    }
    assert.deepEqual(parse(chunks), reqs.map((r) => r.expect));
    assert.deepEqual(parse([wire]), reqs.map((r) => r.expect));
  }), { numRuns: 500 });
});

test('arbitrary bytes: messages or HttpParseError, nothing else', () => {
  const alphabet = fc.constantFrom('GET / HTTP/1.1\r\n', 'Host: a\r\n', 'Content-Length: 3\r\n', 'Transfer-Encoding: chunked\r\n', '\r\n', '\n', ' ', ':', 'a', '0\r\n', '5\r\nhello\r\n', '\x00', 'HTTP/1.0', '\t');
  fc.assert(fc.property(fc.array(alphabet, { maxLength: 40 }), fc.integer({ min: 1, max: 16 }), (parts, cut) => {
    const wire = Buffer.from(parts.join(''), 'latin1');
    const chunks: Buffer[] = [];
    for (let i = 0; i < wire.length; i += cut) chunks.push(wire.subarray(i, i + cut));
    try {
      parse(chunks);
    } catch (e) {
      assert.ok(e instanceof HttpParseError, String(e));
      assert.ok(e.status >= 400 && e.status < 600);
    }
  }), { numRuns: 2000 });
});
