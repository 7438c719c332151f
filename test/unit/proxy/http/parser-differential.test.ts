/**
 * Differential fuzzing of the request parser against llhttp, Node's own HTTP parser, as Node's
 * HTTP server applies it by default (a `node:http` server on loopback is fed the same bytes).
 * Generated pipelines mix valid requests with the shapes parsers disagree on: odd request lines
 * and targets (absolute-form with odd authorities, fragments, asterisk, authority-form), headers
 * (duplicates, obs-fold, whitespace, control bytes), Content-Length / Transfer-Encoding combos,
 * chunked bodies with extensions, odd sizes and trailers, bare LF.
 *
 *   wherever llhttp refuses a message (or finds it incomplete), we refuse it (or an earlier one),
 *   or never read it (an earlier message closes the connection, or its head is not complete);
 *   where both accept, the method, the target, the body bytes and the path L7 rules see agree
 *   (the path against RFC 3986's reference parse of the target);
 *   we never read further than llhttp does;
 *   cut into reads anywhere, the bytes parse to the same messages and the same refusal.
 *
 * Bounded (a few seconds); MEMBRANE_HTTP_FUZZ_SECS=300 runs longer, MEMBRANE_HTTP_FUZZ_SEED
 * replays a seed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import fc from 'fast-check';
import { BodyTracker, HeadParser, HttpParseError } from '../../../../src/proxy/http/parser.ts';

const SECS = Number(process.env.MEMBRANE_HTTP_FUZZ_SECS ?? 3);
const MIN_RUNS = 200;
const SEED = process.env.MEMBRANE_HTTP_FUZZ_SEED ? Number(process.env.MEMBRANE_HTTP_FUZZ_SEED) : undefined;

interface Msg { method: string; target: string; path: string; body: string }

/**
 * The path L7 rules must see, by RFC 3986 Appendix B's reference regex (path-abempty and query
 * of an absolute-form target, "/" when empty; origin-form as sent) — an oracle independent of
 * the parser under test.
 */
function rfcPath(method: string, target: string): string {
  if (method === 'CONNECT') return '';
  if (target.startsWith('/') || target === '*') return target;
  const m = /^(([^:/?#]+):)?(\/\/([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?$/.exec(target)!;
  return (m[5] || '/') + (m[6] ?? '');
}

// ------------------------------------------------------------------ llhttp (Node's server)

let server: http.Server;
let port = 0;

interface NodeMsg { req: http.IncomingMessage; chunks: Buffer[]; connect?: boolean }
interface ConnLog { msgs: NodeMsg[]; refused?: string; incomplete?: boolean }
/** by the client's port: what the server saw on that connection */
const conns = new Map<number, ConnLog>();

before(async () => {
  // Node's defaults, but for two that only matter at EOF or are checked here the way Node does:
  // requireHostHeader (below, as Node's server does it) and httpAllowHalfOpen (the client sends
  // FIN after its bytes; Node's default would abort requests still being read).
  server = http.createServer({ requireHostHeader: false }, (req, res) => {
    const log = conns.get(req.socket.remotePort!)!;
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      log.refused ??= 'requireHostHeader';
      res.writeHead(400, { connection: 'close' }).end();
      return;
    }
    const m: NodeMsg = { req, chunks: [] };
    log.msgs.push(m);
    req.on('data', (c: Buffer) => m.chunks.push(c));
    req.on('end', () => res.end());
  });
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.on('connection', (sock: net.Socket) => { conns.set(sock.remotePort!, { msgs: [] }); });
  // a CONNECT head llhttp parsed (Node hands it to 'connect', not to the request handler)
  server.on('connect', (req: http.IncomingMessage, sock: net.Socket) => {
    conns.get(sock.remotePort!)?.msgs.push({ req, chunks: [], connect: true });
    sock.destroy();
  });
  server.on('clientError', (err: Error & { code?: string }, sock: net.Socket) => {
    const log = conns.get(sock.remotePort!);
    if (log && !log.refused && !log.incomplete) {
      if (err.code === 'HPE_INVALID_EOF_STATE') log.incomplete = true;
      // bytes after a message that closes the connection: not read (the proxy stops reading too)
      else if (err.code !== 'HPE_CLOSED_CONNECTION') log.refused = err.code ?? 'unknown';
    }
    sock.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

interface NodeOutcome { accepted: Msg[]; end: 'ok' | 'rejected' | 'incomplete'; code?: string }

/** What Node's server made of the bytes: the requests it read completely, then how it stopped. */
function llhttp(wire: Buffer): Promise<NodeOutcome> {
  return new Promise((resolve) => {
    let local = 0;
    const s = net.connect(port, '127.0.0.1', () => { local = s.localPort!; s.end(wire); });
    const timer = setTimeout(() => s.destroy(), 3000);
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      setImmediate(() => setImmediate(() => {
        const log = conns.get(local) ?? { msgs: [] };
        conns.delete(local);
        const accepted: Msg[] = [];
        for (const m of log.msgs) {
          if (!m.req.complete && !m.connect) break;
          accepted.push({ method: m.req.method!, target: m.req.url!, path: rfcPath(m.req.method!, m.req.url!), body: Buffer.concat(m.chunks).toString('latin1') });
        }
        const partial = accepted.length < log.msgs.length;
        resolve(log.refused ? { accepted, end: 'rejected', code: log.refused } : log.incomplete || partial ? { accepted, end: 'incomplete' } : { accepted, end: 'ok' });
      }));
    });
  });
}

// ------------------------------------------------------------------ ours

/**
 * `stopped`: a message asked to close the connection; like the proxy, nothing after it is read.
 * `headPending`: the bytes end inside a head; the proxy forwards nothing of a head before its end.
 */
interface OurOutcome { accepted: Msg[]; error?: HttpParseError; stopped?: boolean; headPending?: boolean }

function dechunk(framed: Buffer): string {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = framed.indexOf('\r\n', i);
    const size = parseInt(framed.toString('latin1', i, eol).split(';')[0]!, 16);
    i = eol + 2;
    if (size === 0) return out;
    out += framed.toString('latin1', i, i + size);
    i += size + 2;
  }
}

/** `wire` as the proxy may read it: cut at `cuts` (offsets modulo its length) into reads. */
function reads(wire: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) if (p > prev) { out.push(wire.subarray(prev, p)); prev = p; }
  out.push(wire.subarray(prev));
  return out;
}

function ours(wire: Buffer, cuts: readonly number[] = []): OurOutcome {
  const hp = new HeadParser({ kind: 'request' });
  const bt = new BodyTracker();
  const out: OurOutcome = { accepted: [] };
  let cur: { method: string; target: string; path: string; chunked: boolean; keepAlive: boolean; upgrade: boolean } | null = null;
  let body: Buffer[] = [];
  try {
    feed: for (const chunk of reads(wire, cuts)) {
      let pos = 0;
      while (pos < chunk.length) {
        if (!cur) {
          const r = hp.push(chunk, pos);
          if (!r) break;
          cur = { method: r.head.method, target: r.head.target, path: r.head.path, chunked: r.head.chunked, keepAlive: r.head.keepAlive, upgrade: r.head.upgrade || r.head.method === 'CONNECT' };
          bt.startRequest(r.head);
          pos = r.bodyStart;
          body = [];
        }
        const end = bt.feed(chunk, pos);
        body.push(chunk.subarray(pos, end));
        pos = end;
        if (!bt.done) break;
        const framed = Buffer.concat(body);
        out.accepted.push({ method: cur.method, target: cur.target, path: cur.path, body: cur.chunked ? dechunk(framed) : framed.toString('latin1') });
        if (!cur.keepAlive) { out.stopped = true; break feed; } // the proxy reads no further (readStopped)
        // llhttp hands what follows an upgrade or CONNECT to the new protocol; the proxy goes on
        // parsing it as HTTP until a 101 (tested in upgrade.test.ts), so the comparison ends here
        if (cur.upgrade) { out.stopped = true; break feed; }
        cur = null;
      }
    }
    if (!cur && !out.stopped && hp.pending > 0) out.headPending = true;
  } catch (e) {
    if (!(e instanceof HttpParseError)) throw e;
    out.error = e;
  }
  return out;
}

/** The outcome without the error object (for comparing two parses). */
const outcome = (o: OurOutcome) => ({ accepted: o.accepted, error: o.error?.reason, stopped: !!o.stopped, headPending: !!o.headPending });

// ------------------------------------------------------------------ generators

const pick = <T>(common: T[], odd: T[], oddWeight = 1) =>
  fc.oneof({ weight: 30, arbitrary: fc.constantFrom(...common) }, { weight: oddWeight, arbitrary: fc.constantFrom(...odd) });

const method = pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'QUERY', 'M-SEARCH', 'PURGE'], ['get', 'FOO', 'GET\t', 'CONNECTX', 'G@T', '', 'CONNECT']);
const pathChar = pick(['a', 'b', '/', '1', '.', '-', '_', '~'], ['?', '&', '=', '%41', '%', '%zz', '#', '*', ':', '@', '{', '|', '}', '^', '`', '"', '<', '>', '\\', '[', ']', '!', '$', "'", '(', ')', '+', ',', ';', '\x7f', '\x80', '\t']);
const originForm = fc.array(pathChar, { maxLength: 12 }).map((cs) => `/${cs.join('')}`);
const scheme = pick(['http', 'https'], ['HTTP', 'Https', 'ftp', 'h2', 'ws', 'http:', '1http', '']);
const host = pick(['api.openai.com', 'a', 'A.B', '1.2.3.4', '[::1]', 'a:80', 'a:8080', 'a:443'], ['', 'u@a', 'u:p@a', 'a:', 'a:8a', 'a:99999', 'a%41b', 'a%4', 'a\\b', "a!$&'()*+,;=b", '[zz]', '[::1', 'a_b', 'a~b']);
const rest = pick(['', '/', '/v1/models', '?/v1/models', '/x?y', '/x?'], ['#f', '/x#f', '//x', '/a b'.replace(' ', '%20'), '?#']);
const absoluteForm = fc.tuple(scheme, pick(['://'], [':/', ':', '//', ':///']), host, rest).map(([s, sep, h, r]) => ({ target: `${s}${sep}${h}${r}`, authority: h }));
const target = fc.oneof(
  { weight: 10, arbitrary: originForm.map((t) => ({ target: t, authority: '' })) },
  { weight: 6, arbitrary: absoluteForm },
  { weight: 1, arbitrary: fc.constantFrom('*', 'a:443', 'v1/models', 'a:b', '//a/b', '/a\x00').map((t) => ({ target: t, authority: '' })) },
);
const version = pick(['HTTP/1.1', 'HTTP/1.0'], ['HTTP/2.0', 'HTTP/0.9', 'HTTP/1.2', 'http/1.1', 'HTTP/1.1 ', 'HTTP/1', 'HTTP/11']);
const sep = pick([' '], ['  ', '\t']);
const eol = pick(['\r\n'], ['\n', '\r', ' \r\n']);
const hostHeader = pick(['same', 'a'], ['none', 'empty', 'dup', 'bad', 'upper', 'port']);
const headerLine = fc.tuple(
  pick(['X-A', 'accept', 'Content-Type', 'x-b'], ['X A', 'X\t', '', 'X:', 'X_y', 'X.y', 'ü']),
  pick([': v', ': ', ':v', ':  a b  ', ': a\tb'], [': \xff', ': a\x01b', ': a\x7fb', ': a\rb', ' : v', '\t: v', ': a\x00']),
  eol,
  fc.oneof({ weight: 15, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom(' folded\r\n', '\tfolded\r\n') }),
).map(([n, v, e, fold]) => `${n}${v}${e}${fold}`);
const connection = pick(['', 'Connection: keep-alive\r\n', 'Connection: close\r\n'], ['Connection: x-close\r\n', 'Connection: Keep-Alive, close\r\n', 'Connection: upgrade\r\n', 'Connection: close\r\nConnection: keep-alive\r\n', 'Connection: Upgrade\r\nUpgrade: websocket\r\n', 'Upgrade: websocket\r\n']);
const payload = fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x'));

const chunkSize = (n: number) => pick([n.toString(16), n.toString(16).toUpperCase()], [`0${n.toString(16)}`, `${n.toString(16)} `, `${n.toString(16)}\t`, `0x${n.toString(16)}`, `-${n}`, `${'0'.repeat(14)}${n.toString(16)}`, ` ${n.toString(16)}`]);
const chunkExt = pick([''], [';a', ';a=b', ';a="b c"', ';a="b\\"c"', ';a;b=c', ';a="\xff"', ';a=b;c="d"', '; a=b', ';a =b', ';a= b', ';=b', ';a=', ';', ';a=b;', ';a="b\r\nc"', ';a="b\rc"', ';a="\x01"', ';a="\\\x01"', ';a=b c', ';a=b\x01', ';a=b"c"', ';a="b"c'], 6);
const trailer = pick([''], ['T: v\r\n', 'T:v\r\n', 'T : v\r\n', ' T: v\r\n', 'T: \x01\r\n', 'T v\r\n', ': v\r\n', 'T: v\n', 'T: a\r\nU: b\r\n', 'Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n', 'Connection: close\r\n', 'Host: b\r\n'], 3);
const chunked = fc.tuple(payload, fc.integer({ min: 1, max: 3 })).chain(([body, pieces]) => {
  const size = Math.max(1, Math.ceil(body.length / pieces));
  const parts: string[] = [];
  for (let i = 0; i < body.length; i += size) parts.push(body.slice(i, i + size));
  return fc.tuple(
    fc.tuple(...parts.map((p) => fc.tuple(chunkSize(p.length), chunkExt, pick(['\r\n'], ['\n', '\r\n\r\n'])))),
    chunkExt, trailer, pick(['\r\n'], ['\n', '']),
  ).map(([lines, lastExt, tr, end]) => parts.map((p, i) => `${lines[i]![0]}${lines[i]![1]}\r\n${p}${lines[i]![2]}`).join('') + `0${lastExt}\r\n${tr}${end}`);
});
const framing = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ headers: '', body: '' }) },
  { weight: 6, arbitrary: fc.tuple(payload, pick(['n'], ['0n', '+n', 'n ', 'n,n', 'dup', 'dupdiff', '-1', 'x'])).map(([b, v]) => {
    const n = String(b.length);
    const value = v.replace(/n/g, n);
    const headers = v === 'dup' ? `Content-Length: ${n}\r\nContent-Length: ${n}\r\n` : v === 'dupdiff' ? `Content-Length: ${n}\r\nContent-Length: ${n}1\r\n` : `Content-Length: ${value}\r\n`;
    return { headers, body: b };
  }) },
  { weight: 6, arbitrary: fc.tuple(chunked, pick(['chunked', 'Chunked'], [' chunked ', 'chunked, chunked', 'gzip, chunked', 'identity', 'dup', 'chunked\r\nContent-Length: 3', 'chunked, identity'])).map(([b, te]) => ({
    headers: te === 'dup' ? 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n' : `Transfer-Encoding: ${te}\r\n`, body: b,
  })) },
);
const request = fc.record({
  pre: pick([''], ['\r\n', '\n', ' ']), method, sep1: sep, target, sep2: sep, version, eol1: eol,
  hostHeader, extra: fc.array(headerLine, { maxLength: 3 }), connection, framing, end: pick(['\r\n'], ['\n', '']),
}).map((r) => {
  const auth = r.target.authority || 'a';
  const hostLine = { same: `Host: ${auth}\r\n`, a: 'Host: a\r\n', none: '', empty: 'Host: \r\n', dup: 'Host: a\r\nHost: a\r\n', bad: 'Host: a b\r\n', upper: `Host: ${auth.toUpperCase()}\r\n`, port: `Host: ${auth}:80\r\n` }[r.hostHeader];
  return `${r.pre}${r.method}${r.sep1}${r.target.target}${r.sep2}${r.version}${r.eol1}${hostLine}${r.extra.join('')}${r.connection}${r.framing.headers}${r.end}${r.framing.body}`;
});

// ------------------------------------------------------------------ the property

test(`differential against llhttp (Node's HTTP server): it refuses ⇒ we refuse; both accept ⇒ same method, target, path, body (${SECS} s)`, async (t) => {
  let runs = 0, bothAccepted = 0, nodeRefused = 0;
  const property = fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 3 }), fc.array(fc.nat(), { maxLength: 6 }), async (reqs, cuts) => {
    runs++;
    const wire = Buffer.from(reqs.join(''), 'latin1');
    const [node, we] = [await llhttp(wire), ours(wire)];
    // the proxy reads what arrives: any cut into reads gives the same messages and the same refusal
    assert.deepEqual(outcome(ours(wire, cuts)), outcome(we), `cut at ${JSON.stringify(cuts)}: ${JSON.stringify(wire.toString('latin1'))}`);
    const ctx = () => `${JSON.stringify(wire.toString('latin1'))}\nllhttp: ${JSON.stringify(node)}\nours: ${JSON.stringify({ accepted: we.accepted, stopped: we.stopped, headPending: we.headPending, error: we.error && `${we.error.status} ${we.error.reason}` })}`;
    const common = Math.min(node.accepted.length, we.accepted.length);
    for (let i = 0; i < common; i++) assert.deepEqual(we.accepted[i], node.accepted[i], `message ${i} differs\n${ctx()}`);
    bothAccepted += common;
    if (node.end === 'rejected') {
      nodeRefused++;
      // refusing it, closing before it, or still waiting for the end of its head (nothing of it
      // forwarded) are all fine; a body llhttp refuses must be refused by us too
      assert.ok((we.error || we.stopped || we.headPending) && we.accepted.length <= node.accepted.length, `llhttp refused message ${node.accepted.length} (${node.code}), we did not\n${ctx()}`);
    }
    if (node.end === 'incomplete') assert.ok(we.accepted.length <= node.accepted.length, `llhttp found message ${node.accepted.length} incomplete, we accepted it\n${ctx()}`);
    // llhttp read everything and stopped where the connection closes: we read no more than it
    if (node.end === 'ok') assert.ok(we.accepted.length <= node.accepted.length, `we read past where llhttp stopped\n${ctx()}`);
  });
  const seed = SEED !== undefined ? { seed: SEED } : {};
  // fc.assert calls an interrupt before the first run a failure: a counterexample is one
  const timed = await fc.check(property, { numRuns: 1_000_000, interruptAfterTimeLimit: SECS * 1000, markInterruptAsFailure: false, ...seed });
  if (timed.failed && timed.counterexample !== null) throw new Error(fc.defaultReportMessage(timed));
  // ~1000 runs in 3 s on an idle machine, a handful when a busy machine stalls this process (the
  // suite once got 8): the time limit only bounds the search, a floor of runs is made up by count
  if (runs < MIN_RUNS) await fc.assert(property, { numRuns: MIN_RUNS - runs, ...seed });
  t.diagnostic(`${runs} pipelines, ${bothAccepted} messages accepted by both, ${nodeRefused} refused by llhttp`);
  // the generators must exercise both sides of the property
  assert.ok(bothAccepted > runs / 5, `${bothAccepted} messages accepted by both in ${runs} runs`);
  assert.ok(nodeRefused > runs / 10, `${nodeRefused} runs refused by llhttp of ${runs}`);
});

test('the differential harness sees llhttp refuse what the issue found we accepted', async () => {
  const te = 'POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n';
  for (const wire of [`${te}5 \r\nhello\r\n0\r\n\r\n`, `${te}5;a="b\r\nc"\r\nhello\r\n0\r\n\r\n`]) {
    const node = await llhttp(Buffer.from(wire, 'latin1'));
    assert.equal(node.end, 'rejected', wire);
    assert.ok(ours(Buffer.from(wire, 'latin1')).error, wire);
  }
  const ok = await llhttp(Buffer.from(`${te}5;a="b c"\r\nhello\r\n0\r\nT: v\r\n\r\n`, 'latin1'));
  assert.deepEqual(ok, { accepted: [{ method: 'POST', target: '/v1/x', path: '/v1/x', body: 'hello' }], end: 'ok' });
  // the absolute-form target of the issue: llhttp takes it, the path is `/?/v1/models` for both
  const abs = Buffer.from('GET http://api.openai.com?/v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n', 'latin1');
  assert.equal((await llhttp(abs)).accepted[0]!.path, '/?/v1/models');
  assert.equal(ours(abs).accepted[0]!.path, '/?/v1/models');
});
