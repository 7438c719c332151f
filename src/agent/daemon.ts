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
import { openMemoryStore } from '../kvstore/memory.ts';
import { openPersistentAllocator } from './identity-store.ts';
import { createAgentPolicyEngine } from '../policy/agent-engine.ts';
import { createAgent } from './agent.ts';
import { createApiServer } from './api-server.ts';
import { agentRoutes } from './routes.ts';
import { composeNode } from './compose.ts';
import type { PodNetworkProvider } from './pod-network.ts';
import type { HubbleServerTlsFiles } from '../hubble/index.ts';

export interface AgentDaemonOptions {
  config: MembraneConfig;
  node: string;
  /** the node's pod networks (the lab, the CNI plugin) */
  provider(ctx: { paths: LabPaths; logger: Logger }): PodNetworkProvider;
  /** Hubble's TLS files when no setting names them (the lab's: src/lab/hubble-certs.ts) */
  hubbleTls?: HubbleServerTlsFiles;
}

export async function runAgentDaemon(o: AgentDaemonOptions): Promise<void> {
  const { config, node } = o;
  const paths = labPaths(config);
  await mkdir(paths.nodeDir(node), { recursive: true });
  const logger = createLogger({ level: config.logLevel });
  const started = Date.now();
  const provider = o.provider({ paths, logger });

  const kv = await openMemoryStore({ file: paths.storeFile(node) });
  const allocator = await openPersistentAllocator(kv);
  const policy = createAgentPolicyEngine({ allocator });
  const parts = await composeNode({ node, config, provider, paths, logger, kv, policy, ...(o.hubbleTls ? { hubbleTls: o.hubbleTls } : {}) });
  const agent = await createAgent({
    config: { node, hostIp: provider.nodeAddresses[0] ?? '', lab: paths.lab }, kv, datapath: parts.datapath, networks: parts.networks,
    workloads: parts.workloads, policy, logger, extraIPCache: () => [...policy.ipcacheEntries(), ...parts.nodeIPCache(), ...parts.fqdnIPCache()],
    onPolicyChange: (outcome, n) => parts.policyChange(outcome, n),
  });
  const api = createApiServer({
    socketPath: paths.agentSocket(node),
    routes: { ...agentRoutes(agent, () => parts.status({ agent, started, policy }), policy), ...parts.fqdnRoutes() },
  });

  await parts.datapath.start();
  await parts.start(agent);
  await agent.start();
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
    await agent.stop();
    await parts.stop();
    await parts.datapath.stop();
    await kv.close();
    await rm(paths.agentPidFile(node), { force: true });
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
