/**
 * What the one-connection p99 of bench/http is made of: each slow request (over --slow-us) lined
 * up with what ran on the proxy's CPU while it waited. The proxy (as bench/http runs it, pinned to
 * CPU 1 with all its threads) against HAProxy answering 200 (CPU 0); bench/http/one-conn.c sends one
 * request at a time (as wrk -c1) and prints each slow one's start and latency on CLOCK_MONOTONIC;
 * `perf sched record -k mono -C 1` records CPU 1's context switches meanwhile. A slow request is
 * named by what held CPU 1 for most of it:
 *   proxy main thread   the event loop itself (a GC pause, a long turn)
 *   proxy <comm>        another thread of the proxy (V8Worker: parallel scavenge helpers, concurrent
 *                       marking/sweeping, optimizing compiles), sharing the pinned CPU with the loop
 *   other <comm>        another process on that CPU (on a shared machine, most of them)
 *   idle                nothing: the wait was elsewhere (the origin or the client on CPU 0)
 *
 *   bin/node bench/http/tail.ts [--tree .] [--flags=--single-threaded-gc] [--nice-workers 19] [--secs 5] [--slow-us 1000] [--rules 100] [--list 20]
 * --nice-workers N: the proxy's threads other than its main thread (V8's workers, libuv's pool) at
 * nice N after the warm-up, so that the event loop takes the pinned CPU back from them at once
 * (an experiment on the tail; V8's main thread joins its own GC jobs, so they still finish).
 * Needs root (perf sched) and cc.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchProxyNodeFlags, haproxyCfg, startPinned } from '../support.ts';

const { values } = parseArgs({ options: {
  tree: { type: 'string', default: resolve(import.meta.dirname, '../..') }, flags: { type: 'string', default: '' },
  'nice-workers': { type: 'string' }, secs: { type: 'string', default: '5' }, 'slow-us': { type: 'string', default: '1000' }, rules: { type: 'string', default: '100' }, list: { type: 'string', default: '15' },
} });
const ORIGIN = 18380, PROXY = 18382;
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-httptail-'));
const children: ChildProcess[] = [];

/** [start, end) of each thread's stretch on the CPU (s, CLOCK_MONOTONIC), from perf's sched_switch lines */
function cpuTimeline(data: string): { t0: number; t1: number; pid: number; comm: string }[] {
  const out = execFileSync('perf', ['script', '-i', data, '-F', 'time,event,trace'], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const re = /^\s*([\d.]+):\s+sched:sched_switch: .*==> next_comm=(.*?) next_pid=(\d+)/;
  const segs: { t0: number; t1: number; pid: number; comm: string }[] = [];
  let cur: { t0: number; pid: number; comm: string } | undefined;
  for (const line of out.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const t = Number(m[1]);
    if (cur) segs.push({ ...cur, t1: t });
    cur = { t0: t, pid: Number(m[3]), comm: m[2]! };
  }
  return segs;
}

try {
  const cli = join(dir, 'one-conn');
  execFileSync('cc', ['-O2', '-o', cli, join(import.meta.dirname, 'one-conn.c')]);
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  const tree = resolve(values.tree);
  const flags = [...benchProxyNodeFlags(), ...values.flags.split(' ').filter(Boolean)];
  const proxy = await startPinned(children, 1, join(tree, 'bin/node'), [...flags, join(tree, 'bench/http/proxy-server.ts'), '--port', String(PROXY), '--origin', String(ORIGIN), '--rules', values.rules], 'ready');
  const pid = proxy.pid!; // taskset and bin/node exec: the same process
  execFileSync('wrk', ['-t1', '-c10', '-d2s', `http://127.0.0.1:${PROXY}${PATH}`]); // warm up (JIT, pool)
  const threads = new Map<number, string>();
  for (const t of readdirSync(`/proc/${pid}/task`)) threads.set(Number(t), readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim());
  // the agent stand-in (the proxy's child making the flows, bench/proxy-harness.ts) and its threads
  const agentThreads = new Map<number, string>();
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
      for (const t of readdirSync(`/proc/${c}/task`)) agentThreads.set(Number(t), Number(t) === Number(c) ? 'main thread' : readFileSync(`/proc/${c}/task/${t}/comm`, 'utf8').trim());
    }
  } catch { /* no children file: the stand-in shows as other */ }
  if (values['nice-workers'] !== undefined) {
    for (const tid of threads.keys()) if (tid !== pid) execFileSync('renice', ['-n', values['nice-workers'], '-p', String(tid)], { stdio: 'ignore' });
  }
  /** CPU of the proxy's main thread and of its other threads so far, ms (/proc, 10 ms ticks) */
  const threadCpu = () => {
    let main = 0, rest = 0;
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const st = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const ms = (Number(f[11]) + Number(f[12])) * 10;
      if (Number(t) === pid) main += ms; else rest += ms;
    }
    return { main, rest };
  };
  const data = join(dir, 'sched.data');
  // perf itself on CPU 0 (with the client): unpinned, it held the proxy's CPU during 448 of 2390 slow requests
  const perf = spawn('taskset', ['-c', '0', 'perf', 'sched', 'record', '-k', 'mono', '-C', '1', '-o', data, '--', 'sleep', String(Number(values.secs) + 3)], { stdio: 'ignore' });
  children.push(perf);
  await new Promise((r) => setTimeout(r, 1500)); // perf records before the first request
  const c0 = threadCpu();
  const res = execFileSync('taskset', ['-c', '0', cli, String(PROXY), values.secs, values['slow-us'], PATH]).toString();
  const c1 = threadCpu();
  await new Promise<void>((r) => perf.once('exit', () => r()));
  const segs = cpuTimeline(data);
  const slow = [...res.matchAll(/^slow (\d+) (\d+)$/gm)].map((m) => ({ t0: Number(m[1]) / 1e9, d: Number(m[2]) / 1e9 }));
  const summary = res.split('\n').find((l) => l.startsWith('n ')) ?? '';
  const nameOf = (s: { pid: number; comm: string }) =>
    s.pid === pid ? 'proxy main thread' : threads.has(s.pid) ? `proxy ${threads.get(s.pid)}` : agentThreads.has(s.pid) ? `agent stand-in ${agentThreads.get(s.pid)}` : s.pid === 0 ? 'idle' : `other ${s.comm}`;
  const byCause = new Map<string, { n: number; ms: number }>();
  const held = new Map<string, number>();
  const listed: string[] = [];
  let i = 0, covered = 0;
  for (const r of slow) {
    const t1 = r.t0 + r.d;
    if (!segs.length || r.t0 < segs[0]!.t0 || t1 > segs.at(-1)!.t1) continue;
    covered++;
    while (i < segs.length && segs[i]!.t1 <= r.t0) i++;
    const on = new Map<string, number>();
    for (let j = i; j < segs.length && segs[j]!.t0 < t1; j++) {
      const s = segs[j]!;
      const ov = Math.min(s.t1, t1) - Math.max(s.t0, r.t0);
      if (ov > 0) on.set(nameOf(s), (on.get(nameOf(s)) ?? 0) + ov);
    }
    const sorted = [...on].sort((a, b) => b[1] - a[1]);
    const top = sorted[0]?.[0] ?? 'idle';
    const c = byCause.get(top) ?? { n: 0, ms: 0 };
    c.n++; c.ms += r.d * 1000;
    byCause.set(top, c);
    for (const [k, v] of on) held.set(k, (held.get(k) ?? 0) + v * 1000);
    listed.push(`${(r.d * 1000).toFixed(3).padStart(8)} ms: ${sorted.map(([k, v]) => `${k} ${(v * 1000).toFixed(2)}`).join(', ')}`);
  }
  const n0 = Number(/^n (\d+)/m.exec(res)?.[1] ?? 0);
  console.log(`proxy ${tree} ${flags.join(' ')}${values['nice-workers'] !== undefined ? ` (other threads at nice ${values['nice-workers']})` : ''}\nload ${readFileSync('/proc/loadavg', 'utf8').trim()}\n${summary}`);
  console.log(`proxy CPU per request: main thread ${((c1.main - c0.main) * 1000 / n0).toFixed(1)} µs, other threads ${((c1.rest - c0.rest) * 1000 / n0).toFixed(1)} µs`);
  console.log(`${slow.length} requests over ${values['slow-us']} µs (${covered} inside the recorded window), by what held CPU 1 for most of each:`);
  for (const [k, v] of [...byCause].sort((a, b) => b[1].n - a[1].n)) console.log(`  ${String(v.n).padStart(5)} x (${v.ms.toFixed(1)} ms of latency): ${k}`);
  console.log('CPU 1 time during the slow requests (ms):');
  for (const [k, v] of [...held].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${v.toFixed(1).padStart(8)}  ${k}`);
  const n = Number(values.list);
  if (n > 0) {
    console.log(`the ${n} slowest:`);
    for (const l of listed.sort((a, b) => parseFloat(b) - parseFloat(a)).slice(0, n)) console.log(`  ${l}`);
  }
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
