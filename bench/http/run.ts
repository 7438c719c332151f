/**
 * HTTP proxy benchmark: wrk through the membrane HTTP proxy (100 L7 rules, flows and metrics on)
 * against HAProxy proxying the same traffic to the same origin, in the same run. The proxy under
 * test (membrane or HAProxy, one thread) is pinned to CPU 1; the origin (HAProxy answering 200
 * itself) and wrk share CPU 0. Measures:
 *   keep-alive req/s      wrk -t1 -c50, keep-alive
 *   added p50 / p99       wrk -t1 -c1 (one request at a time) minus the same against the origin
 *   Connection: close     wrk -t1 -c50 -H 'Connection: close' (a new connection per request)
 *
 *   [MEMBRANE_BENCH_FEED=1] bin/node bench/http/run.ts [--secs 8] [--rounds 2] [--rules 100] [--append]
 * MEMBRANE_BENCH_FEED=1 runs the proxy as the external L7 proxy process does: flows made in another
 * process from the records sent over the feed socket (A/B with the in-agent mode).
 * With --append the result table and the command go to bench/RESULTS.md under `## http`.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchProxyNodeFlags, haproxyCfg as writeHaproxyCfg, median, parseWrk, reportResults, startPinned, type WrkResult } from '../support.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' }, rules: { type: 'string', default: '100' }, append: { type: 'boolean', default: false } } });
const SECS = Number(values.secs);
const ROUNDS = Number(values.rounds);
const REPO = resolve(import.meta.dirname, '../..');
const ORIGIN = 18180, HAPROXY = 18181, MEMBRANE = 18182;
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-http-'));
const children: ChildProcess[] = [];

const haproxyCfg = (name: string, body: string) => writeHaproxyCfg(dir, name, body);
const start = (cpu: number, cmd: string, args: string[], readyText?: string) => startPinned(children, cpu, cmd, args, readyText);

type Wrk = WrkResult;
function wrk(port: number, conns: number, extra: string[] = []): Wrk {
  const out = execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${conns}`, `-d${SECS}s`, '--latency', ...extra, `http://127.0.0.1:${port}${PATH}`]).toString();
  return parseWrk(out);
}

try {
  await start(0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  await start(1, 'haproxy', ['-db', '-f', haproxyCfg('proxy', `frontend fe\n  bind 127.0.0.1:${HAPROXY}\n  default_backend be\nbackend be\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN}\n`)]);
  await start(1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), join(REPO, 'bench/http/proxy-server.ts'), '--port', String(MEMBRANE), '--origin', String(ORIGIN), '--rules', String(values.rules)], 'ready');
  // warm up (JIT, connection pools)
  for (const p of [ORIGIN, HAPROXY, MEMBRANE]) execFileSync('wrk', ['-t1', '-c10', '-d2s', `http://127.0.0.1:${p}${PATH}`]);

  const res: Record<string, { ka: Wrk[]; lat: Wrk[]; close: Wrk[] }> = {};
  for (const k of ['origin', 'haproxy', 'membrane']) res[k] = { ka: [], lat: [], close: [] };
  const ports: Record<string, number> = { origin: ORIGIN, haproxy: HAPROXY, membrane: MEMBRANE };
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of ['origin', 'haproxy', 'membrane']) {
      res[k]!.ka.push(wrk(ports[k]!, 50));
      res[k]!.lat.push(wrk(ports[k]!, 1));
      res[k]!.close.push(wrk(ports[k]!, 50, ['-H', 'Connection: close']));
    }
  }
  const m = (k: string, w: 'ka' | 'lat' | 'close', f: keyof Wrk) => median(res[k]![w].map((x) => x[f]));
  const errs = (k: string) => ['ka', 'lat', 'close'].reduce((s, w) => s + res[k]![w as 'ka'].reduce((a, x) => a + x.errors, 0), 0);
  const row = (label: string, h: number, mb: number, goal: string, ratio: number, ok: boolean, unit = '') =>
    `| ${label} | ${h.toFixed(unit === 'ms' ? 3 : 0)}${unit ? ` ${unit}` : ''} | ${mb.toFixed(unit === 'ms' ? 3 : 0)}${unit ? ` ${unit}` : ''} | ${ratio.toFixed(2)} | ${goal} | ${ok ? 'ok' : 'MISSED'} |`;
  const kaH = m('haproxy', 'ka', 'rps'), kaM = m('membrane', 'ka', 'rps');
  const clH = m('haproxy', 'close', 'rps'), clM = m('membrane', 'close', 'rps');
  const o50 = m('origin', 'lat', 'p50'), o99 = m('origin', 'lat', 'p99');
  const a50H = m('haproxy', 'lat', 'p50') - o50, a50M = m('membrane', 'lat', 'p50') - o50;
  const a99H = m('haproxy', 'lat', 'p99') - o99, a99M = m('membrane', 'lat', 'p99') - o99;
  const feed = process.env.MEMBRANE_BENCH_FEED === '1';
  const cmd = `${feed ? 'MEMBRANE_BENCH_FEED=1 ' : ''}bin/node bench/http/run.ts --secs ${SECS} --rounds ${ROUNDS} --rules ${values.rules}${values.append ? ' --append' : ''}`;
  const lines = [
    '## http', '',
    `Command: \`${cmd}\``, '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, ${cpus().length} vCPU (${cpus()[0]?.model.trim()}), shared with other work. ` +
    `Loopback; origin = HAProxy answering 200 itself (CPU 0, with wrk -t1); proxy under test pinned to CPU 1 (HAProxy nbthread 1 / one Node process). ` +
    `membrane: ${values.rules} HTTP rules (\`GET /api/v1/resource<i>\`; requests match the last), an L7 flow and http/flow metrics per request and response${feed ? ' (made by an agent stand-in in its own process, bench/feed-agent.ts, from the access records the proxy sends over the feed socket: the external proxy process)' : ' (in the proxy process, as the in-agent proxy)'}. ` +
    `Median of ${ROUNDS} interleaved rounds, ${SECS} s each. Added latency = p50/p99 at one connection, one request at a time, minus the origin's.`, '',
    '| measure | HAProxy | membrane | membrane / HAProxy | goal | |',
    '|---|---|---|---|---|---|',
    row('keep-alive req/s (50 conns)', kaH, kaM, '≥ 0.40 (floor 0.25)', kaM / kaH, kaM / kaH >= 0.4),
    row('added p50 (1 conn)', a50H, a50M, '≤ 1.5', a50M / a50H, a50M / a50H <= 1.5, 'ms'),
    row('added p99 (1 conn)', a99H, a99M, '', a99M / a99H, true, 'ms'),
    row('`Connection: close` req/s (50 conns)', clH, clM, '≥ 0.50', clM / clH, clM / clH >= 0.5),
    '',
    `Origin alone: ${m('origin', 'ka', 'rps').toFixed(0)} req/s keep-alive, p50 ${o50.toFixed(3)} ms / p99 ${o99.toFixed(3)} ms at one connection. ` +
    `Errors (non-2xx, socket): HAProxy ${errs('haproxy')}, membrane ${errs('membrane')}.`, '',
  ];
  reportResults(lines, values.append);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
