/**
 * The access records' binary frame (src/proxy/feed/record-codec.ts): any WireRecord comes back as
 * it went, a known string as the same string object, the string table starts over in step on
 * both ends; a frame that is not one is refused whole, and over a real feed socket the agent takes
 * records both as binary frames and as JSON lines, and ends a connection that sends a bad frame.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import fc from 'fast-check';
import { FRAME_HEADER, FRAME_MARK, RecordDecoder, RecordEncoder, TABLE_MAX } from '../../../../src/proxy/feed/record-codec.ts';
import { createFeedServer } from '../../../../src/proxy/feed/server.ts';
import { createFeedClient } from '../../../../src/proxy/feed/client.ts';
import { decodeRecord, encodeAnswer, encodeRecord, pushAnswer, pushRecord } from '../../../../src/proxy/feed/wire.ts';
import type { AccessLogRecord } from '../../../../src/common/access-log.ts';

const until = async (f: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

function frame(enc: RecordEncoder, recs: unknown[][], lost = 0): Buffer {
  enc.begin(lost);
  for (const r of recs) enc.push(r);
  return enc.end();
}
const payload = (f: Buffer) => f.subarray(FRAME_HEADER);

const value: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -1, max: 200_000 }), fc.nat(), fc.constant(2 ** 32 - 1), fc.constant(2 ** 32), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.constant(1733_000_000_123.25),
  fc.string(), fc.string({ minLength: 65, maxLength: 300 }), fc.constantFrom('q1.bench.lab.', '10.244.0.5', 'A', 'Ünïcødé.example.', ''),
  fc.array(fc.string(), { maxLength: 5 }), fc.constant(0),
  fc.record({ l7: fc.constant('tls'), sni: fc.string(), alpn: fc.array(fc.string(), { maxLength: 3 }) }),
);

test('any record of numbers, strings, lists and objects comes back as it went, frame after frame on one table (property)', () => {
  fc.assert(fc.property(fc.array(fc.array(fc.array(value, { minLength: 1, maxLength: 25 }), { maxLength: 20 }), { minLength: 1, maxLength: 6 }), fc.nat(1000), (frames, lost) => {
    const enc = new RecordEncoder(), dec = new RecordDecoder();
    for (const recs of frames) {
      const f = frame(enc, recs, lost);
      assert.equal(f[0], FRAME_MARK);
      assert.equal(f.readUInt32LE(1), f.length - FRAME_HEADER);
      const got = dec.decode(payload(f));
      assert.ok(got);
      assert.equal(got.lost, lost);
      // -0 travels as 0 (a whole number): JSON made it 0 too
      assert.deepEqual(got.items, JSON.parse(JSON.stringify(recs)));
    }
  }), { numRuns: 200 });
});

test('a known short string decodes to the same string object; long ones are sent whole each time', () => {
  const enc = new RecordEncoder(), dec = new RecordDecoder();
  const long = 'x'.repeat(100);
  const a = dec.decode(payload(frame(enc, [[0, 'q1.bench.lab.', long]])))!.items[0]!;
  const b = dec.decode(payload(frame(enc, [[0, `q1.bench.lab${'.'}`, long]])))!.items[0]!;
  assert.equal(a[1], b[1]);
  assert.ok(Object.is(a[1], b[1]));
  // the second frame refers to the name (2-byte reference), the long string is there whole again
  const f2 = frame(enc, [[0, 'q1.bench.lab.', long]]);
  assert.ok(f2.length < FRAME_HEADER + 8 + 1 + 5 + 1 + 3 + 5 + 100 + 1);
  assert.ok(f2.length > 100);
});

test('the string table starts over on both ends when full, in step', () => {
  const enc = new RecordEncoder(), dec = new RecordDecoder();
  const names = Array.from({ length: TABLE_MAX + 500 }, (_, i) => `f${i}.fresh.lab.`);
  for (let i = 0; i < names.length; i += 100) {
    // the name twice: a reference to the table the record's own RESET began, read in the same list
    const recs = names.slice(i, i + 100).map((n) => [0, n, names[0]!, n]);
    const got = dec.decode(payload(frame(enc, recs)));
    assert.ok(got, `frame at ${i}`);
    assert.deepEqual(got.items, recs);
  }
});

test('attacker: a frame that is not one is refused whole (unknown tag, lengths past the end, a reference past the table, trailing bytes, too deep)', () => {
  const good = payload(frame(new RecordEncoder(), [[0, 'a.example.', 7]]));
  assert.ok(new RecordDecoder().decode(good));
  const bad: Buffer[] = [
    Buffer.alloc(0),
    Buffer.from([0, 0, 0, 0]),
    Buffer.concat([good, Buffer.from([0x81])]), // trailing value not counted
    good.subarray(0, good.length - 1),
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 0x7f]), // unknown tag
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 11, 5, 0]), // STR_REF16 past the (empty) table
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 1, 0]), // STR_REF past the table
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 7, 1, 0, 0, 0, 11, 0, 0]), // STR_REF16 in a list, past the (empty) table
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 7, 2, 0, 0, 0, 0x81, 11, 0]), // STR_REF16 in a list, cut short
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff]), // a list longer than the frame
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 4, 0xff, 0, 0, 0, 0x61]), // a string past the end
    Buffer.from([0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]), // more records than bytes
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 0x81]), // a record that is not a list
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 8, 3, 0, 0, 0, 0x7b, 0x7b, 0x7d]), // JSON that is not
    Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, ...Array(8).fill([7, 1, 0, 0, 0]).flat(), 0x81]), // lists 8 deep
  ];
  for (const b of bad) assert.equal(new RecordDecoder().decode(b), undefined, b.toString('hex'));
});

test('feed: records reach the agent as binary frames once it says so; JSON lines still taken; a bad frame ends the connection without a record', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-bin-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const got: AccessLogRecord[] = [];
  const server = createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', onRecords: (items) => { for (const w of items) got.push(decodeRecord(w, () => undefined)!); },
    snapshot: async () => ({ revision: 1, agentPid: process.pid, nodeAddrs: [], endpoints: [], identities: [], mapStates: [], resources: { Secret: [], AIPolicy: [] }, names: [] }),
  });
  await server.start();
  t.after(() => server.stop());
  // what the proxy writes, seen by wrapping its socket's write: binary frames after the caps
  const writes: (string | Buffer)[] = [];
  const { Socket } = await import('node:net');
  const write = Socket.prototype.write;
  Socket.prototype.write = function (this: InstanceType<typeof Socket>, ...a: Parameters<typeof write>) { writes.push(a[0] as string | Buffer); return write.apply(this, a); } as typeof write;
  t.after(() => { Socket.prototype.write = write; });
  let snaps = 0;
  const client = createFeedClient({ socketPath, retryMs: 20, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  await new Promise((r) => setTimeout(r, 50));
  const dns = (n: number): AccessLogRecord => ({
    l7: 'dns', type: 'request', direction: 'egress', timeMs: 1_733_000_000_000 + n, transport: 'UDP', verdict: 'forwarded', query: `q${n % 3}.bench.lab.`, qtypes: ['A'],
    client: { ip: '10.244.0.5', port: 30000 + n, identity: 300 }, server: { ip: '10.244.0.9', port: 53, identity: 400 },
  });
  writes.length = 0;
  for (let i = 0; i < 10; i++) client.record(dns(i));
  await until(() => got.length === 10);
  Socket.prototype.write = write;
  assert.ok(writes.some((w) => Buffer.isBuffer(w) && w[0] === FRAME_MARK), 'records went as a binary frame');
  assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => decodeRecord(encodeRecord(dns(i)), () => undefined)));
  // a proxy that keeps JSON lines (no caps understood) is read as before
  const old = connect(socketPath);
  old.on('error', () => {});
  old.write(`${JSON.stringify({ t: 'records', items: [encodeRecord(dns(10))] })}\n`);
  await until(() => got.length === 11);
  assert.equal(got[10]!.timeMs, 1_733_000_000_010);
  // a binary frame that does not decode: the connection ends, no record
  const closed = new Promise<void>((r) => old.on('close', () => r()));
  const junk = Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 0x7f]);
  const head = Buffer.alloc(FRAME_HEADER);
  head[0] = FRAME_MARK;
  head.writeUInt32LE(junk.length, 1);
  old.write(Buffer.concat([head, junk]));
  await closed;
  assert.equal(got.length, 11);
});

test('a record written as it comes (pushRecord) is the same bytes as its WireRecord pushed, frame after frame on one table (property)', () => {
  const peer = fc.record({
    ip: fc.constantFrom('10.244.1.5', '10.96.0.10', 'fd00::5', ''), port: fc.integer({ min: 0, max: 65535 }), identity: fc.integer({ min: 0, max: 70000 }),
    endpoint: fc.option(fc.record({ id: fc.integer({ min: 0, max: 70000 }) }), { nil: undefined }),
  }, { requiredKeys: ['ip', 'port', 'identity'] });
  const str = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ minLength: 65, maxLength: 200 }), fc.constantFrom('GET', 'Ünïcødé', ''));
  const http = fc.record({
    l7: fc.constant('http' as const), type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), timeMs: fc.oneof(fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true }), fc.nat()), endpointId: fc.oneof(fc.nat(), fc.constant(2 ** 32)),
    method: str, url: str, host: str, path: str, protocol: fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
    headers: fc.array(str, { maxLength: 8 }), code: fc.integer({ min: 0, max: 599 }), latencyNs: fc.oneof(fc.nat(), fc.double({ min: 0, max: 1e12, noNaN: true })),
  }, { requiredKeys: ['l7', 'type', 'verdict', 'direction', 'timeMs', 'endpointId', 'method', 'url', 'host', 'path', 'protocol', 'headers', 'code', 'latencyNs'] });
  // as the unit tests' records: fields missing (they travel as JSON null, as pushed arrays carry them)
  const partial = fc.record({ l7: fc.constant('http' as const), type: fc.constantFrom('request' as const, 'response' as const), timeMs: fc.nat(), method: str }, { requiredKeys: ['l7', 'type', 'timeMs'] });
  const optional = fc.record({
    requestTimeMs: fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true }), traceId: fc.stringMatching(/^[0-9a-f]{32}$/), reason: str,
    tls: fc.oneof(fc.record({ sni: str, intercepted: fc.boolean() }), fc.record({ sni: str, intercepted: fc.constant(true), extra: fc.nat() })), headerActions: fc.array(str, { maxLength: 2 }),
  }, { requiredKeys: [] });
  const dns = fc.record({
    l7: fc.constant('dns' as const), type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), timeMs: fc.oneof(fc.nat(), fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true })), transport: fc.constantFrom('UDP' as const, 'TCP' as const),
    query: str, qtypes: fc.array(str, { maxLength: 2 }),
    // an answer's fields (each may be absent)
    rcode: fc.integer({ min: 0, max: 23 }), ips: fc.array(fc.oneof(fc.constantFrom('198.51.100.7', 'fd00::7'), str), { maxLength: 3 }), ttl: fc.integer({ min: 0, max: 2 ** 31 }),
    cnames: fc.array(str, { maxLength: 2 }), rrtypes: fc.array(fc.constantFrom('A', 'AAAA', 'CNAME'), { maxLength: 3 }), latencyNs: fc.oneof(fc.nat(), fc.integer({ min: 0, max: 2 ** 50 })), reason: fc.string({ minLength: 1, maxLength: 30 }), // '' travels as no reason
  }, { requiredKeys: ['l7', 'type', 'verdict', 'direction', 'timeMs', 'transport', 'query', 'qtypes'] });
  const rec = fc.oneof(
    fc.tuple(http, optional, peer, peer).map(([h, o, c, s]) => ({ ...h, ...o, client: c, server: s })),
    fc.tuple(http, peer, peer).map(([h, c, s]) => ({ ...h, client: c, server: s })),
    fc.tuple(partial, peer, peer).map(([h, c, s]) => ({ ...h, client: c, server: s })),
    fc.tuple(dns, peer, peer).map(([d, c, s]) => ({ ...d, client: c, server: s })),
  ) as fc.Arbitrary<AccessLogRecord>;
  fc.assert(fc.property(fc.array(fc.array(rec, { maxLength: 12 }), { minLength: 1, maxLength: 4 }), fc.nat({ max: 5 }), (frames, lost) => {
    // one encoder per way, kept across frames: the string tables must stay in step too
    const old = new RecordEncoder(), now = new RecordEncoder(), dec = new RecordDecoder();
    for (const recs of frames) {
      old.begin(lost);
      now.begin(lost);
      let answers = 0;
      recs.forEach((r, i) => {
        old.push(encodeRecord(r));
        pushRecord(now, r);
        // a DNS answer after its request in the same frame (tag 3) written value by value too
        if (r.l7 === 'dns' && i > 0) {
          old.push(encodeAnswer(r, i));
          pushAnswer(now, r, i);
          answers++;
        }
      });
      const a = old.end(), b = now.end();
      assert.deepEqual(b, a);
      assert.equal(now.records(), recs.length + answers);
      if (answers) return; // the whole records' own round trip: below
      // and the whole ones decode to the records as they were made
      const back = dec.decode(payload(b))!.items.map((w) => decodeRecord(w as never, () => undefined));
      recs.forEach((r, i) => {
        if (r.l7 === 'http' && r.protocol === undefined) return;
        const plain = (x: unknown) => JSON.parse(JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))) as unknown;
        assert.deepEqual(plain(back[i]), plain({ ...r, client: { ...r.client, endpoint: undefined }, server: { ...r.server, endpoint: undefined } }));
      });
    }
  }), { numRuns: 500 });
});

test('a record whose strings use up its reservation near the end of the encoder\'s buffer still gets room for the numbers after them', () => {
  // push() reserves ~9 bytes a value, but a new string of 20 characters takes 25: a record of many
  // such strings and numbers after them, started at every offset near the 64 KiB buffer's end
  // (without room for each number, writeDoubleLE threw past the end: the record and the frame broken)
  for (let o = 0; o < 1500; o++) {
    for (const filler of [100, 37]) {
      const enc = new RecordEncoder(), dec = new RecordDecoder();
      enc.begin(0);
      const recs: unknown[][] = [];
      let u = 0;
      while (enc.size() + filler + 20 < 65536 - o) {
        const r = ['x'.repeat(filler) + String(u++)];
        enc.push(r);
        recs.push(r);
      }
      const last = [...Array.from({ length: 12 }, (_, i) => `s${o}-${i}-abcdefgh`), `q${o}`, 1.5, 1.5, 1.5, 1.5];
      enc.push(last);
      recs.push(last);
      assert.deepEqual(dec.decode(payload(enc.end()))!.items, recs);
    }
  }
});

test('tag 1 (any record no positional tag carries): the peers through peerFields are the array and the frame bytes the inline peers made (property)', () => {
  // encodeRecord's tag-1 array as it was written before peerFields served it
  const inline = (r: AccessLogRecord): unknown[] => {
    const { client: c, server: s, ...rest } = r;
    return [1, rest, c.ip, c.port, c.identity, c.endpoint?.id ?? 0, s.ip, s.port, s.identity, s.endpoint?.id ?? 0];
  };
  const peer = fc.record({
    ip: fc.constantFrom('10.244.1.5', 'fd00::5', ''), port: fc.integer({ min: 0, max: 65535 }), identity: fc.integer({ min: 0, max: 70000 }),
    endpoint: fc.option(fc.record({ id: fc.integer({ min: 0, max: 70000 }) }), { nil: undefined }), labels: fc.option(fc.array(fc.string({ maxLength: 12 }), { maxLength: 2 }), { nil: undefined }),
  }, { requiredKeys: ['ip', 'port', 'identity'] });
  const base = { verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const), direction: fc.constantFrom('egress' as const, 'ingress' as const), timeMs: fc.nat(), endpointId: fc.nat() };
  const tls = fc.record({
    ...base, l7: fc.constant('tls' as const), sni: fc.string({ maxLength: 30 }), version: fc.constant('TLS 1.3'), alpn: fc.array(fc.constantFrom('h2', 'http/1.1'), { maxLength: 2 }),
    intercepted: fc.boolean(), resumed: fc.boolean(), reason: fc.string({ maxLength: 20 }), proxyPort: fc.nat(65535),
  }, { requiredKeys: ['l7', 'verdict', 'direction', 'timeMs', 'endpointId'] });
  // HTTP with a field no positional tag has: a trace, a reason, header actions or a TLS that is not intercepted
  const http = fc.record({
    ...base, l7: fc.constant('http' as const), type: fc.constantFrom('request' as const, 'response' as const), method: fc.constant('GET'), url: fc.string({ maxLength: 30 }),
    host: fc.constant('h'), path: fc.constant('/'), protocol: fc.constant('HTTP/1.1'), headers: fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 }), code: fc.nat(599), latencyNs: fc.nat(),
    traceId: fc.stringMatching(/^[0-9a-f]{32}$/), reason: fc.string({ maxLength: 20 }), headerActions: fc.array(fc.string({ maxLength: 8 }), { maxLength: 2 }),
    tls: fc.record({ sni: fc.string({ maxLength: 20 }), intercepted: fc.constant(false) }),
  }, { requiredKeys: ['l7', 'type', 'verdict', 'direction', 'timeMs', 'endpointId', 'method', 'url', 'host', 'path', 'protocol', 'headers', 'code', 'latencyNs'] });
  const rec = fc.tuple(fc.oneof(tls, http), peer, peer).map(([r, client, server]) => ({ ...r, client, server }) as AccessLogRecord);
  let tag1 = 0;
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 10 }), (recs) => {
    const old = new RecordEncoder(), now = new RecordEncoder();
    old.begin(0);
    now.begin(0);
    for (const r of recs) {
      const w = encodeRecord(r);
      if (w[0] !== 1) continue; // an HTTP record without its optional fields goes as tag 2
      tag1++;
      assert.deepEqual(w, inline(r));
      old.push(inline(r));
      pushRecord(now, r);
    }
    assert.deepEqual(now.end(), old.end());
  }), { numRuns: 300 });
  assert.ok(tag1 > 1000, `tag-1 records were encoded (${tag1})`);
});

test('a TLS record travels positionally (tag 5) when its fields are the ones the proxies set, as its object (tag 1) otherwise or to an agent that does not read tag 5; either way it comes back as it was made (property)', () => {
  const peer = fc.record({
    ip: fc.constantFrom('10.244.1.5', 'fd00::5', '127.0.0.1'), port: fc.integer({ min: 0, max: 65535 }), identity: fc.integer({ min: 0, max: 70000 }),
    endpoint: fc.option(fc.record({ id: fc.integer({ min: 0, max: 70000 }) }), { nil: undefined }),
  }, { requiredKeys: ['ip', 'port', 'identity'] });
  const str = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('api.bench.test', 'TLS 1.3', ''), fc.string({ minLength: 65, maxLength: 100 }));
  const tls = fc.record({
    l7: fc.constant('tls' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const), direction: fc.constantFrom('egress' as const, 'ingress' as const),
    timeMs: fc.oneof(fc.nat(), fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true })), endpointId: fc.oneof(fc.nat(), fc.constant(2 ** 32)),
    sni: str, version: str, alpn: fc.array(fc.constantFrom('h2', 'http/1.1', ''), { maxLength: 3 }), intercepted: fc.oneof(fc.constant(true), fc.boolean()), resumed: fc.oneof(fc.constant(true), fc.boolean()),
    reason: str, proxyPort: fc.oneof(fc.nat(65535), fc.constant(70000), fc.constant(1.5)),
    // a field no proxy sets today: such a record goes as its object
    extra: fc.nat(),
  }, { requiredKeys: ['l7', 'verdict', 'direction', 'timeMs', 'endpointId'] });
  // as the SNI filter and the interceptor make them: non-empty strings, true flags, a port
  const full = fc.string({ minLength: 1, maxLength: 30 });
  const asMade = fc.record({
    l7: fc.constant('tls' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const), direction: fc.constantFrom('egress' as const, 'ingress' as const),
    timeMs: fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true }), endpointId: fc.nat(), sni: full, version: fc.constant('TLS 1.3'), alpn: fc.array(fc.constantFrom('h2', 'http/1.1'), { maxLength: 2 }),
    intercepted: fc.constant(true), resumed: fc.constant(true), reason: full, proxyPort: fc.nat(65535),
  }, { requiredKeys: ['l7', 'verdict', 'direction', 'timeMs', 'endpointId'] });
  const rec = fc.tuple(fc.oneof(asMade, tls), peer, peer).map(([r, client, server]) => ({ ...r, client, server }) as unknown as AccessLogRecord);
  const plain = (x: unknown) => JSON.parse(JSON.stringify(x)) as unknown;
  let tag5 = 0, tag1 = 0;
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 10 }), (recs) => {
    for (const tags of [5, 4]) {
      const a = new RecordEncoder(), b = new RecordEncoder(), dec = new RecordDecoder();
      a.begin(0);
      b.begin(0);
      for (const r of recs) {
        const w = encodeRecord(r, tags);
        const t = r as unknown as Record<string, unknown>;
        const positional = !('extra' in t) && [t.sni, t.version, t.reason].every((v) => v === undefined || (typeof v === 'string' && v !== ''))
          && t.intercepted !== false && t.resumed !== false && (t.proxyPort === undefined || (Number.isInteger(t.proxyPort) && (t.proxyPort as number) <= 65535)) && (r as { endpointId: number }).endpointId >= 0;
        assert.equal(w[0], tags >= 5 && positional ? 5 : 1, JSON.stringify(r));
        if (w[0] === 5) tag5++; else tag1++;
        a.push(w);
        pushRecord(b, r, tags);
      }
      const fa = a.end(), fb = b.end();
      assert.deepEqual(fb, fa, 'written as it comes: the same bytes');
      const back = dec.decode(payload(fb))!.items.map((w) => decodeRecord(w as never, () => undefined));
      recs.forEach((r, i) => assert.deepEqual(plain(back[i]), plain({ ...r, client: { ...r.client, endpoint: undefined }, server: { ...r.server, endpoint: undefined } })));
    }
  }), { numRuns: 300 });
  assert.ok(tag5 > 200 && tag1 > 200, `both shapes drawn (tag 5: ${tag5}, tag 1: ${tag1})`);
  // the interceptor's record as it makes it: positional
  const made = { l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: 1.75e12, client: { ip: '10.244.1.5', port: 40000, identity: 1000 }, server: { ip: '10.96.0.1', port: 443, identity: 2 }, endpointId: 7, intercepted: true, sni: 'api.bench.test', proxyPort: 15001, version: 'TLS 1.3', alpn: ['http/1.1'], resumed: true } as AccessLogRecord;
  assert.equal(encodeRecord(made)[0], 5);
  assert.deepEqual(decodeRecord(encodeRecord(made), () => undefined), { ...made, client: { ...made.client, endpoint: undefined }, server: { ...made.server, endpoint: undefined } });
});

test('attacker: a tag-5 record of the wrong length or with a field of the wrong kind is no record', () => {
  const good = encodeRecord({ l7: 'tls', verdict: 'denied', direction: 'ingress', timeMs: 5, client: { ip: '10.0.0.1', port: 5, identity: 1 }, server: { ip: '10.0.0.2', port: 443, identity: 2 }, endpointId: 3, sni: 'a.example', reason: 'policy: denied' } as AccessLogRecord) as unknown[];
  assert.equal(good[0], 5);
  assert.equal((decodeRecord(good as never, () => undefined) as { sni?: string }).sni, 'a.example');
  const at = (i: number, v: unknown) => { const w = [...good]; w[i] = v; return w; };
  for (const w of [good.slice(0, 18), [...good, 0], at(13, 7), at(13, ['a']), at(14, 0), at(15, 'h2'), at(15, [1]), at(16, '1'), at(17, 0), at(18, '443'), at(12, 'x'), at(3, 'now')]) {
    assert.equal(decodeRecord(w as never, () => undefined), undefined, JSON.stringify(w));
  }
});

test('feed: TLS records go as tag 5 only to an agent whose caps say it reads it; to an older agent as their object, and both make the same record', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-tags-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const rec = (n: number) => ({
    l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: 1.75e12 + n, client: { ip: '10.244.1.5', port: 40000 + n, identity: 1000 + n }, server: { ip: '10.96.0.1', port: 443, identity: 2 },
    endpointId: 7, intercepted: true, sni: `s${n}.example`, proxyPort: 15001, version: 'TLS 1.3', alpn: ['http/1.1'],
  }) as AccessLogRecord;
  for (const caps of [{ t: 'caps', records: 'bin1', tags: 5 }, { t: 'caps', records: 'bin1' }, { t: 'caps', records: 'bin1', tags: 99 }]) {
    // an agent as a bare socket: says its caps, reads the frames (as an older build would)
    const socketPath = join(dir, `agent-${caps.tags ?? 'none'}.sock`);
    const tags: number[] = [];
    const got: (AccessLogRecord | undefined)[] = [];
    const { createServer } = await import('node:net');
    const dec = new RecordDecoder();
    const srv = createServer((s) => {
      s.write(`${JSON.stringify(caps)}\n`);
      let pending = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        pending = Buffer.concat([pending, d]);
        for (;;) {
          if (pending[0] !== FRAME_MARK) { const nl = pending.indexOf(10); if (nl < 0) break; pending = pending.subarray(nl + 1); continue; }
          if (pending.length < FRAME_HEADER || pending.length < FRAME_HEADER + pending.readUInt32LE(1)) break;
          const n = pending.readUInt32LE(1);
          for (const w of dec.decode(pending.subarray(FRAME_HEADER, FRAME_HEADER + n))!.items) { tags.push(w[0] as number); got.push(decodeRecord(w as never, () => undefined)); }
          pending = pending.subarray(FRAME_HEADER + n);
        }
      });
    });
    await new Promise<void>((r) => srv.listen(socketPath, r));
    const client = createFeedClient({ socketPath, retryMs: 20, onSnapshot: () => {}, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
    client.start();
    await until(() => client.connected());
    // the caps line arrives before any record is made
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 5; i++) client.record(rec(i));
    await until(() => got.length === 5);
    client.stop();
    await new Promise<void>((r) => srv.close(() => r()));
    assert.deepEqual(tags, Array(5).fill(caps.tags === undefined ? 1 : 5), JSON.stringify(caps));
    assert.deepEqual(JSON.parse(JSON.stringify(got)), Array.from({ length: 5 }, (_, i) => JSON.parse(JSON.stringify(rec(i)))));
  }
});

test('a record\'s strings compared with the last record\'s at the same place (text slots) are the bytes the table alone makes, across the table starting over (the slots forget with it)', () => {
  // the host, addresses, method and headers stay while every url is new: the table fills and
  // starts over mid-frame; a slot that outlived it would refer to a number the agent no longer has
  const peer = (ip: string, port: number) => ({ ip, port, identity: 1000 });
  const client = peer('10.244.0.5', 40000), server = peer('10.244.1.7', 8080);
  const rec = (i: number, type: 'request' | 'response'): AccessLogRecord => ({
    l7: 'http', type, verdict: 'forwarded', direction: 'egress', timeMs: 1733e9 + i, client, server, endpointId: 7,
    // new string objects per record, as the proxy's parser makes them
    method: ['G', 'E', 'T'].join(''), url: `http://h.lab/p${i >> 1}`, host: ['h', 'lab'].join('.'), path: `/p${i >> 1}`, protocol: 'HTTP/1.1',
    headers: type === 'request' ? ['host', ['h', 'lab'].join('.'), 'x-id', String(i % 3)] : ['content-length', String(i % 2)], code: type === 'request' ? 0 : 200, latencyNs: 0,
  });
  const old = new RecordEncoder(), now = new RecordEncoder(), dec = new RecordDecoder();
  let resets = 0;
  for (let i = 0; i < TABLE_MAX * 2 + 300;) {
    old.begin(0);
    now.begin(0);
    const recs: AccessLogRecord[] = [];
    for (let k = 0; k < 128; k++, i++) {
      const r = rec(i, i % 2 ? 'response' : 'request');
      recs.push(r);
      old.push(encodeRecord(r));
      pushRecord(now, r);
    }
    const a = old.end(), b = now.end();
    assert.deepEqual(b, a);
    if (b.includes(9)) resets++;
    const back = dec.decode(payload(b));
    assert.ok(back, `frame before record ${i}`);
    back.items.forEach((w, k) => {
      const got = decodeRecord(w as never, () => undefined) as AccessLogRecord & { url: string; host: string; headers: string[] };
      const want = recs[k] as typeof got;
      assert.equal(got.url, want.url);
      assert.equal(got.host, want.host);
      assert.deepEqual(got.headers, want.headers);
    });
  }
  assert.ok(resets >= 1);
});

test('intercepted HTTP records (tag 4) of different server names in a row each come back with their own name; a name back again is its own', () => {
  const enc = new RecordEncoder();
  const dec = new RecordDecoder();
  const names = ['a.example', 'a.example', 'b.example', 'a.example', 'b.example'];
  const made = names.map((sni, i) => ({
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 1000 + i, client: { ip: '10.0.0.1', port: 40000 + i, identity: 1000, endpoint: undefined },
    server: { ip: '10.96.0.1', port: 443, identity: 2, endpoint: undefined }, endpointId: 7, method: 'GET', url: `https://${sni}/`, host: sni, path: '/', protocol: 'HTTP/1.1',
    headers: [], code: 0, latencyNs: 0, tls: { sni, intercepted: true },
  }) as AccessLogRecord);
  enc.begin(0);
  for (const r of made) pushRecord(enc, r);
  const items = dec.decode(payload(enc.end()))!.items;
  assert.equal(items[0]![0], 4);
  const back = items.map((w) => decodeRecord(w as never, () => undefined)!);
  assert.deepEqual(back.map((r) => (r.l7 === 'http' ? r.tls : undefined)), names.map((sni) => ({ sni, intercepted: true })));
  // each record is the one made (the host is the name: a record given another's tls would differ here)
  for (let i = 0; i < made.length; i++) assert.deepEqual(back[i], made[i]);
});
