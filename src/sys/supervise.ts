/**
 * Supervision of a long-running program (the agent, a proxy): it is restarted whenever it exits,
 * for any reason, after a backoff that grows with quick successive failures and resets once the
 * program has run for a while. Every exit is logged with why (code or signal, how long it ran)
 * and kept in a state file, so that `status` can show restarts and the last exit.
 *
 * The program runs in its own process group: a supervisor that dies (even by SIGKILL) leaves it
 * running, and a new supervisor adopts it by pid (exit status unknown then, only its end).
 *
 * With `standby`, a spare instance is kept loaded (started with the standby flag, it loads its code
 * and waits for a line on stdin): a restart then costs the program's start, not its loading.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isAlive } from './proc.ts';
import { writeFileAtomicSync } from '../common/atomic-file.ts';

export interface ExitRecord {
  pid: number;
  /** ISO time of the exit */
  at: string;
  code: number | null;
  signal: string | null;
  /** "killed by SIGKILL", "exited with code 1", … */
  reason: string;
  /** how long the process had run */
  ranMs: number;
}

export interface SupervisorState {
  name: string;
  supervisorPid: number;
  /** the running program's pid (absent while it is being restarted) */
  pid?: number;
  /** restarts since the supervisor started */
  restarts: number;
  lastExit?: ExitRecord;
  /** delay before the pending restart (ms), while one is pending */
  restartInMs?: number;
}

export interface BackoffOptions {
  /** first restart delay (ms) */
  baseMs: number;
  /** longest delay (ms) */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 100, maxMs: 10_000 };

/** Delay before restart number `quickFailures` (0: the program had run stably before it exited). */
export function backoffDelay(quickFailures: number, o: BackoffOptions = DEFAULT_BACKOFF): number {
  const n = Math.max(0, Math.min(30, quickFailures));
  return Math.min(o.maxMs, o.baseMs * 2 ** n);
}

export function describeExit(code: number | null, signal: string | null): string {
  if (signal) return `killed by ${signal}`;
  if (code === null) return 'ended (status unknown: adopted process)';
  return code === 0 ? 'exited cleanly (code 0)' : `exited with code ${code}`;
}

/** A supervisor's files in the directory of what it supervises (a node's state dir). */
export function supervisorFiles(dir: string): { state: string; pid: string; log: string } {
  return { state: join(dir, 'supervisor.json'), pid: join(dir, 'supervisor.pid'), log: join(dir, 'supervisor.log') };
}

export function readSupervisorState(file: string): SupervisorState | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as SupervisorState;
  } catch {
    return undefined;
  }
}

export interface SuperviseOptions {
  name: string;
  argv: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** the program's stdout/stderr are appended here */
  logFile: string;
  stateFile: string;
  /** a running instance to adopt (a supervisor restarted while its program ran on) */
  adopt?: { pid: number; expect?: string };
  /** a run at least this long counts as stable: the backoff starts over (default 30 s) */
  stableMs?: number;
  backoff?: BackoffOptions;
  log(msg: string, fields: Record<string, unknown>): void;
  /** told of each start (pid) */
  onStart?(pid: number): void;
  /**
   * A clean exit (code 0: the program stopped as asked, e.g. SIGTERM to it) ends the supervision
   * instead of a restart, as systemd's Restart=on-failure: a crash, a kill or an error exit restarts.
   */
  onFailureOnly?: boolean;
  /** asked before each restart: a reason not to (what it runs was removed) ends the supervision */
  gone?(): string | undefined;
  /** told when the supervision ends on its own (gone() gave a reason) */
  onEnd?(reason: string): void;
  /** keep a spare: started with this flag appended, promoted by a line "go" on its stdin */
  standby?: { flag: string; /** after a start, wait this long before loading the next spare (default 5 s) */ delayMs?: number };
}

export interface Supervisor {
  state(): SupervisorState;
  /** stops supervising: SIGTERM to the program, SIGKILL after timeoutMs; resolves once it is gone */
  stop(timeoutMs?: number): Promise<void>;
}

export function supervise(o: SuperviseOptions): Supervisor {
  const stableMs = o.stableMs ?? 30_000;
  const st: SupervisorState = { name: o.name, supervisorPid: process.pid, restarts: 0 };
  let child: ChildProcess | undefined;
  let adoptedPid: number | undefined;
  let startedAt = Date.now();
  let quickFailures = 0;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  let gone: (() => void) | undefined;
  let spare: ChildProcess | undefined;
  let spareTimer: NodeJS.Timeout | undefined;

  function save(): void {
    try {
      writeFileAtomicSync(o.stateFile, JSON.stringify(st), { mkdir: true });
    } catch { /* the state dir is gone: `down` runs */ }
  }

  function exited(pid: number, code: number | null, signal: string | null): void {
    child = undefined;
    adoptedPid = undefined;
    const ranMs = Date.now() - startedAt;
    st.lastExit = { pid, at: new Date().toISOString(), code, signal, reason: describeExit(code, signal), ranMs };
    delete st.pid;
    if (stopping) {
      save();
      gone?.();
      return;
    }
    const end = o.onFailureOnly && code === 0 && !signal ? 'it exited cleanly (stopped on purpose)' : o.gone?.();
    if (end) {
      stopping = true;
      if (spare?.pid) { try { process.kill(spare.pid, 'SIGKILL'); } catch { /* gone */ } }
      save();
      o.log(`${o.name} ${st.lastExit.reason}: not restarted (${end})`, { pid, code, signal });
      o.onEnd?.(end);
      return;
    }
    quickFailures = ranMs >= stableMs ? 0 : quickFailures + 1;
    const delay = backoffDelay(Math.max(0, quickFailures - 1), o.backoff);
    st.restartInMs = delay;
    save();
    o.log(`${o.name} ${st.lastExit.reason} after ${(ranMs / 1000).toFixed(1)} s: restarting in ${delay} ms`, { pid, code, signal, ranMs, restartInMs: delay, restarts: st.restarts + 1 });
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      st.restarts++;
      start();
    }, delay);
  }

  function launch(asSpare: boolean): ChildProcess {
    const [cmd, ...args] = o.argv;
    mkdirSync(dirname(o.logFile), { recursive: true });
    const fd = openSync(o.logFile, 'a');
    try {
      // its own process group: signals to the supervisor's group (and its death) leave it alone
      const c = spawn(cmd!, asSpare ? [...args, o.standby!.flag] : args, { detached: true, stdio: [asSpare ? 'pipe' : 'ignore', fd, fd], env: o.env, cwd: o.cwd ?? '/' });
      c.on('error', (e) => { o.log(`${o.name} cannot start: ${e.message}`, { err: String(e) }); });
      c.stdin?.on('error', () => {});
      c.on('exit', (code, signal) => {
        if (c === child) exited(c.pid ?? 0, code, signal);
        else if (c === spare) {
          spare = undefined;
          if (!stopping) {
            o.log(`${o.name} spare ${describeExit(code, signal)}: loading another`, { pid: c.pid, code, signal });
            scheduleSpare(2000);
          }
        }
      });
      return c;
    } finally {
      closeSync(fd);
    }
  }

  function scheduleSpare(delayMs: number): void {
    if (!o.standby || stopping || spare || spareTimer) return;
    spareTimer = setTimeout(() => {
      spareTimer = undefined;
      if (!stopping && !spare) spare = launch(true);
    }, delayMs);
  }

  function start(): void {
    let c: ChildProcess;
    if (spare && spare.exitCode === null && spare.signalCode === null) {
      // promote the loaded spare
      c = spare;
      spare = undefined;
      c.stdin!.write('go\n');
    } else c = launch(false);
    startedAt = Date.now();
    child = c;
    if (c.pid !== undefined) {
      st.pid = c.pid;
      delete st.restartInMs;
      save();
      o.onStart?.(c.pid);
    }
    // the next spare loads once this start is done with the CPU
    scheduleSpare(o.standby?.delayMs ?? 5000);
  }

  if (o.adopt && isAlive(o.adopt.pid, o.adopt.expect)) {
    // not our child: its end is seen by polling, its exit status is unknown
    const pid = o.adopt.pid;
    adoptedPid = pid;
    st.pid = pid;
    save();
    o.log(`${o.name} adopted (running before this supervisor)`, { pid });
    pollTimer = setInterval(() => {
      if (isAlive(pid, o.adopt!.expect)) return;
      clearInterval(pollTimer);
      pollTimer = undefined;
      exited(pid, null, null);
    }, 100);
  } else start();
  if (adoptedPid) scheduleSpare(o.standby?.delayMs ?? 5000);

  return {
    state: () => ({ ...st }),
    async stop(timeoutMs = 10_000) {
      stopping = true;
      if (restartTimer) clearTimeout(restartTimer);
      if (spareTimer) clearTimeout(spareTimer);
      if (spare?.pid) { try { process.kill(spare.pid, 'SIGKILL'); } catch { /* gone */ } }
      spare = undefined;
      const pid = child?.pid ?? adoptedPid;
      if (!pid) { save(); return; }
      const done = new Promise<void>((r) => { gone = r; });
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      const kill = setTimeout(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }, timeoutMs);
      if (adoptedPid) {
        while (isAlive(pid)) await new Promise((r) => setTimeout(r, 50));
        if (pollTimer) clearInterval(pollTimer);
        exited(pid, null, null);
      }
      await done;
      clearTimeout(kill);
    },
  };
}
