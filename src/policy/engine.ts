/**
 * The policy engine as one object: identities (allocator) → selector cache, policies →
 * repository, endpoints → EndpointPolicy, CIDR prefixes named by policy → local identities in
 * the ipcache. src/policy/agent-engine.ts adapts it to what the agent drives (AgentPolicy).
 *
 *   allocator ──watch──► SelectorCache ──selectionsChanged──► EndpointPolicy (lane X only)
 *   Repository ──revision──► EndpointPolicy.regenerate() (full, diffed)
 *   Repository.referencedCIDRs() ──► local CIDR identities ──► allocator, IPCache
 */
import type { Namespace, Pod, PolicyResource, Service } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import { LocalIdentityAllocator } from '../identity/allocator.ts';
import type { Identity } from '../identity/identity.ts';
import { cidrIdentityLabels, podIdentityLabels } from '../identity/labels.ts';
import { IPCache } from '../ipcache/ipcache.ts';
import { Repository, type RepositoryOptions } from './repository.ts';
import type { EndpointInfo, ResolveOptions } from './resolve-options.ts';
import { EndpointPolicy } from './endpoint-policy.ts';
import { Distillery } from './distillery.ts';
import { NamedPortIndex } from './named-ports.ts';
import type { MapStateDelta } from './types.ts';

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
  /** shares MapState computations between endpoints selected by the same rules */
  readonly distillery: Distillery;
  readonly #opts: PolicyEngineOptions;
  readonly #endpoints = new Map<number, EndpointPolicy>();
  /** CIDR prefix → local identity held for it */
  readonly #cidrIdentities = new Map<string, number>();
  readonly #unwatch: () => void;

  constructor(opts: PolicyEngineOptions = {}) {
    this.#opts = opts;
    this.allocator = opts.allocator ?? new LocalIdentityAllocator();
    this.repository = new Repository(opts);
    this.distillery = new Distillery(this.repository);
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
    const ep = new EndpointPolicy({ repository: this.repository, options: this.resolveOptions, distillery: this.distillery, ...(onDelta ? { onDelta } : {}) }, info);
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
