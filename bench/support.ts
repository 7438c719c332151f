/** Helpers shared by the benchmarks: processes pinned to a CPU, started and tracked for cleanup. */
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Starts `cmd` pinned to `cpu` (taskset) and adds it to `children` (the caller kills them all at
 * the end). Resolves when `readyText` appears on its output (15 s at most), or after 800 ms when
 * there is nothing to wait for; rejects if it exits first.
 */
export function startPinned(children: ChildProcess[], cpu: number, cmd: string, args: string[], readyText?: string): Promise<ChildProcess> {
  const c = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return new Promise((res, rej) => {
    let out = '';
    const t = setTimeout(() => (readyText ? rej(new Error(`${cmd} not ready: ${out}`)) : res(c)), readyText ? 15000 : 800);
    const on = (d: Buffer) => { out += d; if (readyText && out.includes(readyText)) { clearTimeout(t); res(c); } };
    c.stdout!.on('data', on);
    c.stderr!.on('data', on);
    c.once('exit', (code) => { clearTimeout(t); rej(new Error(`${cmd} exited ${code}: ${out}`)); });
  });
}
