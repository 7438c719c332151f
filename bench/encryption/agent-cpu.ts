// Where membrane's own processes spend CPU per encrypted TCP_CRR connection: a two-node lab with
// WireGuard, a quiet window then a TCP_CRR window (client pod on node1 → server pod on node2), the
// CPU of every process of the lab (agents by thread, proxies, etcd, wireguard-go, relay) in both,
// as ms per second and µs per connection; with --perf DIR, `perf record -g` of the agents during
// the CRR window (their kernel and native frames; the agents' JS is in --profile DIR's V8 CPU
// profiles, written when the lab goes down). Counts, not rates: run it under `/work/wt/cpu work`.
//   bin/node bench/encryption/agent-cpu.ts [--routing-mode tunnel|native] [--secs 10] [--perf DIR] [--profile DIR] [--windows crr:20,quiet:10,crr:10,crr:10]
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hubbleMetricsText } from './hubble-metrics.ts';
import { placeBenchPods } from './pods.ts';
import { createTcpSuite } from '../tcp-suite.ts';

type Kind = 'quiet' | 'crr' | 'stream';

const { values } = parseArgs({ options: { 'routing-mode': { type: 'string', default: 'tunnel' }, secs: { type: 'string', default: '10' }, perf: { type: 'string', default: '' }, profile: { type: 'string', default: '' }, windows: { type: 'string', default: 'crr:20,quiet:10,crr:10,crr:10' } } });
const WINDOWS = values.windows!;
const MODE = values['routing-mode']!;
const SECS = Number(values.secs);
const repo = fileURLToPath(new URL('../..', import.meta.url));
const lab = `bac${process.pid % 10000}`;
const stateDir = `/run/membrane-bench/${lab}`;
const env = { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: stateDir, MEMBRANE_HUBBLE_RELAY_PORT: '0', NO_COLOR: '1', ...(values.profile ? { MEMBRANE_AGENT_CPU_PROFILE: values.profile } : {}) };
const membrane = (args: string[]) => execFileSync(join(repo, 'bin/membrane'), args, { env, encoding: 'utf8', timeout: 300_000 });
const sh = (ns: string, cmd: string[]) => execFileSync('nsenter', ['--net=/run/netns/' + ns, ...cmd], { encoding: 'utf8' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const suite = createTcpSuite(['membrane'], SECS);

/** every process of the lab: its command line names the lab's state dir (agents, proxies, etcd, relay, wireguard-go's supervisor) */
function labProcs(): Map<number, string> {
  const out = new Map<number, string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const c = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const comm = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      if (!c.some((a) => a.includes(stateDir) || a.includes(lab))) continue;
      if (comm === 'nsenter' || comm === 'sh' || comm === 'unshare') continue;
      const script = c.find((a) => /\.(ts|js)$/.test(a))?.split('/').pop();
      const node = /node(\d)/.exec(c.join(' '))?.[0] ?? '';
      out.set(Number(d), `${comm}${script ? ` ${script}` : ''}${node ? ` ${node}` : ''}`);
    } catch { /* gone */ }
  }
  // wireguard-go runs under the agent with a pid file per node
  for (const n of ['node1', 'node2']) {
    try { out.set(Number(readFileSync(join(stateDir, 'nodes', n, 'wireguard', 'wireguard-go.pid'), 'utf8').trim()), `wireguard-go ${n}`); } catch { /* none */ }
  }
  return out;
}
/** CPU ticks (10 ms) of each thread of `pid`, by thread name */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const t = f.slice(f.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + Number(t[11]) + Number(t[12]));
    } catch { /* gone */ }
  }
  return out;
}
function snapshot(pids: Map<number, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [pid, what] of pids) {
    const th = threadTicks(pid);
    // (a supervisor's command line names the agent's script too: keyed by pid)
    if (/node-agent/.test(what)) for (const [n, t] of th) out.set(`${what} ${pid} [${n}]`, t);
    else out.set(`${what} ${pid}`, [...th.values()].reduce((a, b) => a + b, 0));
  }
  return out;
}
const diff = (a: Map<string, number>, b: Map<string, number>) => new Map([...b].map(([k, v]) => [k, v - (a.get(k) ?? 0)]));

try {
  membrane(['up', '--nodes', '2', '--routing-mode', MODE, '--encryption', 'wireguard', '-q']);
  const { clientNs: pc, serverNs: ps, serverIp: ip } = await placeBenchPods(stateDir, lab, (f) => membrane(['apply', '-f', f]), sh);
  await suite.startServers(ps);
  suite.runIn(pc, 0, [suite.rr, 'crr', ip, '7002', '2']); // the peers' handshake, warm caches
  await sleep(3000);
  const procs = labProcs();
  const agents = [...procs].filter(([, w]) => /node-agent/.test(w)).map(([p]) => p);
  /** one window: CPU by process (thread) over it, and the connections made in it (0: quiet) */
  const window = async (kind: Kind, secs: number, perfOut?: string) => {
    const perf = perfOut ? spawn('perf', ['record', '-q', '-g', '-F', '1999', '-o', perfOut, '-p', agents.join(','), '--', 'sleep', String(secs)], { stdio: 'ignore' }) : undefined;
    const h0 = await hubbleCounts(), l0 = devCounts();
    const s0 = snapshot(procs);
    let conns = 0;
    if (kind === 'quiet') await sleep(secs * 1000);
    else if (kind === 'crr') conns = Number(suite.runIn(pc, 0, [suite.rr, 'crr', ip, '7002', String(secs)]).split(' ')[0]) * secs;
    // a stream's unit: MiB received
    else conns = (JSON.parse(suite.runIn(pc, 0, ['iperf3', '-c', ip, '-p', '5201', '-t', String(secs), '-J'])) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes / 2 ** 20;
    const d = diff(s0, snapshot(procs));
    const h1 = await hubbleCounts(), l1 = devCounts();
    if (perf && perf.exitCode === null) await new Promise((r) => perf.once('exit', r));
    for (const [k, v] of h1) d.set(`hubble ${k} (count)`, (v - (h0.get(k) ?? 0)) / 10);
    for (const [k, v] of l1) d.set(`${k} (count)`, (v - (l0.get(k) ?? 0)) / 10);
    return { kind, secs, conns, d };
  };
  /** both agents' hubble_flows_processed_total by type and hubble_lost_events_total */
  const hubbleCounts = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const n of ['node1', 'node2']) {
      const text = await hubbleMetricsText(stateDir, n);
      for (const line of text.split('\n')) {
        const m = /^(hubble_flows_processed_total|hubble_lost_events_total)\{([^}]*)\} (\S+)/.exec(line);
        if (!m) continue;
        const lab = [...m[2]!.matchAll(/(type|subtype|verdict|source)="([^"]*)"/g)].map((x) => x[2]).join('/');
        const k = `${n} ${m[1] === 'hubble_lost_events_total' ? 'lost' : 'flows'} ${lab}`;
        out.set(k, (out.get(k) ?? 0) + Number(m[3]));
      }
    }
    return out;
  };
  /** packets each device of both nodes sent and received (ip -s link) */
  const devCounts = (): Map<string, number> => {
    const out = new Map<string, number>();
    for (const [n, ns] of [['node1', `${lab}-node1`], ['node2', `${lab}-node2`]] as const) {
      for (const l of JSON.parse(sh(ns, ['ip', '-j', '-s', 'link', 'show'])) as { ifname: string; stats64: { tx: { packets: number; bytes: number }; rx: { packets: number; bytes: number } } }[]) {
        if (l.ifname === 'lo') continue;
        out.set(`${n} ${l.ifname} tx pkts`, l.stats64.tx.packets);
        out.set(`${n} ${l.ifname} rx pkts`, l.stats64.rx.packets);
        out.set(`${n} ${l.ifname} tx bytes`, l.stats64.tx.bytes);
      }
    }
    return out;
  };
  // WINDOWS: "crr:20,quiet:10,crr:10" (perf records the last window)
  const plan = WINDOWS.split(',').map((w) => { const [k, n] = w.split(':'); return { kind: k as Kind, secs: Number(n) }; });
  const lastCrr = plan.length - 1;
  const results: Awaited<ReturnType<typeof window>>[] = [];
  for (let i = 0; i < plan.length; i++) results.push(await window(plan[i]!.kind, plan[i]!.secs, values.perf && i === lastCrr ? join(values.perf, `agents-${MODE}.data`) : undefined));
  console.log(`${MODE}: ${results.map((r) => `${r.kind} ${r.secs} s${r.conns ? ` ${(r.conns / r.secs).toFixed(0)} conn/s` : ''}`).join(', ')}`);
  console.log(`| process [thread] | ${results.map((r) => `${r.kind} ms/s${r.conns ? ' (µs/conn)' : ''}`).join(' | ')} |\n|---|${results.map(() => '---|').join('')}`);
  const isCount = (k: string) => k.endsWith('(count)');
  const keys = [...new Set(results.flatMap((r) => [...r.d.keys()]))].sort((a, b) => Number(isCount(a)) - Number(isCount(b)) || (isCount(a) ? a.localeCompare(b) : (results.at(-1)!.d.get(b) ?? 0) - (results.at(-1)!.d.get(a) ?? 0)));
  // CPU: ms/s (µs per connection or MiB); counts: per second (per connection or MiB)
  const cell = (r: (typeof results)[number], v: number, count = false) => `${((v * 10) / r.secs).toFixed(1)}${r.conns ? ` (${((v * (count ? 10 : 10_000)) / r.conns).toFixed(count ? 2 : 1)})` : ''}`;
  for (const k of keys) {
    if (results.every((r) => !r.d.get(k))) continue;
    console.log(`| ${k} | ${results.map((r) => cell(r, r.d.get(k) ?? 0, k.endsWith('(count)'))).join(' | ')} |`);
  }
  const agentSum = (r: (typeof results)[number]) => [...r.d].filter(([k]) => /node-agent/.test(k) && !k.endsWith('(count)')).reduce((a, [, v]) => a + v, 0);
  console.log(`| agents | ${results.map((r) => cell(r, agentSum(r))).join(' | ')} |`);
} finally {
  suite.kill();
  try { membrane(['down']); } catch { /* best effort */ }
}
