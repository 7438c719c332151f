// Encryption benchmark: cross-node TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c) in
// one two-node lab (`membrane up --nodes 2 --encryption wireguard`), three paths, interleaved rounds,
// median, client pinned to CPU 0 and server to CPU 1 (wireguard-go and the agents unpinned):
//   wg-bare        node1 → node2 namespace over a second, bare wireguard-go tunnel (wgb0, UDP 51999,
//                  same MTU), no pods, no eBPF: what wireguard-go alone gives on this machine
//   membrane-wg    pod on node1 → pod on node2 through membrane's cilium_wg0 (eBPF on the pod veths)
//   membrane-plain the same pods over the plain underlay route (the routes are switched for the
//                  round and put back; strict mode is off in this lab)
// --routing-mode tunnel: the lab routes pods through VXLAN, and VXLAN through cilium_wg0 (VXLAN inside
// WireGuard); membrane-plain then removes the rule that steers VXLAN into table 2005 for its round.
//   bin/node bench/encryption/run.ts [--secs 3] [--rounds 3] [--routing-mode native|tunnel] [--append]
// With --append the results and the command go to bench/RESULTS.md under `## encryption`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { podNetnsName } from '../../src/lab/names.ts';
import { reportResults } from '../support.ts';
import { createTcpSuite, runLine, tcpArgs, tcpCommand } from '../tcp-suite.ts';

const startLoad = loadavg()[0]!;
const opt = tcpArgs({ 'routing-mode': 'native' });
const MODE = opt.own['routing-mode']!;
if (MODE !== 'native' && MODE !== 'tunnel') throw new Error(`--routing-mode: native or tunnel, got ${MODE}`);
type Cfg = 'wg-bare' | 'membrane-wg' | 'membrane-plain';
const CFGS: Cfg[] = ['wg-bare', 'membrane-wg', 'membrane-plain'];
// wireguard-go gives a fraction of a Gbit/s: three decimals
const suite = createTcpSuite(CFGS, opt.secs, 3);
const repo = fileURLToPath(new URL('../..', import.meta.url));

const lab = `bwg${process.pid}`;
const stateDir = `/run/membrane-bench/${lab}`;
const env = { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: stateDir, MEMBRANE_HUBBLE_RELAY_PORT: '0', NO_COLOR: '1' };
const membrane = (args: string[]) => execFileSync(join(repo, 'bin/membrane'), args, { env, encoding: 'utf8', timeout: 300_000 });
const n1 = `${lab}-node1`;
const n2 = `${lab}-node2`;
/** the bare tunnel's wireguard-go processes (the suite has the measuring ones) */
const procs: ChildProcess[] = [];
const nsx = (ns: string, cmd: string[]) => ['--net=/run/netns/' + ns, ...cmd];
const sh = (ns: string, cmd: string[]) => execFileSync('nsenter', nsx(ns, cmd), { encoding: 'utf8' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `wg ARGS` for the bare tunnel of node k (its wireguard-go socket dir bound over /run/wireguard). */
const wgDir = (k: number) => join(stateDir, `wgb${k}`);
const wgb = (k: number, args: string[]) => execFileSync('nsenter', nsx(k === 1 ? n1 : n2, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /run/wireguard && exec wg "$@"', wgDir(k), ...args]), { encoding: 'utf8' });

function cleanup(): void {
  suite.kill();
  for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
  try { membrane(['down']); } catch { /* best effort */ }
}
process.on('SIGINT', () => { cleanup(); process.exit(130); });

try {
  membrane(['up', '--nodes', '2', '--routing-mode', MODE, '--encryption', 'wireguard', '-q']);
  const podsFile = join(stateDir, 'bench-pods.yaml');
  writeFileSync(podsFile, [
    'apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: bench}\nspec: {nodeName: node1, containers: [{name: c, image: curlimages/curl}]}',
    'apiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: bench}\nspec: {nodeName: node2, containers: [{name: c, image: curlimages/curl}]}',
  ].join('\n---\n'));
  membrane(['apply', '-f', podsFile]);
  const pc = podNetnsName('node1', 'bench', 'client', lab);
  const ps = podNetnsName('node2', 'bench', 'server', lab);
  for (let i = 0; i < 100 && !(existsSync(`/run/netns/${pc}`) && existsSync(`/run/netns/${ps}`)); i++) await sleep(200);
  const serverIp = /inet (10\.244\.2\.\d+)/.exec(sh(ps, ['ip', '-4', 'addr', 'show', 'eth0']))![1]!;

  // the bare tunnel: its own wireguard-go per node namespace, keys, port and addresses
  mkdirSync('/run/wireguard', { recursive: true });
  const keys = [1, 2].map(() => { const priv = execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim(); return { priv, pub: execFileSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' }).trim() }; });
  for (const k of [1, 2]) {
    mkdirSync(wgDir(k), { recursive: true, mode: 0o700 });
    writeFileSync(join(wgDir(k), 'key'), keys[k - 1]!.priv, { mode: 0o600 });
    const cp = spawn('nsenter', nsx(k === 1 ? n1 : n2, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /run/wireguard && exec wireguard-go -f wgb0', wgDir(k)]), { stdio: 'ignore', env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } });
    procs.push(cp);
  }
  await sleep(1500);
  for (const k of [1, 2]) {
    const j = 3 - k;
    wgb(k, ['set', 'wgb0', 'private-key', join(wgDir(k), 'key'), 'listen-port', '51999', 'peer', keys[j - 1]!.pub, 'endpoint', `192.0.2.${j}:51999`, 'allowed-ips', `10.99.0.${j}/32`]);
    const ns = k === 1 ? n1 : n2;
    sh(ns, ['ip', 'link', 'set', 'wgb0', 'mtu', '1500', 'up']);
    sh(ns, ['ip', 'addr', 'add', `10.99.0.${k}/32`, 'dev', 'wgb0']);
    sh(ns, ['ip', 'route', 'add', `10.99.0.${j}/32`, 'dev', 'wgb0', 'src', `10.99.0.${k}`]);
  }

  // servers: in node2's namespace (bare tunnel) and in the server pod (membrane paths)
  for (const ns of [n2, ps]) await suite.startServers(ns);

  const vxlanRule = ['pref', '2004', 'ipproto', 'udp', 'dport', '8472', 'lookup', '2005'];
  const plainRoutes = (on: boolean) => {
    if (MODE === 'tunnel') {
      // the agent re-checks its routes, not this rule: without it VXLAN takes the underlay route
      for (const ns of [n1, n2]) {
        const has = sh(ns, ['ip', 'rule', 'show', 'pref', '2004']).includes('lookup 2005');
        if (on && has) sh(ns, ['ip', 'rule', 'del', ...vxlanRule]);
        if (!on && !has) sh(ns, ['ip', 'rule', 'add', ...vxlanRule]);
      }
      return;
    }
    sh(n1, on ? ['ip', 'route', 'replace', '10.244.2.0/24', 'via', '192.0.2.2'] : ['ip', 'route', 'replace', '10.244.2.0/24', 'dev', 'cilium_wg0', 'scope', 'link', 'src', '10.244.1.1']);
    sh(n2, on ? ['ip', 'route', 'replace', '10.244.1.0/24', 'via', '192.0.2.1'] : ['ip', 'route', 'replace', '10.244.1.0/24', 'dev', 'cilium_wg0', 'scope', 'link', 'src', '10.244.2.1']);
  };
  const target: Record<Cfg, { ns: string; ip: string }> = {
    'wg-bare': { ns: n1, ip: '10.99.0.2' }, 'membrane-wg': { ns: pc, ip: serverIp }, 'membrane-plain': { ns: pc, ip: serverIp },
  };
  for (let round = 0; round < opt.rounds; round++) {
    for (const cfg of CFGS) {
      plainRoutes(cfg === 'membrane-plain');
      suite.measure(cfg, round, target[cfg].ns, target[cfg].ip);
    }
  }
  plainRoutes(false);

  const table = suite.table([
    { head: 'bare wireguard-go', cfg: 'wg-bare' }, { head: 'membrane + WireGuard', cfg: 'membrane-wg' }, { head: 'ratio to bare', ratio: ['membrane-wg', 'wg-bare'] },
    { head: 'membrane, plain text', cfg: 'membrane-plain' }, { head: 'encrypted / plain', ratio: ['membrane-wg', 'membrane-plain'] },
  ]);
  const wgv = execFileSync('dpkg-query', ['-W', '-f=${Version}', 'wireguard-go'], { encoding: 'utf8' });
  reportResults([
    '## encryption', '',
    `Command: \`${tcpCommand('encryption', opt, MODE === 'tunnel' ? ' --routing-mode tunnel' : '')}\``, '',
    `${runLine(startLoad)}, wireguard-go ${wgv} (userspace: no kernel module). Two-node lab, one lab process per node; bare = a second wireguard-go tunnel between the same node namespaces (no pods, no eBPF); membrane = pod on node1 → pod on node2 (eBPF on both veths) through cilium_wg0, or over the plain underlay route${MODE === 'tunnel' ? ' (routing mode tunnel: VXLAN inside WireGuard, cilium_wg0 MTU 1550)' : ''}. TUN MTU 1500 on both tunnels${MODE === 'tunnel' ? ' but cilium_wg0 in tunnel mode' : ''}. Client on CPU 0, server on CPU 1, wireguard-go unpinned. Median of ${opt.rounds} interleaved rounds, ${opt.secs} s each.`, '',
    table, '',
  ], opt.append);
} finally {
  cleanup();
}
