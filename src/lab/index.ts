/**
 * The lab (DESIGN.md §4): the factories the agent composes (src/agent/compose.ts), the lab's
 * lifecycle (`membrane up`/`down`), its names and its world hosts.
 */
import type { LabPaths } from '../agent/paths.ts';
import type { Logger } from '../agent/logger.ts';
import type { PodNetworks, Workloads } from '../agent/ports.ts';
import { createPodNetworks as podNetworks } from './network.ts';
import { createWorkloads as workloads } from './workloads.ts';
import { REPO_ROOT } from './lab.ts';

export function createPodNetworks(opts: { lab: string; node: string; nodeIndex: number; paths: LabPaths; logger?: Logger }): PodNetworks {
  return podNetworks(opts);
}

export function createWorkloads(opts: { lab: string; node: string; paths: LabPaths; logger?: Logger; repoRoot?: string }): Workloads {
  return workloads({ ...opts, repoRoot: opts.repoRoot ?? REPO_ROOT });
}

export { labUp, labDown, labStatus, labNodes, REPO_ROOT, type LabUpOptions, type LabUpResult, type LabDownResult, type LabStatus } from './lab.ts';
export { setupLabNetwork, podFiles } from './network.ts';
export { hubbleTlsPaths, ensureHubbleCerts, type HubbleTlsPaths } from './hubble-certs.ts';
export { registerImageHandler, planContainer, echoPorts, type ImageHandler, type WorkloadPlan, type PlanContext } from './workloads.ts';
export { worldHosts, worldHost, type WorldHost } from './world.ts';
export {
  podNetnsName, nodeNetnsName, worldNetnsName, underlayNetnsName, hostIfname, macFromIp, nodeName, nodeIndexOf,
  routerIp, nodeIp, podCidr, isLabNetns, CLUSTER_DNS_IP, SERVICE_CIDR, WORLD_CIDRS,
} from './names.ts';
