// Client side of driver.ts: spawns the datapath driver inside the node namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { NODE_BIN } from './topo.ts';

const DRIVER = fileURLToPath(new URL('./driver.ts', import.meta.url));

export class Driver {
  readonly cp: ChildProcess;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();

  /** `options`: LinuxDatapathOptions for the driver's datapath (JSON-serializable ones). */
  constructor(nodeNs: string, pinRoot: string, options?: object) {
    this.cp = spawn('nsenter', [`--net=/run/netns/${nodeNs}`, NODE_BIN, DRIVER, pinRoot, ...(options ? [JSON.stringify(options)] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
    const rl = createInterface({ input: this.cp.stdout! });
    rl.on('line', (l) => {
      let msg: { id: number; r?: unknown; e?: string };
      try { msg = JSON.parse(l); } catch { process.stderr.write(`driver: ${l}\n`); return; }
      const w = this.waiting.get(msg.id);
      if (!w) return;
      this.waiting.delete(msg.id);
      if (msg.e !== undefined) w.reject(new Error(msg.e)); else w.resolve(msg.r);
    });
    this.cp.on('exit', () => { for (const w of this.waiting.values()) w.reject(new Error('driver exited')); this.waiting.clear(); });
  }

  call<T = any>(m: string, ...a: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.cp.stdin!.write(JSON.stringify({ id, m, a }) + '\n');
    });
  }

  async close(): Promise<void> {
    if (this.cp.exitCode !== null) return;
    const done = new Promise((r) => this.cp.once('exit', r));
    try { await Promise.race([this.call('stop'), new Promise((r) => setTimeout(r, 2000))]); } catch { /* ignore */ }
    this.cp.stdin!.end();
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    if (this.cp.exitCode === null && this.cp.pid) process.kill(this.cp.pid, 'SIGKILL');
  }
}
