/**
 * The lab (DESIGN.md §4): its PodNetworkProvider (provider.ts, which the lab's agent process
 * node-agent.ts hands to the agent daemon), the lab's lifecycle (`membrane up`/`down`), its
 * names and its world hosts.
 */
export { createLabProvider, type LabProviderOptions } from './provider.ts';
export { createPodNetworks } from './network.ts';
export { createWorkloads } from './workloads.ts';
export { labUp, labDown, labStatus, labNodes, labNodeAdd, labNodeDelete, REPO_ROOT, type LabUpOptions, type LabUpResult, type LabDownResult, type LabStatus } from './lab.ts';
export { setupLabNetwork, podFiles } from './network.ts';
export { hubbleTlsPaths, ensureHubbleCerts, RELAY_SERVER_NAME, type HubbleTlsPaths } from './hubble-certs.ts';
export { registerImageHandler, planContainer, echoPorts, type ImageHandler, type WorkloadPlan, type PlanContext } from './workloads.ts';
export { worldHosts, worldHost, type WorldHost } from './world.ts';
export {
  podNetnsName, nodeNetnsName, worldNetnsName, underlayNetnsName, hostIfname, macFromIp, nodeName, nodeIndexOf,
  routerIp, nodeIp, podCidr, isLabNetns, CLUSTER_DNS_IP, SERVICE_CIDR, WORLD_CIDRS,
} from './names.ts';
