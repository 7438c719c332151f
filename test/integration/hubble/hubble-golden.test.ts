/**
 * Golden tests between two programs: the upstream hubble CLI (v1.17.0) and `membrane observe`,
 * run against the same lab node over the same window of flows (a fixed --since/--until, so flows
 * arriving meanwhile change nothing). Their outputs must be byte-identical — compact, dict,
 * table, json/jsonpb, with node names, numeric, time formats, colours, field masks — and every
 * filter flag must select the same flows. Lost events, node-status events and hostile strings
 * are compared through --input-file (both programs replay the same JSON lines).
 *
 * Deliberate differences, each checked exactly rather than skipped:
 * - membrane's JSON carries Flow.emitter (field 41, Cilium 1.18+), which the 1.17 CLI drops;
 * - membrane escapes ESC and CR as hubble ≥ 1.17.2 does (`^[`, `\r`); 1.17.0 writes them raw;
 * - `--print-policy-names` (hubble ≥ 1.18) appends ` BY <name> (<kind>)` to policy verdicts, from
 *   the policies the server put in the flow (which the 1.17 CLI's JSON shows).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestLab, REPO } from '../support/lab.ts';
import { hubbleCli } from '../support/hubble-cli.ts';

const lab = new TestLab(`hgo${process.pid % 10000}`);
const HUBBLE = hubbleCli();
const MEMBRANE = join(REPO, 'bin/membrane');
const NS = 'gold';
let sock = '';
let window: string[] = [];
let tlsFlags: string[] = [];
const EMITTER = ',"emitter":{"name":"Hubble","version":"1.19.4"}';

interface Run { code: number; stdout: string; stderr: string }
function run(cmd: string, args: string[], opts: { netns?: boolean; input?: string } = {}): Promise<Run> {
  const [file, argv] = opts.netns ? ['ip', ['netns', 'exec', `${lab.name}-node1`, cmd, ...args]] : [cmd, args];
  return new Promise((res) => {
    const child = execFile(file, argv, { env: { ...lab.env, NO_COLOR: '' }, timeout: 30_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}
/** both programs with the same arguments; membrane's own flag names where hubble's differ */
async function both(args: string[], opts: { netns?: boolean; server?: string[]; membraneExtra?: string[] } = {}): Promise<{ hubble: Run; membrane: Run }> {
  const server = opts.server ?? ['--server', `unix://${sock}`];
  const [hubble, membrane] = await Promise.all([
    run(HUBBLE, ['observe', ...server, ...args], opts),
    run(MEMBRANE, ['observe', ...server, ...args, ...(opts.membraneExtra ?? [])], opts),
  ]);
  assert.equal(hubble.code, 0, `hubble observe ${args.join(' ')}: ${hubble.stderr}`);
  assert.equal(membrane.code, 0, `membrane observe ${args.join(' ')}: ${membrane.stderr}`);
  return { hubble, membrane };
}
const jsonFlows = (out: string) => out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { flow?: Record<string, unknown> & { uuid: string } }).filter((x) => x.flow).map((x) => x.flow!);
const stripEmitter = (out: string) => {
  const lines = out.split('\n').filter(Boolean);
  for (const l of lines) if (l.startsWith('{"flow":')) assert.equal(l.split(EMITTER).length, 2, `one emitter per flow line: ${l.slice(0, 200)}`);
  return out.replaceAll(EMITTER, '');
};

before(async () => {
  await lab.up();
  sock = lab.paths.hubbleSocket('node1');
  tlsFlags = (await lab.ok(['lab', 'hubble', '--flags'])).trim().split('\n');
  const sel = (app: string) => ({ matchLabels: { app } });
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: NS, labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080 }] }] } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' }, ports: [{ port: 8080, protocol: 'TCP' }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'intruder', namespace: NS, labels: { app: 'intruder' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'client-egress', namespace: NS }, spec: {
      endpointSelector: sel('client'),
      egress: [
        { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
        { toEndpoints: [sel('web')], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/ok.*' }] } }] },
        { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
      ],
    } },
    { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'web-ingress', namespace: NS }, spec: {
      endpointSelector: sel('web'),
      ingress: [{ fromEndpoints: [sel('client')], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
      ingressDeny: [{ fromEndpoints: [sel('intruder')], toPorts: [{ ports: [{ port: '9999', protocol: 'TCP' }] }] }],
    } },
  ]);
  const web = (await lab.podIPs())[`${NS}/web`]!;
  const since = new Date(Date.now() - 1000).toISOString();
  // -w: which request failed, if one does (a loaded machine: generous timeouts)
  const c = await lab.exec(NS, 'client', ['bash', '-c', 'set -e; for p in ok ok/2 nope; do curl -sS -o /dev/null -w "$p %{http_code}\\n" -m 10 http://web.gold.svc.cluster.local:8080/$p; done; curl -sS -o /dev/null -w "world %{http_code}\\n" -m 10 http://api.openai.com/v1/models'], 60_000);
  assert.equal(c.code, 0, `${c.stdout}${c.stderr}`);
  await lab.exec(NS, 'intruder', ['curl', '-s', '-o', '/dev/null', '-m', '1', `http://${web}:8080/`]);
  await lab.exec(NS, 'intruder', ['curl', '-s', '-o', '/dev/null', '-m', '1', `http://${web}:9999/`]);
  await new Promise((r) => setTimeout(r, 1500));
  const until = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 1100));
  window = ['--since', since, '--until', until];
});
after(async () => { await lab.down(); });

test('the window holds the flows the outputs are compared on: trace, drop, policy verdicts, DNS and HTTP L7', async () => {
  const flows = jsonFlows((await run(HUBBLE, ['observe', '--server', `unix://${sock}`, ...window, '--namespace', NS, '-o', 'json'])).stdout);
  const kinds = new Set(flows.map((f) => `${(f.event_type as { type: number }).type}`));
  for (const k of ['1', '4', '5', '129']) assert.ok(kinds.has(k), `event type ${k} in the window (${[...kinds].join(',')})`);
  assert.ok(flows.some((f) => (f.l7 as { dns?: unknown } | undefined)?.dns), 'a DNS flow');
  assert.ok(flows.some((f) => (f.l7 as { http?: { code?: number } } | undefined)?.http?.code === 403), 'an HTTP 403');
  assert.ok(flows.some((f) => f.drop_reason_desc === 'POLICY_DENY'), 'a drop by the deny rule');
});

const OUTPUTS: string[][] = [
  ['-o', 'compact'], ['-o', 'dict'], ['-o', 'table'], ['-o', 'json'], ['-o', 'jsonpb'],
  ['--print-node-name', '-o', 'dict'], ['--print-node-name', '-o', 'tab'],
  ['--numeric'], ['--ip-translation=false', '-o', 'table'],
  ['--time-format', 'RFC3339Nano'], ['--time-format', 'RFC3339Milli', '-o', 'table'], ['--time-format', 'RFC1123Z', '-o', 'dict'],
  ['--time-format', 'yearmonthdayhourminute'],
  ['--color', 'always'], ['--color', 'always', '-o', 'dict'],
  ['--experimental-use-default-field-masks', '--print-node-name'],
  ['--experimental-field-mask', 'time,verdict,source.pod_name,destination.pod_name,l4', '-o', 'json'],
  ['--last', '7'], ['--first', '5', '-o', 'dict'],
];

test('every output format and printing option: byte-identical to hubble over the same flows', async () => {
  for (const o of OUTPUTS) {
    const args = [...window, '--namespace', NS, ...o];
    const { hubble, membrane } = await both(args);
    const json = o.includes('json') || o.includes('jsonpb');
    assert.ok(hubble.stdout.split('\n').length > 3, `${o.join(' ')}: flows printed`);
    if (json && !o.some((x) => x.startsWith('--experimental-field-mask'))) assert.equal(stripEmitter(membrane.stdout), hubble.stdout, o.join(' '));
    else assert.equal(membrane.stdout, hubble.stdout, o.join(' '));
  }
});

test('over mutual TLS on 4244 (in the node namespace): the same bytes', async () => {
  for (const o of [['-o', 'compact'], ['-o', 'table'], ['-o', 'json']]) {
    const { hubble, membrane } = await both([...window, '--namespace', NS, ...o], { netns: true, server: tlsFlags });
    assert.equal(o[1] === 'json' ? stripEmitter(membrane.stdout) : membrane.stdout, hubble.stdout, o.join(' '));
    assert.ok(hubble.stdout.length > 100);
  }
  // tls://host:port selects TLS without --tls, in both programs
  const tlsUrl = tlsFlags.map((f, i) => (tlsFlags[i - 1] === '--server' ? `tls://${f}` : f)).filter((f) => f !== '--tls');
  assert.ok(tlsUrl.some((f) => f.startsWith('tls://')), tlsUrl.join(' '));
  const { hubble, membrane } = await both([...window, '--namespace', NS], { netns: true, server: tlsUrl });
  assert.equal(membrane.stdout, hubble.stdout, 'tls://');
  assert.ok(hubble.stdout.length > 100);
});

const FILTERS: [string[], (f: Record<string, any>) => boolean][] = [
  [['--pod', `${NS}/client`], (f) => f.source?.pod_name === 'client' || f.destination?.pod_name === 'client'],
  [['--from-pod', `${NS}/intruder`], (f) => f.source?.pod_name === 'intruder'],
  [['--namespace', NS], (f) => f.source?.namespace === NS || f.destination?.namespace === NS],
  [['--label', 'app=web'], (f) => [f.source, f.destination].some((e) => e?.labels?.includes('k8s:app=web'))],
  [['--verdict', 'DROPPED'], (f) => f.verdict === 'DROPPED'],
  [['--verdict', 'FORWARDED', '--not', '--type', 'trace'], (f) => f.verdict === 'FORWARDED' && f.event_type.type !== 4],
  [['--protocol', 'udp', '--to-port', '53'], (f) => f.l4?.UDP?.destination_port === 53],
  [['--drop-reason-desc', 'POLICY_DENIED'], (f) => f.drop_reason_desc === 'POLICY_DENIED'],
  [['--drop-reason-desc', 'POLICY_DENY'], (f) => f.drop_reason_desc === 'POLICY_DENY'],
  [['--protocol', 'dns'], (f) => !!f.l7?.dns],
  [['--protocol', 'http'], (f) => !!f.l7?.http],
  [['--protocol', 'tcp'], (f) => !!f.l4?.TCP],
  [['--type', 'l7'], (f) => f.event_type.type === 129],
  [['--type', 'drop'], (f) => f.event_type.type === 1],
  [['--type', 'policy-verdict'], (f) => f.event_type.type === 5],
  [['--type', 'trace:to-endpoint'], (f) => f.event_type.type === 4 && (f.event_type.sub_type ?? 0) === 0],
  [['--to-fqdn', '*.openai.com'], (f) => (f.destination_names ?? []).includes('api.openai.com')],
  [['--http-status', '403'], (f) => f.l7?.http?.code === 403],
  [['--http-status', '2+', '--http-method', 'get'], (f) => f.l7?.http?.code >= 200 && f.l7?.http?.code < 300],
  [['--node-name', 'node1'], (f) => f.node_name === 'node1'],
  [['--node-name', 'default/node*', '--traffic-direction', 'egress'], (f) => f.node_name === 'node1' && f.traffic_direction === 'EGRESS'],
  [['--to-port', '8080', '--tcp-flags', 'syn'], (f) => f.l4?.TCP?.destination_port === 8080 && f.l4?.TCP?.flags?.SYN === true],
];

test('filters: hubble and membrane send the same FlowFilters and the server picks the same flows', async () => {
  for (const [i, [flags, check]] of FILTERS.entries()) {
    if (i % 3 === 0 || flags.includes('--not')) {
      const raw = await both(['--print-raw-filters', ...flags]);
      assert.equal(raw.membrane.stdout, raw.hubble.stdout, `raw filters of ${flags.join(' ')}`);
    }
    const { hubble, membrane } = await both([...window, '-o', 'json', ...flags]);
    assert.equal(stripEmitter(membrane.stdout), hubble.stdout, flags.join(' '));
    const flows = jsonFlows(hubble.stdout);
    assert.ok(flows.length > 0, `${flags.join(' ')} selects some flows`);
    for (const f of flows) assert.ok(check(f), `${flags.join(' ')}: ${JSON.stringify(f).slice(0, 300)}`);
  }
});

test('flag rules: both refuse the same combinations', async () => {
  for (const args of [['--first', '2', '--last', '2'], ['--last', '2', '--all'], ['--first', '2', '--follow'], ['-o', 'table', '--follow'],
    ['--not'], ['--pod', 'a', '--from-pod', 'b'], ['--since', 'Jan  2 15:04:05.000'], ['--experimental-field-mask', 'time', '-o', 'compact'], ['-o', 'yaml']]) {
    const [h, m] = await Promise.all([run(HUBBLE, ['observe', '--server', `unix://${sock}`, ...args]), run(MEMBRANE, ['observe', '--server', `unix://${sock}`, ...args])]);
    assert.notEqual(h.code, 0, `hubble refuses ${args.join(' ')}`);
    assert.notEqual(m.code, 0, `membrane refuses ${args.join(' ')}`);
    assert.match(m.stderr, /OBSERVE_BAD_FLAG/, args.join(' '));
  }
});

test('--print-policy-names: hubble\'s line plus the policies the server correlated (allowed and denied by name)', async () => {
  const base = [...window, '--namespace', NS, '--type', 'policy-verdict'];
  const { hubble } = await both(['-o', 'json', ...base]);
  const flows = jsonFlows(hubble.stdout);
  const compact = (await both(base)).hubble.stdout.split('\n').filter(Boolean);
  const withNames = (await run(MEMBRANE, ['observe', '--server', `unix://${sock}`, ...base, '--print-policy-names'])).stdout.split('\n').filter(Boolean);
  assert.equal(compact.length, flows.length);
  const names = (ps: { name?: string; kind?: string }[] | undefined) => {
    const n = (ps ?? []).filter((p) => p.name && p.kind).map((p) => `${p.name} (${p.kind})`);
    return n.length ? ` BY ${n.join(', ')}` : '';
  };
  const expected = compact.map((line, i) => {
    const f = flows[i]! as Record<string, any>;
    const egress = f.traffic_direction === 'EGRESS';
    const allowed = f.verdict === 'FORWARDED' || f.verdict === 'REDIRECTED';
    const ps = allowed ? (egress ? f.egress_allowed_by : f.ingress_allowed_by) : (egress ? f.egress_denied_by : f.ingress_denied_by);
    return line.replace(/ (ALLOWED|DENIED) \(/, ` $1${names(ps)} (`);
  });
  assert.deepEqual(withNames, expected);
  assert.ok(withNames.some((l) => l.includes(' EGRESS ALLOWED BY client-egress (CiliumNetworkPolicy) (')), withNames.join('\n'));
  assert.ok(withNames.some((l) => l.includes(' INGRESS ALLOWED BY web-ingress (CiliumNetworkPolicy) (')));
  assert.ok(withNames.some((l) => l.includes(' INGRESS DENIED BY web-ingress (CiliumNetworkPolicy) (')), 'the deny rule is named');
  assert.ok(withNames.some((l) => / INGRESS DENIED \(/.test(l)), 'a default deny names nothing');
});

test('--input-file: lost events, node status and hostile strings print as hubble prints them', async () => {
  const flowsJson = (await run(HUBBLE, ['observe', '--server', `unix://${sock}`, ...window, '--namespace', NS, '--last', '6', '-o', 'json'])).stdout.trim().split('\n');
  const first = JSON.parse(flowsJson[0]!) as { flow: Record<string, unknown>; time: string };
  const t = first.time;
  const lines = [
    JSON.stringify({ lost_events: { source: 'HUBBLE_RING_BUFFER', num_events_lost: '1' }, node_name: 'node1', time: t }),
    ...flowsJson.slice(0, 3),
    JSON.stringify({ lost_events: { source: 'PERF_EVENT_RING_BUFFER', num_events_lost: '42', cpu: 3 }, node_name: 'node1', time: t }),
    JSON.stringify({ node_status: { state_change: 'NODE_ERROR', node_names: ['node2', 'node3'], message: 'dial "tcp": refused' }, node_name: 'relay', time: t }),
    JSON.stringify({ node_status: { state_change: 'NODE_CONNECTED', node_names: ['node1'] }, node_name: 'relay', time: t }),
    JSON.stringify({ flow: { ...first.flow, Summary: 'evil\u001b[2J\u001b]0;owned\u0007 <b>&\r', source: { namespace: NS, pod_name: 'x\u001b[31m' } }, node_name: 'node1', time: t }),
    ...flowsJson.slice(3),
    JSON.stringify({ lost_events: { source: 'OBSERVER_EVENTS_QUEUE', num_events_lost: '5' }, node_name: 'node1', time: t }),
    'not json',
  ];
  const file = join(await lab.dir, 'replay.jsonl');
  await writeFile(file, lines.join('\n') + '\n');
  const escaped = (s: string) => s.replaceAll('\x1b', '^[').replaceAll('\r', '\\r');
  for (const o of [['-o', 'compact'], ['-o', 'dict'], ['-o', 'table'], ['-o', 'json'], ['--print-node-name', '-o', 'dict'], ['--print-node-name', '-o', 'table'], ['--last', '4'], ['--first', '3', '-o', 'dict']]) {
    const { hubble, membrane } = await both(['--input-file', file, ...o], { server: [] });
    const json = o.includes('json');
    if (o.includes('table')) {
      // hubble ≥ 1.17.2 escapes before its tabwriter aligns, so the escaped row is wider: same cells
      const cells = (s: string) => s.replace(/ +/g, ' ');
      assert.equal(cells(membrane.stdout), cells(escaped(hubble.stdout)), o.join(' '));
      const clean = join(await lab.dir, 'replay-clean.jsonl');
      await writeFile(clean, lines.filter((l) => !l.includes('evil')).join('\n') + '\n');
      const exact = await both(['--input-file', clean, ...o], { server: [] });
      assert.equal(exact.membrane.stdout, exact.hubble.stdout, `${o.join(' ')} (no hostile row): byte-identical`);
    } else assert.equal(membrane.stdout, json ? hubble.stdout : escaped(hubble.stdout), o.join(' '));
    if (!json) assert.ok(!membrane.stdout.includes('\x1b') && !membrane.stdout.includes('\r'));
    if (o[0] === '-o') {
      assert.ok(hubble.stdout.includes('PERF_EVENT_RING_BUFFER'), `${o.join(' ')}: lost events printed`);
      // node-status errors go to stderr, the informational one only with -D
      const err = (s: string) => s.split('\n').filter((l) => l.includes('node2') || l.includes('NODE_ERROR')).join('\n');
      assert.equal(err(membrane.stderr), err(hubble.stderr), `${o.join(' ')}: node status on stderr`);
      assert.ok(err(hubble.stderr).length > 0);
    }
  }
  // stdin, as `cat flows.json | hubble observe --input-file -`
  const [h, m] = await Promise.all([run(HUBBLE, ['observe', '--input-file', '-'], { input: flowsJson.join('\n') + '\n' }), run(MEMBRANE, ['observe', '--input-file', '-'], { input: flowsJson.join('\n') + '\n' })]);
  assert.equal(m.stdout, h.stdout);
  assert.equal(h.stdout.split('\n').filter(Boolean).length, 6);
});

test('--follow (bounded): both stream the same new flows in the same order', async () => {
  const start = (cmd: string) => {
    const p = spawn(cmd, ['observe', '--server', `unix://${sock}`, '--follow', '--namespace', NS, '-o', 'json'], { env: lab.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    return { p, out: () => out };
  };
  const h = start(HUBBLE);
  const m = start(MEMBRANE);
  try {
    await new Promise((r) => setTimeout(r, 1500));
    await lab.exec(NS, 'client', ['bash', '-c', 'for p in ok/a ok/b nope; do curl -s -o /dev/null -m 3 http://web.gold.svc.cluster.local:8080/$p; done']);
    for (let i = 0; i < 40 && (jsonFlows(h.out()).length < 20 || jsonFlows(m.out()).length < jsonFlows(h.out()).length); i++) await new Promise((r) => setTimeout(r, 250));
  } finally {
    h.p.kill('SIGINT');
    m.p.kill('SIGINT');
  }
  const hu = jsonFlows(h.out()).map((f) => f.uuid);
  const mu = jsonFlows(m.out()).map((f) => f.uuid);
  assert.ok(hu.length >= 20, `hubble followed ${hu.length} flows`);
  const n = Math.min(hu.length, mu.length);
  assert.ok(n >= 20);
  assert.deepEqual(mu.slice(0, n), hu.slice(0, n));
});

test('hubble list namespaces: the namespaces that had flows', async () => {
  const r = await run(HUBBLE, ['list', 'namespaces', '--server', `unix://${sock}`, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const nss = (JSON.parse(r.stdout) as { namespace: string }[]).map((n) => n.namespace);
  assert.ok(nss.includes(NS) && nss.includes('kube-system'), nss.join(','));
  const table = await run(HUBBLE, ['list', 'namespaces', ...tlsFlags], { netns: true });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`^NAMESPACE\\n(.*\\n)*${NS}\\n`, 'm'));
});
