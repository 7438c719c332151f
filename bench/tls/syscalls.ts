/**
 * Where a new intercepted TLS connection's work goes, counted rather than timed (counts do not
 * change with the machine's load): system calls per request of the intercepting proxy and of
 * HAProxy doing the same termination and re-encryption (tracepoints through `perf stat`, no PMU
 * needed), the proxy's CPU time per request (/proc), the origin's new connections per request
 * (upstream reuse) and, for membrane, its client handshakes full and resumed. Interleaved rounds,
 * wrk -c10 with `Connection: close` (a new TLS connection per request, resumed with tickets).
 *
 * With --keep-alive, requests reuse their connections instead (the per-record path, no handshakes).
 *
 *   bin/node bench/tls/syscalls.ts [--secs 6] [--rounds 2] [--conns 10] [--keep-alive] [--port 18643 (the origin's; the proxies on the next two)] [--tree /path/to/checkout]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { benchCa, benchProxyNodeFlags, cpuUs, haproxyCfg, parseWrk, startPinned } from '../support.ts';

const { values } = parseArgs({ options: { secs: { type: 'string', default: '6' }, rounds: { type: 'string', default: '2' }, conns: { type: 'string', default: '10' }, 'keep-alive': { type: 'boolean', default: false }, port: { type: 'string', default: '18643' }, tree: { type: 'string' } } });
// --tree: another checkout's proxy (its bench/tls/proxy-server.ts and src/), e.g. main against a branch
const REPO = resolve(values.tree ?? resolve(import.meta.dirname, '../..'));
const NAME = 'api.bench.test';
const ORIGIN = Number(values.port), H_TERM = ORIGIN + 1, M_TERM = ORIGIN + 2;
const dir = mkdtempSync(join(tmpdir(), 'bench-tlssys-'));
const children: ChildProcess[] = [];
const CALLS = ['read', 'write', 'writev', 'readv', 'epoll_ctl', 'epoll_wait', 'accept4', 'connect', 'close', 'shutdown', 'setsockopt', 'getsockopt', 'getsockname', 'getpeername', 'socket', 'futex', 'mprotect', 'madvise', 'mmap', 'munmap', 'recvfrom', 'sendto', 'sendmsg', 'recvmsg', 'ioctl', 'getrandom', 'clock_gettime', 'brk'];
/**
 * Besides the system calls: the wake-ups the proxy's process makes (the peers it wakes: wrk, the
 * origin, the agent stand-in), the inter-processor interrupts it sends for them (a peer asleep on
 * the other CPU), its context switches; counted per request like the calls.
 */
const SCHED = ['sched:sched_wakeup', 'sched:sched_switch', 'ipi:ipi_send_cpu', 'ipi:ipi_send_cpumask'];
const EVENTS = ['raw_syscalls:sys_enter', ...CALLS.map((c) => `syscalls:sys_enter_${c}`), ...SCHED];
const LUA = join(dir, 'resolve.lua');
writeFileSync(LUA, 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n');
const STATS = join(dir, 'origin.sock');
/** CPU time (µs) per thread name of a process (/proc/PID/task: main, V8 workers, libuv pool) */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim().replace(/\d+$/, '#');
      const f = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      out.set(comm, (out.get(comm) ?? 0) + (Number(rest[11]) + Number(rest[12])) * 10_000);
    } catch { /* the thread ended */ }
  }
  return out;
}
const originConns = (): number => Number(/CumConns:\s*(\d+)/.exec(execFileSync('sh', ['-c', `echo 'show info' | nc -U -q1 ${STATS} 2>/dev/null || true`]).toString())?.[1] ?? NaN);
try {
  benchCa(dir, 'ca', NAME);
  benchCa(dir, 'ica', NAME);
  await startPinned(children, 0, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'origin', `frontend origin\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${ORIGIN} ssl crt ${join(dir, 'leaf-ca.pem')}\n  http-request return status 200 content-type application/json string "{\\"ok\\":true}"\n`,
    { tcp: true, global: `  tune.ssl.default-dh-param 2048\n  stats socket ${STATS} mode 600 level admin\n` })]);
  const h = await startPinned(children, 1, 'haproxy', ['-db', '-f', haproxyCfg(dir, 'term', `frontend fe\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:${H_TERM} ssl crt ${join(dir, 'leaf-ica.pem')}\n  http-request deny deny_status 403 unless { method POST } { path /v1/chat/completions } or { method GET } { path /v1/models }\n  default_backend be\nbackend be\n  mode http\n  http-reuse always\n  server origin 127.0.0.1:${ORIGIN} ssl verify required ca-file ${join(dir, 'ca.crt')} sni str(${NAME}) verifyhost ${NAME}\n`, { tcp: true, global: '  tune.ssl.default-dh-param 2048\n' })]);
  const m = await startPinned(children, 1, join(REPO, 'bin/node'), [...benchProxyNodeFlags(), join(REPO, 'bench/tls/proxy-server.ts'), '--mode', 'intercept', '--port', String(M_TERM), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], 'ready', 120_000);
  const handshakes = async (): Promise<{ full: number; resumed: number }> => {
    const f = join(dir, `handshakes-${M_TERM}.json`);
    rmSync(f, { force: true });
    process.kill(m.pid!, 'SIGUSR2');
    for (let i = 0; i < 200; i++) {
      try { return JSON.parse(readFileSync(f, 'utf8')) as { full: number; resumed: number }; } catch { await new Promise((r) => setTimeout(r, 50)); }
    }
    return { full: NaN, resumed: NaN };
  };
  const wrk = (port: number, secs: number) => parseWrk(execFileSync('taskset', ['-c', '0', 'wrk', '-t1', `-c${values.conns}`, '--timeout', '30s', ...(values['keep-alive'] ? [] : ['-H', 'Connection: close']), `-d${secs}s`, '--latency', '-s', LUA, `https://${NAME}:${port}/v1/models`]).toString());
  wrk(H_TERM, 2);
  wrk(M_TERM, 2);
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const [who, port, pid] of (r % 2 ? [['membrane', M_TERM, m.pid!], ['haproxy', H_TERM, h.pid!]] : [['haproxy', H_TERM, h.pid!], ['membrane', M_TERM, m.pid!]]) as [string, number, number][]) {
      const out = join(dir, `stat-${who}-${r}.csv`);
      const h0 = who === 'membrane' ? await handshakes() : undefined;
      const t0 = threadCpu(pid), c0 = cpuUs(pid), o0 = originConns();
      const st = spawn('perf', ['stat', '-x,', '-o', out, '-p', String(pid), ...EVENTS.flatMap((e) => ['-e', e])], { stdio: 'ignore' });
      const w = wrk(port, Number(values.secs));
      await new Promise((res) => { st.once('exit', res); st.kill('SIGINT'); });
      const cpu = (cpuUs(pid) - c0) / w.requests, up = (originConns() - o0) / w.requests;
      const h1 = h0 ? await handshakes() : undefined;
      const threads = [...threadCpu(pid)].map(([k, v]) => [k, (v - (t0.get(k) ?? 0)) / w.requests] as const).filter(([, v]) => v >= 1).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ');
      const counts = new Map<string, number>();
      for (const line of readFileSync(out, 'utf8').split('\n')) {
        const f = line.split(',');
        if (f.length > 3 && /^\d+$/.test(f[0]!)) counts.set(f[2]!.replace(/^(raw_)?syscalls:sys_enter_?/, '').replace(/^(sched|ipi):/, '') || 'all', Number(f[0]));
      }
      const per = [...counts].filter(([, n]) => n / w.requests >= 0.05).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${(n / w.requests).toFixed(2)}`).join(', ');
      console.log(`round ${r + 1} ${who}: ${w.requests} requests, ${w.rps.toFixed(0)} req/s, ${cpu.toFixed(0)} µs CPU/req, origin conns/req ${up.toFixed(3)}${h0 && h1 ? `, client handshakes full ${h1.full - h0.full} resumed ${h1.resumed - h0.resumed}` : ''}; µs CPU/req per thread: ${threads}; syscalls per request: ${per}`);
    }
  }
  console.log(`load ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
} finally {
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  rmSync(dir, { recursive: true, force: true });
}
