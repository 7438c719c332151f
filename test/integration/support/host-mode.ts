/**
 * Host mode under test: a network namespace standing in for the host (`<lab>-node1`, so that
 * `membrane down` of the lab removes it, its agent, its pins and every container namespace
 * `<lab>-p-xxxxxxxx`), `membrane agent` running inside it, and membrane-cni called exactly as a
 * runtime calls it: CNI_* variables and the network configuration on stdin.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, REPO, type RunResult } from './lab.ts';

/**
 * What a runtime would have installed: dist/cni/membrane-cni (scripts/build-cni.sh, the native
 * plugin) while it is newer than its source, else the wrapper, which builds it first.
 */
export const CNI_PLUGIN = freshBuiltPlugin() ?? join(REPO, 'bin/membrane-cni');

function freshBuiltPlugin(): string | undefined {
  const exe = join(REPO, 'dist/cni/membrane-cni'), src = join(REPO, 'src/cni/membrane-cni.c');
  if (!existsSync(exe) || !existsSync(src)) return undefined;
  return statSync(exe).mtimeMs >= statSync(src).mtimeMs ? exe : undefined;
}

export interface CniCall { command: string; containerId?: string; netns?: string; ifname?: string; args?: string; stdin?: string }

export class HostModeLab extends TestLab {
  readonly hostNetns: string;
  readonly podCidr: string;
  agent: ChildProcess | undefined;
  agentLog = '';
  readonly containers = new Set<string>();

  constructor(name: string, podCidr = '10.244.210.0/24') {
    super(name);
    this.hostNetns = `${name}-node1`;
    this.podCidr = podCidr;
  }

  get socket(): string { return this.paths.agentSocket('node1'); }

  /** The plugin's network configuration (as the runtime passes one entry of the conflist). */
  netconf(extra: Record<string, unknown> = {}): string {
    return JSON.stringify({ cniVersion: '1.0.0', name: 'membrane', type: 'membrane-cni', agentSocket: this.socket, ...extra });
  }

  async sh(cmd: string, args: string[], input?: string, timeoutMs = 30_000): Promise<RunResult> {
    return new Promise((res) => {
      const c = execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
      });
      if (input !== undefined) c.stdin!.end(input);
    });
  }

  async startHost(): Promise<void> {
    if (!existsSync(`/run/netns/${this.hostNetns}`)) {
      const r = await this.sh('ip', ['netns', 'add', this.hostNetns]);
      if (r.code !== 0) throw new Error(`ip netns add ${this.hostNetns}: ${r.stderr}`);
    }
    await this.sh('ip', ['-n', this.hostNetns, 'link', 'set', 'lo', 'up']);
  }

  /** `membrane agent` in the stand-in host namespace; resolves once its API answers. */
  async startAgent(extraArgs: string[] = []): Promise<void> {
    await this.startHost();
    const child = spawn('nsenter', [`--net=/run/netns/${this.hostNetns}`, join(REPO, 'bin/membrane'), 'agent', '--node-name', 'node1', '--pod-cidr', this.podCidr, ...extraArgs], {
      env: { ...this.env, MEMBRANE_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.agent = child;
    this.agentLog = '';
    child.stdout!.on('data', (d: Buffer) => { this.agentLog += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.agentLog += d.toString(); });
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`membrane agent exited ${child.exitCode}:\n${this.agentLog.slice(-3000)}`);
      if (this.agentLog.includes('"agent ready"')) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`membrane agent not ready in 120 s:\n${this.agentLog.slice(-3000)}`);
  }

  async stopAgent(): Promise<void> {
    const a = this.agent;
    if (!a || a.exitCode !== null) return;
    const done = new Promise((r) => a.once('exit', r));
    a.kill('SIGTERM');
    await Promise.race([done, new Promise((r) => setTimeout(r, 30_000))]);
    if (a.exitCode === null) { a.kill('SIGKILL'); await done; }
    this.agent = undefined;
  }

  /** A fresh namespace standing in for a container's (what a runtime makes before ADD). */
  async containerNetns(): Promise<string> {
    const name = `${this.name}-p-${randomBytes(4).toString('hex')}`;
    const r = await this.sh('ip', ['netns', 'add', name]);
    if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.stderr}`);
    this.containers.add(name);
    return name;
  }

  /** Calls the plugin as a runtime does; returns the exit code and stdout parsed as JSON. */
  async cni(c: CniCall): Promise<{ code: number; out: Record<string, unknown> | undefined; raw: string; stderr: string; ms: number }> {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: c.command, CNI_PATH: '/opt/cni/bin' };
    if (c.containerId) env.CNI_CONTAINERID = c.containerId;
    if (c.netns) env.CNI_NETNS = c.netns;
    if (c.ifname) env.CNI_IFNAME = c.ifname;
    if (c.args) env.CNI_ARGS = c.args;
    const t0 = performance.now();
    return new Promise((res) => {
      const child = execFile(CNI_PLUGIN, [], { env, timeout: 120_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        let out: Record<string, unknown> | undefined;
        try { out = stdout.trim() ? JSON.parse(stdout) as Record<string, unknown> : undefined; } catch { out = undefined; }
        res({ code, out, raw: stdout, stderr, ms: performance.now() - t0 });
      });
      child.stdin!.end(c.stdin ?? this.netconf());
    });
  }

  /** ADD of a new container netns with labels; throws on a CNI error. */
  async addContainer(name: string, labels: Record<string, string>, opts: { containerId?: string } = {}): Promise<{ netns: string; containerId: string; ip: string }> {
    const netns = await this.containerNetns();
    const containerId = opts.containerId ?? randomBytes(32).toString('hex');
    const lbl = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',');
    const r = await this.cni({ command: 'ADD', containerId, netns: `/run/netns/${netns}`, ifname: 'eth0', args: `IgnoreUnknown=1;K8S_POD_NAME=${name}${lbl ? `;MEMBRANE_LABELS=${lbl}` : ''}` });
    if (r.code !== 0) throw new Error(`ADD ${name} failed (${r.code}): ${r.raw} ${r.stderr}`);
    const ips = r.out!.ips as { address: string }[];
    return { netns, containerId, ip: ips[0]!.address.split('/')[0]! };
  }

  async ping(fromNetns: string, ip: string): Promise<boolean> {
    const r = await this.sh('ip', ['netns', 'exec', fromNetns, 'ping', '-c', '1', '-W', '1', ip]);
    return r.code === 0;
  }

  /** Links in the stand-in host namespace. */
  async hostLinks(): Promise<string[]> {
    const r = await this.sh('ip', ['-n', this.hostNetns, '-j', 'link', 'show']);
    return (JSON.parse(r.stdout || '[]') as { ifname: string }[]).map((l) => l.ifname);
  }

  /** Stops the agent, then `membrane down` removes the stand-in host, containers, pins and state. */
  async cleanup(): Promise<void> {
    await this.stopAgent().catch(() => {});
    for (const n of this.containers) await this.sh('ip', ['netns', 'del', n]);
    await this.down();
  }
}
