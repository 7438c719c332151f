/**
 * HTTP proxy benchmark: the membrane HTTP proxy (100 L7 rules, flows and metrics on) against
 * HAProxy proxying the same traffic to the same origin, in the same run. The proxy under test
 * (membrane or HAProxy, one thread) is pinned to CPU 1 with all its threads; the origin (HAProxy
 * answering 200 itself) and the client share CPU 0. Measures:
 *   keep-alive req/s      wrk -t1 -c50, keep-alive
 *   Connection: close     wrk -t1 -c50 -H 'Connection: close' (a new connection per request)
 *   added p50/p99/p999    bench/http/one-conn.c: one connection, one request at a time, each
 *                         request's own latency, minus the same against the origin
 *   wrk -c1 added p99     kept for comparison with earlier runs; NOT one request's latency:
 *                         wrk 4 corrects for coordinated omission (stats_correct, run at its
 *                         end): every request slower than twice the mean interval between
 *                         requests adds phantom samples at its latency minus 1, 2, 3... intervals,
 *                         as if a client sending at the measured rate had been held back by it.
 *                         At one connection (interval ~0.1 ms) one 10 ms GC pause becomes ~100
 *                         samples between 0.1 and 10 ms: the p99 then says how much of the run
 *                         the proxy stalled, not what 1 % of requests waited. A loopback capture
 *                         of a wrk -c1 run with this correction applied to the requests' wire
 *                         latencies gives wrk's printed percentiles (p99 16.1 vs 18.8 ms, p50 0.28
 *                         vs 0.45 ms, load ~12), and its mean latency times the requests exceeded
 *                         the run's length (1.54 ms x 6999 requests in 5 s).
 * Each ratio is the median over the rounds of membrane / HAProxy in that round, its min–max in
 * parentheses; a floor is met when every round meets it. Proxy CPU per request from /proc.
 *
 *   [MEMBRANE_BENCH_FEED=0] bin/node bench/http/run.ts [--secs 8] [--rounds 2] [--rules 100] [--append]
 * By default the proxy runs as the lab and `membrane up` run it (--external-envoy-proxy): its own
 * process, the flows made in another (an agent stand-in, bench/feed-agent.ts, on the same CPU)
 * from the records sent over the feed socket. MEMBRANE_BENCH_FEED=0 measures the proxy inside the
 * agent (flows, metrics and ring in the proxy's process). The CPU per request rows count both
 * processes (the proxy's and the agent stand-in's) in the default mode.
 * With --append the result table and the command go to bench/RESULTS.md under
 * `## http, the proxy in its own process (the lab default)` (with MEMBRANE_BENCH_FEED=0, under
 * `## http, the proxy inside the agent (MEMBRANE_BENCH_FEED=0)`).
 * Needs wrk, haproxy and cc.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchOwnProcess, benchProxyNodeFlags, childrenCpuUs, cpuUs, haproxyCfg as writeHaproxyCfg, median, parseWrk, reportResults, startPinned, type WrkResult } from '../support.ts';
import { runLine } from '../tcp-suite.ts';
import { buildOneConn, runOneConn, type OneConnResult } from './one-conn.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' }, rules: { type: 'string', default: '100' }, append: { type: 'boolean', default: false } } });
const SECS = Number(values.secs);
const ROUNDS = Number(values.rounds);
const REPO = resolve(import.meta.dirname, '../..');
const ORIGIN = 18180, HAPROXY = 18181, MEMBRANE = 18182;
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-http-'));
const children: ChildProcess[] = [];
const startLoad = loadavg()[0]!;

const haproxyCfg = (name: string, body: string) => writeHaproxyCfg(dir, name, body);
const start = (cpu: number, cmd: string, args: string[], readyText?: string) => startPinned(children, cpu, cmd, args, readyText);

function wrk(port: number, conns: number, extra: string[] = []): WrkResult {
  const out = execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${conns}`, `-d${SECS}s`, '--latency', ...extra, `http://127.0.0.1:${port}${PATH}`]).toString();
  return parseWrk(out);
}
let oneConnBin = '';
const oneConn = (port: number): OneConnResult => runOneConn(oneConnBin, port, SECS, PATH);

type Kind = 'origin' | 'haproxy' | 'membrane';
/** CPU per request (µs): the proxy's process and, in its own process, the agent stand-in's (its child) */
interface Round { ka: WrkResult; close: WrkResult; wrk1: WrkResult; one: OneConnResult; kaCpu: number; closeCpu: number; kaAgent: number; closeAgent: number }
try {
  oneConnBin = buildOneConn(dir);
  await start(0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  const hap = await start(1, 'haproxy', ['-db', '-f', haproxyCfg('proxy', `frontend fe\n  bind 127.0.0.1:${HAPROXY}\n  default_backend be\nbackend be\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN}\n`)]);
  const mb = await start(1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), join(REPO, 'bench/http/proxy-server.ts'), '--port', String(MEMBRANE), '--origin', String(ORIGIN), '--rules', String(values.rules)], 'ready');
  // warm up (JIT, connection pools)
  for (const p of [ORIGIN, HAPROXY, MEMBRANE]) execFileSync('wrk', ['-t1', '-c10', '-d2s', `http://127.0.0.1:${p}${PATH}`]);

  const ports: Record<Kind, number> = { origin: ORIGIN, haproxy: HAPROXY, membrane: MEMBRANE };
  // taskset execs: the pid is the proxy's own (the origin's CPU is not the proxy's cost)
  const pids: Record<Kind, number | undefined> = { origin: undefined, haproxy: hap.pid, membrane: mb.pid };
  const res: Record<Kind, Round[]> = { origin: [], haproxy: [], membrane: [] };
  const kinds: Kind[] = ['origin', 'haproxy', 'membrane'];
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of kinds) {
      const cpu = () => [cpuUs(pids[k]), childrenCpuUs(pids[k])] as const;
      const c0 = cpu();
      const ka = wrk(ports[k], 50);
      const c1 = cpu();
      const one = oneConn(ports[k]);
      const wrk1 = wrk(ports[k], 1);
      const c2 = cpu();
      const close = wrk(ports[k], 50, ['-H', 'Connection: close']);
      const c3 = cpu();
      res[k].push({
        ka, close, wrk1, one,
        kaCpu: (c1[0] - c0[0] + c1[1] - c0[1]) / ka.requests, closeCpu: (c3[0] - c2[0] + c3[1] - c2[1]) / close.requests,
        kaAgent: (c1[1] - c0[1]) / ka.requests, closeAgent: (c3[1] - c2[1]) / close.requests,
      });
    }
  }
  const endLoad = loadavg()[0]!;
  type Get = (x: Round) => number;
  const med = (k: Kind, f: Get) => median(res[k].map(f));
  const ka: Get = (x) => x.ka.rps, cl: Get = (x) => x.close.rps;
  const p50: Get = (x) => x.one.p50, p99: Get = (x) => x.one.p99, p999: Get = (x) => x.one.p999, w99: Get = (x) => x.wrk1.p99;
  /** per round: membrane's value over HAProxy's (`added`: each minus the origin's in that round) */
  const ratios = (f: Get, added: boolean) => res.membrane.map((m, i) => {
    const o = added ? f(res.origin[i]!) : 0;
    return (f(m) - o) / (f(res.haproxy[i]!) - o);
  });
  const fmt = (v: number, unit: string) => unit === 'ms' ? `${v.toFixed(3)} ms` : unit === 'µs' ? `${v.toFixed(1)} µs` : v.toFixed(0);
  /** a row: medians of each proxy, the median ratio (min–max over the rounds), the goal and whether every round met it */
  const row = (label: string, f: Get, opt: { unit?: string; added?: boolean; goal?: string; ok?: (r: number) => boolean } = {}) => {
    const unit = opt.unit ?? '', o = opt.added ? med('origin', f) : 0;
    const rs = ratios(f, !!opt.added);
    const mark = opt.ok ? (rs.every(opt.ok) ? 'ok' : 'MISSED') : '';
    return `| ${label} | ${fmt(med('haproxy', f) - o, unit)} | ${fmt(med('membrane', f) - o, unit)} | ${median(rs).toFixed(2)} (${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)}) | ${opt.goal ?? ''} | ${mark} |`;
  };
  const feed = benchOwnProcess();
  const errs = (k: Kind) => res[k].reduce((s, x) => s + x.ka.errors + x.close.errors + x.wrk1.errors, 0);
  const cmd = `${feed ? '' : 'MEMBRANE_BENCH_FEED=0 '}bin/node bench/http/run.ts --secs ${SECS} --rounds ${ROUNDS} --rules ${values.rules}${values.append ? ' --append' : ''}`;
  const lines = [
    // its own section: --append replaces the latest block of the section it writes
    feed ? '## http, the proxy in its own process (the lab default)' : '## http, the proxy inside the agent (MEMBRANE_BENCH_FEED=0)', '',
    `Command: \`${cmd}\``, '',
    `${runLine(startLoad)}, ${endLoad.toFixed(2)} at the end. ` +
    `Loopback; origin = HAProxy answering 200 itself (CPU 0, with the client); proxy under test pinned to CPU 1 with all its threads (HAProxy nbthread 1 / one Node process). ` +
    `membrane: ${values.rules} HTTP rules (\`GET /api/v1/resource<i>\`; requests match the last), an L7 flow and http/flow metrics per request and response${feed ? ' (made by an agent stand-in in its own process on the same CPU, bench/feed-agent.ts, from the access records the proxy sends over the feed socket: the proxy in its own process, as the lab runs it)' : ' (in the proxy process, as the in-agent proxy)'}. ` +
    `${ROUNDS} interleaved rounds, ${SECS} s per measure; each ratio is the median of the rounds' membrane / HAProxy, their min–max in parentheses, a floor met when every round meets it. ` +
    'Added latency: bench/http/one-conn.c, one connection, one request at a time, each request\'s latency, minus the origin\'s. ' +
    'The wrk -c1 row is kept for comparison with earlier runs: wrk 4 corrects its percentiles for coordinated omission (a request slower than twice the mean interval adds samples at its latency minus each interval), so at one connection its p99 measures how long the proxy stalled over the run, not a request\'s latency (bench/http/run.ts says more).', '',
    '| measure | HAProxy | membrane | membrane / HAProxy | goal | |',
    '|---|---|---|---|---|---|',
    row('keep-alive req/s (50 conns)', ka, { goal: '≥ 0.60 each round', ok: (r) => r >= 0.6 }),
    row('`Connection: close` req/s (50 conns)', cl, { goal: '≥ 0.60 each round', ok: (r) => r >= 0.6 }),
    row('added p50 (1 conn, one request at a time)', p50, { unit: 'ms', added: true, goal: '≤ 1.5', ok: (r) => r <= 1.5 }),
    row('added p99 (1 conn, one request at a time)', p99, { unit: 'ms', added: true, goal: '≤ 3 each round', ok: (r) => r <= 3 }),
    row('added p999 (1 conn, one request at a time)', p999, { unit: 'ms', added: true }),
    row('wrk -c1 added p99 (coordinated-omission corrected)', w99, { unit: 'ms', added: true }),
    row(`proxy CPU per request, keep-alive${feed ? ' (proxy + agent stand-in)' : ''}`, (x) => x.kaCpu, { unit: 'µs' }),
    row(`proxy CPU per request, \`Connection: close\`${feed ? ' (proxy + agent stand-in)' : ''}`, (x) => x.closeCpu, { unit: 'µs' }),
    ...(feed ? [`| of which the agent stand-in, keep-alive / close | | ${med('membrane', (x) => x.kaAgent).toFixed(1)} / ${med('membrane', (x) => x.closeAgent).toFixed(1)} µs | | | |`] : []),
    '',
    `Origin alone: ${med('origin', ka).toFixed(0)} req/s keep-alive, one request at a time p50 ${med('origin', p50).toFixed(3)} / p99 ${med('origin', p99).toFixed(3)} / p999 ${med('origin', p999).toFixed(3)} ms, wrk -c1 p99 ${med('origin', w99).toFixed(3)} ms. ` +
    `Requests one at a time per round (median): origin ${med('origin', (x) => x.one.requests)}, HAProxy ${med('haproxy', (x) => x.one.requests)}, membrane ${med('membrane', (x) => x.one.requests)}. ` +
    `Errors (non-2xx, socket): HAProxy ${errs('haproxy')}, membrane ${errs('membrane')}. ` +
    `Per round (keep-alive, close, p99 ratios): ${res.membrane.map((_, i) => [ratios(ka, false)[i]!, ratios(cl, false)[i]!, ratios(p99, true)[i]!].map((v) => v.toFixed(2)).join(' / ')).join('; ')}.`, '',
  ];
  reportResults(lines, values.append);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
