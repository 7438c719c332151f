/**
 * The pieces a MapState is folded from (README "How a MapState is built"):
 *   contribution — one (peer selector × port block) of one rule entry selecting the endpoint
 *   block        — (proto, port, prefix length); proto 0 covers everything, else same proto and
 *                  a port prefix containing the key's
 *   fold         — every contribution covering one key: any deny ⇒ deny, else allow with the
 *                  strongest authentication
 * and the stable orderings and signatures entries are compared by.
 */
import { stableJson } from '../common/stable-json.ts';
import type { L7Spec } from './rules.ts';
import type { CachedSelector } from './selectorcache.ts';
import { type L7Policy, type RuleOrigin, PolicyMatchType } from './types.ts';
import { portBlockCovers } from './ports.ts';

export interface Contrib {
  /** unique within one build: memo keys for entries */
  id: number;
  sel: CachedSelector;
  verdict: 'allow' | 'deny';
  proto: number;
  port: number;
  plen: number;
  /** egress named port, resolved per destination identity */
  name?: string;
  l7: L7Spec | null;
  auth: number | undefined;
  origin: RuleOrigin;
  seq: number;
}

export interface Block {
  proto: number;
  port: number;
  plen: number;
}

export const spec = (b: Block) => (b.proto === 0 ? 0 : 8 + b.plen);
export const blockKey = (b: Block) => `${b.proto}/${b.port}/${b.plen}`;

export function covers(c: Block, k: Block): boolean {
  if (c.proto === 0) return true;
  return c.proto === k.proto && portBlockCovers(c.port, c.plen, k.port, k.plen);
}

export function classify(identitySpecific: boolean, b: Block): number {
  if (identitySpecific) return b.proto === 0 ? PolicyMatchType.l3Only : b.plen === 0 ? PolicyMatchType.l3Proto : PolicyMatchType.l3l4;
  return b.proto === 0 ? PolicyMatchType.all : b.plen === 0 ? PolicyMatchType.protoOnly : PolicyMatchType.l4Only;
}

export function originKey(o: RuleOrigin): string {
  return `${o.kind}/${o.namespace}/${o.name}@${o.file}:${o.line}${o.log ? `#${o.log}` : ''}`;
}

export function sortedOrigins(cs: Iterable<{ origin: RuleOrigin }>): RuleOrigin[] {
  const m = new Map<string, RuleOrigin>();
  for (const c of cs) m.set(originKey(c.origin), c.origin);
  return [...m.keys()].sort().map((k) => m.get(k)!);
}

export function dedupeSorted<T>(items: Iterable<T>): T[] {
  const m = new Map<string, T>();
  for (const i of items) m.set(stableJson(i), i);
  return [...m.keys()].sort().map((k) => m.get(k)!);
}


// Signatures for cheap entry comparison in deltas.
const l7Sigs = new WeakMap<L7Policy, string>();
export function l7Sig(p: L7Policy | null): string {
  if (!p) return '';
  let s = l7Sigs.get(p);
  if (s === undefined) {
    s = stableJson({ ...p, perSelector: p.perSelector.map((e) => ({ ...e, identities: e.identities === 'all' ? 'all' : e.selectorKey })) });
    l7Sigs.set(p, s);
  }
  return s;
}

export interface Fold {
  denies: Contrib[];
  bestDeny: Contrib | null;
  allows: Contrib[];
  auth: number;
}

export const EMPTY_FOLD: Fold = Object.freeze({ denies: [], bestDeny: null, allows: [], auth: 0 }) as Fold;

export function fold(contribs: Iterable<Contrib & Block>, k: Block): Fold {
  let f: Fold | undefined;
  for (const c of contribs) {
    if (!covers(c, k)) continue;
    f ??= { denies: [], bestDeny: null, allows: [], auth: 0 };
    if (c.verdict === 'deny') {
      f.denies.push(c);
      if (!f.bestDeny || spec(c) > spec(f.bestDeny)) f.bestDeny = c;
    } else {
      f.allows.push(c);
      if (c.auth !== undefined && c.auth > f.auth) f.auth = c.auth;
    }
  }
  return f ?? EMPTY_FOLD;
}

