// Cluster benchmark: cross-node pod→pod TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c)
// in a two-node lab in routing mode tunnel (VXLAN via cilium_vxlan, eBPF on every hop, an ingress
// allow policy on the server), against a bare VXLAN tunnel between the same two pod namespaces
// without eBPF (an extra veth per pod, a plain VXLAN device per node, VNI 42, UDP 4789), in the
// same run: interleaved rounds, median, client pinned to CPU 0 and server to CPU 1.
// Appends the results to bench/RESULTS.md under "## cluster".
//   bin/node bench/cluster/run.ts [--secs 3] [--rounds 3] [--no-write]
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { podNetnsName, nodeNetnsName } from '../../src/lab/names.ts';

const startLoad = loadavg()[0]!;
const arg = (n: string, d: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1]! : d; };
const SECS = Number(arg('--secs', '3'));
const ROUNDS = Number(arg('--rounds', '3'));
const WRITE = !process.argv.includes('--no-write');
const here = fileURLToPath(new URL('.', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const RR = '/tmp/mbr-bench-cluster-rr';
execFileSync('cc', ['-O2', '-o', RR, join(here, '../datapath/rr.c')]);

const lab = `bcl${process.pid % 10000}`;
const env = { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: `/run/membrane-bench/${lab}`, NO_COLOR: '1' };
const membrane = (args: string[]) => execFileSync(join(REPO, 'bin/membrane'), args, { env, encoding: 'utf8', timeout: 600_000 });
const ip = (ns: string, args: string[]) => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
const procs: ChildProcess[] = [];
const nsx = (ns: string, cpu: number, cmd: string[]) => ['--net=/run/netns/' + ns, 'taskset', '-c', String(cpu), ...cmd];
const runIn = (ns: string, cpu: number, cmd: string[]) => execFileSync('nsenter', nsx(ns, cpu, cmd), { encoding: 'utf8', timeout: 120_000 });
const spawnIn = (ns: string, cpu: number, cmd: string[]) => {
  const cp = spawn('nsenter', nsx(ns, cpu, cmd), { stdio: ['ignore', 'pipe', 'ignore'] });
  procs.push(cp);
  return cp;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function cleanup(): void {
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  try { membrane(['down']); } catch { /* best effort */ }
}
process.on('SIGINT', () => { cleanup(); process.exit(130); });

type Cfg = 'bare-vxlan' | 'membrane';
const results: Record<Cfg, { stream: number[]; rr: number[]; crr: number[] }> = { 'bare-vxlan': { stream: [], rr: [], crr: [] }, membrane: { stream: [], rr: [], crr: [] } };

try {
  membrane(['up', '--nodes', '2', '--routing-mode', 'tunnel', '-q']);
  const yaml = join(tmpdir(), `${lab}.yaml`);
  const pod = (name: string, node: string, app: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'bench', labels: { app } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'curlimages/curl' }] } });
  const cnp = {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'srv-from-cli', namespace: 'bench' },
    spec: { endpointSelector: { matchLabels: { app: 'srv' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'cli' } }], toPorts: [{ ports: ['5201', '7001', '7002'].map((port) => ({ port, protocol: 'TCP' })) }] }] },
  };
  writeFileSync(yaml, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } }, pod('cli', 'node1', 'cli'), pod('srv', 'node2', 'srv'), cnp].map((o) => JSON.stringify(o)).join('\n---\n'));
  membrane(['apply', '-f', yaml]);
  let srvIp = '';
  for (let i = 0; i < 120 && !srvIp; i++) {
    const list = JSON.parse(membrane(['get', 'pods', '-n', 'bench', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string; phase?: string } }[] };
    const ready = list.items.filter((p) => p.status?.phase === 'Running');
    if (ready.length === 2) srvIp = ready.find((p) => p.metadata.name === 'srv')!.status!.podIP!;
    else await new Promise((r) => setTimeout(r, 500));
  }
  if (!srvIp) throw new Error('pods did not start');
  const cliNs = podNetnsName('node1', 'bench', 'cli', lab);
  const srvNs = podNetnsName('node2', 'bench', 'srv', lab);

  // The bare path between the same pod namespaces: pod bv0 ↔ node bvh (veth), node bvx (plain VXLAN) ↔ underlay.
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
  }

  spawnIn(srvNs, 1, ['iperf3', '-s', '-p', '5201']);
  spawnIn(srvNs, 1, [RR, 'server', '7001']);
  spawnIn(srvNs, 1, [RR, 'server', '7002']);
  await new Promise((r) => setTimeout(r, 1000));
  const target: Record<Cfg, string> = { 'bare-vxlan': '10.99.2.2', membrane: srvIp };
  for (let round = 0; round < ROUNDS; round++) {
    for (const cfg of ['bare-vxlan', 'membrane'] as Cfg[]) {
      const dst = target[cfg];
      const j = JSON.parse(runIn(cliNs, 0, ['iperf3', '-c', dst, '-p', '5201', '-t', String(SECS), '-J'])) as { end: { sum_received: { bits_per_second: number } } };
      results[cfg].stream.push(j.end.sum_received.bits_per_second / 1e9);
      results[cfg].rr.push(Number(runIn(cliNs, 0, [RR, 'rr', dst, '7001', String(SECS)])));
      results[cfg].crr.push(Number(runIn(cliNs, 0, [RR, 'crr', dst, '7002', String(SECS)])));
      process.stderr.write(`round ${round + 1} ${cfg}: stream ${results[cfg].stream.at(-1)!.toFixed(2)} Gbit/s, rr ${results[cfg].rr.at(-1)!.toFixed(0)}/s, crr ${results[cfg].crr.at(-1)!.toFixed(0)}/s\n`);
    }
  }
  const m = (c: Cfg, k: 'stream' | 'rr' | 'crr') => median(results[c][k]);
  const row = (label: string, k: 'stream' | 'rr' | 'crr', unit: string, fmt: (x: number) => string) =>
    `| ${label} | ${fmt(m('bare-vxlan', k))} ${unit} | ${fmt(m('membrane', k))} ${unit} | ${(m('membrane', k) / m('bare-vxlan', k)).toFixed(3)} |`;
  const table = [
    '| test | bare VXLAN (no eBPF) | membrane tunnel + policy | ratio |',
    '|---|---|---|---|',
    row('TCP_STREAM (iperf3)', 'stream', 'Gbit/s', (x) => x.toFixed(2)),
    row('TCP_RR (1 B req/resp)', 'rr', 'trans/s', (x) => x.toFixed(0)),
    row('TCP_CRR (connect+1 B+RST close)', 'crr', 'conn/s', (x) => x.toFixed(0)),
  ].join('\n');
  const out = `\n## cluster\n\nCommand: \`bin/node bench/cluster/run.ts --secs ${SECS} --rounds ${ROUNDS}\`\n\nRun ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), load average ${startLoad.toFixed(2)} at start. A two-node lab (\`membrane up --nodes 2\`, routing mode tunnel, agents running): client pod on node1, server pod on node2. membrane: pod → from_container → cilium_vxlan (to_overlay sets the tunnel key) → underlay → from_overlay (ingress policy from the VNI identity) → to_container, with an ingress allow policy on the server. Bare: the same pod namespaces over an extra veth and a plain VXLAN device per node (VNI 42, UDP 4789), no eBPF on those devices (the underlay's from_network still sees the outer packets, as on the membrane path). Client pinned to CPU 0, server to CPU 1; median of ${ROUNDS} interleaved rounds, ${SECS} s each. Bare routing (no tunnel) was not measured.\n\n${table}\n`;
  console.log(out);
  if (WRITE) {
    const path = fileURLToPath(new URL('../RESULTS.md', import.meta.url));
    if (existsSync(path) && !readFileSync(path, 'utf8').endsWith('\n')) appendFileSync(path, '\n');
    appendFileSync(path, out);
  }
} finally {
  cleanup();
}
