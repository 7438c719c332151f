/**
 * The lab's agent process: `bin/node src/lab/node-agent.ts --node node1 --index 1 [settings]`,
 * started by `membrane up` inside the node's network namespace (nsenter --net, keeping the host
 * mount namespace so the BPF filesystem is the host's). It builds the configuration (environment,
 * then these flags) and runs the agent daemon with the lab as its PodNetworkProvider.
 */
import { parseArgs } from 'node:util';
import { loadConfig, SETTINGS, type ConfigFlags } from '../common/config.ts';
import { runAgentDaemon } from '../agent/daemon.ts';
import { createLabProvider } from './provider.ts';
import { nodeName } from './names.ts';
import { hubbleTlsPaths } from './hubble-certs.ts';

const agentSettings = SETTINGS.filter((s) => s.scope !== 'cli');
const { values } = parseArgs({
  options: {
    ...Object.fromEntries(agentSettings.map((s) => [s.flag.slice(2), { type: 'string' as const }])),
    node: { type: 'string' }, index: { type: 'string', default: '1' },
  },
}) as { values: Record<string, string | undefined> };
const flags: ConfigFlags = {};
for (const s of agentSettings) {
  const v = values[s.flag.slice(2)];
  if (v !== undefined) flags[s.name] = v;
}
const nodeIndex = Number(values.index);
const node = typeof values.node === 'string' ? values.node : nodeName(nodeIndex);
const config = loadConfig(flags);
await runAgentDaemon({
  config, node,
  // the Hubble certificates `membrane up` made for this node (unless the settings name others)
  hubbleTls: hubbleTlsPaths(config.stateDir).server(node),
  provider: ({ paths, logger }) => createLabProvider({ config, paths, node, nodeIndex, logger }),
});
