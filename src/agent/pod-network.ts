/**
 * Where pods' networks and processes come from, as the agent sees it. The lab (src/lab) is one
 * provider: namespaces it makes, containers as host processes; the CNI plugin is the next.
 */
import type { Pod } from '../api/types.ts';

export interface PodNetworkInfo {
  netns: string;
  ip: string;
  mac: string;
  hostIfname: string;
  hostIfindex: number;
}

export interface PodNetworks {
  /** Creates (or finds, after a restart) the pod's namespace, veth and address. */
  ensure(pod: Pod): Promise<PodNetworkInfo>;
  remove(pod: Pod): Promise<void>;
}

export interface Workloads {
  /** Starts the pod's containers that are not running (adopting survivors of an agent restart). */
  ensure(pod: Pod, net: PodNetworkInfo): Promise<{ ready: number; total: number }>;
  stop(pod: Pod): Promise<void>;
}
