/**
 * IPCache: prefix → security identity, with longest-prefix lookup (IPv4 and IPv6). It is the
 * source of truth the datapath's LPM map mirrors.
 *
 * Several sources may claim the same prefix (a pod IP that a policy also names as a /32 CIDR).
 * The entry with the highest-precedence source wins: endpoints and nodes beat CIDR and FQDN
 * identities, which is why CIDR rules never match pod or node addresses (Cilium issue #9209).
 */
import { type Family, maskV4, maskV6, parseIP, parsePrefix } from './prefix.ts';

export type IPCacheSource = 'endpoint' | 'node' | 'kube-apiserver' | 'fqdn' | 'cidr' | 'generated';

/** Higher wins when two sources claim the same prefix. */
export const SOURCE_PRECEDENCE: Record<IPCacheSource, number> = {
  endpoint: 60, node: 50, 'kube-apiserver': 40, fqdn: 30, cidr: 20, generated: 10,
};

export interface IPCacheEntryInfo {
  prefix: string;
  identity: number;
  source: IPCacheSource;
  /** Local endpoint ID when the prefix is a local endpoint's address, else 0. */
  endpointId: number;
}

export interface IPCacheEvent {
  type: 'upsert' | 'delete';
  /** The winning entry after the change (upsert) or the prefix that is gone (delete). */
  entry: IPCacheEntryInfo;
}

/**
 * A prefix claimed by several sources. A prefix with one claim (nearly all: 300,000 remote pods at
 * 10,000 nodes) is stored as that claim alone, without a Map of claims.
 */
interface Shared {
  claims: Map<IPCacheSource, IPCacheEntryInfo>;
  winner: IPCacheEntryInfo;
}
type Slot = IPCacheEntryInfo | Shared;
const winnerOf = (s: Slot): IPCacheEntryInfo => ('claims' in s ? s.winner : s);

function pickWinner(claims: Map<IPCacheSource, IPCacheEntryInfo>): IPCacheEntryInfo {
  let best: IPCacheEntryInfo | undefined;
  for (const c of claims.values()) if (!best || SOURCE_PRECEDENCE[c.source] > SOURCE_PRECEDENCE[best.source]) best = c;
  return best!;
}

export interface LookupResult {
  identity: number;
  prefix: string;
  source: IPCacheSource;
  endpointId: number;
}

export class IPCache {
  // One map per prefix length and family; `lens` keeps the populated lengths longest first so a
  // lookup probes only lengths that exist.
  readonly #v4 = new Map<number, Map<number, Slot>>();
  readonly #v6 = new Map<number, Map<bigint, Slot>>();
  #lens4: number[] = [];
  #lens6: number[] = [];
  readonly #listeners = new Set<(ev: IPCacheEvent) => void>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /**
   * Adds or replaces the claim of `source` on `prefix` (bare IPs are /32 or /128). Returns the
   * winning entry for the prefix. Throws on an unparsable prefix.
   */
  upsert(prefixText: string, identity: number, source: IPCacheSource, endpointId = 0): IPCacheEntryInfo {
    const p = parsePrefix(prefixText);
    if (!p) throw new TypeError(`ipcache: invalid prefix "${prefixText}"`);
    const table = this.#table(p.family, p.len, true)!;
    const slot = table.get(p.addr as never) as Slot | undefined;
    const info: IPCacheEntryInfo = Object.freeze({ prefix: p.text, identity, source, endpointId });
    let winner: IPCacheEntryInfo;
    if (!slot) {
      table.set(p.addr as never, info as never);
      this.#size++;
      winner = info;
    } else if (!('claims' in slot) && slot.source === source) {
      table.set(p.addr as never, info as never);
      winner = info;
    } else {
      const shared: Shared = 'claims' in slot ? slot : { claims: new Map([[slot.source, slot]]), winner: slot };
      if (shared !== slot) table.set(p.addr as never, shared as never);
      shared.claims.set(source, info);
      const prev = shared.winner;
      shared.winner = pickWinner(shared.claims);
      if (prev === shared.winner && prev !== info) return shared.winner;
      winner = shared.winner;
    }
    this.#emit({ type: 'upsert', entry: winner });
    return winner;
  }

  /** Removes the claim of `source` (or all claims) on `prefix`. Returns whether anything changed. */
  delete(prefixText: string, source?: IPCacheSource): boolean {
    const p = parsePrefix(prefixText);
    if (!p) return false;
    const table = this.#table(p.family, p.len, false);
    const slot = table?.get(p.addr as never) as Slot | undefined;
    if (!table || !slot) return false;
    if (!('claims' in slot) || source === undefined || (slot.claims.size === 1 && slot.claims.has(source))) {
      if (source !== undefined && !('claims' in slot) && slot.source !== source) return false;
      table.delete(p.addr as never);
      this.#size--;
      if (table.size === 0) this.#dropLen(p.family, p.len);
      this.#emit({ type: 'delete', entry: winnerOf(slot) });
      return true;
    }
    if (!slot.claims.delete(source)) return false;
    const prev = slot.winner;
    const winner = pickWinner(slot.claims);
    // one claim left: back to the claim alone
    table.set(p.addr as never, (slot.claims.size === 1 ? winner : (slot.winner = winner, slot)) as never);
    if (prev !== winner) this.#emit({ type: 'upsert', entry: winner });
    return true;
  }

  /** Longest-prefix match for an address; undefined when no prefix covers it. */
  lookup(ip: string): LookupResult | undefined {
    const a = parseIP(ip);
    if (!a) return undefined;
    return this.lookupAddr(a.family, a.addr);
  }

  lookupAddr(family: Family, addr: number | bigint): LookupResult | undefined {
    if (family === 4) {
      for (const len of this.#lens4) {
        const s = this.#v4.get(len)!.get(maskV4(addr as number, len));
        if (s) { const w = winnerOf(s); return { identity: w.identity, prefix: w.prefix, source: w.source, endpointId: w.endpointId }; }
      }
    } else {
      for (const len of this.#lens6) {
        const s = this.#v6.get(len)!.get(maskV6(addr as bigint, len));
        if (s) { const w = winnerOf(s); return { identity: w.identity, prefix: w.prefix, source: w.source, endpointId: w.endpointId }; }
      }
    }
    return undefined;
  }

  /**
   * The identity of an address: the longest matching prefix, else the world identity of its
   * family (2 in single stack; 9 / 10 in dual stack).
   */
  lookupIdentity(ip: string, dualStack = false): number {
    const r = this.lookup(ip);
    if (r) return r.identity;
    if (!dualStack) return 2;
    return ip.includes(':') ? 10 : 9;
  }

  /** The exact entry for a prefix (winner), if present. */
  get(prefixText: string): IPCacheEntryInfo | undefined {
    const p = parsePrefix(prefixText);
    if (!p) return undefined;
    const s = this.#table(p.family, p.len, false)?.get(p.addr as never) as Slot | undefined;
    return s && winnerOf(s);
  }

  *entries(): IterableIterator<IPCacheEntryInfo> {
    for (const len of [...this.#lens4].reverse()) for (const s of this.#v4.get(len)!.values()) yield winnerOf(s);
    for (const len of [...this.#lens6].reverse()) for (const s of this.#v6.get(len)!.values()) yield winnerOf(s);
  }

  /** Prefixes (winners) whose identity is `identity`. */
  prefixesOf(identity: number): string[] {
    const out: string[] = [];
    for (const e of this.entries()) if (e.identity === identity) out.push(e.prefix);
    return out;
  }

  onChange(cb: (ev: IPCacheEvent) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  #emit(ev: IPCacheEvent): void {
    for (const l of this.#listeners) l(ev);
  }

  #table(family: Family, len: number, create: boolean): Map<number | bigint, Slot> | undefined {
    const tables = (family === 4 ? this.#v4 : this.#v6) as Map<number, Map<number | bigint, Slot>>;
    let t = tables.get(len);
    if (!t && create) {
      t = new Map();
      tables.set(len, t);
      const lens = family === 4 ? this.#lens4 : this.#lens6;
      lens.push(len);
      lens.sort((a, b) => b - a);
    }
    return t;
  }

  #dropLen(family: Family, len: number): void {
    (family === 4 ? this.#v4 : this.#v6).delete(len);
    if (family === 4) this.#lens4 = this.#lens4.filter((l) => l !== len);
    else this.#lens6 = this.#lens6.filter((l) => l !== len);
  }
}

