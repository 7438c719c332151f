/**
 * The lab's agent process: `bin/node src/lab/node-agent.ts --node node1 --index 1 [settings]`,
 * run by the node's supervisor (src/lab/supervisor.ts) inside the node's network namespace
 * (nsenter --net, keeping the host mount namespace so the BPF filesystem is the host's). It builds
 * the configuration (environment, then these flags) and runs the agent daemon with the lab as its
 * PodNetworkProvider.
 *
 * A restart is on the enforcement-critical path (L7 is down until the agent is back), so loading
 * is made cheap: V8's compile cache keeps the stripped and compiled modules between runs, and with
 * `--standby` the process loads everything, the datapath's object included (its programs through
 * the verifier, against the node's pinned maps, nothing attached), and then waits for a line on
 * stdin before it starts (the supervisor keeps one such spare ready and promotes it when the agent
 * exits).
 */
import { enableCompileCache } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

enableCompileCache();
const standby = process.argv.includes('--standby');
const args = process.argv.slice(2).filter((a) => a !== '--standby');

const [{ parseArgs }, { loadConfig, SETTINGS }, { runAgentDaemon }, { createLabProvider }, { nodeName }, { hubbleTlsPaths }, { labPaths }, { preloadObject }] = await Promise.all([
  import('node:util'), import('../common/config.ts'), import('../agent/daemon.ts'), import('./provider.ts'), import('./names.ts'), import('./hubble-certs.ts'),
  import('../common/paths.ts'), import('../datapath/linux/index.ts'),
]);

const agentSettings = SETTINGS.filter((s) => s.scope !== 'cli');
const { values } = parseArgs({
  args,
  options: {
    ...Object.fromEntries(agentSettings.map((s) => [s.flag.slice(2), { type: 'string' as const }])),
    node: { type: 'string' }, index: { type: 'string', default: '1' },
  },
}) as { values: Record<string, string | undefined> };
const flags: import('../common/config.ts').ConfigFlags = {};
for (const s of agentSettings) {
  const v = values[s.flag.slice(2)];
  if (v !== undefined) flags[s.name] = v;
}
const nodeIndex = Number(values.index);
const node = typeof values.node === 'string' ? values.node : nodeName(nodeIndex);
const config = loadConfig(flags);
let preloaded: ReturnType<typeof preloadObject> | undefined;
if (standby) {
  try {
    // only against maps the node already has: a spare never creates the node's pins
    const pinRoot = labPaths(config).pinRoot(node);
    if (existsSync(join(pinRoot, 'mb_endpoints'))) preloaded = preloadObject(pinRoot);
  } catch (e) {
    process.stderr.write(`standby: datapath object not preloaded (the agent loads it at start): ${(e as Error).message}\n`);
  }
  await waitForGo();
}
await runAgentDaemon({
  config, node, ...(preloaded ? { preloadedDatapath: preloaded } : {}),
  // the Hubble certificates `membrane up` made for this node (unless the settings name others)
  hubbleTls: hubbleTlsPaths(config.stateDir).server(node),
  provider: ({ paths, logger }) => createLabProvider({ config, paths, node, nodeIndex, logger }),
});

/** A spare waits for "go" from its supervisor; a supervisor gone (stdin closed) ends it unstarted. */
function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      if (!buf.includes('\n')) return;
      process.stdin.off('data', onData);
      process.stdin.off('end', onEnd);
      process.stdin.pause();
      resolve();
    };
    const onEnd = () => process.exit(0);
    process.stdin.on('data', onData);
    process.stdin.on('end', onEnd);
  });
}
