/**
 * A/B of two builds of the TLS proxies in the same run: each tree's bench/tls/proxy-server.ts
 * pinned to CPU 1 against one origin (HAProxy terminating TLS and answering 200, CPU 0, with wrk),
 * interleaved rounds. Reports req/s and the proxy process's CPU time per request (from /proc:
 * what to compare on a shared machine), per mode: `ka` intercepted keep-alive (50 conns), `new`
 * intercepted with a new TLS connection per request, `sni` SNI passthrough (new connection per
 * request). Also the origin's new TLS connections per proxied request (1 with no upstream reuse,
 * ~0 when the pool holds) from HAProxy's stats socket. With the proxy in its own process (the lab's
 * mode, the default; MEMBRANE_BENCH_FEED=0: inside the agent) also the CPU per request of the agent
 * stand-in that makes the flows (the proxy's child).
 *
 *   bin/node bench/tls/ab.ts --a /path/to/other/tree [--b .] [--secs 5] [--rounds 3] [--conns 50] [--modes ka,new,sni] [--node-flags=--cpu-prof] [--port 18543]
 * --port: the origin's port, the proxies on the next four (bench/soak/run.ts uses 18543 too: pick
 * another while a soak runs, or HAProxy's SO_REUSEPORT shares the origin's port between the two runs).
 * --a-node-flags / --b-node-flags: flags for one side only (with --a . : an A/B of V8 flags on the same tree).
 * A run during which other processes took over 150 ms/s of CPU is run again, up to 3 times
 * (bench/placement.ts QuietTurns, the rule of bench/tls/run.ts and bench/http/run.ts; not with --perf).
 * With --cpu-prof-dir=D (and --node-flags=--cpu-prof), each proxy writes its profile to D/A, D/B.
 * With --perf=D (and --node-flags=--perf-basic-prof), each measured run is sampled on-CPU by
 * `perf record -e cpu-clock -g` into D/<mode>-<A|B>-<round>.data (CPU time only: fair under load).
 * --a-server / --b-server: the server script a side runs, relative to its tree (default
 * bench/tls/proxy-server.ts; bench/tls/floor-server.ts is Node's own floor for interception).
 * --a-env / --b-env KEY=VALUE[,KEY=VALUE]: environment variables for that side's server only (e.g.
 * --b-env MEMBRANE_BENCH_FLOWS=0: no records on B; --a-env MEMBRANE_FLOOR_HELLO=1: the floor reads the ClientHello in JS).
 * --haproxy: a third side, H, the intercepting HAProxy of bench/tls/run.ts (pinned to CPU 1 too),
 * in the same interleaved rounds (ka and new only).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { negotiatedHandshake, tls13Suites } from './cipher.ts';
import { INTERCEPT_CIPHERS } from '../../src/proxy/tls/issuer.ts';
import { QuietTurns } from '../placement.ts';
import { benchCa, benchProxyMode, benchProxyNodeFlags, cpuUs, haproxyCfg, median, parseWrk, startPinned } from '../support.ts';

const { values } = parseArgs({ options: {
  a: { type: 'string' }, b: { type: 'string', default: resolve(import.meta.dirname, '../..') },
  secs: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, conns: { type: 'string', default: '50' }, modes: { type: 'string', default: 'ka,new,sni' },
  'node-flags': { type: 'string', default: '' }, 'a-node-flags': { type: 'string', default: '' }, 'b-node-flags': { type: 'string', default: '' }, 'cpu-prof-dir': { type: 'string', default: '' }, perf: { type: 'string', default: '' },
  port: { type: 'string', default: '18543' },
  'a-server': { type: 'string', default: 'bench/tls/proxy-server.ts' }, 'b-server': { type: 'string', default: 'bench/tls/proxy-server.ts' }, 'a-env': { type: 'string', default: '' }, 'b-env': { type: 'string', default: '' }, haproxy: { type: 'boolean', default: false },
} });
if (!values.a) throw new Error('--a <tree> is required');
const SECS = Number(values.secs), ROUNDS = Number(values.rounds);
const NAME = 'api.bench.test';
const ORIGIN = Number(values.port);
const ports = { A: { intercept: ORIGIN + 1, sni: ORIGIN + 2 }, B: { intercept: ORIGIN + 3, sni: ORIGIN + 4 }, H: { intercept: ORIGIN + 5, sni: 0 } };
const trees = { A: resolve(values.a), B: resolve(values.b) };
const scripts = { A: join(trees.A, values['a-server']), B: join(trees.B, values['b-server']) };
type Side = 'A' | 'B' | 'H';
const sides: Side[] = values.haproxy ? ['A', 'B', 'H'] : ['A', 'B'];
const dir = mkdtempSync(join(tmpdir(), 'bench-tlsab-'));
const startLoad = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const children: ChildProcess[] = [];
const ca = (name: string): void => benchCa(dir, name, NAME);
const LUA = join(dir, 'resolve.lua');
writeFileSync(LUA, 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n');
const STATS = join(dir, 'origin.sock');
/**
 * CPU time (µs) of the proxy's child processes: in the own-process mode the agent stand-in that
 * makes the flows (bench/feed-agent.ts), on the proxy's CPU as in a lab where both share the node
 */
function childrenCpuUs(pid: number): number {
  let kids: string[] = [];
  try { kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch { return 0; }
  return kids.reduce((s, k) => { try { return s + cpuUs(Number(k)); } catch { return s; } }, 0);
}
/** the origin's cumulative sessions (HAProxy `show info`): its accepted connections */
function originConns(): number {
  const out = execFileSync('sh', ['-c', `echo 'show info' | nc -U -q1 ${STATS} 2>/dev/null || true`]).toString();
  return Number(/CumConns:\s*(\d+)/.exec(out)?.[1] ?? NaN);
}
// a long timeout: on a loaded machine wrk's 2 s default turns slow answers into reconnects (full handshakes)
const C = `-c${values.conns}`;
const args = { ka: [C, '--timeout', '30s'], new: [C, '--timeout', '30s', '-H', 'Connection: close'], sni: [C, '--timeout', '30s', '-H', 'Connection: close'] };
type Mode = keyof typeof args;
try {
  ca('ca');
  ca('ica');
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ORIGIN} ssl crt ${join(dir, 'leaf-ca.pem')}\n  http-request return status 200 content-type application/json string "{\\"ok\\":true}"\n`,
    { tcp: true, global: `  tune.ssl.default-dh-param 2048\n  stats socket ${STATS} mode 600 level admin\n` })]);
  const pid: Record<string, Record<'intercept' | 'sni', number>> = {};
  const modes = values.modes.split(',') as Mode[];
  for (const k of ['A', 'B'] as const) {
    pid[k] = { intercept: 0, sni: 0 };
    for (const mode of ['intercept', 'sni'] as const) {
      if (mode === 'sni' && !modes.includes('sni')) continue;
      if (mode === 'intercept' && !modes.some((m) => m !== 'sni')) continue;
      const own = k === 'A' ? values['a-node-flags'] : values['b-node-flags'];
      const flags = [...benchProxyNodeFlags(), ...(values['node-flags'] ? values['node-flags'].split(' ') : []), ...(own ? own.split(' ') : [])];
      if (values['cpu-prof-dir']) flags.push(`--cpu-prof-dir=${join(values['cpu-prof-dir'], `${k}-${mode}`)}`);
      const env = values[k === 'A' ? 'a-env' : 'b-env'].split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const);
      const saved = env.map(([key]) => [key, process.env[key]] as const);
      for (const [key, v] of env) process.env[key] = v;
      const c = await startPinned(children, 1, join(trees[k], 'bin/node'), [...flags, scripts[k], '--mode', mode, '--port', String(ports[k][mode]), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], 'ready', 120_000);
      for (const [key, v] of saved) if (v === undefined) delete process.env[key]; else process.env[key] = v;
      pid[k]![mode] = c.pid!;
    }
  }
  if (values.haproxy) {
    // the intercepting HAProxy of bench/tls/run.ts and split.ts: its leaf from the interception CA, membrane's suite order, the same rules, a verified pooled upstream
    const h = await startPinned(children, 1, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'term', `frontend fe\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ports.H.intercept} ssl crt ${join(dir, 'leaf-ica.pem')} ciphersuites ${tls13Suites(INTERCEPT_CIPHERS)}\n  http-request deny deny_status 403 unless { method POST } { path /v1/chat/completions } or { method GET } { path /v1/models }\n  default_backend be\nbackend be\n  mode http\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN} ssl verify required ca-file ${join(dir, 'ca.crt')} sni str(${NAME}) verifyhost ${NAME}\n`, { tcp: true, global: '  tune.ssl.default-dh-param 2048\n' })]);
    pid.H = { intercept: h.pid!, sni: 0 };
  }
  const url = (k: Side, m: Mode) => `https://${NAME}:${m === 'sni' ? ports[k].sni : ports[k].intercept}/v1/models`;
  for (const k of sides) for (const m of modes) if (k !== 'H' || m !== 'sni') execFileSync('taskset', ['-c', '0', 'wrk', '-t1', '-c10', '-d2s', '-s', LUA, ...args[m].slice(1), url(k, m)]);
  /** the intercepting proxy's client handshakes so far, full and resumed (proxy-server.ts writes them on SIGUSR2) */
  // a tree whose proxy-server.ts does not count them would be killed by the signal
  const counts = { A: readFileSync(scripts.A, 'utf8').includes('SIGUSR2'), B: readFileSync(scripts.B, 'utf8').includes('SIGUSR2'), H: false };
  const handshakes = async (k: Side): Promise<{ full: number; resumed: number }> => {
    if (!counts[k]) return { full: NaN, resumed: NaN };
    const f = join(dir, `handshakes-${ports[k].intercept}.json`);
    rmSync(f, { force: true });
    process.kill(pid[k]!.intercept, 'SIGUSR2');
    for (let i = 0; i < 100; i++) {
      try { return JSON.parse(readFileSync(f, 'utf8')) as { full: number; resumed: number }; } catch { await new Promise((r) => setTimeout(r, 50)); }
    }
    return { full: NaN, resumed: NaN };
  };
  // the handshake each intercepting proxy makes with wrk's offer (OpenSSL's default): suite, group, signature, keys, tickets
  const ciphers = modes.some((m) => m !== 'sni') ? { A: await negotiatedHandshake(ports.A.intercept, NAME), B: await negotiatedHandshake(ports.B.intercept, NAME), H: values.haproxy ? await negotiatedHandshake(ports.H.intercept, NAME) : '', origin: await negotiatedHandshake(ORIGIN, NAME) } : undefined;
  const kids = (pid: number) => { try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };
  // with --perf, perf's own CPU would count as another process's: no runs again then (profiles, not numbers)
  const quiet = new QuietTurns([...children.map((c) => c.pid!), ...children.flatMap((c) => kids(c.pid!))], values.perf ? { redoMax: 0 } : {});
  const rows: Record<string, { rps: number[]; cpu: number[]; agent: number[]; up: number[]; full: number[]; resumed: number[] }> = {};
  for (let r = 0; r < ROUNDS; r++) {
    // each round starts with another side (A B H, B H A, ...; two sides: A B, B A)
    for (const m of modes) for (const k of sides.map((_, i) => sides[(i + r) % sides.length]!)) {
      if (k === 'H' && m === 'sni') continue;
      const p = pid[k]![m === 'sni' ? 'sni' : 'intercept'];
      // a run during which other processes took over 150 ms/s of CPU is run again (bench/placement.ts QuietTurns, as bench/tls/run.ts and bench/http/run.ts)
      let h0: { full: number; resumed: number } | undefined, c0 = 0, k0 = 0, o0 = 0;
      const w = await quiet.runAsync(async () => {
        h0 = m === 'sni' ? undefined : await handshakes(k);
        c0 = cpuUs(p); k0 = childrenCpuUs(p); o0 = originConns();
        const rec = values.perf ? spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', process.env.PERF_FREQ ?? '499', '-g', '-p', String(p), '-o', join(values.perf, `${m}-${k}-${r + 1}.data`)], { stdio: 'ignore' }) : undefined;
        const w = parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', ...args[m], `-d${SECS}s`, '--latency', '-s', LUA, url(k, m)]).toString());
        if (rec) await new Promise((r) => { rec.once('exit', r); rec.kill('SIGINT'); });
        return { value: w, secs: w.rps > 0 ? w.requests / w.rps : SECS };
      }, (w, _s0, _s1, _secs, others) => { if (others > quiet.maxMsPerS) console.error(`round ${r + 1} ${m} ${k}: ${w.rps.toFixed(0)} req/s, other processes ${others.toFixed(0)} ms/s: run again`); });
      const cpu = (cpuUs(p) - c0) / w.requests, agent = (childrenCpuUs(p) - k0) / w.requests, up = (originConns() - o0) / w.requests;
      const h1 = h0 ? await handshakes(k) : undefined;
      const full = h0 && h1 ? h1.full - h0.full : NaN, resumed = h0 && h1 ? h1.resumed - h0.resumed : NaN;
      const row = (rows[`${m} ${k}`] ??= { rps: [], cpu: [], agent: [], up: [], full: [], resumed: [] });
      row.rps.push(w.rps); row.cpu.push(cpu); row.agent.push(agent); row.up.push(up); row.full.push(full); row.resumed.push(resumed);
      console.error(`round ${r + 1} ${m} ${k}: ${w.rps.toFixed(0)} req/s, ${cpu.toFixed(1)} µs CPU/req (+ agent stand-in ${agent.toFixed(1)}), origin conns/req ${up.toFixed(3)}, client handshakes full/resumed ${full}/${resumed}, p50 ${w.p50.toFixed(2)} ms, errors ${w.errors}`);
    }
  }
  if (ciphers) console.log(`handshakes with wrk's offer (full, then resumed): A ${ciphers.A}; B ${ciphers.B};${ciphers.H ? ` H ${ciphers.H};` : ''} origin ${ciphers.origin}`);
  console.log(`runs: ${quiet.summary()}`);
  console.log(`A = ${scripts.A}${values['a-env'] ? ` (${values['a-env']})` : ''}\nB = ${scripts.B}${values['b-env'] ? ` (${values['b-env']})` : ''}${values.haproxy ? '\nH = HAProxy (intercepting)' : ''}\nload ${startLoad} at the start, ${readFileSync('/proc/loadavg', 'utf8').trim()} at the end; ${benchProxyMode()}`);
  for (const [k, v] of Object.entries(rows)) console.log(`${k}: median ${median(v.rps).toFixed(0)} req/s, ${median(v.cpu).toFixed(1)} µs CPU/req (${v.cpu.map((x) => x.toFixed(0)).join(' ')}), agent stand-in ${median(v.agent).toFixed(1)} µs/req (${v.agent.map((x) => x.toFixed(0)).join(' ')}), origin conns/req ${median(v.up).toFixed(3)}, client handshakes full/resumed per round ${v.full.map((f, i) => `${f}/${v.resumed[i]}`).join(' ')}`);
} finally {
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  rmSync(dir, { recursive: true, force: true });
}
