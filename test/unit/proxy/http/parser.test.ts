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

test('request targets (RFC 9112 §3.2): the path L7 rules see is the real one; malformed forms refused', () => {
  const ok: [string, string, string, string][] = [
    // target, Host, path, authority
    ['/v1/models?x=1', 'a', '/v1/models?x=1', ''],
    ['http://api.openai.com/v1/models', 'api.openai.com', '/v1/models', 'api.openai.com'],
    ['http://api.openai.com?/v1/models', 'api.openai.com', '/?/v1/models', 'api.openai.com'],
    ['http://api.openai.com', 'api.openai.com', '/', 'api.openai.com'],
    ['HTTPS://API.openai.com:443/x', 'api.openai.com', '/x', 'API.openai.com:443'],
    ['http://[::1]:8080/x', '[::1]:8080', '/x', '[::1]:8080'],
    ['http://a:80//x', 'a', '//x', 'a:80'],
  ];
  for (const [target, host, path, authority] of ok) {
    const h = parseAll(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`)!.head;
    assert.equal(h.path, path, target);
    assert.equal(h.authority, authority, target);
    assert.equal(h.absoluteForm, authority !== '', target);
  }
  assert.equal(parseAll('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n')!.head.path, '*');
  const c = parseAll('CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n')!.head;
  assert.deepEqual([c.path, c.authority], ['', 'api.openai.com:443']);

  const bad: [string, string, string][] = [
    ['GET http://evil.example/v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n', 'host_mismatch', 'Host must name the target authority'],
    ['GET http://a:8080/x HTTP/1.1\r\nHost: a\r\n\r\n', 'host_mismatch', 'the port counts'],
    ['GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'userinfo'],
    ['GET http://a/x#frag HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'fragment'],
    ['GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'scheme'],
    ['GET http:/a/x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'no authority'],
    ['GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'empty authority'],
    ['GET http://a:99999/x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'port range'],
    ['GET http://a\\b/x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'backslash in the authority'],
    ['GET v1/models HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'relative target'],
    ['GET * HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'asterisk is for OPTIONS'],
    ['CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'CONNECT needs authority-form'],
    ['CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_target', 'CONNECT needs a port'],
    ['CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n', 'connect_with_body', 'CONNECT with a body'],
    ['GET / HTTP/1.1\r\nHost: a b\r\n\r\n', 'bad_host', 'Host syntax'],
    ['GET / HTTP/1.1\r\nHost: \r\n\r\n', 'bad_host', 'empty Host'],
    ['FOO / HTTP/1.1\r\nHost: a\r\n\r\n', 'bad_method', 'a method llhttp does not know'],
  ];
  for (const [text, reason, why] of bad) {
    const e = err(text);
    assert.equal(e.status, 400, why);
    assert.equal(e.reason, reason, why);
  }
});

test('chunked framing as strict as llhttp: no whitespace around the size, extensions per the grammar, trailers are fields', () => {
  const feed = (body: string) => {
    const t = new BodyTracker();
    t.startRequest({ chunked: true, contentLength: -1 } as never);
    const end = t.feed(req(body), 0);
    return { done: t.done, end };
  };
  for (const good of ['5;a\r\nhello\r\n0\r\n\r\n', '5;a=b;c="d e"\r\nhello\r\n0\r\n\r\n', '5;a="x\\"y"\r\nhello\r\n0\r\n\r\n', '5\r\nhello\r\n0\r\nT: v\r\nU:w\r\n\r\n', '0;last=1\r\n\r\n']) {
    assert.deepEqual(feed(good), { done: true, end: good.length }, JSON.stringify(good));
  }
  const bad: [string, string][] = [
    ['5 \r\nhello\r\n0\r\n\r\n', 'space after the size'],
    ['5\t\r\nhello\r\n0\r\n\r\n', 'tab after the size'],
    [' 5\r\nhello\r\n0\r\n\r\n', 'space before the size'],
    ['5 ;a=b\r\nhello\r\n0\r\n\r\n', 'space before an extension'],
    ['5;a="b\r\nc"\r\nhello\r\n0\r\n\r\n', 'CRLF inside a quoted extension value'],
    ['5;a="b\rc"\r\nhello\r\n0\r\n\r\n', 'CR inside a quoted extension value'],
    ['5;a = b\r\nhello\r\n0\r\n\r\n', 'whitespace around ='],
    ['5;=b\r\nhello\r\n0\r\n\r\n', 'no extension name'],
    ['5;a=\r\nhello\r\n0\r\n\r\n', 'no extension value'],
    ['5;a="b\r\nhello\r\n0\r\n\r\n', 'unterminated quoted value'],
    ['5;a="\x01"\r\nhello\r\n0\r\n\r\n', 'control byte in a quoted value'],
    ['5;a=b"c"\r\nhello\r\n0\r\n\r\n', 'quote inside a token'],
    ['0x5\r\nhello\r\n0\r\n\r\n', '0x prefix'],
    ['5\r\nhello\r\n0\r\nT : v\r\n\r\n', 'whitespace before a trailer colon'],
    ['5\r\nhello\r\n0\r\nT v\r\n\r\n', 'trailer without a colon'],
    ['5\r\nhello\r\n0\r\n T: v\r\n\r\n', 'folded trailer'],
    ['5\r\nhello\r\n0\r\nT: a\x01b\r\n\r\n', 'control byte in a trailer value'],
    ['5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n', 'framing field in a trailer (llhttp refuses it)'],
    ['5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n', 'framing field in a trailer'],
    ['5\r\nhello\r\n0\r\nConnection: close\r\n\r\n', 'connection control in a trailer'],
    ['5\r\nhello\r\n0\r\nHOST: b\r\n\r\n', 'routing field in a trailer'],
  ];
  for (const [body, why] of bad) assert.throws(() => feed(body), HttpParseError, why);
});
