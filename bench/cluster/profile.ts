// Where the eBPF programs' time goes in the two-node lab (bench/cluster/lab.ts), by subprogram and
// by the kernel function they call: `perf record -a -g` (cpu-clock: this VM has no hardware
// counters) over TCP_CRR or TCP_RR from the client pod to the server pod, every sample whose call
// chain holds a BPF program attributed to the program it ran in (the outermost BPF frame), the
// subprogram it was in (the innermost) and the kernel function that subprogram called (a helper,
// a map's lookup: the frame below it; `self` for the program's own instructions), with the
// kernel's run counts (BPF stats) to turn shares into ns per run. Shares, not times, are what a
// profile under a shared machine gives; run it under `/work/wt/cpu work`. Only this lab's programs
// count: every lab loads the same object, so a program's symbol (bpf_prog_<tag>_<name>) is the
// same in all of them; the frame's address is not. perf's BPF events (`--show-bpf-events`: each
// program's ksymbols, its main function and subprograms, then its id) give the address ranges of
// the program ids this lab's pinned links hold, and a frame outside them is another lab's.
//   bin/node bench/cluster/profile.ts [--routing-mode tunnel|native] [--kind crr|rr] [--secs 8] [--freq 9999] [--top 12]
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
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
interface Frame { ip: bigint; sym: string }
/** The frames of `perf script`'s samples, leaf first. */
function* samples(text: string): Generator<Frame[]> {
  let frames: Frame[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('\t') || line.startsWith(' ')) {
      const m = /^\s+([0-9a-f]+)\s+(\S+)/.exec(line);
      if (m) frames.push({ ip: BigInt(`0x${m[1]!}`), sym: m[2]!.replace(/\+0x[0-9a-f]+$/, '') });
    } else if (frames.length) {
      yield frames;
      frames = [];
    }
  }
  if (frames.length) yield frames;
}

/** The program ids this lab's pinned links (both nodes) hold. */
function labProgIds(): Set<number> {
  const ids = new Set<number>();
  for (const k of [1, 2]) {
    const dir = `/sys/fs/bpf/membrane/${lab}-node${k}/links`;
    if (!existsSync(dir)) continue;
    for (const l of readdirSync(dir)) ids.add((JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show', 'pinned', join(dir, l)], { encoding: 'utf8' })) as { prog_id: number }).prog_id);
  }
  return ids;
}

/** The address ranges of programs `ids` (main function and subprograms) from perf's BPF events. */
function progRanges(text: string, ids: Set<number>): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  let pending: [bigint, bigint][] = [];
  for (const line of text.split('\n')) {
    const k = /^PERF_RECORD_KSYMBOL addr ([0-9a-f]+) len (\d+) type 1 /.exec(line);
    if (k) {
      const a = BigInt(`0x${k[1]!}`);
      pending.push([a, a + BigInt(k[2]!)]);
      continue;
    }
    const e = /^PERF_RECORD_BPF_EVENT type 1, flags \d+, id (\d+)/.exec(line);
    if (e) {
      if (ids.has(Number(e[1]))) out.push(...pending);
      pending = [];
    }
  }
  return out;
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
  const text = execFileSync('perf', ['script', '-i', data, '-F', 'ip,sym', '--no-inline', '--show-bpf-events'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const ids = labProgIds();
  const own = progRanges(text, ids);
  const mine = (ip: bigint) => own.some(([a, b]) => ip >= a && ip < b);
  // program -> "subprogram > callee" -> samples
  const byProg = new Map<string, Map<string, number>>();
  let all = 0, foreign = 0;
  for (const frames of samples(text)) {
    all++;
    const f = frames.map((x) => x.sym);
    // another lab's program frames are not BPF frames of this profile
    const idx = frames.map((x) => {
      const n = BPF.exec(x.sym)?.[1];
      return n !== undefined && mine(x.ip) ? n : undefined;
    });
    const inner = idx.findIndex((n) => n !== undefined);
    if (inner < 0) {
      if (frames.some((x) => BPF.test(x.sym))) foreign++;
      continue;
    }
    const outer = idx.findLastIndex((n) => n !== undefined);
    const prog = idx[outer]!, sub = idx[inner]!;
    const callee = inner === 0 ? 'self' : f[inner - 1]!;
    const leaf = inner > 1 ? ` … ${f[0]}` : '';
    const m = byProg.get(prog) ?? new Map<string, number>();
    const key = `${sub === prog ? '' : `${sub} > `}${callee}${leaf}`;
    m.set(key, (m.get(key) ?? 0) + 1);
    byProg.set(prog, m);
  }
  process.stdout.write(`${kind} ${rate.toFixed(0)}/s, routing mode ${mode}, ${secs} s, ${all} samples at ${freq} Hz on every CPU; this lab's programs ${[...ids].sort((a, b) => a - b).join(' ')} (${own.length} functions), ${foreign} samples in other labs' programs left out\n${line}\n`);
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
