/**
 * SelectorCache: every distinct peer selector (by canonical key) → the set of identities it
 * selects, kept up to date incrementally as identities come and go. Users (the repository holds
 * the selectors; each EndpointPolicy subscribes to the ones it uses) are told exactly which
 * identities each of their selectors gained or lost, in one batch per update.
 *
 * `selections` sets are live: they change in place when identities change, so an L7Policy that
 * holds one (perSelector.identities) always reflects the current selection without a MapState
 * change, as the proxies need. Wildcard selectors have no selection: they map to identity 0.
 */
import type { LabelSet } from '../labels/labels.ts';
import type { PeerSelector } from './selectors.ts';

export interface CachedSelector {
  readonly key: string;
  readonly selector: PeerSelector;
  readonly wildcard: boolean;
  /** Identities selected now (live; do not mutate). Empty for wildcard selectors. */
  readonly selections: ReadonlySet<number>;
}

export interface SelectionChange {
  selector: CachedSelector;
  added: number[];
  removed: number[];
}

export interface SelectorUser {
  selectionsChanged(changes: SelectionChange[]): void;
}

interface Entry extends CachedSelector {
  readonly selections: Set<number>;
  refs: number;
  readonly users: Set<SelectorUser>;
}

export class SelectorCache {
  readonly #identities = new Map<number, LabelSet>();
  readonly #selectors = new Map<string, Entry>();
  #version = 0;

  /** Bumped on every identity change that altered a selection. */
  get version(): number {
    return this.#version;
  }

  get size(): number {
    return this.#selectors.size;
  }

  identities(): ReadonlyMap<number, LabelSet> {
    return this.#identities;
  }

  identityLabels(id: number): LabelSet | undefined {
    return this.#identities.get(id);
  }

  /** Registers (refcounted) a selector; its selection is computed over all known identities. */
  add(selector: PeerSelector): CachedSelector {
    let e = this.#selectors.get(selector.key);
    if (e) {
      e.refs++;
      return e;
    }
    const selections = new Set<number>();
    if (!selector.wildcard) {
      for (const [id, labels] of this.#identities) if (selector.matches(labels)) selections.add(id);
    }
    e = { key: selector.key, selector, wildcard: selector.wildcard, selections, refs: 1, users: new Set() };
    this.#selectors.set(selector.key, e);
    return e;
  }

  /** Drops one reference; the selector leaves the cache at zero. */
  release(key: string): void {
    const e = this.#selectors.get(key);
    if (!e) return;
    if (--e.refs <= 0) this.#selectors.delete(key);
  }

  get(key: string): CachedSelector | undefined {
    return this.#selectors.get(key);
  }

  all(): IterableIterator<CachedSelector> {
    return this.#selectors.values();
  }

  subscribe(key: string, user: SelectorUser): void {
    this.#selectors.get(key)?.users.add(user);
  }

  unsubscribe(key: string, user: SelectorUser): void {
    this.#selectors.get(key)?.users.delete(user);
  }

  /** Selectors (non-wildcard) that select identity `id` now. */
  selectorsOf(id: number): CachedSelector[] {
    const out: CachedSelector[] = [];
    for (const e of this.#selectors.values()) if (e.selections.has(id)) out.push(e);
    return out;
  }

  /**
   * Applies identity changes (an upsert with new labels for a known id replaces its labels) and
   * notifies each affected user once with all of its selectors' changes.
   */
  updateIdentities(upserts: Iterable<{ id: number; labels: LabelSet }>, deletes: Iterable<number> = []): SelectionChange[] {
    const changes = new Map<Entry, SelectionChange>();
    const note = (e: Entry, id: number, add: boolean) => {
      let c = changes.get(e);
      if (!c) changes.set(e, (c = { selector: e, added: [], removed: [] }));
      (add ? c.added : c.removed).push(id);
    };
    for (const id of deletes) {
      if (!this.#identities.delete(id)) continue;
      for (const e of this.#selectors.values()) if (e.selections.delete(id)) note(e, id, false);
    }
    for (const { id, labels } of upserts) {
      if (id === 0) continue; // identity 0 is "any" in the MapState, never a peer
      const prev = this.#identities.get(id);
      if (prev && prev.canonical === labels.canonical) continue;
      this.#identities.set(id, labels);
      for (const e of this.#selectors.values()) {
        if (e.wildcard) continue;
        const now = e.selector.matches(labels);
        const was = e.selections.has(id);
        if (now && !was) { e.selections.add(id); note(e, id, true); }
        else if (!now && was) { e.selections.delete(id); note(e, id, false); }
      }
    }
    if (changes.size === 0) return [];
    this.#version++;
    const byUser = new Map<SelectorUser, SelectionChange[]>();
    for (const [e, c] of changes) {
      for (const u of e.users) {
        const arr = byUser.get(u);
        if (arr) arr.push(c);
        else byUser.set(u, [c]);
      }
    }
    for (const [u, cs] of byUser) u.selectionsChanged(cs);
    return [...changes.values()];
  }
}
