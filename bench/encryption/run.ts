// Encryption benchmark: cross-node TCP_STREAM (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c) in
// one two-node lab (`membrane up --nodes 2 --encryption wireguard`), three paths, median of rounds,
// client pinned to CPU 0 and server to CPU 1 (both tunnels' wireguard-go and the agents unpinned,
// started alike: same binary, same nice level, TUN without offloads on both). In a round each
// measure runs --secs seconds per path in turns of 1 s, the paths' order rotated every turn: run
// one after the other for 3 s each, a few seconds of other work on the shared machine (a lab's
// agent, a background job) fell on one path and swung a round's ratio (TCP_CRR 0.61-0.94 idle,
// with the bare tunnel's own client+server CPU per connection 109-181 µs across rounds):
//   wg-bare        node1 → node2 namespace over a second, bare wireguard-go tunnel (wgb0, UDP 51999,
//                  same MTU), no pods, no eBPF: what wireguard-go alone gives on this machine
//   membrane-wg    pod on node1 → pod on node2 through membrane's cilium_wg0 (eBPF on the pod veths)
//   membrane-plain the same pods over the plain underlay: native routing adds, for the round, a rule
//                  (pref 1000) sending the peer's pod CIDR to a table of its own with the underlay
//                  route, so the agent's routes through cilium_wg0 stay as they are (replacing them
//                  made the agent's drift check put them back in the middle of the round); tunnel
//                  routing removes the rule that steers VXLAN into table 2005 for the round.
//                  Strict mode is off in this lab. The round fails if packets crossed cilium_wg0.
// Besides rates, CPU per unit of work from /proc/<pid>/stat (survives a shared machine better than
// rates): each path's wireguard-go processes (both nodes; the kernel's delivery of what they write
// to the TUN and the underlay runs in their context, so this includes the receive path: VXLAN,
// veths, eBPF) and the lab's agents (Hubble flows), per MiB (STREAM), transaction, connection.
// And packets per MiB of STREAM on node1's TUN and underlay: both tunnels carry as many (same MTU,
// same MSS, one UDP datagram per TUN packet), so a CPU difference is work per packet, not packets.
// --routing-mode tunnel: the lab routes pods through VXLAN, and VXLAN through cilium_wg0 (VXLAN inside
// WireGuard, cilium_wg0 MTU 1550 so a 1500-byte pod packet fits: the same TCP payload per packet).
// --perf DIR: perf record -g of each path's wireguard-go pair during the last stream turn; with
// --perf-sched on, its switch-outs instead (sched:sched_switch with stacks), summarised in shares;
// --perf-sched wakeups: perf -a of switches and wake-ups, read for node1's wireguard-go per MiB.
// --gro-flush-ns N, --napi-threaded on: cilium_wg0's GRO flush timeout, NAPI poll in a kernel thread
// (sizing the agent's settings; the run line says what cilium_wg0 had).
// --perf-all on: with --perf, the whole machine (perf -a) during each path's last stream turn, not
// only its wireguard-go pair (the sender's own context: the pod's TCP, veth, VXLAN, routing).
// --bpf-stats on: kernel BPF run-time stats on (they cost every program run two clock reads, so
// not by default): per TCP_CRR turn of the membrane paths, on stderr, each program's runs and ns
// per connection (both nodes) and the monitor events written / over budget per connection.
// --ab stats|handoff: a same-lab A/B of membrane's encrypted path, the thing under test flipped
// between turns (A and B alternate in turns of 1 s, order rotated, as the paths do), so that 1-3 %
// changes are resolved where two runs (two labs, two sittings) swing by ~0.1: stats, B turns with
// the kernel's BPF run-time stats held on by the bench (their cost; the agent leaves them off);
// handoff, B turns with every node's mb_wg_peers emptied (the stack's forwarding into cilium_wg0
// instead of from_container's hand-off); gro, B turns with cilium_wg0's GRO flush timeout 0 on both
// nodes (GRO flushes at every NAPI poll's end; A: the agent's 100 µs, or --gro-flush-ns). Only the two membrane paths run; per round B/A of rates
// and of the machine's CPU per unit, on stdout; never --append (a tool, not the bench's record).
// --wg-sched batch: every wireguard-go thread of both tunnels SCHED_BATCH (a woken thread does not
// preempt the running one): sizing whether wireguard-go's preemptions by its own threads cost it.
//   bin/node bench/encryption/run.ts [--secs 3] [--rounds 3] [--routing-mode native|tunnel] [--bare-vxlan on] [--perf-split on] [--perf DIR [--perf-sched on|wakeups] [--perf-measure stream|rr|crr]] [--pod-gro on] [--gro-flush-ns N] [--napi-threaded on] [--perf-all on] [--wg-sched batch] [--bpf-stats on] [--ab stats|handoff|gro] [--append]
// With --append the results and the command go to bench/RESULTS.md under `## encryption`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { UNDERLAY_LINK } from '../../src/lab/names.ts';
import { WG_TUN_TXQUEUELEN, sizeWireguardGoSockets } from '../../src/sys/wireguard.ts';
import { hubbleMetricsText } from './hubble-metrics.ts';
import { placeBenchPods } from './pods.ts';
import { cpuBusyUs, median, reportResults } from '../support.ts';
import { bpfLinkProbe, createTcpSuite, eventsProbe, runLine, tcpArgs, tcpCommand, type Measure } from '../tcp-suite.ts';
import { BpfMap, disableRunTimeStats, enableRunTimeStats } from '../../src/sys/bpf.ts';

const startLoad = loadavg()[0]!;
const opt = tcpArgs({ 'routing-mode': 'native', perf: '', 'perf-sched': '', 'perf-all': '', 'pod-gro': '', 'gro-flush-ns': '', 'napi-threaded': '', 'wg-sched': '', 'perf-measure': '', 'bpf-stats': '', ab: '', 'perf-split': '', 'bare-vxlan': '' });
const MODE = opt.own['routing-mode']!;
if (MODE !== 'native' && MODE !== 'tunnel') throw new Error(`--routing-mode: native or tunnel, got ${MODE}`);
type Cfg = 'wg-bare' | 'wg-bare-pods' | 'wg-bare-vxlan' | 'membrane-wg' | 'membrane-plain' | 'membrane-wg-b';
/** --bare-vxlan on: a fifth path, bare wireguard-go with the kernel's VXLAN inside it between two more
 *  pod-like namespaces (what Cilium's tunnel mode with WireGuard is: a vxlan device routed into the
 *  WireGuard device), so that tunnel routing has a like-for-like reference with VXLAN's 50 bytes */
const BARE_VXLAN = opt.own['bare-vxlan'] === 'on';
/** --ab: what B turns flip (A: membrane-wg as it is) */
const AB = opt.own.ab;
if (AB && AB !== 'stats' && AB !== 'handoff' && AB !== 'gro') throw new Error(`--ab: stats, handoff or gro, got ${AB}`);
if (AB && opt.append) throw new Error('--ab measures one change in one lab: its numbers are not the bench\'s record (no --append)');
const CFGS: Cfg[] = AB ? ['membrane-wg', 'membrane-wg-b'] : ['wg-bare', 'wg-bare-pods', ...(BARE_VXLAN ? ['wg-bare-vxlan' as const] : []), 'membrane-wg', 'membrane-plain'];
/** a path through membrane's cilium_wg0 (A or B) */
const encrypted = (cfg: Cfg) => cfg === 'membrane-wg' || cfg === 'membrane-wg-b';
/** --perf DIR: `perf record -g` of each path's wireguard-go pair (both nodes) during its stream
 *  rounds, one perf.data per path in DIR (where the kernel work in their context goes) */
const PERF_DIR = opt.own.perf;
/** --perf-measure stream|rr|crr: the measure whose last turn --perf records (stream by default) */
const PERF_MEASURE = opt.own['perf-measure'] || 'stream';
/** --perf-split on: with --perf DIR, perf -a -g over every turn of --perf-measure in the last round,
 *  enabled exactly for the measure's run (perf's control FIFOs), one file per turn, and DIR/meta.json
 *  with each path's units and machine CPU in those turns: bench/encryption/perf-split.ts reads them */
const PERF_SPLIT = opt.own['perf-split'] === 'on';
if (PERF_SPLIT && !PERF_DIR) throw new Error('--perf-split on needs --perf DIR');
if (PERF_SPLIT) mkdirSync(PERF_DIR!, { recursive: true });
// wireguard-go gives a fraction of a Gbit/s: three decimals
const suite = createTcpSuite(CFGS, opt.secs, 3);
const repo = fileURLToPath(new URL('../..', import.meta.url));

const lab = `bwg${process.pid}`;
const stateDir = `/run/membrane-bench/${lab}`;
const env = { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: stateDir, MEMBRANE_HUBBLE_RELAY_PORT: '0', NO_COLOR: '1' };
const membrane = (args: string[]) => execFileSync(join(repo, 'bin/membrane'), args, { env, encoding: 'utf8', timeout: 300_000 });
const n1 = `${lab}-node1`;
const n2 = `${lab}-node2`;
/** the bare tunnel's "pod" namespace on node k (wg-bare-pods) */
const barePod = (k: number) => `${lab}-bp${k}`;
/** --bare-vxlan: the "pod" namespace on node k behind the kernel's VXLAN inside the bare tunnel */
const barePodV = (k: number) => `${lab}-bv${k}`;
/** the bare tunnel's wireguard-go processes (the suite has the measuring ones) */
const procs: ChildProcess[] = [];
/** --perf-split's perf processes */
const perfProcs: ChildProcess[] = [];
const nsx = (ns: string, cmd: string[]) => ['--net=/run/netns/' + ns, ...cmd];
const sh = (ns: string, cmd: string[]) => execFileSync('nsenter', nsx(ns, cmd), { encoding: 'utf8' });

/**
 * A pod-like namespace `pod` behind veth `dev` of node namespace `ns` (the pod's side eth0, both
 * sides MTU `mtu`, veth offloads as the CNI leaves them): `<net>.1/24` on the node's side, `<net>.2`
 * the pod's with its default route through it.
 */
function podBehind(ns: string, pod: string, dev: string, net: string, mtu: string): void {
  execFileSync('ip', ['netns', 'add', pod]);
  sh(ns, ['ip', 'link', 'add', dev, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', pod]);
  sh(ns, ['ip', 'addr', 'add', `${net}.1/24`, 'dev', dev]);
  sh(ns, ['ip', 'link', 'set', dev, 'up']);
  sh(pod, ['ip', 'addr', 'add', `${net}.2/24`, 'dev', 'eth0']);
  sh(pod, ['ip', 'link', 'set', 'lo', 'up']);
  sh(pod, ['ip', 'link', 'set', 'eth0', 'up']);
  sh(pod, ['ip', 'route', 'add', 'default', 'via', `${net}.1`]);
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `wg ARGS` for the bare tunnel of node k (its wireguard-go socket dir bound over /run/wireguard). */
const wgDir = (k: number) => join(stateDir, `wgb${k}`);
const wgb = (k: number, args: string[]) => execFileSync('nsenter', nsx(k === 1 ? n1 : n2, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /run/wireguard && exec wg "$@"', wgDir(k), ...args]), { encoding: 'utf8' });

/**
 * Switch-outs of wireguard-go's threads in a `perf record -e sched:sched_switch -g` file, in shares:
 * a sleeping thread (prev_state S/D) by the first kernel function on its stack that says why (a
 * futex: the Go runtime parked the thread, no goroutine to run; epoll: the netpoller waiting for
 * the TUN or the socket; nanosleep: the runtime's usleep), a preempted one (R) by the task that
 * took the CPU.
 */
/** where a preempted wireguard-go thread was, first match on its stack (innermost first) */
const PREEMPT_AT: [RegExp, string][] = [
  [/^tun_get_user|^tun_chr_write/, 'TUN write'], [/^tun_chr_read|^tun_do_read|^tun_ring_recv/, 'TUN read'],
  [/^udp_sendmsg|^__sys_sendto|^__sys_sendmsg/, 'UDP send'], [/^udp_recvmsg|^__sys_recvmsg|^__sys_recvfrom/, 'UDP receive'],
  [/^irqentry_exit|^asm_sysvec_apic_timer|^sysvec_/, 'user space (interrupt)'], [/^__x64_sys_|^do_syscall_64/, 'another syscall'],
];

function schedSummary(file: string, mib: number): string {
  const out = execFileSync('perf', ['script', '-i', file, '-F', 'tid,event,trace,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'ignore'] });
  const counts = new Map<string, number>();
  const WHY: [RegExp, string][] = [[/futex/, 'futex (thread parked)'], [/epoll/, 'epoll (netpoller)'], [/nanosleep/, 'nanosleep (runtime usleep)'], [/tun_/, 'TUN read'], [/udp|sock|skb_recv/, 'UDP socket'], [/select|poll/, 'poll']];
  let total = 0;
  /** switch-outs per thread, and the thread with the most (Go's sysmon sleeps in nanosleep) */
  const perTid = new Map<string, Map<string, number>>();
  for (const ev of out.split(/\n(?=\s*\d+\s+sched:sched_switch)/)) {
    const m = /prev_state=(\S+) ==> next_comm=(.+?) next_pid/.exec(ev);
    if (!m) continue;
    const tid = /^\s*(\d+)/.exec(ev)?.[1] ?? '?';
    total++;
    let key: string;
    if (m[1]!.startsWith('R')) {
      // where the preempted thread was: its innermost syscall or kernel path on the stack (a TUN
      // write delivering into the stack, a TUN read, the UDP socket) or user space (no kernel frame
      // but the switch itself: the tick or a wake-up landed while it ran Go code)
      const syms = ev.split('\n').slice(1).map((l) => l.trim().split(/\s+/)[1] ?? '');
      const at = PREEMPT_AT.find(([re]) => syms.some((x) => re.test(x)))?.[1] ?? 'elsewhere';
      key = `preempted by ${m[2]!.replace(/[0-9/:]+$/, '') || m[2]} in ${at}`;
    } else {
      const syms = ev.split('\n').slice(1).map((l) => l.trim().split(/\s+/)[1] ?? '');
      key = 'sleep: ' + (WHY.find(([re]) => syms.some((x) => re.test(x)))?.[1] ?? syms.find((x) => x && !/schedule|__switch|finish_task/.test(x)) ?? '?');
    }
    counts.set(key, (counts.get(key) ?? 0) + 1);
    const t = perTid.get(tid) ?? new Map<string, number>();
    t.set(key, (t.get(key) ?? 0) + 1);
    perTid.set(tid, t);
  }
  const tidTotal = (t: Map<string, number>) => [...t.values()].reduce((a, b) => a + b, 0);
  const busiest = [...perTid.values()].sort((a, b) => tidTotal(b) - tidTotal(a))[0];
  const busiestLine = busiest ? `; ${perTid.size} threads, the busiest ${((100 * tidTotal(busiest)) / total).toFixed(0)} % of them (${[...busiest].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([k, n]) => `${k} ${((100 * n) / tidTotal(busiest)).toFixed(0)} %`).join(', ')})` : '';
  const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([k, n]) => `${k} ${((100 * n) / total).toFixed(0)} %`);
  // perf attaches to each thread while the turn has begun: the shares are what to read, not the count
  return `${total} switch-outs recorded over ${mib.toFixed(1)} MiB: ${top.join(', ')}${busiestLine}`;
}

/**
 * Wake-ups and switch-outs of node1's wireguard-go (tids[0]) in a `perf record -a -e
 * sched:sched_switch -e sched:sched_wakeup` file, per MiB: who woke its threads (its own threads,
 * node2's wireguard-go, the pods' processes, a kernel thread) and on which CPU, and who took the
 * CPU from a preempted one.
 */
function wakeSummary(file: string, tids: Set<string>[], mib: number): string {
  const mine = tids[0] ?? new Set<string>(), peer = tids[1] ?? new Set<string>();
  const out = execFileSync('perf', ['script', '-i', file, '-F', 'comm,tid,cpu,event,trace,ip,sym'], { encoding: 'utf8', maxBuffer: 1 << 29, stdio: ['ignore', 'pipe', 'ignore'] });
  /** node2's threads woken while node1's ran (what then preempts node1's), by the waker's context on its stack */
  // first match, innermost meaning first: node1's own UDP send delivers into node2's socket inline
  // (veth, backlog); a TUN's NAPI poll (GRO flush, in the writer's syscall or at a timer's softirq)
  // delivers to a pod whose reply wakes node2's TUN reader; a timer interrupt's softirq is the last resort
  const CTX: [RegExp, string][] = [[/^udp_sendmsg|^__sys_sendmsg/, 'node1\'s UDP send'], [/^tun_napi_poll|^napi_complete_done|^napi_gro_flush|^gro_flush/, 'a TUN\'s NAPI poll (GRO flush)'], [/^process_backlog/, 'the backlog (veth)'], [/^tun_get_user|^tun_chr_write/, 'a TUN write'], [/^hrtimer_interrupt|^__hrtimer_run_queues/, 'a timer interrupt']];
  const crossCtx = new Map<string, number>();
  const who = (comm: string, tid: string) => (mine.has(tid) ? 'its own thread' : peer.has(tid) ? 'node2\'s wireguard-go' : comm.replace(/[0-9/:]+$/, '') || comm);
  const wakers = new Map<string, number>(), preempt = new Map<string, number>();
  let wakes = 0, local = 0, sleeps = 0, preempts = 0;
  // (recorded with stacks: perf script puts a blank line after each event)
  for (const ev of out.split(/\n\s*\n/)) {
    const line = ev.trimStart().split('\n', 1)[0]!;
    const m = /^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+sched:(sched_\w+):\s+(.*)$/.exec(line);
    if (!m) continue;
    if (m[4] === 'sched_wakeup' && mine.has(m[2]!)) {
      const t = /pid=(\d+)/.exec(m[5]!);
      if (t && peer.has(t[1]!)) {
        const syms = ev.split('\n').slice(1).map((l) => l.trim().split(/\s+/)[1] ?? '');
        const k = CTX.find(([re]) => syms.some((x) => re.test(x)))?.[1] ?? 'elsewhere';
        crossCtx.set(k, (crossCtx.get(k) ?? 0) + 1);
      }
    }
    const [, comm, tid, cpu, kind, trace] = m as unknown as [string, string, string, string, string, string];
    if (kind === 'sched_wakeup') {
      const t = /pid=(\d+).*target_cpu=(\d+)/.exec(trace);
      if (!t || !mine.has(t[1]!)) continue;
      wakes++;
      if (Number(t[2]) === Number(cpu)) local++;
      const k = who(comm, tid);
      wakers.set(k, (wakers.get(k) ?? 0) + 1);
    } else if (kind === 'sched_switch') {
      const t = /prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.+?) next_pid=(\d+)/.exec(trace);
      if (!t || !mine.has(t[1]!)) continue;
      if (t[2]!.startsWith('R')) {
        preempts++;
        const k = who(t[3]!, t[4]!);
        preempt.set(k, (preempt.get(k) ?? 0) + 1);
      } else sleeps++;
    }
  }
  const per = (n: number) => (n / mib).toFixed(0);
  const list = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, n]) => `${k} ${per(n)}`).join(', ');
  return `${mib.toFixed(1)} MiB, ${mine.size} threads; node2's threads woken on node1's thread ${per([...crossCtx.values()].reduce((a, b) => a + b, 0))} (from ${list(crossCtx)}); woken ${per(wakes)} (${((100 * local) / Math.max(wakes, 1)).toFixed(0)} % on the waker's CPU; by ${list(wakers)}); slept ${per(sleeps)}, preempted ${per(preempts)} (by ${list(preempt)})`;
}

function cleanup(): void {
  suite.kill();
  if (opt.own['bpf-stats'] === 'on') disableRunTimeStats();
  for (const p of [...procs, ...perfProcs]) { try { if (p.exitCode === null) p.kill('SIGKILL'); } catch { /* gone */ } }
  try { membrane(['down']); } catch { /* best effort */ }
  for (const k of [1, 2]) for (const pod of [barePod(k), barePodV(k)]) { try { execFileSync('ip', ['netns', 'del', pod], { stdio: 'ignore' }); } catch { /* not made */ } }
}
process.on('SIGINT', () => { cleanup(); process.exit(130); });

try {
  membrane(['up', '--nodes', '2', '--routing-mode', MODE, '--encryption', 'wireguard', '-q']);
  // sizing knobs for cilium_wg0's receive side on both nodes (the agent's own are the default):
  // --gro-flush-ns N its GRO flush timeout, --napi-threaded on its NAPI poll in a kernel thread
  // instead of the softirq of wireguard-go's TUN write
  for (const [knob, file] of [['gro-flush-ns', 'gro_flush_timeout'], ['napi-threaded', 'threaded']] as const) {
    const v = opt.own[knob];
    if (!v) continue;
    for (const ns of [n1, n2]) sh(ns, ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'umount -l /sys; mount -t sysfs sysfs /sys && echo "$0" > "/sys/class/net/cilium_wg0/$1"', v === 'on' ? '1' : v, file]);
  }
  const { clientNs: pc, serverNs: ps, serverIp } = await placeBenchPods(stateDir, lab, (f) => membrane(['apply', '-f', f]), sh);

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
    // the TUN ring as the agent sets cilium_wg0's (wireguard-go leaves 500: drops under a stream)
    // --bare-vxlan: 1550 as cilium_wg0's in tunnel routing, so a 1500-byte pod packet fits with
    // VXLAN's 50 bytes; the node-to-node route keeps 1500 (the bare path's segments unchanged)
    sh(ns, ['ip', 'link', 'set', 'wgb0', 'mtu', BARE_VXLAN ? '1550' : '1500', 'txqueuelen', String(WG_TUN_TXQUEUELEN), 'up']);
    sh(ns, ['ip', 'addr', 'add', `10.99.0.${k}/32`, 'dev', 'wgb0']);
    sh(ns, ['ip', 'route', 'add', `10.99.0.${j}/32`, 'dev', 'wgb0', 'src', `10.99.0.${k}`, ...(BARE_VXLAN ? ['mtu', '1500'] : [])]);
  }
  // like for like with membrane's path: a bare "pod" per node (a namespace behind a veth, default
  // veth offloads as the CNI leaves them, same MTU), forwarded by the node's stack into wgb0
  for (const k of [1, 2]) {
    const j = 3 - k, ns = k === 1 ? n1 : n2;
    // (nsenter --net leaves the root namespace's /sys mounted: ask ip for the pod's own device)
    const podMtu = String((JSON.parse(sh(k === 1 ? pc : ps, ['ip', '-j', 'link', 'show', 'eth0'])) as { mtu: number }[])[0]!.mtu);
    podBehind(ns, barePod(k), 'bpv0', `10.98.${k}`, podMtu);
    // --pod-gro on: GRO (the veth's NAPI) on the bare pods' eth0, to size what coalescing the
    // decrypted segments saves in ACKs (membrane's bpf_redirect_peer skips the veth's NAPI)
    if (opt.own['pod-gro'] === 'on') sh(barePod(k), ['ethtool', '-K', 'eth0', 'gro', 'on']);
    sh(ns, ['ip', 'route', 'add', `10.98.${j}.0/24`, 'dev', 'wgb0']);
    wgb(k, ['set', 'wgb0', 'peer', keys[j - 1]!.pub, 'allowed-ips', `10.99.0.${j}/32,10.98.${j}.0/24${BARE_VXLAN ? `,10.99.1.${j}/32` : ''}`]);
    if (!BARE_VXLAN) continue;
    // --bare-vxlan: a vxlan device (VNI 42, UDP 4789, no UDP checksum and the source port from the
    // flow's hash, the kernel's defaults as membrane's VXLAN has them) between the tunnel addresses
    // 10.99.1.k, routed into wgb0; behind it a pod-like namespace like the bare pods'
    sh(ns, ['ip', 'addr', 'add', `10.99.1.${k}/32`, 'dev', 'wgb0']);
    sh(ns, ['ip', 'route', 'add', `10.99.1.${j}/32`, 'dev', 'wgb0', 'src', `10.99.1.${k}`]);
    sh(ns, ['ip', 'link', 'add', 'bvx0', 'mtu', podMtu, 'type', 'vxlan', 'id', '42', 'local', `10.99.1.${k}`, 'remote', `10.99.1.${j}`, 'dstport', '4789', 'nolearning']);
    sh(ns, ['ip', 'addr', 'add', `10.96.0.${k}/24`, 'dev', 'bvx0']);
    sh(ns, ['ip', 'link', 'set', 'bvx0', 'up']);
    podBehind(ns, barePodV(k), 'bvv0', `10.97.${k}`, podMtu);
    sh(ns, ['ip', 'route', 'add', `10.97.${j}.0/24`, 'via', `10.96.0.${j}`, 'dev', 'bvx0']);
  }
  // the agent sizes cilium_wg0's wireguard-go UDP sockets (src/sys/wireguard.ts): the bare tunnel's the same
  for (const p of procs) if (sizeWireguardGoSockets(p.pid!, 51999) < 1) throw new Error(`bare wireguard-go ${p.pid}: no UDP socket on 51999`);
  /** receive buffer of the node2 UDP socket on `port` (what `ss -uam` prints as rb) */
  const rcvbuf = (port: number) => Number(new RegExp(`:${port}\\s[^\\n]*\\n\\s*skmem:\\(r\\d+,rb(\\d+)`).exec(sh(n2, ['ss', '-uanm']))?.[1] ?? 0);

  // servers: in node2's namespace (bare tunnel) and in the server pod (membrane paths)
  for (const ns of [n2, barePod(2), ...(BARE_VXLAN ? [barePodV(2)] : []), ps]) await suite.startServers(ns);

  const vxlanRule = ['pref', '2004', 'ipproto', 'udp', 'dport', '8472', 'lookup', '2005'];
  /** native plain round: the peer's pod CIDR through a table of the bench's own, ahead of main */
  const PLAIN_TABLE = '2099';
  const plainRule = (cidr: string) => ['pref', '1000', 'to', cidr, 'lookup', PLAIN_TABLE];
  const peerOf = [{ ns: n1, cidr: '10.244.2.0/24', via: '192.0.2.2' }, { ns: n2, cidr: '10.244.1.0/24', via: '192.0.2.1' }];
  /** the peers each node's from_container hands to cilium_wg0 itself (mb_wg_peers, kept by the
   *  agent with its routes): a plain turn takes them out with the routes and puts them back after
   *  (the agent writes only what it changes, so it leaves them to the bench meanwhile) */
  const peerMaps = [1, 2].map((k) => BpfMap.fromPin(`/sys/fs/bpf/membrane/${lab}-node${k}/mb_wg_peers`));
  let heldPeers: { m: BpfMap; k: Buffer; v: Buffer }[] | undefined;
  const holdPeers = (on: boolean) => {
    if (!on && heldPeers) {
      for (const { m, k, v } of heldPeers) m.update(k, v);
      heldPeers = undefined;
    }
    if (on && !heldPeers) {
      heldPeers = peerMaps.flatMap((m) => [...m.keys()].map((k) => ({ m, k, v: m.lookup(k)! })));
      for (const { m, k } of heldPeers) m.delete(k);
    }
  };
  /** --ab gro: cilium_wg0's GRO flush timeout on both nodes (ns), A's as the run found it */
  const groFlush = (v?: string) => [n1, n2].map((ns) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', v === undefined ? 'cat /sys/class/net/cilium_wg0/gro_flush_timeout' : 'echo "$0" > /sys/class/net/cilium_wg0/gro_flush_timeout', ...(v === undefined ? [] : [v])], { encoding: 'utf8' }).trim());
  const groA = AB === 'gro' ? groFlush()[0]! : '';
  /** --ab: B's flip on or off (before each turn) */
  let abOn = false;
  const abFlip = (on: boolean) => {
    if (on === abOn) return;
    abOn = on;
    if (AB === 'stats') { if (on) enableRunTimeStats(); else disableRunTimeStats(); }
    else if (AB === 'handoff') holdPeers(on);
    else if (AB === 'gro') groFlush(on ? '0' : groA);
  };
  const plainRoutes = (on: boolean) => {
    if (!on && !abOn) holdPeers(false); // --ab handoff's B turns hold them themselves
    for (const { ns, cidr, via } of peerOf) {
      if (MODE === 'tunnel') {
        // the agent re-checks its routes, not this rule: without it VXLAN takes the underlay route
        const has = sh(ns, ['ip', 'rule', 'show', 'pref', '2004']).includes('lookup 2005');
        if (on && has) sh(ns, ['ip', 'rule', 'del', ...vxlanRule]);
        if (!on && !has) sh(ns, ['ip', 'rule', 'add', ...vxlanRule]);
        continue;
      }
      const has = sh(ns, ['ip', 'rule', 'show', 'pref', '1000']).includes(`lookup ${PLAIN_TABLE}`);
      if (on) sh(ns, ['ip', 'route', 'replace', 'table', PLAIN_TABLE, cidr, 'via', via]);
      if (on && !has) sh(ns, ['ip', 'rule', 'add', ...plainRule(cidr)]);
      if (!on && has) sh(ns, ['ip', 'rule', 'del', ...plainRule(cidr)]);
    }
    if (on) holdPeers(true);
  };
  const serverNs: Record<Cfg, string> = { 'wg-bare': n2, 'wg-bare-pods': barePod(2), 'wg-bare-vxlan': barePodV(2), 'membrane-wg': ps, 'membrane-plain': ps, 'membrane-wg-b': ps };
  const target: Record<Cfg, { ns: string; ip: string }> = {
    'wg-bare': { ns: n1, ip: '10.99.0.2' }, 'wg-bare-pods': { ns: barePod(1), ip: '10.98.2.2' }, 'wg-bare-vxlan': { ns: barePodV(1), ip: '10.97.2.2' }, 'membrane-wg': { ns: pc, ip: serverIp }, 'membrane-plain': { ns: pc, ip: serverIp },
    'membrane-wg-b': { ns: pc, ip: serverIp },
  };

  // CPU accounting: utime+stime in clock ticks (100 Hz) of a path's wireguard-go pair and of the agents
  const ticksOf = (pid: number): { user: number; sys: number } => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const t = f.slice(f.lastIndexOf(')') + 2).split(' ');
      return { user: Number(t[11]), sys: Number(t[12]) }; // fields 14 and 15 of stat(5), counted after the comm
    } catch { return { user: 0, sys: 0 }; }
  };
  const ticks = (pid: number): number => { const t = ticksOf(pid); return t.user + t.sys; };
  /** a path's wireguard-go pair, user (Go: crypto, the runtime) and system time (syscalls and the
   *  kernel's delivery in their context: the TUN write's NAPI poll, GRO, from_wireguard, the pod's
   *  TCP; the UDP send's underlay veth and the peer socket), ticks. The kernel accounts by tick
   *  (CONFIG_TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING): a softirq a tick lands in is charged to
   *  the task it interrupted as system time too */
  const ticksSplit = (pids: number[]) => pids.reduce((a, p) => { const t = ticksOf(p); return { user: a.user + t.user, sys: a.sys + t.sys }; }, { user: 0, sys: 0 });
  /** both CPUs' softirq time (µs, /proc/stat's softirq column: the ticks that landed in a softirq,
   *  whoever it interrupted) and NET_RX softirq runs (/proc/softirqs), per CPU */
  const softirqs = (): { us: number[]; netRx: number[] } => {
    const stat = readFileSync('/proc/stat', 'utf8').split('\n');
    const us = [0, 1].map((c) => Number(stat.find((l) => l.startsWith(`cpu${c} `))?.trim().split(/\s+/)[7] ?? 0) * 10_000);
    const rx = readFileSync('/proc/softirqs', 'utf8').split('\n').find((l) => l.trim().startsWith('NET_RX:'))?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    return { us, netRx: [0, 1].map((c) => rx[c] ?? 0) };
  };
  const wgPids = (cfg: Cfg): number[] => cfg === 'wg-bare' || cfg === 'wg-bare-pods' || cfg === 'wg-bare-vxlan'
    ? procs.map((p) => p.pid!)
    : ['node1', 'node2'].map((n) => Number(readFileSync(join(stateDir, 'nodes', n, 'wireguard', 'wireguard-go.pid'), 'utf8').trim()));
  for (const pid of [...wgPids('wg-bare'), ...wgPids('membrane-wg')]) {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (comm !== 'wireguard-go') throw new Error(`pid ${pid} is ${comm}, not wireguard-go`);
  }
  const WG_SCHED = opt.own['wg-sched'];
  if (WG_SCHED && WG_SCHED !== 'batch') throw new Error(`--wg-sched: batch, got ${WG_SCHED}`);
  // both tunnels alike; threads wireguard-go makes later inherit the policy of the one that clones them
  if (WG_SCHED) for (const pid of [...wgPids('wg-bare'), ...wgPids('membrane-wg')]) execFileSync('chrt', ['-b', '-a', '-p', '0', String(pid)]);
  const agentPids = (): number[] => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try { const c = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); return c.includes('node-agent.ts') && c.includes(`${stateDir}/`); } catch { return false; }
  });
  const agents = agentPids();
  if (agents.length < 2) throw new Error(`found ${agents.length} agent processes of ${lab}`);
  const sum = (pids: number[]) => pids.reduce((t, p) => t + ticks(p), 0);
  const BPF_STATS = opt.own['bpf-stats'] === 'on';
  const bpfProbe = bpfLinkProbe(() => [1, 2].map((k) => `/sys/fs/bpf/membrane/${lab}-node${k}/links`));
  const evProbe = eventsProbe(() => [1, 2].map((k) => `/sys/fs/bpf/membrane/${lab}-node${k}`));
  if (BPF_STATS) enableRunTimeStats();
  /** flows both agents' Hubble processed and events lost (hubble_flows_processed_total,
   *  hubble_lost_events_total): the agents' CPU goes with flows, and the datapath's event budget
   *  (bpf-events-default-rate-limit, 1000/s per sender) caps them, so a fast round loses most of
   *  its events and looks cheap per connection */
  const hubbleCounts = async (): Promise<{ flows: number; lost: number }> => {
    const out = { flows: 0, lost: 0 };
    for (const n of ['node1', 'node2']) {
      const text = await hubbleMetricsText(stateDir, n);
      for (const line of text.split('\n')) {
        if (line.startsWith('hubble_flows_processed_total')) out.flows += Number(line.slice(line.lastIndexOf(' ') + 1));
        else if (line.startsWith('hubble_lost_events_total')) out.lost += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
    }
    return out;
  };
  /** packets cilium_wg0 sent on node1 (a plain round must send none) */
  const linkTx = (dev: string) => (JSON.parse(sh(n1, ['ip', '-j', '-s', 'link', 'show', dev])) as { stats64: { tx: { packets: number } } }[])[0]!.stats64.tx.packets;
  /** a TUN's counters in namespace `ns`: on node1, tx is what wireguard-go encrypts (the stream's
   *  data) and rx what it decrypted (the receiver's ACKs); node2 the other way round. tx dropped:
   *  its ring (txqueuelen long) was full because wireguard-go read it too slowly; each is a TCP
   *  retransmission and a halved window */
  const linkCounts = (ns: string, dev: string) => {
    const s = (JSON.parse(sh(ns, ['ip', '-j', '-s', 'link', 'show', dev])) as { stats64: { tx: { packets: number; bytes: number; dropped: number }; rx: { packets: number } } }[])[0]!.stats64;
    return { txPackets: s.tx.packets, txBytes: s.tx.bytes, txDropped: s.tx.dropped, rxPackets: s.rx.packets };
  };
  /** context switches of all threads of processes `pids`, voluntary (a thread parked: its
   *  goroutines had nothing to run, or it blocked in a syscall) and involuntary (preempted):
   *  wireguard-go pays per wake-up, not per byte */
  const cswitches = (pids: number[]) => pids.reduce((t, pid) => {
    let dirs: string[] = [];
    try { dirs = readdirSync(`/proc/${pid}/task`); } catch { return t; }
    for (const tid of dirs) {
      try {
        const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
        t.voluntary += Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
        t.involuntary += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)?.[1] ?? 0);
      } catch { /* thread gone */ }
    }
    return t;
  }, { voluntary: 0, involuntary: 0 });
  const wgTx = () => linkTx('cilium_wg0');
  /** tunnel routing, membrane's encrypted path: skbs node1's cilium_vxlan sent (one per GSO packet,
   *  each a trip through the host's output path and table 2005 to cilium_wg0, where it is
   *  segmented; ~0 since from_container makes the VXLAN and hands it to cilium_wg0 itself) */
  const vxTx = (cfg: Cfg) => (MODE === 'tunnel' && encrypted(cfg) ? linkTx('cilium_vxlan') : 0);
  /** node1's TUN of a path (none in the plain round): its packets, and the underlay's, per MiB of STREAM */
  const tunOfCfg: Record<Cfg, string | undefined> = { 'wg-bare': 'wgb0', 'wg-bare-pods': 'wgb0', 'wg-bare-vxlan': 'wgb0', 'membrane-wg': 'cilium_wg0', 'membrane-plain': undefined, 'membrane-wg-b': 'cilium_wg0' };
  type PktKey = 'tun' | 'tunRx' | 'underlay' | 'retrans' | 'tunDropped' | 'cswch' | 'ivcs' | 'n2Rx' | 'n2Tx' | 'bytesPerPkt' | 'vxlan' | 'cswch1' | 'ivcs1';
  const PKT_KEYS: PktKey[] = ['tun', 'tunRx', 'underlay', 'retrans', 'tunDropped', 'cswch', 'ivcs', 'n2Rx', 'n2Tx', 'bytesPerPkt', 'vxlan', 'cswch1', 'ivcs1'];
  const pkts = Object.fromEntries(CFGS.map((c) => [c, Object.fromEntries(PKT_KEYS.map((k) => [k, [] as number[]]))])) as Record<Cfg, Record<PktKey, number[]>>;
  /** --perf: call graphs of CPU time; --perf-sched: every switch-out of a wireguard-go thread with
   *  its kernel stack (where its goroutines wait, or who preempted them) */
  // --perf-sched wakeups: every switch and wake-up on the machine (perf -a, no stacks), read for
  // node1's wireguard-go alone (wakeSummary)
  const WAKEUPS = opt.own['perf-sched'] === 'wakeups';
  const perfArgs = WAKEUPS ? ['-e', 'sched:sched_switch', '-e', 'sched:sched_wakeup', '-g'] : opt.own['perf-sched'] === 'on' ? ['-e', 'sched:sched_switch', '-g'] : ['-g'];
  const MEASURES: Measure[] = ['stream', 'rr', 'crr'];
  const cpu = Object.fromEntries(CFGS.map((c) => [c, { wg: { stream: [], rr: [], crr: [] }, agents: { stream: [], rr: [], crr: [] }, machine: { stream: [], rr: [], crr: [] }, agentsPerSec: { stream: [], rr: [], crr: [] }, flows: { stream: [], rr: [], crr: [] }, lost: { stream: [], rr: [], crr: [] } }])) as unknown as
    Record<Cfg, Record<'wg' | 'agents' | 'machine' | 'agentsPerSec' | 'flows' | 'lost', Record<Measure, number[]>>>;
  const rrBin = `/tmp/mbr-bench-rr-${process.pid}`; // built by createTcpSuite
  if (!existsSync(rrBin)) throw new Error(`${rrBin}: the suite's rr binary is not there`);
  /** rr.c prints `rate clientUs` (the client's CPU µs over the run) */
  const rr = (ns: string, ip: string, k: 'rr' | 'crr', secs: number) => suite.runIn(ns, 0, [rrBin, k, ip, k === 'rr' ? '7001' : '7002', String(secs)]).split(' ').map(Number) as [number, number];
  /** the iperf3 server of a path: membrane-plain has one of its own in the server pod, so that a
   *  plain turn right after an encrypted one never finds membrane-wg's server still finishing */
  const iperfPort: Record<Cfg, string> = { 'wg-bare': '5201', 'wg-bare-pods': '5201', 'wg-bare-vxlan': '5201', 'membrane-wg': '5201', 'membrane-plain': '5202', 'membrane-wg-b': '5201' };
  suite.spawnIn(ps, 1, ['iperf3', '-s', '-p', '5202']);
  await sleep(1000);
  /** what one turn of a path counts; a round sums its turns */
  interface Turn {
    units: number; ms: number; wg: number; agents: number; machine: number; flows: number; lost: number; podUs: number;
    tun: number; tunRx: number; underlay: number; retrans: number; tunDropped: number; vcs: number; ivcs: number; n2Rx: number; n2Tx: number; tunBytes: number; vxlan: number; vcs1: number; ivcs1: number;
    /** TCP_CRR's split (crr turns only): wireguard-go user and system µs, softirq µs and NET_RX
     *  runs per CPU, packets both nodes' TUNs sent (tunTx) and both nodes' cilium_vxlan moved */
    wgUser: number; wgSys: number; sirq0: number; sirq1: number; netRx0: number; netRx1: number; tunTx: number; vxBoth: number;
  }
  const zero = (): Turn => ({ units: 0, ms: 0, wg: 0, agents: 0, machine: 0, flows: 0, lost: 0, podUs: 0, tun: 0, tunRx: 0, underlay: 0, retrans: 0, tunDropped: 0, vcs: 0, ivcs: 0, n2Rx: 0, n2Tx: 0, tunBytes: 0, vxlan: 0, vcs1: 0, ivcs1: 0, wgUser: 0, wgSys: 0, sirq0: 0, sirq1: 0, netRx0: 0, netRx1: 0, tunTx: 0, vxBoth: 0 });
  /** packets cilium_vxlan sent and received on both nodes (tunnel routing): a packet of membrane's
   *  encrypted path that took the VXLAN device (and the host's output path or receive path) instead
   *  of from_container's hand-off to cilium_wg0 or from_wireguard's decapsulation */
  /** Tcp RetransSegs of namespace `ns` (/proc/net/snmp as seen from inside it): a crr turn's
   *  `retrans`, the client's and the server's (a lost SYN costs its connection a second, in a 1 s
   *  turn of a one-connection-at-a-time loop most of the turn) */
  const tcpRetrans = (ns: string) => {
    const l = sh(ns, ['cat', '/proc/self/net/snmp']).split('\n').filter((x) => x.startsWith('Tcp:'));
    const i = l[0]?.split(/\s+/).indexOf('RetransSegs') ?? -1;
    return i > 0 ? Number(l[1]?.split(/\s+/)[i] ?? 0) : 0;
  };
  const vxBoth = () => MODE === 'tunnel' ? [n1, n2].reduce((t, ns) => { const c = linkCounts(ns, 'cilium_vxlan'); return t + c.txPackets + c.rxPackets; }, 0) : 0;
  /** --perf-split: perf record -a -g held disabled, enabled for exactly the measure's run */
  const perfWindow = (out: string) => {
    const ctl = `${out}.ctl`, ack = `${out}.ack`;
    for (const f of [ctl, ack]) { try { execFileSync('rm', ['-f', f]); execFileSync('mkfifo', [f]); } catch (e) { throw new Error(`mkfifo ${f}: ${String(e)}`); } }
    const p = spawn('perf', ['record', '-q', '-a', '-g', '-D', '-1', '--control', `fifo:${ctl},${ack}`, '-o', out], { stdio: 'ignore' });
    perfProcs.push(p); // killed by cleanup() if the run fails in between
    // perf opens both FIFOs read-write: our opens do not wait for it, and its acks say it acted
    const cmd = (c: string) => {
      const w = openSync(ctl, 'w'), r = openSync(ack, 'r');
      try { writeSync(w, `${c}\n`); readSync(r, Buffer.alloc(4)); } finally { closeSync(w); closeSync(r); }
    };
    cmd('ping'); // started: its start-up's CPU before the turn's window
    return {
      enable: () => cmd('enable'),
      disable: () => cmd('disable'),
      stop: async () => {
        p.kill('SIGINT');
        if (p.exitCode === null) await new Promise((r) => p.once('exit', r));
        for (const f of [ctl, ack]) rmSync(f, { force: true });
      },
    };
  };
  /** --perf-split: per path, the recorded turns' files, units and machine µs (meta.json) */
  const splitMeta: Partial<Record<Cfg, { files: string[]; units: number; machineUs: number }>> = {};
  const TURN_SECS = 1;
  /** both CPUs' busy time (µs, /proc/stat: user, nice, system, irq, softirq, steal): what a unit of
   *  work costs the machine wherever it ran (wireguard-go, a NAPI or softirq thread, the pods, the
   *  agents), so work moved out of wireguard-go's context is not counted as saved */
  const machineBusy = () => cpuBusyUs(0) + cpuBusyUs(1);
  /** one turn of measure `k` on path `cfg` (TURN_SECS long): its counts, added to `acc` */
  const turn = async (cfg: Cfg, k: Measure, acc: Turn, perfOut?: string, splitOut?: string): Promise<void> => {
    plainRoutes(cfg === 'membrane-plain');
    abFlip(cfg === 'membrane-wg-b');
    const { ns, ip } = target[cfg];
    const wg = wgPids(cfg);
    const tun = tunOfCfg[cfg];
    const h0 = await hubbleCounts();
    // TCP_CRR's split: the counters that take a process (`ip`, `cat` in a namespace) read outside
    // the machine's CPU window, so they do not add to it; perf's start and its file outside too
    const crr = k === 'crr';
    const vb0 = crr ? vxBoth() : 0, rt0 = crr ? tcpRetrans(ns) + tcpRetrans(serverNs[cfg]) : 0;
    const split = splitOut ? perfWindow(splitOut) : undefined;
    const w0 = sum(wg), a0 = sum(agents), tx0 = wgTx(), srv0 = suite.crrServerUs(serverNs[cfg]), t0ms = performance.now(), b0 = machineBusy();
    const l0 = tun ? linkCounts(n1, tun) : undefined, u0 = linkTx(UNDERLAY_LINK), v0 = vxTx(cfg), m0 = tun ? linkCounts(n2, tun) : undefined, cs0 = cswitches(wg), c10 = cswitches(wg.slice(0, 1));
    const ts0 = crr ? ticksSplit(wg) : undefined, sq0 = crr ? softirqs() : undefined;
    split?.enable();
    let units: number;
    if (k === 'stream') {
      const perf = perfOut ? spawn('perf', ['record', '-q', ...perfArgs, '-o', perfOut, ...(opt.own['perf-all'] === 'on' || WAKEUPS ? ['-a'] : ['-p', wg.join(',')]), '--', 'sleep', String(TURN_SECS)], { stdio: 'ignore' }) : undefined;
      const j = JSON.parse(suite.runIn(ns, 0, ['iperf3', '-c', ip, '-p', iperfPort[cfg], '-t', String(TURN_SECS), '-J'])) as { end: { sum_received: { bytes: number }; sum_sent: { retransmits?: number } } };
      units = j.end.sum_received.bytes / 2 ** 20;
      split?.disable();
      acc.retrans += j.end.sum_sent.retransmits ?? 0;
      if (l0 && m0) {
        const l1 = linkCounts(n1, tun!), m1 = linkCounts(n2, tun!);
        acc.tun += l1.txPackets - l0.txPackets;
        acc.tunBytes += l1.txBytes - l0.txBytes;
        acc.tunRx += l1.rxPackets - l0.rxPackets;
        acc.tunDropped += l1.txDropped - l0.txDropped;
        acc.n2Rx += m1.rxPackets - m0.rxPackets;
        acc.n2Tx += m1.txPackets - m0.txPackets;
      }
      acc.underlay += linkTx(UNDERLAY_LINK) - u0;
      acc.vxlan += vxTx(cfg) - v0;
      const cs1 = cswitches(wg);
      acc.vcs += cs1.voluntary - cs0.voluntary;
      acc.ivcs += cs1.involuntary - cs0.involuntary;
      // node1's wireguard-go alone (the sender's side: encrypts the data, writes the ACKs to its TUN)
      const c11 = cswitches(wg.slice(0, 1));
      acc.vcs1 += c11.voluntary - c10.voluntary;
      acc.ivcs1 += c11.involuntary - c10.involuntary;
      if (perf && perf.exitCode === null) await new Promise((r) => perf.once('exit', r));
      // the threads of each node's wireguard-go of the path (node1's first), for wakeSummary
      if (perfOut) wgTids[cfg] = wg.map((pid) => { try { return new Set(readdirSync(`/proc/${pid}/task`)); } catch { return new Set<string>(); } });
    } else {
      const perf = perfOut ? spawn('perf', ['record', '-q', ...perfArgs, '-o', perfOut, ...(opt.own['perf-all'] === 'on' || WAKEUPS ? ['-a'] : ['-p', wg.join(',')]), '--', 'sleep', String(TURN_SECS)], { stdio: 'ignore' }) : undefined;
      const probe = BPF_STATS && k === 'crr';
      if (probe) { bpfProbe.before(); evProbe.before(); }
      const [rate, clientUs] = rr(ns, ip, k, TURN_SECS);
      units = rate * TURN_SECS;
      split?.disable();
      if (crr) {
        const ts1 = ticksSplit(wg), sq1 = softirqs(), cs1 = cswitches(wg);
        acc.wgUser += (ts1.user - ts0!.user) * 10_000;
        acc.wgSys += (ts1.sys - ts0!.sys) * 10_000;
        acc.sirq0 += sq1.us[0]! - sq0!.us[0]!;
        acc.sirq1 += sq1.us[1]! - sq0!.us[1]!;
        acc.netRx0 += sq1.netRx[0]! - sq0!.netRx[0]!;
        acc.netRx1 += sq1.netRx[1]! - sq0!.netRx[1]!;
        acc.vcs += cs1.voluntary - cs0.voluntary;
        acc.ivcs += cs1.involuntary - cs0.involuntary;
      }
      if (probe) {
        // wireguard-go's switches per connection (both processes, all threads; of them involuntary)
        const cs = cswitches(wg);
        const sw = `wireguard-go switches per conn ${((cs.voluntary + cs.involuntary - cs0.voluntary - cs0.involuntary) / units).toFixed(1)} (${((cs.involuntary - cs0.involuntary) / units).toFixed(1)} involuntary)`;
        process.stderr.write(`  ${cfg} crr turn (${units.toFixed(0)} conns): ${sw}${cfg.startsWith('membrane') ? `; ${bpfProbe.after(units)}; ${evProbe.after(units)}` : ''}\n`);
      }
      if (perf && perf.exitCode === null) await new Promise((r) => perf.once('exit', r));
      if (k === 'crr') acc.podUs += clientUs + suite.crrServerUs(serverNs[cfg]) - srv0;
      if (perfOut) wgTids[cfg] = wg.map((pid) => { try { return new Set(readdirSync(`/proc/${pid}/task`)); } catch { return new Set<string>(); } });
    }
    const sent = wgTx() - tx0;
    if (cfg === 'membrane-plain' && sent > 10) throw new Error(`plain turn ${k}: ${sent} packets went through cilium_wg0`);
    // an encrypted turn that went around the tunnel (no peer yet, or the agent could not set it up) measures nothing
    if (encrypted(cfg) && sent < units) throw new Error(`encrypted turn ${k}: ${sent} packets through cilium_wg0 for ${units.toFixed(0)} units (see the agents' logs)`);
    const machineUs = machineBusy() - b0, t1ms = performance.now();
    acc.machine += machineUs;
    acc.units += units;
    if (crr) {
      if (l0 && m0) acc.tunTx += linkCounts(n1, tun!).txPackets - l0.txPackets + linkCounts(n2, tun!).txPackets - m0.txPackets;
      acc.vxBoth += vxBoth() - vb0;
      acc.retrans += tcpRetrans(ns) + tcpRetrans(serverNs[cfg]) - rt0;
    }
    if (split && splitOut) {
      await split.stop();
      const m = splitMeta[cfg] ??= { files: [], units: 0, machineUs: 0 };
      m.files.push(splitOut);
      m.units += units;
      m.machineUs += machineUs;
    }
    acc.ms += t1ms - t0ms;
    // ticks are 10 ms: µs
    acc.wg += (sum(wg) - w0) * 10_000;
    acc.agents += (sum(agents) - a0) * 10_000;
    const h1 = await hubbleCounts();
    acc.flows += h1.flows - h0.flows;
    acc.lost += h1.lost - h0.lost;
  };
  /** TCP_CRR's split per connection, per round (the Turn fields of the same names, and switches) */
  const SPLIT_KEYS = ['wgUser', 'wgSys', 'sirq0', 'sirq1', 'netRx0', 'netRx1', 'tunTx', 'vxBoth'] as const;
  /** TCP_CRR's retransmissions per round (a count: each is a stall) */
  const crrRetrans = Object.fromEntries(CFGS.map((c) => [c, [] as number[]])) as Record<Cfg, number[]>;
  const crrSplit = Object.fromEntries(CFGS.map((c) => [c, Object.fromEntries([...SPLIT_KEYS, 'cswitch'].map((k) => [k, [] as number[]]))])) as Record<Cfg, Record<(typeof SPLIT_KEYS)[number] | 'cswitch', number[]>>;
  const splitText = (cfg: Cfg, pick: (xs: number[]) => number) => {
    const v = (k: keyof (typeof crrSplit)[Cfg], d = 0) => pick(crrSplit[cfg][k]).toFixed(d);
    return `TCP retransmissions per round ${crrRetrans[cfg].join('/')}; wireguard-go user ${v('wgUser')} µs, system ${v('wgSys')} µs; softirq CPU 0 ${v('sirq0')} µs, CPU 1 ${v('sirq1')} µs; NET_RX runs CPU 0 ${v('netRx0', 1)}, CPU 1 ${v('netRx1', 1)}; wireguard-go switches ${v('cswitch', 1)}; packets both TUNs sent ${v('tunTx', 1)}${MODE === 'tunnel' ? `, cilium_vxlan moved (both nodes, rx + tx) ${v('vxBoth', 2)}` : ''}`;
  };
  /** --perf-sched wakeups: thread ids of each path's wireguard-go pair (node1, node2) in its recorded turn */
  const wgTids: Partial<Record<Cfg, Set<string>[]>> = {};
  /** MiB of the stream turn each path's perf recording covered */
  const perfMiB: Partial<Record<Cfg, number>> = {};
  for (let round = 0; round < opt.rounds; round++) {
    const accs = Object.fromEntries(CFGS.map((c) => [c, { stream: zero(), rr: zero(), crr: zero() }])) as Record<Cfg, Record<Measure, Turn>>;
    for (const k of MEASURES) {
      // the paths in turns of TURN_SECS, each turn's order rotated by one: whatever else runs on the
      // shared machine for a few seconds falls on every path alike, not on one side of a ratio
      for (let t = 0; t < opt.secs / TURN_SECS; t++) {
        for (let i = 0; i < CFGS.length; i++) {
          const cfg = CFGS[(i + t) % CFGS.length]!;
          const last = PERF_DIR && k === PERF_MEASURE && round === opt.rounds - 1;
          const perfOut = !PERF_SPLIT && last && t === opt.secs / TURN_SECS - 1 ? join(PERF_DIR, `${cfg}.data`) : undefined;
          const splitOut = PERF_SPLIT && last ? join(PERF_DIR, `${cfg}.t${t}.data`) : undefined;
          const before = accs[cfg][k].units;
          await turn(cfg, k, accs[cfg][k], perfOut, splitOut);
          if (perfOut) perfMiB[cfg] = accs[cfg][k].units - before;
        }
      }
    }
    for (const cfg of CFGS) {
      const r = suite.results[cfg];
      for (const k of MEASURES) {
        const a = accs[cfg][k];
        if (k === 'stream') r.stream.push((a.units * 2 ** 20 * 8) / 1e9 / (opt.secs));
        else r[k].push(a.units / opt.secs);
        cpu[cfg].wg[k].push(a.wg / a.units);
        cpu[cfg].agents[k].push(a.agents / a.units);
        cpu[cfg].machine[k].push(a.machine / a.units);
        cpu[cfg].agentsPerSec[k].push(a.agents / (a.ms / 1000) / 1000);
        cpu[cfg].flows[k].push(a.flows / a.units);
        cpu[cfg].lost[k].push(a.lost / a.units);
      }
      r.podUs.push(accs[cfg].crr.podUs / accs[cfg].crr.units);
      const s = accs[cfg].stream, p = pkts[cfg];
      p.tun.push(s.tun / s.units);
      p.tunRx.push(s.tunRx / s.units);
      p.underlay.push(s.underlay / s.units);
      p.retrans.push(s.retrans);
      p.tunDropped.push(s.tunDropped);
      p.cswch.push((s.vcs + s.ivcs) / s.units);
      p.ivcs.push(s.ivcs / s.units);
      p.n2Rx.push(s.n2Rx / s.units);
      p.n2Tx.push(s.n2Tx / s.units);
      p.bytesPerPkt.push(s.tun ? s.tunBytes / s.tun : 0);
      p.vxlan.push(s.vxlan / s.units);
      p.cswch1.push((s.vcs1 + s.ivcs1) / s.units);
      p.ivcs1.push(s.ivcs1 / s.units);
      const c = accs[cfg].crr, cs = crrSplit[cfg];
      for (const key of SPLIT_KEYS) cs[key].push(c[key] / c.units);
      cs.cswitch.push((c.vcs + c.ivcs) / c.units);
      crrRetrans[cfg].push(c.retrans);
      process.stderr.write(`round ${round + 1} ${cfg} TCP_CRR per connection: ${splitText(cfg, (xs) => xs.at(-1)!)}\n`);
      process.stderr.write(`round ${round + 1} ${cfg}: stream ${r.stream.at(-1)!.toFixed(3)} Gbit/s, rr ${r.rr.at(-1)!.toFixed(0)}/s, crr ${r.crr.at(-1)!.toFixed(0)}/s; wireguard-go µs per MiB/trans/conn ${MEASURES.map((k) => cpu[cfg].wg[k].at(-1)!.toFixed(0)).join('/')}, agents ${MEASURES.map((k) => cpu[cfg].agents[k].at(-1)!.toFixed(0)).join('/')}, machine ${MEASURES.map((k) => cpu[cfg].machine[k].at(-1)!.toFixed(0)).join('/')} (crr: ${cpu[cfg].agentsPerSec.crr.at(-1)!.toFixed(0)} ms/s, flows ${cpu[cfg].flows.crr.at(-1)!.toFixed(2)} and lost ${cpu[cfg].lost.crr.at(-1)!.toFixed(2)} per conn), client+server µs/conn ${r.podUs.at(-1)!.toFixed(0)}, packets/MiB tun ${p.tun.at(-1)!.toFixed(0)} of ${p.bytesPerPkt.at(-1)!.toFixed(0)} B (acks back ${p.tunRx.at(-1)!.toFixed(0)}; node2 tun rx ${p.n2Rx.at(-1)!.toFixed(0)} tx ${p.n2Tx.at(-1)!.toFixed(0)}; wireguard-go context switches ${p.cswch.at(-1)!.toFixed(0)}, ${p.ivcs.at(-1)!.toFixed(0)} involuntary; node1's ${p.cswch1.at(-1)!.toFixed(0)}, ${p.ivcs1.at(-1)!.toFixed(0)} involuntary) underlay ${p.underlay.at(-1)!.toFixed(0)}${MODE === 'tunnel' ? `, cilium_vxlan skbs ${p.vxlan.at(-1)!.toFixed(1)}` : ''}, stream retransmits ${p.retrans.at(-1)!} (tun tx dropped ${p.tunDropped.at(-1)!}), load ${loadavg()[0]!.toFixed(1)}\n`);
    }
  }
  plainRoutes(false);
  abFlip(false);
  if (PERF_SPLIT) writeFileSync(join(PERF_DIR!, 'meta.json'), JSON.stringify({ mode: MODE, measure: PERF_MEASURE, paths: splitMeta }, null, 1));
  if (AB) {
    // per round B/A: both ran in the same turns of the same lab, so a round's ratio is the A/B
    const ratios = (f: (cfg: Cfg, i: number) => number) => Array.from({ length: opt.rounds }, (_, i) => f('membrane-wg-b', i) / f('membrane-wg', i));
    const fmt = (xs: number[]) => `${median(xs).toFixed(3)} (${xs.map((x) => x.toFixed(3)).join(' / ')})`;
    const what = AB === 'stats' ? 'B: kernel BPF run-time stats held on by the bench (A: as the agent leaves them)' : AB === 'gro' ? `B: cilium_wg0's GRO flush timeout 0 on both nodes (A: ${Number(groA) / 1000} µs)` : 'B: every node\'s mb_wg_peers emptied, pods\' packets forwarded into cilium_wg0 by the host stack (A: from_container hands them over)';
    reportResults([
      `## encryption A/B (${AB})${MODE === 'tunnel' ? ', routing mode tunnel' : ''}`, '',
      `Command: \`${tcpCommand('encryption', opt, `${MODE === 'tunnel' ? ' --routing-mode tunnel' : ''} --ab ${AB}`)}\``, '',
      `${runLine(startLoad)}; one lab, A and B alternating in turns of 1 s (order rotated); ${what}; load average ${loadavg()[0]!.toFixed(2)} at the end.`, '',
      suite.table([{ head: 'A', cfg: 'membrane-wg' }, { head: 'B', cfg: 'membrane-wg-b' }, { head: 'B / A', ratio: ['membrane-wg-b', 'membrane-wg'] }]), '',
      '| B / A per round (median, rounds) | rate | machine CPU per unit (both CPUs) | wireguard-go CPU per unit |',
      '|---|---|---|---|',
      ...MEASURES.map((k) => `| ${k} | ${fmt(ratios((c, i) => suite.results[c][k][i]!))} | ${fmt(ratios((c, i) => cpu[c].machine[k][i]!))} | ${fmt(ratios((c, i) => cpu[c].wg[k][i]!))} |`),
    ], false);
    cleanup(); // process.exit skips the finally
    process.exit(0);
  }

  const table = suite.table([
    { head: 'bare wireguard-go', cfg: 'wg-bare' }, { head: 'bare wireguard-go, via pod veths', cfg: 'wg-bare-pods' },
    { head: 'membrane + WireGuard', cfg: 'membrane-wg' }, { head: 'ratio to bare', ratio: ['membrane-wg', 'wg-bare'] },
    { head: 'ratio to bare via pod veths (like for like)', ratio: ['membrane-wg', 'wg-bare-pods'] },
    ...(BARE_VXLAN ? [{ head: 'bare wireguard-go + kernel VXLAN, via pod veths', cfg: 'wg-bare-vxlan' as const }, { head: 'ratio to bare + VXLAN via pod veths', ratio: ['membrane-wg', 'wg-bare-vxlan'] as [Cfg, Cfg] }, { head: 'bare + VXLAN via pod veths / bare via pod veths', ratio: ['wg-bare-vxlan', 'wg-bare-pods'] as [Cfg, Cfg] }] : []),
    { head: 'membrane, plain text', cfg: 'membrane-plain' }, { head: 'encrypted / plain', ratio: ['membrane-wg', 'membrane-plain'] },
  ]);
  const unit: Record<Measure, string> = { stream: 'TCP_STREAM, per MiB', rr: 'TCP_RR, per transaction', crr: 'TCP_CRR, per connection' };
  const c = (cfg: Cfg, w: 'wg' | 'agents' | 'machine', k: Measure) => median(cpu[cfg][w][k]);
  const cpuTable = [
    '| CPU µs (median) | wireguard-go, bare | wireguard-go, bare via pod veths | wireguard-go, membrane | bare / membrane | bare via pod veths / membrane | agents, bare round | agents, membrane + WireGuard | agents, plain round | machine (both CPUs), bare | machine, bare via pod veths | machine, membrane + WireGuard | machine, bare / membrane |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...MEASURES.map((k) => `| ${unit[k]} | ${c('wg-bare', 'wg', k).toFixed(0)} | ${c('wg-bare-pods', 'wg', k).toFixed(0)} | ${c('membrane-wg', 'wg', k).toFixed(0)} | ${(c('wg-bare', 'wg', k) / c('membrane-wg', 'wg', k)).toFixed(3)} | ${(c('wg-bare-pods', 'wg', k) / c('membrane-wg', 'wg', k)).toFixed(3)} | ${c('wg-bare', 'agents', k).toFixed(0)} | ${c('membrane-wg', 'agents', k).toFixed(0)} | ${c('membrane-plain', 'agents', k).toFixed(0)} | ${c('wg-bare', 'machine', k).toFixed(0)} | ${c('wg-bare-pods', 'machine', k).toFixed(0)} | ${c('membrane-wg', 'machine', k).toFixed(0)} | ${(c('wg-bare', 'machine', k) / c('membrane-wg', 'machine', k)).toFixed(3)} |`),
  ].join('\n');
  const fl = (cfg: Cfg, w: 'agentsPerSec' | 'flows' | 'lost') => median(cpu[cfg][w].crr);
  const agentLine = `The agents during TCP_CRR (median): ${(['wg-bare', 'membrane-wg', 'membrane-plain'] as const).map((cfg) => `${cfg} ${fl(cfg, 'agentsPerSec').toFixed(0)} ms of CPU per second, ${fl(cfg, 'flows').toFixed(2)} flows processed and ${fl(cfg, 'lost').toFixed(2)} events lost per connection`).join('; ')}. Their CPU goes with flows, and flows are capped by the datapath's event budget (bpf-events-default-rate-limit, 1000 events/s per sender): per connection, a faster round loses more events and divides about the same CPU per second by more connections.`;
  // like with like: both tunnels carry the stream in as many packets (TUN) and UDP datagrams (underlay)
  const pk = (cfg: Cfg, w: PktKey) => median(pkts[cfg][w]).toFixed(0);
  const pktLine = `Packets per MiB of TCP_STREAM leaving node1 (median): bare wgb0 ${pk('wg-bare', 'tun')}, underlay ${pk('wg-bare', 'underlay')}; bare via pod veths wgb0 ${pk('wg-bare-pods', 'tun')}, underlay ${pk('wg-bare-pods', 'underlay')}; membrane cilium_wg0 ${pk('membrane-wg', 'tun')}, underlay ${pk('membrane-wg', 'underlay')}; plain round, underlay ${pk('membrane-plain', 'underlay')} (GSO: segments leave the pod's veth as large packets and the underlay as jumbo frames). Coming back through node1's TUN (the receiver's ACKs) per MiB: bare ${pk('wg-bare', 'tunRx')}, bare via pod veths ${pk('wg-bare-pods', 'tunRx')}, membrane ${pk('membrane-wg', 'tunRx')}; bytes per packet on node1's TUN: bare ${pk('wg-bare', 'bytesPerPkt')}, bare via pod veths ${pk('wg-bare-pods', 'bytesPerPkt')}, membrane ${pk('membrane-wg', 'bytesPerPkt')}; node2's TUN per MiB, received (decrypted data) / sent (ACKs): bare ${pk('wg-bare', 'n2Rx')} / ${pk('wg-bare', 'n2Tx')}, bare via pod veths ${pk('wg-bare-pods', 'n2Rx')} / ${pk('wg-bare-pods', 'n2Tx')}, membrane ${pk('membrane-wg', 'n2Rx')} / ${pk('membrane-wg', 'n2Tx')}; wireguard-go context switches (both processes, all threads) per MiB, of them involuntary: bare ${pk('wg-bare', 'cswch')} (${pk('wg-bare', 'ivcs')}), bare via pod veths ${pk('wg-bare-pods', 'cswch')} (${pk('wg-bare-pods', 'ivcs')}), membrane ${pk('membrane-wg', 'cswch')} (${pk('membrane-wg', 'ivcs')}); of them node1's (the sender's side): bare ${pk('wg-bare', 'cswch1')} (${pk('wg-bare', 'ivcs1')}), bare via pod veths ${pk('wg-bare-pods', 'cswch1')} (${pk('wg-bare-pods', 'ivcs1')}), membrane ${pk('membrane-wg', 'cswch1')} (${pk('membrane-wg', 'ivcs1')}).${MODE === 'tunnel' ? ` Skbs node1's cilium_vxlan sent per MiB on membrane's path (each a trip from the pod through the host's output path to cilium_wg0, segmented there; from_container hands a keyed peer's VXLAN to cilium_wg0 itself): ${median(pkts['membrane-wg'].vxlan).toFixed(1)}.` : ''} TCP_STREAM retransmits per round (node1's TUN tx drops): bare ${pkts['wg-bare'].retrans.join('/')} (${pkts['wg-bare'].tunDropped.join('/')}), membrane ${pkts['membrane-wg'].retrans.join('/')} (${pkts['membrane-wg'].tunDropped.join('/')}).`;
  const endLoad = loadavg()[0]!;
  // the two TUN devices must be alike (offloads: vnet_hdr; queues; qdisc) for the comparison to mean anything
  const tunOf = (dev: string) => {
    const l = (JSON.parse(sh(n1, ['ip', '-j', '-d', 'link', 'show', dev])) as { qdisc: string; txqlen: number; linkinfo: { info_data: Record<string, unknown> } }[])[0]!;
    const d = l.linkinfo.info_data;
    return { flags: `pi ${d.pi ? 'on' : 'off'}, vnet_hdr ${d.vnet_hdr ? 'on' : 'off'}, ${String(d.multi_queue ? 'multi_queue' : 'one queue')}`, qdisc: `${l.qdisc} qlen ${l.txqlen}` };
  };
  const [tb, tm] = [tunOf('wgb0'), tunOf('cilium_wg0')];
  if (tb.flags !== tm.flags || tb.qdisc !== tm.qdisc) throw new Error(`the TUN devices differ: wgb0 ${JSON.stringify(tb)}, cilium_wg0 ${JSON.stringify(tm)}`);
  const tunFlags = tb.flags, qdisc = tb.qdisc;
  /** NAPI (IFF_NAPI in tun_flags) and GRO flush timeout of a TUN: the agent opens cilium_wg0 with
   *  both in native routing (src/sys/tun.ts); the bare tunnel's is wireguard-go's own (neither) */
  const napiOf = (dev: string) => {
    const [flags, gro] = execFileSync('ip', ['netns', 'exec', n2, 'cat', `/sys/class/net/${dev}/tun_flags`, `/sys/class/net/${dev}/gro_flush_timeout`], { encoding: 'utf8' }).trim().split('\n').map(Number);
    let threaded = '0';
    try { threaded = execFileSync('ip', ['netns', 'exec', n2, 'cat', `/sys/class/net/${dev}/threaded`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { /* no NAPI */ }
    return (flags! & 0x10) ? `NAPI${threaded !== '0' ? ' (threaded)' : ''} with GRO flush timeout ${gro! / 1000} µs` : 'no NAPI (no GRO)';
  };
  const napiLine = `node2's wgb0: ${napiOf('wgb0')}; cilium_wg0: ${napiOf('cilium_wg0')}`;
  const [rbBare, rbWg] = [rcvbuf(51999), rcvbuf(51871)];
  if (rbBare !== rbWg) throw new Error(`wireguard-go receive buffers differ: bare ${rbBare}, cilium_wg0 ${rbWg}`);
  const wgv = execFileSync('dpkg-query', ['-W', '-f=${Version}', 'wireguard-go'], { encoding: 'utf8' });
  const schedLines = PERF_DIR && WAKEUPS
    ? ['Node1\'s wireguard-go (the sender\'s side) during the last stream turn (perf -a, sched:sched_switch and sched:sched_wakeup), per MiB: its threads woken, by the waking task (the one running when the wake-up was issued: in a softirq, whoever it interrupted) and whether the wakee was queued on the waker\'s CPU; its switch-outs, sleeping or preempted, and by whom:', '',
      ...(['wg-bare', 'wg-bare-pods', 'membrane-wg'] as const).map((cfg) => `- ${cfg}: ${wakeSummary(join(PERF_DIR, `${cfg}.data`), wgTids[cfg] ?? [], perfMiB[cfg] ?? NaN)}`), '']
    : PERF_DIR && opt.own['perf-sched'] === 'on'
    ? ['wireguard-go threads switching out during the last stream turn (perf sched:sched_switch, both processes), by where a thread went to sleep (its kernel stack) or, preempted, who took its CPU:', '',
      ...(['wg-bare', 'wg-bare-pods', 'membrane-wg'] as const).map((cfg) => `- ${cfg}: ${schedSummary(join(PERF_DIR, `${cfg}.data`), perfMiB[cfg] ?? NaN)}`), '']
    : [];
  reportResults([
    MODE === 'tunnel' ? '## encryption, routing mode tunnel' : '## encryption', '',
    `Command: \`${tcpCommand('encryption', opt, MODE === 'tunnel' ? ' --routing-mode tunnel' : '')}\``, '',
    `${runLine(startLoad)}, wireguard-go ${wgv} (userspace: no kernel module). Two-node lab, one lab process per node; bare = a second wireguard-go tunnel between the same node namespaces (no pods, no eBPF); membrane = pod on node1 → pod on node2 (eBPF on both veths) through cilium_wg0, or over the plain underlay route${MODE === 'tunnel' ? ' (routing mode tunnel: VXLAN inside WireGuard, cilium_wg0 MTU 1550)' : ''}. TUN MTU 1500 on both tunnels${MODE === 'tunnel' ? ' but cilium_wg0 in tunnel mode (VXLAN\'s 50 bytes on top of the same 1500-byte pod packet)' : ''}${BARE_VXLAN ? ' and wgb0 with --bare-vxlan (1550 for its VXLAN path, bvx0: VNI 42, UDP 4789, no UDP checksum, between pod-like namespaces as the bare pods\'; its node-to-node route kept at 1500)' : ''}. Client on CPU 0, server on CPU 1, both tunnels' wireguard-go unpinned and started alike (both TUNs ${tunFlags}, qdisc ${qdisc}; ${napiLine}; both UDP sockets sized to ${rbBare} bytes of receive buffer as the agent does for cilium_wg0: wireguard-go 0.0.20220316 leaves the 208 KiB default, and the receiver then drops). The plain round goes around cilium_wg0 by a rule of its own (checked: no packet crosses cilium_wg0). Median of ${opt.rounds} rounds; in a round each measure runs ${opt.secs} s per path, in turns of 1 s with the paths' order rotated every turn; load average ${endLoad.toFixed(2)} at the end.`, '',
    table, '',
    'CPU time per unit of work from /proc/<pid>/stat (10 ms ticks): each path\'s two wireguard-go processes (which also carry the kernel\'s delivery of what they write to the TUN and the underlay) and the lab\'s agent processes (mostly Hubble flows); and from /proc/stat, both CPUs\' busy time (everything: wireguard-go, softirq and NAPI work wherever it ran, client, server, agents).', '',
    cpuTable, '',
    agentLine, '',
    ...(BARE_VXLAN ? [`Bare wireguard-go + kernel VXLAN via pod veths (CPU µs, median): wireguard-go ${MEASURES.map((k) => `${c('wg-bare-vxlan', 'wg', k).toFixed(0)} per ${k === 'stream' ? 'MiB' : k === 'rr' ? 'transaction' : 'connection'}`).join(', ')}; machine ${MEASURES.map((k) => c('wg-bare-vxlan', 'machine', k).toFixed(0)).join(' / ')}; client + server per TCP_CRR connection ${median(suite.results['wg-bare-vxlan'].podUs).toFixed(1)} µs; packets per MiB on wgb0 ${pk('wg-bare-vxlan', 'tun')} of ${pk('wg-bare-vxlan', 'bytesPerPkt')} B, ACKs back ${pk('wg-bare-vxlan', 'tunRx')}.`, ''] : []),
    `Per TCP_CRR connection (median; wireguard-go's system time holds the kernel's delivery in its context, and a softirq a tick lands in is charged to whoever it interrupted as well as to softirq): ${CFGS.filter((cfg) => cfg !== 'membrane-plain').map((cfg) => `${cfg}: ${splitText(cfg, median)}`).join('; ')}.`, '',
    pktLine, '',
    ...schedLines,
  ], opt.append);
} finally {
  cleanup();
}
