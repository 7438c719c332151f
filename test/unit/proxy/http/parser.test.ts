import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BodyTracker, HeadParser, HttpParseError } from '../../../../src/proxy/http/parser.ts';

const req = (s: string) => Buffer.from(s, 'latin1');

function parseAll(text: string, split = 0) {
  const p = new HeadParser({ kind: 'request', maxHeadBytes: 1024 });
  const b = req(text);
  if (!split) return p.push(b);
  let r;
  for (let i = 0; i < b.length; i += split) {
    r = p.push(b.subarray(i, Math.min(b.length, i + split)));
    if (r) return r;
  }
  return r;
}

function err(text: string): HttpParseError {
  try {
    parseAll(text);
  } catch (e) {
    return e as HttpParseError;
  }
  assert.fail(`no error for ${JSON.stringify(text)}`);
}

test('request head: fields, keep-alive, framing; identical result when split byte by byte', () => {
  const text = 'POST /v1/request-landing?x=1 HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 5\r\nX-A:  b c \r\n\r\nhello';
  for (const split of [0, 1, 3, 7]) {
    const r = parseAll(text, split)!;
    assert.ok(r, `split ${split}`);
    assert.equal(r.head.method, 'POST');
    assert.equal(r.head.target, '/v1/request-landing?x=1');
    assert.equal(r.head.host, 'deathstar');
    assert.equal(r.head.contentLength, 5);
    assert.deepEqual(r.head.headers, ['Host', 'deathstar', 'Content-Length', '5', 'X-A', 'b c']);
    assert.equal(r.head.keepAlive, true);
    assert.equal(r.head.raw.toString('latin1'), text.slice(0, text.indexOf('\r\n\r\n') + 4));
  }
  assert.equal(parseAll('GET / HTTP/1.0\r\n\r\n')!.head.keepAlive, false);
  assert.equal(parseAll('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')!.head.keepAlive, true);
  assert.equal(parseAll('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')!.head.keepAlive, false);
  assert.equal(parseAll('\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n')!.head.method, 'GET');
});

test('smuggling and malformed heads are refused with the right status', () => {
  const cases: [string, number, string][] = [
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 400, 'content_length_with_transfer_encoding'],
    ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n', 400, 'content_length_with_transfer_encoding'],
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n', 400, 'duplicate_content_length'],
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', 400, 'duplicate_content_length'],
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n', 400, 'bad_content_length'],
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n', 400, 'bad_content_length'],
    ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 501, 'unsupported_transfer_encoding'],
    ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', 501, 'unsupported_transfer_encoding'],
    ['GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n', 400, 'obs_fold'],
    ['GET / HTTP/1.1\nHost: a\r\n\r\n', 400, 'bare_lf'],
    ['GET / HTTP/1.1\r\nHost: a\n\n', 400, 'bare_lf'],
    ['GET / HTTP/1.1\r\nHost : a\r\n\r\n', 400, 'bad_header_name'],
    ['GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n', 400, 'bad_header_value'],
    ['GET / HTTP/1.1\r\n\r\n', 400, 'missing_host'],
    ['GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'duplicate_host'],
    ['GET  / HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request_line'],
    ['GET / HTTP/2.0\r\nHost: a\r\n\r\n', 505, 'version_not_supported'],
    ['GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', 400, 'te_http10'],
    [`GET / HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(2000)}\r\n\r\n`, 431, 'headers_too_large'],
  ];
  for (const [text, status, reason] of cases) {
    const e = err(text);
    assert.ok(e instanceof HttpParseError, `${JSON.stringify(text)}: ${e}`);
    assert.equal(e.status, status, JSON.stringify(text));
    assert.equal(e.reason, reason, JSON.stringify(text));
  }
});

test('an oversized head is refused before its end arrives', () => {
  const p = new HeadParser({ kind: 'request', maxHeadBytes: 100 });
  assert.equal(p.push(req('GET / HTTP/1.1\r\nHost: a\r\n')), undefined);
  assert.throws(() => p.push(req(`X: ${'a'.repeat(200)}`)), (e: HttpParseError) => e.status === 431);
});

test('chunked bodies: the end is found across any split; trailers; bad framing refused', () => {
  const body = '5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT';
  for (const split of [1, 2, 5, 100]) {
    const t = new BodyTracker();
    t.startRequest({ chunked: true, contentLength: -1 } as never);
    const b = req(body);
    let consumed = 0;
    for (let i = 0; i < b.length && !t.done; i += split) {
      const piece = b.subarray(i, Math.min(b.length, i + split));
      consumed += t.feed(piece, 0);
    }
    assert.equal(t.done, true);
    assert.equal(consumed, body.length - 4, `split ${split}`);
  }
  for (const bad of ['x\r\n', '5\nhello', '5\r\nhelloX\r\n', '0\r\n\n', '12345678901234\r\n']) {
    const t = new BodyTracker();
    t.startRequest({ chunked: true, contentLength: -1 } as never);
    assert.throws(() => t.feed(req(bad), 0), HttpParseError, bad);
  }
});

test('response framing: HEAD, 204, 304 have no body; no length means until close', () => {
  const p = new HeadParser({ kind: 'response' });
  const h = p.push(req('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'))!.head;
  assert.equal(h.status, 200);
  const t = new BodyTracker();
  t.startResponse(h, 'HEAD');
  assert.equal(t.done, true);
  t.startResponse({ ...h, status: 204 }, 'GET');
  assert.equal(t.done, true);
  t.startResponse({ ...h, contentLength: -1 }, 'GET');
  assert.equal(t.untilClose, true);
});
