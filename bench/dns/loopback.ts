/**
 * The DNS proxy's own cost, without a lab: the production proxy (src/proxy/dns/proxy.ts) on
 * loopback in this process, dnsmasq as its upstream, dnsperf as the client, each pinned to its
 * own CPU. Policy, flows and the name manager are stand-ins (a fixed endpoint, an allow-list
 * decision, a flow counter, no hold), so this isolates the packet path: receive, parse, decide,
 * forward, match the answer, reply. Reports q/s and the proxy's CPU per query next to dnsmasq's
 * own q/s and CPU per query answering dnsperf directly, same run.
 *
 *   bin/node bench/dns/loopback.ts [--secs 5] [--rounds 3] [--module path/to/proxy.ts]
 * --module: another build of the proxy (e.g. a copy of an older proxy.ts beside it) for an A/B.
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

const { values } = parseArgs({ options: { secs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, module: { type: 'string', default: '' } } });
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
let flows = 0;
const proxy = createDNSProxy({
  nodeName: 'bench', port: PORT, host: '127.0.0.1', dnsPort: PORT,
  endpointByIp: () => EP,
  // answers leave from 127.0.0.3 (an "original destination" no one else binds), queries go to dnsmasq
  originalDestination: () => '127.0.0.3',
  upstreamFor: () => UP,
  peerOf: () => ({ identity: 256 }),
  decide: (_ep, _id, _p, _port, qname) => qname.endsWith('.bench.lab.'),
  onAnswer: () => null,
  emit: () => { flows++; },
});
try {
  writeFileSync(join(dir, 'q.txt'), Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab A`).join('\n') + '\n');
  const dm = await startPinned(children, 1, 'dnsmasq', ['-k', '--conf-file=/dev/null', `--listen-address=${UP}`, '--bind-interfaces', `--port=${PORT}`, '--no-resolv', '--no-hosts',
    '--address=/bench.lab/198.51.100.77', '--user=root', `--pid-file=${join(dir, 'dm.pid')}`, '--cache-size=10000', '--local-ttl=300']);
  await proxy.start();
  execFileSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  const rows: { d: number; p: number; cd: number; cp: number }[] = [];
  await dnsperf('127.0.0.1', process.pid); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const d = await dnsperf(UP, dm.pid!);
    const p = await dnsperf('127.0.0.1', process.pid);
    rows.push({ d: d.qps, p: p.qps, cd: d.cpu, cp: p.cpu });
    console.error(`round ${r + 1}: dnsmasq ${d.qps.toFixed(0)} q/s (${d.cpu.toFixed(1)} µs/q) | proxy ${p.qps.toFixed(0)} q/s (${p.cpu.toFixed(1)} µs/q of the proxy process)`);
  }
  const st = proxy.stats();
  console.log(`${MODULE.replace(resolve(import.meta.dirname, '../..') + '/', '')}: median: dnsmasq ${median(rows.map((x) => x.d)).toFixed(0)} q/s, proxy ${median(rows.map((x) => x.p)).toFixed(0)} q/s; CPU/query dnsmasq ${median(rows.map((x) => x.cd)).toFixed(1)} µs, proxy ${median(rows.map((x) => x.cp)).toFixed(1)} µs; ` +
    `${st.queries} queries, ${st.batched} read by recvmmsg, ${flows} flows, ${st.servfail} servfail, ${st.dropped} dropped`);
} finally {
  await proxy.stop();
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
