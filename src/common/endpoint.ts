/**
 * A pod's endpoint as every part above the datapath sees it: the agent's endpoint records and API
 * rows carry these fields, Hubble enriches flows with them (flow.Endpoint), the proxies look their
 * clients up by address. One shape, so a field means the same everywhere (`pod` is the pod's name).
 */
export interface ResolvedEndpoint {
  /** Cilium endpoint ID; 0 for endpoints on other nodes */
  id: number;
  /** security identity */
  identity: number;
  namespace: string;
  /** the pod's name */
  pod: string;
  /** `source:key=value`, e.g. `k8s:app=api` */
  labels: string[];
  /** the controllers that own the pod (Hubble's `workloads`) */
  workloads?: { name: string; kind: string }[];
  clusterName?: string;
}
