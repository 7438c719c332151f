/**
 * `membrane lab hubble [--node N] [--flags | -o json]`: how to point the upstream `hubble` CLI (or
 * Relay, UI) at a node's Observer: the root-only unix socket, and TCP 4244 in the node's namespace
 * with mutual TLS (the lab's Hubble CA, client certificate and the node's server name).
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { labPaths } from '../../common/paths.ts';
import type { MembraneConfig } from '../../common/config.ts';
import type { StatusView } from '../../agent/views.ts';
import { MembraneError } from '../../common/errors.ts';
import { hubbleServerName, HUBBLE_SERVER_PORT } from '../../hubble/tls.ts';
import { hubbleTlsPaths, nodeIndexOf, nodeIp, nodeNetnsName, RELAY_SERVER_NAME } from '../../lab/index.ts';
import { callAgent } from '../../agent/api-client.ts';
import { labRelay } from '../../lab/relay.ts';

export interface HubbleAccess {
  node: string;
  socket: string;
  netns: string;
  /** host:port inside the node's network namespace */
  address: string;
  /** false when the agent serves 4244 in plain text (MEMBRANE_HUBBLE_DISABLE_TLS=true); undefined when it did not answer */
  tls: boolean | undefined;
  serverName: string;
  caCert: string;
  clientCert: string;
  clientKey: string;
  /** the hubble CLI's flags for 4244 */
  flags: string[];
}

export async function hubbleAccess(config: MembraneConfig, node: string): Promise<HubbleAccess> {
  const paths = labPaths(config);
  const t = hubbleTlsPaths(paths.stateDir);
  if (!existsSync(t.caCert)) {
    throw new MembraneError('LAB_NO_HUBBLE_CA', `lab ${paths.lab} has no Hubble CA at ${t.caCert}`, { hint: 'run `membrane up` first (it creates the Hubble certificates)' });
  }
  let tls: boolean | undefined;
  try {
    const s = await callAgent<StatusView>(paths.agentSocket(node), 'GET', '/v1/status', undefined, 3000);
    tls = s.hubble.listen ? s.hubble.listen.tls : undefined;
  } catch { /* agent down: the files are still right */ }
  const address = `${nodeIp(nodeIndexOf(node))}:${HUBBLE_SERVER_PORT}`;
  const serverName = hubbleServerName(node);
  const flags = tls === false
    ? ['--server', address]
    : ['--server', address, '--tls', '--tls-ca-cert-files', t.caCert, '--tls-client-cert-file', t.clientCert, '--tls-client-key-file', t.clientKey, '--tls-server-name', serverName];
  return {
    node, socket: paths.hubbleSocket(node), netns: nodeNetnsName(node, paths.lab), address, tls, serverName,
    caCert: t.caCert, clientCert: t.clientCert, clientKey: t.clientKey, flags,
  };
}

export function formatHubbleAccess(a: HubbleAccess): string {
  const tcp = a.tls === false
    ? `TCP ${a.address} in netns ${a.netns}: PLAIN TEXT (MEMBRANE_HUBBLE_DISABLE_TLS=true): any pod without an egress policy reads every flow`
    : `TCP ${a.address} in netns ${a.netns}: mutual TLS, server name ${a.serverName}`;
  return [
    `Hubble API of ${a.node}`,
    `  unix socket (root only): ${a.socket}`,
    `  ${tcp}`,
    ``,
    `hubble CLI:`,
    `  hubble observe --server unix://${a.socket} --last 20`,
    `  ip netns exec ${a.netns} hubble observe ${a.flags.join(' ')} --last 20`,
    `  (hubble status / hubble list nodes take the same flags; so does \`membrane observe\`)`,
    ``,
    `Hubble CA ${a.caCert}; client certificate ${a.clientCert}, key ${a.clientKey} (0600, root only).`,
    `The server accepts only client certificates this CA signed. Plain text on ${HUBBLE_SERVER_PORT} needs`,
    `MEMBRANE_HUBBLE_DISABLE_TLS=true in the environment of \`membrane up\` (default: off).`,
    ``,
  ].join('\n');
}

export function registerLabHubble(lab: Command, config: MembraneConfig): void {
  lab.command('hubble')
    .description('How to point the hubble CLI at a node: the unix socket, and TCP 4244 with mutual TLS (flags and files)')
    .option('--node <name>', 'lab node', config.node)
    .option('--flags', 'print only the hubble CLI flags for TCP 4244, one per line (for `$(...)`)')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { node: string; flags?: boolean; output?: string }) => {
      const a = await hubbleAccess(config, o.node);
      if (o.flags) return void process.stdout.write(a.flags.join('\n') + '\n');
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(a, null, 2) + '\n');
      process.stdout.write(formatHubbleAccess(a));
      const r = labRelay(labPaths(config));
      if (r) {
        const flags = r.tls
          ? ['--server', r.address, '--tls', '--tls-ca-cert-files', a.caCert, '--tls-client-cert-file', a.clientCert, '--tls-client-key-file', a.clientKey, '--tls-server-name', RELAY_SERVER_NAME]
          : ['--server', r.address];
        process.stdout.write([
          `Hubble Relay (every node's flows): ${r.address} on this host, ${r.tls ? 'mutual TLS, server name *.hubble-relay.cilium.io' : 'PLAIN TEXT'}`,
          `  hubble observe ${flags.join(' ')} --last 20`,
          `  (hubble status / hubble list nodes take the same flags; \`membrane observe\` uses the Relay by itself)`,
          ``,
        ].join('\n'));
      }
    });
}
