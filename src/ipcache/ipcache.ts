/**
 * IPCache: prefix → security identity, with longest-prefix lookup (IPv4 and IPv6). It is the
 * source of truth the datapath's LPM map mirrors.
 *
 * Several sources may claim the same prefix (a pod IP that a policy also names as a /32 CIDR).
 * The entry with the highest-precedence source wins: endpoints and nodes beat CIDR and FQDN
 * identities, which is why CIDR rules never match pod or node addresses (Cilium issue #9209).
 */
import { type Family, formatIP, maskV4, maskV6, parseIP, parseHostPrefix4, parsePrefix, type Prefix } from './prefix.ts';

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
 * 10,000 nodes) is stored as that claim alone, without a Map of claims; a claim without a local
 * endpoint id as one number (identity × 8 + source), its entry and prefix text made when asked:
 * an object and a prefix string per remote pod were a fifth of an agent's heap.
 */
interface Shared {
  claims: Map<IPCacheSource, IPCacheEntryInfo>;
  winner: IPCacheEntryInfo;
}
type Slot = number | IPCacheEntryInfo | Shared;
const SOURCES = Object.keys(SOURCE_PRECEDENCE) as IPCacheSource[];
const SOURCE_INDEX = new Map(SOURCES.map((s, i) => [s, i]));
/** identities below this pack into a small integer with their source */
const PACKABLE = 1 << 27;

function pack(identity: number, source: IPCacheSource, endpointId: number): number | undefined {
  return endpointId === 0 && Number.isInteger(identity) && identity >= 0 && identity < PACKABLE ? identity * 8 + SOURCE_INDEX.get(source)! : undefined;
}
const sourceOf = (s: Slot): IPCacheSource => (typeof s === 'number' ? SOURCES[s & 7]! : 'claims' in s ? s.winner.source : s.source);

/**
 * parsePrefix with a short way for `a.b.c.d/32` in canonical form (a remote pod's, 300,000 after a
 * restart at 10,000 nodes): the text given is the canonical text, no mask, format or freeze.
 */
function parseKey(text: string): Prefix | undefined {
  const a = parseHostPrefix4(text);
  return a !== undefined ? { family: 4, addr: a, len: 32, text } : parsePrefix(text);
}

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
    const p = parseKey(prefixText);
    if (!p) throw new TypeError(`ipcache: invalid prefix "${prefixText}"`);
    const table = this.#table(p.family, p.len, true)!;
    const slot = table.get(p.addr as never) as Slot | undefined;
    const info: IPCacheEntryInfo = Object.freeze({ prefix: p.text, identity, source, endpointId });
    let winner: IPCacheEntryInfo;
    if (slot === undefined || (!(typeof slot === 'object' && 'claims' in slot) && sourceOf(slot) === source)) {
      table.set(p.addr as never, (pack(identity, source, endpointId) ?? info) as never);
      if (slot === undefined) this.#size++;
      winner = info;
    } else {
      const alone = typeof slot === 'number' ? this.#entry(slot, p.text) : slot;
      const shared: Shared = 'claims' in alone ? alone : { claims: new Map([[alone.source, alone]]), winner: alone };
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
    const p = parseKey(prefixText);
    if (!p) return false;
    const table = this.#table(p.family, p.len, false);
    const slot = table?.get(p.addr as never) as Slot | undefined;
    if (!table || slot === undefined) return false;
    if (typeof slot === 'number' || !('claims' in slot) || source === undefined || (slot.claims.size === 1 && slot.claims.has(source))) {
      if (source !== undefined && !(typeof slot === 'object' && 'claims' in slot) && sourceOf(slot) !== source) return false;
      table.delete(p.addr as never);
      this.#size--;
      if (table.size === 0) this.#dropLen(p.family, p.len);
      this.#emit({ type: 'delete', entry: this.#winner(slot, p.text) });
      return true;
    }
    if (!slot.claims.delete(source)) return false;
    const prev = slot.winner;
    const winner = pickWinner(slot.claims);
    // one claim left: back to the claim alone
    table.set(p.addr as never, (slot.claims.size === 1 ? (pack(winner.identity, winner.source, winner.endpointId) ?? winner) : (slot.winner = winner, slot)) as never);
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
        const a = maskV4(addr as number, len);
        const s = this.#v4.get(len)!.get(a);
        if (s !== undefined) { const w = this.#winner(s, () => `${formatIP(4, a)}/${len}`); return { identity: w.identity, prefix: w.prefix, source: w.source, endpointId: w.endpointId }; }
      }
    } else {
      for (const len of this.#lens6) {
        const a = maskV6(addr as bigint, len);
        const s = this.#v6.get(len)!.get(a);
        if (s !== undefined) { const w = this.#winner(s, () => `${formatIP(6, a)}/${len}`); return { identity: w.identity, prefix: w.prefix, source: w.source, endpointId: w.endpointId }; }
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
    const p = parseKey(prefixText);
    if (!p) return undefined;
    const s = this.#table(p.family, p.len, false)?.get(p.addr as never) as Slot | undefined;
    return s === undefined ? undefined : this.#winner(s, p.text);
  }

  *entries(): IterableIterator<IPCacheEntryInfo> {
    for (const len of [...this.#lens4].reverse()) for (const [a, s] of this.#v4.get(len)!) yield this.#winner(s, () => `${formatIP(4, a)}/${len}`);
    for (const len of [...this.#lens6].reverse()) for (const [a, s] of this.#v6.get(len)!) yield this.#winner(s, () => `${formatIP(6, a)}/${len}`);
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

  /** the winning entry of a slot; `prefix`: its canonical text (or how to make it) */
  #winner(s: Slot, prefix: string | (() => string)): IPCacheEntryInfo {
    if (typeof s === 'number') return this.#entry(s, typeof prefix === 'string' ? prefix : prefix());
    return 'claims' in s ? s.winner : s;
  }

  #entry(packed: number, prefix: string): IPCacheEntryInfo {
    return Object.freeze({ prefix, identity: Math.floor(packed / 8), source: SOURCES[packed & 7]!, endpointId: 0 });
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

