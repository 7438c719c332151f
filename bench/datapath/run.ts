// Datapath benchmark: pod-to-pod TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c)
// across a node namespace, bare veth vs. the eBPF programs with an allow policy of 10 and of
// 10,000 entries, interleaved rounds, median of 3, client pinned to CPU 0 and server to CPU 1.
// The datapath agent (driver) runs in the node namespace as in production, reading events.
// Appends the results to bench/RESULTS.md under "## datapath".
//   bin/node bench/datapath/run.ts [--secs 3] [--rounds 3] [--no-write]
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg } from 'node:os';

const startLoad = loadavg()[0]!;
import { createTopo, killProc, waitLine, type Pod } from '../../test/integration/datapath/support/topo.ts';
import { Driver } from '../../test/integration/datapath/support/rpc.ts';
import { destroy } from '../../src/datapath/linux/index.ts';

const arg = (n: string, d: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1]! : d; };
const SECS = Number(arg('--secs', '3'));
const ROUNDS = Number(arg('--rounds', '3'));
const WRITE = !process.argv.includes('--no-write');
const here = fileURLToPath(new URL('.', import.meta.url));
const RR = '/tmp/mdp-bench-rr';
execFileSync('cc', ['-O2', '-o', RR, `${here}rr.c`]);

const tag = `bn${process.pid % 10000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;
const topo = createTopo(tag, 2, 9);
const [A, B] = topo.pods as [Pod, Pod];
const procs: ChildProcess[] = [];
let driver: Driver | null = null;

const nsx = (ns: string, cmd: string[]) => ['--net=/run/netns/' + ns, ...cmd];
const runIn = (ns: string, cpu: number, cmd: string[]) => execFileSync('nsenter', nsx(ns, ['taskset', '-c', String(cpu), ...cmd]), { encoding: 'utf8' });
const spawnIn = (ns: string, cpu: number, cmd: string[]) => {
  const cp = spawn('nsenter', nsx(ns, ['taskset', '-c', String(cpu), ...cmd]), { stdio: ['ignore', 'pipe', 'ignore'] });
  procs.push(cp);
  return cp;
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function cleanup() {
  for (const p of procs) killProc(p);
  await driver?.close().catch(() => {});
  destroy(pinRoot);
  topo.destroy();
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });

type Cfg = 'bare' | 'bpf-10' | 'bpf-10k';
const results: Record<Cfg, { stream: number[]; rr: number[]; crr: number[] }> = {
  bare: { stream: [], rr: [], crr: [] }, 'bpf-10': { stream: [], rr: [], crr: [] }, 'bpf-10k': { stream: [], rr: [], crr: [] },
};

try {
  const iperf = spawnIn(B.ns, 1, ['iperf3', '-s', '-p', '5201']);
  const rrSrv = spawnIn(B.ns, 1, [RR, 'server', '7001']);
  const crrSrv = spawnIn(B.ns, 1, [RR, 'server', '7002']);
  await Promise.all([waitLine(rrSrv, /ready/), waitLine(crrSrv, /ready/), new Promise((r) => setTimeout(r, 300))]);
  void iperf;

  driver = new Driver(topo.nodeNs, pinRoot);
  await driver.call('start');
  await driver.call('mute'); // events are still read from the ring by the agent, just not kept
  const idOf = (p: Pod) => 2000 + p.id;
  await driver.call('upsertIPCache', topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: idOf(p), endpointId: p.id })));

  const policy = (n: number) => {
    const es: unknown[] = [5201, 7001, 7002].map((port) => ({ key: { direction: 'ingress', identity: idOf(A), proto: 6, port, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } }));
    for (let i = es.length; i < n; i++) es.push({ key: { direction: 'ingress', identity: 100000 + i, proto: 6, port: 1 + (i % 60000), portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    return es;
  };
  const setCfg = async (cfg: Cfg) => {
    if (cfg === 'bare') {
      for (const p of topo.pods) await driver!.call('removeEndpoint', p.id);
      return;
    }
    for (const p of topo.pods) await driver!.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex });
    await driver!.call('applyFull', B.id, policy(cfg === 'bpf-10' ? 10 : 10000), { ingress: true, egress: false });
    await driver!.call('applyFull', A.id, [], { ingress: false, egress: false });
  };

  for (let round = 0; round < ROUNDS; round++) {
    for (const cfg of ['bare', 'bpf-10', 'bpf-10k'] as Cfg[]) {
      await setCfg(cfg);
      const j = JSON.parse(runIn(A.ns, 0, ['iperf3', '-c', B.ip, '-p', '5201', '-t', String(SECS), '-J'])) as { end: { sum_received: { bits_per_second: number } } };
      results[cfg].stream.push(j.end.sum_received.bits_per_second / 1e9);
      results[cfg].rr.push(Number(runIn(A.ns, 0, [RR, 'rr', B.ip, '7001', String(SECS)])));
      results[cfg].crr.push(Number(runIn(A.ns, 0, [RR, 'crr', B.ip, '7002', String(SECS)])));
      process.stderr.write(`round ${round + 1} ${cfg}: stream ${results[cfg].stream.at(-1)!.toFixed(2)} Gbit/s, rr ${results[cfg].rr.at(-1)!.toFixed(0)}/s, crr ${results[cfg].crr.at(-1)!.toFixed(0)}/s\n`);
    }
  }
  const st = await driver.call<{ programs: { name: string; runCount: string; runTimeNs: string }[]; eventsLost: string }>('stats');
  const nsPerRun = st.programs.map((p) => `${p.name} ${(Number(p.runTimeNs) / Math.max(1, Number(p.runCount))).toFixed(0)} ns/pkt`).join(', ');
  const ctr = await driver.call<Record<string, string>>('counters');
  const pkts = BigInt(ctr.pktsFromEndpoint ?? 0) + BigInt(ctr.pktsToEndpoint ?? 0);
  const extra = `events lost: ${st.eventsLost} (over the sender's event budget: ${ctr.eventsRateLimited ?? 0}); established packets decided by policy again (revision changed): ${ctr.policyRechecks ?? 0} of ${pkts} packets`;

  const m = (c: Cfg, k: 'stream' | 'rr' | 'crr') => median(results[c][k]);
  const row = (label: string, k: 'stream' | 'rr' | 'crr', unit: string, fmt: (x: number) => string) =>
    `| ${label} | ${fmt(m('bare', k))} ${unit} | ${fmt(m('bpf-10', k))} ${unit} | ${(m('bpf-10', k) / m('bare', k)).toFixed(3)} | ${fmt(m('bpf-10k', k))} ${unit} | ${(m('bpf-10k', k) / m('bare', k)).toFixed(3)} |`;
  const table = [
    '| test | bare veth | eBPF, 10 entries | ratio | eBPF, 10,000 entries | ratio |',
    '|---|---|---|---|---|---|',
    row('TCP_STREAM (iperf3)', 'stream', 'Gbit/s', (x) => x.toFixed(2)),
    row('TCP_RR (1 B req/resp)', 'rr', 'trans/s', (x) => x.toFixed(0)),
    row('TCP_CRR (connect+1 B+RST close)', 'crr', 'conn/s', (x) => x.toFixed(0)),
  ].join('\n');
  const out = `\n## datapath\n\nCommand: \`bin/node bench/datapath/run.ts --secs ${SECS} --rounds ${ROUNDS}\`\n\nRun ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), load average ${startLoad.toFixed(2)} at start. Pod → node namespace → pod over veth pairs; client pinned to CPU 0, server to CPU 1; the agent (ring consumer) runs unpinned. Median of ${ROUNDS} interleaved rounds, ${SECS} s each. Policy: ingress default-deny on the server pod with an identity+port allow (plus filler entries of other identities); conntrack, ipcache and event emission as in production (medium monitor aggregation).\n\n${table}\n\nProgram run time (kernel BPF stats, whole run): ${nsPerRun}; ${extra}.\n`;
  console.log(out);
  if (WRITE) {
    const path = fileURLToPath(new URL('../RESULTS.md', import.meta.url));
    if (existsSync(path) && !readFileSync(path, 'utf8').endsWith('\n')) appendFileSync(path, '\n');
    appendFileSync(path, out);
  }
} finally {
  await cleanup();
}
