/**
 * Host mode: the agent daemon in the network namespace it is started in (a real host, or a
 * namespace standing in for one), with the containers membrane-cni attaches as its pods
 * (host-provider.ts) and the CNI routes on its API socket (routes.ts). `membrane agent` runs it.
 */
import type { MembraneConfig } from '../common/config.ts';
import { runAgentDaemon } from '../agent/daemon.ts';
import { hubbleTcpSecurity } from '../hubble/index.ts';
import { createHostProvider, type HostProvider } from './host-provider.ts';
import { cniRoutes } from './routes.ts';

export async function runHostAgent(o: { config: MembraneConfig; node: string }): Promise<void> {
  let provider: HostProvider | undefined;
  await runAgentDaemon({
    config: o.config, node: o.node,
    // Hubble's TCP 4244 only with its TLS files (or plain text asked for): a host has no lab CA
    hubbleTcp: hubbleTcpSecurity(o.config) !== undefined,
    provider: ({ paths, logger }) => (provider = createHostProvider({ config: o.config, paths, node: o.node, logger })),
    extraRoutes: (agent) => cniRoutes({ agent, provider: provider!, node: o.node, ...(o.config.clusterDnsIp ? { dns: o.config.clusterDnsIp } : {}) }),
  });
}
