/** Helpers shared by the benchmarks: processes pinned to a CPU, started and tracked for cleanup. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AGENT_NODE_FLAGS, PROXY_NODE_FLAGS } from '../src/lab/names.ts';

/**
 * Whether the L7 benches (bench/http, bench/tls, bench/soak: bench/proxy-harness.ts) run the proxy
 * as the lab and `membrane up` do by default: in its own process (--external-envoy-proxy, as
 * Cilium 1.16+ runs Envoy as its own DaemonSet), its access records going over the feed socket to
 * an agent stand-in (bench/feed-agent.ts) that makes the flows. MEMBRANE_BENCH_FEED=0 measures the
 * proxy inside the agent instead (flows, metrics and ring in the proxy's process).
 */
export function benchOwnProcess(): boolean {
  const v = process.env.MEMBRANE_BENCH_FEED;
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new Error(`E_BENCH_FEED: MEMBRANE_BENCH_FEED=${v}: want 1 (the proxy in its own process, the default) or 0 (the proxy inside the agent)`);
}

/** The bench's proxy mode in words, for its printed header: what benchOwnProcess() chose. */
export function benchProxyMode(): string {
  return benchOwnProcess() ? 'the proxy in its own process (the lab default)' : 'the proxy inside the agent (MEMBRANE_BENCH_FEED=0)';
}

/**
 * V8 flags for a bench's membrane proxy process: those of the production process it stands for,
 * the L7 proxy process's (the default, benchOwnProcess()) or, with MEMBRANE_BENCH_FEED=0, the
 * agent's (flows and ring in the same process, the in-agent proxy). The young generation's size
 * decides both the process's memory and how much each scavenge copies (the flow ring's flows,
 * ~1.5 KB each).
 */
export function benchProxyNodeFlags(): string[] {
  return [...(benchOwnProcess() ? PROXY_NODE_FLAGS : AGENT_NODE_FLAGS)];
}

/**
 * benchProxyNodeFlags() as another checkout `tree` defines them (its src/lab/names.ts): a bench
 * measuring that tree's proxy (--tree, ab.ts --a) runs it with that tree's production argv, so a
 * change of the flags is part of what main against a branch compares.
 */
export async function treeProxyNodeFlags(tree: string): Promise<string[]> {
  const names = await import(pathToFileURL(join(tree, 'src/lab/names.ts')).href) as { PROXY_NODE_FLAGS: readonly string[]; AGENT_NODE_FLAGS: readonly string[] };
  return [...(benchOwnProcess() ? names.PROXY_NODE_FLAGS : names.AGENT_NODE_FLAGS)];
}

/** V8 flags of the agent stand-in (bench/feed-agent.ts): the agent's, as the lab starts it. */
export function benchAgentNodeFlags(): string[] {
  // MEMBRANE_BENCH_AGENT_FLAGS: V8 flags added to the stand-in's (an experiment: --trace-gc, young-generation sizes)
  return [...AGENT_NODE_FLAGS, ...(process.env.MEMBRANE_BENCH_AGENT_FLAGS ?? '').split(' ').filter(Boolean)];
}

/** Removes `name VALUE` from `args` (a script's argv) and returns VALUE as a number, or `dflt` when absent. */
export function takeNumberArg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
}

/**
 * Starts `cmd` pinned to `cpu` (taskset) and adds it to `children` (the caller kills them all at
 * the end). Resolves when `readyText` appears on its output (`readyMs`, 60 s, at most: a proxy and
 * its agent stand-in compile for seconds on a loaded machine), or after 800 ms when
 * there is nothing to wait for; rejects if it exits first.
 */
export function startPinned(children: ChildProcess[], cpu: number, cmd: string, args: string[], readyText?: string, readyMs = 60_000): Promise<ChildProcess> {
  const c = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return new Promise((res, rej) => {
    let out = '';
    const t = setTimeout(() => (readyText ? rej(new Error(`${cmd} not ready: ${out}`)) : res(c)), readyText ? readyMs : 800);
    // MEMBRANE_BENCH_CHILD_LOG=D: every child's output also to D/<pid>.log (e.g. a proxy's --trace-gc-nvp)
    const log = process.env.MEMBRANE_BENCH_CHILD_LOG ? join(process.env.MEMBRANE_BENCH_CHILD_LOG, `${c.pid}.log`) : '';
    const on = (d: Buffer) => { if (log) appendFileSync(log, d); out += d; if (readyText && out.includes(readyText)) { clearTimeout(t); res(c); } };
    c.stdout!.on('data', on);
    c.stderr!.on('data', on);
    c.once('exit', (code) => { clearTimeout(t); rej(new Error(`${cmd} exited ${code}: ${out}`)); });
  });
}

/** The middle value (the upper one of an even count). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** CPU time (user + system) of a process so far, µs (/proc/PID/stat, clock ticks of 10 ms). */
export function cpuUs(pid: number | undefined): number {
  if (!pid) return 0;
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * 10_000;
}

/**
 * Busy time of one CPU so far, µs (/proc/stat: user, nice, system, irq, softirq, steal; 10 ms
 * ticks). Less the pinned proxy's own CPU time over the same stretch, what else ran on its CPU.
 */
export function cpuBusyUs(cpu: number): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return 0;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) * 10_000;
}

/**
 * CPU time of a process's children so far, µs: with the proxy in its own process
 * (benchOwnProcess()), the agent stand-in making the flows. 0 when the kernel has no
 * /proc/PID/task/PID/children (CONFIG_PROC_CHILDREN).
 */
export function childrenCpuUs(pid: number | undefined): number {
  if (!pid) return 0;
  let us = 0;
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) us += cpuUs(Number(c));
  } catch { /* no children file: the proxy alone */ }
  return us;
}

/** wrk's `12.5us` / `1.2ms` / `2s` in ms. */
function ms(v: string): number {
  const m = /^([0-9.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

export interface WrkResult { rps: number; p50: number; p99: number; requests: number; errors: number }

/** What a `wrk --latency` run printed: req/s, p50/p99 (ms), requests, errors (non-2xx/3xx, connect, write, timeout). */
export function parseWrk(out: string): WrkResult {
  const nonOk = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([0-9.]+)/.exec(out)?.[1]),
    p50: ms(/\n\s+50%\s+(\S+)/.exec(out)?.[1] ?? ''),
    p99: ms(/\n\s+99%\s+(\S+)/.exec(out)?.[1] ?? ''),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    errors: nonOk + (sock ? Number(sock[1]) + Number(sock[3]) + Number(sock[4]) : 0),
  };
}

/** A one-thread HAProxy configuration file in `dir`: `defaults` for HTTP keep-alive unless `tcp`. */
export function haproxyCfg(dir: string, name: string, body: string, opts: { tcp?: boolean; global?: string } = {}): string {
  const f = join(dir, `${name}.cfg`);
  const defaults = opts.tcp ? '' : '  mode http\n';
  writeFileSync(f, `global\n  nbthread 1\n  maxconn 4000\n  log /dev/null local0\n${opts.global ?? ''}defaults\n${defaults}  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n${opts.tcp ? '' : '  option http-keep-alive\n'}${body}`);
  return f;
}

/**
 * Prints a result section (`lines`, starting with its `## name` heading) and, with `append`,
 * writes it into bench/RESULTS.md: replacing that section when there is one, else at the end.
 */
export function reportResults(lines: readonly string[], append: boolean | undefined): void {
  const text = lines.join('\n');
  console.log(text);
  if (!append) return;
  const heading = lines[0]!;
  const file = join(import.meta.dirname, 'RESULTS.md');
  const old = readFileSync(file, 'utf8');
  const i = old.indexOf(`\n${heading}\n`);
  if (i >= 0) {
    // the latest run replaces the section's own text; the `###` history kept under it stays
    const ends = ['\n## ', '\n### '].map((h) => old.indexOf(h, i + heading.length)).filter((x) => x >= 0);
    const j = ends.length ? Math.min(...ends) : -1;
    writeFileSync(file, old.slice(0, i + 1) + text + (j >= 0 ? old.slice(j) : ''));
  } else appendFileSync(file, `\n${text}`);
}

/**
 * A CA (`<name>.crt`/`.key` in `dir`) and a leaf for `host` signed by it (`leaf-<name>.pem`: the
 * certificate, the CA's and the key, HAProxy's format; also `leaf-<name>.crt`/`.key`): the TLS
 * benches' origins and interceptors.
 */
export function benchCa(dir: string, name: string, host: string): void {
  const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const f = (x: string) => join(dir, x);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`),
    '-days', '2', '-subj', `/CN=bench ${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`leaf-${name}.key`), '-out', f(`leaf-${name}.csr`), '-subj', `/CN=${host}`]);
  writeFileSync(f('ext.cnf'), `subjectAltName=DNS:${host}\nextendedKeyUsage=serverAuth\n`);
  openssl(['x509', '-req', '-in', f(`leaf-${name}.csr`), '-CA', f(`${name}.crt`), '-CAkey', f(`${name}.key`), '-CAcreateserial', '-days', '2', '-out', f(`leaf-${name}.crt`), '-extfile', f('ext.cnf')]);
  writeFileSync(f(`leaf-${name}.pem`), readFileSync(f(`leaf-${name}.crt`), 'utf8') + readFileSync(f(`${name}.crt`), 'utf8') + readFileSync(f(`leaf-${name}.key`), 'utf8'));
}
