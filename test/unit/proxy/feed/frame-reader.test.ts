/**
 * The agent's reader of binary frames (src/proxy/feed/wire.ts FrameReader): records made straight
 * from a frame's bytes are the records decode() + decodeRecords() make; a frame that does not
 * decode hands on none of its records; a record with a field of the wrong kind is refused alone;
 * an HTTP record is a scratch lent for the call, and what Hubble makes of it (the subscribers'
 * flows, the ring) is what it makes of a record of its own; lists handed on are never changed; two
 * connections' readers never mix their tables or records.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import fc from 'fast-check';
import { clone } from '@bufbuild/protobuf';
import { FRAME_HEADER, FRAME_MARK, RecordDecoder, RecordEncoder } from '../../../../src/proxy/feed/record-codec.ts';
import { createFeedServer } from '../../../../src/proxy/feed/server.ts';
import { decodeRecords, encodeAnswer, encodeRecord, FrameReader, pushAnswer, pushRecord, type WireRecord } from '../../../../src/proxy/feed/wire.ts';
import { NO_REQUEST_TIME, type AccessLogRecord, type DnsAccessRecord, type HttpAccessRecord, type TlsAccessRecord } from '../../../../src/common/access-log.ts';
import { createHubble } from '../../../../src/hubble/index.ts';
import { FlowSchema, type Flow } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { resolver, ENDPOINTS } from '../../hubble/fixtures.ts';

const T = 1_733_000_000_123.25;
const EP = { id: 7, identity: 300, namespace: 'bench', pod: 'client', labels: ['k8s:app=client'] };
const byId = (id: number) => (id === 7 ? EP : undefined);

function http(over: Partial<HttpAccessRecord> = {}): HttpAccessRecord {
  return {
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: T,
    client: { ip: '10.244.1.5', port: 40000, identity: 300, endpoint: EP }, server: { ip: '10.244.1.6', port: 8080, identity: 400 },
    endpointId: 7, method: 'GET', url: 'http://api/v1', host: 'api', path: '/v1', protocol: 'HTTP/1.1', headers: ['host', 'api'], code: 0, latencyNs: 0, ...over,
  };
}
function dns(over: Partial<DnsAccessRecord> = {}): DnsAccessRecord {
  return {
    l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: T, transport: 'UDP', query: 'api.', qtypes: ['A'],
    client: { ip: '10.244.1.5', port: 5353, identity: 300, endpoint: EP }, server: { ip: '10.96.0.10', port: 53, identity: 2 }, ...over,
  };
}
const tls = (over: Partial<TlsAccessRecord> = {}): TlsAccessRecord => ({
  l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: T, client: { ip: '10.244.1.5', port: 40001, identity: 300, endpoint: EP },
  server: { ip: '198.51.100.9', port: 443, identity: 2 }, endpointId: 7, sni: 'api.example.com', version: 'TLSv1.3', alpn: ['h2'], intercepted: true, ...over,
});

/** a record as its values (a lent one copied in the call; absent and undefined fields alike) */
const plain = (r: AccessLogRecord): unknown => JSON.parse(JSON.stringify(r));
/**
 * A record the reader made, as plain(): its requestTimeMs is the wire's number, negative for none
 * (access-log.ts NO_REQUEST_TIME), where decodeRecords leaves the field out.
 */
const readPlain = (r: AccessLogRecord): unknown => {
  const o = plain(r) as { requestTimeMs?: number };
  if (o.requestTimeMs !== undefined && o.requestTimeMs < 0) delete o.requestTimeMs;
  return o;
};

/** a frame of `recs` as the feed client writes it (a DNS answer right after its request as tag 3), payload only */
function frame(enc: RecordEncoder, recs: AccessLogRecord[], lost = 0): Buffer {
  enc.begin(lost);
  recs.forEach((r, i) => {
    const prev = recs[i - 1];
    if (r.l7 === 'dns' && r.type === 'response' && prev?.l7 === 'dns' && prev.type === 'request' && prev.client === r.client) pushAnswer(enc, r, 1);
    else pushRecord(enc, r);
  });
  return enc.end().subarray(FRAME_HEADER);
}

/** what the reader hands on: each record copied in its call */
function readAll(reader: FrameReader, payload: Buffer): { recs: unknown[]; bad: number; lost: number } | undefined {
  const recs: unknown[] = [];
  const f = reader.read(payload, byId, (r) => recs.push(readPlain(r)));
  return f && { recs, ...f };
}

const recordArb: fc.Arbitrary<AccessLogRecord[]> = fc.oneof(
  fc.record({
    type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), dt: fc.double({ min: 0, max: 1e7, noNaN: true }), port: fc.integer({ min: 1, max: 65535 }),
    url: fc.constantFrom('http://api/v1', `http://api/${'x'.repeat(80)}`, 'http://b/'), headers: fc.array(fc.constantFrom('host', 'api', 'content-length', '2', 'x-üñí', ''), { maxLength: 6 }),
    code: fc.constantFrom(0, 200, 403, 503), latencyNs: fc.oneof(fc.nat(), fc.constant(2 ** 40)), requestTimeMs: fc.option(fc.double({ min: 0, max: 2e12, noNaN: true }), { nil: undefined }),
    sni: fc.option(fc.constantFrom('api.example.com', 'b.example'), { nil: undefined }), ep: fc.constantFrom(0, 7, 9),
  }).map((o) => [http({
    type: o.type, verdict: o.verdict, direction: o.direction, timeMs: T + o.dt, url: o.url, headers: o.headers, code: o.code, latencyNs: o.latencyNs, endpointId: o.ep,
    client: { ip: '10.244.1.5', port: o.port, identity: 300, ...(o.ep === 7 ? { endpoint: EP } : {}) },
    ...(o.requestTimeMs !== undefined ? { requestTimeMs: o.requestTimeMs } : {}), ...(o.sni ? { tls: { sni: o.sni, intercepted: true } } : {}),
  })]),
  // a DNS query's two records (the answer as tag 3), or a request alone
  fc.record({ port: fc.integer({ min: 1, max: 65535 }), query: fc.constantFrom('api.', 'x.bench.lab.'), ips: fc.array(fc.constantFrom('1.2.3.4', 'fd00::1'), { maxLength: 2 }), both: fc.boolean(), rcode: fc.nat(5) })
    .map((o) => {
      const client = { ip: '10.244.1.5', port: o.port, identity: 300 };
      const q = dns({ client, query: o.query });
      return o.both ? [q, dns({ client, query: o.query, type: 'response', rcode: o.rcode, ips: o.ips, ttl: 30, cnames: [], rrtypes: ['A'], latencyNs: 4000, timeMs: T + 1 })] : [q];
    }),
  fc.constantFrom<AccessLogRecord[]>([tls()], [tls({ verdict: 'denied', reason: 'no rule', alpn: undefined, intercepted: undefined })],
    // tag 1: an HTTP record with a trace id or a reason
    [http({ traceId: '0af7651916cd43dd8448eb211c80319c' })], [http({ type: 'response', verdict: 'error', code: 503, reason: 'upstream reset' })]),
);

test('property: records made straight from a frame are the records decode() and decodeRecords() make, frame after frame on one table', () => {
  fc.assert(fc.property(fc.array(fc.array(recordArb, { minLength: 1, maxLength: 20 }), { minLength: 1, maxLength: 5 }), fc.nat(100), (frames, lost) => {
    const enc = new RecordEncoder(), dec = new RecordDecoder(), reader = new FrameReader();
    for (const groups of frames) {
      const recs = groups.flat();
      const p = frame(enc, recs, lost);
      const old = decodeRecords(dec.decode(p)!.items as WireRecord[], byId);
      const got = readAll(reader, p)!;
      assert.equal(got.bad, 0);
      assert.equal(old.bad, 0);
      assert.equal(got.lost, lost);
      assert.deepEqual(got.recs, old.records.map(plain));
      assert.deepEqual(got.recs, recs.map(plain), 'as they were made');
    }
  }), { numRuns: 150 });
});

test('the string table starting over inside a frame (a RESET before a record\'s string) is read as decode() reads it', () => {
  const enc = new RecordEncoder(), dec = new RecordDecoder(), reader = new FrameReader();
  // more distinct short strings than the table holds (8192): it starts over mid-frame
  const tableSize = () => (enc as unknown as { table: Map<string, number> }).table.size;
  let wrapped = 0;
  for (let f = 0; f < 30; f++) {
    const before = tableSize();
    const recs = Array.from({ length: 128 }, (_, i) => http({ url: `http://api/${f}/${i}`, path: `/${f}/${i}`, headers: ['host', `h${f}-${i}`, 'x', `${i}`], type: i & 1 ? 'response' : 'request' }));
    const p = frame(enc, recs);
    const old = decodeRecords(dec.decode(p)!.items as WireRecord[], byId);
    assert.deepEqual(readAll(reader, p)!.recs, old.records.map(plain));
    if (tableSize() < before) wrapped++;
  }
  assert.ok(wrapped >= 1, 'the table started over');
});

test('attacker: a frame cut short, or with a byte after its last record, hands on none of its records (the ones before the cut decode fine)', () => {
  const recs = [http(), http({ type: 'response', code: 200, latencyNs: 5 }), dns(), tls()];
  const whole = frame(new RecordEncoder(), recs);
  assert.equal(readAll(new FrameReader(), whole)!.recs.length, 4);
  for (let n = 0; n < whole.length; n++) {
    let handed = 0;
    assert.equal(new FrameReader().read(whole.subarray(0, n), byId, () => { handed++; }), undefined, `cut at ${n}`);
    assert.equal(handed, 0, `cut at ${n}: no record handed on`);
  }
  let handed = 0;
  assert.equal(new FrameReader().read(Buffer.concat([whole, Buffer.from([0x81])]), byId, () => { handed++; }), undefined);
  assert.equal(handed, 0);
  // a record that is not a list, a reference past the table after good records
  for (const tail of [[0x81], [11, 0x30, 0x75]]) {
    const enc = new RecordEncoder();
    enc.begin(0);
    pushRecord(enc, http());
    const f = Buffer.concat([enc.end().subarray(FRAME_HEADER), Buffer.from(tail)]);
    f.writeUInt32LE(2, 4); // two records counted
    handed = 0;
    assert.equal(new FrameReader().read(f, byId, () => { handed++; }), undefined, Buffer.from(tail).toString('hex'));
    assert.equal(handed, 0);
  }
});

test('attacker: a positional record with a field of the wrong kind is refused alone (counted), the frame\'s other records handed on as they were', () => {
  const good = http({ url: 'http://good/' });
  const wrongs: unknown[][] = [];
  const w2 = encodeRecord(http()) as unknown[];
  wrongs.push(Object.assign([...w2], { 4: 'now' })); // timeMs a string
  wrongs.push(Object.assign([...w2], { 5: 7 })); // client ip a number
  wrongs.push(Object.assign([...w2], { 19: ['host', 5] })); // a header a number
  wrongs.push(Object.assign([...w2], { 19: 'host' })); // headers no list
  wrongs.push(Object.assign([...w2], { 14: ['GET'] })); // method a list
  wrongs.push([...(encodeRecord(http({ tls: { sni: 'a', intercepted: true } })) as unknown[]).slice(0, 23), 9]); // tag 4's server name a number
  const w0 = encodeRecord(dns({ type: 'response', rcode: 0, ips: ['1.2.3.4'], ttl: 3, cnames: [], rrtypes: ['A'], latencyNs: 1 })) as unknown[];
  wrongs.push(Object.assign([...w0], { 17: [1] })); // an IP a number
  wrongs.push(Object.assign([...w0], { 15: 'A' })); // qtypes no list
  wrongs.push(Object.assign([...w0], { 14: 0 })); // query a number
  const w5 = encodeRecord(tls()) as unknown[];
  wrongs.push(Object.assign([...w5], { 15: ['h2', 2] })); // alpn with a number
  wrongs.push(Object.assign([...w5], { 13: 0 })); // sni a number
  wrongs.push(['2', ...w2.slice(1)]); // the tag a string
  for (const w of wrongs) {
    const enc = new RecordEncoder();
    enc.begin(0);
    pushRecord(enc, good);
    enc.push(w);
    pushRecord(enc, good);
    const got = readAll(new FrameReader(), enc.end().subarray(FRAME_HEADER))!;
    assert.equal(got.bad, 1, JSON.stringify(w));
    assert.deepEqual(got.recs, [plain(good), plain(good)], JSON.stringify(w));
  }
  // a tag-3 answer pointing at a refused request, at an HTTP record, at itself: no record
  const req = encodeRecord(dns()) as unknown[];
  const ans = [3, 1, 0, T, 0, ['1.2.3.4'], 30, 0, 0, 5, ''];
  for (const [items, bad] of [[[Object.assign([...req], { 14: 0 }), ans], 2], [[encodeRecord(http()), ans], 1], [[[3, 0, ...ans.slice(2)]], 1], [[req, ans], 0]] as const) {
    const enc = new RecordEncoder();
    enc.begin(0);
    for (const w of items) enc.push(w as unknown[]);
    assert.equal(readAll(new FrameReader(), enc.end().subarray(FRAME_HEADER))!.bad, bad, JSON.stringify(items));
  }
});

test('a lent HTTP record: Hubble\'s subscribers and ring get from it what they get from records of their own, frame after frame', () => {
  const hubbleOf = () => createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock', version: 'test', startedAt: 0, capacity: 255 });
  const own = hubbleOf(), lent = hubbleOf();
  const seenOwn: Flow[] = [], seenLent: Flow[] = [];
  const copyOf = (f: Flow): Flow => ({ ...clone(FlowSchema, f), uuid: '' });
  own.onFlow((f) => seenOwn.push(copyOf(f)), { borrows: true });
  lent.onFlow((f) => seenLent.push(copyOf(f)), { borrows: true });
  const enc = new RecordEncoder(), reader = new FrameReader();
  const client = { ip: '10.244.1.5', port: 40000, identity: 12345, endpoint: ENDPOINTS['10.244.1.5'] };
  let n = 0;
  for (let f = 0; f < 6; f++) {
    const recs: AccessLogRecord[] = [];
    for (let i = 0; i < 40; i++, n++) {
      const over: Partial<HttpAccessRecord> = { client: { ...client, port: 40000 + (n % 7) }, timeMs: T + n * 0.37, endpointId: 0, url: `http://api/v${n % 3}`, path: `/v${n % 3}` };
      if (n % 5 === 4) over.tls = { sni: `s${n % 2}.example`, intercepted: true };
      recs.push(n & 1 ? http({ ...over, type: 'response', code: n % 4 ? 200 : 404, latencyNs: 1000 * n, requestTimeMs: T, headers: ['content-length', String(n % 3)] }) : http(over));
      if (n % 9 === 0) recs.push(dns({ client: { ...client, port: 5000 + n }, timeMs: T + n }));
    }
    for (const r of recs) own.ingestRecord(r);
    assert.ok(reader.read(frame(enc, recs), () => undefined, (r) => lent.ingestRecord(r)));
  }
  assert.deepEqual(seenLent, seenOwn);
  const ring = (h: ReturnType<typeof hubbleOf>) => {
    const out: Flow[] = [];
    for (let p = h.ring.oldest(); p < h.ring.end(); p++) { const e = h.ring.at(p); if (e?.kind === 'flow') out.push(copyOf(e.flow)); }
    return out;
  };
  const r = ring(lent);
  assert.ok(r.length > 200);
  assert.deepEqual(r, ring(own), 'the ring holds nothing of a lent record that the next one refills');
});

test('a header list handed on is never changed by later records; an equal one is the same list, a different one its own', () => {
  const enc = new RecordEncoder(), reader = new FrameReader();
  const lists: (readonly string[])[] = [];
  const keep = (r: AccessLogRecord) => { if (r.l7 === 'http') lists.push(r.headers); };
  reader.read(frame(enc, [http({ headers: ['a', '1', 'b', '2'] }), http({ headers: ['a', '1', 'b', '2'] }), http({ headers: ['a', '1', 'b', '3'] }), http({ headers: ['a', '1'] })]), byId, keep);
  reader.read(frame(enc, [http({ headers: ['a', '1', 'b', '3'] }), http({ headers: [] })]), byId, keep);
  assert.deepEqual(lists, [['a', '1', 'b', '2'], ['a', '1', 'b', '2'], ['a', '1', 'b', '3'], ['a', '1'], ['a', '1', 'b', '3'], []]);
  assert.equal(lists[0], lists[1], 'an equal list: the same object');
  assert.notEqual(lists[1], lists[2]);
  // a response's list is never a request's (each has its own last list)
  const resp: (readonly string[])[] = [];
  reader.read(frame(enc, [http({ headers: ['x'] }), http({ type: 'response', headers: ['x'] }), http({ headers: ['x'] })]), byId, (r) => { if (r.l7 === 'http') resp.push(r.headers); });
  assert.deepEqual(resp, [['x'], ['x'], ['x']]);
  assert.equal(resp[0], resp[2]);
});

test('attacker: two connections\' readers (their tables, their scratch records) never mix: each record comes back with its own connection\'s strings and peers', () => {
  const encA = new RecordEncoder(), encB = new RecordEncoder(), readA = new FrameReader(), readB = new FrameReader();
  const a = (i: number) => http({ client: { ip: '10.244.1.5', port: 1000 + i, identity: 300 }, url: `http://a/${i}`, headers: ['host', 'a'] });
  const b = (i: number) => http({ client: { ip: '10.244.9.9', port: 2000 + i, identity: 999 }, url: `http://b/${i}`, headers: ['host', 'b'], tls: { sni: 'b.example', intercepted: true } });
  const got: unknown[] = [];
  for (let f = 0; f < 5; f++) {
    const fa = frame(encA, [a(f), a(f + 10)]), fb = frame(encB, [b(f), b(f + 10)]);
    // interleaved: B's frame read while A's records are being handed on
    readA.read(fa, byId, (r) => { got.push(readPlain(r)); if (got.length % 2 === 1) readB.read(fb, byId, (x) => got.push(readPlain(x))); });
  }
  const want: unknown[] = [];
  for (let f = 0; f < 5; f++) want.push(plain(a(f)), plain(b(f)), plain(b(f + 10)), plain(a(f + 10)));
  assert.deepEqual(got, want);
});

test('feed server with frameRecords: a frame\'s records reach onRecord, its counts onFrame; a frame bad at its end ends the connection with none of its records', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-frames-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const got: unknown[] = [];
  const counts: [number, number][] = [];
  const server = createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', onRecords: () => { throw new Error('binary frames go to frameRecords'); },
    frameRecords: { endpointById: byId, onRecord: (r) => got.push(readPlain(r)), onFrame: (bad, lost) => counts.push([bad, lost]) },
    snapshot: async () => ({ revision: 1, agentPid: process.pid, nodeAddrs: [], endpoints: [], identities: [], mapStates: [], resources: { Secret: [], AIPolicy: [] }, names: [] }),
  });
  await server.start();
  t.after(() => server.stop());
  const sock = connect(socketPath);
  sock.on('error', () => {});
  t.after(() => sock.destroy());
  await new Promise<void>((r) => sock.once('connect', () => r()));
  const enc = new RecordEncoder();
  const withHead = (p: Buffer) => {
    const head = Buffer.alloc(FRAME_HEADER);
    head[0] = FRAME_MARK;
    head.writeUInt32LE(p.length, 1);
    return Buffer.concat([head, p]);
  };
  const recs = [http(), http({ type: 'response', code: 200, latencyNs: 9, requestTimeMs: T }), dns(), tls()];
  sock.write(withHead(frame(enc, recs, 3)));
  const until = async (f: () => boolean) => { const end = Date.now() + 5000; while (!f()) { if (Date.now() > end) throw new Error('not in time'); await new Promise((r) => setTimeout(r, 10)); } };
  await until(() => counts.length === 1);
  assert.deepEqual(got, recs.map(plain));
  assert.deepEqual(counts, [[0, 3]]);
  // good records, then a reference past the table: none of them, and the connection ends
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  const bad = Buffer.concat([frame(enc, [http({ url: 'http://late/' }), http()]), Buffer.from([11, 0x30, 0x75])]);
  bad.writeUInt32LE(3, 4);
  sock.write(withHead(bad));
  await closed;
  assert.equal(got.length, 4);
  assert.equal(counts.length, 1);
});

test('a request read from a frame has requestTimeMs NO_REQUEST_TIME (a number, so a response\'s time is kept in place), a response its request\'s time or NO_REQUEST_TIME when it had none', () => {
  const enc = new RecordEncoder(), reader = new FrameReader();
  const got: (number | undefined)[] = [];
  const recs = [http(), http({ type: 'response', code: 200, latencyNs: 9, requestTimeMs: T + 0.25 }), http({ type: 'response', code: 502, latencyNs: 1 }), http({ type: 'response', code: 200, latencyNs: 2, requestTimeMs: 0 })];
  assert.ok(reader.read(frame(enc, recs), byId, (r) => got.push((r as HttpAccessRecord).requestTimeMs)));
  assert.deepEqual(got, [NO_REQUEST_TIME, T + 0.25, NO_REQUEST_TIME, 0]);
});

test('every positional tag: a record whose fields each hold a value no other field has comes back as it was made through its array (decodeRecords, JSON too) and its frame (FrameReader); a field written or read on one side only, or in another order, fails here', () => {
  const EP9 = { id: 9, identity: 402, namespace: 'bench', pod: 'server', labels: ['k8s:app=server'] };
  const eps = (id: number) => (id === 7 ? EP : id === 9 ? EP9 : undefined);
  const client = { ip: '10.244.1.5', port: 40001, identity: 300, endpoint: EP }, server = { ip: '10.244.1.6', port: 8081, identity: 402, endpoint: EP9 };
  const q = dns({ client, server, type: 'request', transport: 'TCP', verdict: 'denied', direction: 'ingress', timeMs: T + 0.5, query: 'q.lab.', qtypes: ['AAAA', 'A'] });
  const recs: [AccessLogRecord, number][] = [
    // tag 0 with every answer field, a request then its answer (tag 3, the answer's own values)
    [dns({ client, server, type: 'response', transport: 'TCP', verdict: 'error', direction: 'ingress', timeMs: T + 0.25, query: 'r.lab.', qtypes: ['MX'], rcode: 3, ips: ['1.2.3.4', 'fd00::9'], ttl: 61, cnames: ['c.lab.'], rrtypes: ['CNAME', 'A'], latencyNs: 4321, reason: 'why' }), 0],
    [q, 0],
    [dns({ ...q, type: 'response', verdict: 'error', timeMs: T + 0.75, rcode: 2, ips: ['5.6.7.8'], ttl: 62, cnames: ['d.lab.'], rrtypes: ['AAAA'], latencyNs: 8765, reason: 'because' }), 3],
    [http({ client, server, type: 'response', verdict: 'denied', direction: 'ingress', timeMs: T + 1.5, endpointId: 11, method: 'PUT', url: 'http://u/x', host: 'u', path: '/x', protocol: 'HTTP/1.0', headers: ['h', 'v'], code: 418, latencyNs: 99, requestTimeMs: T + 1.25 }), 2],
    [http({ client, server, type: 'response', verdict: 'error', direction: 'ingress', timeMs: T + 2.5, endpointId: 12, method: 'POST', url: 'https://s/y', host: 's', path: '/y', protocol: 'HTTP/1.1', headers: ['k', 'w'], code: 502, latencyNs: 77, requestTimeMs: T + 2.25, tls: { sni: 's.example', intercepted: true } }), 4],
    [tls({ client, server, verdict: 'error', direction: 'ingress', timeMs: T + 3.5, endpointId: 13, sni: 't.example', version: 'TLSv1.2', alpn: ['http/1.1', 'h2'], intercepted: true, resumed: true, reason: 'r', proxyPort: 15001 }), 5],
  ];
  const made = recs.map(([r]) => plain(r));
  const items = recs.map(([r, tag]) => (tag === 3 ? encodeAnswer(r as DnsAccessRecord, 1) : encodeRecord(r)));
  assert.deepEqual(items.map((w) => w[0]), recs.map(([, tag]) => tag), 'each record went with the tag it is here for');
  for (const [how, ws] of [['arrays', items], ['JSON', JSON.parse(JSON.stringify(items)) as WireRecord[]]] as const) {
    const got = decodeRecords(ws, eps);
    assert.equal(got.bad, 0, how);
    assert.deepEqual(got.records.map(plain), made, how);
  }
  const enc = new RecordEncoder();
  enc.begin(0);
  for (const [r, tag] of recs) if (tag === 3) pushAnswer(enc, r as DnsAccessRecord, 1); else pushRecord(enc, r);
  const got: unknown[] = [];
  const f = new FrameReader().read(enc.end().subarray(FRAME_HEADER), eps, (r) => got.push(readPlain(r)));
  assert.deepEqual(f, { bad: 0, lost: 0 }, 'the frame');
  assert.deepEqual(got, made, 'the frame');
});

test('a DNS record\'s lists (query types, answer IPs, CNAMEs, types) equal to the last ones at their place are those lists again; lists handed on are never changed by later records', () => {
  const enc = new RecordEncoder(), reader = new FrameReader();
  const got: DnsAccessRecord[] = [];
  const lists = (r: DnsAccessRecord) => JSON.stringify([r.qtypes, r.ips, r.cnames, r.rrtypes]);
  const snapshot: string[] = [];
  const keep = (r: AccessLogRecord) => { if (r.l7 === 'dns') { got.push(r); snapshot.push(lists(r)); } };
  const ans = (ips: string[], over: Partial<DnsAccessRecord> = {}) => dns({ type: 'response', rcode: 0, ips, ttl: 30, cnames: [], rrtypes: ['A'], latencyNs: 5, ...over });
  const recs = [dns(), ans(['1.2.3.4']), dns(), ans(['1.2.3.4']), dns({ qtypes: ['AAAA'] }), ans(['fd00::1', '1.2.3.4'], { rrtypes: ['AAAA', 'A'] }), ans(['fd00::1', '1.2.3.5'])];
  reader.read(frame(enc, recs), byId, keep);
  reader.read(frame(enc, [dns(), ans(['1.2.3.4'])]), byId, keep);
  assert.deepEqual(got.map(plain), [...recs, dns(), ans(['1.2.3.4'])].map(plain));
  assert.equal(got[0]!.qtypes, got[2]!.qtypes, 'equal query types: the same list');
  assert.equal(got[1]!.ips, got[3]!.ips, 'equal IPs: the same list');
  assert.equal(got[1]!.rrtypes, got[3]!.rrtypes);
  assert.notEqual(got[4]!.qtypes, got[2]!.qtypes);
  assert.notEqual(got[6]!.ips, got[5]!.ips, 'a list differing in its last IP is its own');
  assert.deepEqual(got[5]!.ips, ['fd00::1', '1.2.3.4'], 'and the one before it unchanged');
  assert.deepEqual(got.map(lists), snapshot, 'no list changed after it was handed on');
});
