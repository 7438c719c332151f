/**
 * The distillery: endpoints selected by the same rules (with the same own named ports and
 * options) get the same MapState, computed once per (repository revision, selector-cache
 * version, named-port version) and copied to each of them (Cilium's distillery shares an
 * identity's policy the same way). A Distillery belongs to its owner (the PolicyEngine gives one
 * to all its EndpointPolicies); `resolve` without one computes from scratch.
 */
import type { Repository } from './repository.ts';
import { type MapState, type MapStateEntry, type MapStateKey, mapStateKeyString } from './types.ts';
import { NO_NAMED_PORTS, type EndpointInfo, type ResolveOptions } from './resolve-options.ts';
import { build, computeAll, hostSelectorOf, type Built } from './lanes.ts';

export interface ResolveContext {
  repository: Repository;
  options?: ResolveOptions;
  /** shares computations between endpoints; default: none (a fresh computation) */
  distillery?: Distillery;
}

/** One computed MapState, with the lanes that make it up (EndpointPolicy updates lanes). */
export interface Resolution {
  revision: number;
  version: number;
  npVersion: number | undefined;
  built: Built;
  entries: Map<string, { key: MapStateKey; entry: MapStateEntry }>;
  lanes: { ingress: Map<number, Set<string>>; egress: Map<number, Set<string>> };
}

export class Distillery {
  readonly repository: Repository;
  readonly #bySignature = new Map<string, Resolution>();
  readonly #objectIds = new WeakMap<object, number>();
  #nextObjectId = 1;

  constructor(repository: Repository) {
    this.repository = repository;
  }

  #oid(o: object): number {
    let id = this.#objectIds.get(o);
    if (id === undefined) this.#objectIds.set(o, (id = this.#nextObjectId++));
    return id;
  }

  /** The resolution of an endpoint: shared when current, else computed (and kept). */
  resolution(ep: EndpointInfo, opts: ResolveOptions): Resolution {
    const repo = this.repository;
    const cache = repo.selectorCache;
    const rules = repo.rulesFor(ep.labels, ep.kind ?? 'endpoint');
    const np = opts.namedPorts ?? NO_NAMED_PORTS;
    const sig = [
      ep.kind ?? 'endpoint', opts.enforcementMode ?? 'default', opts.allowLocalhost ?? 'always', this.#oid(np),
      (ep.namedPorts ?? []).map((n) => `${n.name}/${n.proto}/${n.port}`).join(';'), rules.map((r) => this.#oid(r)).join(','),
    ].join('|');
    const current = (v: Resolution) => v.revision === repo.revision && v.version === cache.version && v.npVersion === np.version;
    const hit = this.#bySignature.get(sig);
    if (hit && current(hit)) return hit;
    // Anything computed before the latest change is stale for every signature.
    for (const [k, v] of this.#bySignature) if (!current(v)) this.#bySignature.delete(k);
    const out = computeResolution(repo, ep, opts);
    this.#bySignature.set(sig, out);
    return out;
  }

  /** Drops every kept resolution (benchmarks measure cold computations). */
  clear(): void {
    this.#bySignature.clear();
  }
}

/** Computes an endpoint's resolution from scratch. */
export function computeResolution(repo: Repository, ep: EndpointInfo, opts: ResolveOptions): Resolution {
  const cache = repo.selectorCache;
  const np = opts.namedPorts ?? NO_NAMED_PORTS;
  const built = build(repo.rulesFor(ep.labels, ep.kind ?? 'endpoint'), repo, cache, ep, opts, hostSelectorOf(cache));
  const entries = new Map<string, { key: MapStateKey; entry: MapStateEntry }>();
  const lanes = { ingress: new Map<number, Set<string>>(), egress: new Map<number, Set<string>>() };
  for (const dir of ['ingress', 'egress'] as const) {
    computeAll(built[dir], (key, entry) => {
      const ks = mapStateKeyString(key);
      entries.set(ks, Object.freeze({ key: Object.freeze(key), entry }));
      let l = lanes[dir].get(key.identity);
      if (!l) lanes[dir].set(key.identity, (l = new Set()));
      l.add(ks);
    });
  }
  return { revision: repo.revision, version: cache.version, npVersion: np.version, built, entries, lanes };
}

/** Computes an endpoint's MapState (no subscriptions; the result is the caller's to keep). */
export function resolve(ctx: ResolveContext, ep: EndpointInfo): MapState {
  const opts = ctx.options ?? {};
  const s = ctx.distillery ? ctx.distillery.resolution(ep, opts) : computeResolution(ctx.repository, ep, opts);
  return { entries: new Map(s.entries), defaultDeny: { ...s.built.defaultDeny } };
}
