/**
 * bench/http/one-conn.c from the benches: one connection, one request at a time, each request's
 * own latency. wrk -c1 is no substitute: wrk 4 corrects its percentiles for coordinated omission
 * (bench/http/run.ts says how), so its one-connection p99 measures stall time, not latency.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export interface OneConnResult { requests: number; rps: number; p50: number; p99: number; p999: number }

/** Compiles one-conn.c into `dir` (needs cc); returns the binary's path. */
export function buildOneConn(dir: string): string {
  const bin = join(dir, 'one-conn');
  execFileSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'one-conn.c')]);
  return bin;
}

/** Runs `bin` on CPU `cpu` against 127.0.0.1:`port` for `secs` (latencies in ms). */
export function runOneConn(bin: string, port: number, secs: number, path: string, cpu = 0): OneConnResult {
  const out = execFileSync('taskset', ['-c', String(cpu), bin, String(port), String(secs), '1000000000', path]).toString();
  const m = /^n (\d+) p50 ([\d.]+) p90 [\d.]+ p99 ([\d.]+) p999 ([\d.]+)/m.exec(out);
  if (!m) throw new Error(`one-conn printed: ${out}`);
  return { requests: Number(m[1]), rps: Number(m[1]) / secs, p50: Number(m[2]), p99: Number(m[3]), p999: Number(m[4]) };
}
