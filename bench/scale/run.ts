// Scale benchmark: a 3-node lab (`membrane up --nodes 3`, three real agents with eBPF sharing the
// lab's etcd) watched while simulated nodes (bench/scale/sim.ts, separate processes) register
// nodes, 30 endpoints each, identity uses and identity churn in that etcd, as agents write them.
// At each stage (default 1,000 / 2,000 / 5,000 / 10,000 simulated nodes):
//   - etcd writes per second the simulated nodes achieved while growing to the stage,
//   - the time until the three agents' pinned ipcache maps hold every simulated endpoint,
//   - probes: a new endpoint's ipcache key written to etcd → present with its identity in all three
//     agents' pinned mb_ipcache maps (polled every 2 ms), p50/p99/max, under identity churn,
//   - each agent's RSS and CPU (from /proc) while probing.
// After the largest stage (after every stage with --restart-each: the resync's curve): node2's
// agent is killed. While it is down two endpoints are written (one whose key sorts amid the
// simulated ones, one after all of them) and one it held is deleted. What a user feels is the
// datapath: the pinned maps keep the previous agent's entries through the restart (their count is
// read at the kill and when the new agent starts), and the datapath is complete and correct again
// once both new entries are in node2's map and the deleted one is gone from it; the agent's own
// "cluster ipcache resynced" (the whole listing applied, stale entries pruned) is reported beside.
// Completeness (bench/scale/complete.ts): after every stage, and after every restart once the new
// agent has logged its resync, each real agent's pinned map must hold exactly what etcd names (every
// ipcache key, every other node's addresses, read at one revision) plus the node's own entries,
// with the right identity for a sample; a mismatch prints what is missing or extra and fails the run.
// Writes the results into bench/RESULTS.md as its "## scale" section, replacing the one there (the
// run before it is kept under "### previous run"); with --append, as a new "## scale" section at the
// end of the file (the last one is the latest), --note TEXT put under its command line; a run that
// did not complete is not appended.
//   bin/node bench/scale/run.ts [--stages 1000,2000,5000,10000] [--probes 40] [--no-write] [--no-restart]
//     [--restart-each] [--cpu-prof DIR] [--heap-snapshot DIR] [--minutes 9 (the whole run's bound)]
//     [--append] [--note TEXT]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { cpus, loadavg } from 'node:os';
import { Etcd3 } from 'etcd3';
import { TestLab } from '../../test/integration/support/lab.ts';
import { labEtcdEndpoint } from '../../src/lab/etcd.ts';
import { BpfMap } from '../../src/sys/bpf.ts';
import { decodeIpcacheVal, encodeIpcacheKey } from '../../src/datapath/linux/codec.ts';
import { IPCACHE_PREFIX, NODES_PREFIX, ipcacheValue } from '../../src/agent/cluster-keys.ts';
import type { EndpointRecord } from '../../src/agent/endpoints.ts';
import { compare, complete, describe, ownEntries, readCluster, readMap, sameSnapshot, sampleValues, type ClusterSnapshot } from './complete.ts';

const arg = (n: string, d: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1]! : d; };
const STAGES = arg('--stages', '1000,2000,5000,10000').split(',').map(Number);
const PROBES = Number(arg('--probes', '40'));
const WRITE = !process.argv.includes('--no-write');
const APPEND = process.argv.includes('--append');
const NOTE = arg('--note', '');
/** restart node2's agent after every stage (the resync's curve), not only after the largest */
const RESTART_EACH = process.argv.includes('--restart-each');
/**
 * --cpu-prof DIR: the lab's processes (agents included) write V8 CPU profiles there when they stop.
 * The whole lab from its start: node2's agent after the kill is its supervisor's standby (loaded
 * at `up`, environment and all), not a process the restart's `up` starts. Under load it can break
 * the lab's start: V8's profiler samples with SIGPROF (1 kHz), the kernel's verifier gives up a
 * program load with EAGAIN when a signal is pending, and libbpf retries only a few times (seen at
 * load 44: `prog 'to_container': BPF program load failed: Resource temporarily unavailable`, the
 * agent restarted until `up` timed out). Profile the agent's start from its log's timestamps.
 */
const PROF = arg('--cpu-prof', '');
/** --heap-snapshot DIR: node3's agent writes a V8 heap snapshot there after the largest stage */
const HEAP = arg('--heap-snapshot', '');
const nodeOptions = [PROF ? `--cpu-prof --cpu-prof-dir=${PROF}` : '', HEAP ? `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${HEAP}` : ''].filter(Boolean).join(' ');
const labEnv = nodeOptions ? { env: { NODE_OPTIONS: nodeOptions } } : {};
const WORKERS = 2;
const NODES = ['node1', 'node2', 'node3'];
/** the whole run stops after this, whatever stage it is in */
const RUN_DEADLINE = Date.now() + Number(arg('--minutes', '9')) * 60_000;
const here = fileURLToPath(new URL('.', import.meta.url));
const node = process.execPath;
const la = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const startLoad = la();
const log = (s: string) => process.stderr.write(`[scale ${((Date.now() - T0) / 1000).toFixed(0)}s] ${s}\n`);
const T0 = Date.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const lab = new TestLab(`sc${process.pid % 10000}`);
const paths = lab.paths;
const workers: { cp: ChildProcess; next: () => Promise<Record<string, unknown>> }[] = [];
let etcd: Etcd3 | undefined;
const maps = new Map<string, BpfMap>();

async function cleanup(): Promise<void> {
  for (const w of workers) w.cp.kill('SIGKILL');
  for (const m of maps.values()) m.close();
  etcd?.close();
  await lab.down();
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });

function startWorker(i: number, endpoint: string) {
  const cp = spawn(node, [`${here}sim.ts`, endpoint, String(i), String(WORKERS)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: cp.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error(`sim worker ${i} exited`);
    return JSON.parse(r.value as string) as Record<string, unknown>;
  };
  return { cp, next };
}
async function all(cmd: object): Promise<Record<string, unknown>[]> {
  for (const w of workers) w.cp.stdin!.write(`${JSON.stringify(cmd)}\n`);
  const rs = await Promise.all(workers.map((w) => w.next()));
  for (const r of rs) if (!r.ok) throw new Error(`sim: ${String(r.error)}`);
  return rs;
}

function agentPid(n: string): number { return Number(readFileSync(paths.agentPidFile(n), 'utf8')); }
/**
 * node n's agent other than `old` before it writes its pid file (that comes when its API is up):
 * the process running the lab's agent program for n with this lab's MEMBRANE_LAB.
 */
function newAgentPid(n: string, old: number): number {
  // the promoted spare and the next spare its supervisor starts beside it both run node-agent.ts
  // with --standby: the agent is the older of the two
  let best = NaN, bestStart = Infinity;
  for (const d of readdirSync('/proc')) {
    const p = Number(d);
    if (!p || p === old) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      // the program node runs is the agent's (its supervisor's command line names the agent too)
      if (!cmd.find((a) => a.endsWith('.ts'))?.endsWith('src/lab/node-agent.ts') || cmd[cmd.indexOf('--node') + 1] !== n) continue;
      if (!readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').includes(`MEMBRANE_LAB=${lab.name}`)) continue;
      const start = Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
      if (start < bestStart) { best = p; bestStart = start; }
    } catch { /* gone meanwhile */ }
  }
  return best;
}
/** node n's agent log lines that mark its start phases, from the last "agent starting" on */
/** the agent's start phases since its last start, whole lines (`short` cuts them for the log) */
function startPhases(n: string): string[] {
  const lines = readFileSync(paths.agentLog(n), 'utf8').split('\n');
  const from = lines.findLastIndex((l) => l.includes('agent starting'));
  return lines.slice(Math.max(0, from)).filter((l) => /agent starting|kvstore open|datapath loaded|cluster state loaded|cluster ipcache: following|agent ready|released identities|cluster ipcache resynced/.test(l));
}
const short = (l: string) => l.slice(0, 320);
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
/** what the RSS is made of (MiB): anonymous (heaps, buffers) and file-backed (code, mapped files) */
function rssParts(pid: number): string {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN) / 1024;
  return `anon ${kb('Anonymous').toFixed(0)} file ${(kb('Rss') - kb('Anonymous')).toFixed(0)}`;
}
/** user+system CPU seconds of a process */
function cpuSecs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}
function openMap(n: string): BpfMap {
  const path = `${paths.pinRoot(n)}/mb_ipcache`;
  if (!existsSync(path)) throw new Error(`no pinned ipcache map at ${path}`);
  return BpfMap.fromPin(path);
}
/** entries in node n's pinned ipcache map (read in batches) */
function mapEntries(n: string): number {
  let c = 0;
  maps.get(n)!.forEachBatch(4096, (_k, _v, count) => { c += count; });
  return c;
}
/** Polls until `ip` is absent from node n's map (2 ms steps); ms from `t0`. */
async function waitGone(n: string, ip: string, t0: number, timeoutMs: number): Promise<number> {
  while (identityIn(n, ip) !== undefined) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${ip} still in ${n} after ${timeoutMs} ms`);
    await sleep(2);
  }
  return Date.now() - t0;
}
const identityIn = (n: string, ip: string): number | undefined => {
  const v = maps.get(n)!.lookup(encodeIpcacheKey(`${ip}/32`));
  return v ? decodeIpcacheVal(v).identity : undefined;
};

/** Polls until `ip` has `identity` in every node of `nodes` (2 ms steps); ms per node, from `t0`. */
async function waitIn(nodes: string[], ip: string, identity: number, t0: number, timeoutMs: number): Promise<Map<string, number>> {
  const got = new Map<string, number>();
  while (got.size < nodes.length) {
    for (const n of nodes) if (!got.has(n) && identityIn(n, ip) === identity) got.set(n, Date.now() - t0);
    if (got.size === nodes.length) break;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${ip} not in ${nodes.filter((n) => !got.has(n)).join(',')} after ${timeoutMs} ms`);
    await sleep(2);
  }
  return got;
}

/**
 * Puts `out` (a "## scale" section) into bench/RESULTS.md in place of every "## scale" section
 * there; the latest of those stays below it under "### previous run" (its own earlier runs dropped).
 */
function writeSection(out: string): void {
  const path = fileURLToPath(new URL('../RESULTS.md', import.meta.url));
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  if (APPEND) return writeFileSync(path, `${text.trimEnd()}\n\n${out.trimEnd()}\n`);
  const parts = text.split(/^(?=## )/m);
  const ours = parts.filter((p) => p.startsWith('## scale\n'));
  const last = ours.at(-1);
  const prev = last ? `### previous run\n\n${last.slice('## scale\n'.length).split(/^### previous run\n/m)[0]!.trim()}\n` : '';
  const section = `${out.trimEnd()}\n${prev ? `\n${prev}` : ''}\n`;
  const at = parts.findIndex((p) => p.startsWith('## scale\n'));
  const rest = parts.filter((p) => !p.startsWith('## scale\n'));
  if (at < 0) rest.push(section); else rest.splice(at, 0, section);
  writeFileSync(path, rest.map((p) => (p.endsWith('\n\n') || p === rest.at(-1) ? p : `${p.trimEnd()}\n\n`)).join(''));
}

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!; };
let probeSeq = 0;
const probeIp = () => { probeSeq++; return `100.127.${(probeSeq >> 8) & 255}.${probeSeq & 255}`; };
const PROBE_ID = 60000 + 17; // a pool identity (bench/scale/sim.ts POOL_BASE + 17)
/** an address no simulated pod has (sim.ts: the 31st of a node's 32) whose key sorts after all of theirs */
const LAST_IP = '100.99.255.255';
async function writeProbe(ip: string): Promise<void> {
  const rec = { id: probeSeq, ip, identity: PROBE_ID, namespace: 'sim', pod: `probe-${probeSeq}` } as EndpointRecord;
  await etcd!.put(`${IPCACHE_PREFIX}${ip}`).value(ipcacheValue(rec, 'sim1', '100.64.0.1'));
}

/** simulated nodes' keys in etcd now (a lapsed lease takes its node's keys with it) */
async function countNodes(): Promise<number> {
  const from = `${NODES_PREFIX}default/sim`;
  const r = await etcd!.kv.range({ key: Buffer.from(from), range_end: Buffer.from(`${NODES_PREFIX}default/sin`), count_only: true });
  return Number(r.count);
}
interface Row { nodes: number; endpoints: number; writes: number; growS: number; wps: number; convergeS: number; p50: number; p99: number; max: number; rss: number[]; cpu: number[]; churn: number; lost: number; held: number; complete: string }
const rows: Row[] = [];
interface Resync {
  nodes: number;
  /** node2's map entries at the kill and when the new agent's process is there */
  atKill: number; atStart: number;
  upS: number; upErr: string; entryS: number; lastS: number; goneS: number; correctS: number; fullS: number;
  rss: number; cpuCorrectS: number; cpuEnd: number;
  /** how the new agent followed the ipcache: from the saved revision, or the full listing (why) */
  resumed: string;
  /** the completeness check after the agent's resync */
  complete: string;
}
const resyncs: Resync[] = [];
let failure = '';

/** `<cluster>/<node>`: a real node's own key under NODES_PREFIX */
const selfKey = (n: string) => `default/${n}`;
/** each real node's own map entries (bench/scale/complete.ts ownEntries), read before any simulated key */
const own = new Map<string, Set<string>>();

/**
 * etcd and the agents' maps at one point: etcd read, a sentinel written and awaited in every map
 * (agents apply etcd's events in revision order: the maps then reflect at least that read), the maps
 * read, etcd read again. Only when both reads agree is the comparison meaningful (a lease that
 * lapses meanwhile changes etcd under it): otherwise tried again, three times at most.
 */
async function agreedState(nodes: string[]): Promise<{ c: ClusterSnapshot; m: Map<string, Map<string, number>> }> {
  for (let attempt = 1; ; attempt++) {
    const c1 = await readCluster(etcd!);
    const ip = probeIp();
    await writeProbe(ip);
    await waitIn(nodes, ip, PROBE_ID, Date.now(), Math.max(60_000, Math.min(240_000, RUN_DEADLINE - Date.now())));
    const m = new Map(nodes.map((n) => [n, readMap(maps.get(n)!)]));
    const c2 = await readCluster(etcd!);
    await etcd!.delete().key(`${IPCACHE_PREFIX}${ip}`);
    c1.ipcache.add(`${ip}/32`);
    if (sameSnapshot(c1, c2)) return { c: c2, m };
    const why = `etcd changed during the check: ${c1.ipcache.size} → ${c2.ipcache.size} ipcache keys, ${c1.nodes.size} → ${c2.nodes.size} node keys`;
    if (attempt === 3) throw new Error(`completeness: ${why}, in 3 attempts (leases lapsing?)`);
    log(`completeness: ${why}; again`);
  }
}

/** The real nodes' own entries: what each map holds that etcd does not name, before any simulated key. */
async function readOwnEntries(): Promise<void> {
  const { c, m } = await agreedState(NODES);
  for (const n of NODES) {
    own.set(n, ownEntries(m.get(n)!, c, selfKey(n)));
    log(`${n}: ${m.get(n)!.size} entries before the simulation, ${own.get(n)!.size} its own: ${[...own.get(n)!].sort().join(' ')}`);
  }
}

/**
 * Every node of `nodes` holds exactly what etcd names plus its own entries (and a sample's
 * identities are etcd's): 'yes (...)', or the run fails with what is missing and extra.
 */
async function checkComplete(label: string, nodes: string[]): Promise<string> {
  const t = Date.now();
  const { c, m } = await agreedState(nodes);
  if (c.badNodes.length) throw new Error(`completeness ${label}: node keys that do not parse: ${c.badNodes.slice(0, 5).join(', ')}`);
  const tAgreed = Date.now();
  const values = await sampleValues(etcd!, c, 1000);
  const tSample = Date.now();
  const verdicts = nodes.map((n) => compare(n, selfKey(n), m.get(n)!, c, own.get(n)!, values));
  for (const v of verdicts) log(`completeness ${label}: ${describe(v)}`);
  const bad = verdicts.filter((v) => !complete(v));
  if (bad.length) throw new Error(`completeness ${label}: the maps are not what etcd holds at revision ${c.revision} (${c.ipcache.size} ipcache keys, ${c.nodes.size} node keys): ${bad.map((v) => describe(v)).join('; ')}`);
  log(`completeness ${label}: every map is what etcd holds at revision ${c.revision} (${((Date.now() - t) / 1000).toFixed(1)} s: etcd twice and the maps ${((tAgreed - t) / 1000).toFixed(1)}, sample ${((tSample - tAgreed) / 1000).toFixed(1)}, compare ${((Date.now() - tSample) / 1000).toFixed(1)})`);
  return `yes (${c.ipcache.size} + ${c.nodes.size} keys; ${verdicts.map((v) => v.entries).join(' / ')} entries)`;
}

/**
 * Kills node2's agent at N nodes and restarts it (`membrane up`): what changed while it was down
 * (two entries written, one deleted) timed into its map, beside the agent's own resync.
 */
async function restart(N: number): Promise<void> {
  // an entry node2 holds before the kill, deleted while it is down (its key sorts amid the simulated ones)
  const doomed = probeIp();
  await writeProbe(doomed);
  await waitIn(['node2'], doomed, PROBE_ID, Date.now(), 60_000);
  log(`restart at ${N} nodes: killing the node2 agent`);
  const pid = agentPid('node2');
  process.kill(pid, 'SIGKILL');
  while (existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z')) await sleep(50);
  const atKill = mapEntries('node2');
  const ip = probeIp();
  await writeProbe(ip); // written while node2 has no agent: only a resync brings it
  // and one whose key sorts after every simulated endpoint's: the listing arrives in key order
  // and is written page by page, so this one is in the map once the whole listing is
  await writeProbe(LAST_IP);
  await etcd!.delete().key(`${IPCACHE_PREFIX}${doomed}`); // deleted while node2 has no agent: only its prune takes it out
  const t = Date.now();
  // `up` gives up on an agent after 90 s, the agent itself goes on: the entries decide
  let upS = NaN;
  let upErr = '';
  const up = lab.ok(['up'], { timeoutMs: Math.max(30_000, RUN_DEADLINE - Date.now()), ...labEnv })
    .then(() => { upS = (Date.now() - t) / 1000; }, (e: unknown) => { upErr = String((e as Error).message).split('\n').find((l) => l.startsWith('error:')) ?? 'failed'; });
  // CPU the new agent spent until then: the part of the resync a loaded machine does not stretch
  // (the pid file may still name the killed agent for a moment: the live one is read, or NaN)
  const live = () => { try { const p = agentPid('node2'); return p !== pid ? p : newAgentPid('node2', pid); } catch { return newAgentPid('node2', pid); } };
  const safe = (f: (p: number) => number) => { const p = live(); try { return Number.isFinite(p) ? f(p) : NaN; } catch { return NaN; } };
  let atStart = NaN;
  for (let i = 0; i < 600 && !Number.isFinite(atStart); i++) { if (Number.isFinite(live())) atStart = mapEntries('node2'); else await sleep(50); }
  const bound = Math.max(10_000, RUN_DEADLINE - Date.now());
  const [entry, last, gone] = await Promise.all([
    waitIn(['node2'], ip, PROBE_ID, t, bound).then((g) => g.get('node2')! / 1000),
    waitIn(['node2'], LAST_IP, PROBE_ID, t, bound).then((g) => g.get('node2')! / 1000),
    waitGone('node2', doomed, t, bound).then((ms) => ms / 1000),
  ]);
  const correctS = (Date.now() - t) / 1000;
  const cpuCorrectS = safe(cpuSecs);
  await up;
  // the agent logs when its listing is complete, applied and the stale entries pruned
  let fullS = NaN;
  for (let i = 0; i < 1200 && !Number.isFinite(fullS) && Date.now() < RUN_DEADLINE; i++) {
    const l = startPhases('node2').find((x) => x.includes('cluster ipcache resynced'));
    if (l) fullS = (Date.parse(/"time":"([^"]+)"/.exec(l)?.[1] ?? '') - t) / 1000;
    else await sleep(100);
  }
  await etcd!.delete().key(`${IPCACHE_PREFIX}${LAST_IP}`);
  await etcd!.delete().key(`${IPCACHE_PREFIX}${ip}`);
  const following = startPhases('node2').find((l) => l.includes('cluster ipcache: following')) ?? '';
  const resumed = /"resumeFrom":(\d+)/.exec(following)?.[1];
  const rssAfter = safe(rssMiB), cpuEnd = safe(cpuSecs);
  // the map the new agent's datapath has pinned now (the one opened before the kill, were it replaced, would be stale)
  maps.get('node2')!.close();
  maps.set('node2', openMap('node2'));
  const r: Resync = { resumed: resumed ? `yes (revision ${resumed})` : `no (${/"fullListing":"([^"]*)"/.exec(following)?.[1] ?? 'not logged'})`, nodes: N, atKill, atStart, entryS: entry, lastS: last, goneS: gone, correctS, fullS, upS, upErr, rss: rssAfter, cpuCorrectS, cpuEnd, complete: 'no' };
  resyncs.push(r);
  if (!Number.isFinite(fullS)) log('node2 did not log its full resync: the completeness check runs all the same');
  r.complete = await checkComplete(`after the restart at ${N} nodes`, NODES).catch((e: unknown) => { r.complete = 'NO (below)'; throw e; });
  for (const l of startPhases('node2')) log(`node2: ${short(l)}`);
  log(`resync at ${N} nodes: map entries ${atKill} at the kill, ${atStart} when the new agent ran; written while down: mid-listing key ${entry.toFixed(1)} s, last key ${last.toFixed(1)} s; deleted while down gone ${gone.toFixed(1)} s; datapath complete and correct ${correctS.toFixed(1)} s (new agent CPU ${cpuCorrectS.toFixed(1)} s); agent's full resync ${fullS.toFixed(1)} s (membrane up: ${upErr || `${upS.toFixed(1)} s`})`);
}

try {
  log(`load average ${startLoad}; starting a 3-node lab`);
  await lab.ok(['up', '--nodes', '3'], { timeoutMs: 240_000, ...labEnv });
  const endpoint = labEtcdEndpoint(paths);
  etcd = new Etcd3({ hosts: [endpoint] });
  for (const n of NODES) maps.set(n, openMap(n));
  await readOwnEntries();
  for (let i = 0; i < WORKERS; i++) workers.push(startWorker(i, endpoint));
  for (const w of workers) await w.next();
  await all({ cmd: 'masters', deadlineMs: Math.max(60_000, RUN_DEADLINE - Date.now()) });

  for (const N of STAGES) {
    if (Date.now() > RUN_DEADLINE - 60_000) { failure = `stopped before ${N} nodes: run time bound`; break; }
    log(`growing to ${N} simulated nodes`);
    const t = Date.now();
    const rs = await all({ cmd: 'grow', to: N, deadlineMs: Math.max(10_000, RUN_DEADLINE - Date.now()) });
    const growS = (Date.now() - t) / 1000;
    const writes = rs.reduce((a, r) => a + Number(r.writes), 0);
    // a sentinel written after the stage's writes: the agents apply etcd's events in revision
    // order, so once it is in every map, every simulated endpoint before it is too
    let convergeS = NaN;
    try {
      const ip = probeIp();
      await writeProbe(ip);
      // up to 240 s after the writes ended (the bound counts from the stage's start, as the time does)
      const got = await waitIn(NODES, ip, PROBE_ID, t, Date.now() - t + Math.min(240_000, RUN_DEADLINE - Date.now()));
      convergeS = Math.max(...got.values()) / 1000;
      await etcd.delete().key(`${IPCACHE_PREFIX}${ip}`);
    } catch (e) { failure = `${N} nodes: ${(e as Error).message}`; log(failure); }
    log(`grown: ${writes} writes in ${growS.toFixed(1)} s; all agents hold the last endpoint ${convergeS.toFixed(1)} s after the stage began`);

    // probes under identity churn
    const cpu0 = NODES.map((n) => cpuSecs(agentPid(n)));
    const tp = Date.now();
    const churnP = all({ cmd: 'churn', secs: Math.ceil(PROBES * 0.25) + 2, rate: 10 });
    const lat: number[] = [];
    let lost = 0;
    for (let i = 0; i < PROBES && Date.now() < RUN_DEADLINE - 30_000; i++) {
      const ip = probeIp();
      const t0 = Date.now();
      await writeProbe(ip);
      try {
        lat.push(Math.max(...(await waitIn(NODES, ip, PROBE_ID, t0, 15_000)).values()));
      } catch { lost++; }
      await etcd.delete().key(`${IPCACHE_PREFIX}${ip}`);
      await sleep(Math.max(0, 250 - (Date.now() - t0)));
    }
    const churned = (await churnP).reduce((a, r) => a + Number(r.writes), 0);
    const secs = (Date.now() - tp) / 1000;
    const cpu = NODES.map((n, i) => (100 * (cpuSecs(agentPid(n)) - cpu0[i]!)) / secs);
    const rss = NODES.map((n) => rssMiB(agentPid(n)));
    // the simulated nodes etcd still holds (their leases kept alive by the simulators)
    const held = await countNodes();
    const row: Row = { nodes: N, endpoints: N * 30, writes, growS, wps: writes / growS, convergeS, p50: lat.length ? pct(lat, 50) : NaN, p99: lat.length ? pct(lat, 99) : NaN, max: lat.length ? Math.max(...lat) : NaN, rss, cpu, churn: churned, lost, held, complete: 'no' };
    rows.push(row);
    row.complete = await checkComplete(`at ${N} nodes`, NODES).catch((e: unknown) => { row.complete = 'NO (below)'; throw e; });
    log(`RSS parts (MiB): ${NODES.map((n) => `${n} ${rssParts(agentPid(n))}`).join('; ')}`);
    log(`etcd holds ${held} of ${N} simulated nodes`);
    log(`${N} nodes: probe p50 ${row.p50} ms p99 ${row.p99} ms (${lat.length} probes, ${lost} timed out), RSS ${rss.map((x) => x.toFixed(0)).join('/')} MiB, CPU ${cpu.map((x) => x.toFixed(0)).join('/')} %`);
    if (RESTART_EACH && N !== STAGES.at(-1) && Date.now() < RUN_DEADLINE - 60_000) await restart(N);
  }

  if (HEAP) {
    const pid = agentPid('node3');
    log(`heap snapshot of node3's agent (pid ${pid}) into ${HEAP}`);
    process.kill(pid, 'SIGUSR2');
    // the snapshot stops that agent for a while: the restart below waits until it is written
    const { statSync } = await import('node:fs');
    let size = -1;
    for (let i = 0; i < 600; i++) {
      await sleep(1000);
      const f = readdirSync(HEAP).find((x) => x.endsWith('.heapsnapshot'));
      const now = f ? statSync(`${HEAP}/${f}`).size : -1;
      if (now > 0 && now === size) break;
      size = now;
    }
    log(`heap snapshot written (${(size / 2 ** 20).toFixed(0)} MiB)`);
  }
  if (!process.argv.includes('--no-restart') && rows.length && Date.now() < RUN_DEADLINE - 60_000) await restart(rows.at(-1)!.nodes);
  await all({ cmd: 'stop' }).catch(() => {});
} catch (e) {
  failure = (e as Error).message;
  log(`failed: ${failure}`);
} finally {
  const endLoad = la();
  const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
  const table = [
    '| simulated nodes (in etcd after probing) | endpoints | etcd writes (growing to it) | writes/s | all agents hold the last endpoint | new endpoint → 3 agents\' maps p50 / p99 / max (ms) | agent RSS node1/2/3 (MiB) | agent CPU while probing (% of a core) | every map = etcd (ipcache + node keys; entries node1/2/3) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.nodes} (${f(r.held)}) | ${r.endpoints} | ${r.writes} in ${f(r.growS, 1)} s | ${f(r.wps)} | ${f(r.convergeS, 1)} s | ${f(r.p50)} / ${f(r.p99)} / ${f(r.max)}${r.lost ? ` (${r.lost} timed out)` : ''} | ${r.rss.map((x) => f(x)).join(' / ')} | ${r.cpu.map((x) => f(x)).join(' / ')} | ${r.complete} |`),
  ].join('\n');
  const rs = resyncs.length ? [
    `Resync after an agent restart (node2 SIGKILLed${RESTART_EACH ? ' after every stage' : ''}; while it was down two endpoints were written, one whose key sorts amid the simulated ones and one after all of them, and one it held was deleted). What a user feels is the datapath: the pinned maps keep the previous agent's entries through the restart (the entries column: at the kill / when the new agent's process ran), and it is complete and correct again once both new entries are in node2's map and the deleted one is gone; the agent's own full resync (the whole listing applied, stale entries pruned, as it logs it) beside it. Times from the restart's start (\`membrane up\`), CPU: the new agent process's own (user+system, from /proc).`,
    '',
    '| simulated nodes | node2 map entries (kill / new agent) | written while down: mid-listing key / last key in the map (s) | deleted while down gone (s) | datapath complete and correct (s) | new agent CPU by then (s) | agent full resync (s) | `membrane up` (s) | RSS after (MiB) | watch resumed | every map = etcd after the resync |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...resyncs.map((r) => `| ${r.nodes} | ${f(r.atKill)} / ${f(r.atStart)} | ${f(r.entryS, 1)} / ${f(r.lastS, 1)} | ${f(r.goneS, 1)} | ${f(r.correctS, 1)} | ${f(r.cpuCorrectS, 1)} | ${f(r.fullS, 1)} | ${r.upErr ? r.upErr : f(r.upS, 1)} | ${f(r.rss)} | ${r.resumed} | ${r.complete} |`),
  ].join('\n') : 'Resync: not measured.';
  const out = `## scale\n\nCommand: \`bin/node bench/scale/run.ts --stages ${STAGES.join(',')} --probes ${PROBES}${RESTART_EACH ? ' --restart-each' : ''}${process.argv.includes('--minutes') ? ` --minutes ${arg('--minutes', '9')}` : ''}${APPEND ? ' --append' : ''}\`\n\n${NOTE ? `${NOTE}\n\n` : ''}Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), load average ${startLoad} at start, ${endLoad} at end (a shared machine: the numbers are noisy). Three real agents (\`membrane up --nodes 3\`) and one etcd (the lab's); ${WORKERS} simulator processes write, per simulated node, a session lease (kept alive every TTL/3 on one keepalive stream per simulator), the node key, 10 identity slave keys and 30 ipcache keys (up to 128 writes in flight each); probes: an ipcache key written to etcd, then polled in the three agents' pinned mb_ipcache maps every 2 ms, one every 250 ms, under identity churn (10 allocations+releases per second per simulator).\n\n${table}\n\n${rs}${failure ? `\n\nNot completed: ${failure}` : ''}\n`;
  console.log(out);
  // an appended section is a record: only a run that completed (every stage, every check) is one
  if (WRITE && rows.length && !(APPEND && failure)) writeSection(out);
  else if (WRITE && APPEND && failure) log('not appended to bench/RESULTS.md: the run did not complete');
  await cleanup();
  // a run that did not complete (a map that is not what etcd holds above all) fails loudly
  if (failure) {
    process.stderr.write(`scale: FAILED: ${failure}\n`);
    process.exitCode = 1;
  }
}
