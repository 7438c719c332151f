/** The JSON shapes the agent API returns (the CLI prints them; `-o json` wraps them in a List). */
import type { ApplyResult } from './resources.ts';
import type { ResolvedEndpoint } from '../common/endpoint.ts';

/** A row of `GET /v1/endpoints`: the shared endpoint view and what the agent knows of it. */
export interface EndpointView extends ResolvedEndpoint {
  node: string;
  ipv4: string;
  /** enable-ipv6: the endpoint's IPv6 address */
  ipv6?: string;
  hostIfname: string;
  state: 'ready' | 'regenerating' | 'waiting-for-identity' | 'not-ready' | 'disconnected';
  policyEnforcement: { ingress: boolean; egress: boolean };
  /** Cilium's policy audit mode in effect: policy drops pass and are reported as AUDIT */
  policyAuditMode: boolean;
  /** the endpoint's own options (`membrane endpoint config`); default: the agent's --policy-audit-mode */
  options: { PolicyAuditMode: 'Enabled' | 'Disabled' | 'default' };
  policyRevision: number;
  policyEntries: number;
}

export interface IdentityView {
  id: number;
  labels: string[];
  /** endpoints using it (cluster identities) */
  references: number;
  scope: 'reserved' | 'cluster' | 'local';
}

export interface PolicyView {
  kind: string;
  namespace?: string;
  name: string;
  file: string;
  line: number;
  revision: number;
  rules: number;
  selectedEndpoints: number;
  createdAt?: string;
}

/** Hubble's TCP listener: `:4244`, mutual TLS with the server name clients verify, or plain text. */
export interface HubbleListenerView { address: string; tls: boolean; serverName?: string }

export interface StatusView {
  node: string;
  lab: string;
  agent: {
    state: 'Ok' | 'Warning' | 'Failure'; pid: number; uptimeSeconds: number; version: string;
    /** from the agent's supervisor (when one runs it): restarts so far and why the last run ended */
    restarts?: number;
    lastExit?: { at: string; reason: string; ranSeconds: number };
  };
  datapath: { state: 'Ok' | 'Warning' | 'Failure' | 'Disabled'; mode: string; programs: number; message?: string };
  /** Cilium's `KVStore:` line (etcd: connected endpoints, leases, version, leader) */
  kvstore?: { state: 'Ok' | 'Failure'; backend: 'memory' | 'etcd'; message: string };
  /** nodes registered in the kvstore (their leases alive), this one included */
  cluster?: { nodes: { name: string; ip: string }[] };
  /** Cilium's `Encryption:` line: the mode, and WireGuard's device, key and peers */
  encryption?: {
    mode: 'Disabled' | 'Wireguard';
    wireguard?: { nodeEncryption: 'Enabled' | 'Disabled'; strictMode: 'Enabled' | 'Disabled'; strictModeIngress: 'Enabled' | 'Disabled'; interfaces: { name: string; publicKey: string; listenPort: number; peerCount: number; implementation: string; up: boolean }[] };
  };
  endpoints: { total: number; ready: number; notReady: number };
  policy: {
    revision: number; policies: number; identities: number; enforcement: string;
    /** --policy-audit-mode, and how many endpoints are in audit mode now (their own option or the setting) */
    auditMode: { global: boolean; endpoints: number };
  };
  hubble: { state: 'Ok' | 'Warning' | 'Failure'; flows: number; maxFlows: number; seenFlows: number; lost: number; socket: string; metrics?: string; listen?: HubbleListenerView };
  proxies: { name: string; port: number; state: string }[];
  errors: string[];
}

export interface ApplyResponse {
  results: ApplyResult[];
  dryRun: boolean;
}

/** `membrane get nodes`: a node of the cluster (registered in the kvstore, its lease alive). */
export interface NodeView {
  name: string;
  status: 'Ready';
  internalIP: string;
  routerIP?: string;
  podCIDR?: string;
  /** enable-ipv6: its IPv6 pod CIDR (IPv6AllocCIDR) and IPv6 router address */
  podCIDRv6?: string;
  routerIPv6?: string;
  /** its WireGuard public key (transparent encryption), as published in the kvstore */
  wireguardPubKey?: string;
  /** the node whose agent answered */
  self: boolean;
}
