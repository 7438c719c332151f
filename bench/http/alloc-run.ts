/**
 * Garbage per request of the HTTP proxy, by allocating frame: runs bench/http/proxy-server.ts (the
 * production proxy, its own process as the lab runs it, with this tree's V8 flags) with
 * bench/http/alloc-sample.ts loaded, against HAProxy answering 200, warms it up, samples one wrk
 * run (keep-alive or `Connection: close`, 50 connections) and prints the sampled bytes per request,
 * in total and for the largest rows. Sampled bytes do not depend on how busy the machine is (the
 * request count does not enter them but as the divisor), so a change's effect on the per-request
 * working set reads under a shared hold. Investigation only: the sampling slows the proxy.
 *
 *   bin/node bench/http/alloc-run.ts [--mode ka|close] [--secs 4] [--rows 25] [--rules 100] [--tree /other/checkout]
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { haproxyCfg, parseWrk, startPinned, treeProxyNodeFlags } from '../support.ts';

const { values } = parseArgs({ options: {
  mode: { type: 'string', default: 'ka' }, secs: { type: 'string', default: '4' }, rows: { type: 'string', default: '25' },
  rules: { type: 'string', default: '100' }, tree: { type: 'string' },
} });
const tree = resolve(values.tree ?? resolve(import.meta.dirname, '../..'));
const ORIGIN = 18380, PROXY = 18381;
const PATH = `/api/v1/resource${Number(values.rules) - 1}`;
const dir = mkdtempSync(join(tmpdir(), 'bench-httpalloc-'));
const out = join(dir, 'alloc.txt');
const children: ChildProcess[] = [];
const wrk = (secs: number, close: boolean) => parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', '-c50', `-d${secs}s`, ...(close ? ['-H', 'Connection: close'] : []), `http://127.0.0.1:${PROXY}${PATH}`]).toString());
try {
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
  process.env.MEMBRANE_BENCH_ALLOC_OUT = out;
  const flags = [...await treeProxyNodeFlags(tree), `--import=${join(import.meta.dirname, 'alloc-sample.ts')}`];
  const proxy = await startPinned(children, 1, join(tree, 'bin/node'), [...flags, join(tree, 'bench/http/proxy-server.ts'), '--port', String(PROXY), '--origin', String(ORIGIN), '--rules', values.rules], 'ready');
  const close = values.mode === 'close';
  wrk(2, false);
  wrk(2, true);
  proxy.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 200));
  const w = wrk(Number(values.secs), close);
  proxy.kill('SIGUSR1');
  for (let i = 0; i < 100 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 300));
  const rows = readFileSync(out, 'utf8').trim().split('\n').map((l) => { const t = l.indexOf('\t'); return [Number(l.slice(0, t)), l.slice(t + 1)] as const; });
  const total = rows.reduce((s, [b]) => s + b, 0);
  console.log(`${tree} ${values.mode}: ${w.requests} requests (${w.rps.toFixed(0)} req/s sampled, errors ${w.errors}), ${(total / w.requests).toFixed(0)} bytes sampled per request`);
  for (const [b, k] of rows.slice(0, Number(values.rows))) console.log(`${(b / w.requests).toFixed(0).padStart(6)}  ${k}`);
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
