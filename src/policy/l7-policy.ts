/**
 * L7Policy(K): the L7 part of the MapState entry at key K. It exists iff some L7 allow
 * contribution (of any selector) covers K; its perSelector list groups every allow contribution
 * covering K by selector, and an L4-only one wildcards L7 for its selector (`http: null`). The
 * identity sets are the selector cache's live sets, so an identity change never touches it.
 */
import type { PortRuleDNS, PortRuleHTTP } from '../api/types.ts';
import type { L7Spec } from './rules.ts';
import type { CachedSelector } from './selectorcache.ts';
import type { L7Policy } from './types.ts';
import type { NamedPortProvider } from './resolve-options.ts';
import { covers, dedupeSorted, sortedOrigins, type Block, type Contrib } from './contributions.ts';

/**
 * The identities of a selector whose pods name `name` as (proto, port): a named egress port
 * rule applies at this port only to them. Live, like the selector's own selections.
 */
class NamedPortIdentities implements ReadonlySet<number> {
  readonly #sel: ReadonlySet<number>;
  readonly #np: NamedPortProvider;
  readonly #name: string;
  readonly #proto: number;
  readonly #port: number;
  constructor(sel: ReadonlySet<number>, np: NamedPortProvider, name: string, proto: number, port: number) {
    this.#sel = sel;
    this.#np = np;
    this.#name = name;
    this.#proto = proto;
    this.#port = port;
  }
  has(x: number): boolean {
    return this.#sel.has(x) && this.#np.forIdentity(x, this.#name).some((p) => p.proto === this.#proto && p.port === this.#port);
  }
  get size(): number {
    return [...this.values()].length;
  }
  *values(): SetIterator<number> {
    for (const x of this.#sel) if (this.has(x)) yield x;
  }
  keys(): SetIterator<number> {
    return this.values();
  }
  *entries(): SetIterator<[number, number]> {
    for (const x of this.values()) yield [x, x];
  }
  [Symbol.iterator](): SetIterator<number> {
    return this.values();
  }
  forEach(cb: (v: number, k: number, s: ReadonlySet<number>) => void): void {
    for (const x of this.values()) cb(x, x, this);
  }
}

export function buildL7Policy(allows: readonly (Contrib & Block)[], k: Block, np: NamedPortProvider): L7Policy | null {
  let parser: L7Policy['parser'] | undefined;
  for (const c of allows) {
    if (!c.l7 || !covers(c, k)) continue;
    if (c.l7.parser !== 'tls') { parser = c.l7.parser; break; }
    parser ??= 'tls';
  }
  if (!parser) return null;
  // Group by selector; a named egress port of a non-wildcard selector is its own group, limited
  // to the identities that name this port.
  const bySel = new Map<string, { sel: CachedSelector; cs: (Contrib & Block)[]; identities: ReadonlySet<number> | 'all' }>();
  for (const c of allows) {
    if (!covers(c, k)) continue;
    const named = c.name !== undefined && !c.sel.wildcard;
    const gk = named ? `${c.sel.key}#${c.name}/${c.proto}/${c.port}` : c.sel.key;
    let g = bySel.get(gk);
    if (!g) {
      const identities = c.sel.wildcard ? 'all' as const : named ? new NamedPortIdentities(c.sel.selections, np, c.name!, c.proto, c.port) : c.sel.selections;
      bySel.set(gk, (g = { sel: c.sel, cs: [], identities }));
    }
    g.cs.push(c);
  }
  const perSelector: L7Policy['perSelector'] = [];
  for (const key of [...bySel.keys()].sort()) {
    const { sel, cs, identities } = bySel.get(key)!;
    const pick = <T>(f: (l: L7Spec) => readonly T[] | undefined): T[] | null => {
      const out: T[] = [];
      for (const c of cs) {
        const v = c.l7 ? f(c.l7) : undefined;
        if (v === undefined) return null; // an L4-only (or other-kind) rule wildcards L7 for this selector
        out.push(...v);
      }
      return dedupeSorted(out);
    };
    const sni = pick((l) => l.serverNames);
    const term = cs.find((c) => c.l7?.terminatingTLS)?.l7?.terminatingTLS;
    const orig = cs.find((c) => c.l7?.originatingTLS)?.l7?.originatingTLS;
    const entry: L7Policy['perSelector'][number] = {
      selector: key === sel.key ? sel.selector.display : `${sel.selector.display} (named port ${key.slice(key.indexOf('#') + 1)})`,
      selectorKey: key,
      identities,
      origins: sortedOrigins(cs),
      ...(sni ? { serverNames: sni } : {}),
      ...(term ? { terminatingTLS: term } : {}),
      ...(orig ? { originatingTLS: orig } : {}),
    };
    if (parser === 'http') entry.http = pick((l) => l.http) as PortRuleHTTP[] | null;
    if (parser === 'dns') entry.dns = pick((l) => l.dns) as PortRuleDNS[] | null;
    if (parser === 'kafka') entry.kafka = pick((l) => l.kafka) as Record<string, string>[] | null;
    if (parser === 'generic') {
      entry.l7proto = cs.find((c) => c.l7?.l7proto)?.l7?.l7proto ?? '';
      entry.l7 = pick((l) => l.l7) as Record<string, string>[] | null;
    }
    perSelector.push(entry);
  }
  return Object.freeze({ parser, perSelector });
}
