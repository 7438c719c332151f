/**
 * NameManager: from DNS answers to ipcache entries for toFQDNs selectors (spec policy.md §6.2).
 *
 *   DNS proxy ──answer(endpoint, qname, IPs, TTL)──► NodeDNSCache (per endpoint + node union)
 *                                                        │ pairs that became (in)valid
 *   policy ──add/remove/setSelectors──► selectors        ▼
 *                      name → matching selector keys ──► per IP: selector set ──► labels
 *                                                        │ allocator.allocate(labels)
 *                                                        ▼
 *                          onUpdate({ipcacheUpserts, ipcacheDeletes, selectorsChanged})
 *                          resolves once the datapath (ipcache + policy maps) has it all
 *
 * An IP gets an ipcache entry (source `fqdn`) only while some selector matches one of its names;
 * its identity's labels are `fqdn:<selector key>` for each such selector, the family's world
 * label and (default `identityLabels`) `cidr:<ip>/32|128`, so CIDR rules covering the IP still
 * select it. Changes are applied in batches, one onUpdate at a time and in order: answers that
 * arrive while an update is in flight join the next batch. `onDNSResponse` tells the proxy what
 * to wait for before it releases the answer: the batch holding any of the answer's IPs, or
 * nothing when the datapath already has them all (the common case for repeated lookups).
 * An identity replaced by a batch is released only after that batch's onUpdate resolved.
 *
 * No I/O: the only side effects are the injected callbacks and the GC timer.
 */
import { MembraneError } from '../common/errors.ts';
import { LabelSet, LabelSource, makeLabel, type Label } from '../labels/labels.ts';
import { hostPrefix, isIPv4Mapped, parsePrefix } from '../ipcache/prefix.ts';
import { cidrLabel } from '../identity/labels.ts';
import { worldLabelName } from '../identity/identity.ts';
import type { AllocationResult } from '../identity/allocator.ts';
import type { FQDNSelector } from '../api/types.ts';
import { NodeDNSCache, type CacheChange, type DNSCacheOptions } from './cache.ts';
import { compileSelector, normalizeName, selectorKey, type NameMatcher } from './matchpattern.ts';

export interface IPCacheUpsert {
  /** `ip/32` or `ip/128` */
  prefix: string;
  ip: string;
  identity: number;
  labels: LabelSet;
  /** always `fqdn` (the ipcache source: endpoints and nodes win over it) */
  source: 'fqdn';
  /** identity this prefix had before (0 when new): the datapath may drop it after the update */
  oldIdentity: number;
}

export interface IPCacheDelete {
  prefix: string;
  ip: string;
  /** the identity the prefix had */
  identity: number;
}

export interface FQDNUpdate {
  ipcacheUpserts: IPCacheUpsert[];
  ipcacheDeletes: IPCacheDelete[];
  /** selector keys (`fqdn:` label keys) whose selected IPs changed */
  selectorsChanged: string[];
}

/** The part of identity/allocator.ts IdentityAllocator the name manager needs. */
export interface FQDNIdentityAllocator {
  allocate(labels: LabelSet): Promise<AllocationResult> | AllocationResult;
  release(id: number): Promise<boolean> | boolean;
}

export interface NameManagerDeps {
  allocator: FQDNIdentityAllocator;
  /**
   * Applies one batch to the datapath. Must resolve only when the ipcache and every policy
   * map that selects the new identities have it: the DNS proxy holds answers until then.
   */
  onUpdate(update: FQDNUpdate): Promise<void>;
  /** A NodeDNSCache to share, or options for a new one. */
  cache?: NodeDNSCache | DNSCacheOptions;
  /** Labels of an IP's identity; default `fqdnIPLabels` (cidr + fqdn selectors + world). */
  identityLabels?: (ip: string, selectorKeys: readonly string[]) => LabelSet;
  /** Dual-stack world labels (`world-ipv4` / `world-ipv6`). Default false. */
  dualStack?: boolean;
  /** IPs that must never get an FQDN identity (pod, service and node addresses). */
  skipIP?: (ip: string) => boolean;
  /** Cache GC period in ms (Cilium: one minute). Default 60000. */
  gcIntervalMs?: number;
  /** Retry delay after a failed onUpdate, ms. Default 1000. */
  retryDelayMs?: number;
  /** Errors of onUpdate / allocation (counted too); default: ignored. */
  onError?: (err: unknown) => void;
}

/** The identity labels of an IP selected by `selectorKeys` (per-IP identity, Cilium < 1.16 style). */
export function fqdnIPLabels(ip: string, selectorKeys: readonly string[], dualStack = false): LabelSet {
  const p = parsePrefix(ip);
  if (!p) throw new MembraneError('FQDN_IP_INVALID', `fqdn: "${ip}" is not an IP address`);
  const labels: Label[] = [cidrLabel(p), makeLabel(LabelSource.reserved, worldLabelName(p.family, dualStack))];
  for (const k of selectorKeys) labels.push(makeLabel(LabelSource.fqdn, k));
  return new LabelSet(labels);
}

/**
 * Labels shared by every IP with the same selectors (CFP-28427, Cilium ≥ 1.16): far fewer
 * identities, but a CIDR rule covering such an IP no longer selects it unless the integrator
 * merges CIDR labels in. Opt-in through `identityLabels`.
 */
export function fqdnSelectorSetLabels(ip: string, selectorKeys: readonly string[], dualStack = false): LabelSet {
  const p = parsePrefix(ip);
  if (!p) throw new MembraneError('FQDN_IP_INVALID', `fqdn: "${ip}" is not an IP address`);
  const labels: Label[] = [makeLabel(LabelSource.reserved, worldLabelName(p.family, dualStack))];
  for (const k of selectorKeys) labels.push(makeLabel(LabelSource.fqdn, k));
  return new LabelSet(labels);
}

interface SelectorSlot {
  key: string;
  selector: FQDNSelector;
  match: NameMatcher;
  refs: number;
}

interface IPState {
  /** sorted selector keys joined by `\n` (compare) */
  set: string;
  keys: string[];
  identity: number;
  labels: LabelSet;
}

interface Batch {
  dirty: Set<string>;
  promise: Promise<void>;
  resolve: () => void;
}

export interface NameManagerStats {
  selectors: number;
  ips: number;
  batches: number;
  updateErrors: number;
  allocationErrors: number;
  lastBatchMs: number;
  cache: ReturnType<NodeDNSCache['stats']>;
}

export interface NameManager {
  start(): void;
  stop(): void;
  /**
   * An allowed answer seen by the proxy: `ips` (A/AAAA on the CNAME chain) for the query name.
   * Returns null when the datapath already has everything (release at once), else a promise
   * that resolves when it does. Never rejects, never throws.
   */
  onDNSResponse(endpointId: number, qname: string, ips: readonly string[], ttl: number): Promise<void> | null;
  addSelector(sel: FQDNSelector): Promise<void>;
  removeSelector(sel: FQDNSelector): Promise<void>;
  /** Replaces the whole selector set (e.g. with Repository.fqdnSelectors()). */
  setSelectors(sels: readonly FQDNSelector[]): Promise<void>;
  /** An endpoint went away: its cache is dropped. */
  removeEndpoint(endpointId: number): Promise<void>;
  /** Runs the cache GC now (the timer calls this). */
  gc(): Promise<void>;
  /** Expires names matching `match` now (in-use IPs stay as zombies). */
  forceExpire(match: (name: string) => boolean): Promise<void>;
  /** Resolves when every change made so far reached the datapath. */
  settled(): Promise<void>;
  identityForIP(ip: string): number | undefined;
  selectorsForIP(ip: string): readonly string[];
  ipsForSelector(key: string): string[];
  namesForIP(ip: string): string[];
  selectorKeys(): string[];
  readonly cache: NodeDNSCache;
  stats(): NameManagerStats;
}

export function createNameManager(deps: NameManagerDeps): NameManager {
  const cache = deps.cache instanceof NodeDNSCache ? deps.cache : new NodeDNSCache(deps.cache ?? {});
  const dualStack = deps.dualStack ?? false;
  const labelsOf = deps.identityLabels ?? ((ip: string, keys: readonly string[]) => fqdnIPLabels(ip, keys, dualStack));
  const skipIP = deps.skipIP ?? (() => false);
  const gcInterval = deps.gcIntervalMs ?? 60_000;
  const retryDelay = deps.retryDelayMs ?? 1000;
  const onError = deps.onError ?? (() => {});

  const selectors = new Map<string, SelectorSlot>();
  /** name → keys of the selectors that match it (only names present in the node cache) */
  const nameSelectors = new Map<string, string[]>();
  const ipState = new Map<string, IPState>();
  /** IP → the latest batch that will change it (until that batch completes) */
  const ipBatch = new Map<string, Batch>();
  /** IPs whose last update failed: re-sent by the next batch whatever their state */
  const resync = new Set<string>();
  let pending: Batch | undefined;
  let inflight: Batch | undefined;
  let timer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  const counters = { batches: 0, updateErrors: 0, allocationErrors: 0, lastBatchMs: 0 };

  const NO_KEYS: string[] = [];

  function selectorsOfName(name: string): string[] {
    let keys = nameSelectors.get(name);
    if (keys === undefined) {
      keys = NO_KEYS;
      for (const s of selectors.values()) {
        if (s.match(name)) keys = keys === NO_KEYS ? [s.key] : [...keys, s.key];
      }
      nameSelectors.set(name, keys);
    }
    return keys;
  }

  function newBatch(): Batch {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => { resolve = r; });
    return { dirty: new Set(), promise, resolve };
  }

  function markDirty(ip: string): Batch {
    if (!pending) {
      pending = newBatch();
      if (!inflight) queueMicrotask(runNext);
    }
    pending.dirty.add(ip);
    ipBatch.set(ip, pending);
    return pending;
  }

  function applyChange(ch: CacheChange): Batch | undefined {
    let b: Batch | undefined;
    for (const p of ch.added) {
      if (selectorsOfName(p.name).length > 0) b = markDirty(p.ip);
    }
    for (const p of ch.removed) {
      if (ipState.has(p.ip) || selectorsOfName(p.name).length > 0) b = markDirty(p.ip);
    }
    // Names no longer in the node cache need no selector memo.
    for (const p of ch.removed) if (cache.ipsForName(p.name).length === 0) nameSelectors.delete(p.name);
    return b;
  }

  function desiredKeys(ip: string): string[] {
    // an IPv4-mapped AAAA answer names an IPv4 host: never an identity (the datapath drops it, 134)
    if (skipIP(ip) || isIPv4Mapped(ip)) return NO_KEYS;
    const names = cache.namesForIP(ip);
    if (names.length === 0) return NO_KEYS;
    if (names.length === 1) return selectorsOfName(names[0]!);
    const set = new Set<string>();
    for (const n of names) for (const k of selectorsOfName(n)) set.add(k);
    return [...set];
  }

  async function runBatch(batch: Batch): Promise<void> {
    const t0 = performance.now();
    const upserts: IPCacheUpsert[] = [];
    const deletes: IPCacheDelete[] = [];
    const changedSelectors = new Set<string>();
    const toRelease: number[] = [];
    const allocations: Promise<void>[] = [];
    const ips = [...batch.dirty];
    for (const ip of resync) if (!batch.dirty.has(ip)) ips.push(ip);
    const forced = new Set(resync);
    resync.clear();

    for (const ip of ips) {
      const keys = [...desiredKeys(ip)].sort();
      const set = keys.join('\n');
      const old = ipState.get(ip);
      const prefix = hostPrefix(ip);
      if (keys.length === 0) {
        if (old) {
          ipState.delete(ip);
          deletes.push({ prefix, ip, identity: old.identity });
          toRelease.push(old.identity);
          for (const k of old.keys) changedSelectors.add(k);
        } else if (forced.has(ip)) {
          deletes.push({ prefix, ip, identity: 0 });
        }
        continue;
      }
      if (old && old.set === set) {
        if (forced.has(ip)) upserts.push({ prefix, ip, identity: old.identity, labels: old.labels, source: 'fqdn', oldIdentity: old.identity });
        continue;
      }
      for (const k of keys) if (!old || !old.keys.includes(k)) changedSelectors.add(k);
      if (old) for (const k of old.keys) if (!keys.includes(k)) changedSelectors.add(k);
      allocations.push((async () => {
        try {
          const labels = labelsOf(ip, keys);
          const r = await deps.allocator.allocate(labels);
          ipState.set(ip, { set, keys, identity: r.identity.id, labels });
          upserts.push({ prefix, ip, identity: r.identity.id, labels, source: 'fqdn', oldIdentity: old?.identity ?? 0 });
          if (old) toRelease.push(old.identity);
        } catch (err) {
          // No identity: the IP stays world (its connections are denied: fail closed).
          counters.allocationErrors++;
          onError(err);
          if (old) {
            ipState.delete(ip);
            deletes.push({ prefix, ip, identity: old.identity });
            toRelease.push(old.identity);
          }
        }
      })());
    }
    if (allocations.length > 0) await Promise.all(allocations);

    if (upserts.length > 0 || deletes.length > 0) {
      const update: FQDNUpdate = { ipcacheUpserts: upserts, ipcacheDeletes: deletes, selectorsChanged: [...changedSelectors].sort() };
      try {
        await deps.onUpdate(update);
      } catch (err) {
        counters.updateErrors++;
        onError(err);
        for (const u of upserts) resync.add(u.ip);
        for (const d of deletes) resync.add(d.ip);
        scheduleRetry();
      }
    }
    for (const id of toRelease) {
      try {
        await deps.allocator.release(id);
      } catch (err) {
        onError(err);
      }
    }
    counters.batches++;
    counters.lastBatchMs = performance.now() - t0;
  }

  function scheduleRetry(): void {
    if (retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      if (resync.size > 0 && !pending) {
        pending = newBatch();
        if (!inflight) queueMicrotask(runNext);
      }
    }, retryDelay);
    retryTimer.unref?.();
  }

  function runNext(): void {
    if (inflight || !pending) return;
    const batch = pending;
    pending = undefined;
    inflight = batch;
    runBatch(batch)
      .catch((err) => { onError(err); })
      .finally(() => {
        inflight = undefined;
        for (const ip of batch.dirty) if (ipBatch.get(ip) === batch) ipBatch.delete(ip);
        batch.resolve();
        if (pending) runNext();
      });
  }

  function settledPromise(b: Batch | undefined): Promise<void> {
    return b ? b.promise : Promise.resolve();
  }

  function onDNSResponse(endpointId: number, qname: string, ips: readonly string[], ttl: number): Promise<void> | null {
    try {
      if (ips.length === 0) return null;
      const name = normalizeName(qname);
      const b = applyChange(cache.update(endpointId, name, ips, ttl));
      if (b) return b.promise;
      if (ipBatch.size === 0) return null;
      // Nothing new, but an earlier answer's update for one of these IPs may still be on its way.
      let wait: Batch | undefined;
      for (const ip of ips) {
        const ib = ipBatch.get(ip);
        if (ib && (!wait || ib === pending)) wait = ib;
      }
      return wait ? wait.promise : null;
    } catch (err) {
      onError(err);
      return null;
    }
  }

  function invalidateAll(): Batch | undefined {
    nameSelectors.clear();
    let b: Batch | undefined;
    // Every IP that has a state or a name may change selector set.
    const ips = new Set<string>(ipState.keys());
    for (const name of cache.names()) for (const ip of cache.ipsForName(name)) ips.add(ip);
    for (const ip of ips) b = markDirty(ip);
    return b;
  }

  /** Re-evaluates only the names `key`'s matcher says yes to (and IPs that carry the key). */
  function selectorChanged(key: string, match: NameMatcher | undefined): Batch | undefined {
    let b: Batch | undefined;
    for (const name of cache.names()) {
      const memo = nameSelectors.get(name);
      const had = memo?.includes(key) ?? false;
      const has = match ? match(name) : false;
      if (had === has && memo !== undefined) continue;
      nameSelectors.delete(name);
      if (had !== has) for (const ip of cache.ipsForName(name)) b = markDirty(ip);
    }
    return b;
  }

  function addSelector(sel: FQDNSelector): Promise<void> {
    const key = selectorKey(sel);
    const have = selectors.get(key);
    if (have) {
      have.refs++;
      return settledPromise(pending ?? inflight);
    }
    const match = compileSelector(sel); // throws MembraneError on a bad selector: nothing changed
    selectors.set(key, { key, selector: sel, match, refs: 1 });
    return settledPromise(selectorChanged(key, match) ?? pending ?? inflight);
  }

  function removeSelector(sel: FQDNSelector): Promise<void> {
    const key = selectorKey(sel);
    const have = selectors.get(key);
    if (!have) return settledPromise(pending ?? inflight);
    if (--have.refs > 0) return settledPromise(pending ?? inflight);
    selectors.delete(key);
    return settledPromise(selectorChanged(key, undefined) ?? pending ?? inflight);
  }

  function setSelectors(sels: readonly FQDNSelector[]): Promise<void> {
    const want = new Map<string, FQDNSelector>();
    for (const s of sels) want.set(selectorKey(s), s);
    const compiled = new Map<string, NameMatcher>();
    for (const [k, s] of want) if (!selectors.has(k)) compiled.set(k, compileSelector(s)); // validate all first
    let changed = false;
    for (const k of [...selectors.keys()]) if (!want.has(k)) { selectors.delete(k); changed = true; }
    for (const [k, s] of want) {
      const have = selectors.get(k);
      if (have) have.refs = 1;
      else { selectors.set(k, { key: k, selector: s, match: compiled.get(k)!, refs: 1 }); changed = true; }
    }
    return settledPromise((changed ? invalidateAll() : undefined) ?? pending ?? inflight);
  }

  function gc(): Promise<void> {
    try {
      return settledPromise(applyChange(cache.gc()) ?? pending ?? inflight);
    } catch (err) {
      onError(err);
      return settledPromise(pending ?? inflight);
    }
  }

  function lastBatch(): Batch | undefined {
    return pending ?? inflight;
  }

  return {
    cache,
    start() {
      if (timer) return;
      timer = setInterval(() => { void gc(); }, gcInterval);
      timer.unref?.();
    },
    stop() {
      if (timer) clearInterval(timer);
      if (retryTimer) clearTimeout(retryTimer);
      timer = undefined;
      retryTimer = undefined;
    },
    onDNSResponse,
    addSelector,
    removeSelector,
    setSelectors,
    removeEndpoint(endpointId) {
      return settledPromise(applyChange(cache.removeEndpoint(endpointId)) ?? lastBatch());
    },
    gc,
    forceExpire(match) {
      return settledPromise(applyChange(cache.forceExpire(match)) ?? lastBatch());
    },
    async settled() {
      while (pending || inflight) await (pending ?? inflight)!.promise;
    },
    identityForIP: (ip) => ipState.get(ip)?.identity,
    selectorsForIP: (ip) => ipState.get(ip)?.keys ?? NO_KEYS,
    ipsForSelector(key) {
      const out: string[] = [];
      for (const [ip, s] of ipState) if (s.keys.includes(key)) out.push(ip);
      return out;
    },
    namesForIP: (ip) => cache.namesForIP(ip),
    selectorKeys: () => [...selectors.keys()],
    stats() {
      return { selectors: selectors.size, ips: ipState.size, ...counters, cache: cache.stats() };
    },
  };
}
