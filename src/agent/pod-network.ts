/**
 * Where pods' networks and processes come from, as the agent sees it. The lab (src/lab) is one
 * provider: namespaces it makes, containers as host processes; the CNI plugin is the next.
 */
import type { Pod } from '../api/types.ts';

export interface PodNetworkInfo {
  netns: string;
  ip: string;
  /** enable-ipv6: the pod's IPv6 address beside `ip` */
  ip6?: string;
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

/** The cluster DNS as the DNS proxy needs it: the kube-dns Service address and the server behind it. */
export interface ClusterDNS {
  /** ClusterIP of the kube-dns Service (what pods' resolv.conf names) */
  serviceIp: string;
  /** the DNS server's own address once it runs (queries to serviceIp are answered from there) */
  serverIp(): string | undefined;
}

/**
 * A provider of pod networks: everything the agent needs to know about where its pods live. The
 * agent (src/agent/compose.ts) uses only this; the lab (src/lab/provider.ts) implements it with
 * network namespaces it makes and containers it runs as host processes, and the CNI plugin
 * (src/cni, next) with the containers a runtime makes.
 */
export interface PodNetworkProvider {
  /** `lab`, `cni`: for status and logs */
  readonly kind: string;
  networks: PodNetworks;
  workloads: Workloads;
  /** Addresses of the node itself (the reserved:host identity); the first is the Pod status hostIP. */
  readonly nodeAddresses: readonly string[];
  /** The node's pod CIDR, when it has one (published in its kvstore node registration) */
  readonly podCidr?: string;
  /** enable-ipv6: the node's IPv6 pod CIDR (its node registration's IPv6AllocCIDR) */
  readonly podCidr6?: string;
  /** Devices that carry traffic from outside the pods: the datapath enforces ingress policy on them. */
  readonly networkDevices: readonly string[];
  /** The one of networkDevices that links the nodes: the only device other nodes' addresses may arrive on. */
  readonly underlayDevice?: string;
  /** Routing mode tunnel: the node's VXLAN device (collect-metadata mode), where the datapath sets and reads tunnel keys. */
  readonly overlayDevice?: string;
  /** Prefixes inside the cluster (pods, services, nodes, loopback): DNS answers never become FQDN identities there. */
  readonly clusterPrefixes: readonly string[];
  readonly clusterDNS: ClusterDNS;
  /** Starts what runs beside the agent (lab: the world's ExternalHost addresses); `resources` is the agent's store. */
  start?(ctx: { resources: import('./resources.ts').ResourceStore }): Promise<void>;
  stop?(): Promise<void>;
}
