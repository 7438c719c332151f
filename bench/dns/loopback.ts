/**
 * The DNS proxy's own cost, without a lab: the production proxy (src/proxy/dns/proxy.ts) on
 * loopback in this process, dnsmasq as its upstream, dnsperf as the client, each pinned to its
 * own CPU. Policy, flows and the name manager are stand-ins (a fixed endpoint, an allow-list
 * decision, a flow counter, no hold), so this isolates the packet path: receive, parse, decide,
 * forward, match the answer, reply. Reports q/s and the proxy's CPU per query next to dnsmasq's
 * own q/s and CPU per query answering dnsperf directly, same run.
 *
 *   bin/node bench/dns/loopback.ts [--secs 5] [--rounds 3] [--module path/to/proxy.ts] [--agent] [--cpu-prof-dir DIR]
 * --module: another build of the proxy (e.g. a copy of an older proxy.ts beside it) for an A/B.
 * --agent: the records take the agent's path instead of the flow counter (src/agent/compose.ts):
 *   hubble.ingestRecord (Hubble's L7 parser, uuid, workloads, ring) → the default Hubble metrics
 *   and the agent's cilium_policy_l7_total; client and server are local endpoints, as in a lab.
 * --cpu-prof-dir: a V8 CPU profile of the proxied rounds only (inspector, 200 µs sampling).
 * --feed: the records take the proxy process's path instead (src/proxy/feed/client.ts: the binary
 *   frames, a query's answer paired with its request) to a stand-in agent socket that reads and
 *   discards them: the proxy process's own work per query, nothing of the agent's.
 * --alloc: V8's sampling heap profiler over the proxied rounds (every --alloc-interval bytes, 256
 *   by default; collected objects kept): bytes allocated per query and the frames that allocate
 *   them (--alloc-depth frames of each stack, 3 by default), largest first. Slows the proxy: read
 *   the bytes, not the q/s.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { createDNSProxy as CreateDNSProxy } from '../../src/proxy/dns/proxy.ts';
import { startPinned } from '../support.ts';
import { createL7Parser } from '../../src/hubble/l7-parser.ts';
import type { AccessLogRecord } from '../../src/common/access-log.ts';
import { createHubble } from '../../src/hubble/index.ts';
import { createHubbleMetrics, DEFAULT_METRICS } from '../../src/hubble/metrics/index.ts';
import { createAgentMetrics } from '../../src/agent/metrics.ts';
import { Session } from 'node:inspector/promises';
import { createFeedClient } from '../../src/proxy/feed/client.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, module: { type: 'string', default: '' }, agent: { type: 'boolean', default: false }, 'cpu-prof-dir': { type: 'string', default: '' }, feed: { type: 'boolean', default: false }, alloc: { type: 'boolean', default: false }, 'alloc-interval': { type: 'string', default: '256' }, 'alloc-depth': { type: 'string', default: '3' } } });
const MODULE = values.module ? resolve(values.module) : resolve(import.meta.dirname, '../../src/proxy/dns/proxy.ts');
const { createDNSProxy } = (await import(MODULE)) as { createDNSProxy: typeof CreateDNSProxy };
const SECS = Number(values.secs), ROUNDS = Number(values.rounds);
const PORT = 18553, UP = '127.0.0.2';
const dir = mkdtempSync(join(tmpdir(), 'bench-dnslo-'));
const children: ChildProcess[] = [];
const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
function cpuUs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * 10_000;
}
/** dnsperf runs while this process keeps serving (the proxy lives in it: never a sync exec here) */
async function dnsperf(server: string, pid: number): Promise<{ qps: number; cpu: number }> {
  const c0 = cpuUs(pid);
  const { stdout: out } = await promisify(execFile)('taskset', ['-c', '0', 'dnsperf', '-s', server, '-p', String(PORT), '-d', join(dir, 'q.txt'), '-l', String(SECS), '-c', '8', '-q', '64', '-t', '2']);
  const qps = Number(/Queries per second:\s+([0-9.]+)/.exec(out)?.[1]);
  if (!(qps > 0)) console.error(out);
  return { qps, cpu: (cpuUs(pid) - c0) / (qps * SECS) };
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const DNS_EP = { id: 9, identity: 400, namespace: 'kube-system', pod: 'dns', labels: ['k8s:k8s-app=kube-dns'] };
const epAt = (ip: string) => (ip === '127.0.0.1' ? EP : ip === '127.0.0.3' ? DNS_EP : undefined);
const parseL7 = createL7Parser({ nodeName: 'bench', resolver: { byIp: () => undefined, identityLabels: () => undefined } }); // without --agent: the parse alone
let flows = 0;
/** --agent: the agent's sink of access records, wired as src/agent/compose.ts wires it */
function agentSink(): (rec: AccessLogRecord) => void {
  const hubble = createHubble({ nodeName: 'bench', resolver: { byIp: epAt, identityLabels: () => undefined }, socketPath: join(dir, 'hubble.sock') });
  const metrics = createHubbleMetrics(DEFAULT_METRICS);
  const agentMetrics = createAgentMetrics({ policies: async () => 0, policyRevision: () => 0, endpoints: () => [], identities: () => [], mapState: () => undefined, pinRoot: dir });
  hubble.onFlow((f) => { metrics.process(f); if (f.eventType?.type === 129) agentMetrics.observe(f); });
  return (rec) => hubble.ingestRecord(rec);
}
/**
 * --feed: the proxy process's feed client, to an agent that takes binary frames and drops them: a
 * child process (its reads, buffers and ticks are none of the proxy's CPU or garbage), on the
 * proxy's CPU as an agent on a busy node would be.
 */
async function feedSink(): Promise<(rec: AccessLogRecord) => void> {
  const path = join(dir, 'feed.sock');
  const standIn = `require('node:net').createServer((c) => { c.write('${JSON.stringify({ t: 'caps', records: 'bin1' })}\\n'); c.on('data', () => {}); c.on('error', () => {}); })` +
    `.listen(process.argv[1], () => console.log('ready'));`;
  await startPinned(children, 1, process.execPath, ['-e', standIn, path], 'ready');
  const feed = createFeedClient({ socketPath: path, onSnapshot: () => {}, onIpcache: () => {}, handle: async () => undefined, statusRows: () => [] });
  feed.start();
  // the caps message turns the encoder on
  for (let i = 0; i < 100 && !feed.connected(); i++) await new Promise((ok) => setTimeout(ok, 10));
  await new Promise((ok) => setTimeout(ok, 50));
  stopFeed = () => feed.stop();
  return (rec) => feed.record(rec);
}
let stopFeed = (): void => {};
const sink = values.agent ? agentSink() : values.feed ? await feedSink().catch((e: unknown) => { for (const c of children) c.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); throw e; }) : undefined;
const proxy = createDNSProxy({
  nodeName: 'bench', port: PORT, host: '127.0.0.1', dnsPort: PORT,
  endpointByIp: () => EP,
  // answers leave from 127.0.0.3 (an "original destination" no one else binds), queries go to dnsmasq
  originalDestination: () => '127.0.0.3',
  upstreamFor: () => UP,
  peerOf: (ip: string) => (values.agent ? { identity: epAt(ip)?.identity ?? 2, endpoint: epAt(ip) } : { identity: 256 }),
  decide: (_ep, _id, _p, _port, qname) => qname.endsWith('.bench.lab.'),
  onAnswer: () => null,
  // --feed: as the proxy process, whose feed bumps a revision on every change (none here)
  ...(values.feed ? { revision: () => 1, recordsBorrowed: true } : {}),
  // a build whose proxy emits access records pays the flow build here, as older builds did inside the proxy
  emit: (x: unknown) => { if (sink) sink(x as AccessLogRecord); else if (!(x as { $typeName?: string }).$typeName) parseL7(x as AccessLogRecord); flows++; },
});
try {
  writeFileSync(join(dir, 'q.txt'), Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab A`).join('\n') + '\n');
  const dm = await startPinned(children, 1, 'dnsmasq', ['-k', '--conf-file=/dev/null', `--listen-address=${UP}`, '--bind-interfaces', `--port=${PORT}`, '--no-resolv', '--no-hosts',
    '--address=/bench.lab/198.51.100.77', '--user=root', `--pid-file=${join(dir, 'dm.pid')}`, '--cache-size=10000', '--local-ttl=300']);
  await proxy.start();
  execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  const rows: { d: number; p: number; cd: number; cp: number }[] = [];
  await dnsperf('127.0.0.1', process.pid); // warm-up
  const prof = values['cpu-prof-dir'] ? new Session() : undefined;
  if (prof) { prof.connect(); await prof.post('Profiler.enable'); await prof.post('Profiler.setSamplingInterval', { interval: 200 }); }
  const heap = values.alloc ? new Session() : undefined;
  if (heap) { heap.connect(); await heap.post('HeapProfiler.enable'); }
  const allocBytes = new Map<string, number>();
  let allocQueries = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const d = await dnsperf(UP, dm.pid!);
    if (prof) await prof.post('Profiler.start');
    if (heap) await heap.post('HeapProfiler.startSampling', { samplingInterval: Number(values['alloc-interval']), includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true });
    const q0 = proxy.stats().queries;
    const p = await dnsperf('127.0.0.1', process.pid);
    if (heap) {
      const { profile } = await heap.post('HeapProfiler.stopSampling');
      allocQueries += proxy.stats().queries - q0;
      type N = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: N[] };
      const walk = (n: N, stack: string[]): void => {
        const f = n.callFrame;
        const here = [...stack, `${f.functionName || '(anon)'} ${f.url.replace(/.*\/(src|bench|node_modules)\//, '$1/')}:${f.lineNumber + 1}`];
        if (n.selfSize) { const k = here.slice(-Number(values['alloc-depth'])).reverse().join(' < '); allocBytes.set(k, (allocBytes.get(k) ?? 0) + n.selfSize); }
        for (const c of n.children) walk(c, here);
      };
      walk(profile.head as N, []);
    }
    if (prof) {
      const { profile } = await prof.post('Profiler.stop');
      writeFileSync(join(resolve(values['cpu-prof-dir']!), `dns-loopback-${process.pid}-r${r + 1}.cpuprofile`), JSON.stringify(profile));
    }
    rows.push({ d: d.qps, p: p.qps, cd: d.cpu, cp: p.cpu });
    console.error(`round ${r + 1}: dnsmasq ${d.qps.toFixed(0)} q/s (${d.cpu.toFixed(1)} µs/q) | proxy ${p.qps.toFixed(0)} q/s (${p.cpu.toFixed(1)} µs/q of the proxy process)`);
  }
  if (heap) {
    const total = [...allocBytes.values()].reduce((a, b) => a + b, 0);
    console.log(`allocated: ${(total / allocQueries).toFixed(0)} bytes per query over ${allocQueries} queries`);
    for (const [k, v] of [...allocBytes.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${(v / allocQueries).toFixed(1).padStart(8)} B/q  ${k}`);
  }
  const st = proxy.stats();
  console.log(`${MODULE.replace(resolve(import.meta.dirname, '../..') + '/', '')}${values.agent ? ' (--agent)' : ''}: median: dnsmasq ${median(rows.map((x) => x.d)).toFixed(0)} q/s, proxy ${median(rows.map((x) => x.p)).toFixed(0)} q/s; CPU/query dnsmasq ${median(rows.map((x) => x.cd)).toFixed(1)} µs, proxy ${median(rows.map((x) => x.cp)).toFixed(1)} µs; ` +
    `${st.queries} queries, ${st.batched} read by recvmmsg (${(st.batched / st.recvCalls).toFixed(1)} per call), ${st.sent} sent by sendmmsg (${(st.sent / st.sendCalls).toFixed(1)} per call), ${flows} flows, ${st.servfail} servfail, ${st.dropped} dropped`);
} finally {
  await proxy.stop();
  stopFeed();
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
