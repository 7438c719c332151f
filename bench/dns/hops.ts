/**
 * Where a DNS query's time goes at one query outstanding, hop by hop, in a lab kept by
 * `bench/dns/run.ts --keep` (root; perf with the sched and syscalls tracepoints). bench/dns/lat.ts
 * runs in the pod while `perf record -a` takes every context switch and wake-up and the datagram
 * syscalls of the machine; each query is then followed through its processes:
 *
 *   proxied  client sendmsg ─► proxy wakes, recvmmsg ─► (JS) ─► sendmmsg upstream ─► dnsmasq recvmsg
 *            ─► dnsmasq sendmsg ─► proxy recvmsg ─► (JS) ─► sendmmsg to the client ─► client recvmsg
 *   direct   client sendmsg ─► dnsmasq recvmsg ─► dnsmasq sendmsg ─► client recvmsg
 *
 * and the median and mean of each hop are printed, with how long the proxy ran on after each send
 * before it slept (on the CPU its wakee was put on, that time is the wakee's wait) and how often
 * the wakee shared its CPU. Tracepoints cost ~1 µs each: read the hops against each other and
 * against the direct path of the same run, not as absolute numbers.
 *
 *   bin/node bench/dns/hops.ts --lab LAB --state-dir DIR [--count 3000] [--server IP]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { lab: { type: 'string' }, 'state-dir': { type: 'string' }, count: { type: 'string', default: '3000' }, server: { type: 'string' } } });
if (!values.lab || !values['state-dir']) throw new Error('usage: bench/dns/hops.ts --lab LAB --state-dir DIR [--count N] [--server IP] (a lab kept by bench/dns/run.ts --keep)');
const REPO = resolve(import.meta.dirname, '../..');
const env = { ...process.env, MEMBRANE_LAB: values.lab, MEMBRANE_STATE_DIR: values['state-dir'], NO_COLOR: '1' };
const membrane = (args: string[]) => execFileSync(join(REPO, 'bin/membrane'), args, { env, maxBuffer: 64 << 20 }).toString();
const NAMES = Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab`).join(',');
const pods = JSON.parse(membrane(['get', 'pods', '-n', 'bench', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string } }[] };
const server = values.server ?? pods.items.find((p) => p.metadata.name === 'dnsmasq')!.status!.podIP!;
const proxyPid = readFileSync(join(values['state-dir'], 'nodes', 'node1', 'l7proxy.pid'), 'utf8').trim();
const dir = mkdtempSync(join(tmpdir(), 'bench-dns-hops-'));
const EVENTS = ['sched:sched_switch', 'sched:sched_waking', 'syscalls:sys_enter_sendmmsg', 'syscalls:sys_exit_sendmmsg', 'syscalls:sys_enter_sendmsg',
  'syscalls:sys_enter_recvmsg', 'syscalls:sys_exit_recvmsg', 'syscalls:sys_exit_recvmmsg', 'syscalls:sys_exit_epoll_pwait'];
/** a datagram read: Node's recvmsg, or recvmmsg (the proxy's own reads) */
const READ = 'syscalls:sys_exit_recv';

interface Ev { t: number; tid: string; comm: string; cpu: number; e: string; rest: string }
/** lat.ts in `pod` under perf, `count` queries (after 500 unrecorded); the events, in time order */
function trace(pod: string): Ev[] {
  const lat = ['exec', '-n', 'bench', pod, '--', join(REPO, 'bin/node'), join(REPO, 'bench/dns/lat.ts'), server];
  membrane([...lat, '500', NAMES]);
  const data = join(dir, `${pod}.data`);
  const said = execFileSync('perf', ['record', '-q', '-a', '-o', data, '-e', EVENTS.join(','), '--', join(REPO, 'bin/membrane'), ...lat, values.count!, NAMES], { env, maxBuffer: 64 << 20 }).toString();
  console.log(`${pod}: lat.ts under perf: ${said.trim().split('\n').pop()}`);
  const text = execFileSync('perf', ['script', '-i', data, '-F', 'comm,tid,cpu,time,event,trace'], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const out: Ev[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$/.exec(line);
    if (m && m[1] !== 'perf') out.push({ comm: m[1]!, tid: m[2]!, cpu: Number(m[3]), t: Number(m[4]) * 1e6, e: m[5]!, rest: m[6]! });
  }
  return out;
}
/** the thread that did most of `e` among those named `comm` (and not `not`) */
function busiest(evs: Ev[], comm: string, e: string, not?: string): string {
  const n = new Map<string, number>();
  for (const v of evs) if (v.comm === comm && v.e === e && v.tid !== not) n.set(v.tid, (n.get(v.tid) ?? 0) + 1);
  return [...n.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
}
const ok = (v: Ev) => !v.rest.startsWith('0xf'); // a read that returned a datagram, not -EAGAIN
/**
 * Each query's time stamps: a small state machine over `steps` (thread, event, the mark it sets),
 * restarted at every client send. Beside the steps, for the proxy: when each sendmmsg returned
 * (`<send mark>.done`) and its first switch-out after that (`<send mark>.off`); they may come
 * before or after the wakee's own steps, so they are not steps.
 */
type Step = [who: string, e: string, mark: string];
function follow(evs: Ev[], steps: Step[], sends: string[]): Record<string, number>[] {
  const qs: Record<string, number>[] = [];
  let cur: Record<string, number> | undefined;
  let k = 0;
  let send = '';
  for (const v of evs) {
    if (v.tid === steps[0]![0] && v.e === steps[0]![1]) { cur = { [steps[0]![2]]: v.t, [`${steps[0]![2]}.cpu`]: v.cpu }; k = 1; send = ''; continue; }
    if (!cur) continue;
    if (send && v.tid === proxyPid) {
      if (v.e === 'syscalls:sys_exit_sendmmsg' && cur[`${send}.done`] === undefined) cur[`${send}.done`] = v.t;
      else if (v.e === 'sched:sched_switch' && cur[`${send}.done`] !== undefined && cur[`${send}.off`] === undefined) cur[`${send}.off`] = v.t;
    }
    const s = steps[k]!;
    if (v.tid === s[0] && (s[1] === READ ? v.e.startsWith(READ) && ok(v) : v.e === s[1])) {
      cur[s[2]] = v.t;
      cur[`${s[2]}.cpu`] = v.cpu;
      if (sends.includes(s[2])) send = s[2];
      if (++k === steps.length) { qs.push(cur); cur = undefined; }
    }
  }
  return qs;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
function report(title: string, qs: Record<string, number>[], hops: [string, string, string][]): void {
  console.log(`${title}: ${qs.length} queries`);
  for (const [a, b, what] of hops) {
    const xs = qs.filter((q) => q[a] !== undefined && q[b] !== undefined).map((q) => q[b]! - q[a]!);
    console.log(`  ${what.padEnd(58)} p50 ${median(xs).toFixed(1).padStart(6)} µs  mean ${(xs.reduce((s, x) => s + x, 0) / xs.length).toFixed(1).padStart(6)} µs  (${xs.length})`);
  }
}
try {
  const p = trace('proxied');
  const client = busiest(p, 'MainThread', 'syscalls:sys_enter_sendmsg', proxyPid);
  const dnsmasq = busiest(p, 'dnsmasq', 'syscalls:sys_enter_sendmsg');
  const qp = follow(p, [
    [client, 'syscalls:sys_enter_sendmsg', 'c_send'], [proxyPid, READ, 'p1_recv'], [proxyPid, 'syscalls:sys_enter_sendmmsg', 'p1_send'],
    [dnsmasq, READ, 'd_recv'], [dnsmasq, 'syscalls:sys_enter_sendmsg', 'd_send'],
    [proxyPid, READ, 'p2_recv'], [proxyPid, 'syscalls:sys_enter_sendmmsg', 'p2_send'], [client, READ, 'c_recv'],
  ], ['p1_send', 'p2_send']);
  report(`proxied (client ${client}, proxy ${proxyPid}, dnsmasq ${dnsmasq})`, qp, [
    ['c_send', 'p1_recv', 'client send → proxy has the query (wake, epoll, read)'], ['p1_recv', 'p1_send', 'proxy: query judged, upstream send begins (JS)'],
    ['p1_send', 'p1_send.done', 'proxy: sendmmsg upstream (dnsmasq may run inside it)'], ['p1_send.done', 'p1_send.off', 'proxy runs on after that send'],
    ['p1_send', 'd_recv', 'upstream send → dnsmasq has the query'], ['d_recv', 'd_send', 'dnsmasq answers'],
    ['d_send', 'p2_recv', 'dnsmasq send → proxy has the answer'], ['p2_recv', 'p2_send', 'proxy: answer checked, client send begins (JS)'],
    ['p2_send', 'p2_send.done', 'proxy: sendmmsg to the client (the client may run inside it)'], ['p2_send.done', 'p2_send.off', 'proxy runs on after that send'],
    ['p2_send', 'c_recv', 'answer send → client has the answer'], ['c_send', 'c_recv', 'whole query (client send → client recvmsg)'],
  ]);
  const share = (a: string, b: string) => `${qp.filter((q) => q[`${a}.cpu`] === q[`${b}.cpu`]).length} / ${qp.length}`;
  console.log(`  dnsmasq on the proxy's CPU (upstream send): ${share('p1_send', 'd_recv')}; the client on the proxy's CPU (answer): ${share('p2_send', 'c_recv')}`);
  const d = trace('direct');
  const dclient = busiest(d, 'MainThread', 'syscalls:sys_enter_sendmsg', proxyPid);
  const qd = follow(d, [[dclient, 'syscalls:sys_enter_sendmsg', 'c_send'], [dnsmasq, READ, 'd_recv'], [dnsmasq, 'syscalls:sys_enter_sendmsg', 'd_send'], [dclient, READ, 'c_recv']], []);
  report(`direct (client ${dclient})`, qd, [['c_send', 'd_recv', 'client send → dnsmasq has the query'], ['d_recv', 'd_send', 'dnsmasq answers'], ['d_send', 'c_recv', 'dnsmasq send → client has the answer'], ['c_send', 'c_recv', 'whole query']]);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
