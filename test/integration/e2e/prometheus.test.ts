/**
 * A real Prometheus (Debian's) scrapes a lab through `membrane lab metrics --serve` (the loopback
 * forwarder: the root namespace has no route into the lab). The test generates a known number of
 * DNS queries and HTTP requests, then asks Prometheus over its HTTP API: the counters equal what
 * was generated and the rates are non-zero; `promtool check metrics` accepts both expositions
 * (Prometheus text and OpenMetrics with exemplars); and every panel query of deploy/grafana/*.json
 * parses and returns series. The metrics ports answer pods only where policy allows it: a pod
 * whose egress policy does not name the host is dropped, one with `toEntities: [host]` scrapes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO } from '../support/lab.ts';
import { until } from '../../support/until.ts';

const lab = new TestLab(`prm${process.pid % 10000}`);
const NS = 'prom';
const N = 12; // HTTP requests (each with one DNS A query for the service name)
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const FWD_PORT = 19965 + (process.pid % 1000);
const PROM_PORT = 19090 + (process.pid % 1000);
const METRICS = [
  'dns:query;ignoreAAAA;labelsContext=source_namespace,source_workload,destination_namespace,destination_workload',
  'drop:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload',
  'tcp:labelsContext=source_namespace,destination_namespace',
  'flow:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload',
  'port-distribution:labelsContext=destination_namespace,destination_workload',
  'icmp:labelsContext=source_namespace,destination_namespace',
  'flows-to-world:port;labelsContext=source_namespace,source_workload',
  'policy:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction',
  'httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction',
].join(' ');
const children: ChildProcess[] = [];
let badApply: { code: number; stderr: string };

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = lab.env): ChildProcess {
  const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  c.stdout!.on('data', (d: Buffer) => (log += d));
  c.stderr!.on('data', (d: Buffer) => (log += d));
  (c as ChildProcess & { log: () => string }).log = () => log;
  children.push(c);
  return c;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

interface PromResult { metric: Record<string, string>; value: [number, string] }
async function promQuery(q: string): Promise<PromResult[]> {
  const r = await get(`http://127.0.0.1:${PROM_PORT}/api/v1/query?query=${encodeURIComponent(q)}`);
  const j = JSON.parse(r.body) as { status: string; error?: string; data?: { resultType: string; result: PromResult[] } };
  assert.equal(j.status, 'success', `${q}: ${j.error}`);
  return j.data!.result;
}
const scalar = async (q: string) => {
  const r = await promQuery(q);
  assert.equal(r.length, 1, `${q}: one series, got ${JSON.stringify(r)}`);
  return Number(r[0]!.value[1]);
};

before(async () => {
  await lab.ok(['up'], { timeoutMs: 180_000, env: { MEMBRANE_HUBBLE_METRICS: METRICS, MEMBRANE_HUBBLE_METRICS_OPENMETRICS: 'true' } });
  const sel = (app: string) => ({ matchLabels: { app } });
  const deploy = (name: string, image: string, ports: object[] = []) => ({
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name, namespace: NS },
    spec: { replicas: 1, selector: sel(name), template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'c', image, ports }] } } },
  });
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    deploy('web', 'ealen/echo-server', [{ containerPort: 8080 }]),
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' }, ports: [{ port: 8080, protocol: 'TCP' }] } },
    deploy('client', 'curlimages/curl'),
    deploy('intruder', 'curlimages/curl'),
    deploy('scraper', 'curlimages/curl'),
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-egress', namespace: NS }, spec: {
      endpointSelector: sel('client'),
      egress: [
        { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
        { toEndpoints: [sel('web')], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/ok.*' }] } }] },
        { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
      ],
    } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'scraper-egress', namespace: NS }, spec: {
      endpointSelector: sel('scraper'),
      egress: [{ toEntities: ['host'], toPorts: [{ ports: [{ port: '9965', protocol: 'TCP' }, { port: '9962', protocol: 'TCP' }] }] }],
    } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'web-ingress', namespace: NS }, spec: {
      endpointSelector: sel('web'), ingress: [{ fromEndpoints: [sel('client')], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
    } },
  ]);
  const fwd = start(join(REPO, 'bin/membrane'), ['lab', 'metrics', '--serve', `127.0.0.1:${FWD_PORT}`]);
  await until('the forwarder', async () => (await get(`http://127.0.0.1:${FWD_PORT}/metrics`)).status === 200, 120_000).catch((e) => { throw new Error(`${e}: ${(fwd as ChildProcess & { log: () => string }).log()}`); });
  const dir = await lab.dir;
  await mkdir(join(dir, 'tsdb'));
  await writeFile(join(dir, 'prometheus.yml'), [
    'global: {scrape_interval: 1s, evaluation_interval: 1s}',
    'scrape_configs:',
    `  - {job_name: hubble, static_configs: [{targets: ['127.0.0.1:${FWD_PORT}']}]}`,
    `  - {job_name: cilium-agent, metrics_path: /agent/metrics, static_configs: [{targets: ['127.0.0.1:${FWD_PORT}']}]}`,
    '',
  ].join('\n'));
  start('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${PROM_PORT}`, '--log.level=warn']);
  await until('prometheus ready', async () => (await get(`http://127.0.0.1:${PROM_PORT}/-/ready`)).status === 200, 120_000);
  await until('both targets up', async () => (await promQuery('up == 1')).length === 2, 60_000);

  // the traffic: N allowed requests by name, 3 denied paths (403), a world host, an intruder's drops
  const pods = Object.keys(await lab.podIPs());
  const client = pods.find((p) => p.startsWith(`${NS}/client-`))!.split('/')[1]!;
  const intruder = pods.find((p) => p.startsWith(`${NS}/intruder-`))!.split('/')[1]!;
  const web = (await lab.podIPs())[pods.find((p) => p.startsWith(`${NS}/web-`))!]!;
  const r = await lab.exec(NS, client, ['bash', '-c', `for i in $(seq ${N}); do curl -s -o /dev/null -m 3 -H 'traceparent: 00-${TRACE}-00f067aa0ba902b7-01' http://web.prom.svc.cluster.local.:8080/ok/$i; sleep 0.3; done; for i in 1 2 3; do curl -s -o /dev/null -m 3 http://web.prom.svc.cluster.local.:8080/nope; done; curl -s -o /dev/null -m 3 http://api.openai.com./v1/models`], 120_000);
  assert.equal(r.code, 0, r.stderr);
  await lab.exec(NS, intruder, ['curl', '-s', '-o', '/dev/null', '-m', '1', `http://${web}:8080/`]);
  // a policy each file check accepts but the agent's repository refuses (its DNS parser conflicts
  // with client-egress's HTTP rules on the same port): one failed policy change, nothing applied
  const bad = join(await lab.dir, 'bad.yaml');
  await writeFile(bad, `apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: conflict, namespace: ${NS}}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  egress:\n  - toEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: '8080', protocol: TCP}], rules: {dns: [{matchPattern: '*'}]}}]\n`);
  badApply = await lab.run(['apply', '-f', bad]);
  await new Promise((res) => setTimeout(res, 3000)); // a few more scrapes
});

after(async () => {
  if (process.env.KEEP_PROM) { const f = join(await lab.dir, "..", "prom-dump.txt"); await writeFile(f, (await get(`http://127.0.0.1:${FWD_PORT}/metrics`)).body + (await get(`http://127.0.0.1:${FWD_PORT}/agent/metrics`)).body); }
  for (const c of children) if (c.pid && c.exitCode === null) c.kill('SIGTERM');
  await lab.down();
});

test('PromQL over the HTTP API: the HTTP and DNS counts and rates the test generated', async () => {
  const http200 = `hubble_http_requests_total{source_namespace="${NS}",source_workload="client",destination_workload="web",method="GET",status="200",reporter="client"}`;
  assert.equal(await scalar(`sum(${http200})`), N);
  assert.equal(await scalar(`sum(hubble_http_requests_total{source_namespace="${NS}",status="403"})`), 3);
  const httpRate = await scalar(`sum(rate(${http200}[1m]))`);
  assert.ok(httpRate > 0 && httpRate < N, `HTTP rate ${httpRate}/s`);
  const dnsA = `hubble_dns_queries_total{source_namespace="${NS}",source_workload="client",query="web.prom.svc.cluster.local.",qtypes="A"}`;
  const dns = await scalar(`sum(${dnsA})`);
  assert.ok(dns >= N + 3 && dns <= N + 5, `DNS A queries for the service: ${dns} (one per curl, ${N + 3} curls)`);
  assert.ok(await scalar(`sum(rate(${dnsA}[1m]))`) > 0);
  assert.equal(await scalar(`sum(hubble_dns_responses_total{destination_namespace="${NS}",query="web.prom.svc.cluster.local.",rcode="No Error"})`), dns);
  assert.ok(await scalar(`sum(hubble_flows_to_world_total{source_namespace="${NS}",port="80",verdict="FORWARDED"})`) >= 1);
  assert.ok(await scalar(`sum(hubble_drop_total{source_workload="intruder",reason="POLICY_DENIED"})`) >= 1);
  // the agent's own metrics, under Cilium's names
  assert.ok(await scalar('sum(cilium_endpoint)') >= 3);
  assert.equal(await scalar('sum(cilium_policy_l7_total{proxy_type="envoy",rule="denied"})'), 3);
  assert.ok(await scalar('sum(cilium_policy_l7_total{proxy_type="fqdn",rule="forwarded"})') >= N);
  assert.equal(await scalar('sum(cilium_policy)'), 3);
  // the three policies applied, then the refused one
  assert.notEqual(badApply.code, 0, 'the conflicting policy is refused');
  assert.match(badApply.stderr, /POLICY_L7_CONFLICT/);
  assert.equal(await scalar('sum(cilium_policy_change_total{outcome="success"})'), 3);
  assert.equal(await scalar('sum(cilium_policy_change_total{outcome="failure"})'), 1, badApply.stderr);
  assert.ok(await scalar('sum(cilium_policy_endpoint_enforcement_status{enforcement="egress"})') >= 2); // client, scraper
  assert.ok(await scalar('sum(cilium_identity{type="reserved"})') >= 1);
  assert.ok(await scalar('sum(cilium_proxy_redirects{protocol_l7="http"})') >= 1);
  assert.ok(await scalar('sum(cilium_drop_count_total{reason="Policy denied"})') >= 1);
  // bytes on the wire: at least a minimal IPv4+TCP packet per counted packet
  assert.ok(await scalar('sum(cilium_drop_bytes_total{reason="Policy denied"})') >= 40 * await scalar('sum(cilium_drop_count_total{reason="Policy denied"})'));
  assert.ok(await scalar('sum(cilium_forward_bytes_total)') >= 40 * await scalar('sum(cilium_forward_count_total)'));
  assert.ok((await promQuery('cilium_bpf_map_pressure')).length > 0);
});

test('pods reach the metrics ports only where policy allows the host', async () => {
  const pods = Object.keys(await lab.podIPs());
  const pod = (app: string) => pods.find((p) => p.startsWith(`${NS}/${app}-`))!.split('/')[1]!;
  for (const port of [9965, 9962]) {
    const url = `http://192.0.2.1:${port}/metrics`;
    const ok = await lab.exec(NS, pod('scraper'), ['curl', '-s', '-m', '5', url]);
    assert.equal(ok.code, 0, `scraper (toEntities host) reaches ${url}: ${ok.stderr}`);
    assert.match(ok.stdout, port === 9965 ? /^hubble_flows_processed_total\{/m : /^cilium_endpoint \d+$/m);
    // the client's egress policy names DNS, web and a world host, not the host: dropped (curl timeout 28)
    const denied = await lab.exec(NS, pod('client'), ['curl', '-s', '-m', '2', url]);
    assert.equal(denied.code, 28, `client must not reach ${url}: ${denied.stdout.slice(0, 200)}`);
  }
  const drops = await lab.ok(['observe', '--last', '100', '--verdict', 'DROPPED', '--from-pod', `${NS}/${pod('client')}`, '--to-port', '9965', '-o', 'json']);
  assert.match(drops, /"drop_reason_desc":"POLICY_DENIED"/);
});

test('promtool check metrics: Prometheus text and OpenMetrics (with exemplars) both pass', async () => {
  const text = await get(`http://127.0.0.1:${FWD_PORT}/metrics`, { accept: 'text/plain' });
  assert.match(text.type, /^text\/plain; version=0\.0\.4/);
  const om = await get(`http://127.0.0.1:${FWD_PORT}/metrics`, { accept: 'application/openmetrics-text; version=1.0.0' });
  assert.match(om.type, /^application\/openmetrics-text/);
  assert.match(om.body, new RegExp(`^hubble_http_requests_total\\{[^}]*status="200"[^}]*\\} ${N} # \\{traceID="${TRACE}"\\} 1 `, 'm'));
  assert.doesNotMatch(text.body, /traceID/);
  assert.match(om.body, /# EOF\n$/);
  const agent = await get(`http://127.0.0.1:${FWD_PORT}/agent/metrics`);
  for (const [what, body] of [['hubble', text.body], ['agent', agent.body]] as const) {
    const out = execFileSync('promtool', ['check', 'metrics'], { input: body }).toString();
    assert.equal(out, '', `${what}: promtool says ${out}`);
  }
  // promtool reads the text format; OpenMetrics is judged by Prometheus itself, which scraped it
  const scrapes = await promQuery('scrape_samples_scraped{job="hubble"}');
  assert.ok(Number(scrapes[0]!.value[1]) > 10);
});

test('every Grafana panel query in deploy/grafana/ parses and returns series', async () => {
  const dir = join(REPO, 'deploy/grafana');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.ok(files.length >= 5);
  let n = 0;
  for (const f of files) {
    const d = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[]; templating: { list: { name: string; query?: { query: string } | string }[] } };
    for (const v of d.templating.list) {
      if (v.name === 'datasource' || typeof v.query !== 'object') continue;
      const m = /^label_values\((\w+), (\w+)\)$/.exec(v.query.query);
      assert.ok(m, `${f}: variable ${v.name}`);
      const values = await get(`http://127.0.0.1:${PROM_PORT}/api/v1/label/${m![2]}/values?match[]=${encodeURIComponent(m![1]!)}`);
      assert.ok((JSON.parse(values.body) as { data: string[] }).data.includes(v.name === 'namespace' ? NS : 'client') || v.name !== 'namespace', `${f}: ${v.name} lists ${NS}`);
    }
    for (const p of d.panels) {
      for (const t of p.targets) {
        const q = t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', NS).replaceAll('$workload', '.*');
        const r = await promQuery(q);
        assert.ok(r.length > 0, `${f} / ${p.title}: ${q} returned no series`);
        n++;
      }
    }
  }
  assert.ok(n >= 35, `${n} queries checked`);
});
