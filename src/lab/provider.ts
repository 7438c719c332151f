/**
 * The lab as a PodNetworkProvider (src/agent/pod-network.ts): pod namespaces and veths
 * (network.ts), containers as host processes (workloads.ts), the node's lab addresses and
 * devices (names.ts), the lab DNS behind the kube-dns ClusterIP (dns/), and, on node1, the
 * ExternalHost addresses in the world namespace (external-hosts.ts).
 */
import { readFileSync } from 'node:fs';
import type { MembraneConfig } from '../common/config.ts';
import type { LabPaths } from '../common/paths.ts';
import type { Logger } from '../common/logger.ts';
import type { ExternalHost } from '../api/types.ts';
import type { PodNetworkProvider } from '../agent/pod-network.ts';
import { createPodNetworks } from './network.ts';
import { createWorkloads } from './workloads.ts';
import { syncExternalHosts } from './external-hosts.ts';
import { dnsServerIpFile } from './dns-workload.ts';
import { CLUSTER_DNS_IP, POD_CIDR6_CLUSTER, POD_CIDR_PREFIX, SERVICE_CIDR, SERVICE_CIDR6, UNDERLAY_CIDR, UNDERLAY_LINK, VXLAN_LINK, WORLD_LINK, nodeIp, nodeIp6, podCidr, podCidr6, routerIp } from './names.ts';
import { REPO_ROOT } from './lab.ts';

export interface LabProviderOptions {
  config: MembraneConfig;
  paths: LabPaths;
  node: string;
  nodeIndex: number;
  logger: Logger;
  repoRoot?: string;
}

/** How long the DNS server's address (written by the lab DNS pod) is reused before it is read again. */
const DNS_IP_TTL_MS = 1000;

export function createLabProvider(o: LabProviderOptions): PodNetworkProvider {
  const { config, paths, node, nodeIndex, logger } = o;
  const lab = paths.lab;
  let dnsIpMemo: { at: number; ip: string | undefined } | undefined;
  const serverIp = (): string | undefined => {
    const now = Date.now();
    if (dnsIpMemo && now - dnsIpMemo.at < DNS_IP_TTL_MS) return dnsIpMemo.ip;
    let ip: string | undefined;
    try { ip = readFileSync(dnsServerIpFile(paths.stateDir), 'utf8').trim() || undefined; } catch { ip = undefined; }
    dnsIpMemo = { at: now, ip };
    return ip;
  };
  let unwatchHosts: (() => void) | undefined;
  return {
    kind: 'lab',
    networks: createPodNetworks({ lab, node, nodeIndex, paths, useDnsPodIp: config.labDnsPodIp, ipv6: config.enableIPv6, logger: logger.child({ subsys: 'lab' }) }),
    workloads: createWorkloads({ lab, node, paths, repoRoot: o.repoRoot ?? REPO_ROOT, logger: logger.child({ subsys: 'workloads' }) }),
    nodeAddresses: [nodeIp(nodeIndex), routerIp(nodeIndex), ...(config.enableIPv6 ? [nodeIp6(nodeIndex)] : [])],
    podCidr: podCidr(nodeIndex),
    ...(config.enableIPv6 ? { podCidr6: podCidr6(nodeIndex) } : {}),
    networkDevices: [WORLD_LINK, UNDERLAY_LINK],
    underlayDevice: UNDERLAY_LINK,
    ...(config.routingMode === 'tunnel' ? { overlayDevice: VXLAN_LINK } : {}),
    clusterPrefixes: [`${POD_CIDR_PREFIX}.0.0/16`, SERVICE_CIDR, UNDERLAY_CIDR, '127.0.0.0/8', ...(config.enableIPv6 ? [POD_CIDR6_CLUSTER, SERVICE_CIDR6, '::1/128'] : [])],
    clusterDNS: { serviceIp: CLUSTER_DNS_IP, serverIp },
    async start({ resources }) {
      if (nodeIndex !== 1) return;
      // ExternalHost addresses live in the world namespace behind node1.
      const done = new Set<string>();
      let chain = Promise.resolve();
      const syncHosts = () => {
        chain = chain.then(async () => syncExternalHosts(lab, (await resources.list('ExternalHost')) as ExternalHost[], done))
          .catch((e: unknown) => logger.warn({ subsys: 'lab', err: String(e) }, 'external hosts'));
      };
      unwatchHosts = resources.watch(syncHosts);
      syncHosts();
    },
    async stop() {
      unwatchHosts?.();
    },
  };
}
