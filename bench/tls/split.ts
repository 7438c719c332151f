/**
 * Where an intercepted request's CPU goes, membrane against HAProxy doing the same termination and
 * re-encryption, in µs per request by layer: OpenSSL, kernel, libc, V8 (runtime, ICs, GC), JS
 * (JIT code), node/libuv, HAProxy's own code. Each proxy runs pinned to CPU 1 (wrk and the origin
 * on CPU 0, as bench/tls/run.ts), is sampled on-CPU by `perf record -e cpu-clock` (leaf frames only: no call graph, whose unwinding the kernel charges to the process) over one
 * wrk run, and its CPU per request (/proc) is split by the shares of its samples' leaf frames.
 * Membrane's OpenSSL is linked into the node binary: its frames are those of the binary that are
 * neither V8's nor node's nor libuv's (the top ones are printed, to check). The agent stand-in's
 * CPU (the proxy's child, bench/feed-agent.ts) is given beside, not split.
 *
 *   bin/node bench/tls/split.ts [--mode new|ka] [--secs 5] [--top 12]
 *
 * Run under `/work/wt/cpu work`: perf costs the process some CPU and the shares, not the µs, are
 * what to compare between runs on a shared machine. What the split tells is which layer the gap
 * is in (i-tls14, 2026-12-07: per new connection OpenSSL's work is HAProxy's; the gap is V8 and JS).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { INTERCEPT_CIPHERS } from '../../src/proxy/tls/issuer.ts';
import { tls13Suites } from './cipher.ts';
import { benchCa, benchProxyNodeFlags, cpuUs, haproxyCfg, parseWrk, startPinned } from '../support.ts';

/** The layer of a sample's leaf frame: its symbol and the object it is in, as `perf script` prints them. */
export function layerOf(sym: string, dso: string): string {
  if (dso.includes('kernel')) return 'kernel';
  if (/libcrypto|libssl/.test(dso)) return 'OpenSSL';
  if (/\/libc\.so|\/libm\.so|ld-linux/.test(dso)) return 'libc';
  if (dso.includes('[JIT]') || /\/perf-\d+\.map/.test(dso) || sym.startsWith('JS:')) return 'JS (JIT code)';
  if (/\/haproxy$/.test(dso)) return 'HAProxy';
  if (/\/node$/.test(dso)) {
    if (sym.startsWith('v8::') || sym.startsWith('Builtins_') || sym.startsWith('cppgc::') || sym.startsWith('heap::') || sym.startsWith('std::')) return 'V8';
    if (sym.startsWith('node::') || sym.startsWith('uv_') || sym.startsWith('uv__') || sym.startsWith('ncrypto::')) return 'node/libuv';
    // what is left of the node binary is the OpenSSL linked into it (SSL_*, ossl_*, x25519_*, sha256_*...)
    return 'OpenSSL';
  }
  return 'other';
}

/** Leaf frames of `perf script -F ip,sym,dso -G` output (a line per sample): [symbol, object] per sample. */
export function leafFrames(script: string): [string, string][] {
  const out: [string, string][] = [];
  for (const line of script.split('\n')) {
    // the object is the last parenthesised group; a symbol may hold parentheses and spaces (C++, JS:)
    const m = /^\s*[0-9a-f]+ (.*) \(([^()]*)\)$/.exec(line);
    if (m) out.push([m[1]!.replace(/\+0x[0-9a-f]+$/, ''), m[2]!]);
  }
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { mode: { type: 'string', default: 'new' }, secs: { type: 'string', default: '5' }, top: { type: 'string', default: '12' } } });
  const SECS = Number(values.secs);
  const close = values.mode !== 'ka';
  const REPO = resolve(import.meta.dirname, '../..');
  const NAME = 'api.bench.test';
  const ORIGIN = 18843, H_TERM = 18846, M_TERM = 18847;
  const dir = mkdtempSync(join(tmpdir(), 'bench-tlssplit-'));
  const children: ChildProcess[] = [];
  /** --perf-basic-prof's symbol map of the membrane proxy (/tmp/perf-PID.map), removed at the end */
  let perfMap = '';
  const LUA = join(dir, 'resolve.lua');
  writeFileSync(LUA, 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n');
  const wrk = (port: number, conns: number, secs: number) => parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${conns}`, `-d${secs}s`, '--timeout', '30s', '-s', LUA, ...(close ? ['-H', 'Connection: close'] : []), `https://${NAME}:${port}/v1/models`]).toString());
  const kids = (pid: number) => { try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };
  try {
    benchCa(dir, 'ca', NAME);
    benchCa(dir, 'ica', NAME);
    const global = '  tune.ssl.default-dh-param 2048\n';
    await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ORIGIN} ssl crt ${join(dir, 'leaf-ca.pem')}\n  http-request return status 200 content-type application/json string "{\\"ok\\":true}"\n`, { tcp: true, global })]);
    // the intercepting HAProxy of bench/tls/run.ts
    const h = await startPinned(children, 1, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'term', `frontend fe\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${H_TERM} ssl crt ${join(dir, 'leaf-ica.pem')} ciphersuites ${tls13Suites(INTERCEPT_CIPHERS)}\n  http-request deny deny_status 403 unless { method POST } { path /v1/chat/completions } or { method GET } { path /v1/models }\n  default_backend be\nbackend be\n  mode http\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN} ssl verify required ca-file ${join(dir, 'ca.crt')} sni str(${NAME}) verifyhost ${NAME}\n`, { tcp: true, global })]);
    const m = await startPinned(children, 1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), '--perf-basic-prof', join(REPO, 'bench/tls/proxy-server.ts'), '--mode', 'intercept', '--port', String(M_TERM), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], 'ready', 120_000);
    perfMap = `/tmp/perf-${m.pid}.map`;
    for (const p of [H_TERM, M_TERM]) { wrk(p, 10, 2); wrk(p, 50, 2); }
    const sides = [{ name: 'HAProxy', pid: h.pid!, port: H_TERM }, { name: 'membrane', pid: m.pid!, port: M_TERM }];
    const split: Record<string, { perReq: number; standIn: number; rps: number; layers: Map<string, number>; top: [string, number][] }> = {};
    for (const s of sides) {
      const data = join(dir, `${s.name}.data`);
      const rec = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', '999', '-p', String(s.pid), '-o', data], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 300));
      const standIn = kids(s.pid);
      const c0 = cpuUs(s.pid), k0 = standIn.reduce((a, p) => a + cpuUs(p), 0);
      const w = wrk(s.port, 50, SECS);
      const c1 = cpuUs(s.pid), k1 = standIn.reduce((a, p) => a + cpuUs(p), 0);
      await new Promise((r) => { rec.once('exit', r); rec.kill('SIGINT'); });
      const frames = leafFrames(execFileSync('perf', ['script', '-i', data, '-F', 'ip,sym,dso', '-G'], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] }).toString());
      const layers = new Map<string, number>();
      const ossl = new Map<string, number>();
      for (const [sym, dso] of frames) {
        const l = layerOf(sym, dso);
        layers.set(l, (layers.get(l) ?? 0) + 1);
        if (l === 'OpenSSL') ossl.set(sym, (ossl.get(sym) ?? 0) + 1);
      }
      const perReq = (c1 - c0) / w.requests;
      for (const [l, n] of layers) layers.set(l, (n / frames.length) * perReq);
      split[s.name] = { perReq, standIn: (k1 - k0) / w.requests, rps: w.rps, layers, top: [...ossl].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top)).map(([k, n]) => [k, n / frames.length]) };
      console.error(`${s.name}: ${w.rps.toFixed(0)} req/s, ${perReq.toFixed(0)} µs CPU per request (/proc), ${frames.length} samples, errors ${w.errors}`);
    }
    const names = [...new Set(Object.values(split).flatMap((s) => [...s.layers.keys()]))].sort((a, b) => (split.membrane!.layers.get(b) ?? 0) - (split.membrane!.layers.get(a) ?? 0));
    const hs = split.HAProxy!, ms = split.membrane!;
    console.log(`mode ${close ? 'new TLS connection per request' : 'keep-alive'}, wrk -c50 ${SECS} s per side; load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    console.log('| layer | HAProxy µs/req | membrane µs/req | membrane − HAProxy |');
    console.log('|---|---|---|---|');
    for (const n of names) {
      const a = hs.layers.get(n) ?? 0, b = ms.layers.get(n) ?? 0;
      console.log(`| ${n} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b - a) >= 0 ? '+' : ''}${(b - a).toFixed(0)} |`);
    }
    console.log(`| total (/proc) | ${hs.perReq.toFixed(0)} | ${ms.perReq.toFixed(0)} (+ agent stand-in ${ms.standIn.toFixed(0)}) | ${(ms.perReq / hs.perReq).toFixed(2)}× |`);
    console.log(`membrane's top OpenSSL leaf frames (share of its samples): ${ms.top.map(([k, v]) => `${k} ${(100 * v).toFixed(1)} %`).join(', ')}`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    rmSync(dir, { recursive: true, force: true });
    if (perfMap) rmSync(perfMap, { force: true });
  }
}
