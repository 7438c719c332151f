/**
 * DNS proxy and FQDN policy end to end in a lab, through the CLI (issue 4, "Must show"):
 * Cilium's DNS-only, to-FQDNs and FQDN-with-L7 scenarios, REFUSED for names outside the rules
 * (and no connection to such a name's IPs even when learned another way), `*.` vs `**.`
 * patterns, two pods with different rules, malformed DNS packets, flows and hubble_dns_* metrics.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';

const lab = new TestLab(`dnsp${process.pid % 10000}`);
const NS = 'dnstest';
const PROBE = join(REPO, 'test/integration/e2e/dns-probe.ts');
const OPENAI = '198.51.100.20';
const ANTHROPIC = '198.51.100.21';

const pod = (name: string, app: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app } },
  spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] },
});
const cnp = (name: string, app: string, egress: object[]) => ({
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS },
  spec: { endpointSelector: { matchLabels: { app } }, egress },
});
const toDNS = (rules: object[]) => ({
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: rules } }],
});
const toFQDNs = (sels: object[], ports = ['80', '443'], rules?: object) => ({
  toFQDNs: sels, toPorts: [{ ports: ports.map((port) => ({ port, protocol: 'TCP' })), ...(rules ? { rules } : {}) }],
});

type Op = Record<string, unknown>;
async function probe(podName: string, ops: Op[]): Promise<Record<string, unknown>[]> {
  const r = await lab.exec(NS, podName, [join(REPO, 'bin/node'), PROBE, JSON.stringify(ops)], 90_000);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>[];
}

async function withPolicies(ps: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(ps);
  try { await fn(); } finally { await lab.delete(ps); }
}

function flowsOf(podName: string, since: Date, extra: string[], pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--pod', `${NS}/${podName}`, '--since', since.toISOString(), '--last', '2000', ...extra], pred);
}

/** answers the DNS proxy held until the agent said the datapath has their IPs, so far */
const holds = async () => (await callAgent<{ hold: { count: number } }>(lab.paths.agentSocket('node1'), 'GET', '/v1/dns/proxy')).hold.count;

const dnsOf = (f: Flow) => (f.l7 as { dns?: { query?: string; rcode?: number; ips?: string[]; qtypes?: string[] } } | undefined)?.dns;

before(async () => {
  await lab.up();
  await lab.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }, pod('client', 'client'), pod('other', 'other')]);
});
after(async () => { await lab.down(); });

test('lab DNS answers services, pods and outside hosts without any policy (CNAME chain, NXDOMAIN)', async () => {
  const r = await probe('client', [
    { op: 'query', name: 'kube-dns.kube-system.svc.cluster.local' },
    { op: 'query', name: 'api.openai.com' },
    { op: 'query', name: 'cdn.example.com' },
    { op: 'query', name: 'does-not-exist.example.org' },
    { op: 'lookupConnect', name: 'api.anthropic.com', port: 443 },
  ]);
  assert.deepEqual(r[0], { ...r[0], rcode: 'NOERROR', ips: ['10.96.0.10'] });
  assert.deepEqual((r[1] as { ips: string[] }).ips, [OPENAI]);
  assert.deepEqual((r[2] as { ips: string[] }).ips, ['203.0.113.21'], 'alias CNAME → www.example.com');
  assert.equal(r[3]!.rcode, 'NXDOMAIN');
  assert.equal(r[4]!.connected, true);
});

test('DNS-only: every lookup is proxied and visible, nothing else may leave', async () => {
  await withPolicies([cnp('dns-only', 'client', [toDNS([{ matchPattern: '*' }])])], async () => {
    const since = new Date();
    const h0 = await holds();
    const r = await probe('client', [{ op: 'lookupConnect', name: 'api.openai.com', port: 443 }, { op: 'query', name: 'nothing.example.org' }]);
    // no toFQDNs selector selects the name: no identity or policy entry will follow, nothing to wait for
    assert.equal(await holds(), h0, 'an answer no toFQDNs selector selects is not held for the agent');
    assert.equal(r[0]!.rcode, 'NOERROR');
    assert.equal(r[0]!.connected, false, 'DNS allowed, the connection is not');
    assert.equal(r[1]!.rcode, 'NXDOMAIN', 'NXDOMAIN from the server goes through unchanged');
    const fs = await flowsOf('client', since, ['--protocol', 'dns'], (x) => x.filter((f) => dnsOf(f)?.query === 'api.openai.com.').length >= 2);
    const req = fs.find((f) => dnsOf(f)?.query === 'api.openai.com.' && f.is_reply === false);
    const res = fs.find((f) => dnsOf(f)?.query === 'api.openai.com.' && f.is_reply === true);
    assert.ok(req && res, JSON.stringify(fs.slice(-4)));
    assert.equal(req.verdict, 'FORWARDED');
    assert.deepEqual(dnsOf(res)!.ips, [OPENAI]);
    assert.equal(req.destination?.pod_name, 'coredns');
    const compact = await lab.ok(['observe', '--pod', `${NS}/client`, '--protocol', 'dns', '--since', since.toISOString(), '--last', '50']);
    assert.match(compact, /dnstest\/client:\d+ \(ID:\d+\) -> kube-system\/coredns:53 \(ID:\d+\) dns-request proxy FORWARDED \(DNS Query api\.openai\.com\. A\)/);
    assert.match(compact, /<- kube-system\/coredns:53 \(ID:\d+\) dns-response proxy FORWARDED \(DNS Answer "198\.51\.100\.20" TTL: 30 \(Proxy api\.openai\.com\. A\)\)/);
  });
});

test('toFQDNs: only the learned IPs of the allowed name; flows name it (--to-fqdn)', async () => {
  await withPolicies([cnp('to-fqdns', 'client', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchName: 'api.openai.com' }])])], async () => {
    const since = new Date();
    const r = await probe('client', [
      { op: 'connect', ip: ANTHROPIC, port: 443 },
      { op: 'lookupConnect', name: 'api.openai.com', port: 443 },
    ]);
    // api.anthropic.com: no selector selects it, so its answer is not held for the agent
    const h0 = await holds();
    r.push(...await probe('client', [{ op: 'lookupConnect', name: 'api.anthropic.com', port: 443 }]));
    assert.equal(await holds(), h0, 'an answer no toFQDNs selector selects is not held for the agent');
    assert.equal(r[0]!.connected, false, 'an IP no allowed name resolved to is just world');
    assert.equal(r[1]!.connected, true);
    assert.ok((r[1]!.ms as number) < 900, `first SYN not dropped (connect took ${String(r[1]!.ms)} ms)`);
    assert.equal(r[2]!.rcode, 'NOERROR');
    assert.equal(r[2]!.connected, false);
    const fs = await flowsOf('client', since, ['--to-fqdn', 'api.openai.com'], (x) => x.some((f) => f.verdict === 'FORWARDED'));
    assert.ok(fs.some((f) => f.verdict === 'FORWARDED' && f.IP?.destination === OPENAI), JSON.stringify(fs.slice(-3)));
    // the agent's live trace (the UI's "why") knows the learnt IP: allowed by the toFQDNs rule;
    // an address no allowed name resolved to stays the world, in default deny
    type Traced = { trace: { verdict: string; egress: { rules: { policy: string }[] } } };
    const trace = (to: string) => callAgent<Traced>(lab.paths.agentSocket('node1'), 'POST', '/v1/policy/trace', { from: `${NS}/client`, to, port: 443, protocol: 'TCP' });
    const learnt = await trace(OPENAI);
    assert.equal(learnt.trace.verdict, 'FORWARDED', JSON.stringify(learnt.trace));
    assert.deepEqual(learnt.trace.egress.rules.map((x) => x.policy), [`${NS}/to-fqdns`]);
    assert.equal((await trace(ANTHROPIC)).trace.verdict, 'DROPPED');
  });
});

test('a name outside the DNS rules gets REFUSED; its IPs stay unreachable even when learned another way', async () => {
  await withPolicies([
    cnp('client-openai', 'client', [toDNS([{ matchName: 'api.openai.com' }]), toFQDNs([{ matchName: 'api.openai.com' }])]),
    cnp('other-anthropic', 'other', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchName: 'api.anthropic.com' }])]),
  ], async () => {
    const since = new Date();
    const o = await probe('other', [{ op: 'lookupConnect', name: 'api.anthropic.com', port: 443 }]);
    assert.equal(o[0]!.connected, true, 'the other pod learns and reaches api.anthropic.com');
    const r = await probe('client', [
      { op: 'query', name: 'api.anthropic.com' },
      { op: 'connect', ip: ANTHROPIC, port: 443 },
      { op: 'lookupConnect', name: 'api.openai.com', port: 443 },
    ]);
    assert.equal(r[0]!.rcode, 'REFUSED');
    assert.equal(r[1]!.connected, false, 'learned by another pod: still not allowed for this one');
    assert.equal(r[2]!.connected, true);
    // DNS over TCP is steered to the same proxy and policed the same way.
    const tcpDenied = await lab.exec(NS, 'client', ['dig', '+tcp', '+time=3', '+tries=1', 'api.anthropic.com']);
    assert.match(tcpDenied.stdout, /status: REFUSED/);
    const tcpAllowed = await lab.exec(NS, 'client', ['dig', '+tcp', '+short', '+time=3', '+tries=1', 'api.openai.com']);
    assert.equal(tcpAllowed.stdout.trim(), OPENAI);
    const fs = await flowsOf('client', since, ['--protocol', 'dns', '--verdict', 'DROPPED'], (x) => x.length > 0);
    const d = fs.find((f) => dnsOf(f)?.query === 'api.anthropic.com.');
    assert.ok(d, 'a DROPPED DNS flow for the refused query');
    const metrics = execFileSync('ip', ['netns', 'exec', `${lab.name}-node1`, 'curl', '-s', 'http://127.0.0.1:9965/metrics'], { encoding: 'utf8' });
    assert.match(metrics, /hubble_dns_queries_total\{source="dnstest\/client",destination="kube-system\/coredns",rcode="Policy denied",qtypes="A",ips_returned="0",query="api\.anthropic\.com\."\} \d+/);
    assert.match(metrics, /hubble_dns_responses_total\{[^}]*rcode="No Error"[^}]*query="api\.openai\.com\."\} \d+/);
  });
});

test('*.example.com reaches a.example.com but not a.b.example.com; **.example.com reaches both', async () => {
  await withPolicies([cnp('one-label', 'client', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchPattern: '*.example.com' }])])], async () => {
    const r = await probe('client', [{ op: 'lookupConnect', name: 'a.example.com', port: 80 }, { op: 'lookupConnect', name: 'a.b.example.com', port: 80 }, { op: 'lookupConnect', name: 'example.com', port: 80 }]);
    assert.deepEqual(r.map((x) => x.connected), [true, false, false]);
  });
  await withPolicies([cnp('any-depth', 'client', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchPattern: '**.example.com' }])])], async () => {
    const r = await probe('client', [{ op: 'lookupConnect', name: 'a.example.com', port: 80 }, { op: 'lookupConnect', name: 'a.b.example.com', port: 80 }, { op: 'lookupConnect', name: 'example.com', port: 80 }]);
    assert.deepEqual(r.map((x) => x.connected), [true, true, false]);
  });
});

test('two pods on a node with different rules do not share permissions', async () => {
  await withPolicies([
    cnp('c', 'client', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchName: 'api.openai.com' }])]),
    cnp('o', 'other', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchName: 'api.anthropic.com' }])]),
  ], async () => {
    const ops = [{ op: 'lookupConnect', name: 'api.openai.com', port: 443 }, { op: 'lookupConnect', name: 'api.anthropic.com', port: 443 }];
    const [c, o] = await Promise.all([probe('client', ops), probe('other', ops)]);
    assert.deepEqual(c.map((x) => x.connected), [true, false]);
    assert.deepEqual(o.map((x) => x.connected), [false, true]);
  });
});

test('FQDN with L7: toFQDNs + HTTP rules on port 80 (the HTTP proxy judges each request)', async () => {
  await withPolicies([cnp('fqdn-l7', 'client', [toDNS([{ matchPattern: '*' }]), toFQDNs([{ matchName: 'api.openai.com' }], ['80'], { http: [{ method: 'GET', path: '/v1/models' }] })])], async () => {
    const since = new Date();
    const ok = await lab.exec(NS, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', 'http://api.openai.com/v1/models']);
    const denied = await lab.exec(NS, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '-X', 'POST', 'http://api.openai.com/v1/chat/completions']);
    const other = await lab.exec(NS, 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', 'http://example.com/']);
    assert.equal(ok.stdout, '200', `GET /v1/models: ${ok.stdout} ${ok.stderr}`);
    assert.equal(denied.stdout, '403', `POST /v1/chat/completions: ${denied.stdout} ${denied.stderr}`);
    assert.equal(other.stdout, '000');
    // The 403 is the proxy's verdict: a DROPPED L7 flow for that request.
    const http = (f: Flow) => (f.l7 as { http?: { method?: string; url?: string } } | undefined)?.http;
    const fs = await flowsOf('client', since, ['--type', 'l7'], (x) => x.some((f) => f.verdict === 'DROPPED' && http(f)?.method === 'POST'));
    const drop = fs.find((f) => f.verdict === 'DROPPED' && http(f)?.method === 'POST');
    assert.ok(drop, JSON.stringify(fs.map((f) => [f.verdict, http(f)])));
    assert.match(http(drop)?.url ?? '', /api\.openai\.com\/v1\/chat\/completions/);
    assert.ok(fs.some((f) => f.verdict === 'FORWARDED' && http(f)?.method === 'GET'), 'the allowed GET is a FORWARDED L7 flow');
  });
});

test('malformed, truncated, oversized and compression-loop packets: FORMERR or dropped with a flow; the proxy keeps answering', async () => {
  await withPolicies([cnp('dns-star', 'client', [toDNS([{ matchPattern: '*' }])])], async () => {
    const since = new Date();
    const header = '123401000001000000000000';
    const r = await probe('client', [
      { op: 'raw', hex: '0102030405' }, // shorter than a header
      { op: 'raw', hex: `${header}03777777` }, // question cut after the name
      { op: 'raw', hex: `${header}03616161${'00'.repeat(700)}` }, // oversized
      { op: 'raw', hex: `${header}c00c00010001` }, // name = pointer to itself
      { op: 'raw', hex: '123481000001000000000000016100' + '00010001' }, // a response, not a query
      { op: 'query', name: 'api.openai.com' },
    ]);
    assert.equal(r[0]!.reply, null);
    assert.equal(r[1]!.reply, 'FORMERR');
    assert.equal(r[2]!.reply, 'FORMERR');
    assert.equal(r[3]!.reply, 'FORMERR');
    assert.equal(r[4]!.reply, 'FORMERR');
    assert.equal(r[5]!.rcode, 'NOERROR', 'still answering');
    const fs = await flowsOf('client', since, ['--protocol', 'dns'], (x) => x.filter((f) => f.verdict === 'ERROR' || (f.verdict === 'DROPPED' && dnsOf(f)?.query === '')).length >= 5);
    assert.ok(fs.filter((f) => f.verdict === 'ERROR').length >= 4, JSON.stringify(fs.map((f) => f.verdict)));
    assert.ok(fs.some((f) => f.verdict === 'DROPPED' && dnsOf(f)?.rcode === 1), 'the header-less packet: dropped with a flow');
  });
});
