/**
 * The agent's view of the subsystems it composes. Each is implemented by a real module
 * (src/lab for pod networks and workloads, src/policy + src/identity for policy, src/datapath for
 * the kernel, src/hubble for flows); the agent only sequences them.
 */
import type { Pod, PolicyResource, Namespace, Service } from '../api/types.ts';
import type { MapState, MapStateDelta } from '../policy/types.ts';

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

export interface EndpointIdentityInput {
  pod: Pod;
  namespace: Namespace | undefined;
}

/** The policy engine as the agent drives it: identities in, per-endpoint MapState deltas out. */
export interface PolicyEngine {
  /** Allocates (refcounted) the security identity for a pod's labels. */
  allocateIdentity(input: EndpointIdentityInput): Promise<{ id: number; labels: string[]; isNew: boolean }>;
  releaseIdentity(id: number): boolean;
  /** Replaces the set of policies; throws MembraneError (with issues) if the import fails, changing nothing. */
  setPolicies(policies: PolicyResource[]): void;
  /** Validates policies without applying them. */
  checkPolicies(policies: PolicyResource[]): void;
  setServices(services: Service[]): void;
  addEndpoint(ep: { id: number; identity: number; pod: Pod; namespace: Namespace | undefined }): MapState;
  removeEndpoint(id: number): void;
  /** Brings every endpoint up to date; returns the deltas to write. */
  regenerate(): Map<number, MapStateDelta>;
  revision(): number;
  identities(): { id: number; labels: string[]; references: number; scope: 'reserved' | 'cluster' | 'local' }[];
  identityLabels(id: number): string[] | undefined;
  /** Keys (`kind/namespace/name`) of the policies with a rule selecting an identity of these labels. */
  policiesSelecting(identity: number): Set<string>;
  mapState(endpointId: number): MapState | undefined;
}
