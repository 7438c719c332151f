// Datapath benchmark: pod-to-pod TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c)
// across a node namespace, bare veth vs. the eBPF programs with an allow policy of 10 and of
// 10,000 entries, client pinned to CPU 0 and server to CPU 1. Each configuration has its own pair
// of pods, all three set up once, so nothing is written between measures: TCP_RR and TCP_CRR run
// the three in alternating 1 s turns (`secs` turns each per round, the order rotated), TCP_STREAM
// one after the other; median of the rounds. The datapath agent (driver) runs in the node
// namespace as in production, reading events.
//   bin/node bench/datapath/run.ts [--secs 3] [--rounds 3] [--append]
// With --append the results and the command go to bench/RESULTS.md under `## datapath`.
// MEMBRANE_BENCH_BPF_OBJECT=<path.o> loads another build of the endpoint programs (an A/B of two
// builds in one sitting: run it with each, alternately).
import { loadavg } from 'node:os';
import { createTopo, type Pod } from '../../test/integration/datapath/support/topo.ts';
import { Driver } from '../../test/integration/datapath/support/rpc.ts';
import { destroy } from '../../src/datapath/linux/index.ts';
import { median, reportResults } from '../support.ts';
import { bpfLinkProbe, cpuUs, createTcpSuite, runLine, tcpArgs, tcpCommand } from '../tcp-suite.ts';

const startLoad = loadavg()[0]!;
const opt = tcpArgs();
type Cfg = 'bare' | 'bpf-10' | 'bpf-10k';
const CFGS: Cfg[] = ['bare', 'bpf-10', 'bpf-10k'];
const suite = createTcpSuite(CFGS, opt.secs);

const tag = `bn${process.pid % 10000}`;
const pinRoot = `/sys/fs/bpf/mdp-${tag}`;
const topo = createTopo(tag, 6, 9);
// a client and a server pod per configuration: bare (no programs on their veths), 10, 10,000 entries
const pair = (i: number) => ({ client: topo.pods[2 * i]!, server: topo.pods[2 * i + 1]! });
const PAIRS: Record<Cfg, { client: Pod; server: Pod }> = { 'bare': pair(0), 'bpf-10': pair(1), 'bpf-10k': pair(2) };
let driver: Driver | null = null;

async function cleanup() {
  suite.kill();
  await driver?.close().catch(() => {});
  destroy(pinRoot);
  topo.destroy();
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });

try {
  for (const cfg of CFGS) await suite.startServers(PAIRS[cfg].server.ns);

  const object = process.env.MEMBRANE_BENCH_BPF_OBJECT;
  driver = new Driver(topo.nodeNs, pinRoot, object ? { objectPath: object } : undefined);
  await driver.call('start');
  await driver.call('mute'); // events are still read from the ring by the agent, just not kept
  const idOf = (p: Pod) => 2000 + p.id;
  await driver.call('upsertIPCache', topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: idOf(p), endpointId: p.id })));

  const policy = (client: Pod, n: number) => {
    const es: unknown[] = [5201, 7001, 7002].map((port) => ({ key: { direction: 'ingress', identity: idOf(client), proto: 6, port, portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } }));
    for (let i = es.length; i < n; i++) es.push({ key: { direction: 'ingress', identity: 100000 + i, proto: 6, port: 1 + (i % 60000), portPrefixLen: 16 }, entry: { verdict: 'allow', matchType: 2 } });
    return es;
  };
  for (const cfg of ['bpf-10', 'bpf-10k'] as const) {
    const { client, server } = PAIRS[cfg];
    for (const p of [client, server]) await driver.call('upsertEndpoint', { id: p.id, identity: idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex });
    await driver.call('applyFull', server.id, policy(client, cfg === 'bpf-10' ? 10 : 10000), { ingress: true, egress: false });
    await driver.call('applyFull', client.id, [], { ingress: false, egress: false });
  }

  // the programs' run time per TCP_CRR connection of each configuration (kernel BPF stats)
  const bpfProbe = bpfLinkProbe(() => [`${pinRoot}/links`]);
  const bpfUs: Record<Exclude<Cfg, 'bare'>, number[]> = { 'bpf-10': [], 'bpf-10k': [] };
  // The configurations' writes (10,000 policy entries) leave the agent busy for a while after the
  // call returns (its garbage collection, on the two CPUs the connections run on: a scratch run
  // under load 30 read 20-40 % more eBPF time per connection right after the write than 1 s
  // later). The rounds start once the agent is quiet (under 10 % of a CPU over 200 ms, at most 3 s).
  const settle = async () => {
    const pid = driver!.cp.pid!;
    for (let t = 0; t < 15; t++) {
      const c0 = cpuUs([pid]);
      await new Promise((r) => setTimeout(r, 200));
      if (cpuUs([pid]) - c0 < 20_000) return;
    }
  };
  await settle();
  const legs = CFGS.map((cfg) => ({ cfg, ns: PAIRS[cfg].client.ns, ip: PAIRS[cfg].server.ip, serverNs: PAIRS[cfg].server.ns, ...(cfg === 'bare' ? {} : { probe: bpfProbe }) }));
  for (let round = 0; round < opt.rounds; round++) {
    for (const cfg of CFGS) suite.measure(cfg, round, PAIRS[cfg].client.ns, PAIRS[cfg].server.ip, undefined, undefined, ['stream']);
    suite.alternate('rr', round, legs, opt.secs, 1);
    const us = suite.alternate('crr', round, legs, opt.secs, 1, () => [driver!.cp.pid!]);
    for (const cfg of ['bpf-10', 'bpf-10k'] as const) bpfUs[cfg].push(us[cfg] ?? NaN);
  }
  const st = await driver.call<{ programs: { name: string; runCount: string; runTimeNs: string }[]; eventsLost: string }>('stats');
  // per run, with the run count: local pod -> pod packets no longer run to_container (delivered from
  // the sender's from_container), so its few runs (packets from the stack) average what they are
  const nsPerRun = st.programs.map((p) => `${p.name} ${(Number(p.runTimeNs) / Math.max(1, Number(p.runCount))).toFixed(0)} ns/pkt over ${p.runCount} runs`).join(', ');
  const ctr = await driver.call<Record<string, string>>('counters');
  const pkts = BigInt(ctr.pktsFromEndpoint ?? 0) + BigInt(ctr.pktsToEndpoint ?? 0);
  const extra = `events lost: ${st.eventsLost} (over the sender's event budget: ${ctr.eventsRateLimited ?? 0}); established packets decided by policy again (revision changed): ${ctr.policyRechecks ?? 0} of ${pkts} packets`;

  const table = suite.table([
    { head: 'bare veth', cfg: 'bare' }, { head: 'eBPF, 10 entries', cfg: 'bpf-10' }, { head: 'ratio', ratio: ['bpf-10', 'bare'] },
    { head: 'eBPF, 10,000 entries', cfg: 'bpf-10k' }, { head: 'ratio', ratio: ['bpf-10k', 'bare'] },
  ]);
  reportResults([
    '## datapath', '',
    `Command: \`${tcpCommand('datapath', opt)}\``, '',
    `${runLine(startLoad)}. Pod → node namespace → pod over veth pairs; client pinned to CPU 0, server to CPU 1; the agent (ring consumer) runs unpinned; its CPU per TCP_CRR connection from /proc (every turn, the bare turns included). Each configuration on its own pair of pods, set up once (the rounds start once the agent is quiet after the writes); per round TCP_STREAM ${opt.secs} s per configuration in turn, TCP_RR and TCP_CRR in alternating 1 s turns, ${opt.secs} per configuration (order rotated each turn); median of ${opt.rounds} rounds (a ratio's min–max over the rounds in parentheses). Policy: ingress default-deny on the server pod with an identity+port allow (plus filler entries of other identities); conntrack, ipcache and event emission as in production (medium monitor aggregation).`, '',
    table, '',
    `Program run time (kernel BPF stats, whole run): ${nsPerRun}; ${extra}. eBPF run time per TCP_CRR connection (both programs, median of the rounds): ${(['bpf-10', 'bpf-10k'] as const).map((c) => `${median(bpfUs[c]).toFixed(2)} µs (${c === 'bpf-10' ? '10' : '10,000'} entries; rounds ${bpfUs[c].map((x) => x.toFixed(2)).join(' / ')})`).join(', ')}.`, '',
  ], opt.append);
} finally {
  await cleanup();
}
