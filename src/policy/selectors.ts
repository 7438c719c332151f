/**
 * Peer selectors: what the remote side of a rule selects, as a predicate over identity labels
 * with a canonical key (the selector cache shares one entry per key).
 *
 *   label  — an endpoint selector after namespace injection (fromEndpoints, entities, services…)
 *   cidr   — a prefix with excepts; matches only identities that carry a `cidr:` label inside
 *            the prefix (or, for /0, a world label) and none inside an except. Pod, node and host
 *            identities carry no such label, so CIDR rules never select them (spec §2.6).
 *   fqdn   — identities carrying the selector's `fqdn:` label (see identity/labels.ts)
 *   wildcard — every identity; resolves to identity 0 in the MapState (the "any" lane)
 */
import type { FQDNSelector } from '../api/types.ts';
import { LabelSource, type LabelSet } from '../labels/labels.ts';
import { compileRequirements, type CompiledSelector, type Requirement } from '../labels/selector.ts';
import { type Prefix, prefixContains } from '../ipcache/prefix.ts';
import { fqdnSelectorLabel, parseCidrLabelKey } from '../identity/labels.ts';

export interface PeerSelector {
  readonly kind: 'label' | 'cidr' | 'fqdn' | 'wildcard';
  readonly key: string;
  /** Short human form for trace output and L7 policy display. */
  readonly display: string;
  /** Selects every identity: the MapState uses identity 0 for it. */
  readonly wildcard: boolean;
  matches(labels: LabelSet): boolean;
  /** cidr: the prefix and its excepts (the ipcache needs identities for all of them) */
  readonly prefix?: Prefix;
  readonly except?: readonly Prefix[];
  /** fqdn: the selector as written */
  readonly fqdn?: FQDNSelector;
  /** label: the compiled selector */
  readonly compiled?: CompiledSelector;
}

export const WILDCARD_PEER: PeerSelector = Object.freeze({
  kind: 'wildcard', key: 'all', display: 'all', wildcard: true, matches: () => true,
});

export function labelPeer(reqs: Iterable<Requirement> | CompiledSelector): PeerSelector {
  const compiled = 'matches' in reqs ? reqs : compileRequirements(reqs);
  return Object.freeze({
    kind: 'label', key: `ls:${compiled.key}`, display: compiled.key, wildcard: false,
    matches: compiled.matches, compiled,
  });
}

// Parsed `cidr:` labels per label set (label sets are immutable and shared by identities).
const cidrCache = new WeakMap<LabelSet, Prefix[]>();
function cidrPrefixes(ls: LabelSet): Prefix[] {
  let out = cidrCache.get(ls);
  if (!out) {
    out = [];
    for (const l of ls.labels) {
      if (l.source !== LabelSource.cidr) continue;
      const p = parseCidrLabelKey(l.key);
      if (p) out.push(p);
    }
    cidrCache.set(ls, out);
  }
  return out;
}

function worldFamily(ls: LabelSet): 0 | 4 | 6 | undefined {
  let fam: 0 | 4 | 6 | undefined;
  for (const l of ls.labels) {
    if (l.source !== LabelSource.reserved) continue;
    if (l.key === 'world') fam ??= 0;
    else if (l.key === 'world-ipv4') fam = 4;
    else if (l.key === 'world-ipv6') fam = 6;
  }
  return fam;
}

export function cidrPeer(prefix: Prefix, except: readonly Prefix[] = []): PeerSelector {
  const ex = [...except].sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
  const key = `cidr:${prefix.text}${ex.map((e) => `!${e.text}`).join('')}`;
  const excluded = (cidrs: Prefix[]) => ex.length > 0 && cidrs.some((c) => ex.some((e) => prefixContains(e, c)));
  const matches = prefix.len === 0
    ? (ls: LabelSet) => {
        // `/0` is the world of one family: world labels, and CIDR identities of that family.
        const fam = worldFamily(ls);
        if (fam === undefined) return false;
        if (fam !== 0 && fam !== prefix.family) return false;
        const cidrs = cidrPrefixes(ls);
        if (cidrs.length > 0 && !cidrs.some((c) => c.family === prefix.family)) return false;
        return !excluded(cidrs);
      }
    : (ls: LabelSet) => {
        const cidrs = cidrPrefixes(ls);
        if (cidrs.length === 0) return false;
        return cidrs.some((c) => prefixContains(prefix, c)) && !excluded(cidrs);
      };
  return Object.freeze({
    kind: 'cidr', key, display: `${prefix.text}${ex.length ? ` except ${ex.map((e) => e.text).join(',')}` : ''}`,
    wildcard: false, matches, prefix, except: Object.freeze(ex),
  });
}

export function fqdnPeer(sel: FQDNSelector): PeerSelector {
  const label = fqdnSelectorLabel(sel);
  const what = sel.matchName !== undefined ? 'matchName' : 'matchPattern';
  return Object.freeze({
    kind: 'fqdn', key: `fqdn:${label.key}`, display: `${what}: ${label.key}`, wildcard: false,
    matches: (ls: LabelSet) => ls.has(LabelSource.fqdn, label.key),
    fqdn: Object.freeze({ [what]: label.key }),
  });
}

/** `reserved:host`: the implicit allow-localhost rule's peer. */
export const HOST_PEER: PeerSelector = labelPeer([{ source: LabelSource.reserved, key: 'host', operator: 'Exists', values: [] }]);
