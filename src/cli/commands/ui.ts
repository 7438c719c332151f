/** `membrane ui`: serves the web UI (service map, flows, why, policy view) until interrupted. */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { resolve } from 'node:path';
import { labPaths } from '../../common/paths.ts';
import { parseServer } from '../../hubble/client.ts';
import { MembraneError } from '../../common/errors.ts';
import { labRelay } from '../../lab/relay.ts';
import { relayClientTls } from '../../lab/hubble-certs.ts';
import { labNodes, nodeName } from '../../lab/index.ts';

export const UI_ASSETS_DIR = resolve(import.meta.dirname, '../../../dist/ui');

export function register(program: Command, config: MembraneConfig): void {
  program.command('ui')
    .description('Serve the web UI: live service map, flows, why a flow was dropped, policy per workload')
    .option('--address <ip>', 'listen address', '127.0.0.1')
    .option('--port <n>', 'listen port (Hubble UI\'s 12000)', '12000')
    .option('--server <addr>', 'the Observer to read flows from (unix:///path or host:port, plain text); default the lab\'s Hubble Relay on a cluster (every node\'s flows, mutual TLS), else the node\'s hubble socket')
    .option('--node <name>', 'node whose agent answers policy questions first (and whose hubble socket is the default server without a Relay)')
    .option('--assets <dir>', 'the built UI bundle to serve', UI_ASSETS_DIR)
    .action(async (o: { address: string; port: string; server?: string; node?: string; assets: string }) => {
      const { createUiServer } = await import('../../ui/server.ts');
      const port = Number(o.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new MembraneError('CLI_BAD_PORT', `--port ${o.port}: not a port number`, { hint: '0-65535 (0 picks a free port)' });
      const paths = labPaths(config);
      const node = o.node ?? config.node;
      // a cluster lab's Relay merges every node's flows (the page's node filter picks one); its
      // client side is the lab's Hubble client certificate, as for `membrane observe`
      const relay = o.server ?? config.hubbleServer ? undefined : labRelay(paths);
      const others = relay ? (await labNodes(paths.lab)).map(nodeName).filter((n) => n !== node) : [];
      const server = createUiServer({
        address: o.address, port,
        observer: parseServer(o.server ?? config.hubbleServer ?? (relay ? relay.address : `unix://${paths.hubbleSocket(node)}`)),
        ...(relay?.tls ? { observerTls: relayClientTls(paths.stateDir) } : {}),
        agentSocket: paths.agentSocket(node),
        otherAgentSockets: others.map((n) => paths.agentSocket(n)),
        assetsDir: o.assets,
        labels: { lab: paths.lab, node: relay ? `Relay (${[node, ...others].length} nodes)` : node },
      });
      await server.start();
      process.stdout.write(`membrane ui: ${server.url()} (lab ${paths.lab}, ${relay ? `flows of every node through the Relay ${relay.address}, policy from ${node} first` : `node ${node}`}; Ctrl-C stops it)\n`);
      await new Promise<void>((done) => {
        const stop = () => { void server.stop().then(done); };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
