// Cluster benchmark: cross-node pod→pod TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c)
// in a two-node lab (eBPF on every hop, an ingress allow policy on the server) in routing mode
// tunnel (VXLAN via cilium_vxlan) or native (routes on the underlay), against two bare paths
// between the same two pod namespaces without eBPF (an extra veth per pod): a plain VXLAN device per
// node (VNI 42, UDP 4789) and plain routes over the underlay, in the same run: TCP_RR and TCP_CRR in
// alternating 1 s turns, median of the rounds, client pinned to CPU 0 and server to CPU 1. The ratio is to the bare path of the lab's mode.
//   bin/node bench/cluster/run.ts [--secs 3] [--rounds 3] [--routing-mode tunnel|native] [--append]
// With --append the results and the command go to bench/RESULTS.md under `## cluster`.
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { nodeNetnsName } from '../../src/lab/names.ts';
import { reportResults } from '../support.ts';
import { bpfLinkProbe, createTcpSuite, eventsProbe, runLine, tcpArgs, tcpCommand } from '../tcp-suite.ts';
import { enableRunTimeStats, disableRunTimeStats } from '../../src/sys/bpf.ts';
import { clusterCli, clusterLab } from './lab.ts';

const startLoad = loadavg()[0]!;
const opt = tcpArgs({ 'routing-mode': 'tunnel' });
const mode = opt.own['routing-mode']!;
if (mode !== 'tunnel' && mode !== 'native') throw new Error(`--routing-mode ${mode}: tunnel or native`);
type Cfg = 'bare-vxlan' | 'bare-routed' | 'membrane';
const CFGS: Cfg[] = ['bare-vxlan', 'bare-routed', 'membrane'];
const sameMode: Cfg = mode === 'tunnel' ? 'bare-vxlan' : 'bare-routed';
const suite = createTcpSuite(CFGS, opt.secs);
const lab = `bcl${process.pid % 10000}`;
const cli = clusterCli(lab);
const ip = (ns: string, args: string[]) => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });

function cleanup(): void {
  suite.kill();
  disableRunTimeStats();
  cli.down();
}
process.on('SIGINT', () => { cleanup(); process.exit(130); });

try {
  const { cliNs, srvNs, srvIp } = await clusterLab(lab, mode);

  // The bare paths between the same pod namespaces: pod bv0 ↔ node bvh (veth), then either node bvx
  // (plain VXLAN, pods 10.99.<k>.2) or a plain route to the other node's underlay address (pods 10.97.<k>.2).
  for (const [k, j, podNs] of [[1, 2, cliNs], [2, 1, srvNs]] as const) {
    const node = nodeNetnsName(`node${k}`, lab);
    ip(podNs, ['link', 'add', 'bv0', 'type', 'veth', 'peer', 'name', 'bvh', 'netns', node]);
    ip(podNs, ['addr', 'add', `10.99.${k}.2/32`, 'dev', 'bv0']);
    ip(podNs, ['link', 'set', 'bv0', 'up']);
    ip(podNs, ['route', 'add', `10.99.${k}.1/32`, 'dev', 'bv0', 'scope', 'link']);
    ip(podNs, ['route', 'add', '10.99.0.0/16', 'via', `10.99.${k}.1`, 'dev', 'bv0']);
    ip(node, ['addr', 'add', `10.99.${k}.1/32`, 'dev', 'bvh']);
    ip(node, ['link', 'set', 'bvh', 'up']);
    ip(node, ['route', 'add', `10.99.${k}.2/32`, 'dev', 'bvh', 'scope', 'link']);
    ip(node, ['link', 'add', 'bvx', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'remote', `192.0.2.${j}`, 'local', `192.0.2.${k}`]);
    ip(node, ['addr', 'add', `10.98.0.${k}/24`, 'dev', 'bvx']);
    ip(node, ['link', 'set', 'bvx', 'mtu', '1500', 'up']);
    ip(node, ['route', 'add', `10.99.${j}.0/24`, 'via', `10.98.0.${j}`, 'dev', 'bvx']);
    ip(podNs, ['addr', 'add', `10.97.${k}.2/32`, 'dev', 'bv0']);
    ip(podNs, ['route', 'add', '10.97.0.0/16', 'via', `10.99.${k}.1`, 'dev', 'bv0', 'src', `10.97.${k}.2`]);
    ip(node, ['route', 'add', `10.97.${k}.2/32`, 'dev', 'bvh', 'scope', 'link']);
    ip(node, ['route', 'add', `10.97.${j}.0/24`, 'via', `192.0.2.${j}`]);
  }

  // the agent side: every process of the node namespaces (agents, proxies)
  const nodePids = () => [1, 2].flatMap((k) =>
    execFileSync('ip', ['netns', 'pids', nodeNetnsName(`node${k}`, lab)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number));
  // the kernel side of a new connection: each eBPF program's runs and run time per TCP_CRR
  // connection, both nodes (kernel BPF stats, enabled while this process holds the fd)
  const bpfProbe = bpfLinkProbe(() => [1, 2].map((k) => `/sys/fs/bpf/membrane/${lab}-node${k}/links`));
  // the datapath's monitor events per connection on each node (written to the ring; over budget)
  const evProbe = eventsProbe(() => [1, 2].map((k) => `/sys/fs/bpf/membrane/${lab}-node${k}`));
  const crrProbe = { before: () => { bpfProbe.before(); evProbe.before(); }, after: (n: number) => `${bpfProbe.after(n)}; ${evProbe.after(n)}` };
  enableRunTimeStats();
  await suite.startServers(srvNs);
  const target: Record<Cfg, string> = { 'bare-vxlan': '10.99.2.2', 'bare-routed': '10.97.2.2', membrane: srvIp };
  // the membrane leg's probe: eBPF run time per connection (lastUs) and, on stderr, the events
  const memProbe = {
    before: crrProbe.before,
    after: (n: number) => { const line = crrProbe.after(n); process.stderr.write(`  membrane turn: ${line}\n`); return line; },
    get lastUs() { return bpfProbe.lastUs; },
  };
  const legs = CFGS.map((cfg) => ({ cfg, ns: cliNs, ip: target[cfg], serverNs: srvNs, probe: cfg === 'membrane' ? memProbe : bpfProbe }));
  for (let round = 0; round < opt.rounds; round++) {
    // STREAM per configuration in turn; RR and CRR in alternating 1 s turns, so that a few seconds
    // of other work on the machine fall on every path alike (bench/tcp-suite.ts alternate())
    for (const cfg of CFGS) suite.measure(cfg, round, cliNs, target[cfg], undefined, undefined, ['stream']);
    suite.alternate('rr', round, legs, opt.secs, 1);
    suite.alternate('crr', round, legs, opt.secs, 1, nodePids);
  }
  const table = suite.table([
    { head: 'bare VXLAN (no eBPF)', cfg: 'bare-vxlan' }, { head: 'bare routing (no eBPF)', cfg: 'bare-routed' },
    { head: `membrane ${mode} + policy`, cfg: 'membrane' }, { head: `ratio to bare ${mode === 'tunnel' ? 'VXLAN' : 'routing'}`, ratio: ['membrane', sameMode] },
  ]);
  reportResults([
    mode === 'tunnel' ? '## cluster' : '## cluster, routing mode native', '',
    `Command: \`${tcpCommand('cluster', opt, mode === 'tunnel' ? '' : ` --routing-mode ${mode}`)}\``, '',
    `${runLine(startLoad)}. A two-node lab (\`membrane up --nodes 2\`, routing mode ${mode}, agents running): client pod on node1, server pod on node2. membrane: ${mode === 'tunnel'
      ? 'pod → from_container → cilium_vxlan (to_overlay sets the tunnel key) → underlay → from_overlay (ingress policy from the VNI identity; a known connection gets the server\'s to_container work there and goes into the pod by bpf_redirect_peer, so to_container runs only for what the stack delivers)'
      : 'pod → from_container → the node\'s route to the other node\'s pod CIDR → underlay → from_network (the source\'s identity from the ipcache, its node\'s MAC checked; a known connection gets the server\'s to_container work there and goes into the pod by bpf_redirect_peer)'}, with an ingress allow policy on the server. Bare: the same pod namespaces over an extra veth, then a plain VXLAN device per node (VNI 42, UDP 4789) or plain routes over the underlay, no eBPF on those devices (the underlay's eBPF still sees the packets, as on the membrane path). The ratio is to the bare path of the same mode. Client pinned to CPU 0, server to CPU 1; per round TCP_STREAM ${opt.secs} s per path in turn, TCP_RR and TCP_CRR in alternating 1 s turns, ${opt.secs} per path (order rotated each turn); median of ${opt.rounds} rounds (a ratio's min–max over the rounds in parentheses); the agent side's CPU per TCP_CRR connection: every process of the two node namespaces (agents, proxies), from /proc.`, '',
    table, '',
  ], opt.append);
} finally {
  cleanup();
}
