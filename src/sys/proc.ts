/**
 * Processes: run-and-capture, spawn detached (own session/process group) with a log file and a
 * pid file, liveness checks that survive pid reuse (cmdline + network namespace), kill by pid.
 * The only place outside src/sys/net.ts that starts programs (DESIGN.md §3).
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync, readdirSync, statSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { MembraneError } from '../common/errors.ts';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Runs a program and captures its output; never throws for a non-zero exit (see runOk). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      reject(new MembraneError('SYS_EXEC_FAILED', `cannot run ${cmd}: ${e.message}`, {
        hint: e.code === 'ENOENT' ? `install ${cmd} (Debian: apt-get install iproute2 util-linux)` : 'check that membrane runs as root', cause: e,
      }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs a program and throws MembraneError(code) with its stderr when it fails. */
export async function runOk(cmd: string, args: string[], opts: RunOptions & { code?: string; hint?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const what = `${cmd} ${args.join(' ')}`.slice(0, 300);
    throw new MembraneError(opts.code ?? 'SYS_COMMAND_FAILED', `${what}: exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`, {
      hint: opts.hint ?? 'this needs root and iproute2; run `membrane down` and `membrane up` to rebuild the lab',
    });
  }
  return r.stdout;
}

/** Runs a program with the caller's stdio; resolves with its exit status (128+n for a signal). */
export function runInherit(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'inherit', env });
    const fwd = (s: NodeJS.Signals) => () => child.kill(s);
    const onInt = fwd('SIGINT');
    const onTerm = fwd('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    child.on('error', (e) => reject(new MembraneError('SYS_EXEC_FAILED', `cannot run ${cmd}: ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(code ?? 128 + (signal ? (({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }) as Record<string, number>)[signal] ?? 1 : 1));
    });
  });
}

export interface DetachedSpec {
  argv: string[];
  logFile: string;
  pidFile?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** fds the program gets as 3, 4, … (the caller keeps and closes its own copies) */
  fds?: number[];
}

/**
 * Starts a program in its own session (setsid: its own process group, no controlling terminal),
 * stdout/stderr appended to logFile, pid written to pidFile. The caller may exit; the program lives on.
 */
export function spawnDetached(spec: DetachedSpec): number {
  const [cmd, ...args] = spec.argv;
  if (!cmd) throw new MembraneError('SYS_EXEC_FAILED', 'spawnDetached: empty argv');
  mkdirSync(dirname(spec.logFile), { recursive: true });
  const fd = openSync(spec.logFile, 'a');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd, ...(spec.fds ?? [])], env: spec.env, cwd: spec.cwd ?? '/' });
    if (child.pid === undefined) throw new MembraneError('SYS_EXEC_FAILED', `cannot start ${cmd}`, { hint: `see ${spec.logFile}` });
    child.on('error', () => {});
    child.unref();
    if (spec.pidFile) {
      mkdirSync(dirname(spec.pidFile), { recursive: true });
      writeFileSync(spec.pidFile, String(child.pid));
    }
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export function readPidFile(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return undefined;
  }
}

/** The inode of a network namespace file (/proc/PID/ns/net or /run/netns/NAME). */
/** Processes whose command line contains every one of `parts` (a lab process found after its pid file is gone). */
export function pidsByCmdline(parts: string[]): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    const c = cmdlineOf(pid);
    if (c && parts.every((p) => c.includes(p))) out.push(pid);
  }
  return out;
}

export function netnsInode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/**
 * True if the process exists, is not a zombie, its command line contains `expect` (when given),
 * and it runs in the network namespace `netnsPath` (when given): a reused pid is never mistaken for ours.
 */
export function isAlive(pid: number | undefined, expect?: string, netnsPath?: string): boolean {
  if (!pid) return false;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') return false;
  if (expect !== undefined && !(cmdlineOf(pid) ?? '').includes(expect)) return false;
  if (netnsPath !== undefined) {
    const want = netnsInode(netnsPath);
    if (want === undefined || netnsInode(`/proc/${pid}/ns/net`) !== want) return false;
  }
  return true;
}

function signal(pid: number, sig: NodeJS.Signals, group: boolean): void {
  try {
    process.kill(group ? -pid : pid, sig);
  } catch {
    if (group) {
      try { process.kill(pid, sig); } catch { /* gone */ }
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Stops processes: SIGTERM (to the process group when `group`), then SIGKILL after timeoutMs.
 * Resolves once none of them is alive (zombies count as gone).
 */
export async function killPids(pids: number[], opts: { timeoutMs?: number; group?: boolean } = {}): Promise<void> {
  const live = pids.filter((p) => p > 1 && p !== process.pid && isAlive(p));
  if (!live.length) return;
  for (const p of live) signal(p, 'SIGTERM', opts.group ?? false);
  const deadline = Date.now() + (opts.timeoutMs ?? 3000);
  while (Date.now() < deadline) {
    if (!live.some((p) => isAlive(p))) return;
    await sleep(25);
  }
  for (const p of live) if (isAlive(p)) signal(p, 'SIGKILL', opts.group ?? false);
  const hard = Date.now() + 2000;
  while (Date.now() < hard && live.some((p) => isAlive(p))) await sleep(20);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
