/**
 * Hubble's L7 parser: access records of the three proxies → flows. Table rows per protocol and
 * verdict (what the base flow and each protocol part fill), the endpoint rules, and the time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createL7Parser, httpSummary } from '../../../src/hubble/l7-parser.ts';
import { DropReason, L7FlowType, TrafficDirection, Verdict, type Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import type { AccessLogRecord, AccessPeer, DnsAccessRecord, HttpAccessRecord, TlsAccessRecord } from '../../../src/common/access-log.ts';

const tiefighter = { id: 137, identity: 257, namespace: 'default', pod: 'tiefighter', labels: ['k8s:org=empire', 'k8s:class=tiefighter'] };
// a pod on another node, as the agent's resolver gives it (kvstore: no endpoint ID here)
const remoteDeathstar = { id: 0, identity: 259, namespace: 'empire', pod: 'deathstar-2', labels: ['k8s:org=empire', 'k8s:class=deathstar'] };
const lookups: string[] = [];
const parse = createL7Parser({
  nodeName: 'node1',
  resolver: {
    byIp: (ip) => { lookups.push(ip); return ip === '10.244.1.3' ? tiefighter : ip === '10.244.2.7' ? remoteDeathstar : undefined; },
    identityLabels: (id) => (id === 259 ? ['k8s:org=empire', 'k8s:class=deathstar'] : undefined),
  },
});
const T = Date.parse('2026-01-02T15:04:05.123Z');
const client: AccessPeer = { ip: '10.244.1.3', port: 40000, identity: 257 };
const server: AccessPeer = { ip: '10.244.1.6', port: 80, identity: 259 };
const http: Omit<HttpAccessRecord, 'type' | 'verdict'> = { l7: 'http', direction: 'egress', timeMs: T, client, server, endpointId: 137, method: 'GET', url: 'http://deathstar/v1', host: 'deathstar', path: '/v1', protocol: 'HTTP/1.1', headers: [], code: 0, latencyNs: 0 };
const dns: Omit<DnsAccessRecord, 'type' | 'verdict'> = { l7: 'dns', direction: 'egress', timeMs: T, client: { ...client, endpoint: tiefighter }, server: { ip: '198.51.100.53', port: 53, identity: 2, labels: ['reserved:world'] }, transport: 'UDP', query: 'api.openai.com.', qtypes: ['A'] };
const tls: Omit<TlsAccessRecord, 'verdict'> = { l7: 'tls', direction: 'egress', timeMs: T, client, server: { ...server, port: 443 }, endpointId: 137, sni: 'api.openai.com', version: 'TLS 1.3', alpn: ['h2'] };

interface Row {
  name: string;
  rec: AccessLogRecord;
  verdict: Verdict;
  type: L7FlowType;
  /** source → destination as the flow shows it */
  path: string;
  l4: 'TCP' | 'UDP';
  record: 'http' | 'dns' | undefined;
  proxyPort: number;
  direction: TrafficDirection;
  summary: string;
  dropReasonDesc?: DropReason;
  destinationNames?: string[];
}

const rows: Row[] = [
  { name: 'http request forwarded', rec: { ...http, type: 'request', verdict: 'forwarded' }, verdict: Verdict.FORWARDED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:80', l4: 'TCP', record: 'http', proxyPort: 15001, direction: TrafficDirection.EGRESS, summary: 'HTTP/1.1 GET http://deathstar/v1' },
  { name: 'http response (server → client, whole ms)', rec: { ...http, type: 'response', verdict: 'forwarded', code: 200, latencyNs: 3_999_999 }, verdict: Verdict.FORWARDED, type: L7FlowType.RESPONSE, path: '10.244.1.6:80 → 10.244.1.3:40000', l4: 'TCP', record: 'http', proxyPort: 15001, direction: TrafficDirection.EGRESS, summary: 'HTTP/1.1 200 3ms (GET http://deathstar/v1)' },
  { name: 'http denied on ingress: no reason in the summary', rec: { ...http, type: 'request', verdict: 'denied', direction: 'ingress', reason: 'policy' }, verdict: Verdict.DROPPED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:80', l4: 'TCP', record: 'http', proxyPort: 15001, direction: TrafficDirection.INGRESS, summary: 'HTTP/1.1 GET http://deathstar/v1' },
  { name: 'http refused by the parser: DROPPED, the reason shown', rec: { ...http, type: 'request', verdict: 'error', method: '', url: '', reason: 'bad_request' }, verdict: Verdict.DROPPED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:80', l4: 'TCP', record: 'http', proxyPort: 15001, direction: TrafficDirection.EGRESS, summary: 'HTTP/1.1 malformed request [bad_request]' },
  { name: 'dns query forwarded', rec: { ...dns, type: 'request', verdict: 'forwarded' }, verdict: Verdict.FORWARDED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 198.51.100.53:53', l4: 'UDP', record: 'dns', proxyPort: 0, direction: TrafficDirection.EGRESS, summary: 'DNS Query api.openai.com. A' },
  { name: 'dns query denied', rec: { ...dns, type: 'request', verdict: 'denied', rcode: 5 }, verdict: Verdict.DROPPED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 198.51.100.53:53', l4: 'UDP', record: 'dns', proxyPort: 0, direction: TrafficDirection.EGRESS, summary: 'DNS Query api.openai.com. A' },
  { name: 'dns malformed query answered FORMERR: ERROR', rec: { ...dns, type: 'request', verdict: 'error', transport: 'TCP', query: '', qtypes: [], rcode: 1 }, verdict: Verdict.ERROR, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 198.51.100.53:53', l4: 'TCP', record: 'dns', proxyPort: 0, direction: TrafficDirection.EGRESS, summary: 'DNS Query  ' },
  { name: 'dns answer', rec: { ...dns, type: 'response', verdict: 'forwarded', rcode: 0, ips: ['1.2.3.4', '1.2.3.5'], ttl: 30 }, verdict: Verdict.FORWARDED, type: L7FlowType.RESPONSE, path: '198.51.100.53:53 → 10.244.1.3:40000', l4: 'UDP', record: 'dns', proxyPort: 0, direction: TrafficDirection.EGRESS, summary: 'DNS Answer "1.2.3.4,1.2.3.5" TTL: 30 (Proxy api.openai.com. A)' },
  { name: 'dns NXDOMAIN', rec: { ...dns, type: 'response', verdict: 'forwarded', rcode: 3, qtypes: ['A', 'AAAA'] }, verdict: Verdict.FORWARDED, type: L7FlowType.RESPONSE, path: '198.51.100.53:53 → 10.244.1.3:40000', l4: 'UDP', record: 'dns', proxyPort: 0, direction: TrafficDirection.EGRESS, summary: 'DNS Answer RCode: Non-Existent Domain TTL: 0 (Proxy api.openai.com. A,AAAA)' },
  { name: 'tls forwarded', rec: { ...tls, verdict: 'forwarded' }, verdict: Verdict.FORWARDED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:443', l4: 'TCP', record: undefined, proxyPort: 15443, direction: TrafficDirection.EGRESS, summary: 'TLS ClientHello SNI api.openai.com (TLS 1.3, alpn h2)', destinationNames: ['api.openai.com'] },
  { name: 'tls refused by policy', rec: { ...tls, verdict: 'denied', reason: 'policy: server name not allowed' }, verdict: Verdict.DROPPED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:443', l4: 'TCP', record: undefined, proxyPort: 15443, direction: TrafficDirection.EGRESS, summary: 'TLS ClientHello SNI api.openai.com refused: policy: server name not allowed', dropReasonDesc: DropReason.POLICY_DENIED, destinationNames: ['api.openai.com'] },
  { name: 'tls not TLS, intercepting HTTP listener', rec: { ...tls, verdict: 'error', sni: undefined, reason: 'NOT_TLS: first byte 0x47', proxyPort: 15001, direction: 'ingress' }, verdict: Verdict.DROPPED, type: L7FlowType.REQUEST, path: '10.244.1.3:40000 → 10.244.1.6:443', l4: 'TCP', record: undefined, proxyPort: 15001, direction: TrafficDirection.INGRESS, summary: 'TLS ClientHello failed: NOT_TLS: first byte 0x47', destinationNames: [] },
];

const l4Ports = (f: Flow) => f.l4?.protocol.value as { sourcePort: number; destinationPort: number } | undefined;

for (const r of rows) {
  test(`l7 parser: ${r.name}`, () => {
    const f = parse(r.rec);
    const p = l4Ports(f)!;
    assert.deepEqual({
      verdict: f.verdict, type: f.l7?.type, isReply: f.isReply, path: `${f.IP?.source}:${p.sourcePort} → ${f.IP?.destination}:${p.destinationPort}`,
      l4: f.l4?.protocol.case, record: f.l7?.record.case, proxyPort: f.proxyPort, direction: f.trafficDirection, summary: f.Summary,
      dropReasonDesc: f.dropReasonDesc, destinationNames: f.destinationNames, eventType: f.eventType?.type, nodeName: f.nodeName,
    }, {
      verdict: r.verdict, type: r.type, isReply: r.type === L7FlowType.RESPONSE, path: r.path, l4: r.l4, record: r.record, proxyPort: r.proxyPort,
      direction: r.direction, summary: r.summary, dropReasonDesc: r.dropReasonDesc ?? 0, destinationNames: r.destinationNames ?? [], eventType: 129, nodeName: 'node1',
    });
    // uuid and emitter are Hubble's to fill (ingestFlow), as for every flow built outside it
    assert.equal(f.uuid, '');
    assert.equal(f.emitter, undefined);
  });
}

test('l7 parser: endpoints — the proxy\'s own resolution wins, else the pod at the address, else the proxy\'s labels or the identity\'s, else its reserved name', () => {
  lookups.length = 0;
  const kubeDns = { id: 0, identity: 300, namespace: 'kube-system', pod: 'coredns', labels: ['k8s:k8s-app=kube-dns'] };
  // the DNS proxy resolved the ClusterIP to its backend: that endpoint, no lookup of the ClusterIP
  const f = parse({ ...dns, type: 'request', verdict: 'forwarded', server: { ip: '10.96.0.10', port: 53, identity: 300, endpoint: kubeDns } });
  assert.deepEqual([f.destination?.podName, f.destination?.namespace, f.destination?.identity, f.destination?.clusterName], ['coredns', 'kube-system', 300, 'default']);
  assert.deepEqual(f.source?.labels, ['k8s:class=tiefighter', 'k8s:org=empire'], 'labels sorted');
  assert.deepEqual(lookups, []);
  // labels given for an address that is no pod (a name's IP): taken as they are (sorted)
  const g = parse({ ...dns, type: 'request', verdict: 'forwarded', server: { ip: '198.51.100.9', port: 53, identity: 16777217, labels: ['fqdn:b', 'cidr:a'] } });
  assert.deepEqual([g.destination?.podName, g.destination?.labels, g.destination?.clusterName, g.destination?.identity], ['', ['cidr:a', 'fqdn:b'], '', 16777217]);
  assert.deepEqual(lookups, [], 'a DNS name\'s identity is never a pod\'s: not looked up');
  // labels given for a pod on another node (the DNS proxy's remote cluster DNS server): the pod, as
  // its L3/L4 flows name it (Hubble's ipcache metadata), with the identity the proxy judged by
  const r = parse({ ...dns, type: 'request', verdict: 'forwarded', server: { ip: '10.244.2.7', port: 53, identity: 259, labels: ['k8s:org=empire', 'k8s:class=deathstar'] } });
  assert.deepEqual([r.destination?.ID, r.destination?.podName, r.destination?.namespace, r.destination?.identity, r.destination?.clusterName], [0, 'deathstar-2', 'empire', 259, 'default']);
  lookups.length = 0;
  // nothing given: the pod at the address (local or remote), then the identity's labels, then the reserved name
  const h = parse({ ...http, type: 'request', verdict: 'forwarded' });
  assert.deepEqual([h.source?.ID, h.source?.podName], [137, 'tiefighter']);
  assert.deepEqual([h.destination?.ID, h.destination?.podName, h.destination?.labels], [0, '', ['k8s:class=deathstar', 'k8s:org=empire']]);
  const rh = parse({ ...http, type: 'request', verdict: 'forwarded', server: { ip: '10.244.2.7', port: 80, identity: 259 } });
  assert.deepEqual([rh.destination?.podName, rh.destination?.namespace, rh.destination?.labels], ['deathstar-2', 'empire', ['k8s:class=deathstar', 'k8s:org=empire']]);
  // an ingress proxy's client on another node: the source is named too
  const ri = parse({ ...http, type: 'request', verdict: 'forwarded', direction: 'ingress', client: { ip: '10.244.2.7', port: 40001, identity: 259 }, server: { ...client, port: 80 } });
  assert.deepEqual([ri.source?.podName, ri.source?.namespace, ri.destination?.podName], ['deathstar-2', 'empire', 'tiefighter']);
  const w = parse({ ...http, type: 'request', verdict: 'forwarded', server: { ip: '198.51.100.1', port: 80, identity: 2 } });
  assert.deepEqual(w.destination?.labels, ['reserved:world']);
  const u = parse({ ...http, type: 'request', verdict: 'forwarded', server: { ip: '198.51.100.1', port: 80, identity: 0 } });
  assert.deepEqual(u.destination?.labels, [], 'identity 0 (unknown) has no name');
  // the world (2) is not looked up either; an unknown identity (0) is
  assert.deepEqual(lookups, ['10.244.1.3', '10.244.1.6', '10.244.1.3', '10.244.2.7', '10.244.2.7', '10.244.1.3', '10.244.1.3', '10.244.1.3', '198.51.100.1']);
});

test('l7 parser: HTTP headers sorted, sensitive values and URL passwords redacted, trace context, AI extension', () => {
  const f = parse({
    ...http, type: 'request', verdict: 'forwarded', url: 'http://u:pw@deathstar/v1', traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    headers: ['X-Api-Key', 'k', 'Host', 'deathstar', 'accept', '*/*'],
    ai: { provider: 'openai', operation: 'chat.completions', model: 'gpt-4o-mini', stream: true, promptTokens: 12, completionTokens: 30 },
  });
  const h = f.l7?.record.case === 'http' ? f.l7.record.value : undefined;
  assert.deepEqual(h?.headers.map((x) => [x.key, x.value]), [['Host', 'deathstar'], ['X-Api-Key', 'HUBBLE_REDACTED'], ['accept', '*/*']]);
  assert.equal(h?.url, 'http://u:HUBBLE_REDACTED@deathstar/v1');
  assert.equal(f.traceContext?.parent?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(f.Summary, 'HTTP/1.1 GET http://u:HUBBLE_REDACTED@deathstar/v1 [ai openai gpt-4o-mini stream, tokens 12+30]');
  assert.equal(f.extensions?.typeUrl, 'type.googleapis.com/google.protobuf.Struct');
  const plain = parse({ ...http, type: 'request', verdict: 'forwarded' });
  assert.equal(plain.traceContext, undefined);
  assert.equal(plain.extensions, undefined);
});

test('l7 parser: time keeps every digit of the record\'s epoch ms', () => {
  assert.deepEqual(parse({ ...dns, type: 'request', verdict: 'forwarded' }).time, { $typeName: 'google.protobuf.Timestamp', seconds: BigInt(Math.floor(T / 1000)), nanos: 123_000_000 });
  const f = parse({ ...http, type: 'request', verdict: 'forwarded', timeMs: T + 0.25 });
  assert.deepEqual([f.time?.seconds, f.time?.nanos], [BigInt(Math.floor(T / 1000)), 123_250_000]);
});

test('l7 parser: an HTTP message\'s summary made once is never another record\'s (request or reply, whole ms, server name, reason), borrowed or not', () => {
  const p = createL7Parser({ nodeName: 'node1', resolver: { byIp: () => undefined, identityLabels: () => undefined } });
  const req = { ...http, type: 'request', verdict: 'forwarded' } as HttpAccessRecord;
  // a local answer with no status shares the request's message (code 0, no headers): its line is a reply's
  const reply0 = { ...http, type: 'response', verdict: 'forwarded', latencyNs: 500_000 } as HttpAccessRecord;
  const resp = (latencyNs: number, extra: Partial<HttpAccessRecord> = {}) => ({ ...http, type: 'response', verdict: 'forwarded', code: 200, latencyNs, ...extra }) as HttpAccessRecord;
  const tlsOf = (sni: string) => ({ tls: { sni, intercepted: true } });
  const seq: [HttpAccessRecord, string][] = [
    [req, 'HTTP/1.1 GET http://deathstar/v1'],
    [{ ...req, ...tlsOf('a.example') }, 'HTTP/1.1 GET http://deathstar/v1 [TLS intercepted, SNI a.example]'],
    [{ ...req, ...tlsOf('b.example') }, 'HTTP/1.1 GET http://deathstar/v1 [TLS intercepted, SNI b.example]'],
    [{ ...req, tls: { sni: 'b.example', intercepted: false } }, 'HTTP/1.1 GET http://deathstar/v1'],
    [req, 'HTTP/1.1 GET http://deathstar/v1'],
    [reply0, 'HTTP/1.1 0 0ms (GET http://deathstar/v1)'],
    [req, 'HTTP/1.1 GET http://deathstar/v1'],
    [resp(3_999_999), 'HTTP/1.1 200 3ms (GET http://deathstar/v1)'],
    [resp(3_000_000), 'HTTP/1.1 200 3ms (GET http://deathstar/v1)'],
    [resp(4_000_000), 'HTTP/1.1 200 4ms (GET http://deathstar/v1)'],
    [resp(3_100_000), 'HTTP/1.1 200 3ms (GET http://deathstar/v1)'],
    [resp(3_100_000, { verdict: 'error', reason: 'upstream_reset' }), 'HTTP/1.1 200 3ms (GET http://deathstar/v1) [upstream_reset]'],
    [resp(3_100_000), 'HTTP/1.1 200 3ms (GET http://deathstar/v1)'],
    [resp(3_100_000, tlsOf('a.example')), 'HTTP/1.1 200 3ms (GET http://deathstar/v1) [TLS intercepted, SNI a.example]'],
  ];
  const kept: [Flow, string][] = [];
  for (const borrow of [false, true]) {
    for (const [rec, summary] of seq) {
      const f = borrow ? p.borrow(rec) : p(rec);
      assert.equal(f.Summary, summary, `${borrow ? 'borrowed' : 'kept'}: ${JSON.stringify(rec)}`);
      assert.equal(f.Summary, httpSummary(rec));
      if (!borrow) kept.push([f, summary]);
    }
  }
  // a kept flow is not changed by the records parsed after it (the parser's part of a record is refilled)
  for (const [f, summary] of kept) assert.equal(f.Summary, summary);
  assert.deepEqual(kept.map(([f]) => [f.isReply, f.l7?.type, f.verdict]), seq.map(([r]) => [r.type === 'response', r.type === 'response' ? L7FlowType.RESPONSE : L7FlowType.REQUEST, r.verdict === 'forwarded' ? Verdict.FORWARDED : Verdict.DROPPED]));
});
