/**
 * MapState changes as the policy engine makes them (Cilium's MapStateChanges / ChangeState): the
 * keys each regeneration or selector-cache update added, changed and removed, per endpoint, for a
 * consumer that mirrors MapStates elsewhere (the external L7 proxy's feed). A consumer takes the
 * keys touched since its last take and reads their values from the live MapState: what it sends
 * per change is O(the keys that changed), never a diff or copy of the endpoint's whole MapState.
 *
 * Keys of one endpoint are coalesced (a key changed twice is sent once, with its value now), so a
 * reader's memory is bounded by the keys the endpoints have, however rarely it takes.
 */
import type { MapStateDelta, MapStateKey } from './types.ts';
import { mapStateKeyString } from './types.ts';

/** One endpoint's changes since the reader's last take. */
export interface EndpointChanges {
  /** keys upserted or deleted (by key string); their value now is the live MapState's (absent: deleted) */
  keys: Map<string, MapStateKey>;
  /** the endpoint's MapState was made anew (added, or its policy object replaced): send it whole */
  full: boolean;
  /** the endpoint's MapState is no more */
  gone: boolean;
  /** the default-deny flags changed */
  defaultDeny: boolean;
  /** the endpoint's change count after these changes (AgentPolicy.mapStateRevision) */
  revision: number;
}

export interface MapStateChangeReader {
  /** the changes since the last take, per endpoint, and forgets them */
  take(): Map<number, EndpointChanges>;
  /** stops recording (the reader is dropped from the log) */
  close(): void;
}

/** The log the agent's policy engine writes and every reader's changes accumulate in. */
export class MapStateChangeLog {
  readonly #readers = new Set<Map<number, EndpointChanges>>();
  readonly #revisions = new Map<number, number>();

  /** the endpoint's change count (0: no MapState) */
  revision(ep: number): number {
    return this.#revisions.get(ep) ?? 0;
  }

  reader(): MapStateChangeReader {
    let pending = new Map<number, EndpointChanges>();
    this.#readers.add(pending);
    return {
      take: () => {
        const out = pending;
        this.#readers.delete(out);
        pending = new Map();
        this.#readers.add(pending);
        return out;
      },
      close: () => { this.#readers.delete(pending); },
    };
  }

  #bump(ep: number): number {
    const r = (this.#revisions.get(ep) ?? 0) + 1;
    this.#revisions.set(ep, r);
    return r;
  }

  #of(pending: Map<number, EndpointChanges>, ep: number, revision: number): EndpointChanges {
    let c = pending.get(ep);
    if (!c) pending.set(ep, (c = { keys: new Map(), full: false, gone: false, defaultDeny: false, revision }));
    c.revision = revision;
    return c;
  }

  /** the endpoint's MapState was made anew */
  full(ep: number): void {
    const r = this.#bump(ep);
    for (const p of this.#readers) {
      const c = this.#of(p, ep, r);
      c.full = true; c.gone = false; c.keys.clear();
    }
  }

  gone(ep: number): void {
    const r = this.#bump(ep);
    for (const p of this.#readers) {
      const c = this.#of(p, ep, r);
      c.gone = true; c.full = false; c.keys.clear(); c.defaultDeny = false;
    }
  }

  /** a regeneration's (or lane update's) delta for the endpoint */
  delta(ep: number, d: MapStateDelta): void {
    if (!d.upserts.length && !d.deletes.length && !d.defaultDenyChanged) return;
    const r = this.#bump(ep);
    if (!this.#readers.size) return;
    // the key strings once, whatever the number of readers
    const keys: [string, MapStateKey][] = [];
    for (const u of d.upserts) keys.push([mapStateKeyString(u.key), u.key]);
    for (const k of d.deletes) keys.push([mapStateKeyString(k), k]);
    for (const p of this.#readers) {
      const c = this.#of(p, ep, r);
      if (d.defaultDenyChanged) c.defaultDeny = true;
      // a whole MapState to send anyway: its keys need no list
      if (c.full) continue;
      for (const [ks, k] of keys) c.keys.set(ks, k);
    }
  }
}
