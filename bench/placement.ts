/**
 * Where a bench turn's CPU went, for taking a round's spread apart (bench/http/run.ts and
 * bench/tls/run.ts --detail), and the rule both benches run a disturbed turn again by (QuietTurns):
 * per CPU, /proc/stat's user+system, irq+softirq and idle time; per process, its CPU time, the CPU
 * it last ran on (/proc/PID/stat's processor) and, for the processes named, the run-queue wait of
 * all their threads (/proc/PID/task/TID/schedstat: time runnable but not running). A snapshot is
 * read between turns (the bench's own process does it while nothing is measured).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface CpuTimes { busy: number; irq: number; idle: number }
export interface Snapshot {
  /** per CPU: µs so far */
  cpus: CpuTimes[];
  /** pid → [comm, CPU µs so far, last CPU] */
  procs: Map<number, [string, number, number]>;
  /** named pid → its threads' run-queue wait so far (µs) */
  waits: Map<number, number>;
  /** CPU µs of this process's waited-for children so far (/proc/self/stat cutime + cstime): the load generator run by execFileSync */
  reaped: number;
}

function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** A snapshot of every CPU, every process, and the run-queue wait of `named` (each with all its threads). */
export function snapshot(named: readonly number[]): Snapshot {
  const cpus: CpuTimes[] = [];
  for (const l of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)/.exec(l);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/).map((x) => Number(x) * 10_000);
    // user nice system idle iowait irq softirq steal
    cpus[Number(m[1])] = { busy: f[0]! + f[1]! + f[2]! + f[7]!, irq: f[5]! + f[6]!, idle: f[3]! + f[4]! };
  }
  const procs = new Map<number, [string, number, number]>();
  for (const d of readdirSync('/proc')) {
    const pid = Number(d);
    if (!pid) continue;
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = statFields(s);
      procs.set(pid, [s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')), (Number(f[11]) + Number(f[12])) * 10_000, Number(f[36])]);
    } catch { /* gone meanwhile */ }
  }
  const waits = new Map<number, number>();
  for (const pid of named) {
    let ns = 0;
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[1]);
    } catch { /* gone */ }
    waits.set(pid, ns / 1000);
  }
  const self = statFields(readFileSync('/proc/self/stat', 'utf8'));
  return { cpus, procs, waits, reaped: (Number(self[13]) + Number(self[14])) * 10_000 };
}

/** The threads of `pid` and the CPU each last ran on (`comm@cpu`), to check the pinning held. */
export function threadPlacement(pid: number): string {
  const out: string[] = [];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const s = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      out.push(`${s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'))}@${statFields(s)[36]}`);
    }
  } catch { /* gone */ }
  return out.join(' ');
}

/** CPU time (µs) that processes other than `mine` (and this one) used between `a` and `b`, any CPU. */
export function othersUs(a: Snapshot, b: Snapshot, mine: ReadonlySet<number>): number {
  let us = 0;
  for (const [pid, [, t]] of b.procs) {
    if (mine.has(pid) || pid === process.pid) continue;
    us += t - (a.procs.get(pid)?.[1] ?? t);
  }
  return us;
}

/**
 * What a turn between `a` and `b` (`secs` long) cost: per CPU, ms per s busy (user+system),
 * irq+softirq and idle; each of `known` (label → pids) ms per s and run-queue wait ms per s; the
 * `top` other processes by CPU (comm@lastcpu ms/s).
 */
export function turnLine(a: Snapshot, b: Snapshot, secs: number, known: Record<string, readonly number[]>, top = 3): string {
  const per = (us: number) => (us / 1000 / secs).toFixed(0);
  const cpus = b.cpus.map((c, i) => {
    const o = a.cpus[i]!;
    return `cpu${i} busy ${per(c.busy - o.busy)} irq ${per(c.irq - o.irq)} idle ${per(c.idle - o.idle)}`;
  }).join(', ');
  const mine = new Set<number>();
  const parts: string[] = [];
  for (const [label, pids] of Object.entries(known)) {
    let us = 0, wait = 0;
    for (const p of pids) {
      mine.add(p);
      us += (b.procs.get(p)?.[1] ?? 0) - (a.procs.get(p)?.[1] ?? 0);
      if (b.waits.has(p)) wait += b.waits.get(p)! - (a.waits.get(p) ?? 0);
    }
    parts.push(`${label} ${per(us)} (wait ${per(wait)})`);
  }
  parts.push(`client ${per(b.reaped - a.reaped)}`);
  const others: [string, number][] = [];
  for (const [pid, [comm, us, cpu]] of b.procs) {
    if (mine.has(pid) || pid === process.pid) continue;
    const d = us - (a.procs.get(pid)?.[1] ?? us);
    if (d > 0) others.push([`${comm}/${pid}@${cpu}`, d]);
  }
  others.sort((x, y) => y[1] - x[1]);
  const rest = others.reduce((s, x) => s + x[1], 0);
  return `${cpus} | ${parts.join(', ')} | others ${per(rest)}: ${others.slice(0, top).map(([n, us]) => `${n} ${per(us)}`).join(', ')}`;
}

/**
 * The redo rule of the proxy benches (bench/http/run.ts, bench/tls/run.ts, bench/tls/ab.ts): a
 * turn during which processes other than the bench's own took over `maxMsPerS` of CPU time (any
 * CPU: on CPU 0 they slow the client and origin, on CPU 1 the proxy) is run again, at most
 * `redoMax` times, then kept and counted. Such a process takes half of CPU 1 from HAProxy (one
 * process) but a third from membrane (its proxy and the agent stand-in), which moved a round's
 * ratio by 0.3 (bench/RESULTS.md, i-http12). Idle, the others take 10-90 ms/s here (the
 * container's init, kdamond, kernel threads).
 */
/** what a bench sees of each try: its value, the snapshots around it, its length (s), the others' CPU (ms/s) */
export type OnTry<T> = (value: T, s0: Snapshot, s1: Snapshot, secs: number, othersMsPerS: number) => void;

export class QuietTurns {
  /** turns kept, turns run again, turns kept over the bound after `redoMax` tries */
  turns = 0;
  redone = 0;
  kept = 0;
  readonly #named: readonly number[];
  readonly #mine: ReadonlySet<number>;
  readonly maxMsPerS: number;
  readonly redoMax: number;

  /** `named`: the bench's processes (their CPU is not another's; --detail reports their wait) */
  constructor(named: readonly number[], opts: { maxMsPerS?: number; redoMax?: number } = {}) {
    this.#named = named;
    this.#mine = new Set(named);
    this.maxMsPerS = opts.maxMsPerS ?? 150;
    this.redoMax = opts.redoMax ?? 3;
  }

  /**
   * Runs `turn` (which returns its value and how long it ran, s) until the other processes' CPU
   * over it is under the bound or `redoMax` tries were run again; `onTry` sees every try (--detail).
   */
  run<T>(turn: () => { value: T; secs: number }, onTry?: OnTry<T>): T {
    for (let tries = 0; ; tries++) {
      const s0 = snapshot(this.#named);
      const { value, secs } = turn();
      if (this.#keep(value, s0, secs, tries, onTry)) return value;
    }
  }

  /** run() for a turn that awaits (bench/tls/ab.ts: its proxies report their handshakes by signal and file) */
  async runAsync<T>(turn: () => Promise<{ value: T; secs: number }>, onTry?: OnTry<T>): Promise<T> {
    for (let tries = 0; ; tries++) {
      const s0 = snapshot(this.#named);
      const { value, secs } = await turn();
      if (this.#keep(value, s0, secs, tries, onTry)) return value;
    }
  }

  /** whether the turn since `s0` stands (counted), or is to be run again */
  #keep<T>(value: T, s0: Snapshot, secs: number, tries: number, onTry: OnTry<T> | undefined): boolean {
    const s1 = snapshot(this.#named);
    const others = othersUs(s0, s1, this.#mine) / 1000 / secs;
    onTry?.(value, s0, s1, secs, others);
    if (others > this.maxMsPerS && tries < this.redoMax) { this.redone++; return false; }
    if (others > this.maxMsPerS) this.kept++;
    this.turns++;
    return true;
  }

  /** The counts in words, for a bench's printed notes. */
  summary(): string {
    return `${this.turns} kept, ${this.redone} run again because other processes took over ${this.maxMsPerS} ms/s of CPU meanwhile, ${this.kept} kept over it after ${this.redoMax} tries`;
  }
}
