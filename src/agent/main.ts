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
import { openMemoryStore } from '../kvstore/memory.ts';
import { openPersistentAllocator } from './identity-store.ts';
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
  },
});
if (values['otlp-endpoint']) process.env.MEMBRANE_OTLP_ENDPOINT = values['otlp-endpoint'];
const node = values.node!;
const nodeIndex = Number(values.index);
const paths = labPaths();
await mkdir(paths.nodeDir(node), { recursive: true });
const logger = createLogger({ ...(values['log-level'] ? { level: values['log-level'] } : {}) });
const started = Date.now();

const kv = await openMemoryStore({ file: paths.storeFile(node) });
const allocator = await openPersistentAllocator(kv);
const policy = createAgentPolicyEngine({ allocator });
const parts = await composeNode({ node, nodeIndex, paths, logger, kv, policy });
const agent = await createAgent({
  config: { node, nodeIndex, lab: paths.lab }, kv, datapath: parts.datapath, networks: parts.networks,
  workloads: parts.workloads, policy, logger, extraIPCache: () => [...policy.ipcacheEntries(), ...parts.nodeIPCache(), ...parts.fqdnIPCache()],
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
logger.info({ subsys: 'daemon', node, pid: process.pid }, 'agent ready');

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
