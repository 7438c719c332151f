/**
 * A/B of two builds of the HTTP proxy in the same run: each tree's bench/http/proxy-server.ts
 * (the production proxy on loopback) pinned to CPU 1 against one origin (HAProxy answering 200,
 * CPU 0, with wrk). Reports req/s and the proxy process's CPU time per request (from /proc:
 * robust on a shared machine), keep-alive (50 conns), one connection and `Connection: close`,
 * interleaved rounds (one connection: bench/http/one-conn.c, one request at a time, each request's
 * own latency; wrk -c1's percentiles are corrected for coordinated omission, see run.ts). Beside them, the proxy's run-queue wait per request and involuntary
 * context switches (/proc schedstat, status): how much of a latency tail is other work on its CPU.
 * With --gc, each proxy runs with --trace-gc and 1 MB semi-spaces and the rows add the garbage per
 * request (what its scavenges freed, KB: short-lived garbage, a lower bound of allocation), which
 * does not depend on how busy the machine is.
 * With --gc-count, each proxy runs with --trace-gc at its own (production) young-generation size
 * and the rows add its scavenges and mark-compacts per 1000 requests and their pause time per
 * request (µs, main thread): what a GC flag changes, beside the CPU it costs.
 *
 *   [MEMBRANE_BENCH_FEED=0] bin/node bench/http/ab.ts --a /path/to/other/tree [--b .] [--secs 5] [--rounds 3] [--rules 100] [--node-flags=--cpu-prof] [--gc | --gc-count] [--probe]
 * --a-flags / --b-flags add V8 flags to one side only (--a and --b may then name the same tree: an A/B of flags).
 * --a-server / --b-server run another server script (path in that tree) on that side, e.g.
 * bench/http/floor-server.ts: Node's own floor for the same traffic (no parsing, policy or records).
 * --a-env / --b-env KEY=VALUE[,KEY=VALUE] set environment variables for that side's proxy only
 * (e.g. --a-env MEMBRANE_BENCH_FLOWS=0: no agent stand-in on A, to see what it adds).
 * With --probe, each proxy runs with bench/http/loop-probe.ts and --cpu-prof: the stretches of its
 * event loop over 1 ms of thread CPU in the measured runs are printed by what ran in them (stalls.ts).
 * By default each proxy runs in its own process as the lab runs it (bench/proxy-harness.ts), and the
 * CPU of its agent stand-in (the proxy's child, making the flows) is shown beside the proxy's;
 * MEMBRANE_BENCH_FEED=0 runs each inside the agent (flows in the proxy's process).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchOwnProcess, treeProxyNodeFlags, haproxyCfg, median, parseWrk, startPinned, cpuUs } from '../support.ts';
import { stallReport } from './stalls.ts';
import { buildOneConn, runOneConn } from './one-conn.ts';

const { values } = parseArgs({ options: {
  a: { type: 'string' }, b: { type: 'string', default: resolve(import.meta.dirname, '../..') },
  secs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, rules: { type: 'string', default: '100' },
  'node-flags': { type: 'string', default: '' }, 'a-flags': { type: 'string', default: '' }, 'b-flags': { type: 'string', default: '' }, 'a-server': { type: 'string', default: 'bench/http/proxy-server.ts' }, 'a-env': { type: 'string', default: '' }, 'b-env': { type: 'string', default: '' }, 'b-server': { type: 'string', default: 'bench/http/proxy-server.ts' }, gc: { type: 'boolean', default: false }, 'gc-count': { type: 'boolean', default: false }, probe: { type: 'boolean', default: false }, modes: { type: 'string', default: 'ka,one,close' },
} });
if (!values.a) throw new Error('--a <tree> is required');
const feed = benchOwnProcess();
const SECS = Number(values.secs), ROUNDS = Number(values.rounds);
const ORIGIN = 18280;
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-httpab-'));
const children: ChildProcess[] = [];
const trees = { A: resolve(values.a), B: resolve(values.b) };
const ports = { A: 18281, B: 18282 };
/** the proxy's main thread: time spent runnable but not running (ns, /proc schedstat) and involuntary switches */
function sched(pid: number): { waitNs: number; nonvol: number } {
  const st = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ');
  const nonvol = Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return { waitNs: Number(st[1]), nonvol };
}
/** CPU of the proxy and its children (by default: the agent stand-in making the flows, on the same CPU), µs */
function treeCpuUs(pid: number): { proxy: number; main: number; children: number } {
  let children = 0;
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) children += cpuUs(Number(c));
  } catch { /* no children file (kernel without CONFIG_PROC_CHILDREN): the proxy alone */ }
  // the main thread alone (the rest: V8's GC and compiler threads, on the same pinned CPU)
  const st = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return { proxy: cpuUs(pid), main: (Number(f[11]) + Number(f[12])) * 10_000, children };
}
const modes = values.modes.split(',') as ('ka' | 'one' | 'close')[];
const args = { ka: ['-c50'], close: ['-c50', '-H', 'Connection: close'] };
try {
  const oneConnBin = buildOneConn(dir);
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  const pid: Record<string, number> = {};
  const freedMB: Record<string, number> = { A: 0, B: 0 };
  /** --gc-count: scavenges, mark-compacts and their pause ms so far, per side */
  const gcs: Record<string, { scav: number; mc: number; ms: number }> = { A: { scav: 0, mc: 0, ms: 0 }, B: { scav: 0, mc: 0, ms: 0 } };
  for (const k of ['A', 'B'] as const) {
    const own = values[k === 'A' ? 'a-flags' : 'b-flags'];
    // each tree's own production flags (its src/lab/names.ts)
    const flags = [...await treeProxyNodeFlags(trees[k]), ...(values['node-flags'] ? values['node-flags'].split(' ') : []), ...(own ? own.split(' ') : [])];
    if (values.gc) flags.push('--trace-gc', '--max-semi-space-size=1', '--min-semi-space-size=1');
    else if (values['gc-count']) flags.push('--trace-gc');
    // the probe (this tree's, for both) and a profile to tell what ran in each stretch
    if (values.probe) {
      flags.push(`--import=${join(trees.B, 'bench/http/loop-probe.ts')}`, '--cpu-prof', `--cpu-prof-dir=${join(dir, `prof-${k}`)}`, '--cpu-prof-interval=250');
      process.env.MEMBRANE_BENCH_PROBE = join(dir, `probe-${k}.json`);
    }
    const env = values[k === 'A' ? 'a-env' : 'b-env'].split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const);
    const saved = env.map(([key]) => [key, process.env[key]] as const);
    for (const [key, v] of env) process.env[key] = v;
    const c = await startPinned(children, 1, join(trees[k], 'bin/node'), [...flags, join(trees[k], values[k === 'A' ? 'a-server' : 'b-server']), '--port', String(ports[k]), '--origin', String(ORIGIN), '--rules', String(values.rules)], 'ready');
    for (const [key, v] of saved) if (v === undefined) delete process.env[key]; else process.env[key] = v;
    pid[k] = c.pid!; // taskset and bin/node exec: the same process
    if (values.gc || values['gc-count']) {
      // --trace-gc lines: `Scavenge 3.1 (5.2) -> 2.0 (5.2) MB, ...`: before minus after is what that GC freed
      let rest = '';
      c.stdout!.on('data', (d: Buffer) => {
        rest += d.toString();
        let i;
        while ((i = rest.indexOf('\n')) >= 0) {
          // scavenges only: a full GC frees old garbage of earlier runs too (the rest survived to it)
          const line = rest.slice(0, i);
          // `..., 0.52 / 0.00 ms  (average mu ...`: the pause on the main thread, then the time in background threads
          const pause = / ([\d.]+) \/ [\d.]+ ms /.exec(line);
          const g = gcs[k]!;
          if (pause && line.includes('Scavenge')) { g.scav++; g.ms += Number(pause[1]); }
          else if (pause && line.includes('Mark-Compact')) { g.mc++; g.ms += Number(pause[1]); }
          const m = line.includes('Scavenge') ? /(\d+(?:\.\d+)?) \(\d+(?:\.\d+)?\) -> (\d+(?:\.\d+)?) \(/.exec(line) : null;
          rest = rest.slice(i + 1);
          if (m) freedMB[k] = (freedMB[k] ?? 0) + Number(m[1]) - Number(m[2]);
        }
      });
    }
  }
  // keep-alive and close (run.ts says why)
  for (const k of ['A', 'B'] as const) {
    execFileSync('wrk', ['-t1', '-c50', '-d2s', `http://127.0.0.1:${ports[k]}${PATH}`]);
    execFileSync('wrk', ['-t1', '-c50', '-d2s', '-H', 'Connection: close', `http://127.0.0.1:${ports[k]}${PATH}`]);
  }
  const rows: Record<string, { rps: number[]; cpu: number[]; bg: number[]; agent: number[]; p50: number[]; p99: number[]; wait: number[]; preempt: number[]; kb: number[]; scav: number[]; mc: number[]; gcUs: number[] }> = {};
  const total: Record<string, number> = { A: 0, B: 0 };
  /** the measured runs of each proxy (µs, CLOCK_MONOTONIC as the probe's) */
  const windows: Record<string, [number, number][]> = { A: [], B: [] };
  const nowUs = () => Number(process.hrtime.bigint() / 1000n);
  for (let r = 0; r < ROUNDS; r++) {
    for (const m of modes) for (const k of ['A', 'B'] as const) {
      const c0 = treeCpuUs(pid[k]!);
      const s0 = sched(pid[k]!);
      const f0 = freedMB[k]!;
      const g0 = { ...gcs[k]! };
      const w0 = nowUs();
      const w = m === 'one'
        ? { ...runOneConn(oneConnBin, ports[k], SECS, PATH), errors: 0 }
        : parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', ...args[m], `-d${SECS}s`, '--latency', `http://127.0.0.1:${ports[k]}${PATH}`]).toString());
      windows[k]!.push([w0, nowUs()]);
      total[k] = (total[k] ?? 0) + w.requests;
      const c1 = treeCpuUs(pid[k]!);
      const cpu = (c1.proxy - c0.proxy) / w.requests, bg = (c1.proxy - c1.main - (c0.proxy - c0.main)) / w.requests, agentCpu = (c1.children - c0.children) / w.requests;
      const s1 = sched(pid[k]!);
      // the GC lines of the run's last moments arrive a little later
      if (values.gc || values['gc-count']) await new Promise((r) => setTimeout(r, 300));
      const kb = ((freedMB[k]! - f0) * 1024) / w.requests;
      const g1 = gcs[k]!;
      const scav = (g1.scav - g0.scav) * 1000 / w.requests, mc = (g1.mc - g0.mc) * 1000 / w.requests, gcUs = (g1.ms - g0.ms) * 1000 / w.requests;
      const wait = (s1.waitNs - s0.waitNs) / 1000 / w.requests, preempt = (s1.nonvol - s0.nonvol) * 1000 / w.requests;
      const row = (rows[`${m} ${k}`] ??= { rps: [], cpu: [], bg: [], agent: [], p50: [], p99: [], wait: [], preempt: [], kb: [], scav: [], mc: [], gcUs: [] });
      row.rps.push(w.rps); row.cpu.push(cpu); row.bg.push(bg); row.agent.push(agentCpu); row.p50.push(w.p50); row.p99.push(w.p99); row.wait.push(wait); row.preempt.push(preempt); row.kb.push(kb); row.scav.push(scav); row.mc.push(mc); row.gcUs.push(gcUs);
      console.error(`round ${r + 1} ${m} ${k}: ${w.rps.toFixed(0)} req/s, ${cpu.toFixed(1)} µs CPU/req (V8 threads ${bg.toFixed(1)})${feed ? ` (+ agent ${agentCpu.toFixed(1)})` : ''}, p50 ${w.p50.toFixed(3)} ms p99 ${w.p99.toFixed(3)} ms, run-queue wait ${wait.toFixed(1)} µs/req, ${preempt.toFixed(1)} preemptions/1000 req${values.gc ? `, garbage ${kb.toFixed(2)} KB/req` : ''}${values['gc-count'] ? `, GC per 1000 req: ${scav.toFixed(2)} scavenges ${mc.toFixed(3)} mark-compacts, GC pause ${gcUs.toFixed(2)} µs/req` : ''}, errors ${w.errors}`);
    }
  }
  console.log(`A = ${trees.A} ${values['a-flags']}\nB = ${trees.B} ${values['b-flags']}\nload ${execFileSync('cat', ['/proc/loadavg']).toString().trim()}`);
  console.log(`requests measured: A ${total.A}, B ${total.B}`);
  for (const [k, v] of Object.entries(rows)) console.log(`${k}: median ${median(v.rps).toFixed(0)} req/s, ${median(v.cpu).toFixed(1)} µs CPU/req (V8 threads ${median(v.bg).toFixed(1)})${feed ? ` (+ agent ${median(v.agent).toFixed(1)})` : ''}, p50 ${median(v.p50).toFixed(3)} ms, p99 ${median(v.p99).toFixed(3)} ms, run-queue wait ${median(v.wait).toFixed(1)} µs/req, ${median(v.preempt).toFixed(1)} preemptions/1000 req${values.gc ? `, garbage ${median(v.kb).toFixed(2)} KB/req` : ''}${values['gc-count'] ? `, GC per 1000 req: ${median(v.scav).toFixed(2)} scavenges ${median(v.mc).toFixed(3)} mark-compacts, GC pause ${median(v.gcUs).toFixed(2)} µs/req` : ''}`);
  if (values.probe) {
    // the proxies write their profile and probe as they exit
    for (const k of ['A', 'B'] as const) {
      const c = children.find((x) => x.pid === pid[k])!;
      await new Promise<void>((r) => { c.once('exit', () => r()); c.kill('SIGTERM'); });
      const prof = readdirSync(join(dir, `prof-${k}`)).find((f) => f.endsWith('.cpuprofile'));
      console.log(`${k}: event-loop stretches in the measured runs (${modes.join(', ')})`);
      for (const l of prof ? stallReport(join(dir, `prof-${k}`, prof), join(dir, `probe-${k}.json`), windows[k]) : ['  no profile written']) console.log(l);
    }
  }
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
