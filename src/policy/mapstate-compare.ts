/**
 * Comparing MapStates and their entries: `entriesEqual` decides what a delta carries (cheap
 * signatures of L7 policies and origins); `mapStatesEqual`/`diffMapStates` compare whole
 * MapStates by content (L7 identity sets by their members), for tests and benchmarks.
 */
import { stableJson } from '../common/stable-json.ts';
import type { L7Policy, MapState, MapStateEntry } from './types.ts';
import { l7Sig, originKey } from './contributions.ts';

export function entriesEqual(a: MapStateEntry, b: MapStateEntry): boolean {
  if (a === b) return true;
  if (a.verdict !== b.verdict || a.authType !== b.authType || a.matchType !== b.matchType) return false;
  if (a.l7 !== b.l7 && l7Sig(a.l7) !== l7Sig(b.l7)) return false;
  if (a.origins.length !== b.origins.length) return false;
  for (let i = 0; i < a.origins.length; i++) if (originKey(a.origins[i]!) !== originKey(b.origins[i]!)) return false;
  return true;
}

/** Structural equality of two MapStates (L7 identity sets compared by content). */
export function mapStatesEqual(a: MapState, b: MapState): boolean {
  return diffMapStates(a, b).length === 0;
}

/** Human-readable differences between two MapStates (for tests). */
export function diffMapStates(a: MapState, b: MapState): string[] {
  const out: string[] = [];
  if (a.defaultDeny.ingress !== b.defaultDeny.ingress || a.defaultDeny.egress !== b.defaultDeny.egress) out.push(`defaultDeny ${JSON.stringify(a.defaultDeny)} != ${JSON.stringify(b.defaultDeny)}`);
  for (const [k, { entry }] of a.entries) {
    const o = b.entries.get(k);
    if (!o) { out.push(`only in first: ${k} ${entry.verdict}`); continue; }
    if (!entriesEqual(entry, o.entry) || l7Content(entry.l7) !== l7Content(o.entry.l7)) out.push(`differs: ${k} ${describeEntry(entry)} != ${describeEntry(o.entry)}`);
  }
  for (const k of b.entries.keys()) if (!a.entries.has(k)) out.push(`only in second: ${k}`);
  return out;
}

function l7Content(p: L7Policy | null): string {
  return p ? stableJson({ ...p, perSelector: p.perSelector.map((e) => ({ ...e, identities: e.identities === 'all' ? 'all' : [...e.identities].sort((x, y) => x - y) })) }) : '';
}

export function describeEntry(e: MapStateEntry): string {
  return `${e.verdict}${e.l7 ? `+l7(${e.l7.parser})` : ''} auth=${e.authType} match=${e.matchType} origins=${e.origins.map((o) => o.name).join(',')}`;
}
