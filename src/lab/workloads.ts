/**
 * The Workloads port: a pod's containers run as host processes inside the pod's network
 * namespace (`ip netns exec`, so /etc/netns/<netns>/{resolv.conf,hosts} are what they see),
 * each in its own session so they survive an agent restart. Pid files (plus a command-line
 * and network-namespace check) let a restarted agent adopt them instead of starting duplicates.
 *
 * Image → program (first match wins):
 *   registered handlers (extension point: cilium/starwars deathstar, ...)
 *   echo images (echo-server, echoserver, agnhost, nginx, httpd, http-echo, json-mock) → HTTP/UDP echo
 *   a container with `command` → that host command
 *   a container with containerPorts → HTTP echo on each TCP port, UDP echo on each UDP port
 *   client images (curl, busybox, alpine, netshoot, ubuntu, debian) and anything else → idle
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Container, Pod } from '../api/types.ts';
import type { LabPaths } from '../common/paths.ts';
import { childEnv } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import type { PodNetworkInfo, Workloads } from '../agent/pod-network.ts';
import { isAlive, killPids, readPidFile, spawnDetached } from '../sys/proc.ts';
import { netnsExecArgv, netnsPath, netnsPids } from '../sys/net.ts';
import { podNetnsName } from './names.ts';
import { programPath } from './programs.ts';
import { starwarsHandler } from './starwars-plan.ts';
import type { ImageHandler, PlanContext, WorkloadPlan } from './workload-plan.ts';
import { labDnsPlan } from './dns-workload.ts';

export type { ImageHandler, PlanContext, WorkloadKind, WorkloadPlan } from './workload-plan.ts';

const handlers: ImageHandler[] = [];

/** Extension point: handlers registered here are consulted first (e.g. cilium/starwars). */
export function registerImageHandler(h: ImageHandler): void {
  handlers.unshift(h);
}
registerImageHandler(starwarsHandler);

const ECHO_IMAGES = ['echo-server', 'echoserver', 'agnhost', 'nginx', 'httpd', 'http-echo', 'json-mock'];
const CLIENT_IMAGES = ['curl', 'busybox', 'alpine', 'netshoot', 'ubuntu', 'debian'];

function imageName(c: Container): string {
  return (c.image ?? '').toLowerCase();
}

/** Ports an echo image listens on: declared containerPorts, else flags in args, else the image's default. */
export function echoPorts(c: Container): { tcp: number[]; udp: number[] } {
  const tcp = new Set<number>();
  const udp = new Set<number>();
  for (const p of c.ports ?? []) {
    if ((p.protocol ?? 'TCP') === 'UDP') udp.add(p.containerPort);
    else if ((p.protocol ?? 'TCP') === 'TCP') tcp.add(p.containerPort);
  }
  const args = [...(c.command ?? []), ...(c.args ?? [])].map(String);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--?(http-port|udp-port|port|listen)(?:=(.*))?$/.exec(a);
    if (!m) continue;
    const v = m[2] ?? args[i + 1] ?? '';
    const n = Number(v.replace(/^.*:/, ''));
    if (!Number.isInteger(n) || n <= 0 || n > 65535) continue;
    if (m[1] === 'udp-port') udp.add(n);
    else tcp.add(n);
  }
  if (!tcp.size && !udp.size) {
    const img = imageName(c);
    tcp.add(img.includes('http-echo') ? 5678 : img.includes('agnhost') ? 8080 : img.includes('json-mock') ? 8080 : 80);
  }
  return { tcp: [...tcp].sort((a, b) => a - b), udp: [...udp].sort((a, b) => a - b) };
}

export function echoPlan(ctx: PlanContext, ports: { tcp: number[]; udp: number[] }, names = ''): WorkloadPlan {
  const readyFile = join(ctx.dir, `${ctx.container.name}.ready`);
  const marker = `--id=${ctx.id}`;
  return {
    kind: 'echo',
    argv: [
      ...ctx.nodeArgv, ctx.program('echo'), marker, `--pod=${ctx.pod.metadata.name}`,
      `--namespace=${ctx.pod.metadata.namespace ?? 'default'}`, `--tcp=${ports.tcp.join(',')}`, `--udp=${ports.udp.join(',')}`,
      ...(names ? [`--names=${names}`] : []), `--ready=${readyFile}`,
    ],
    marker, readyFile,
  };
}

/** The plan for one container (exported for tests and `membrane` diagnostics). */
export function planContainer(ctx: PlanContext): WorkloadPlan {
  for (const h of handlers) {
    const p = h(ctx);
    if (p) return p;
  }
  const dns = labDnsPlan(ctx);
  if (dns) return dns;
  const c = ctx.container;
  const img = imageName(c);
  if (ECHO_IMAGES.some((i) => img.includes(i))) return echoPlan(ctx, echoPorts(c));
  const cmd = c.command as unknown;
  if (typeof cmd === 'string' && cmd.trim()) {
    const args = (c.args as unknown as string[] | undefined) ?? [];
    return { kind: 'command', argv: ['sh', '-c', [cmd, ...args].join(' ')] };
  }
  if (Array.isArray(cmd) && cmd.length) return { kind: 'command', argv: [...cmd, ...(c.args ?? [])].map(String) };
  if (c.ports?.length) return echoPlan(ctx, echoPorts({ ...c, args: [] }));
  void CLIENT_IMAGES; // client images and anything else: an idle process for `membrane exec`
  return { kind: 'idle', argv: ['sleep', 'infinity'], marker: 'sleep' };
}

export interface WorkloadsOptions {
  lab: string;
  node: string;
  paths: LabPaths;
  logger?: Logger;
  repoRoot: string;
  /** How long ensure waits for a server workload to listen. */
  readyTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');

export function podDir(paths: LabPaths, node: string, ns: string, pod: string): string {
  return join(paths.nodeDir(node), 'pods', `${safe(ns)}_${safe(pod)}`);
}

export function createWorkloads(opts: WorkloadsOptions): Workloads & { pids(pod: Pod): Promise<Record<string, number | undefined>> } {
  const { lab, node, paths, repoRoot } = opts;
  const log = opts.logger?.child({ subsys: 'workloads', node });
  const nodeArgv = [join(repoRoot, 'bin/node'), '--max-old-space-size=64', '--max-semi-space-size=1'];
  const readyTimeout = opts.readyTimeoutMs ?? 15_000;

  function contextFor(pod: Pod, c: Container, net: PodNetworkInfo): PlanContext {
    const ns = pod.metadata.namespace ?? 'default';
    return { pod, container: c, net, repoRoot, paths, dir: podDir(paths, node, ns, pod.metadata.name), id: `${lab}/${node}/${ns}/${pod.metadata.name}/${c.name}`, nodeArgv, program: (n) => programPath(repoRoot, paths.stateDir, n) };
  }

  function envFor(pod: Pod, c: Container, net: PodNetworkInfo, plan: WorkloadPlan): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = childEnv({
      inherit: false,
      extra: { HOSTNAME: pod.metadata.name, POD_NAME: pod.metadata.name, POD_NAMESPACE: pod.metadata.namespace ?? 'default', POD_IP: net.ip, NODE_NAME: node },
    });
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    return { ...env, ...(plan.env ?? {}) };
  }

  async function waitReady(pid: number, plan: WorkloadPlan, netnsFile: string): Promise<boolean> {
    if (!plan.readyFile) {
      await sleep(20);
      return isAlive(pid, undefined, undefined);
    }
    const deadline = Date.now() + readyTimeout;
    while (Date.now() < deadline) {
      if (existsSync(plan.readyFile)) return isAlive(pid, plan.marker, netnsFile);
      if (!isAlive(pid)) return false;
      await sleep(25);
    }
    return false;
  }

  return {
    async ensure(pod, net) {
      const containers = pod.spec.containers ?? [];
      const ns = pod.metadata.namespace ?? 'default';
      const dir = podDir(paths, node, ns, pod.metadata.name);
      await mkdir(dir, { recursive: true });
      const netnsFile = netnsPath(net.netns);
      let ready = 0;
      for (const c of containers) {
        const plan = planContainer(contextFor(pod, c, net));
        const pidFile = join(dir, `${safe(c.name)}.pid`);
        const metaFile = join(dir, `${safe(c.name)}.json`);
        const old = readPidFile(pidFile);
        let meta: { argv?: string[] } = {};
        try { meta = JSON.parse(await readFile(metaFile, 'utf8')) as typeof meta; } catch { /* none */ }
        const same = JSON.stringify(meta.argv) === JSON.stringify(plan.argv);
        if (old && isAlive(old, plan.marker, netnsFile)) {
          if (same) {
            if (!plan.readyFile || existsSync(plan.readyFile)) ready++;
            else if (await waitReady(old, plan, netnsFile)) ready++;
            log?.debug({ pod: `${ns}/${pod.metadata.name}`, container: c.name, pid: old }, 'workload adopted');
            continue;
          }
          await killPids([old], { group: true, timeoutMs: 2000 });
        }
        if (plan.readyFile) await rm(plan.readyFile, { force: true });
        const pid = spawnDetached({
          argv: netnsExecArgv(net.netns, plan.argv), logFile: join(dir, `${safe(c.name)}.log`), pidFile,
          env: envFor(pod, c, net, plan),
        });
        await writeFile(metaFile, JSON.stringify({ argv: plan.argv, kind: plan.kind, image: c.image ?? '', pid }));
        const ok = await waitReady(pid, plan, netnsFile);
        if (ok) ready++;
        log?.info({ pod: `${ns}/${pod.metadata.name}`, container: c.name, kind: plan.kind, pid, ready: ok }, 'workload started');
      }
      return { ready, total: containers.length };
    },

    async stop(pod) {
      const ns = pod.metadata.namespace ?? 'default';
      const dir = podDir(paths, node, ns, pod.metadata.name);
      const pids: number[] = [];
      try {
        for (const f of await readdir(dir)) if (f.endsWith('.pid')) { const p = readPidFile(join(dir, f)); if (p) pids.push(p); }
      } catch { /* no dir */ }
      await killPids(pids, { group: true, timeoutMs: 3000 });
      // Anything else left in the pod's namespace (children that left the process group).
      await killPids(await netnsPids(podNetnsName(node, ns, pod.metadata.name, lab)), { timeoutMs: 2000 });
      await rm(dir, { recursive: true, force: true });
      log?.info({ pod: `${ns}/${pod.metadata.name}`, pids }, 'workloads stopped');
    },

    async pids(pod) {
      const ns = pod.metadata.namespace ?? 'default';
      const dir = podDir(paths, node, ns, pod.metadata.name);
      const out: Record<string, number | undefined> = {};
      for (const c of pod.spec.containers ?? []) out[c.name] = readPidFile(join(dir, `${safe(c.name)}.pid`));
      return out;
    },
  };
}
