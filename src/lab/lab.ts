/**
 * `membrane up` / `membrane down`: the whole lab's lifecycle.
 *
 * up (idempotent): node, underlay and world namespaces and their networks → the world's echo
 * hosts → one supervised agent per node (src/lab/supervisor.ts, detached so it outlives the CLI,
 * runs src/lab/node-agent.ts with nsenter --net into the node netns, host mounts kept so the BPF
 * filesystem is the host's, and restarts it when it exits) → wait for each agent's API →
 * the default namespaces (`default`, `kube-system`) applied through the API.
 *
 * down: finds everything by name (not only by state files, so it also cleans up after a crash):
 * supervisors (they stop their agent first), agents (SIGTERM, then SIGKILL), every process in a lab namespace, the namespaces, /etc/netns
 * entries, the state directory and the BPF pin directories.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labPaths, type LabPaths } from '../common/paths.ts';
import { childEnv, configEnv, ROUTING_MODES, SETTINGS, type MembraneConfig, type RoutingMode } from '../common/config.ts';
import { callAgent } from '../agent/api-client.ts';
import { MembraneError } from '../common/errors.ts';
import type { Resource } from '../api/types.ts';
import { isAlive, isRoot, killPids, pidsByCmdline, readPidFile, spawnDetached } from '../sys/proc.ts';
import { readSupervisorState, supervisorFiles, type SupervisorState } from '../sys/supervise.ts';
import { netnsDelete, netnsExecArgv, netnsList, netnsPath, netnsPids, nsenterNetArgv } from '../sys/net.ts';
import { readFile } from 'node:fs/promises';
import {
  AGENT_MARKER, AGENT_NODE_FLAGS, PROXY_MARKER, PROXY_NODE_FLAGS, SUPERVISOR_MARKER, isLabNetns, isLabNodeNetns, isLabPinDir, nodeIndexOf, nodeName, nodeNetnsName, podNetnsName, worldNetnsName,
} from './names.ts';
import { ETC_NETNS, removeNodeRoutes, setupLabNetwork } from './network.ts';
import { worldHosts, worldTlsPorts } from './world.ts';
import { ensureLabCA, caCertPath } from './ca.ts';
import { ensureHubbleCerts } from './hubble-certs.ts';
import { labDnsResources } from './dns-workload.ts';
import { programPath } from './programs.ts';
import { ensureLabEtcd, labEtcdEndpoint } from './etcd.ts';
import { ensureLabRelay, labRelay, stopLabRelay, type LabRelay } from './relay.ts';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const WORLD_MARKER = '--id=world';

function requireRoot(): void {
  if (!isRoot()) throw new MembraneError('LAB_NOT_ROOT', 'the lab needs root (network namespaces, veths, eBPF)', { hint: 'run `sudo membrane up`' });
}

function worldDir(paths: LabPaths): string {
  return join(paths.stateDir, 'world');
}

/** Nodes the lab has now (from the node namespaces that exist). */
export async function labNodes(lab: string): Promise<number[]> {
  const list = await netnsList();
  return list.filter((n) => isLabNodeNetns(n, lab)).map((n) => Number(n.slice(lab.length + '-node'.length))).sort((a, b) => a - b);
}

/** Starts (or adopts) the world namespace's echo server for every world host. */
export async function ensureWorldHosts(paths: LabPaths, repoRoot = REPO_ROOT): Promise<number> {
  const dir = worldDir(paths);
  await mkdir(dir, { recursive: true });
  const pidFile = join(dir, 'echo.pid');
  const w = worldNetnsName(paths.lab);
  const old = readPidFile(pidFile);
  if (old && isAlive(old, WORLD_MARKER, netnsPath(w))) return old;
  const tcp = [...new Set(worldHosts.flatMap((h) => h.tcp.filter((p) => !(h.tls ?? []).includes(p))))];
  const udp = [...new Set(worldHosts.flatMap((h) => h.udp))];
  const readyFile = join(dir, 'echo.ready');
  await rm(readyFile, { force: true });
  const pid = spawnDetached({
    argv: netnsExecArgv(w, [join(repoRoot, 'bin/node'), '--max-old-space-size=64', programPath(repoRoot, paths.stateDir, 'echo'), WORLD_MARKER,
      '--pod=world', '--namespace=world', `--tcp=${tcp.join(',')}`, `--udp=${udp.join(',')}`,
      `--names=${worldHosts.map((h) => `${h.ip}=${h.name}`).join(',')}`, `--ready=${readyFile}`]),
    logFile: join(dir, 'echo.log'), pidFile,
    env: childEnv({ inherit: false }),
  });
  await ensureWorldTls(paths, repoRoot);
  const deadline = Date.now() + 15_000;
  while (!existsSync(readyFile)) {
    if (!isAlive(pid) || Date.now() > deadline) {
      throw new MembraneError('LAB_WORLD_FAILED', 'the world hosts did not start', { hint: `see ${join(dir, 'echo.log')}` });
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return pid;
}

/** The world's HTTPS echo (lab CA) on the built-in hosts' TLS ports; creates the CA on first use. */
async function ensureWorldTls(paths: LabPaths, repoRoot: string): Promise<void> {
  const dir = worldDir(paths);
  const pidFile = join(dir, 'tls.pid');
  const w = worldNetnsName(paths.lab);
  const old = readPidFile(pidFile);
  if (old && isAlive(old, '--id=world-tls', netnsPath(w))) return;
  await ensureLabCA(paths.stateDir); // once, here: the TLS echo only loads it
  const readyFile = join(dir, 'tls.ready');
  await rm(readyFile, { force: true });
  const pid = spawnDetached({
    argv: netnsExecArgv(w, [join(repoRoot, 'bin/node'), '--max-old-space-size=96', join(repoRoot, 'src/lab/dns/tls-echo.ts'), '--id=world-tls',
      `--state-dir=${paths.stateDir}`, `--ports=${worldTlsPorts().join(',')}`,
      `--names=${worldHosts.map((h) => `${h.ip}=${h.name}`).join(',')}`, `--ready=${readyFile}`]),
    logFile: join(dir, 'tls.log'), pidFile,
    env: childEnv({ inherit: false }),
    cwd: repoRoot,
  });
  const deadline = Date.now() + 30_000;
  while (!existsSync(readyFile)) {
    if (!isAlive(pid) || Date.now() > deadline) throw new MembraneError('LAB_WORLD_FAILED', 'the world HTTPS hosts did not start', { hint: `see ${join(dir, 'tls.log')}` });
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function logTail(file: string, lines = 15): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** How the lab's agents share state: memory (one node) or etcd (the lab's own, or the user's). */
export interface LabKVStore {
  mode: 'memory' | 'etcd';
  /** etcd endpoints; empty: the lab's own etcd */
  endpoints: string[];
  ca?: string;
  cert?: string;
  key?: string;
}

/** The lab's short leases: a dead node's keys go within 30 s (Cilium's default is 15 min). */
export const LAB_LEASE_TTL_SECONDS = 30;
export const LAB_IDENTITY_GC_SECONDS = 15;

function kvstoreFile(paths: LabPaths): string {
  return join(paths.stateDir, 'kvstore.json');
}

export function readLabKVStore(paths: LabPaths): LabKVStore {
  try {
    return JSON.parse(readFileSync(kvstoreFile(paths), 'utf8')) as LabKVStore;
  } catch {
    return { mode: 'memory', endpoints: [] };
  }
}

/** The etcd endpoints agents and the CLI use (none in memory mode). */
export function labKVStoreEndpoints(paths: LabPaths): string[] {
  const c = readLabKVStore(paths);
  if (c.mode !== 'etcd') return [];
  return c.endpoints.length ? c.endpoints : [labEtcdEndpoint(paths)];
}

/** The agents' kvstore flags (they win over the settings the agents inherit). */
function kvstoreAgentArgs(config: MembraneConfig): string[] {
  const paths = labPaths(config);
  const c = readLabKVStore(paths);
  if (c.mode !== 'etcd') return [];
  return [
    '--kvstore-endpoint', labKVStoreEndpoints(paths).join(','),
    ...(c.ca ? ['--kvstore-ca', c.ca] : []), ...(c.cert ? ['--kvstore-cert', c.cert] : []), ...(c.key ? ['--kvstore-key', c.key] : []),
    '--kvstore-lease-ttl', String(config.kvstoreLeaseTTL ?? LAB_LEASE_TTL_SECONDS), '--identity-gc-interval', String(config.identityGcInterval ?? LAB_IDENTITY_GC_SECONDS),
  ];
}

/**
 * Decides the lab's kvstore on `up` (kept in the state dir): etcd for more than one node, the
 * same choice as before on a re-run; a conflicting choice is refused, changing nothing.
 */
async function decideKVStore(config: MembraneConfig, nodes: number): Promise<LabKVStore> {
  const paths = labPaths(config);
  const opts = { kvstore: config.kvstore, kvstoreCa: config.kvstoreCa, kvstoreCert: config.kvstoreCert, kvstoreKey: config.kvstoreKey };
  const had = existsSync(kvstoreFile(paths)) ? readLabKVStore(paths) : undefined;
  const endpoints = config.kvstoreEndpoint ? config.kvstoreEndpoint.split(',').map((e) => e.trim()).filter(Boolean) : [];
  for (const e of endpoints) {
    if (!e.startsWith('unix:')) {
      throw new MembraneError('LAB_KVSTORE_UNREACHABLE', `--kvstore-endpoint ${e}: the lab's agents run in node namespaces with no route to this machine's network`, {
        hint: 'give the etcd a unix socket (etcd --listen-client-urls unix://NAME:0, then --kvstore-endpoint unix:/abs/path/NAME:0), or let `membrane up` run the lab etcd',
      });
    }
  }
  const mode = opts.kvstore ?? (endpoints.length || nodes > 1 ? 'etcd' : had?.mode ?? 'memory');
  if (mode === 'memory' && nodes > 1) {
    throw new MembraneError('LAB_KVSTORE_MEMORY_MULTINODE', `--kvstore memory with ${nodes} nodes: the agents would not share identities, endpoints or resources`, { hint: 'drop --kvstore (a multi-node lab uses etcd)' });
  }
  if (mode === 'memory' && endpoints.length) throw new MembraneError('CLI_USAGE', '--kvstore-endpoint needs --kvstore etcd', { hint: 'drop --kvstore memory' });
  const want: LabKVStore = { mode, endpoints, ...(opts.kvstoreCa ? { ca: opts.kvstoreCa } : {}), ...(opts.kvstoreCert ? { cert: opts.kvstoreCert } : {}), ...(opts.kvstoreKey ? { key: opts.kvstoreKey } : {}) };
  if (had && (had.mode !== want.mode || (endpoints.length && JSON.stringify(had) !== JSON.stringify(want)))) {
    throw new MembraneError('LAB_KVSTORE_CHANGED', `lab ${paths.lab} uses the ${had.mode} kvstore${had.endpoints.length ? ` (${had.endpoints.join(', ')})` : ''}; it cannot switch while up`, { hint: 'run `membrane down` first' });
  }
  const out = had ?? want;
  await mkdir(paths.stateDir, { recursive: true });
  await writeFile(kvstoreFile(paths), JSON.stringify(out));
  return out;
}

function routingFile(paths: LabPaths): string {
  return join(paths.stateDir, 'routing-mode');
}

/** The routing mode the lab was made with (tunnel when nothing is recorded: Cilium's default). */
export function readLabRoutingMode(paths: LabPaths): RoutingMode {
  try {
    const m = readFileSync(routingFile(paths), 'utf8').trim();
    if ((ROUTING_MODES as readonly string[]).includes(m)) return m as RoutingMode;
  } catch { /* not recorded */ }
  return 'tunnel';
}

/**
 * Decides the lab's routing mode on `up` (kept in the state dir): the nodes' routes and every agent
 * must agree, so a running lab does not switch (refused, changing nothing).
 */
async function decideRoutingMode(config: MembraneConfig): Promise<RoutingMode> {
  const paths = labPaths(config);
  if (existsSync(routingFile(paths))) {
    const had = readLabRoutingMode(paths);
    if (had !== config.routingMode) {
      throw new MembraneError('LAB_ROUTING_CHANGED', `lab ${paths.lab} routes pod traffic in ${had} mode; it cannot switch to ${config.routingMode} while up`, {
        hint: `run \`membrane down\` first, or keep --routing-mode ${had}`,
      });
    }
    return had;
  }
  await mkdir(paths.stateDir, { recursive: true });
  await writeFile(routingFile(paths), config.routingMode);
  return config.routingMode;
}

/** The pid of node's agent supervisor, when one runs. */
function supervisorPid(paths: LabPaths, node: string): number | undefined {
  const pid = readPidFile(supervisorFiles(paths.nodeDir(node)).pid);
  return pid && isAlive(pid, SUPERVISOR_MARKER) ? pid : undefined;
}

/**
 * Starts node k's agent supervisor unless a live one is there (with the lab's configuration; it
 * adopts an agent already running); returns the supervisor's pid.
 */
export async function ensureAgent(config: MembraneConfig, k: number, repoRoot = REPO_ROOT): Promise<{ pid: number; started: boolean }> {
  const paths = labPaths(config);
  const node = nodeName(k);
  const ns = nodeNetnsName(node, paths.lab);
  // the lab runs the HTTP/TLS proxies in their own supervised process unless told otherwise
  const externalProxy = config.externalEnvoyProxy !== false;
  const agentArgv = [join(repoRoot, 'bin/node'), ...AGENT_NODE_FLAGS, join(repoRoot, AGENT_MARKER), '--node', node, '--index', String(k), '--routing-mode', readLabRoutingMode(paths),
    '--external-envoy-proxy', externalProxy ? '1' : '0', ...kvstoreAgentArgs(config)];
  const proxyArgv = nsenterNetArgv(ns, [join(repoRoot, 'bin/node'), ...PROXY_NODE_FLAGS, join(repoRoot, PROXY_MARKER), '--node', node]);
  const settingsFile = join(paths.nodeDir(node), 'agent-settings.json');
  const settings = agentSettings(config, agentArgv);
  const old = supervisorPid(paths, node);
  if (old) {
    let had: string | undefined;
    try { had = readFileSync(settingsFile, 'utf8'); } catch { /* an older lab: keep its agent */ }
    if (had === undefined || had === settings) return { pid: old, started: false };
    // the agent's settings changed (as a changed ConfigMap and a restarted agent pod in Cilium):
    // its supervisor stops it (SIGTERM, the agent first) and a new one starts with this run's
    await killPids([old], { timeoutMs: 15_000 });
  }
  await writeFile(settingsFile, settings);
  const files = supervisorFiles(paths.nodeDir(node));
  const pid = spawnDetached({
    argv: [join(repoRoot, 'bin/node'), join(repoRoot, SUPERVISOR_MARKER), '--node', node, ...(externalProxy ? ['--proxy', JSON.stringify(proxyArgv)] : []), '--', ...nsenterNetArgv(ns, agentArgv)],
    logFile: files.log, pidFile: files.pid,
    env: childEnv({ inherit: true, config }),
    cwd: repoRoot,
  });
  return { pid, started: true };
}

/** What a node's agent runs with: its command line and its agent settings (the others are the CLI's and the lab's). */
function agentSettings(config: MembraneConfig, argv: string[]): string {
  const env = configEnv(config);
  const agentEnv: Record<string, string> = {};
  for (const s of SETTINGS) if (s.scope === 'agent' && env[s.env] !== undefined) agentEnv[s.env] = env[s.env]!;
  return JSON.stringify({ argv, env: agentEnv, otel: config.otel });
}

/** The agent supervisor's record of node's agent (restarts, last exit), if a supervisor ran. */
export function agentSupervision(paths: LabPaths, node: string): SupervisorState | undefined {
  return readSupervisorState(supervisorFiles(paths.nodeDir(node)).state);
}

/** A supervised agent that keeps exiting before its API answers is a failed start, not a slow one. */
const FAILED_STARTS = 3;

/** Waits until the node's agent answers GET /v1/status (`pid`: its supervisor). */
export async function waitAgent(paths: LabPaths, node: string, pid: number, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const restarts0 = agentSupervision(paths, node)?.restarts ?? 0;
  for (;;) {
    try {
      await callAgent(paths.agentSocket(node), 'GET', '/v1/status', undefined, 5000);
      return;
    } catch (e) {
      const sup = agentSupervision(paths, node);
      if (!isAlive(pid) || (sup && sup.restarts - restarts0 >= FAILED_STARTS && sup.lastExit && sup.lastExit.ranMs < 30_000)) {
        throw new MembraneError('LAB_AGENT_FAILED', `the ${node} agent exited before its API answered${sup?.lastExit ? ` (${sup.lastExit.reason}; restarted ${sup.restarts - restarts0} times)` : ''}`, {
          hint: `its log (${paths.agentLog(node)}) ends with:\n${await logTail(paths.agentLog(node))}`, cause: e,
        });
      }
      if (Date.now() > deadline) {
        throw new MembraneError('LAB_AGENT_TIMEOUT', `the ${node} agent did not answer within ${timeoutMs / 1000} s`, { hint: `see ${paths.agentLog(node)}`, cause: e });
      }
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

export function defaultNamespaces(): Resource[] {
  const src = { file: '<membrane up>', line: 0, col: 0 };
  return ['default', 'kube-system'].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name }, source: src }) as Resource);
}

export interface LabUpOptions {
  config: MembraneConfig;
  /** Node count; default: as many as exist, at least 1. */
  nodes?: number;
  repoRoot?: string;
  /** Networks and world only, no agents (tests of PodNetworks/Workloads). */
  networkOnly?: boolean;
  progress?: (msg: string) => void;
}

export interface LabUpResult {
  lab: string;
  nodes: { node: string; netns: string; pid?: number; started: boolean; socket: string }[];
  worldPid: number;
  relay?: LabRelay;
}

export async function labUp(opts: LabUpOptions): Promise<LabUpResult> {
  requireRoot();
  const paths = labPaths(opts.config);
  const repoRoot = opts.repoRoot ?? REPO_ROOT;
  const say = opts.progress ?? (() => {});
  const have = await labNodes(paths.lab);
  const nodes = opts.nodes ?? Math.max(1, have.length ? Math.max(...have) : 1);
  // decided (and a bad choice refused) before anything is made
  const kvs = opts.networkOnly ? undefined : await decideKVStore(opts.config, nodes);
  const routingMode = await decideRoutingMode(opts.config);
  await mkdir(paths.stateDir, { recursive: true });
  say(`lab ${paths.lab}: networks for ${nodes} node(s) and the world (routing mode ${routingMode})`);
  await setupLabNetwork({ lab: paths.lab, nodes, routingMode, ipv6: opts.config.enableIPv6 });
  if (kvs?.mode === 'etcd' && !kvs.endpoints.length) {
    const pid = await ensureLabEtcd(paths);
    say(`etcd: ${labEtcdEndpoint(paths)} (pid ${pid}, data ${join(paths.stateDir, 'etcd', 'data')})`);
  }
  const worldPid = await ensureWorldHosts(paths, repoRoot);
  // Before any agent starts: each one serves Hubble on 4244 with mutual TLS from these files.
  if (!opts.networkOnly) await ensureHubbleCerts(paths.stateDir, Array.from({ length: nodes }, (_, i) => nodeName(i + 1)));
  const result: LabUpResult = { lab: paths.lab, nodes: [], worldPid };
  for (let k = 1; k <= nodes; k++) {
    const node = nodeName(k);
    await mkdir(paths.nodeDir(node), { recursive: true });
    const entry: LabUpResult['nodes'][number] = { node, netns: nodeNetnsName(node, paths.lab), started: false, socket: paths.agentSocket(node) };
    if (!opts.networkOnly) {
      const a = await ensureAgent(opts.config, k, repoRoot);
      entry.pid = a.pid;
      entry.started = a.started;
      say(`${node}: agent ${a.started ? 'started' : 'running'} (supervisor pid ${a.pid})`);
    }
    result.nodes.push(entry);
  }
  if (!opts.networkOnly) {
    for (const n of result.nodes) {
      await waitAgent(paths, n.node, n.pid!);
      await applyOnceKvstoreServes(n.socket, defaultNamespaces());
    }
    // The lab DNS (kube-system/coredns, k8s-app=kube-dns) on node1, with the kube-dns Service.
    await applyOnceKvstoreServes(result.nodes[0]!.socket, labDnsResources());
    say(`lab DNS: kube-system/coredns; lab CA certificate: ${caCertPath(paths.stateDir)}`);
    // A cluster gets Hubble Relay: one Observer for every node's flows (Cilium's hubble-relay).
    if (kvs?.mode === 'etcd') {
      result.relay = await ensureLabRelay(opts.config, paths, repoRoot);
      say(`hubble relay: ${result.relay.address} (${result.relay.tls ? 'mutual TLS' : 'PLAIN TEXT'}, pid ${result.relay.pid}); \`membrane lab hubble\` prints the hubble CLI flags`);
    }
  }
  return result;
}

export interface LabDownResult {
  lab: string;
  namespaces: string[];
  processes: number;
}

export async function labDown(opts: { config: MembraneConfig; progress?: (msg: string) => void }): Promise<LabDownResult> {
  requireRoot();
  const paths = labPaths(opts.config);
  const lab = paths.lab;
  const say = opts.progress ?? (() => {});
  const namespaces = (await netnsList()).filter((n) => isLabNetns(n, lab));
  let processes = 0;

  // 0. The Relay (on the lab host, not in a lab namespace).
  processes += await stopLabRelay(paths);

  // 1. Supervisors first (each stops its agent, which leaves the pinned datapath alone; we remove
  // it below), then any agent left, gracefully.
  const supervisors = new Set<number>();
  try {
    for (const node of await readdir(join(paths.stateDir, 'nodes'))) {
      const p = supervisorPid(paths, node);
      if (p) supervisors.add(p);
    }
  } catch { /* no state dir */ }
  // by command line too: a supervisor whose state dir or namespaces were removed under it
  for (const p of pidsByCmdline([SUPERVISOR_MARKER, `--net=${netnsPath(`${lab}-node`)}`])) supervisors.add(p);
  if (supervisors.size) say(`stopping ${supervisors.size} agent supervisor(s)`);
  processes += supervisors.size;
  await killPids([...supervisors], { timeoutMs: 15_000 });
  const agentPids = new Set<number>();
  try {
    for (const node of await readdir(join(paths.stateDir, 'nodes'))) {
      const p = readPidFile(paths.agentPidFile(node));
      if (p && isAlive(p, AGENT_MARKER)) agentPids.add(p);
    }
  } catch { /* no state dir */ }
  for (const ns of namespaces.filter((n) => isLabNodeNetns(n, lab))) for (const p of await netnsPids(ns)) agentPids.add(p);
  if (agentPids.size) say(`stopping ${agentPids.size} agent process(es)`);
  processes += agentPids.size;
  await killPids([...agentPids], { timeoutMs: 10_000 });

  // 2. Every other process in a lab namespace (workloads, world hosts), then the namespaces.
  const rest = new Set<number>();
  for (const ns of namespaces) for (const p of await netnsPids(ns)) rest.add(p);
  processes += rest.size;
  await killPids([...rest], { timeoutMs: 3000 });
  for (const ns of namespaces) await netnsDelete(ns);
  if (namespaces.length) say(`deleted ${namespaces.length} network namespace(s)`);

  // 3. Files: /etc/netns entries, state, BPF pins.
  if (existsSync(ETC_NETNS)) {
    for (const e of readdirSync(ETC_NETNS)) if (isLabNetns(e, lab)) await rm(join(ETC_NETNS, e), { recursive: true, force: true });
  }
  await rm(paths.stateDir, { recursive: true, force: true });
  const bpfRoot = dirname(paths.pinRoot('node1'));
  if (existsSync(bpfRoot)) {
    for (const e of readdirSync(bpfRoot)) if (isLabPinDir(e, lab)) await rm(join(bpfRoot, e), { recursive: true, force: true });
  }
  return { lab, namespaces, processes };
}

export interface LabStatus {
  lab: string;
  namespaces: string[];
  nodes: { node: string; agentPid?: number; agentAlive: boolean; socket: string; supervisorPid?: number; restarts?: number; lastExit?: string }[];
  world: { pid?: number; alive: boolean };
  relay?: LabRelay;
}

export async function labStatus(paths: LabPaths): Promise<LabStatus> {
  const namespaces = (await netnsList()).filter((n) => isLabNetns(n, paths.lab));
  const nodes = (await labNodes(paths.lab)).map((k) => {
    const node = nodeName(k);
    const pid = readPidFile(paths.agentPidFile(node));
    const sp = supervisorPid(paths, node);
    const sup = agentSupervision(paths, node);
    return {
      node, ...(pid ? { agentPid: pid } : {}), agentAlive: isAlive(pid, AGENT_MARKER), socket: paths.agentSocket(node),
      ...(sp ? { supervisorPid: sp } : {}), ...(sup ? { restarts: sup.restarts } : {}), ...(sup?.lastExit ? { lastExit: `${sup.lastExit.at} ${sup.lastExit.reason}` } : {}),
    };
  });
  const wp = readPidFile(join(worldDir(paths), 'echo.pid'));
  const relay = labRelay(paths);
  return { lab: paths.lab, namespaces, nodes, world: { ...(wp ? { pid: wp } : {}), alive: isAlive(wp, WORLD_MARKER) }, ...(relay ? { relay } : {}) };
}

/**
 * `membrane node add`: one more node on a running lab (the next number): its namespace, underlay
 * port, VXLAN device and routes (every node's routes are brought up to date), Hubble certificate
 * and agent, which registers in etcd; the other agents learn it from there.
 */
export async function labNodeAdd(opts: { config: MembraneConfig; progress?: (msg: string) => void; repoRoot?: string }): Promise<LabUpResult> {
  requireRoot();
  const paths = labPaths(opts.config);
  const have = await labNodes(paths.lab);
  if (!have.length) throw new MembraneError('LAB_NOT_UP', `lab ${paths.lab} is not up`, { hint: 'start it with `membrane up --nodes N`' });
  return labUp({ config: opts.config, nodes: Math.max(...have) + 1, ...(opts.progress ? { progress: opts.progress } : {}), ...(opts.repoRoot ? { repoRoot: opts.repoRoot } : {}) });
}

/**
 * `membrane node delete NODE`: the node leaves a running lab as a dead machine would, except that
 * its pods are deleted from the cluster's resources first (a Node gone in Kubernetes takes its
 * pods with it). Its agent is stopped without a goodbye (SIGKILL): the other nodes forget its
 * endpoints when its kvstore lease expires, within one lease TTL. node1 holds the world link and
 * the lab DNS and cannot be deleted; the highest-numbered node is the one `node add` brings back.
 */
export async function labNodeDelete(opts: { config: MembraneConfig; node: string; progress?: (msg: string) => void }): Promise<{ node: string; pods: number }> {
  requireRoot();
  const paths = labPaths(opts.config);
  const say = opts.progress ?? (() => {});
  const k = nodeIndexOf(opts.node);
  const have = await labNodes(paths.lab);
  if (!have.includes(k)) throw new MembraneError('LAB_NODE_UNKNOWN', `lab ${paths.lab} has no node ${opts.node}`, { hint: `its nodes: ${have.map(nodeName).join(', ') || 'none'}` });
  if (k === 1) throw new MembraneError('LAB_NODE_REQUIRED', 'node1 holds the world link and the lab DNS; it leaves only with `membrane down`', { hint: `delete another node (${have.filter((x) => x !== 1).map(nodeName).join(', ') || 'there is none'})` });
  const peer = paths.agentSocket(nodeName(have.find((x) => x !== k)!));
  // its pods leave the cluster's resources (through another node's agent)
  const { items } = await callAgent<{ items: Resource[] }>(peer, 'GET', '/v1/resources?kind=Pod');
  const mine = items.filter((p) => (p as { spec?: { nodeName?: string } }).spec?.nodeName === opts.node);
  if (mine.length) await callAgent(peer, 'POST', '/v1/delete', { resources: mine });
  say(`${opts.node}: ${mine.length} pod(s) deleted`);
  // the agent dies as a machine would; then its processes, pods and namespace go
  const ns = nodeNetnsName(opts.node, paths.lab);
  // its supervisor first: it would bring the agent back within a second
  const sup = supervisorPid(paths, opts.node);
  if (sup) process.kill(sup, 'SIGKILL');
  const agent = readPidFile(paths.agentPidFile(opts.node));
  if (agent && isAlive(agent, AGENT_MARKER)) process.kill(agent, 'SIGKILL');
  await killPids(await netnsPids(ns), { timeoutMs: 3000 });
  for (const p of mine) {
    const podNs = podNetnsName(opts.node, p.metadata.namespace ?? 'default', p.metadata.name, paths.lab);
    await killPids(await netnsPids(podNs), { timeoutMs: 2000 });
    await netnsDelete(podNs);
    await rm(join(ETC_NETNS, podNs), { recursive: true, force: true });
  }
  await netnsDelete(ns);
  await rm(paths.nodeDir(opts.node), { recursive: true, force: true });
  await rm(paths.pinRoot(opts.node), { recursive: true, force: true });
  // the others' routes to it go with its address (the underlay port went with the namespace)
  await removeNodeRoutes(paths.lab, k, have.filter((x) => x !== k));
  say(`${opts.node}: agent stopped, namespace removed; the other nodes drop its endpoints when its lease expires`);
  return { node: opts.node, pods: mine.length };
}

/**
 * The lab's own resources, applied through a running agent. `up` after an etcd outage restarts
 * etcd and applies at once, while the agents' etcd client still refuses calls for a few seconds
 * (its circuit breaker): that wait is part of coming back, not a failure of `up`.
 */
async function applyOnceKvstoreServes(socket: string, resources: unknown[], waitMs = 60_000): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await callAgent(socket, 'POST', '/v1/apply', { resources, dryRun: false });
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== 'KVSTORE_UNAVAILABLE' || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
