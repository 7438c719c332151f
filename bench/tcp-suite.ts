/**
 * The transport measures shared by the datapath, cluster and encryption benchmarks: TCP_STREAM
 * (iperf3), TCP_RR and TCP_CRR (bench/datapath/rr.c) from a client network namespace to a server
 * one, client pinned to CPU 0 and server to CPU 1, one round per configuration in turn (or, with
 * alternate(), TCP_RR / TCP_CRR of every configuration in short alternating turns), and the
 * medians as a table of ratios against a baseline of the same run. Each bench keeps its own
 * topology, configurations and description.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { median } from './support.ts';
import { BpfMap } from '../src/sys/bpf.ts';
import { STAT_NAMES, decodePerCpuSum, encodeU32 } from '../src/datapath/linux/codec.ts';

export interface TcpArgs { secs: number; rounds: number; append: boolean; /** a bench's own string options, by name */ own: Record<string, string> }

/**
 * `--secs 3 --rounds 3 [--append]`: seconds per measure, interleaved rounds, write to RESULTS.md;
 * `own` names a bench's own string options with their defaults.
 */
export function tcpArgs(own: Record<string, string> = {}): TcpArgs {
  const extra = Object.fromEntries(Object.entries(own).map(([k, d]) => [k, { type: 'string' as const, default: d }]));
  const { values } = parseArgs({ options: { secs: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, append: { type: 'boolean', default: false }, ...extra } });
  const v = values as Record<string, string | boolean | undefined>;
  return { secs: Number(v.secs), rounds: Number(v.rounds), append: v.append === true, own: Object.fromEntries(Object.keys(own).map((k) => [k, String(v[k])])) };
}

/** The command line of a run as RESULTS.md records it (a bench's own options only when not at their default). */
export const tcpCommand = (bench: string, a: TcpArgs, tail = ''): string => `bin/node bench/${bench}/run.ts --secs ${a.secs} --rounds ${a.rounds}${tail}${a.append ? ' --append' : ''}`;

/** "Run <time> UTC, Node, CPUs, load average at start": the first words of every description. */
export const runLine = (startLoad: number): string =>
  `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), load average ${startLoad.toFixed(2)} at start`;

export type Measure = 'stream' | 'rr' | 'crr';
/**
 * The three rates; `agentUs`: CPU µs of the agent side's processes per TCP_CRR connection;
 * `podUs`: CPU µs of the client and server processes per TCP_CRR connection (on veth pairs the
 * kernel forwards a packet, eBPF programs included, in the context of the process that sent it,
 * so this is the path's work per connection, a measure the machine's load moves far less than rates).
 */
export type Samples = Record<Measure | 'agentUs' | 'podUs', number[]>;

/** CPU time (user + system, every thread) of the live ones of `pids`, in µs. */
export function cpuUs(pids: readonly number[]): number {
  let t = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      t += Number(f[11]) + Number(f[12]);
    } catch { /* gone */ }
  }
  return t * 10_000; // USER_HZ 100
}

/** A process's CPU time (every thread) in µs, from the scheduler's nanosecond count; 0 when gone. */
function schedUs(pid: number | undefined): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1000;
  } catch {
    return 0;
  }
}
/**
 * Something read before and after a configuration's TCP_CRR run (e.g. the eBPF programs' run
 * counts and times): `after` gets the number of connections and returns a line for the progress.
 */
export interface CrrProbe { before(): void; after(conns: number): string }

/**
 * The kernel side of a new connection: each eBPF program attached through the pinned tcx links in
 * `linkDirs` (read at every call: links come and go with a configuration), its runs and run time
 * per TCP_CRR connection (kernel BPF stats, enabled while the caller holds the stats fd). Run time
 * is CPU the programs took, so unlike rates the machine's load moves it little. `lastUs`: the µs
 * per connection of the last `after`.
 */
export function bpfLinkProbe(linkDirs: () => readonly string[]): CrrProbe & { lastUs: number; last: Map<string, { cnt: number; ns: number }> } {
  const progs = () => {
    const out = new Map<string, { cnt: number; ns: number }>();
    for (const dir of linkDirs()) {
      if (!existsSync(dir)) continue;
      const ids = new Set(readdirSync(dir).map((l) => (JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show', 'pinned', join(dir, l)], { encoding: 'utf8' })) as { prog_id: number }).prog_id));
      for (const id of ids) {
        const p = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show', 'id', String(id)], { encoding: 'utf8' })) as { name: string; run_time_ns?: number; run_cnt?: number };
        const e = out.get(p.name) ?? { cnt: 0, ns: 0 };
        e.cnt += p.run_cnt ?? 0;
        e.ns += p.run_time_ns ?? 0;
        out.set(p.name, e);
      }
    }
    return out;
  };
  let progs0 = new Map<string, { cnt: number; ns: number }>();
  const probe = {
    lastUs: 0,
    /** each program's runs and run time between the last before() and after() */
    last: new Map<string, { cnt: number; ns: number }>(),
    before: () => { progs0 = progs(); },
    after: (conns: number) => {
      let total = 0;
      probe.last = new Map();
      const parts = [...progs()].map(([name, e]) => {
        const b = progs0.get(name) ?? { cnt: 0, ns: 0 };
        const cnt = e.cnt - b.cnt, ns = e.ns - b.ns;
        probe.last.set(name, { cnt, ns });
        total += ns / conns;
        return `${name} ${(cnt / conns).toFixed(1)}x${(ns / Math.max(1, cnt)).toFixed(0)} ns`;
      });
      probe.lastUs = total / 1000;
      return `bpf per conn ${probe.lastUs.toFixed(2)} µs: ${parts.join(', ')}`;
    },
  };
  return probe;
}

/**
 * The datapath's monitor events per TCP_CRR connection on each node (`pinDirs`: the nodes' pin
 * directories): those written to the ring (what the agent ingests) and those over a sender's
 * event budget (counted, not written), from the pinned mb_stats counters.
 */
export function eventsProbe(pinDirs: () => readonly string[]): CrrProbe {
  const EVENTS = STAT_NAMES.indexOf('events'), LIMITED = STAT_NAMES.indexOf('eventsRateLimited');
  const read = () => pinDirs().map((d) => {
    if (!existsSync(join(d, 'mb_stats'))) return [0n, 0n];
    const m = BpfMap.fromPin(join(d, 'mb_stats'));
    try {
      return [EVENTS, LIMITED].map((i) => { const v = m.lookup(encodeU32(i)); return v ? decodePerCpuSum(v) : 0n; });
    } finally {
      m.close();
    }
  });
  let before: bigint[][] = [];
  return {
    before: () => { before = read(); },
    after: (conns: number) => 'events per conn ' + read().map(([ev, lim], k) =>
      `node${k + 1} ${(Number(ev! - (before[k]?.[0] ?? 0n)) / conns).toFixed(2)} (+${(Number(lim! - (before[k]?.[1] ?? 0n)) / conns).toFixed(2)} over budget)`).join(', '),
  };
}

/** A column of the table: a configuration's medians, or the ratio of two configurations' medians. */
export type Column<C extends string> = { head: string; cfg: C } | { head: string; ratio: readonly [C, C] };

/** One configuration's path for alternate(): client namespace, server address and its namespace (servers started there). */
export interface Leg<C extends string> { cfg: C; ns: string; ip: string; serverNs: string; probe?: CrrProbe & { lastUs?: number } }

export interface TcpSuite<C extends string> {
  results: Record<C, Samples>;
  /** the rr client / server binary (bench/datapath/rr.c, built for this run) */
  rr: string;
  /** `cmd` in namespace `ns`, pinned to `cpu`; its stdout. */
  runIn(ns: string, cpu: number, cmd: string[]): string;
  /** starts `cmd` in `ns` pinned to `cpu`; killed by `kill()` */
  spawnIn(ns: string, cpu: number, cmd: string[]): ChildProcess;
  /** iperf3 (5201) and the rr servers (7001 RR, 7002 CRR) in `ns` on CPU 1. */
  startServers(ns: string): Promise<void>;
  /** CPU µs so far of the CRR server started in `ns` (0 when none) */
  crrServerUs(ns: string): number;
  /**
   * one round of the three measures of `cfg` from `ns` to `ip`, progress on stderr; `agentPids`:
   * the processes whose CPU per TCP_CRR connection is recorded (the agent and its ring consumer,
   * which share the two CPUs with the connections)
   */
  measure(cfg: C, round: number, ns: string, ip: string, agentPids?: () => readonly number[], crrProbe?: CrrProbe, only?: readonly Measure[]): void;
  /**
   * TCP_RR or TCP_CRR of every leg (a configuration's client and server) in alternating turns of
   * `turnSecs`, `turns` each, the order rotated every turn, summed per configuration into one
   * sample of the round: a few seconds of other work on the shared machine fall on every
   * configuration alike instead of on one configuration's whole measure. For TCP_CRR also the
   * client + server CPU, the agent's CPU and each leg's probe per connection. Returns each
   * configuration's probe µs per connection (the probes' `lastUs`, weighted by connections).
   */
  alternate(kind: 'rr' | 'crr', round: number, legs: readonly Leg<C>[], turns: number, turnSecs: number, agentPids?: () => readonly number[]): Partial<Record<C, number>>;
  table(cols: readonly Column<C>[]): string;
  /** ends every process the suite started and removes the rr binary */
  kill(): void;
}

/**
 * A suite over configurations `cfgs`. `streamDigits`: decimals of Gbit/s (3 where a tunnel runs
 * in user space and the rate is a fraction of a Gbit/s).
 */
export function createTcpSuite<C extends string>(cfgs: readonly C[], secs: number, streamDigits = 2): TcpSuite<C> {
  const rr = `/tmp/mbr-bench-rr-${process.pid}`;
  execFileSync('cc', ['-O2', '-o', rr, join(import.meta.dirname, 'datapath/rr.c')]);
  const procs: ChildProcess[] = [];
  const results = Object.fromEntries(cfgs.map((c) => [c, { stream: [], rr: [], crr: [], agentUs: [], podUs: [] }])) as unknown as Record<C, Samples>;
  /** the CRR server of each namespace servers were started in */
  const crrServers = new Map<string, number | undefined>();
  /** the last one started: the datapath and cluster benches start servers in one namespace */
  let crrServer: number | undefined;
  const nsx = (ns: string, cpu: number, cmd: string[]) => ['--net=/run/netns/' + ns, 'taskset', '-c', String(cpu), ...cmd];
  const runIn = (ns: string, cpu: number, cmd: string[]) => execFileSync('nsenter', nsx(ns, cpu, cmd), { encoding: 'utf8', timeout: 120_000 });
  const spawnIn = (ns: string, cpu: number, cmd: string[]) => {
    const cp = spawn('nsenter', nsx(ns, cpu, cmd), { stdio: ['ignore', 'pipe', 'ignore'] });
    procs.push(cp);
    return cp;
  };
  const ready = (cp: ChildProcess) => new Promise<void>((res, rej) => {
    let out = '';
    const t = setTimeout(() => rej(new Error(`rr server not ready: ${out}`)), 15_000);
    cp.stdout!.on('data', (d: Buffer) => { out += d; if (out.includes('ready')) { clearTimeout(t); res(); } });
    cp.once('exit', (code) => { clearTimeout(t); rej(new Error(`rr server exited ${code}: ${out}`)); });
  });
  const m = (c: C, k: Measure | 'agentUs' | 'podUs') => median(results[c][k]);
  const cell = (col: Column<C>, k: Measure, unit: string, fmt: (x: number) => string) =>
    'cfg' in col ? `${fmt(m(col.cfg, k))} ${unit}` : (m(col.ratio[0], k) / m(col.ratio[1], k)).toFixed(3);
  // the ratio's spread: min-max of the per-round ratios (rounds are interleaved, so round i of
  // both configurations ran under the same conditions)
  const spread = (col: Column<C>, k: Measure) => {
    if ('cfg' in col) return '';
    const a = results[col.ratio[0]][k], b = results[col.ratio[1]][k];
    const rs = a.map((x, i) => x / b[i]!).filter((x) => Number.isFinite(x));
    return rs.length > 1 ? ` (${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)})` : '';
  };
  return {
    results, rr, runIn, spawnIn,
    crrServerUs: (ns) => schedUs(crrServers.get(ns)),
    async startServers(ns) {
      spawnIn(ns, 1, ['iperf3', '-s', '-p', '5201']);
      const rrSrv = spawnIn(ns, 1, [rr, 'server', '7001']);
      const crrSrv = spawnIn(ns, 1, [rr, 'server', '7002']);
      crrServer = crrSrv.pid; // nsenter and taskset exec: the server itself
      crrServers.set(ns, crrServer);
      // iperf3 says nothing we can wait for on a pipe: give it the time the rr servers take and a second
      await Promise.all([ready(rrSrv), ready(crrSrv), new Promise((r) => setTimeout(r, 1000))]);
    },
    measure(cfg, round, ns, ip, agentPids, crrProbe, only = ['stream', 'rr', 'crr']) {
      const r = results[cfg];
      if (only.includes('stream')) {
        const j = JSON.parse(runIn(ns, 0, ['iperf3', '-c', ip, '-p', '5201', '-t', String(secs), '-J'])) as { end: { sum_received: { bits_per_second: number } } };
        r.stream.push(j.end.sum_received.bits_per_second / 1e9);
      }
      if (only.includes('rr')) r.rr.push(Number(runIn(ns, 0, [rr, 'rr', ip, '7001', String(secs)]).split(' ')[0]));
      if (!only.includes('crr')) {
        process.stderr.write(`round ${round + 1} ${cfg}: ${r.stream.length ? `stream ${r.stream.at(-1)!.toFixed(streamDigits)} Gbit/s` : ''}${only.includes('rr') ? `, rr ${r.rr.at(-1)!.toFixed(0)}/s` : ''}, load ${loadavg()[0]!.toFixed(1)}\n`);
        return;
      }
      const pids = agentPids?.() ?? [];
      const cpu0 = cpuUs(pids);
      const srv0 = schedUs(crrServer);
      crrProbe?.before();
      const [rate, clientUs] = runIn(ns, 0, [rr, 'crr', ip, '7002', String(secs)]).split(' ').map(Number) as [number, number];
      r.crr.push(rate);
      r.podUs.push((clientUs + schedUs(crrServer) - srv0) / (rate * secs));
      const agent = pids.length ? ` (agent ${((cpuUs(pids) - cpu0) / (r.crr.at(-1)! * secs)).toFixed(1)} µs CPU/conn)` : '';
      if (pids.length) r.agentUs.push((cpuUs(pids) - cpu0) / (r.crr.at(-1)! * secs));
      const probe = crrProbe ? `; ${crrProbe.after(rate * secs)}` : '';
      process.stderr.write(`round ${round + 1} ${cfg}: stream ${r.stream.at(-1)!.toFixed(streamDigits)} Gbit/s, rr ${r.rr.at(-1)!.toFixed(0)}/s, crr ${r.crr.at(-1)!.toFixed(0)}/s (pods ${r.podUs.at(-1)!.toFixed(1)} µs CPU/conn)${agent}, load ${loadavg()[0]!.toFixed(1)}${probe}\n`);
    },
    alternate(kind, round, legs, turns, turnSecs, agentPids) {
      const acc = new Map(legs.map((l) => [l.cfg, { n: 0, secs: 0, podUs: 0, agentUs: 0, probeUs: 0 }]));
      const pids = agentPids?.() ?? [];
      for (let t = 0; t < turns; t++) {
        for (let i = 0; i < legs.length; i++) {
          const l = legs[(i + t) % legs.length]!;
          const a = acc.get(l.cfg)!;
          const cpu0 = cpuUs(pids), srv0 = schedUs(crrServers.get(l.serverNs));
          if (kind === 'crr') l.probe?.before();
          const [rate, clientUs] = runIn(l.ns, 0, [rr, kind, l.ip, kind === 'rr' ? '7001' : '7002', String(turnSecs)]).split(' ').map(Number) as [number, number];
          const n = rate * turnSecs;
          a.n += n;
          a.secs += turnSecs;
          if (kind !== 'crr') continue;
          a.podUs += clientUs + schedUs(crrServers.get(l.serverNs)) - srv0;
          a.agentUs += cpuUs(pids) - cpu0;
          if (l.probe) {
            l.probe.after(n);
            a.probeUs += (l.probe.lastUs ?? 0) * n;
          }
        }
      }
      const out: Partial<Record<C, number>> = {};
      for (const l of legs) {
        const a = acc.get(l.cfg)!, r = results[l.cfg];
        r[kind].push(a.n / a.secs);
        let line = `${kind} ${(a.n / a.secs).toFixed(0)}/s`;
        if (kind === 'crr') {
          r.podUs.push(a.podUs / a.n);
          if (pids.length) r.agentUs.push(a.agentUs / a.n);
          line += ` (pods ${(a.podUs / a.n).toFixed(1)} µs CPU/conn${pids.length ? `, agent ${(a.agentUs / a.n).toFixed(1)}` : ''}${l.probe ? `, probe ${(a.probeUs / a.n).toFixed(2)} µs/conn` : ''})`;
          if (l.probe) out[l.cfg] = a.probeUs / a.n;
        }
        process.stderr.write(`round ${round + 1} ${l.cfg}: ${line} in ${turns} turns of ${turnSecs} s, load ${loadavg()[0]!.toFixed(1)}\n`);
      }
      return out;
    },
    table(cols) {
      const row = (label: string, k: Measure, unit: string, fmt: (x: number) => string) =>
        `| ${label} | ${cols.map((c) => cell(c, k, unit, fmt) + spread(c, k)).join(' | ')} |`;
      const agentRow = cols.some((c) => 'cfg' in c && results[c.cfg].agentUs.length > 0)
        ? [`| agent CPU per TCP_CRR connection | ${cols.map((c) => ('cfg' in c && results[c.cfg].agentUs.length ? `${m(c.cfg, 'agentUs').toFixed(1)} µs` : '')).join(' | ')} |`]
        : [];
      return [
        `| test | ${cols.map((c) => c.head).join(' | ')} |`,
        `|---|${cols.map(() => '---|').join('')}`,
        row('TCP_STREAM (iperf3)', 'stream', 'Gbit/s', (x) => x.toFixed(streamDigits)),
        row('TCP_RR (1 B req/resp)', 'rr', 'trans/s', (x) => x.toFixed(0)),
        row('TCP_CRR (connect+1 B+RST close)', 'crr', 'conn/s', (x) => x.toFixed(0)),
        `| client + server CPU per TCP_CRR connection | ${cols.map((c) => ('cfg' in c ? `${m(c.cfg, 'podUs').toFixed(1)} µs` : (m(c.ratio[0], 'podUs') / m(c.ratio[1], 'podUs')).toFixed(3))).join(' | ')} |`,
        ...agentRow,
      ].join('\n');
    },
    kill() {
      for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
      rmSync(rr, { force: true });
    },
  };
}
