// Where the eBPF programs' time goes in the two-node lab (bench/cluster/lab.ts), by subprogram and
// by the kernel function they call: `perf record -a -g` (cpu-clock: this VM has no hardware
// counters) over TCP_CRR or TCP_RR from the client pod to the server pod, every sample whose call
// chain holds a BPF program attributed to the program it ran in (the outermost BPF frame), the
// subprogram it was in (the innermost) and the kernel function that subprogram called (a helper,
// a map's lookup: the frame below it; `self` for the program's own instructions), with the
// kernel's run counts (BPF stats) to turn shares into ns per run. Shares, not times, are what a
// profile under a shared machine gives; run it under `/work/wt/cpu work`.
//   bin/node bench/cluster/profile.ts [--routing-mode tunnel|native] [--kind crr|rr] [--secs 8] [--freq 9999] [--top 12]
import { execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bpfLinkProbe, createTcpSuite } from '../tcp-suite.ts';
import { enableRunTimeStats, disableRunTimeStats } from '../../src/sys/bpf.ts';
import { clusterCli, clusterLab } from './lab.ts';

const { values } = parseArgs({ options: { 'routing-mode': { type: 'string', default: 'tunnel' }, kind: { type: 'string', default: 'crr' }, secs: { type: 'string', default: '8' }, freq: { type: 'string', default: '9999' }, top: { type: 'string', default: '12' } } });
const mode = values['routing-mode'];
if (mode !== 'tunnel' && mode !== 'native') throw new Error(`--routing-mode ${mode}: tunnel or native`);
const kind = values.kind === 'rr' ? 'rr' : 'crr';
const secs = Number(values.secs), freq = Number(values.freq), top = Number(values.top);
const lab = `bpf${process.pid % 10000}`;
const cli = clusterCli(lab);
const suite = createTcpSuite(['membrane'], secs);
const data = `/tmp/mbr-prof-${process.pid}.data`;

const BPF = /^bpf_prog_[0-9a-f]{16}_(\w+)/;
/** The frames of `perf script`'s samples, leaf first, as symbol names. */
function* samples(text: string): Generator<string[]> {
  let frames: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('\t') || line.startsWith(' ')) {
      const m = /^\s+[0-9a-f]+\s+(\S+)/.exec(line);
      if (m) frames.push(m[1]!.replace(/\+0x[0-9a-f]+$/, ''));
    } else if (frames.length) {
      yield frames;
      frames = [];
    }
  }
  if (frames.length) yield frames;
}

try {
  const { cliNs, srvNs, srvIp } = await clusterLab(lab, mode);
  const probe = bpfLinkProbe(() => [1, 2].map((k) => `/sys/fs/bpf/membrane/${lab}-node${k}/links`));
  enableRunTimeStats();
  await suite.startServers(srvNs);
  suite.runIn(cliNs, 0, [suite.rr, kind, srvIp, kind === 'rr' ? '7001' : '7002', '1']); // warm
  const perf = spawn('perf', ['record', '-a', '-g', '-e', 'cpu-clock', '-F', String(freq), '-o', data, '--', 'sleep', String(secs + 1)], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  probe.before();
  const [rate] = suite.runIn(cliNs, 0, [suite.rr, kind, srvIp, kind === 'rr' ? '7001' : '7002', String(secs)]).split(' ').map(Number) as [number];
  const line = probe.after(rate * secs);
  await new Promise((r) => perf.once('exit', r));
  const text = execFileSync('perf', ['script', '-i', data, '-F', 'ip,sym', '--no-inline'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  // program -> "subprogram > callee" -> samples
  const byProg = new Map<string, Map<string, number>>();
  let all = 0;
  for (const f of samples(text)) {
    all++;
    const idx = f.map((s) => BPF.exec(s)?.[1]);
    const inner = idx.findIndex((n) => n !== undefined);
    if (inner < 0) continue;
    const outer = idx.findLastIndex((n) => n !== undefined);
    const prog = idx[outer]!, sub = idx[inner]!;
    const callee = inner === 0 ? 'self' : f[inner - 1]!;
    const leaf = inner > 1 ? ` … ${f[0]}` : '';
    const m = byProg.get(prog) ?? new Map<string, number>();
    const key = `${sub === prog ? '' : `${sub} > `}${callee}${leaf}`;
    m.set(key, (m.get(key) ?? 0) + 1);
    byProg.set(prog, m);
  }
  process.stdout.write(`${kind} ${rate.toFixed(0)}/s, routing mode ${mode}, ${secs} s, ${all} samples at ${freq} Hz on every CPU\n${line}\n`);
  for (const [prog, m] of [...byProg].sort((a, b) => sum(b[1]) - sum(a[1]))) {
    const n = sum(m), runs = probe.last.get(prog);
    const nsPerSample = 1e9 / freq;
    const perRun = (k: number) => (runs?.cnt ? ` ${((k * nsPerSample) / runs.cnt).toFixed(0)} ns/run` : '');
    process.stdout.write(`\n${prog}: ${n} samples${perRun(n)} by the profile (${runs ? `${(runs.ns / Math.max(1, runs.cnt)).toFixed(0)} ns/run by BPF stats, ${runs.cnt} runs` : 'no stats'})\n`);
    for (const [k, c] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${((100 * c) / n).toFixed(1).padStart(5)} %${perRun(c).padStart(13)}  ${k}\n`);
  }
} finally {
  suite.kill();
  disableRunTimeStats();
  cli.down();
  rmSync(data, { force: true });
}

function sum(m: Map<string, number>): number {
  let n = 0;
  for (const c of m.values()) n += c;
  return n;
}
