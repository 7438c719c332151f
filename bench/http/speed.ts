/**
 * What a "slow CPU 1" is (issue 18: in a slow stretch membrane's CPU per request rises 1.6-1.8×
 * where HAProxy's rises 1.2-1.35×, bench/RESULTS.md, i-http12 and i-http13). This VM exposes no
 * hardware counters (perf stat: cycles, instructions and cache events `<not supported>`), so the
 * CPU's state is read with a probe instead: bench/http/cpu-probe.c, pinned to CPU 1 (and one on
 * CPU 0), times a fixed multiply chain and pointer chases of 16 KiB to 64 MiB in thread CPU time
 * between the proxies' turns. In each cycle: the probes, then wrk -c50 keep-alive and
 * `Connection: close` for 1 s against HAProxy and membrane in turn (the same placement as run.ts:
 * wrk and the origin on CPU 0, each proxy and its threads on CPU 1), each proxy's CPU per request,
 * CPU 1's steal time (/proc/stat) and the CPU 1 time other processes took. At the end the cycles
 * are split by HAProxy's keep-alive CPU per request (the gauge of a slow CPU 1): the fastest and the
 * slowest third side by side.
 *
 *   bin/node bench/http/speed.ts [--cycles 30] [--rules 100] [--membrane-flags '--max-semi-space-size=2']
 * Investigation only (run it under `cpu work`): its numbers say which resource a slow stretch lacks.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { childrenCpuUs, cpuBusyUs, cpuUs, haproxyCfg, parseWrk, startPinned, treeProxyNodeFlags } from '../support.ts';

const { values } = parseArgs({ options: {
  cycles: { type: 'string', default: '30' }, rules: { type: 'string', default: '100' }, 'membrane-flags': { type: 'string', default: '' }, 'b-flags': { type: 'string', multiple: true },
} });
const REPO = resolve(import.meta.dirname, '../..');
const ORIGIN = 18290, HAPROXY = 18291, MEMBRANE = 18292; // membrane variants: 18292, 18293, ...
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-speed-'));
const children: ChildProcess[] = [];

/** cpuN's steal time so far, µs (/proc/stat's 8th column) */
function stealUs(cpu: number): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `))!;
  return Number(line.trim().split(/\s+/)[8]) * 10_000;
}

/** a process's user and system time so far, µs (/proc/PID/stat, 10 ms ticks) */
function userSys(pid: number): [number, number] {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return [Number(rest[11]) * 10_000, Number(rest[12]) * 10_000];
}

/** a running probe: each call measures once and resolves with its numbers (ns per operation) */
function probe(bin: string, cpu: number): Promise<() => Promise<Record<string, number>>> {
  const c = spawn('taskset', ['-c', String(cpu), bin], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(c);
  const lines = createInterface({ input: c.stdout! })[Symbol.asyncIterator]();
  const next = async () => (await lines.next()).value as string;
  return next().then((ready) => {
    if (ready !== 'ready') throw new Error(`probe: ${ready}`);
    return async () => {
      c.stdin!.write('\n');
      const out: Record<string, number> = {};
      const f = (await next()).split(' ');
      for (let i = 0; i < f.length; i += 2) out[f[i]!] = Number(f[i + 1]);
      return out;
    };
  });
}

try {
  const bin = join(dir, 'cpu-probe');
  execFileSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'cpu-probe.c')]);
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  const hap = await startPinned(children, 1, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'proxy', `frontend fe\n  bind 127.0.0.1:${HAPROXY}\n  default_backend be\nbackend be\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN}\n`)]);
  // membrane with the tree's production flags, and one more membrane per --b-flags (a V8 flag's
  // effect on the CPU per request, paired in each cycle, and on how much a slow stretch hurts it)
  const flags = [...await treeProxyNodeFlags(REPO), ...values['membrane-flags'].split(' ').filter(Boolean)];
  const variants = [flags, ...(values['b-flags'] ?? []).map((f) => [...flags, ...f.split(' ').filter(Boolean)])];
  const mbs: ChildProcess[] = [];
  for (const [i, v] of variants.entries()) mbs.push(await startPinned(children, 1, join(REPO, 'bin/node'), [...v, join(REPO, 'bench/http/proxy-server.ts'), '--port', String(MEMBRANE + i), '--origin', String(ORIGIN), '--rules', values.rules], 'ready'));
  const probe1 = await probe(bin, 1), probe0 = await probe(bin, 0);
  const wrk = (port: number, close: boolean, secs: number) => parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', '-c50', `-d${secs}s`, ...(close ? ['-H', 'Connection: close'] : []), `http://127.0.0.1:${port}${PATH}`]).toString());
  for (const p of [HAPROXY, ...mbs.map((_, i) => MEMBRANE + i)]) { wrk(p, false, 2); wrk(p, true, 2); }
  /** one proxy's 1 s turn: CPU per request (µs, proxy and its children; and the proxy's own user and system time apart), CPU 1's steal and other processes' time (ms/s) */
  const turn = (pid: number, port: number, close: boolean) => {
    const c0 = cpuUs(pid) + childrenCpuUs(pid), u0 = userSys(pid), b0 = cpuBusyUs(1), s0 = stealUs(1), t0 = performance.now();
    const w = wrk(port, close, 1);
    const c1 = cpuUs(pid) + childrenCpuUs(pid), u1 = userSys(pid), b1 = cpuBusyUs(1), s1 = stealUs(1), secs = (performance.now() - t0) / 1000;
    return { us: (c1 - c0) / w.requests, user: (u1[0] - u0[0]) / w.requests, sys: (u1[1] - u0[1]) / w.requests, rps: w.rps, steal: (s1 - s0) / 1000 / secs, other: (b1 - b0 - (c1 - c0)) / 1000 / secs };
  };
  type Probe = Record<string, number>;
  /** a turn with the CPU's state around it: the mean of the probes just before and just after it */
  type Turn = ReturnType<typeof turn> & { who: string; mode: 'ka' | 'close'; cycle: number; state: Probe };
  const who = ['HAProxy', ...variants.map((v, j) => (j === 0 ? 'membrane' : `membrane ${v.slice(flags.length).join(' ')}`))];
  const pids = [hap.pid!, ...mbs.map((m) => m.pid!)], ports = [HAPROXY, ...mbs.map((_, j) => MEMBRANE + j)];
  const turns: Turn[] = [];
  const fmtP = (p: Probe) => Object.entries(p).map(([k, v]) => `${k} ${v.toFixed(k === 'alu' || k === 'l1' ? 2 : 1)}`).join(' ');
  const mid = (a: Probe, b: Probe): Probe => Object.fromEntries(Object.keys(a).map((k) => [k, (a[k]! + b[k]!) / 2]));
  let before = await probe1();
  for (let i = 0; i < Number(values.cycles); i++) {
    const p0 = await probe0();
    // the order rotates every cycle: no proxy always follows the same one
    const order = pids.map((_, j) => (j + i) % pids.length);
    const line: string[] = [];
    for (const mode of ['ka', 'close'] as const) for (const j of order) {
      const t = turn(pids[j]!, ports[j]!, mode === 'close');
      const after = await probe1();
      turns.push({ ...t, who: who[j]!, mode, cycle: i, state: mid(before, after) });
      before = after;
      line.push(`${mode} ${j === 0 ? 'hap' : `mb${j - 1}`} ${t.us.toFixed(1)} (l2 ${turns.at(-1)!.state.l2!.toFixed(1)} alu ${turns.at(-1)!.state.alu!.toFixed(2)})`);
    }
    console.log(`c${i} ${line.join(' ')} | steal ${Math.max(...turns.slice(-2 * pids.length).map((t) => t.steal)).toFixed(0)} other ${Math.max(...turns.slice(-2 * pids.length).map((t) => t.other)).toFixed(0)} ms/s | cpu1 ${fmtP(before)} | cpu0 ${fmtP(p0)}`);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  // turns where other processes took under 150 ms/s of CPU 1 (run.ts's bound; under `cpu work`
  // beside others' work none may be: then all, and the line says so)
  const calm = turns.filter((t) => t.other < 150);
  const kept = calm.length >= turns.length / 2 ? calm : turns;
  console.log(`\n${calm.length} of ${turns.length} turns quiet (other processes under 150 ms/s on CPU 1)${kept === turns ? ', so all are used' : ''}; CPU 1 steal over all turns ${turns.reduce((s, t) => s + t.steal, 0).toFixed(0)} ms/s summed; load ${readFileSync('/proc/loadavg', 'utf8').trim()}; membrane flags ${flags.join(' ')}`);
  // Which part of the CPU's state predicts a slow turn, and for whom: each proxy's turns (per
  // mode) split at the median of one probe measure; the slow half's CPU per request over the fast half's.
  const groups = [...new Set(kept.map((t) => `${t.who} ${t.mode}`))];
  console.log(`\nCPU per request in the turns where CPU 1's probe read above its median, over the turns below it (per proxy and mode, ${kept.length} turns)`);
  console.log(`| split by | ${groups.join(' | ')} |\n|---|${groups.map(() => '---|').join('')}`);
  for (const k of Object.keys(kept[0]!.state)) {
    const cells = groups.map((g) => {
      const ts = kept.filter((t) => `${t.who} ${t.mode}` === g);
      const m = med(ts.map((t) => t.state[k]!));
      const hi = ts.filter((t) => t.state[k]! > m), lo = ts.filter((t) => t.state[k]! <= m);
      return (mean(hi.map((t) => t.us)) / mean(lo.map((t) => t.us))).toFixed(3);
    });
    console.log(`| ${k} | ${cells.join(' | ')} |`);
  }
  // and the gauge the earlier runs used: HAProxy's keep-alive CPU per request in the same cycle;
  // its rows for the proxy's own user and system time apart: which of the two a slow cycle inflates
  const hapKa = new Map(kept.filter((t) => t.who === 'HAProxy' && t.mode === 'ka').map((t) => [t.cycle, t.us]));
  const gm = med([...hapKa.values()]);
  for (const [label, f] of [['', (t: Turn) => t.us], [' (user)', (t: Turn) => t.user], [' (system)', (t: Turn) => t.sys]] as const) {
    console.log(`| HAProxy ka of the cycle${label} | ${groups.map((g) => {
      const ts = kept.filter((t) => `${t.who} ${t.mode}` === g && hapKa.has(t.cycle));
      const hi = ts.filter((t) => hapKa.get(t.cycle)! > gm), lo = ts.filter((t) => hapKa.get(t.cycle)! <= gm);
      return (mean(hi.map(f)) / mean(lo.map(f))).toFixed(3);
    }).join(' | ')} |`);
  }
  console.log(`\n| median CPU per request (µs) | ${groups.map((g) => med(kept.filter((t) => `${t.who} ${t.mode}` === g).map((t) => t.us)).toFixed(1)).join(' | ')} |`);
  console.log(`| of which the proxy's user / system | ${groups.map((g) => { const ts = kept.filter((t) => `${t.who} ${t.mode}` === g); return `${med(ts.map((t) => t.user)).toFixed(1)} / ${med(ts.map((t) => t.sys)).toFixed(1)}`; }).join(' | ')} |`);
  // each variant against membrane's production flags in the same cycle (all cycles): the median ratio and in how many it was lower
  for (const v of who.slice(2)) for (const m of ['ka', 'close'] as const) {
    const r = [...Array(Number(values.cycles)).keys()].map((c) => turns.find((t) => t.cycle === c && t.who === v && t.mode === m)!.us / turns.find((t) => t.cycle === c && t.who === 'membrane' && t.mode === m)!.us);
    console.log(`${v} / membrane, ${m} CPU per request: median ${med(r).toFixed(3)}, lower in ${r.filter((x) => x < 1).length} of ${r.length} cycles`);
  }
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
