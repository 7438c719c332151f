/**
 * EndpointPolicy: the policy of one endpoint, kept current. `regenerate()` after rule changes
 * (a full resolution, shared through the Distillery, diffed against what the endpoint had);
 * automatic lane updates on identity changes (it subscribes to its selectors in the
 * SelectorCache and recomputes only the changed identities' lanes). Every change produces a
 * MapStateDelta touching only the entries that changed.
 */
import type { Issue } from '../common/errors.ts';
import type { Repository } from './repository.ts';
import type { SelectionChange, SelectorCache, SelectorUser } from './selectorcache.ts';
import { type MapState, type MapStateDelta, type MapStateEntry, type MapStateKey, mapStateKeyString } from './types.ts';
import { DEFAULT_MAX_ENTRIES, type EndpointInfo, type ResolveOptions } from './resolve-options.ts';
import { computeLane, laneContribs, type Built } from './lanes.ts';
import { computeResolution, type Distillery, type ResolveContext } from './distillery.ts';
import { entriesEqual } from './mapstate-compare.ts';

/**
 * The policy of one endpoint, kept current: `regenerate()` after rule changes, automatic lane
 * updates on identity changes (it subscribes to its selectors in the SelectorCache). Every change
 * produces a MapStateDelta touching only the entries that changed; `onDelta` receives it, and
 * `takeDelta()` returns everything not yet taken.
 */
export class EndpointPolicy implements SelectorUser {
  readonly mapState: MapState = { entries: new Map(), defaultDeny: { ingress: false, egress: false } };
  #ep: EndpointInfo;
  readonly #repo: Repository;
  readonly #distillery: Distillery | undefined;
  readonly #cache: SelectorCache;
  readonly #opts: ResolveOptions;
  #onDelta: ((d: MapStateDelta) => void) | undefined;
  #built: Built | undefined;
  #revision = 0;
  #lanes = { ingress: new Map<number, Set<string>>(), egress: new Map<number, Set<string>>() };
  #pending = new Map<string, { key: MapStateKey; entry: MapStateEntry | null }>();
  #pendingDD = false;
  #issues: Issue[] = [];
  #closed = false;

  constructor(ctx: ResolveContext & { onDelta?: (d: MapStateDelta) => void }, ep: EndpointInfo) {
    this.#ep = ep;
    this.#repo = ctx.repository;
    this.#distillery = ctx.distillery;
    this.#cache = ctx.repository.selectorCache;
    this.#opts = ctx.options ?? {};
    // The first state is the caller's full sync (mapState), not a delta.
    this.regenerate();
    this.takeDelta();
    this.#onDelta = ctx.onDelta;
  }

  get endpoint(): EndpointInfo {
    return this.#ep;
  }

  /** Repository revision this MapState reflects. */
  get revision(): number {
    return this.#revision;
  }

  /** Resolve-time problems (late L7 conflicts, policy-map overflow). */
  get issues(): readonly Issue[] {
    return this.#issues;
  }

  /** Whether this endpoint's policy resolves egress named ports (depends on other pods' ports). */
  get usesNamedPorts(): boolean {
    return this.#built?.usesNamedPorts ?? false;
  }

  get overflow(): boolean {
    return this.mapState.entries.size > (this.#opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
  }

  /** New endpoint facts (labels/identity or own named ports changed): full regeneration. */
  updateEndpoint(ep: EndpointInfo): MapStateDelta {
    this.#ep = ep;
    return this.regenerate();
  }

  /** Recomputes everything from the repository; returns the delta against the previous state. */
  regenerate(): MapStateDelta {
    if (this.#closed) return { upserts: [], deletes: [], defaultDenyChanged: false };
    const sh = this.#distillery ? this.#distillery.resolution(this.#ep, this.#opts) : computeResolution(this.#repo, this.#ep, this.#opts);
    const b = sh.built;
    const old = this.#built;
    for (const s of b.selectors) this.#cache.subscribe(s.key, this);
    if (old) for (const s of old.selectors) if (!b.selectors.has(s)) this.#cache.unsubscribe(s.key, this);
    this.#built = b;
    this.#revision = this.#repo.revision;
    const next = new Map(sh.entries);
    const lanes = { ingress: new Map(sh.lanes.ingress), egress: new Map(sh.lanes.egress) };
    for (const [ks, { key }] of this.mapState.entries) if (!next.has(ks)) this.#stage(ks, key, null);
    for (const [ks, { key, entry }] of next) {
      const have = this.mapState.entries.get(ks);
      if (!have || !entriesEqual(have.entry, entry)) this.#stage(ks, key, entry);
      else next.set(ks, have); // keep the old object: nothing changed
    }
    this.#lanes = lanes;
    const dd = b.defaultDeny;
    if (dd.ingress !== this.mapState.defaultDeny.ingress || dd.egress !== this.mapState.defaultDeny.egress) {
      this.mapState.defaultDeny.ingress = dd.ingress;
      this.mapState.defaultDeny.egress = dd.egress;
      this.#pendingDD = true;
    }
    this.mapState.entries.clear();
    for (const [ks, v] of next) this.mapState.entries.set(ks, v);
    this.#issues = [...b.issues];
    this.#noteOverflow();
    return this.#flush();
  }

  /** SelectorCache callback: recompute only the lanes of identities that changed. */
  selectionsChanged(changes: SelectionChange[]): void {
    if (this.#closed || !this.#built) return;
    const ids = new Set<number>();
    for (const c of changes) {
      for (const x of c.added) ids.add(x);
      for (const x of c.removed) ids.add(x);
    }
    this.#updateLanes(ids);
    this.#flush();
  }

  /** Named ports of some identities changed (egress): recompute their lanes, or everything. */
  namedPortsChanged(identities?: Iterable<number>): MapStateDelta {
    if (!identities) return this.regenerate();
    this.#updateLanes(new Set(identities));
    return this.#flush();
  }

  /** Everything staged and not yet taken (also what onDelta was given). */
  takeDelta(): MapStateDelta {
    const d = this.#delta();
    this.#pending.clear();
    this.#pendingDD = false;
    return d;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#built) for (const s of this.#built.selectors) this.#cache.unsubscribe(s.key, this);
  }

  #updateLanes(ids: Set<number>): void {
    const b = this.#built!;
    for (const dir of ['ingress', 'egress'] as const) {
      const ds = b[dir];
      for (const x of ids) {
        if (x === 0) continue;
        const prev = this.#lanes[dir].get(x) ?? new Set<string>();
        const now = new Set<string>();
        computeLane(ds, x, laneContribs(ds, x), (key, entry) => {
          const ks = mapStateKeyString(key);
          now.add(ks);
          const have = this.mapState.entries.get(ks);
          if (!have || !entriesEqual(have.entry, entry)) {
            this.mapState.entries.set(ks, { key, entry });
            this.#stage(ks, key, entry);
          }
        });
        for (const ks of prev) {
          if (now.has(ks)) continue;
          const have = this.mapState.entries.get(ks);
          if (have) {
            this.mapState.entries.delete(ks);
            this.#stage(ks, have.key, null);
          }
        }
        if (now.size) this.#lanes[dir].set(x, now);
        else this.#lanes[dir].delete(x);
      }
    }
    this.#noteOverflow();
  }

  #noteOverflow(): void {
    this.#issues = this.#issues.filter((i) => i.code !== 'POLICY_MAP_OVERFLOW');
    const max = this.#opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (this.mapState.entries.size > max) {
      this.#issues.push({
        code: 'POLICY_MAP_OVERFLOW', path: [], file: '', line: 0, col: 0,
        message: `endpoint ${this.#ep.id}: policy needs ${this.mapState.entries.size} map entries, more than the policy map holds (${max})`,
        hint: 'select fewer identities (narrower selectors, toEntities instead of many toEndpoints) or raise the policy map size',
      });
    }
  }

  #stage(ks: string, key: MapStateKey, entry: MapStateEntry | null): void {
    this.#pending.set(ks, { key, entry });
  }

  #delta(): MapStateDelta {
    const upserts: MapStateDelta['upserts'] = [];
    const deletes: MapStateKey[] = [];
    for (const [ks, { key, entry }] of this.#pending) {
      if (entry) upserts.push({ key, entry });
      else if (!this.mapState.entries.has(ks)) deletes.push(key);
    }
    return {
      upserts, deletes, defaultDenyChanged: this.#pendingDD,
      ...(this.#pendingDD ? { defaultDeny: { ...this.mapState.defaultDeny } } : {}),
    };
  }

  #flush(): MapStateDelta {
    const d = this.#delta();
    if (this.#onDelta && (d.upserts.length || d.deletes.length || d.defaultDenyChanged)) {
      this.#pending.clear();
      this.#pendingDD = false;
      this.#onDelta(d);
    }
    return d;
  }
}
