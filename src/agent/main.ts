/**
 * The agent daemon: `bin/node src/agent/main.ts --node node1 --index 1`, started by `membrane up`
 * inside the node's network namespace (nsenter --net, keeping the host mount namespace so the
 * BPF filesystem is the host's). Stops cleanly on SIGTERM/SIGINT without touching the datapath:
 * pinned programs and maps keep enforcing policy while no agent runs.
 */
import { parseArgs } from 'node:util';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import { labPaths } from './paths.ts';
import { createLogger } from './logger.ts';
import { openAgentKVStore } from './kvstore-open.ts';
import { nodeIp, podCidr, routerIp } from '../lab/index.ts';
import { createCluster, type Cluster } from './cluster.ts';
import type { NodeView } from './views.ts';
import { createAgentPolicyEngine } from '../policy/engine.ts';
import { createAgent } from './agent.ts';
import { createApiServer } from './api-server.ts';
import { agentRoutes } from './routes.ts';
import { composeNode } from './compose.ts';

const { values } = parseArgs({
  options: {
    node: { type: 'string', default: 'node1' },
    index: { type: 'string', default: '1' },
    'log-level': { type: 'string' },
    // OTLP/HTTP collector for the HTTP proxy's spans (default: env MEMBRANE_OTLP_ENDPOINT)
    'otlp-endpoint': { type: 'string' },
    // etcd (Cilium's --kvstore etcd --kvstore-opt etcd.address=...): comma-separated endpoints
    'kvstore-endpoint': { type: 'string' },
    'kvstore-ca': { type: 'string' },
    'kvstore-cert': { type: 'string' },
    'kvstore-key': { type: 'string' },
    'kvstore-lease-ttl': { type: 'string', default: '900' },
    'identity-gc-interval': { type: 'string', default: '60' },
  },
});
if (values['otlp-endpoint']) process.env.MEMBRANE_OTLP_ENDPOINT = values['otlp-endpoint'];
const node = values.node!;
const nodeIndex = Number(values.index);
const paths = labPaths();
await mkdir(paths.nodeDir(node), { recursive: true });
const logger = createLogger({ ...(values['log-level'] ? { level: values['log-level'] } : {}) });
const started = Date.now();

const store = await openAgentKVStore({
  endpoints: (values['kvstore-endpoint'] ?? '').split(',').filter(Boolean), storeFile: paths.storeFile(node),
  ...(values['kvstore-ca'] ? { ca: values['kvstore-ca'] } : {}), ...(values['kvstore-cert'] ? { cert: values['kvstore-cert'] } : {}), ...(values['kvstore-key'] ? { key: values['kvstore-key'] } : {}),
  leaseTtlSeconds: Number(values['kvstore-lease-ttl']), identityGcIntervalMs: Number(values['identity-gc-interval']) * 1000,
  nodeSuffix: nodeIp(nodeIndex), logger,
});
const { kv, allocator } = store;
const policy = createAgentPolicyEngine({ allocator });
// In a kvstore cluster: this node registered, its endpoints published, remote pods and nodes known.
let agentRef: Awaited<ReturnType<typeof createAgent>> | undefined;
let agentRunning = false;
let clusterKick: NodeJS.Timeout | undefined;
const cluster: Cluster | undefined = kv.backend === 'etcd'
  ? createCluster({
    kv, logger, self: { name: node, cluster: 'default', ip: nodeIp(nodeIndex), routerIp: routerIp(nodeIndex), podCidr: podCidr(nodeIndex) },
    onChange() {
      // remote pods and nodes feed the ipcache (the reconcile writes it): one pass per burst
      // (agent.settled() spins until the agent runs: the first reconcile at start reads them anyway)
      clusterKick ??= setTimeout(() => { clusterKick = undefined; syncRemote(); if (agentRunning) void agentRef?.settled(); }, 20);
    },
  })
  : undefined;
/** Remote pods in the policy engine's ipcache too: the L7 proxies name their peers through it. */
let remoteInEngine = new Set<string>();
function syncRemote(): void {
  if (!cluster) return;
  const now = new Set<string>();
  for (const e of cluster.ipcacheEntries()) {
    now.add(e.prefix);
    policy.engine.ipcache.upsert(e.prefix, e.identity, 'node');
  }
  for (const p of remoteInEngine) if (!now.has(p)) policy.engine.ipcache.delete(p, 'node');
  remoteInEngine = now;
}
const parts = await composeNode({ node, nodeIndex, paths, logger, kv, policy, ...(cluster ? { remoteEndpoint: (ip: string) => cluster.remoteEndpoint(ip) } : {}) });
const agent = await createAgent({
  config: { node, nodeIndex, lab: paths.lab }, kv, datapath: parts.datapath, networks: parts.networks,
  workloads: parts.workloads, policy, logger,
  extraIPCache: () => [...policy.ipcacheEntries(), ...parts.nodeIPCache(), ...parts.fqdnIPCache(), ...(cluster?.ipcacheEntries() ?? [])],
  ...(cluster ? { cluster } : {}),
});
agentRef = agent;
if (cluster) {
  await cluster.start();
  syncRemote();
}
const api = createApiServer({
  socketPath: paths.agentSocket(node),
  routes: {
    ...agentRoutes(agent, () => parts.status({ agent, started, policy }), policy), ...parts.fqdnRoutes(),
    'GET /v1/nodes': async () => ({
      items: (cluster?.nodes() ?? [{ name: node, cluster: 'default', ip: nodeIp(nodeIndex), routerIp: routerIp(nodeIndex), podCidr: podCidr(nodeIndex) }])
        .map((n): NodeView => ({ name: n.name, status: 'Ready', internalIP: n.ip, ...(n.routerIp ? { routerIP: n.routerIp } : {}), ...(n.podCidr ? { podCIDR: n.podCidr } : {}), self: n.name === node })),
    }),
  },
});

await parts.datapath.start();
await parts.start(agent);
await agent.start();
agentRunning = true;
// Identities restored from the kvstore that no endpoint or policy claimed in the first
// reconcile belong to pods deleted while no agent ran: free them and resync the maps.
const freed = allocator.gcUnreferenced();
if (freed.length) {
  logger.info({ subsys: 'daemon', identities: freed.map((i) => i.id) }, 'released identities unused since the restart');
  await agent.settled();
}
await api.start();
await writeFile(paths.agentPidFile(node), String(process.pid));
logger.info({ subsys: 'daemon', node, pid: process.pid }, 'agent ready');

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ subsys: 'daemon', signal }, 'agent stopping (datapath stays enforcing)');
  await api.stop();
  agentRunning = false;
  await agent.stop();
  cluster?.stop();
  await cluster?.flushed();
  await parts.stop();
  await parts.datapath.stop();
  store.stop();
  // leased keys (this node's ipcache entries, identity users) outlive a restart by one lease TTL
  await kv.close({ keepLeases: true });
  await rm(paths.agentPidFile(node), { force: true });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
