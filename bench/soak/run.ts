/**
 * Memory soak of a membrane proxy under sustained load at a fraction of its measured capacity:
 * RSS (and V8 heap, external, array buffers as the proxy reports them) sampled every --sample
 * seconds, and whether it stays flat after warm-up (±10 % of the first sample after --warmup).
 * The proxy runs as its benchmark runs it (bench/tls/proxy-server.ts, bench/http/proxy-server.ts)
 * pinned to CPU 1; the origin (HAProxy) and wrk share CPU 0.
 *
 *   bin/node bench/soak/run.ts [--proxy tls-intercept-new] [--secs 60] [--sample 10] [--warmup 20]
 *                              [--fraction 0.5 [--capacity-secs 10] | --rate N] [--node-flags=--trace-gc]
 *                              [--port 18543] [--append]
 * proxies: tls-intercept-new (TLS interception, a new TLS connection per request), tls-intercept-ka,
 * tls-sni (SNI passthrough, new connections), http-ka, http-close, dns (bench/dns/proxy-server.ts,
 * dnsmasq upstream, dnsperf -Q at the rate).
 *
 * Rate: a fixed offered rate, `--rate N` (req/s, q/s for dns), or by default `fraction` of the
 * proxy's capacity measured in this run, on the same lab just before the soak: an unpaced load
 * (wrk -c50 without delay, dnsperf -q 64) for --capacity-secs after a warm-up of half that (so the
 * JIT and the pools are warm), its rate printed with the load average in the section. A capacity
 * recorded elsewhere goes stale (the HTTP close path went from 6468 to ~14,000 req/s after the
 * 2026-12-05 baseline the soak read then); one measured on a loaded machine is low, and says so
 * beside it. A capacity below 10/s is refused (nothing measured: give --rate).
 * wrk paces each of its connections (Lua `delay()`); dnsperf -Q for dns. Bounded: the load runs --secs.
 * Each sample row also says the load average, the proxy's CPU share over the interval (/proc) and,
 * for dns, the queries answered in it; the verdict is "flat" only when the achieved rate is at
 * least 80 % of the offered one (a soak that did not carry its load says so instead).
 * With --append the table and the command go to bench/RESULTS.md under `## soak`.
 * A leak or V8's heap growing: MEMBRANE_BENCH_GC=1 with --node-flags=--expose-gc samples after a
 * full GC (live bytes); MEMBRANE_BENCH_CHILD_LOG=D keeps the proxy's output in D/<pid>.log (e.g.
 * --trace-gc-nvp: each scavenge's promoted bytes and the old generation after it);
 * --heapsnapshot-signal=SIGUSR2 and bench/heap-diff.ts say what stayed between two snapshots.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchCa, benchOwnProcess, benchProxyNodeFlags, haproxyCfg as writeHaproxyCfg, parseWrk, startPinned } from '../support.ts';

const { values } = parseArgs({
  options: {
    proxy: { type: 'string', default: 'tls-intercept-new' }, secs: { type: 'string', default: '60' }, sample: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '20' }, fraction: { type: 'string', default: '0.5' }, append: { type: 'boolean', default: false },
    'node-flags': { type: 'string', default: '' }, rate: { type: 'string' }, port: { type: 'string', default: '18543' },
    'capacity-secs': { type: 'string', default: '10' },
  },
});
const KINDS = ['tls-intercept-new', 'tls-intercept-ka', 'tls-sni', 'http-ka', 'http-close', 'dns'] as const;
type Kind = (typeof KINDS)[number];
const KIND = values.proxy as Kind;
if (!KINDS.includes(KIND)) throw new Error(`--proxy: one of ${KINDS.join(', ')}`);
const SECS = Number(values.secs), SAMPLE = Number(values.sample), WARMUP = Number(values.warmup), FRACTION = Number(values.fraction);
const CAP_SECS = Number(values['capacity-secs']);
if (!(SECS >= 10 && SECS <= 3600 && SAMPLE >= 1 && FRACTION > 0 && FRACTION <= 1 && CAP_SECS >= 2 && CAP_SECS <= 120)) {
  throw new Error('--secs 10..3600, --sample ≥ 1, --fraction (0, 1], --capacity-secs 2..120');
}
const REPO = resolve(import.meta.dirname, '../..');
const NAME = 'api.bench.test';
/** --port P: the origin listens on P, the proxy on P + 4 (another port lets a second soak run beside one) */
const ORIGIN = Number(values.port), PROXY = ORIGIN + 4, CONNS = 50;
const tls = KIND.startsWith('tls');
const dns = KIND === 'dns';
const DNS_UP = '127.0.0.2';
const close = KIND !== 'tls-intercept-ka' && KIND !== 'http-ka';
const dir = mkdtempSync(join(tmpdir(), 'bench-soak-'));
const children: ChildProcess[] = [];
/** extra flags for the proxy's node (e.g. --trace-gc: its lines go to stdout, counted below) */
const NODE_FLAGS = [...benchProxyNodeFlags(), ...(values['node-flags'] ? values['node-flags'].split(/\s+/) : [])];

const ca = (name: string): void => benchCa(dir, name, NAME);
/** the benches' HAProxy configuration (`mode http` defaults: without it HAProxy ignored `http-request return` and closed every connection, and the HTTP soaks measured 503s) */
const haproxyCfg = (name: string, body: string) => writeHaproxyCfg(dir, name, body);
/** wrk against the proxy; `delayMs` > 0 paces each connection (Lua delay()). Returns req/s. */
function wrkArgs(secs: number, delayMs: number): string[] {
  const lua = join(dir, `pace-${delayMs}.lua`);
  writeFileSync(lua, `wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n${delayMs > 0 ? `function delay() return ${delayMs} end\n` : ''}`);
  const url = tls ? `https://${NAME}:${PROXY}/v1/models` : `http://127.0.0.1:${PROXY}/api/v1/resource0`;
  return ['-c', '0', 'wrk', '-t1', `-c${CONNS}`, `-d${secs}s`, '-s', lua, ...(close ? ['-H', 'Connection: close'] : []), url];
}
const rps = (out: string) => Number((dns ? /Queries per second:\s+([0-9.]+)/ : /Requests\/sec:\s+([0-9.]+)/).exec(out)?.[1] ?? NaN);
/** A load generator's sent total and its errors: wrk's non-2xx and socket errors, dnsperf's lost queries. */
function loadErrors(out: string): { total: number; errors: number } {
  if (!dns) { const w = parseWrk(out); return { total: w.requests, errors: w.errors }; }
  return { total: Number(/Queries sent:\s+(\d+)/.exec(out)?.[1] ?? 0), errors: Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0) };
}
/** dnsperf against the DNS proxy: unpaced (-q 64) for the capacity, or -Q qps */
function dnsperfArgs(secs: number, qps: number): string[] {
  return ['-c', '0', 'dnsperf', '-s', '127.0.0.1', '-p', String(PROXY), '-d', join(dir, 'q.txt'), '-l', String(secs), '-c', '8', ...(qps > 0 ? ['-Q', String(Math.round(qps))] : ['-q', '64']), '-t', '2'];
}

interface Mem { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; queries?: number }
const MB = (b: number) => (b / 1048576).toFixed(1);
const load1 = () => readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!;
/** utime + stime of a process in clock ticks (10 ms) */
const cpuTicks = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8'); const r = f.slice(f.lastIndexOf(')') + 2).split(' '); return Number(r[11]) + Number(r[12]); };

let offered = values.rate !== undefined ? Number(values.rate) : NaN;
let rateFrom = '--rate';
if (values.rate !== undefined && !(offered >= 1)) throw new Error(`--rate ${values.rate}: a rate of at least 1 per second`);

/** Runs the load generator (`args` for taskset) to its end; its stdout. */
function runLoad(args: string[]): Promise<string> {
  return new Promise<string>((res, rej) => {
    const w = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(w);
    let o = '';
    w.stdout!.on('data', (d: Buffer) => { o += d; });
    w.once('exit', (c) => (c === 0 ? res(o) : rej(new Error(`load generator exited ${c}`))));
  });
}
const unpaced = (secs: number) => (dns ? dnsperfArgs(secs, 0) : wrkArgs(secs, 0));

try {
  let proxy: ChildProcess;
  const env = { ...process.env, MEMBRANE_BENCH_MEM_MS: String(SAMPLE * 1000) };
  if (dns) {
    writeFileSync(join(dir, 'q.txt'), Array.from({ length: 100 }, (_, i) => `q${i}.bench.lab A`).join('\n') + '\n');
    await startPinned(children, 0, 'dnsmasq', ['-k', '--conf-file=/dev/null', `--listen-address=${DNS_UP}`, '--bind-interfaces', `--port=${PROXY}`, '--no-resolv', '--no-hosts',
      '--address=/bench.lab/198.51.100.77', '--user=root', `--pid-file=${join(dir, 'dm.pid')}`, '--cache-size=10000', '--local-ttl=300']);
    proxy = spawn('taskset', ['-c', '1', join(REPO, 'bin/node'), ...NODE_FLAGS, join(REPO, 'bench/dns/proxy-server.ts'), '--port', String(PROXY), '--upstream', DNS_UP], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  } else if (tls) {
    ca('ca');
    ca('ica');
    await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ORIGIN} ssl crt ${join(dir, 'leaf-ca.pem')}\n  http-request return status 200 content-type application/json string "{\\"ok\\":true}"\n`)]);
    const mode = KIND === 'tls-sni' ? 'sni' : 'intercept';
    proxy = spawn('taskset', ['-c', '1', join(REPO, 'bin/node'), ...NODE_FLAGS, join(REPO, 'bench/tls/proxy-server.ts'), '--mode', mode, '--port', String(PROXY), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg('origin', `frontend origin\n  bind 127.0.0.1:${ORIGIN}\n  http-request return status 200 content-type text/plain string "ok"\n`)]);
    proxy = spawn('taskset', ['-c', '1', join(REPO, 'bin/node'), ...NODE_FLAGS, join(REPO, 'bench/http/proxy-server.ts'), '--port', String(PROXY), '--origin', String(ORIGIN), '--rules', '100'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  }
  children.push(proxy);
  // MEMBRANE_BENCH_CHILD_LOG=D: the proxy's output also to D/<pid>.log, as startPinned's children
  // (e.g. --trace-gc-verbose's old-generation limits, which the soak itself does not read)
  const childLog = process.env.MEMBRANE_BENCH_CHILD_LOG ? join(process.env.MEMBRANE_BENCH_CHILD_LOG, `${proxy.pid}.log`) : '';
  if (childLog) for (const s of [proxy.stdout!, proxy.stderr!]) s.on('data', (d: Buffer) => appendFileSync(childLog, d));
  const samples: { t: number; m: Mem; load: string; cpu: number; wallMs: number }[] = [];
  let lastTicks = 0, lastAt = 0;
  const majors: string[] = [];
  let t0 = 0;
  let out = '';
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`proxy not ready in 90 s: ${out}`)), 90_000);
    proxy.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (out.includes('ready')) { clearTimeout(t); res(); }
      let i: number;
      while ((i = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, i);
        out = out.slice(i + 1);
        if (/Mark-Compact|Mark-Sweep/.test(line) && t0) majors.push(`${Math.round((Date.now() - t0) / 1000)}s ${line.replace(/^\[[^\]]*\]\s*/, '')}`);
        if (line.startsWith('mem ') && t0) {
          const ticks = cpuTicks(proxy.pid!), now = Date.now();
          samples.push({ t: Math.round((now - t0) / 1000), m: JSON.parse(line.slice(4)) as Mem, load: load1(), cpu: ((ticks - lastTicks) * 10) / Math.max(1, now - lastAt), wallMs: now - lastAt });
          lastTicks = ticks;
          lastAt = now;
        }
      }
    });
    proxy.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
    proxy.once('exit', (c) => { clearTimeout(t); rej(new Error(`proxy exited ${c}: ${out}`)); });
  });
  if (values.rate === undefined) {
    // the capacity on this lab now: a warm-up, then the unpaced measure (the soak's RSS samples start after it)
    const warm = Math.max(1, Math.round(CAP_SECS / 2));
    await runLoad(unpaced(warm));
    const loadAt = load1();
    const capOut = await runLoad(unpaced(CAP_SECS));
    const capacity = rps(capOut);
    // a capacity of errors (503s, resets, lost queries) is no capacity
    const { errors: capErrors, total: capTotal } = loadErrors(capOut);
    if (!(capacity >= 10) || capErrors > 0.01 * Math.max(1, capTotal)) {
      throw new Error(`${KIND}: the unpaced capacity measured ${capacity} ${dns ? 'q' : 'req'}/s with ${capErrors} errors of ${capTotal}: nothing to take a fraction of; give --rate N`);
    }
    offered = capacity * FRACTION;
    rateFrom = `${FRACTION} × ${capacity.toFixed(0)}, the proxy's capacity measured in this run: unpaced for ${CAP_SECS} s after a ${warm} s warm-up, load average ${loadAt}`;
  }
  // each connection: one request per (delay + latency); latency is small next to the delay at half load
  const delayMs = Math.max(1, Math.round((CONNS * 1000) / offered));
  console.error(`${KIND}: offered ${offered.toFixed(0)} ${dns ? 'q' : 'req'}/s from ${rateFrom}: ${dns ? `dnsperf -Q ${offered.toFixed(0)}` : `${CONNS} connections, ${delayMs} ms apart`}, ${SECS} s; load ${load1()}`);
  // a proxy that dies during the soak ends it (wrk against a closed port measures nothing)
  let died = '';
  proxy.once('exit', (code, sig) => { died = `the proxy exited at ${Math.round((Date.now() - t0) / 1000)} s (${sig ?? `code ${code}`})`; for (const c of children) if (c !== proxy && c.exitCode === null) c.kill('SIGTERM'); });
  t0 = lastAt = Date.now();
  lastTicks = cpuTicks(proxy.pid!);
  const loadStart = load1();
  const soakOut = await new Promise<string>((res, rej) => {
    const w = spawn('taskset', dns ? dnsperfArgs(SECS, offered) : wrkArgs(SECS, delayMs), { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(w);
    let o = '';
    w.stdout!.on('data', (d: Buffer) => { o += d; });
    w.once('exit', (c) => (c === 0 || died ? res(o) : rej(new Error(`load generator exited ${c}`))));
  });
  await new Promise((r) => setTimeout(r, 500));
  const achieved = rps(soakOut);
  // answers that were not the origin's: wrk's non-2xx and socket errors, dnsperf's lost queries
  const { total, errors } = loadErrors(soakOut);
  const after = samples.filter((s) => s.t >= WARMUP);
  const base = after[0]?.m.rss ?? NaN;
  const maxDev = Math.max(...after.map((s) => Math.abs(s.m.rss - base) / base));
  const carried = achieved >= 0.8 * offered;
  const flat = after.length >= 2 && maxDev <= 0.1;
  const verdict = died ? `no verdict: ${died}` : errors > 0.01 * Math.max(1, total) ? `no verdict: ${errors} of ${total} ${dns ? 'queries lost' : 'responses were errors (non-2xx or socket)'}`
    : !carried
    ? `not a soak at the offered rate: achieved ${achieved.toFixed(0)} of ${offered.toFixed(0)} offered (${((achieved / offered) * 100).toFixed(0)} %), so ${flat ? 'the flat RSS says little' : 'RSS NOT flat even so'}`
    : flat ? 'flat (±10 %)' : 'NOT flat';
  // the sawtooth of V8's heap between full GCs makes any one sample a noisy baseline: a leak also
  // shows as the second half's peak above the first half's
  const half = Math.floor(after.length / 2);
  const peak = (xs: typeof after) => Math.max(...xs.map((s) => s.m.rss));
  const envelope = after.length >= 4 ? ` Peak RSS after the warm-up, first half ${MB(peak(after.slice(0, half)))} MB, second half ${MB(peak(after.slice(half)))} MB (${(((peak(after.slice(half)) / peak(after.slice(0, half))) - 1) * 100).toFixed(1)} %).` : '';
  const loadEnd = load1();
  const rows = samples.map((s, i) => {
    const q = dns && s.m.queries !== undefined && i > 0 && samples[i - 1]!.m.queries !== undefined ? ` ${((s.m.queries - samples[i - 1]!.m.queries!) * 1000 / s.wallMs).toFixed(0)} |` : dns ? ' |' : '';
    return `| ${s.t} | ${MB(s.m.rss)} | ${MB(s.m.heapUsed)} | ${MB(s.m.heapTotal)} | ${MB(s.m.external)} | ${MB(s.m.arrayBuffers)} | ${s.load} | ${(s.cpu * 100).toFixed(0)} % |${q}`;
  });
  // the proxy's mode (by default in its own process, as the lab runs it; MEMBRANE_BENCH_FEED=0: inside
  // the agent) and a scheduling class or niceness given from outside (chrt, nice) change what the
  // numbers mean: the command says both
  const feedEnv = benchOwnProcess() ? '' : 'MEMBRANE_BENCH_FEED=0 ';
  const stat = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  const [niceness, rtPriority, policy] = [Number(stat[16]), Number(stat[37]), Number(stat[38])];
  const sched = (policy === 1 ? `chrt -f ${rtPriority} ` : policy === 2 ? `chrt -r ${rtPriority} ` : '') + (niceness !== 0 ? `nice -n ${niceness} ` : '');
  const cmd = `${sched}${feedEnv}bin/node bench/soak/run.ts --proxy ${KIND} --secs ${SECS} --sample ${SAMPLE} --warmup ${WARMUP}${values.port !== '18543' ? ` --port ${values.port}` : ''}${values.rate !== undefined ? ` --rate ${values.rate}` : ` --fraction ${FRACTION} --capacity-secs ${CAP_SECS}`}`;
  const lines = [
    `### soak: ${KIND}`, '',
    `Command: \`${cmd}\``, '',
    `Run ${new Date(t0).toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}, 2 vCPU shared with other work, load average ${loadStart} at the start, ${loadEnd} at the end. ` +
    `Offered ${offered.toFixed(0)} ${dns ? 'q' : 'req'}/s (${rateFrom}), achieved ${achieved.toFixed(0)} ${dns ? 'q' : 'req'}/s over ${SECS} s (${dns ? 'dnsperf -c 8' : `wrk -c${CONNS}`}), errors ${errors} of ${total}. ` +
    `RSS after the ${WARMUP} s warm-up: ${after.length ? `${MB(base)} → ${MB(after.at(-1)!.m.rss)} MB (min ${MB(Math.min(...after.map((s) => s.m.rss)))}, max ${MB(Math.max(...after.map((s) => s.m.rss)))}), largest deviation ${(maxDev * 100).toFixed(1)} %` : 'no samples'} ⇒ ${verdict}.${envelope}`, '',
    `| t (s) | RSS MB | V8 heap used MB | V8 heap total MB | external MB | array buffers MB | load (1 min) | proxy CPU |${dns ? ' q/s answered |' : ''}`, `|---|---|---|---|---|---|---|---|${dns ? '---|' : ''}`, ...rows, '',
  ];
  console.log(lines.join('\n'));
  if (majors.length) console.error(`full GCs of the proxy (--trace-gc):\n${majors.join('\n')}`);
  if (values.append) {
    const file = join(REPO, 'bench/RESULTS.md');
    const text = readFileSync(file, 'utf8');
    // under a `## soak` heading of its own unless the file's last section is one
    const lastSection = /\n## ([^\n]*)\n(?![\s\S]*\n## )/.exec(text)?.[1] ?? '';
    appendFileSync(file, `${text.endsWith('\n') ? '' : '\n'}${lastSection.startsWith('soak') ? '\n' : '\n## soak\n\n'}${lines.join('\n')}`);
  }
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
