/**
 * The policy engine as one object: identities (allocator) → selector cache, policies →
 * repository, endpoints → EndpointPolicy, CIDR prefixes named by policy → local identities in
 * the ipcache. `createAgentPolicyEngine` adapts it to the agent's PolicyEngine port
 * (src/agent/ports.ts).
 *
 *   allocator ──watch──► SelectorCache ──selectionsChanged──► EndpointPolicy (lane X only)
 *   Repository ──revision──► EndpointPolicy.regenerate() (full, diffed)
 *   Repository.referencedCIDRs() ──► local CIDR identities ──► allocator, IPCache
 */
import type { Namespace, Pod, PolicyResource, Service } from '../api/types.ts';
import type { Issue } from '../errors.ts';
import type { LabelSet } from '../labels/labels.ts';
import { LocalIdentityAllocator } from '../identity/allocator.ts';
import { identityScope, type Identity } from '../identity/identity.ts';
import { cidrIdentityLabels, podIdentityLabels } from '../identity/labels.ts';
import { IPCache } from '../ipcache/ipcache.ts';
import { PROTO_BY_NAME } from './ports.ts';
import { PolicyImportError, Repository, type RepositoryOptions } from './repository.ts';
import { EndpointPolicy, type EndpointInfo, type NamedPort, type NamedPortProvider, type ResolveOptions } from './resolve.ts';
import type { MapState, MapStateDelta } from './types.ts';

/** Named container ports by identity: the egress named-port provider. */
export class NamedPortIndex implements NamedPortProvider {
  readonly #byOwner = new Map<string, { identity: number; ports: readonly NamedPort[] }>();
  #byIdentity = new Map<number, Map<string, { port: number; proto: number }[]>>();
  #any = new Map<string, { port: number; proto: number }[]>();
  #dirty = false;
  #version = 0;

  get version(): number {
    return this.#version;
  }

  /** Sets the named ports of one owner (a pod, `ns/name`); returns whether anything changed. */
  set(owner: string, identity: number, ports: readonly NamedPort[]): boolean {
    const prev = this.#byOwner.get(owner);
    if (prev && prev.identity === identity && JSON.stringify(prev.ports) === JSON.stringify(ports)) return false;
    if (ports.length === 0 && !prev) return false;
    if (ports.length === 0) this.#byOwner.delete(owner);
    else this.#byOwner.set(owner, { identity, ports });
    this.#dirty = true;
    this.#version++;
    return true;
  }

  delete(owner: string): boolean {
    if (!this.#byOwner.delete(owner)) return false;
    this.#dirty = true;
    this.#version++;
    return true;
  }

  forIdentity(identity: number, name: string): readonly { port: number; proto: number }[] {
    this.#rebuild();
    return this.#byIdentity.get(identity)?.get(name) ?? [];
  }

  any(name: string): readonly { port: number; proto: number }[] {
    this.#rebuild();
    return this.#any.get(name) ?? [];
  }

  #rebuild(): void {
    if (!this.#dirty) return;
    this.#dirty = false;
    this.#byIdentity = new Map();
    this.#any = new Map();
    const add = (m: Map<string, { port: number; proto: number }[]>, n: NamedPort) => {
      const arr = m.get(n.name) ?? [];
      if (!arr.some((x) => x.port === n.port && x.proto === n.proto)) arr.push({ port: n.port, proto: n.proto });
      m.set(n.name, arr);
    };
    for (const { identity, ports } of this.#byOwner.values()) {
      let m = this.#byIdentity.get(identity);
      if (!m) this.#byIdentity.set(identity, (m = new Map()));
      for (const p of ports) { add(m, p); add(this.#any, p); }
    }
  }
}

/** The named container ports of a pod (names lower-cased, protocol default TCP). */
export function podNamedPorts(pod: Pick<Pod, 'spec'>): NamedPort[] {
  const out: NamedPort[] = [];
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (!p.name) continue;
      out.push({ name: p.name.toLowerCase(), port: p.containerPort, proto: PROTO_BY_NAME[(p.protocol ?? 'TCP').toUpperCase()] ?? 6 });
    }
  }
  return out;
}

export interface PolicyEngineOptions extends RepositoryOptions, Omit<ResolveOptions, 'namedPorts'> {
  /** IPv4 and IPv6 both enabled: world splits into 9/10 (spec §5.5). */
  dualStack?: boolean;
  allocator?: LocalIdentityAllocator;
  ipcache?: IPCache;
}

export class PolicyEngine {
  readonly allocator: LocalIdentityAllocator;
  readonly repository: Repository;
  readonly ipcache: IPCache;
  readonly namedPorts = new NamedPortIndex();
  readonly #opts: PolicyEngineOptions;
  readonly #endpoints = new Map<number, EndpointPolicy>();
  /** CIDR prefix → local identity held for it */
  readonly #cidrIdentities = new Map<string, number>();
  readonly #unwatch: () => void;

  constructor(opts: PolicyEngineOptions = {}) {
    this.#opts = opts;
    this.allocator = opts.allocator ?? new LocalIdentityAllocator();
    this.repository = new Repository(opts);
    this.ipcache = opts.ipcache ?? new IPCache();
    const cache = this.repository.selectorCache;
    cache.updateIdentities(this.allocator.all().map((i) => ({ id: i.id, labels: i.labels })));
    this.#unwatch = this.allocator.watch((ev) => {
      if (ev.type === 'add') cache.updateIdentities([{ id: ev.identity.id, labels: ev.identity.labels }]);
      else cache.updateIdentities([], [ev.identity.id]);
    });
  }

  get selectorCache() {
    return this.repository.selectorCache;
  }

  get revision(): number {
    return this.repository.revision;
  }

  get resolveOptions(): ResolveOptions {
    return { ...this.#opts, namedPorts: this.namedPorts };
  }

  stop(): void {
    this.#unwatch();
    for (const ep of this.#endpoints.values()) ep.close();
    this.#endpoints.clear();
  }

  // --- identities ---------------------------------------------------------------------------

  /** Allocates (refcounted) the identity of a pod. */
  allocatePodIdentity(pod: Pod, namespace: Namespace | undefined): { identity: Identity; isNew: boolean } {
    return this.allocator.allocateSync(podIdentityLabels({ pod, namespace, ...(this.#opts.clusterName ? { clusterName: this.#opts.clusterName } : {}) }));
  }

  // --- policies -----------------------------------------------------------------------------

  /** Every problem importing these policies would have (as the whole set when `replaceAll`). */
  check(policies: PolicyResource[], replaceAll = false): Issue[] {
    return this.repository.check(policies, replaceAll);
  }

  /** Imports policies (throws PolicyImportError, changing nothing, on any problem). */
  applyPolicies(policies: PolicyResource[], replaceAll = false): number {
    const c = this.repository.apply(policies, replaceAll);
    this.syncCIDRIdentities();
    return c.revision;
  }

  deletePolicy(key: string): number {
    const c = this.repository.delete(key);
    this.syncCIDRIdentities();
    return c?.revision ?? this.repository.revision;
  }

  setServices(services: Iterable<Service>): void {
    this.repository.setServices(services);
  }

  /**
   * Gives every CIDR prefix named by policy a local identity (`cidr:` + world labels) and an
   * ipcache entry; releases those no longer named. Pod and node entries in the ipcache take
   * precedence for the same prefix.
   */
  syncCIDRIdentities(): void {
    const want = new Map(this.repository.referencedCIDRs().map((p) => [p.text, p]));
    for (const [text, id] of this.#cidrIdentities) {
      if (want.has(text)) continue;
      this.ipcache.delete(text, 'cidr');
      this.allocator.releaseSync(id);
      this.#cidrIdentities.delete(text);
    }
    for (const [text, p] of want) {
      if (this.#cidrIdentities.has(text)) continue;
      const { identity } = this.allocator.allocateSync(cidrIdentityLabels(p, this.#opts.dualStack ?? false));
      this.#cidrIdentities.set(text, identity.id);
      this.ipcache.upsert(text, identity.id, 'cidr');
    }
  }

  /** The CIDR identities' ipcache entries (prefix → identity). */
  cidrEntries(): { prefix: string; identity: number }[] {
    return [...this.#cidrIdentities].map(([prefix, identity]) => ({ prefix, identity }));
  }

  // --- endpoints ----------------------------------------------------------------------------

  addEndpoint(info: EndpointInfo, onDelta?: (d: MapStateDelta) => void): EndpointPolicy {
    this.#endpoints.get(info.id)?.close();
    const ep = new EndpointPolicy({ repository: this.repository, options: this.resolveOptions, ...(onDelta ? { onDelta } : {}) }, info);
    this.#endpoints.set(info.id, ep);
    return ep;
  }

  removeEndpoint(id: number): boolean {
    const ep = this.#endpoints.get(id);
    if (!ep) return false;
    ep.close();
    this.#endpoints.delete(id);
    return true;
  }

  endpoint(id: number): EndpointPolicy | undefined {
    return this.#endpoints.get(id);
  }

  endpoints(): IterableIterator<EndpointPolicy> {
    return this.#endpoints.values();
  }

  /**
   * Brings every endpoint up to date: full regeneration where the repository moved on (or
   * `force`; `'named-ports'`: those resolving egress named ports, after pods' ports changed),
   * plus the lane updates identity changes already made. Returns the non-empty deltas.
   */
  regenerate(force: boolean | 'named-ports' = false): Map<number, MapStateDelta> {
    const out = new Map<number, MapStateDelta>();
    for (const [id, ep] of this.#endpoints) {
      const stale = ep.revision !== this.repository.revision;
      if (stale || force === true || (force === 'named-ports' && ep.usesNamedPorts)) ep.regenerate();
      const d = ep.takeDelta();
      if (d.upserts.length || d.deletes.length || d.defaultDenyChanged) out.set(id, d);
    }
    return out;
  }
}

export type AgentPolicyEngine = import('../agent/ports.ts').PolicyEngine & {
  readonly engine: PolicyEngine;
  /** CIDR identities for the datapath's ipcache (the agent's `extraIPCache` hook). */
  ipcacheEntries(): { prefix: string; identity: number; endpointId: number }[];
  /** Issues of the last resolution per endpoint (late L7 conflicts, policy-map overflow). */
  endpointIssues(id: number): readonly Issue[];
};

/** The agent's PolicyEngine port (src/agent/ports.ts) on top of PolicyEngine. */
export function createAgentPolicyEngine(opts: PolicyEngineOptions = {}): AgentPolicyEngine {
  const engine = new PolicyEngine(opts);
  const podOf = new Map<number, string>();
  let namedPortsDirty = false;
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
      return ep.mapState;
    },
    removeEndpoint(id) {
      const owner = podOf.get(id);
      if (owner && engine.namedPorts.delete(owner)) namedPortsDirty = true;
      podOf.delete(id);
      engine.removeEndpoint(id);
    },
    regenerate() {
      const force = namedPortsDirty ? 'named-ports' as const : false;
      namedPortsDirty = false;
      return engine.regenerate(force);
    },
    revision: () => engine.revision,
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
    ipcacheEntries: () => engine.cidrEntries().map((e) => ({ ...e, endpointId: 0 })),
    endpointIssues: (id) => engine.endpoint(id)?.issues ?? [],
  };
}
