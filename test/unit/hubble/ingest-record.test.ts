import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { clone, fromBinary, toBinary } from '@bufbuild/protobuf';
import { createHubble } from '../../../src/hubble/index.ts';
import { FlowSchema, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import type { AccessLogRecord, DnsAccessRecord, HttpAccessRecord, TlsAccessRecord } from '../../../src/common/access-log.ts';
import { resolver, ENDPOINTS } from './fixtures.ts';

const T = Date.parse('2026-01-02T15:04:05.123Z');
const hubbleOf = () => createHubble({ nodeName: 'node1', resolver, socketPath: '/nonexistent/hubble.sock', version: 'test', startedAt: 0, capacity: 7 });

function http(over: Partial<HttpAccessRecord> = {}): HttpAccessRecord {
  return {
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: T,
    client: { ip: '10.244.1.5', port: 40000, identity: 12345, endpoint: ENDPOINTS['10.244.1.5'] }, server: { ip: '10.244.1.6', port: 8080, identity: 23456 },
    endpointId: 101, method: 'GET', url: 'http://api/v1', host: 'api', path: '/v1', protocol: 'HTTP/1.1', headers: ['host', 'api', 'accept', '*/*'], code: 0, latencyNs: 0, ...over,
  };
}

function dns(over: Partial<DnsAccessRecord> = {}): DnsAccessRecord {
  return {
    l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: T, transport: 'UDP', query: 'api.', qtypes: ['A'],
    client: { ip: '10.244.1.5', port: 5353, identity: 12345, endpoint: ENDPOINTS['10.244.1.5'] }, server: { ip: '10.96.0.10', port: 53, identity: 2 }, ...over,
  };
}

/** the ring's slots (which positions hold a compact flow) */
const slotKinds = (h: ReturnType<typeof hubbleOf>) => (h.ring as unknown as { slots: ({ kind: string } | undefined)[] }).slots.map((x) => x?.kind);

/** what readers get at each readable position */
function ringFlows(h: ReturnType<typeof hubbleOf>): Flow[] {
  const out: Flow[] = [];
  for (let p = h.ring.oldest(); p < h.ring.end(); p++) {
    const e = h.ring.at(p);
    if (e?.kind === 'flow') out.push(e.flow);
  }
  return out;
}

test('ingestRecord: readers get the flow the subscribers saw, whole or kept compact, for every kind of record', () => {
  const h = hubbleOf();
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  const recs: AccessLogRecord[] = [
    http(),
    http({ type: 'response', code: 200, latencyNs: 3_456_789, timeMs: T + 3.5, requestTimeMs: T, headers: ['content-type', 'text/plain', 'set-cookie', 'a=b'] }),
    http({ verdict: 'denied', code: 403, type: 'response', latencyNs: 0 }),
    http({ method: '', url: '', protocol: 'HTTP/1.1' }), // malformed request
    http({ direction: 'ingress', url: 'http://u:secret@api/v1' }),
    // not kept compact: trace context, a reason, AI facts
    http({ traceId: '0af7651916cd43dd8448eb211c80319c', parentSpanId: 'b7ad6b7169203331' }),
    http({ verdict: 'error', reason: 'header too long', type: 'response', code: 431 }),
    // DNS: kept compact
    { l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: T, transport: 'UDP', query: 'api.', qtypes: ['A'], client: { ip: '10.244.1.5', port: 5353, identity: 12345 }, server: { ip: '10.96.0.10', port: 53, identity: 2 } },
  ];
  for (const r of recs) h.ingestRecord(r);
  const got = ringFlows(h);
  assert.equal(got.length, 7);
  // the ring of 7 holds the last 7
  seen.slice(1).forEach((f, i) => {
    assert.deepEqual(got[i], f, `record ${i + 1}`);
    assert.deepEqual(toBinary(FlowSchema, got[i]!), toBinary(FlowSchema, f));
  });
  assert.match(got[0]!.Summary, /^HTTP\/1\.1 200 3ms \(GET http:\/\/api\/v1\)$/);
  assert.ok(got[0]!.uuid.length === 36 && got[0]!.emitter?.name === 'Hubble');
  assert.notEqual(got[0]!.uuid, got[1]!.uuid);
});

test('ingestRecord: flows of the same request share their HTTP message (nothing of their own for the ring to hold)', () => {
  const h = hubbleOf();
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  // the feed decodes each record's headers as a new list: equal values, another array
  h.ingestRecord(http({ client: { ...http().client, port: 40001 } }));
  h.ingestRecord(http({ headers: ['host', 'api', 'accept', '*/*'], client: { ...http().client, port: 40002 } }));
  h.ingestRecord(http({ headers: ['host', 'api', 'accept', 'text/html'] }));
  const msg = (f: Flow) => (f.l7?.record.case === 'http' ? f.l7.record.value : undefined);
  assert.equal(msg(seen[0]!), msg(seen[1]!));
  assert.equal(seen[0]!.l7, seen[1]!.l7, 'a request\'s Layer7 (no latency) is shared too');
  assert.equal(seen[0]!.IP, seen[1]!.IP, 'the address pair\'s IP message');
  assert.notEqual(msg(seen[1]!), msg(seen[2]!));
  assert.deepEqual(msg(seen[2]!)!.headers.map((x) => x.value), ['text/html', 'api']);
  const [a, b] = ringFlows(h);
  assert.equal(msg(a!), msg(seen[0]!));
  assert.deepEqual(b, seen[1]);
});

test('ingestRecord: HTTP inside intercepted TLS is kept compactly and reads back with its https URL and summary suffix; TLS not intercepted is kept whole', () => {
  const h = hubbleOf();
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  const tls = { sni: 'api.example.com', intercepted: true };
  h.ingestRecord(http({ url: 'https://api.example.com/v1', host: 'api.example.com', tls }));
  h.ingestRecord(http({ type: 'response', code: 200, latencyNs: 2_100_000, timeMs: T + 2.1, requestTimeMs: T, url: 'https://api.example.com/v1', host: 'api.example.com', tls }));
  // not a shape the interceptor makes (HTTP parsed from TLS it did not terminate): kept whole, as before
  h.ingestRecord(http({ tls: { sni: 'other.example.com', intercepted: false } }));
  assert.deepEqual(slotKinds(h).slice(0, 3), ['compact', 'compact', 'flow']);
  const got = ringFlows(h);
  assert.equal(got.length, 3);
  got.forEach((f, i) => {
    assert.deepEqual(f, seen[i], `record ${i}`);
    assert.deepEqual(toBinary(FlowSchema, f), toBinary(FlowSchema, seen[i]!));
  });
  assert.equal(got[0]!.Summary, 'HTTP/1.1 GET https://api.example.com/v1 [TLS intercepted, SNI api.example.com]');
  assert.equal(got[1]!.Summary, 'HTTP/1.1 200 2ms (GET https://api.example.com/v1) [TLS intercepted, SNI api.example.com]');
  assert.equal(got[2]!.Summary, 'HTTP/1.1 GET http://api/v1');
});

test('property: a compact HTTP flow reads back equal to the ingested one', () => {
  const str = fc.string({ maxLength: 12 });
  const rec = fc.record({
    type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), dt: fc.double({ min: 0, max: 5e6, noNaN: true }),
    port: fc.integer({ min: 1, max: 65535 }), method: fc.constantFrom('GET', 'POST', ''), path: str, protocol: fc.constantFrom('HTTP/1.0', 'HTTP/1.1'),
    headers: fc.array(fc.tuple(fc.constantFrom('host', 'Cookie', 'x-a', 'accept'), str), { maxLength: 4 }), code: fc.integer({ min: 0, max: 599 }),
    latencyNs: fc.double({ min: -1, max: 1e10, noNaN: true }), ip: fc.constantFrom('10.244.1.6', '10.244.1.7', '198.51.100.10', 'fd00::1'),
    // plain, or inside TLS the proxy intercepted (or, not a shape the proxy makes, did not)
    tls: fc.option(fc.record({ sni: fc.constantFrom('api.example.com', 'b.example.org'), intercepted: fc.boolean() }), { nil: undefined }),
  });
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), (list) => {
    const h = hubbleOf();
    const seen: Flow[] = [];
    h.onFlow((f) => seen.push(f));
    for (const r of list) {
      h.ingestRecord(http({
        type: r.type, verdict: r.verdict, direction: r.direction, timeMs: T + r.dt, client: { ...http().client, port: r.port }, server: { ip: r.ip, port: 80, identity: 23456 },
        method: r.method, url: `${r.tls?.intercepted ? 'https' : 'http'}://api/${r.path}`, protocol: r.protocol, headers: r.headers.flat(), code: r.code, latencyNs: r.latencyNs,
        ...(r.tls ? { tls: r.tls } : {}),
      }));
    }
    assert.deepEqual(ringFlows(h), seen.slice(-7));
  }), { numRuns: 200 });
});

test("ingestRecord: DNS flows are kept compactly; a name's flows share their DNS message, summary and a request's Layer7", () => {
  const h = hubbleOf();
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  // the feed decodes each record's lists anew: equal values, other arrays
  h.ingestRecord(dns());
  h.ingestRecord(dns({ qtypes: ['A'], client: { ...dns().client, port: 5354 } }));
  const answer = { type: 'response' as const, rcode: 0, ips: ['198.51.100.7'], ttl: 30, cnames: [], rrtypes: ['A'] };
  h.ingestRecord(dns({ ...answer, latencyNs: 41_000 }));
  h.ingestRecord(dns({ ...answer, ips: ['198.51.100.7'], latencyNs: 52_000, transport: 'TCP' }));
  h.ingestRecord(dns({ ...answer, ttl: 29, latencyNs: 12 }));
  assert.deepEqual(slotKinds(h).slice(0, 5), ['compact', 'compact', 'compact', 'compact', 'compact']);
  const msg = (f: Flow) => (f.l7?.record.case === 'dns' ? f.l7.record.value : undefined);
  assert.equal(seen[0]!.l7, seen[1]!.l7, 'a request\'s Layer7 (no latency) is shared');
  assert.equal(msg(seen[2]!), msg(seen[3]!), 'the same answer: one DNS message');
  assert.equal(seen[2]!.Summary, seen[3]!.Summary);
  assert.notEqual(msg(seen[2]!), msg(seen[4]!), 'another TTL: another message');
  assert.equal(seen[4]!.Summary, 'DNS Answer "198.51.100.7" TTL: 29 (Proxy api. A)');
  const got = ringFlows(h);
  got.forEach((f, i) => {
    assert.deepEqual(f, seen[i], `record ${i}`);
    assert.deepEqual(toBinary(FlowSchema, f), toBinary(FlowSchema, seen[i]!));
  });
  assert.equal(msg(got[2]!), msg(seen[2]!));
  assert.notEqual(got[2], h.ring.at(h.ring.oldest() + 2)!.kind === 'flow' ? (h.ring.at(h.ring.oldest() + 2) as { flow: Flow }).flow : undefined, 'each read is a new Flow');
});

test('property: TLS flows (the SNI filter\'s and the interceptor\'s, every verdict) are kept compactly, mixed with HTTP ones at the same positions, and read back equal, object and bytes', () => {
  const tls = fc.record({
    verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const), direction: fc.constantFrom('egress' as const, 'ingress' as const), dt: fc.double({ min: 0, max: 5e6, noNaN: true }),
    port: fc.integer({ min: 1, max: 65535 }), sni: fc.option(fc.constantFrom('api.example.com', 'b.example.org'), { nil: undefined }), version: fc.option(fc.constant('TLS 1.3'), { nil: undefined }),
    alpn: fc.option(fc.array(fc.constantFrom('h2', 'http/1.1'), { maxLength: 2 }), { nil: undefined }), intercepted: fc.option(fc.constant(true), { nil: undefined }),
    resumed: fc.option(fc.constant(true), { nil: undefined }), reason: fc.option(fc.constantFrom('policy: denied', 'NOT_TLS: no ClientHello'), { nil: undefined }),
    proxyPort: fc.option(fc.constantFrom(15001, 15443), { nil: undefined }), ip: fc.constantFrom('10.244.1.6', '198.51.100.10', 'fd00::1'),
  });
  const rec = fc.oneof(
    tls.map((r): AccessLogRecord => {
      const t: TlsAccessRecord = { l7: 'tls', verdict: r.verdict, direction: r.direction, timeMs: T + r.dt, client: { ...http().client, port: r.port }, server: { ip: r.ip, port: 443, identity: 23456 }, endpointId: 101 };
      for (const k of ['sni', 'version', 'alpn', 'intercepted', 'resumed', 'reason', 'proxyPort'] as const) if (r[k] !== undefined) (t as unknown as Record<string, unknown>)[k] = r[k];
      return t;
    }),
    fc.integer({ min: 1, max: 65535 }).map((port): AccessLogRecord => http({ url: 'https://api.example.com/v1', host: 'api.example.com', client: { ...http().client, port }, tls: { sni: 'api.example.com', intercepted: true } })),
  );
  let tlsKept = 0;
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 30 }), (list) => {
    const h = hubbleOf();
    const seen: Flow[] = [];
    h.onFlow((f) => seen.push(f));
    for (const r of list) h.ingestRecord(r);
    const got = ringFlows(h);
    assert.deepEqual(got, seen.slice(-7));
    got.forEach((f, i) => assert.deepEqual(toBinary(FlowSchema, f), toBinary(FlowSchema, seen.slice(-7)[i]!)));
    const kinds = slotKinds(h);
    list.slice(-7).forEach((r, i) => {
      const at = (list.length - Math.min(7, list.length) + i) % 7;
      assert.equal(kinds[at], 'compact', `${r.l7} record kept compactly`);
      if (r.l7 === 'tls') tlsKept++;
    });
  }), { numRuns: 200 });
  assert.ok(tlsKept > 300, `TLS flows drawn (${tlsKept})`);
  // the interceptor's record reads back with its summary and server name
  const h = hubbleOf();
  h.ingestRecord({ l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: T, client: http().client, server: { ip: '198.51.100.10', port: 443, identity: 2 }, endpointId: 101, sni: 'api.example.com', version: 'TLS 1.3', alpn: ['http/1.1'], intercepted: true, resumed: true, proxyPort: 15001 });
  const [f] = ringFlows(h);
  assert.equal(f!.Summary, 'TLS ClientHello SNI api.example.com (TLS 1.3, alpn http/1.1, intercepted, resumed)');
  assert.deepEqual(f!.destinationNames, ['api.example.com']);
  assert.equal(f!.proxyPort, 15001);
});

test('ingestRecord: HTTP and DNS flows take turns at the ring\'s positions; each reads back as what was written there', () => {
  const h = hubbleOf();
  const seen: Flow[] = [];
  h.onFlow((f) => seen.push(f));
  // a ring of 7 comes round twice: a position an HTTP flow held takes a DNS one and back
  for (let i = 0; i < 20; i++) h.ingestRecord(i % 3 === 0 ? http({ client: { ...http().client, port: 40000 + i } }) : dns({ client: { ...dns().client, port: 5000 + i } }));
  assert.deepEqual(ringFlows(h), seen.slice(-7));
});

test('property: a compact DNS flow reads back equal to the ingested one', () => {
  const name = fc.constantFrom('api.', 'a.example.com.', 'x.bench.lab.');
  const list = (xs: string[]) => fc.option(fc.array(fc.constantFrom(...xs), { maxLength: 3 }), { nil: undefined });
  const rec = fc.record({
    type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), transport: fc.constantFrom('UDP' as const, 'TCP' as const), dt: fc.double({ min: 0, max: 5e6, noNaN: true }),
    port: fc.integer({ min: 1, max: 65535 }), query: name, qtypes: fc.array(fc.constantFrom('A', 'AAAA', 'TXT'), { minLength: 1, maxLength: 2 }),
    rcode: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }), ips: list(['1.2.3.4', '5.6.7.8', 'fd00::1']), ttl: fc.option(fc.integer({ min: 0, max: 3600 }), { nil: undefined }),
    cnames: list(['c.example.com.']), rrtypes: list(['A', 'CNAME']), latencyNs: fc.option(fc.oneof(fc.nat(), fc.double({ min: 0, max: 2 ** 60, noNaN: true }), fc.constant(2 ** 60)), { nil: undefined }),
    reason: fc.option(fc.constantFrom('ORIGINAL_DESTINATION_UNKNOWN: x', 'too long'), { nil: undefined }), server: fc.constantFrom('10.96.0.10', '10.244.1.6', 'fd00::53'),
  });
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), (recs) => {
    const h = hubbleOf();
    const seen: Flow[] = [];
    h.onFlow((f) => seen.push(f));
    for (const r of recs) {
      const d: DnsAccessRecord = dns({
        type: r.type, verdict: r.verdict, direction: r.direction, transport: r.transport, timeMs: T + r.dt, client: { ...dns().client, port: r.port },
        server: { ip: r.server, port: 53, identity: 2 }, query: r.query, qtypes: r.qtypes,
      });
      for (const k of ['rcode', 'ips', 'ttl', 'cnames', 'rrtypes', 'latencyNs', 'reason'] as const) if (r[k] !== undefined) (d as unknown as Record<string, unknown>)[k] = r[k];
      h.ingestRecord(d);
    }
    const got = ringFlows(h);
    assert.deepEqual(got, seen.slice(-7));
    got.forEach((f, i) => assert.deepEqual(toBinary(FlowSchema, f), toBinary(FlowSchema, seen.slice(-7)[i]!)));
  }), { numRuns: 200 });
});

/** a flow as a reader that keeps it would see it (its own copy, the uuid aside: two Hubbles number apart) */
const copyOf = (f: Flow): Flow => ({ ...clone(FlowSchema, f), uuid: '' });

test('ingestRecord: with every subscriber borrowing, a DNS or plain HTTP flow is the parser\'s scratch, refilled per record; subscribers, the ring and the protobuf bytes get what a keeping subscriber gets', () => {
  const keep = hubbleOf(), borrow = hubbleOf();
  const kept: Flow[] = [], lent: Flow[] = [], objects = new Set<Flow>();
  keep.onFlow((f) => kept.push(f));
  borrow.onFlow((f) => { lent.push(copyOf(f)); objects.add(f); }, { borrows: true });
  const answer = { type: 'response' as const, rcode: 0, ips: ['198.51.100.7'], ttl: 30, cnames: [], rrtypes: ['A'] };
  const recs: AccessLogRecord[] = [
    dns(), dns({ ...answer, latencyNs: 41_000 }), dns({ transport: 'TCP', client: { ...dns().client, port: 6000 } }), dns({ ...answer, transport: 'TCP', latencyNs: 7, direction: 'ingress' }),
    dns({ verdict: 'denied', rcode: 5, query: 'evil.example.', timeMs: T + 1234.5 }), dns({ verdict: 'error', type: 'response', rcode: 2, latencyNs: 0, server: { ip: 'fd00::53', port: 53, identity: 2 }, client: { ip: 'fd00::5', port: 5353, identity: 12345 } }),
    // plain HTTP (a request, its response, intercepted TLS, a denial, ingress): borrowed
    http(), http({ type: 'response', code: 200, latencyNs: 153_000, requestTimeMs: T - 1, headers: ['content-length', '2'] }), http({ tls: { sni: 'api.example.com', intercepted: true }, url: 'https://api/v1' }),
    http({ type: 'response', verdict: 'denied', code: 403, latencyNs: 9_000, headers: [] }), http({ direction: 'ingress', client: { ip: 'fd00::5', port: 40001, identity: 12345 }, server: { ip: 'fd00::6', port: 80, identity: 2 } }),
    // not borrowed: a trace, a reason, an AI call (kept whole: new flows as before)
    http({ traceId: '0af7651916cd43dd8448eb211c80319c', parentSpanId: 'b7ad6b7169203331' }), http({ type: 'response', verdict: 'error', code: 503, reason: 'upstream reset', latencyNs: 1 }),
    http({ ai: { provider: 'openai', operation: 'chat.completions', model: 'gpt-4o', stream: false } }),
    // borrowed, not kept compactly (TLS not intercepted): copied from the scratch
    http({ tls: { sni: 'api.example.com', intercepted: false } }),
    dns({ reason: 'ORIGINAL_DESTINATION_UNKNOWN: x', verdict: 'denied' }), dns({ ...answer, latencyNs: 2 ** 60 }), // kept whole (a latency past 2^53): copied from the scratch
  ];
  for (const r of recs) { keep.ingestRecord(r); borrow.ingestRecord(r); }
  assert.deepEqual(lent, kept.map(copyOf));
  assert.equal(objects.size, 4, 'one scratch Flow for the DNS and plain HTTP records, a new Flow for each HTTP record with a trace, a reason or an AI call');
  const ringOf = (h: ReturnType<typeof hubbleOf>) => ringFlows(h).map(copyOf);
  assert.deepEqual(ringOf(borrow), ringOf(keep));
  ringFlows(borrow).forEach((f, i) => assert.deepEqual(toBinary(FlowSchema, { ...f, uuid: '' }), toBinary(FlowSchema, { ...ringFlows(keep)[i]!, uuid: '' })));
  // the whole-kept one is a copy: the next borrowed record does not change it
  const last = ringFlows(borrow).at(-1)!;
  borrow.ingestRecord(dns({ query: 'other.' }));
  assert.equal(last.l7?.latencyNs, 1n << 60n);
  assert.deepEqual(ringFlows(borrow).at(-2), last);
});

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('ingestRecord: a borrowed flow\'s uuid (made when read, not at ingest) is the same read twice, in the call and from the ring, and no two flows share one', () => {
  const h = hubbleOf();
  const inCall: string[] = [];
  const objects = new Set<Flow>();
  h.onFlow((f) => {
    const a = f.uuid, b = f.uuid;
    assert.equal(a, b, 'the same flow read twice');
    // what an exporter would send: the protobuf bytes carry it
    assert.equal(fromBinary(FlowSchema, toBinary(FlowSchema, f)).uuid, a);
    assert.equal(clone(FlowSchema, f).uuid, a);
    inCall.push(a);
    objects.add(f);
  }, { borrows: true });
  const recs: AccessLogRecord[] = [
    http(), http({ type: 'response', code: 200, latencyNs: 153_000 }),
    // kept whole (a trace): its uuid drawn from the same sequence between two lent ones
    http({ traceId: '0af7651916cd43dd8448eb211c80319c' }),
    dns(), dns({ type: 'response', rcode: 0, ips: ['198.51.100.7'], ttl: 30, cnames: [], rrtypes: ['A'], latencyNs: 41_000 }),
    http({ tls: { sni: 'api.example.com', intercepted: false } }), // borrowed, copied into the ring whole
    http({ type: 'response', code: 404, latencyNs: 9_000 }),
  ];
  for (const r of recs) h.ingestRecord(r);
  assert.equal(objects.size, 2, 'the lent scratch and the one kept whole');
  for (const u of inCall) assert.match(u, V4);
  assert.equal(new Set(inCall).size, recs.length, 'two flows never share a uuid');
  const first = ringFlows(h).map((f) => f.uuid), again = ringFlows(h).map((f) => f.uuid);
  assert.deepEqual(first, inCall, 'the ring gives back the uuid the subscribers read');
  assert.deepEqual(again, first, 'read twice from the ring: the same uuids');
  // a flow no subscriber asked the uuid of gets the same uuid from the ring as if one had
  const quiet = hubbleOf(), asks = hubbleOf();
  quiet.onFlow(() => {}, { borrows: true });
  const asked: string[] = [];
  asks.onFlow((f) => asked.push(f.uuid), { borrows: true });
  for (const r of recs) { quiet.ingestRecord(r); asks.ingestRecord(r); }
  assert.deepEqual(ringFlows(quiet).map((f) => f.uuid.slice(24)), asked.map((u) => u.slice(24)));
  assert.deepEqual(ringFlows(asks).map((f) => f.uuid), asked);
});

test('ingestRecord: each flow\'s time in the ring (what since/until filter on) is its Timestamp\'s, kept compactly or whole, lent or not', () => {
  for (const borrows of [true, false]) {
    const h = hubbleOf();
    h.onFlow(() => {}, { borrows });
    const recs: AccessLogRecord[] = [
      http({ timeMs: T + 1.25 }), http({ type: 'response', code: 200, latencyNs: 9_000, timeMs: T + 2001.5 }), dns({ timeMs: T + 4000.75 }),
      http({ traceId: '0af7651916cd43dd8448eb211c80319c', timeMs: T + 5000 }), // kept whole
      { l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: T + 6000.5, client: http().client, server: http().server, endpointId: 101, sni: 'api.example.com' } as TlsAccessRecord,
    ];
    for (const r of recs) h.ingestRecord(r);
    const times: number[] = [], stamps: number[] = [];
    for (let p = h.ring.oldest(); p < h.ring.end(); p++) {
      const e = h.ring.at(p);
      if (e?.kind !== 'flow') continue;
      times.push(h.ring.timeAt(p));
      stamps.push(Number(e.flow.time!.seconds) * 1000 + e.flow.time!.nanos / 1e6);
    }
    assert.equal(times.length, recs.length);
    assert.deepEqual(times, stamps, `borrows: ${borrows}`);
    times.forEach((t, i) => assert.ok(Math.abs(t - recs[i]!.timeMs) < 1e-3, `${t} vs ${recs[i]!.timeMs}`));
  }
});

test('ingestRecord: a borrowed HTTP response\'s Layer7 is refilled in place; each response in the ring keeps its own latency', () => {
  const h = hubbleOf();
  const l7s = new Set<unknown>();
  const lat: bigint[] = [];
  h.onFlow((f) => { if (f.isReply) { l7s.add(f.l7); lat.push(f.l7!.latencyNs); } }, { borrows: true });
  const ns = [153_000, 2_000_000, 7, 0];
  for (const n of ns) { h.ingestRecord(http()); h.ingestRecord(http({ type: 'response', code: 200, latencyNs: n })); }
  assert.equal(l7s.size, 1, 'one response Layer7 for every borrowed response');
  assert.deepEqual(lat, ns.map(BigInt));
  const replies = ringFlows(h).filter((f) => f.isReply);
  assert.deepEqual(replies.map((f) => f.l7!.latencyNs), ns.slice(-replies.length).map(BigInt));
  assert.equal(new Set(replies.map((f) => f.l7)).size, replies.length, 'the ring\'s response flows each have their own Layer7');
});

test('ingestRecord: a subscriber that keeps flows gets new DNS flows (no borrowing while it is subscribed)', () => {
  const h = hubbleOf();
  h.onFlow(() => {}, { borrows: true });
  const seen: Flow[] = [];
  const off = h.onFlow((f) => seen.push(f));
  h.ingestRecord(dns());
  h.ingestRecord(dns({ type: 'response', rcode: 3 }));
  assert.notEqual(seen[0], seen[1]);
  assert.equal(seen[0]!.isReply, false);
  off();
  const lent: Flow[] = [];
  h.onFlow((f) => lent.push(f), { borrows: true });
  h.ingestRecord(dns());
  h.ingestRecord(dns({ type: 'response', rcode: 3 }));
  assert.equal(lent[0], lent[1], 'borrowed again once the keeper left');
});

test('property: borrowed DNS and HTTP flows read, in the call and from the ring, as the flows a keeping subscriber gets', () => {
  const rec = fc.record({
    type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), transport: fc.constantFrom('UDP' as const, 'TCP' as const), dt: fc.double({ min: 0, max: 5e6, noNaN: true }),
    port: fc.integer({ min: 1, max: 65535 }), query: fc.constantFrom('api.', 'x.bench.lab.'), rcode: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }),
    ips: fc.option(fc.array(fc.constantFrom('1.2.3.4', 'fd00::1'), { maxLength: 2 }), { nil: undefined }), latencyNs: fc.option(fc.oneof(fc.nat(), fc.constant(2 ** 56)), { nil: undefined }),
    server: fc.constantFrom('10.96.0.10', '10.244.1.6', 'fd00::53'), http: fc.boolean(),
  });
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), (recs) => {
    const keep = hubbleOf(), borrow = hubbleOf();
    const kept: Flow[] = [], lent: Flow[] = [];
    keep.onFlow((f) => kept.push(f));
    borrow.onFlow((f) => lent.push(copyOf(f)), { borrows: true });
    for (const r of recs) {
      const d: AccessLogRecord = r.http ? http({
        type: r.type, verdict: r.verdict, direction: r.direction, timeMs: T + r.dt, client: { ...http().client, port: r.port }, ...(r.type === 'response' ? { code: 200 + (r.port % 300), latencyNs: r.port * 1000, headers: ['content-length', String(r.port % 7)] } : {}),
        ...(r.transport === 'TCP' ? { tls: { sni: 'api.example.com', intercepted: true }, url: 'https://api/v1' } : {}),
      }) : dns({
        type: r.type, verdict: r.verdict, direction: r.direction, transport: r.transport, timeMs: T + r.dt, client: { ...dns().client, port: r.port },
        server: { ip: r.server, port: 53, identity: 2 }, query: r.query, ...(r.rcode !== undefined ? { rcode: r.rcode } : {}), ...(r.ips ? { ips: r.ips } : {}),
        ...(r.latencyNs !== undefined ? { latencyNs: r.latencyNs } : {}),
      });
      keep.ingestRecord(d);
      borrow.ingestRecord(d);
    }
    assert.deepEqual(lent, kept.map(copyOf));
    assert.deepEqual(ringFlows(borrow).map(copyOf), ringFlows(keep).map(copyOf));
  }), { numRuns: 200 });
});

test('ingestRecord: the http and httpV2 metrics read a borrowed response\'s latency as a number: the same histograms as from kept flows, and no BigInt made for it', async () => {
  const { createHubbleMetrics } = await import('../../../src/hubble/metrics/index.ts');
  // whole ns, fractions (rounded), none, negative (0), past 2^31 and past 2^53
  const ns = [153_000, 2_000_000.6, 0, -5, 3_000_000_000, 2 ** 56 + 4096, 41];
  const recs = ns.flatMap((n, i) => [http({ timeMs: T + i }), http({ type: 'response', code: 200, latencyNs: n, timeMs: T + i + 0.5 })]);
  const out: string[][] = [];
  for (const names of ['http', 'httpV2']) {
    const texts: string[] = [];
    for (const borrows of [false, true]) {
      const h = hubbleOf(), m = createHubbleMetrics(names);
      h.onFlow((f) => m.process(f), { borrows });
      let made = 0;
      const real = globalThis.BigInt;
      // counts BigInt() calls while the records go in (the flows' times share one per second)
      globalThis.BigInt = Object.assign((v: string | number | bigint | boolean) => { made++; return real(v); }, real);
      try {
        for (const r of recs) h.ingestRecord(r);
      } finally {
        globalThis.BigInt = real;
      }
      if (borrows) assert.ok(made <= 1, `${names}: ${made} BigInt() calls for ${ns.length} borrowed responses`);
      else assert.ok(made >= ns.length, `${names}: kept flows make theirs (${made})`);
      texts.push(await m.registry.metrics());
    }
    assert.match(texts[0]!, /hubble_http_request_duration_seconds_count\{[^}]*\} 7\n/, names);
    assert.equal(texts[1], texts[0], `${names}: borrowed and kept flows count the same`);
    out.push(texts);
  }
  assert.equal(out.length, 2);
});
