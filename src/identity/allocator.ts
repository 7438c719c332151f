/**
 * Identity allocation. `IdentityAllocator` is the interface the agent uses; allocation is async
 * so that a kvstore-backed allocator (cluster-wide identities shared by many agents through
 * etcd, Cilium's `cilium/state/identities/v1/...` layout) can implement it later. Lookups are
 * synchronous from a local cache because the policy engine and the flow path need them inline.
 *
 * `LocalIdentityAllocator` keeps everything in memory (the lab's single node):
 *   - same labels ⇒ same identity; every allocate takes a reference, release drops one, the
 *     identity is freed at zero references;
 *   - labels equal to a reserved identity's labels return that identity (never freed);
 *   - CIDR/FQDN labels get node-local identities (1<<24) + n; everything else 256..65535.
 */
import { MembraneError } from '../common/errors.ts';
import type { LabelSet } from '../labels/labels.ts';
import {
  type Identity, type IdentityScope, RESERVED_IDENTITIES, MIN_CLUSTER_IDENTITY, MAX_CLUSTER_IDENTITY,
  MIN_LOCAL_IDENTITY, MAX_LOCAL_IDENTITY, identityScope, requiresLocalScope, reservedIdentityForLabels,
} from './identity.ts';

export interface AllocationResult {
  identity: Identity;
  /** true when this call created the identity (the first reference) */
  isNew: boolean;
}

export type IdentityEvent = { type: 'add'; identity: Identity } | { type: 'delete'; identity: Identity };

export interface IdentityAllocator {
  allocate(labels: LabelSet): Promise<AllocationResult>;
  /** Drops one reference; true when the identity was freed. */
  release(id: number): Promise<boolean>;
  lookupById(id: number): Identity | undefined;
  lookupByLabels(labels: LabelSet): Identity | undefined;
  /** Every identity known, reserved ones included. */
  all(): Identity[];
  references(id: number): number;
  /** Called for every identity added or freed after the call; returns an unsubscribe. */
  watch(cb: (ev: IdentityEvent) => void): () => void;
}

export interface LocalAllocatorOptions {
  minClusterIdentity?: number;
  maxClusterIdentity?: number;
  /** Identities to re-create with their old numbers (after an agent restart), with no reference. */
  restore?: { id: number; labels: LabelSet }[];
}

interface Slot {
  identity: Identity;
  refs: number;
}

export class LocalIdentityAllocator implements IdentityAllocator {
  readonly #byId = new Map<number, Slot>();
  readonly #byLabels = new Map<string, Slot>();
  readonly #listeners = new Set<(ev: IdentityEvent) => void>();
  readonly #min: number;
  readonly #max: number;
  #nextCluster: number;
  #nextLocal = MIN_LOCAL_IDENTITY;

  constructor(opts: LocalAllocatorOptions = {}) {
    this.#min = opts.minClusterIdentity ?? MIN_CLUSTER_IDENTITY;
    this.#max = opts.maxClusterIdentity ?? MAX_CLUSTER_IDENTITY;
    this.#nextCluster = this.#min;
    for (const r of opts.restore ?? []) this.restore(r.id, r.labels);
  }

  /** Re-creates an identity under a known number with zero references (see allocate). */
  restore(id: number, labels: LabelSet): Identity {
    const have = this.#byLabels.get(labels.canonical);
    if (have) {
      if (have.identity.id !== id) throw new MembraneError('IDENTITY_CONFLICT', `identity ${id}: labels already have identity ${have.identity.id}`);
      return have.identity;
    }
    if (this.#byId.has(id) || identityScope(id) === 'reserved') throw new MembraneError('IDENTITY_CONFLICT', `identity ${id} is already in use`);
    const identity = Object.freeze({ id, labels });
    const slot = { identity, refs: 0 };
    this.#byId.set(id, slot);
    this.#byLabels.set(labels.canonical, slot);
    this.#emit({ type: 'add', identity });
    return identity;
  }

  allocateSync(labels: LabelSet): AllocationResult {
    const reserved = reservedIdentityForLabels(labels);
    if (reserved) return { identity: reserved, isNew: false };
    const have = this.#byLabels.get(labels.canonical);
    if (have) {
      have.refs++;
      return { identity: have.identity, isNew: false };
    }
    const local = requiresLocalScope(labels);
    const id = local ? this.#freeLocal() : this.#freeCluster();
    const identity = Object.freeze({ id, labels });
    const slot = { identity, refs: 1 };
    this.#byId.set(id, slot);
    this.#byLabels.set(labels.canonical, slot);
    this.#emit({ type: 'add', identity });
    return { identity, isNew: true };
  }

  releaseSync(id: number): boolean {
    const slot = this.#byId.get(id);
    if (!slot) return false;
    slot.refs = Math.max(0, slot.refs - 1);
    if (slot.refs > 0) return false;
    this.#byId.delete(id);
    this.#byLabels.delete(slot.identity.labels.canonical);
    this.#emit({ type: 'delete', identity: slot.identity });
    return true;
  }

  /** Frees restored identities that nobody allocated again (call once after a restart's resync). */
  gcUnreferenced(): Identity[] {
    const out: Identity[] = [];
    for (const slot of [...this.#byId.values()]) {
      if (slot.refs === 0) {
        this.#byId.delete(slot.identity.id);
        this.#byLabels.delete(slot.identity.labels.canonical);
        this.#emit({ type: 'delete', identity: slot.identity });
        out.push(slot.identity);
      }
    }
    return out;
  }

  async allocate(labels: LabelSet): Promise<AllocationResult> {
    return this.allocateSync(labels);
  }

  async release(id: number): Promise<boolean> {
    return this.releaseSync(id);
  }

  lookupById(id: number): Identity | undefined {
    return this.#byId.get(id)?.identity ?? (id >= 0 && id <= 10 ? RESERVED_IDENTITIES[id] : undefined);
  }

  lookupByLabels(labels: LabelSet): Identity | undefined {
    return reservedIdentityForLabels(labels) ?? this.#byLabels.get(labels.canonical)?.identity;
  }

  all(): Identity[] {
    return [...RESERVED_IDENTITIES, ...[...this.#byId.values()].map((s) => s.identity).sort((a, b) => a.id - b.id)];
  }

  references(id: number): number {
    return this.#byId.get(id)?.refs ?? 0;
  }

  scope(id: number): IdentityScope {
    return identityScope(id);
  }

  watch(cb: (ev: IdentityEvent) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  #emit(ev: IdentityEvent): void {
    for (const l of this.#listeners) l(ev);
  }

  #freeCluster(): number {
    const span = this.#max - this.#min + 1;
    for (let i = 0; i < span; i++) {
      const id = this.#nextCluster;
      this.#nextCluster = id >= this.#max ? this.#min : id + 1;
      if (!this.#byId.has(id)) return id;
    }
    throw new MembraneError('IDENTITY_EXHAUSTED', `no free cluster identity in ${this.#min}..${this.#max}`, { hint: 'too many distinct label sets; restrict identity-relevant labels' });
  }

  #freeLocal(): number {
    const span = MAX_LOCAL_IDENTITY - MIN_LOCAL_IDENTITY + 1;
    for (let i = 0; i < span; i++) {
      const id = this.#nextLocal;
      this.#nextLocal = id >= MAX_LOCAL_IDENTITY ? MIN_LOCAL_IDENTITY : id + 1;
      if (!this.#byId.has(id)) return id;
    }
    throw new MembraneError('IDENTITY_EXHAUSTED', 'no free local identity');
  }
}


