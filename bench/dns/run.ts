/**
 * DNS proxy benchmark, in a lab (root): dnsmasq in a pod answers the same names two ways in the
 * same run,
 *   direct   a pod without policy queries dnsmasq (not steered: the baseline)
 *   proxied  a pod whose egress policy has DNS rules + toFQDNs: every query goes through the
 *            membrane DNS proxy (policy decision, forward, answer harvest, flows, metrics)
 * Measures:
 *   qps               dnsperf -c 8 -q 64 for SECS seconds (100 names, all answered)
 *   added p50 / p99   one query outstanding (bench/dns/lat.ts, a Node client), proxied minus direct
 *   paced p50 / p99   the same offered rate for both (dnsperf -Q RATE, open loop, a C client
 *                     timing each query: -v), far below both capacities, direct and proxied
 *                     alternated in each round: the latency a user sees at a moderate load
 *   unselected names  one query outstanding for names the DNS rules allow but no toFQDNs selector
 *                     selects (their IPs never get a policy entry: nothing to hold them for)
 *   answer→policy map the proxy's hold for FRESH names (each a new IP: identity, policy-map and
 *                     ipcache writes before release), p50/p99 from GET /v1/dns/proxy
 *
 * CPU per query is the agent's plus the proxy process's (the DNS proxy runs in the L7 proxy
 * process beside the agent; the agent still allocates identities and turns the access records
 * into flows and metrics), each printed per round.
 *
 *   bin/node bench/dns/run.ts [--secs 8] [--rounds 2] [--fresh 400] [--rate 2000] [--append] [--repo DIR] [--perf DIR]
 * With --append the table and the command go to bench/RESULTS.md under `## dns`. --repo runs the
 * membrane of another checkout (an A/B against main with the same bench).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { callAgent } from '../../src/agent/api-client.ts';
import { labPaths } from '../../src/common/paths.ts';
import { buildConfig } from '../../src/common/config.ts';
import { reportResults } from '../support.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' }, fresh: { type: 'string', default: '400' }, rate: { type: 'string', default: '2000' }, append: { type: 'boolean', default: false }, keep: { type: 'boolean', default: false }, repo: { type: 'string' }, perf: { type: 'string' } } });
const PERF = values.perf ? resolve(values.perf) : '';
const SECS = Number(values.secs);
const ROUNDS = Number(values.rounds);
const FRESH = Number(values.fresh);
/** the offered rate of the paced latency measure, q/s (the same for both; far below both capacities) */
const RATE = Number(values.rate);
const REPO = resolve(import.meta.dirname, '../..');
/** the checkout whose membrane runs the lab (this one unless --repo) */
const RUN = values.repo ? resolve(values.repo) : REPO;
const LAB = `dnsbench${process.pid % 10000}`;
const env = { ...process.env, MEMBRANE_LAB: LAB, MEMBRANE_STATE_DIR: join('/run/membrane-bench', LAB), NO_COLOR: '1' };
const paths = labPaths(buildConfig({ env }));
const dir = mkdtempSync(join(tmpdir(), 'bench-dns-'));
const membrane = (args: string[], timeout = 180_000) => execFileSync(join(RUN, 'bin/membrane'), args, { env, timeout, maxBuffer: 64 << 20 }).toString();
const inPod = (pod: string, cmd: string[], timeout = 120_000) => membrane(['exec', '-n', 'bench', pod, '--', ...cmd], timeout);

const NAMES = Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab`);
/** names the DNS rules allow and no toFQDNs selector selects (one IP, a world one) */
const UNSELECTED = Array.from({ length: 100 }, (_, i) => `o${i}.other.lab`);
/** each round's own fresh names (an answer's IP is new only once) */
const freshNames = (round: number) => Array.from({ length: FRESH }, (_, i) => `f${round}x${i}.fresh.lab`);

function apply(objs: object[]): void {
  const f = join(dir, `a${Date.now()}.yaml`);
  writeFileSync(f, objs.map((o) => stringify(o)).join('---\n'));
  membrane(['apply', '-f', f]);
}

/** CPU time (user + system) of a process so far, µs (/proc/PID/stat, 10 ms ticks). */
function cpuUs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * 10_000;
  } catch { return NaN; }
}
const pidOf = (file: string) => Number(readFileSync(file, 'utf8').trim());
/** dnsperf's q/s, and the CPU µs per query each of `pids` spent meanwhile (noise-robust on a shared machine). */
function dnsperf(pod: string, server: string, pids: number[]): { qps: number; cpuPerQ: number; each: number[] } {
  const c0 = pids.map(cpuUs);
  const qps = dnsperfQps(pod, server);
  const each = pids.map((p, i) => (cpuUs(p) - c0[i]!) / (qps * SECS));
  return { qps, cpuPerQ: each.reduce((a, b) => a + b, 0), each };
}
function dnsperfQps(pod: string, server: string, secs = SECS): number {
  const out = inPod(pod, ['dnsperf', '-s', server, '-d', join(dir, 'queries.txt'), '-l', String(secs), '-c', '8', '-q', '64', '-t', '2'], (secs + 60) * 1000);
  const qps = Number(/Queries per second:\s+([0-9.]+)/.exec(out)?.[1]);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0);
  if (lost > 0) console.error(`${pod}: ${lost} queries lost`);
  return qps;
}
/**
 * Latency at RATE q/s offered (dnsperf -Q, 20 outstanding at most, one client), each query timed
 * by dnsperf itself (-v prints its latency): p50 / p99 over the queries of `secs` seconds.
 */
function paced(pod: string, server: string, secs: number): { p50Us: number; p99Us: number; n: number; qps: number } {
  const out = inPod(pod, ['dnsperf', '-s', server, '-d', join(dir, 'queries.txt'), '-l', String(secs), '-c', '1', '-q', '20', '-Q', String(RATE), '-t', '2', '-v'], (secs + 60) * 1000);
  const lat: number[] = [];
  for (const m of out.matchAll(/^> NOERROR \S+ A ([0-9.]+)$/gm)) lat.push(Number(m[1]) * 1e6);
  lat.sort((a, b) => a - b);
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)] ?? NaN;
  return { p50Us: pct(50), p99Us: pct(99), n: lat.length, qps: Number(/Queries per second:\s+([0-9.]+)/.exec(out)?.[1]) };
}
function latency(pod: string, server: string, names: string[], count: number): { p50Us: number; p99Us: number; errors: number } {
  const out = inPod(pod, [join(REPO, 'bin/node'), join(REPO, 'bench/dns/lat.ts'), server, String(count), names.join(',')]);
  return JSON.parse(out.trim().split('\n').pop()!) as { p50Us: number; p99Us: number; errors: number };
}
/** Waits (at most 30 s) until `pids` together used under 5 % of a core for a second. */
async function settle(pids: number[]): Promise<string> {
  const t0 = Date.now();
  const used = () => pids.reduce((a, p) => a + cpuUs(p), 0);
  let last = used(), share = NaN;
  while (Date.now() - t0 < 30_000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = used();
    share = (now - last) / 1e6;
    last = now;
    if (share < 0.05) break;
  }
  return `settled after ${((Date.now() - t0) / 1000).toFixed(0)} s (${(share * 100).toFixed(0)} % of a core in its last second)`;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const startLoad = loadavg().map((x) => x.toFixed(2)).join(' ');
try {
  // --perf DIR: the lab's processes keep a map of their JIT code (/tmp/perf-PID.map) and `perf record`
  // samples the agent and the proxy process during each proxied dnsperf (DIR/perf-rN.data). Not
  // --cpu-prof: its SIGPROF every millisecond interrupts the verifier (BPF_PROG_LOAD: EAGAIN).
  if (PERF) execFileSync(join(RUN, 'bin/membrane'), ['up'], { env: { ...env, NODE_OPTIONS: '--perf-basic-prof --interpreted-frames-native-stack' }, timeout: 180_000 });
  else membrane(['up']);
  writeFileSync(join(dir, 'queries.txt'), NAMES.map((n) => `${n} A`).join('\n') + '\n');
  const hosts: string[] = [];
  for (let r = 0; r < ROUNDS; r++) freshNames(r).forEach((n, i) => { const k = r * FRESH + i + 1; hosts.push(`172.${20 + (k >> 16)}.${(k >> 8) & 255}.${k & 255} ${n}`); });
  writeFileSync(join(dir, 'fresh.hosts'), hosts.join('\n') + '\n');
  const dnsmasq = ['dnsmasq', '-k', '--conf-file=/dev/null', '--port=53', '--no-resolv', '--no-hosts', `--addn-hosts=${join(dir, 'fresh.hosts')}`,
     '--address=/bench.lab/198.51.100.77', '--address=/other.lab/198.51.100.99', '--user=root', `--pid-file=${join(dir, 'dnsmasq.pid')}`, '--cache-size=10000', '--local-ttl=300'];
  const pod = (name: string, app: string, extra: object = {}) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'bench', labels: { app } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl', ...extra }] } });
  apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } },
    pod('dnsmasq', 'dnsmasq', { command: dnsmasq }), pod('direct', 'direct'), pod('proxied', 'proxied'),
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'proxied', namespace: 'bench' },
      spec: {
        endpointSelector: { matchLabels: { app: 'proxied' } },
        egress: [
          { toEndpoints: [{ matchLabels: { app: 'dnsmasq' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*.bench.lab' }, { matchPattern: '*.fresh.lab' }, { matchPattern: '*.other.lab' }] } }] },
          { toFQDNs: [{ matchPattern: '*.bench.lab' }, { matchPattern: '*.fresh.lab' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] },
        ],
      },
    },
  ]);
  const pods = JSON.parse(membrane(['get', 'pods', '-n', 'bench', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string } }[] };
  const server = pods.items.find((p) => p.metadata.name === 'dnsmasq')!.status!.podIP!;
  // warm both paths (and learn the bench.lab IP once: steady state has no holds)
  latency('direct', server, NAMES, 200);
  latency('proxied', server, NAMES, 200);
  latency('proxied', server, UNSELECTED, 200);

  const agentPid = pidOf(paths.agentPidFile('node1'));
  // the L7 proxy process (--external-envoy-proxy, the lab's default): the DNS proxy's home on this branch
  const proxyPidFile = join(paths.nodeDir('node1'), 'l7proxy.pid');
  const proxyPid = existsSync(proxyPidFile) ? pidOf(proxyPidFile) : undefined;
  const dnsmasqPid = pidOf(join(dir, 'dnsmasq.pid'));
  type Hold = { count: number; p50Ms: number; p99Ms: number; maxMs: number };
  type Batching = { batched?: number; recvCalls?: number; sent?: number; sendCalls?: number; timerReads?: number };
  const holdStats = (last: number) => callAgent<{ hold: Hold; holdTimeouts: number } & Batching>(paths.agentSocket('node1'), 'GET', `/v1/dns/proxy?last=${last}`);
  /** datagrams per recvmmsg and per sendmmsg between two reads of the proxy's counters (an older proxy has none: '?') */
  const perCall = (a: Batching, b: Batching): string => {
    const f = (k: 'batched' | 'sent', c: 'recvCalls' | 'sendCalls') => {
      const calls = (b[c] ?? NaN) - (a[c] ?? NaN);
      return calls > 0 ? ((b[k]! - a[k]!) / calls).toFixed(1) : '?';
    };
    const timer = (b.timerReads ?? NaN) - (a.timerReads ?? NaN);
    return `datagrams per recvmmsg ${f('batched', 'recvCalls')}, per sendmmsg ${f('sent', 'sendCalls')}, reads on the coalescing timer ${Number.isNaN(timer) ? '?' : timer}`;
  };
  // Both paths at full rate once before round 1, discarded: the agent's flow path for every
  // datapath event and record, and the proxy's, are cold code until then (on 2026-12-07 dnsmasq
  // answered 48-52k q/s directly in round 1 against 82-94k in round 2, in all four runs of an
  // A/B, with the agent's CPU per proxied query ~1.5 µs higher: round 1's ratio read 0.78-0.87)
  dnsperfQps('direct', server, 2);
  dnsperfQps('proxied', server, 2);
  console.error(await settle([agentPid, ...(proxyPid ? [proxyPid] : []), dnsmasqPid]));
  const rows: { pacedD: ReturnType<typeof paced>; pacedP: ReturnType<typeof paced>; unsel: { p50Us: number; p99Us: number }; qpsD: number; qpsP: number; p50D: number; p50P: number; p99D: number; p99P: number; cpuD: number; cpuP: number; hold: Hold; freshP50: number; freshP99: number; freshCpu: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const d = dnsperf('direct', server, [dnsmasqPid]);
    const rec = PERF ? spawn('perf', ['record', '-F', '2999', '-g', '-o', join(PERF, `perf-r${r + 1}.data`), '-p', [agentPid, proxyPid].filter(Boolean).join(','), '--', 'sleep', String(SECS)], { stdio: 'ignore' }) : undefined;
    const b0 = await holdStats(1);
    const p = dnsperf('proxied', server, proxyPid ? [agentPid, proxyPid] : [agentPid]);
    const batching = perCall(b0, await holdStats(1));
    if (rec) await new Promise((ok) => { if (rec.exitCode !== null) ok(null); else rec.once('exit', ok); });
    const qpsD = d.qps, qpsP = p.qps;
    const lD = latency('direct', server, NAMES, 3000);
    const lP = latency('proxied', server, NAMES, 3000);
    // the same offered rate for both, alternated (the proxied side first in odd rounds)
    const pacedSecs = Math.max(2, Math.round(SECS / 2));
    const pacedD0 = r % 2 ? undefined : paced('direct', server, pacedSecs);
    const pacedP = paced('proxied', server, pacedSecs);
    const pacedD = pacedD0 ?? paced('direct', server, pacedSecs);
    const unsel = latency('proxied', server, UNSELECTED, 1000);
    // fresh names: every answer carries a new IP → hold until identity + policy maps + ipcache
    const before = (await holdStats(0)).hold.count;
    // CPU per fresh name (the agent's and the proxy process's): what a new FQDN IP costs, robust to the machine's load
    const f0 = [agentPid, proxyPid ?? 0].map((x) => (x ? cpuUs(x) : 0));
    const fresh = latency('proxied', server, freshNames(r), FRESH);
    const f1 = [agentPid, proxyPid ?? 0].map((x) => (x ? cpuUs(x) : 0));
    const freshCpu = f1.map((x, i) => (x - f0[i]!) / FRESH);
    const after = (await holdStats(0)).hold.count;
    const hold = (await holdStats(Math.max(1, after - before))).hold;
    rows.push({ pacedD, pacedP, unsel, qpsD, qpsP, p50D: lD.p50Us, p50P: lP.p50Us, p99D: lD.p99Us, p99P: lP.p99Us, cpuD: d.cpuPerQ, cpuP: p.cpuPerQ, hold, freshP50: fresh.p50Us, freshP99: fresh.p99Us, freshCpu: freshCpu[0]! + freshCpu[1]! });
    console.error(`round ${r + 1} [load ${loadavg()[0]!.toFixed(2)}]: qps ${qpsD.toFixed(0)} direct / ${qpsP.toFixed(0)} proxied (${(qpsP / qpsD * 100).toFixed(1)} %); CPU/query dnsmasq ${d.cpuPerQ.toFixed(1)} µs / agent ${p.each[0]!.toFixed(1)} + proxy process ${(p.each[1] ?? 0).toFixed(1)} = ${p.cpuPerQ.toFixed(1)} µs; p50 ${lD.p50Us.toFixed(0)} / ${lP.p50Us.toFixed(0)} µs; p99 ${lD.p99Us.toFixed(0)} / ${lP.p99Us.toFixed(0)} µs; at ${RATE} q/s p50 ${pacedD.p50Us.toFixed(0)} / ${pacedP.p50Us.toFixed(0)} µs, p99 ${pacedD.p99Us.toFixed(0)} / ${pacedP.p99Us.toFixed(0)} µs (${pacedD.n} / ${pacedP.n} queries); unselected names p50 ${unsel.p50Us.toFixed(0)} µs p99 ${unsel.p99Us.toFixed(0)} µs; hold of ${hold.count} fresh answers p50 / p99 / max ${hold.p50Ms.toFixed(2)} / ${hold.p99Ms.toFixed(2)} / ${hold.maxMs.toFixed(2)} ms; CPU per fresh name agent ${freshCpu[0]!.toFixed(0)} + proxy process ${freshCpu[1]!.toFixed(0)} µs; ${batching}`);
  }
  const stats = await callAgent<{ holdTimeouts: number }>(paths.agentSocket('node1'), 'GET', '/v1/dns/proxy');

  const qpsD = median(rows.map((x) => x.qpsD)), qpsP = median(rows.map((x) => x.qpsP));
  const p50D = median(rows.map((x) => x.p50D)), p50P = median(rows.map((x) => x.p50P));
  const p99D = median(rows.map((x) => x.p99D)), p99P = median(rows.map((x) => x.p99P));
  const cpuD = median(rows.map((x) => x.cpuD)), cpuP = median(rows.map((x) => x.cpuP));
  // min / median / max over the rounds: a regression told from noise
  const spread = (xs: number[], f: (x: number) => string) => { const s = [...xs].sort((a, b) => a - b); return `${f(median(s))} (${f(s[0]!)}–${f(s.at(-1)!)})`; };
  const ratios = rows.map((x) => x.qpsP / x.qpsD);
  const holdP99s = rows.map((x) => x.hold.p99Ms);
  const hold = { count: rows.reduce((a, x) => a + x.hold.count, 0), p50Ms: median(rows.map((x) => x.hold.p50Ms)), maxMs: Math.max(...rows.map((x) => x.hold.maxMs)) };
  const fresh = { p50Us: median(rows.map((x) => x.freshP50)), p99Us: median(rows.map((x) => x.freshP99)) };
  const added50 = p50P - p50D;
  const pd50 = median(rows.map((x) => x.pacedD.p50Us)), pp50 = median(rows.map((x) => x.pacedP.p50Us));
  const pd99 = median(rows.map((x) => x.pacedD.p99Us)), pp99 = median(rows.map((x) => x.pacedP.p99Us));
  const pacedAdded = rows.map((x) => x.pacedP.p50Us - x.pacedD.p50Us);
  const unsel50 = median(rows.map((x) => x.unsel.p50Us)), unsel99 = median(rows.map((x) => x.unsel.p99Us));
  const ok = (b: boolean) => (b ? 'ok' : 'MISSED');
  const table = [
    '| measure | dnsmasq direct | through the DNS proxy | result | goal | |',
    '|---|---|---|---|---|---|',
    `| queries per second (dnsperf -c 8 -q 64, ${SECS} s) | ${qpsD.toFixed(0)} | ${qpsP.toFixed(0)} | ${spread(ratios, (x) => (x * 100).toFixed(1))} % | ≥ 50 % in every round | ${ok(Math.min(...ratios) >= 0.5)} |`,
    `| CPU per query (/proc, 10 ms ticks): dnsmasq answering / the agent and the proxy process proxying | ${cpuD.toFixed(1)} µs | ${cpuP.toFixed(1)} µs | ${(cpuD / cpuP * 100).toFixed(1)} % (dnsmasq-equivalent rate per core) | | |`,
    `| latency p50, one query outstanding | ${p50D.toFixed(0)} µs | ${p50P.toFixed(0)} µs | +${added50.toFixed(0)} µs | ≤ 100 µs added | ${ok(added50 <= 100)} |`,
    `| latency p50 at ${RATE} q/s offered to both (dnsperf -Q, open loop; added: per round, min–max) | ${pd50.toFixed(0)} µs | ${pp50.toFixed(0)} µs | ${spread(pacedAdded, (x) => `+${x.toFixed(0)}`)} µs | ≤ 100 µs added | ${ok(median(pacedAdded) <= 100)} |`,
    `| latency p99 at ${RATE} q/s | ${pd99.toFixed(0)} µs | ${pp99.toFixed(0)} µs | | | |`,
    `| latency p50 / p99 of names no toFQDNs selector selects, one query outstanding | | ${unsel50.toFixed(0)} / ${unsel99.toFixed(0)} µs | | | |`,
    `| latency p99 | ${p99D.toFixed(0)} µs | ${p99P.toFixed(0)} µs | ${(p99P / 1000).toFixed(2)} ms | ≤ 2 ms | ${ok(p99P <= 2000)} |`,
    `| answer → policy map (hold of ${hold.count} fresh-IP answers, ${FRESH} per round), p50 / p99 / max | | | ${hold.p50Ms.toFixed(2)} / ${spread(holdP99s, (x) => x.toFixed(2))} / ${hold.maxMs.toFixed(2)} ms | p99 ≤ 10 ms in every round | ${ok(Math.max(...holdP99s) <= 10)} |`,
    `| fresh-name query latency (includes the hold), p50 / p99 | | ${(fresh.p50Us / 1000).toFixed(2)} / ${(fresh.p99Us / 1000).toFixed(2)} ms | | | |`,
    `| CPU per fresh name (/proc): the agent and the proxy process | | ${spread(rows.map((x) => x.freshCpu), (x) => x.toFixed(0))} µs | | | |`,
  ].join('\n');
  if (!values.append) console.log(table);
  else {
    const cmd = `bin/node bench/dns/run.ts --secs ${SECS} --rounds ${ROUNDS} --fresh ${FRESH}${RATE !== 2000 ? ` --rate ${RATE}` : ''}`;
    const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
    // the latest run replaces the first `## dns` section (older runs appended below it stay as history)
    reportResults(['## dns', '', `Command: \`${cmd}\``, '', `Run ${when} UTC, Node ${process.version}, 2 vCPU shared with other work, one lab node. dnsmasq (a pod, authoritative for the names) answers a pod without policy directly and a pod whose egress policy has DNS rules (\`*.bench.lab\`, \`*.fresh.lab\`) and toFQDNs through the membrane DNS proxy; same run, median of ${ROUNDS} interleaved rounds (min–max over the rounds in parentheses), load average ${startLoad} at the start. Steady state: the 100 names resolve to one known IP (no hold). Fresh names: each answer a new IP, held until its FQDN identity is in the policy map and the ipcache (holds timed out: ${stats.holdTimeouts}).`, '', table, ''], true);
  }
} finally {
  if (values.keep) console.error(`kept: MEMBRANE_LAB=${LAB} MEMBRANE_STATE_DIR=${env.MEMBRANE_STATE_DIR} (queries in ${dir})`);
  else try { membrane(['down'], 120_000); } catch (e) { console.error(`down: ${(e as Error).message}`); }
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
}
