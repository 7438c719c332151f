/**
 * decide(): the reference decision (spec §9 `decide`), computed straight from the rules and the
 * peer's labels — no selector cache, no MapState. It is the oracle the MapState is tested
 * against: lookupMapState(resolve(ep), …) must agree with decide(ep, …) on verdict, drop
 * reason, redirect, authentication, match type and the L7 judgement of any request.
 *
 * Order of evaluation (per direction, new connection):
 *   never mode or a reply ⇒ allow
 *   any matching deny ⇒ DROP 181 (deny beats allow, whatever the specificity)
 *   matching allows ⇒ allow; authentication = strongest explicit mode among them; if an L7 rule
 *     (of any peer) covers the most specific matching port block ⇒ redirect, and a request is
 *     allowed iff some matching allow has no L7 restriction or an L7 rule matching it
 *   else default-deny in this direction ? DROP 133 : allow
 * The implicit allow of the local host (allow-localhost=always) is one more allow; like every
 * allow it loses to a matching deny (the MapState cannot express otherwise: the datapath checks
 * the wildcard lane's deny for every identity).
 */
import type { LabelSet } from '../labels/labels.ts';
import { LabelSource } from '../labels/labels.ts';
import type { L7Spec } from './rules.ts';
import type { Repository } from './repository.ts';
import { ALLOW_LOCALHOST_ORIGIN, NO_NAMED_PORTS, type EndpointInfo, type ResolveOptions } from './resolve-options.ts';
import { type Direction, type RuleOrigin, PolicyMatchType } from './types.ts';
import { portBlockCovers } from './ports.ts';
import { httpRuleMatches, type HTTPRequest } from './l7.ts';
import { queryMatcher } from '../fqdn/matchpattern.ts';

export interface Decision {
  verdict: 'allow' | 'deny' | 'redirect';
  dropReason?: 133 | 181;
  matchType: number;
  /** 0 none, 1 SPIRE (required), 2 test-always-fail */
  authType: number;
  defaultDeny: boolean;
  origins: RuleOrigin[];
  /** for redirects: the L7 parser and the per-request judgement */
  l7?: {
    parser: L7Spec['parser'];
    allowsHTTP(req: HTTPRequest): boolean;
    allowsDNS(qname: string): boolean;
  };
}

interface Atom {
  own: boolean; // selected by a non-wildcard selector (the identity's own lane)
  verdict: 'allow' | 'deny';
  proto: number;
  port: number;
  plen: number;
  l7: L7Spec | null;
  auth: number | undefined;
  origin: RuleOrigin;
}

const specOf = (a: { proto: number; plen: number }) => (a.proto === 0 ? 0 : 8 + a.plen);

function coversBlock(a: Atom, b: { proto: number; port: number; plen: number }): boolean {
  if (a.proto === 0) return true;
  return a.proto === b.proto && portBlockCovers(a.port, a.plen, b.port, b.plen);
}

function classify(own: boolean, b: { proto: number; plen: number }): number {
  if (own) return b.proto === 0 ? PolicyMatchType.l3Only : b.plen === 0 ? PolicyMatchType.l3Proto : PolicyMatchType.l3l4;
  return b.proto === 0 ? PolicyMatchType.all : b.plen === 0 ? PolicyMatchType.protoOnly : PolicyMatchType.l4Only;
}

function mostSpecific(as: Atom[], preferOwn = true): Atom | undefined {
  let best: Atom | undefined;
  for (const a of as) {
    if (!best || specOf(a) > specOf(best) || (preferOwn && specOf(a) === specOf(best) && a.own && !best.own)) best = a;
  }
  return best;
}

export interface Peer {
  identity: number;
  labels: LabelSet;
}

export function decide(
  repo: Repository, ep: EndpointInfo, dir: Direction, peer: Peer, proto: number, port: number,
  opts: ResolveOptions = {}, isReply = false,
): Decision {
  const mode = opts.enforcementMode ?? 'default';
  const none = { matchType: PolicyMatchType.none, authType: 0, origins: [] as RuleOrigin[] };
  if (mode === 'never' || isReply) return { verdict: 'allow', defaultDeny: false, ...none };
  const np = opts.namedPorts ?? NO_NAMED_PORTS;
  const rules = repo.rulesFor(ep.labels, ep.kind ?? 'endpoint');
  const defaultDeny = mode === 'always' || rules.some((r) => r.defaultDeny[dir]);
  const universe: Atom[] = []; // every atom of this endpoint and direction (any peer)
  const mine: Atom[] = []; // atoms whose peer selects this peer
  for (const r of rules) {
    for (const e of r.entries) {
      if (e.direction !== dir) continue;
      for (const p of e.peers) {
        const selects = p.wildcard || (peer.identity !== 0 && p.matches(peer.labels));
        const base = { own: !p.wildcard, verdict: e.verdict, l7: e.l7, auth: e.auth, origin: e.origin };
        // `blocks`: the port blocks for this peer; `all`: for any peer (named egress ports as
        // any pod names them) — the universe that decides whether an L7 rule covers a port.
        const blocks: { proto: number; port: number; plen: number }[] = [];
        const all: { proto: number; port: number; plen: number }[] = [];
        if (e.ports === null) { blocks.push({ proto: 0, port: 0, plen: 0 }); all.push({ proto: 0, port: 0, plen: 0 }); }
        else for (const ps of e.ports) {
          if (ps.name === undefined) { blocks.push(ps); all.push(ps); continue; }
          if (dir === 'ingress') {
            for (const n of ep.namedPorts ?? []) {
              if (n.name === ps.name && n.proto === ps.proto) { blocks.push({ proto: ps.proto, port: n.port, plen: 16 }); all.push({ proto: ps.proto, port: n.port, plen: 16 }); }
            }
            continue;
          }
          for (const n of np.any(ps.name)) if (n.proto === ps.proto) all.push({ proto: ps.proto, port: n.port, plen: 16 });
          const forPeer = p.wildcard ? np.any(ps.name) : selects ? np.forIdentity(peer.identity, ps.name) : [];
          for (const n of forPeer) if (n.proto === ps.proto) blocks.push({ proto: ps.proto, port: n.port, plen: 16 });
        }
        for (const b of all) universe.push({ ...base, ...b });
        if (selects) for (const b of blocks) mine.push({ ...base, ...b });
      }
    }
  }
  if (dir === 'ingress' && (ep.kind ?? 'endpoint') === 'endpoint' && (opts.allowLocalhost ?? 'always') === 'always') {
    const host: Atom = { own: true, verdict: 'allow', proto: 0, port: 0, plen: 0, l7: null, auth: undefined, origin: ALLOW_LOCALHOST_ORIGIN };
    universe.push(host);
    if (peer.identity !== 0 && peer.labels.has(LabelSource.reserved, 'host')) mine.push(host);
  }
  const point = { proto, port, plen: 16 };
  const matching = mine.filter((a) => coversBlock(a, point));
  const denies = matching.filter((a) => a.verdict === 'deny');
  if (denies.length) {
    // The identity's lane decides if a deny covers its most specific key, else the wildcard lane.
    const k1 = mostSpecific(matching.filter((a) => a.own));
    const laneDenies = k1 ? matching.filter((a) => a.verdict === 'deny' && coversBlock(a, k1)) : [];
    const best = laneDenies.length ? mostSpecific(laneDenies)! : mostSpecific(denies.filter((a) => !a.own))!;
    return {
      verdict: 'deny', dropReason: 181, matchType: classify(best.own && laneDenies.length > 0, best), authType: 0, defaultDeny,
      origins: uniqueOrigins(laneDenies.length ? laneDenies : denies.filter((a) => !a.own)),
    };
  }
  const allows = matching;
  if (allows.length === 0) {
    return defaultDeny ? { verdict: 'deny', dropReason: 133, defaultDeny, ...none } : { verdict: 'allow', defaultDeny, ...none };
  }
  const kmin = mostSpecific(allows)!;
  const ownAtK = allows.some((a) => a.own && a.proto === kmin.proto && a.port === kmin.port && a.plen === kmin.plen);
  const matchType = classify(ownAtK, kmin);
  let authType = 0;
  for (const a of allows) if (a.auth !== undefined && a.auth > authType) authType = a.auth;
  let parser: L7Spec['parser'] | undefined;
  for (const a of universe) {
    if (a.verdict !== 'allow' || !a.l7 || !coversBlock(a, kmin)) continue;
    if (a.l7.parser !== 'tls') { parser = a.l7.parser; break; }
    parser ??= 'tls';
  }
  const base = { matchType, authType, defaultDeny, origins: uniqueOrigins(allows) };
  if (!parser) return { verdict: 'allow', ...base };
  return {
    verdict: 'redirect', ...base,
    l7: {
      parser,
      allowsHTTP: (req) => allows.some((a) => !a.l7 || a.l7.http === undefined || a.l7.http.some((r) => httpRuleMatches(r, req))),
      allowsDNS: (q) => allows.some((a) => !a.l7 || a.l7.dns === undefined || a.l7.dns.some((d) => queryMatcher(d)(q))),
    },
  };
}

function uniqueOrigins(as: Atom[]): RuleOrigin[] {
  const m = new Map<string, RuleOrigin>();
  for (const a of as) m.set(`${a.origin.kind}/${a.origin.namespace}/${a.origin.name}@${a.origin.file}:${a.origin.line}`, a.origin);
  return [...m.values()];
}
