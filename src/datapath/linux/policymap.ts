/**
 * The policy map (mb_policy): one LPM entry per endpoint, direction, identity and port prefix,
 * mirrored from the endpoint's MapState. The agent keeps an index of the keys it wrote per
 * endpoint (built from the map on first use, so it survives an agent restart).
 */
import type { Direction, L7Policy, MapState, MapStateDelta, MapStateEntry, MapStateKey } from '../../policy/types.ts';
import { decodePolicyKey, decodePolicyVal, encodePolicyBatch, encodePolicyKey, policyKeyDirection, policyKeyEndpoint, policyValFor } from './codec.ts';
import type { Loader } from './loader.ts';

export type ProxyRedirect = (l7: L7Policy, direction: Direction) => { port: number; slot: number } | null;

export interface PolicyDumpEntry { key: MapStateKey; deny: boolean; proxyPort: number; matchType: number }

/** One endpoint's keys in mb_policy (hex(key) -> key), with how many are ingress keys (`holds` without a walk). */
class EndpointKeys {
  readonly keys = new Map<string, Buffer>();
  ingress = 0;

  set(h: string, k: Buffer): void {
    if (this.keys.has(h)) return;
    this.keys.set(h, k);
    if (policyKeyDirection(k) === 'ingress') this.ingress++;
  }

  delete(h: string): void {
    const k = this.keys.get(h);
    if (k === undefined) return;
    this.keys.delete(h);
    if (policyKeyDirection(k) === 'ingress') this.ingress--;
  }
}

export class PolicyMap {
  private readonly loader: Loader;
  private readonly proxyRedirect: ProxyRedirect;
  /** policy keys per endpoint */
  private index: Map<number, EndpointKeys> | null = null;

  constructor(loader: Loader, proxyRedirect: ProxyRedirect) {
    this.loader = loader;
    this.proxyRedirect = proxyRedirect;
  }

  /** Forgets the index (the map may change while the agent is away). */
  reset(): void {
    this.index = null;
  }

  /** Writes a delta (or a full MapState) for one endpoint; true when the map changed. */
  apply(endpointId: number, delta: MapStateDelta, full?: MapState): boolean {
    const pol = this.loader.map('mb_policy');
    const idx = this.keyIndex();
    let keys = idx.get(endpointId);
    if (!keys) idx.set(endpointId, (keys = new EndpointKeys()));
    const upserts: { key: MapStateKey; entry: MapStateEntry }[] = full ? [...full.entries.values()] : delta.upserts;
    const batch = encodePolicyBatch(endpointId, upserts.map((u) => {
      const proxy = u.entry.l7 && u.entry.verdict === 'allow' ? this.proxyRedirect(u.entry.l7, u.key.direction) : null;
      return { key: u.key, val: policyValFor(u.key, u.entry, proxy) };
    }));
    const desired = new Map<string, Buffer>();
    for (const k of batch.keyList) desired.set(k.toString('hex'), k);
    const toDelete: Buffer[] = [];
    if (full) {
      for (const [h, k] of keys.keys) if (!desired.has(h)) toDelete.push(k);
    } else {
      for (const d of delta.deletes) {
        const k = encodePolicyKey(endpointId, d);
        const h = k.toString('hex');
        if (!desired.has(h)) toDelete.push(k);
      }
    }
    // deletes first: a delta never deletes and upserts the same key, and for a full sync the
    // stale keys are disjoint from the desired ones, so ordering only bounds the map's peak size.
    pol.deleteMany(toDelete);
    for (const k of toDelete) keys.delete(k.toString('hex'));
    pol.updateBatch(batch.keys, batch.vals, upserts.length);
    for (const [h, k] of desired) keys.set(h, k);
    return toDelete.length > 0 || upserts.length > 0;
  }

  /** Removes every entry of an endpoint. */
  removeEndpoint(endpointId: number): void {
    const idx = this.keyIndex();
    const keys = idx.get(endpointId);
    if (keys) this.loader.map('mb_policy').deleteMany([...keys.keys.values()]);
    idx.delete(endpointId);
  }

  /** The directions of `upserts` (a delta's, or a full MapState's): those about to get entries. */
  static directionsOf(delta: MapStateDelta, full?: MapState): Set<Direction> {
    const dirs = new Set<Direction>();
    if (full) for (const e of full.entries.values()) dirs.add(e.key.direction);
    else for (const u of delta.upserts) dirs.add(u.key.direction);
    return dirs;
  }

  /** Whether the map holds any entry of the endpoint in each direction (its key index). */
  holds(endpointId: number): { ingress: boolean; egress: boolean } {
    const keys = this.keyIndex().get(endpointId);
    if (!keys) return { ingress: false, egress: false };
    return { ingress: keys.ingress > 0, egress: keys.keys.size > keys.ingress };
  }

  /** Number of entries the agent wrote (all endpoints). */
  size(): number {
    let n = 0;
    for (const s of this.keyIndex().values()) n += s.keys.size;
    return n;
  }

  /** The entries in the kernel for one endpoint (decoded). */
  dump(endpointId: number): PolicyDumpEntry[] {
    const pol = this.loader.map('mb_policy');
    const out: PolicyDumpEntry[] = [];
    for (const k of this.keyIndex().get(endpointId)?.keys.values() ?? []) {
      const v = pol.lookup(k);
      if (!v) continue;
      const pv = decodePolicyVal(v);
      out.push({ key: decodePolicyKey(k).key, deny: pv.deny, proxyPort: pv.proxyPort, matchType: pv.matchType });
    }
    return out;
  }

  private keyIndex(): Map<number, EndpointKeys> {
    if (this.index) return this.index;
    const idx = new Map<number, EndpointKeys>();
    for (const k of this.loader.map('mb_policy').keys()) {
      const ep = policyKeyEndpoint(k);
      let s = idx.get(ep);
      if (!s) idx.set(ep, (s = new EndpointKeys()));
      s.set(k.toString('hex'), k);
    }
    this.index = idx;
    return idx;
  }
}
