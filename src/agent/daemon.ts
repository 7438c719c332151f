/**
 * The agent daemon of one node: the agent, its datapath, proxies, Hubble and API, started in
 * order and stopped cleanly on SIGTERM/SIGINT without touching the datapath (pinned programs and
 * maps keep enforcing policy while no agent runs). A provider's entry runs it with its own pod
 * networks: the lab's is src/lab/node-agent.ts (started by `membrane up` inside the node's
 * network namespace).
 */
import { mkdir, writeFile, rm } from 'node:fs/promises';
import type { MembraneConfig } from '../common/config.ts';
import { labPaths, type LabPaths } from '../common/paths.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import { openAgentKVStore } from './kvstore-open.ts';
import { createCluster, type Cluster } from './cluster.ts';
import type { NodeView } from './views.ts';
import { createAgentPolicyEngine } from '../policy/agent-engine.ts';
import { createAgent } from './agent.ts';
import { createApiServer } from './api-server.ts';
import { agentRoutes } from './routes.ts';
import { composeNode, type ComposeInput } from './compose.ts';
import type { PodNetworkProvider } from './pod-network.ts';
import type { HubbleServerTlsFiles } from '../hubble/index.ts';

export interface AgentDaemonOptions {
  config: MembraneConfig;
  node: string;
  /** the node's pod networks (the lab, the CNI plugin) */
  provider(ctx: { paths: LabPaths; logger: Logger }): PodNetworkProvider;
  /** Hubble's TLS files when no setting names them (the lab's: src/lab/hubble-certs.ts) */
  hubbleTls?: HubbleServerTlsFiles;
  /** the datapath object loaded ahead (a standby agent loads it while it waits) */
  preloadedDatapath?: ComposeInput['preloadedDatapath'];
}

export async function runAgentDaemon(o: AgentDaemonOptions): Promise<void> {
  const { config, node } = o;
  const paths = labPaths(config);
  await mkdir(paths.nodeDir(node), { recursive: true });
  const logger = createLogger({ level: config.logLevel });
  const started = Date.now();
  logger.info({ subsys: 'daemon', node, pid: process.pid }, 'agent starting');
  const provider = o.provider({ paths, logger });

  const hostIp = provider.nodeAddresses[0] ?? '';
  const store = await openAgentKVStore({
    endpoints: (config.kvstoreEndpoint ?? '').split(',').map((e) => e.trim()).filter(Boolean), storeFile: paths.storeFile(node),
    ...(config.kvstoreCa ? { ca: config.kvstoreCa } : {}), ...(config.kvstoreCert ? { cert: config.kvstoreCert } : {}), ...(config.kvstoreKey ? { key: config.kvstoreKey } : {}),
    leaseTtlSeconds: config.kvstoreLeaseTTL ?? 900, identityGcIntervalMs: (config.identityGcInterval ?? 60) * 1000,
    nodeSuffix: hostIp, logger,
  });
  const { kv, allocator } = store;
  logger.info({ subsys: 'daemon', backend: kv.backend }, 'kvstore open');
  const policy = createAgentPolicyEngine({ allocator });

  // In a kvstore cluster: this node registered, its endpoints published, remote pods and nodes known.
  let agentRef: Awaited<ReturnType<typeof createAgent>> | undefined;
  let agentRunning = false;
  let clusterKick: NodeJS.Timeout | undefined;
  const self = { name: node, cluster: 'default', ip: hostIp, ...(provider.nodeAddresses[1] ? { routerIp: provider.nodeAddresses[1] } : {}), ...(provider.podCidr ? { podCidr: provider.podCidr } : {}) };
  const cluster: Cluster | undefined = kv.backend === 'etcd'
    ? createCluster({
      kv, logger, self,
      onChange() {
        // remote pods and nodes feed the ipcache (the reconcile writes it): one pass per burst;
        // before the agent runs its first reconcile reads them anyway (settled() would spin)
        clusterKick ??= setTimeout(() => { clusterKick = undefined; syncRemote(); if (agentRunning) void agentRef?.settled(); }, 20);
      },
    })
    : undefined;
  /** Remote pods and nodes in the policy engine's ipcache too: the L7 proxies name peers through it. */
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

  const parts = await composeNode({
    node, config, provider, paths, logger, kv, policy, ...(o.hubbleTls ? { hubbleTls: o.hubbleTls } : {}),
    ...(o.preloadedDatapath ? { preloadedDatapath: o.preloadedDatapath } : {}),
    ...(cluster ? { remoteEndpoint: (ip: string) => cluster.remoteEndpoint(ip), clusterNodes: () => cluster.nodes() } : {}),
  });
  const agent = await createAgent({
    config: { node, hostIp, lab: paths.lab, policyAuditMode: config.policyAuditMode }, kv, datapath: parts.datapath, networks: parts.networks,
    workloads: parts.workloads, policy, logger,
    extraIPCache: () => [...policy.ipcacheEntries(), ...parts.nodeIPCache(), ...parts.fqdnIPCache(), ...(cluster?.ipcacheEntries() ?? [])],
    ...(cluster ? { cluster } : {}),
    onPolicyChange: (outcome, n) => parts.policyChange(outcome, n),
  });
  agentRef = agent;
  if (cluster) {
    await cluster.start();
    syncRemote();
  }
  const api = createApiServer({
    socketPath: paths.agentSocket(node),
    routes: {
      ...agentRoutes(agent, () => parts.status({ agent, started, policy }), policy), ...parts.fqdnRoutes(), ...parts.aiRoutes(),
      'GET /v1/nodes': async () => ({
        items: (cluster?.nodes() ?? [self]).map((n): NodeView => ({
          name: n.name, status: 'Ready', internalIP: n.ip, ...(n.routerIp ? { routerIP: n.routerIp } : {}), ...(n.podCidr ? { podCIDR: n.podCidr } : {}), self: n.name === node,
        })),
      }),
    },
  });

  await parts.datapath.start();
  await parts.start(agent);
  await agent.start();
  agentRunning = true;
  // L7 after the first reconcile: every endpoint has its policy before a proxy judges anything
  await parts.serve();
  // Identities restored from the kvstore that no endpoint or policy claimed in the first
  // reconcile belong to pods deleted while no agent ran: free them and resync the maps.
  const freed = allocator.gcUnreferenced();
  if (freed.length) {
    logger.info({ subsys: 'daemon', identities: freed.map((i) => i.id) }, 'released identities unused since the restart');
    await agent.settled();
  }
  await api.start();
  await writeFile(paths.agentPidFile(node), String(process.pid));
  logger.info({ subsys: 'daemon', node, pid: process.pid, pods: provider.kind }, 'agent ready');

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
}
