/** DNS flows of the proxy (fields, Summary, compact line) and the Hubble DNS metrics they feed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { createL7Parser } from '../../../../src/hubble/l7-parser.ts';
import type { DnsAccessRecord } from '../../../../src/common/access-log.ts';
import { answerFacts, errorReply, parseQuery } from '../../../../src/proxy/dns/wire.ts';
import { createHubbleMetrics, parseMetricsConfig } from '../../../../src/hubble/metrics/index.ts';

const parse = createL7Parser({ nodeName: 'n1', resolver: { byIp: () => undefined, identityLabels: () => undefined } });
const buildDNSFlow = (r: Omit<DnsAccessRecord, 'l7' | 'direction' | 'timeMs'>) => parse({ l7: 'dns', direction: 'egress', timeMs: Date.now(), ...r });
const client = { ip: '10.244.1.3', port: 40000, identity: 257, endpoint: { id: 137, identity: 257, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] } };
const server = { ip: '10.244.1.2', port: 53, identity: 256, endpoint: { id: 100, identity: 256, namespace: 'kube-system', pod: 'coredns', labels: ['k8s:k8s-app=kube-dns'] } };

test('request and response flows carry Hubble DNS fields and summaries', () => {
  const req = buildDNSFlow({ type: 'request', client, server, transport: 'UDP', query: 'api.openai.com.', qtypes: ['A'], verdict: 'forwarded' });
  assert.equal(req.Summary, 'DNS Query api.openai.com. A');
  assert.equal(req.isReply, false);
  assert.equal(req.eventType?.type, 129);
  assert.equal(req.source?.podName, 'client');
  const res = buildDNSFlow({ type: 'response', client, server, transport: 'UDP', query: 'api.openai.com.', qtypes: ['A'], verdict: 'forwarded', rcode: 0, ips: ['198.51.100.20'], ttl: 30, rrtypes: ['A'], latencyNs: 1000 });
  assert.equal(res.Summary, 'DNS Answer "198.51.100.20" TTL: 30 (Proxy api.openai.com. A)');
  assert.equal(res.source?.podName, 'coredns', 'responses come from the server');
  assert.equal(res.isReply, true);
  const nx = buildDNSFlow({ type: 'response', client, server, transport: 'UDP', query: 'x.', qtypes: ['AAAA'], verdict: 'forwarded', rcode: 3 });
  assert.equal(nx.Summary, 'DNS Answer RCode: Non-Existent Domain TTL: 0 (Proxy x. AAAA)');
});

test('hubble_dns_* metrics with Hubble labels (query option, context)', async () => {
  const m = createHubbleMetrics('dns:query;sourceContext=pod;destinationContext=pod flow policy');
  m.process(buildDNSFlow({ type: 'request', client, server, transport: 'UDP', query: 'api.openai.com.', qtypes: ['A'], verdict: 'forwarded' }));
  m.process(buildDNSFlow({ type: 'request', client, server, transport: 'UDP', query: 'evil.com.', qtypes: ['A'], verdict: 'denied', rcode: 5 }));
  m.process(buildDNSFlow({ type: 'response', client, server, transport: 'UDP', query: 'api.openai.com.', qtypes: ['A'], verdict: 'forwarded', rcode: 0, ips: ['198.51.100.20'], ttl: 30, rrtypes: ['A'] }));
  const text = await m.registry.metrics();
  assert.match(text, /hubble_dns_queries_total\{source="default\/client",destination="kube-system\/coredns",rcode="",qtypes="A",ips_returned="0",query="api.openai.com."\} 1/);
  assert.match(text, /hubble_dns_queries_total\{source="default\/client",destination="kube-system\/coredns",rcode="Policy denied",qtypes="A",ips_returned="0",query="evil.com."\} 1/);
  assert.match(text, /hubble_dns_responses_total\{source="kube-system\/coredns",destination="default\/client",rcode="No Error",qtypes="A",ips_returned="1",query="api.openai.com."\} 1/);
  assert.match(text, /hubble_dns_response_types_total\{source="kube-system\/coredns",destination="default\/client",type="A",qtypes="A",query="api.openai.com."\} 1/);
  assert.match(text, /hubble_flows_processed_total\{protocol="DNS",type="L7",subtype="DNS",verdict="FORWARDED"\} 2/);
  assert.match(text, /hubble_policy_verdicts_total\{direction="egress",match="l7\/dns",action="dropped"\} 1/);
});

test('metrics config: options, labelsContext order, unknown names rejected', () => {
  assert.deepEqual(parseMetricsConfig('dns:query;ignoreAAAA drop'), [{ name: 'dns', options: { query: '', ignoreAAAA: '' } }, { name: 'drop', options: {} }]);
  const m = createHubbleMetrics('drop:labelsContext=traffic_direction,source_namespace');
  assert.ok(m.handlers.length === 1);
  // a bad entry is reported and skipped; the others still run (Cilium logs and goes on too)
  const bad = createHubbleMetrics('nope dns');
  assert.deepEqual(bad.handlers.length, 1);
  assert.match(bad.configErrors.join('\n'), /unknown metric "nope"/);
  const ctx = createHubbleMetrics('dns:sourceContext=bogus drop');
  assert.equal(ctx.handlers.length, 1);
  assert.match(ctx.configErrors.join('\n'), /unknown context identifier/);
});

test('wire: malformed, truncated, oversized and compression-loop queries are rejected, never thrown', () => {
  const good = dnsPacket.encode({ id: 7, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: 'API.openai.com', type: 'A' }] });
  const q = parseQuery(good);
  assert.ok(q.ok && q.name === 'api.openai.com.' && q.qtypes[0] === 'A');
  assert.deepEqual(parseQuery(good.subarray(0, 5)), { ok: false, reason: 'short' });
  assert.equal((parseQuery(good.subarray(0, good.length - 3)) as { reason: string }).reason, 'malformed');
  assert.equal((parseQuery(Buffer.concat([good, Buffer.alloc(600)])) as { reason: string }).reason, 'oversized');
  // question name = pointer to itself (offset 12)
  const loop = Buffer.from(good.subarray(0, 12));
  const looped = Buffer.concat([loop, Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
  assert.equal((parseQuery(looped) as { reason: string }).reason, 'malformed');
  const r = errorReply(good, 5)!;
  const d = dnsPacket.decode(r);
  assert.equal(d.id, 7);
  assert.equal((d as { rcode?: string }).rcode, 'REFUSED');
  assert.equal(d.questions?.[0]?.name, 'API.openai.com');
  assert.equal((dnsPacket.decode(errorReply(looped, 1)!) as { rcode?: string }).rcode, 'FORMERR');
  const ans = dnsPacket.encode({ id: 7, type: 'response', answers: [
    { name: 'cdn.example.com', type: 'CNAME', ttl: 30, data: 'www.example.com' },
    { name: 'www.example.com', type: 'A', ttl: 20, data: '203.0.113.21' },
  ] } as dnsPacket.Packet);
  assert.deepEqual(answerFacts(ans), { id: 7, rcode: 0, ips: ['203.0.113.21'], ttl: 20, cnames: ['www.example.com.'], rrtypes: ['CNAME', 'A'] });
});
