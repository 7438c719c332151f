import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { toBinary } from '@bufbuild/protobuf';
import { createHubble } from '../../../src/hubble/index.ts';
import { FlowSchema, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import type { AccessLogRecord, HttpAccessRecord } from '../../../src/common/access-log.ts';
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
    // not kept compact: trace context, a reason, TLS, AI facts, DNS
    http({ traceId: '0af7651916cd43dd8448eb211c80319c', parentSpanId: 'b7ad6b7169203331' }),
    http({ verdict: 'error', reason: 'header too long', type: 'response', code: 431 }),
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

test('property: a compact HTTP flow reads back equal to the ingested one', () => {
  const str = fc.string({ maxLength: 12 });
  const rec = fc.record({
    type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), dt: fc.double({ min: 0, max: 5e6, noNaN: true }),
    port: fc.integer({ min: 1, max: 65535 }), method: fc.constantFrom('GET', 'POST', ''), path: str, protocol: fc.constantFrom('HTTP/1.0', 'HTTP/1.1'),
    headers: fc.array(fc.tuple(fc.constantFrom('host', 'Cookie', 'x-a', 'accept'), str), { maxLength: 4 }), code: fc.integer({ min: 0, max: 599 }),
    latencyNs: fc.double({ min: -1, max: 1e10, noNaN: true }), ip: fc.constantFrom('10.244.1.6', '10.244.1.7', '198.51.100.10', 'fd00::1'),
  });
  fc.assert(fc.property(fc.array(rec, { minLength: 1, maxLength: 20 }), (list) => {
    const h = hubbleOf();
    const seen: Flow[] = [];
    h.onFlow((f) => seen.push(f));
    for (const r of list) {
      h.ingestRecord(http({
        type: r.type, verdict: r.verdict, direction: r.direction, timeMs: T + r.dt, client: { ...http().client, port: r.port }, server: { ip: r.ip, port: 80, identity: 23456 },
        method: r.method, url: `http://api/${r.path}`, protocol: r.protocol, headers: r.headers.flat(), code: r.code, latencyNs: r.latencyNs,
      }));
    }
    assert.deepEqual(ringFlows(h), seen.slice(-7));
  }), { numRuns: 200 });
});
