/**
 * The policy engine as the agent drives it (AgentPolicy): pods in → identities, policies and
 * services in → per-endpoint MapState deltas out. createAgentPolicyEngine implements it on top of
 * PolicyEngine (engine.ts); the agent (src/agent/agent.ts) only sequences the calls.
 */
import type { Namespace, Pod, PolicyResource, Service } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import type { LabelSet } from '../labels/labels.ts';
import { identityScope } from '../identity/identity.ts';
import { podIdentityLabels } from '../identity/labels.ts';
import { PolicyEngine, type PolicyEngineOptions } from './engine.ts';
import { podNamedPorts } from './named-ports.ts';
import { PolicyImportError } from './repository.ts';
import type { MapState, MapStateDelta } from './types.ts';
import { MapStateChangeLog, type MapStateChangeReader } from './mapstate-changes.ts';

export interface EndpointIdentityInput {
  pod: Pod;
  namespace: Namespace | undefined;
}

/** The policy engine as the agent drives it: identities in, per-endpoint MapState deltas out. */
export interface AgentPolicy {
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
  /**
   * Bumped whenever an endpoint's MapState may have changed (added, removed, or a regeneration
   * that produced a delta). The repository revision alone misses regenerations after identity,
   * service or endpoint changes: a consumer of the MapStates (the L7 proxy feed) follows this.
   */
  mapStateVersion(): number;
  /** Calls `cb` after each bump of mapStateVersion() (the L7 proxy feed sends on change, not per poll); returns the unsubscribe. */
  onMapStateVersion?(cb: () => void): () => void;
  identities(): { id: number; labels: string[]; references: number; scope: 'reserved' | 'cluster' | 'local' }[];
  identityLabels(id: number): string[] | undefined;
  /** Keys (`kind/namespace/name`) of the policies with a rule selecting an identity of these labels. */
  policiesSelecting(identity: number): Set<string>;
  mapState(endpointId: number): MapState | undefined;
  /**
   * A reader of the MapState change log (mapstate-changes.ts): the keys every add, removal and
   * regeneration touched since its last take, per endpoint, with the endpoint's change count.
   */
  mapStateChanges(): MapStateChangeReader;
  /** the endpoint's MapState change count (bumped with each change a reader is told of) */
  mapStateRevision(endpointId: number): number;
}

export type AgentPolicyEngine = AgentPolicy & {
  readonly engine: PolicyEngine;
  /** CIDR identities for the datapath's ipcache (the agent's `extraIPCache` hook). */
  ipcacheEntries(): { prefix: string; identity: number; endpointId: number }[];
  /** Issues of the last resolution per endpoint (late L7 conflicts, policy-map overflow). */
  endpointIssues(id: number): readonly Issue[];
};

/** AgentPolicy on top of PolicyEngine. */
export function createAgentPolicyEngine(opts: PolicyEngineOptions = {}): AgentPolicyEngine {
  const engine = new PolicyEngine(opts);
  const podOf = new Map<number, string>();
  let namedPortsDirty = false;
  let mapStateVersion = 0;
  const changeLog = new MapStateChangeLog();
  const versionListeners = new Set<() => void>();
  const bumpMapStateVersion = () => {
    mapStateVersion++;
    for (const l of versionListeners) l();
  };
  const labelsOf = (id: number): LabelSet | undefined => engine.allocator.lookupById(id)?.labels;
  return {
    engine,
    async allocateIdentity({ pod, namespace }) {
      // async: a kvstore-backed allocator makes the identity cluster-wide first
      const { identity, isNew } = await engine.allocator.allocate(podIdentityLabels({ pod, namespace, ...(opts.clusterName ? { clusterName: opts.clusterName } : {}) }));
      return { id: identity.id, labels: identity.labels.toStrings(), isNew };
    },
    releaseIdentity(id) {
      return engine.allocator.releaseSync(id);
    },
    setPolicies(policies) {
      engine.applyPolicies(policies, true);
    },
    checkPolicies(policies) {
      const issues = engine.check(policies, true);
      if (issues.length) throw new PolicyImportError(issues, `${policies.length} policies`);
    },
    setServices(services) {
      engine.setServices(services);
    },
    addEndpoint({ id, identity, pod, namespace }) {
      const labels = labelsOf(identity) ?? engine.allocatePodIdentity(pod, namespace).identity.labels;
      const owner = `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name}`;
      const named = podNamedPorts(pod);
      if (engine.namedPorts.set(owner, identity, named)) namedPortsDirty = true;
      podOf.set(id, owner);
      const ep = engine.addEndpoint({ id, identity, labels, namedPorts: named });
      changeLog.full(id);
      bumpMapStateVersion();
      return ep.mapState;
    },
    removeEndpoint(id) {
      const owner = podOf.get(id);
      if (owner && engine.namedPorts.delete(owner)) namedPortsDirty = true;
      podOf.delete(id);
      if (engine.removeEndpoint(id)) changeLog.gone(id);
      bumpMapStateVersion();
    },
    regenerate() {
      const force = namedPortsDirty ? 'named-ports' as const : false;
      namedPortsDirty = false;
      const deltas = engine.regenerate(force);
      // logged before the version's listeners hear of it (the feed's delta reads the log)
      for (const [id, d] of deltas) changeLog.delta(id, d);
      for (const d of deltas.values()) {
        if (d.upserts.length || d.deletes.length || d.defaultDenyChanged) { bumpMapStateVersion(); break; }
      }
      return deltas;
    },
    revision: () => engine.revision,
    mapStateVersion: () => mapStateVersion,
    onMapStateVersion(cb) {
      versionListeners.add(cb);
      return () => versionListeners.delete(cb);
    },
    identities() {
      return engine.allocator.all().map((i) => {
        const scope = identityScope(i.id);
        return { id: i.id, labels: i.labels.toStrings(), references: engine.allocator.references(i.id), scope: scope === 'remote-node' ? 'cluster' : scope };
      });
    },
    identityLabels: (id) => labelsOf(id)?.toStrings(),
    policiesSelecting(identity) {
      const labels = labelsOf(identity);
      return new Set(labels ? engine.repository.rulesFor(labels).map((r) => r.policyKey) : []);
    },
    mapState: (id): MapState | undefined => engine.endpoint(id)?.mapState,
    mapStateChanges: () => changeLog.reader(),
    mapStateRevision: (id) => changeLog.revision(id),
    ipcacheEntries: () => engine.cidrEntries().map((e) => ({ ...e, endpointId: 0 })),
    endpointIssues: (id) => engine.endpoint(id)?.issues ?? [],
  };
}
