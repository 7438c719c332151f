/**
 * Drives a real lab through the CLI, as a user would: `membrane up`, `apply`, `exec`, `observe`,
 * `down`. Each suite uses its own lab name (MEMBRANE_LAB) and state dir, and `down` in `after`
 * removes everything even when a test failed.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { callAgent } from '../../../src/agent/api-client.ts';
import { labPaths, type LabPaths } from '../../../src/common/paths.ts';
import { buildConfig, type MembraneConfig } from '../../../src/common/config.ts';

export const REPO = resolve(import.meta.dirname, '../../..');
const MEMBRANE = join(REPO, 'bin/membrane');
const PROBE = join(REPO, 'test/integration/support/probe.ts');

export interface RunResult { code: number; stdout: string; stderr: string }

/**
 * Labs of test processes that died before their `after` ran (killed run, stopped session) would
 * stay forever. Each TestLab writes its owner (pid and the process's start time, so a reused pid
 * is not mistaken for the owner) into its state directory; the first lab of each process takes
 * down every lab under /run/membrane-test whose owner is gone. A lab without an owner file is
 * never touched: its name alone says nothing about who runs it.
 */
const LAB_ROOT = '/run/membrane-test';
const OWNER_FILE = '.test-owner';

function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]; // field 22: starttime
  } catch {
    return undefined;
  }
}

let swept = false;
function sweepOrphanLabs(): void {
  if (swept) return;
  swept = true;
  if (!existsSync(LAB_ROOT)) return;
  for (const name of readdirSync(LAB_ROOT)) {
    let owner: { pid: number; start: string };
    try {
      owner = JSON.parse(readFileSync(join(LAB_ROOT, name, OWNER_FILE), 'utf8')) as { pid: number; start: string };
    } catch {
      continue;
    }
    if (owner.pid === process.pid || processStart(owner.pid) === owner.start) continue;
    try {
      execFileSync(MEMBRANE, ['down'], { env: { ...process.env, MEMBRANE_LAB: name, MEMBRANE_STATE_DIR: join(LAB_ROOT, name) }, timeout: 120_000, stdio: 'ignore' });
    } catch { /* the next run tries again */ }
  }
}

function writeOwner(name: string): void {
  const dir = join(LAB_ROOT, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, OWNER_FILE), JSON.stringify({ pid: process.pid, start: processStart(process.pid) }));
}

export class TestLab {
  readonly name: string;
  readonly env: NodeJS.ProcessEnv;
  readonly dir: Promise<string>;

  constructor(name: string) {
    sweepOrphanLabs();
    writeOwner(name);
    this.name = name;
    this.env = { ...process.env, MEMBRANE_LAB: name, MEMBRANE_STATE_DIR: join('/run/membrane-test', name), NO_COLOR: '1' };
    this.dir = mkdtemp(join(tmpdir(), `${name}-`));
  }

  run(args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
    return new Promise((res) => {
      const child = execFile(MEMBRANE, args, { env: { ...this.env, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        res({ code, stdout, stderr });
      });
      if (opts.input !== undefined) child.stdin!.end(opts.input);
    });
  }

  async ok(args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(`membrane ${args.join(' ')} failed (${r.code}):\n${r.stderr}\n${r.stdout}`);
    return r.stdout;
  }

  async up(): Promise<void> {
    await this.ok(['up'], { timeoutMs: 180_000 });
  }

  async down(): Promise<void> {
    await this.run(['down'], { timeoutMs: 120_000 });
    await rm(await this.dir, { recursive: true, force: true });
  }

  /** Applies objects through a file, as `membrane apply -f` does, then waits until the datapath has them. */
  async apply(objects: object[]): Promise<string> {
    const file = join(await this.dir, `apply-${Date.now()}-${Math.random().toString(16).slice(2)}.yaml`);
    await writeFile(file, objects.map((o) => stringify(stripSource(o))).join('---\n'));
    const out = await this.ok(['apply', '-f', file]);
    await this.settle();
    return out;
  }

  async delete(objects: object[]): Promise<void> {
    if (objects.length === 0) return;
    const file = join(await this.dir, `delete-${Date.now()}.yaml`);
    await writeFile(file, objects.map((o) => stringify(stripSource(o))).join('---\n'));
    await this.ok(['delete', '-f', file]);
    await this.settle();
  }

  /** The configuration the lab's CLI and agents build from this lab's environment. */
  get config(): MembraneConfig {
    return buildConfig({ env: this.env });
  }

  get paths(): LabPaths {
    return labPaths(this.config);
  }

  async settle(): Promise<void> {
    const paths = this.paths;
    await callAgent(paths.agentSocket('node1'), 'POST', '/v1/settle', {});
  }

  /** `namespace/pod` → pod IP of one family (IPv6: from status.podIPs, dual stack), from `get pods -A -o json`. */
  async podIPs(family: 4 | 6 = 4): Promise<Record<string, string>> {
    const list = JSON.parse(await this.ok(['get', 'pods', '-A', '-o', 'json'])) as { items: { metadata: { name: string; namespace: string }; status?: { podIP?: string; podIPs?: { ip: string }[] } }[] };
    const pick = (s: { podIP?: string; podIPs?: { ip: string }[] } | undefined): string | undefined =>
      family === 4 ? s?.podIP : s?.podIPs?.find((a) => a.ip.includes(':'))?.ip;
    return Object.fromEntries(list.items.filter((p) => pick(p.status)).map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, pick(p.status)!]));
  }

  /** Runs the prober in a pod: target `ip:port/tcp|udp` → reachable. */
  async probe(ns: string, pod: string, targets: string[], timeoutMs = 800): Promise<Record<string, boolean>> {
    const out = await this.ok(['exec', '-n', ns, pod, '--', join(REPO, 'bin/node'), PROBE, ...targets], { timeoutMs: 60_000, env: { PROBE_TIMEOUT_MS: String(timeoutMs) } });
    return JSON.parse(out.trim().split('\n').pop()!) as Record<string, boolean>;
  }

  async exec(ns: string, pod: string, cmd: string[], timeoutMs = 30_000): Promise<RunResult> {
    return this.run(['exec', '-n', ns, pod, '--', ...cmd], { timeoutMs });
  }

  /** `membrane observe ... -o json` → parsed flows. */
  async flows(args: string[]): Promise<Flow[]> {
    const out = await this.ok(['observe', ...args, '-o', 'json']);
    return out.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { flow?: Flow }).filter((x) => x.flow).map((x) => x.flow!);
  }

  /**
   * Polls `membrane observe ARGS` until `pred` holds (flows reach Hubble a little after the
   * traffic): the flows that satisfied it, or the last ones read when it never did, so the
   * caller's assertion shows what was there.
   */
  async waitFlows(args: string[], pred: (fs: Flow[]) => boolean, opts: { tries?: number; intervalMs?: number } = {}): Promise<Flow[]> {
    let fs: Flow[] = [];
    for (let i = 0; i < (opts.tries ?? 20); i++) {
      fs = await this.flows(args);
      if (pred(fs)) return fs;
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 250));
    }
    return fs;
  }

  /** Spawns a long-running command in a pod (for connections that must outlive an agent restart). */
  spawnIn(ns: string, pod: string, cmd: string[], env: NodeJS.ProcessEnv = {}) {
    return spawn(MEMBRANE, ['exec', '-n', ns, pod, '--', ...cmd], { env: { ...this.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  }
}

export interface Flow {
  verdict?: string;
  drop_reason_desc?: string;
  traffic_direction?: string;
  is_reply?: boolean;
  policy_match_type?: number;
  Type?: string;
  IP?: { source?: string; destination?: string; ipVersion?: string };
  l4?: { TCP?: { source_port?: number; destination_port?: number; flags?: Record<string, boolean> }; UDP?: { destination_port?: number }; ICMPv6?: { type?: number; code?: number } };
  source?: { namespace?: string; pod_name?: string; identity?: number; labels?: string[] };
  destination?: { namespace?: string; pod_name?: string; identity?: number; labels?: string[] };
  event_type?: { type?: number; sub_type?: number };
  node_name?: string;
  [k: string]: unknown;
}

function stripSource(o: object): object {
  const { source: _s, ...rest } = o as { source?: unknown };
  return rest;
}
