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
import { LabelSource, type LabelSet } from '../labels/labels.ts';
import { cidrLabelKey } from './labels.ts';
import { parsePrefix } from '../ipcache/prefix.ts';
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
  /** known cluster-wide (a kvstore master key): kept at zero local references */
  shared?: boolean;
}

export class LocalIdentityAllocator implements IdentityAllocator {
  readonly #byId = new Map<number, Slot>();
  readonly #byLabels = new Map<string, Slot>();
  readonly #listeners = new Set<(ev: IdentityEvent) => void>();
  readonly #min: number;
  readonly #max: number;
  #nextCluster: number;
  #nextLocal = MIN_LOCAL_IDENTITY;
  /** local numbers the pinned ipcache carries that no store restored: `cidr:` label key → number */
  readonly #held = new Map<string, number>();
  readonly #heldIds = new Set<number>();

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

  /**
   * An identity another node allocated (seen in the kvstore): known here with no local reference,
   * kept until `forget`. False when it conflicts with what is known (logged by the caller).
   */
  observe(id: number, labels: LabelSet): boolean {
    const byLabels = this.#byLabels.get(labels.canonical);
    const byId = this.#byId.get(id);
    if (byId && byId.identity.labels.canonical !== labels.canonical) return false;
    if (byLabels && byLabels.identity.id !== id) return false;
    if (byId) {
      byId.shared = true;
      return true;
    }
    if (identityScope(id) !== 'cluster') return false;
    const identity = Object.freeze({ id, labels });
    const slot: Slot = { identity, refs: 0, shared: true };
    this.#byId.set(id, slot);
    this.#byLabels.set(labels.canonical, slot);
    this.#emit({ type: 'add', identity });
    return true;
  }

  /** The cluster no longer has this identity: dropped unless this node still references it. */
  forget(id: number): void {
    const slot = this.#byId.get(id);
    if (!slot) return;
    slot.shared = false;
    if (slot.refs > 0) return;
    this.#byId.delete(id);
    this.#byLabels.delete(slot.identity.labels.canonical);
    this.#emit({ type: 'delete', identity: slot.identity });
  }

  /**
   * Local (CIDR, FQDN) identity numbers the datapath still carries for these prefixes (the pinned
   * ipcache after a restart) that nothing restored, as Cilium restores local identities from the
   * pinned ipcache: until `releaseHeld`, no other labels get one of them, and the first local labels
   * that carry a prefix's `cidr:` label take that prefix's number back. An identity allocated but
   * not yet written to the store when the agent died is used in the maps all the same; without this
   * its number went to the first new labels after the restart while the maps still meant the old.
   */
  hold(entries: Iterable<{ prefix: string; identity: number }>): number {
    let n = 0;
    for (const e of entries) {
      if (identityScope(e.identity) !== 'local' || this.#byId.has(e.identity) || this.#heldIds.has(e.identity)) continue;
      const p = parsePrefix(e.prefix);
      if (!p || p.len === 0) continue;
      this.#held.set(cidrLabelKey(p), e.identity);
      this.#heldIds.add(e.identity);
      n++;
    }
    return n;
  }

  /** Ends the hold (the maps have been resynced: what was not claimed again is gone from them). */
  releaseHeld(): number {
    const n = this.#heldIds.size;
    this.#held.clear();
    this.#heldIds.clear();
    return n;
  }

  /** The held number of the first `cidr:` label of `labels` that has one (taken out of the hold). */
  #claimHeld(labels: LabelSet): number | undefined {
    for (const l of labels.labels) {
      if (l.source !== LabelSource.cidr) continue;
      const id = this.#held.get(l.key);
      if (id === undefined) continue;
      this.#held.delete(l.key);
      this.#heldIds.delete(id);
      return id;
    }
    return undefined;
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
    const id = local ? (this.#heldIds.size ? this.#claimHeld(labels) : undefined) ?? this.#freeLocal() : this.#freeCluster();
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
    if (slot.refs > 0 || slot.shared) return false;
    this.#byId.delete(id);
    this.#byLabels.delete(slot.identity.labels.canonical);
    this.#emit({ type: 'delete', identity: slot.identity });
    return true;
  }

  /** Frees restored identities that nobody allocated again (call once after a restart's resync). */
  gcUnreferenced(): Identity[] {
    const out: Identity[] = [];
    for (const slot of [...this.#byId.values()]) {
      if (slot.refs === 0 && !slot.shared) {
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
      if (!this.#byId.has(id) && !this.#heldIds.has(id)) return id;
    }
    throw new MembraneError('IDENTITY_EXHAUSTED', 'no free local identity');
  }
}


