/**
 * The DNS proxy's per-query decision as a lookup: policy/l7.ts decideDNS with the name matching
 * cached. An L7Policy is frozen and replaced when the policy changes, so which of its entries
 * allow a name is fixed for its lifetime: that is cached per (policy, name), and a query then
 * only asks whether an allowing entry selects the peer's identity. The entries' identity sets
 * stay live (the selector cache updates them in place), so the identity part is never cached:
 * a peer gaining or losing a selector is seen by the next query.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import type { L7Policy, MapState } from '../../policy/types.ts';
import { lookupMapState, type LookupResult } from '../../policy/lookup.ts';
import { queryMatcher } from '../../fqdn/matchpattern.ts';

/** Distinct names remembered per policy before that policy's cache starts over. */
const MAX_NAMES = 4096;

/** The same verdict as `decideDNS(policy, remoteIdentity, qname).allowed`. */
export type DNSDecider = (policy: L7Policy, remoteIdentity: number, qname: string) => boolean;

export function createDNSDecider(): DNSDecider {
  /** per policy: name → 1 where perSelector[i] allows the name (whatever the peer) */
  const byPolicy = new WeakMap<L7Policy, BoundedCache<string, Uint8Array>>();
  function allowing(policy: L7Policy, qname: string): Uint8Array {
    let names = byPolicy.get(policy);
    if (!names) {
      names = new BoundedCache(MAX_NAMES);
      byPolicy.set(policy, names);
    }
    let m = names.get(qname);
    if (m) return m;
    const entries = policy.perSelector;
    m = new Uint8Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const rules = entries[i]!.dns;
      if (rules === null || rules === undefined) { m[i] = 1; continue; }
      for (const r of rules) if (queryMatcher(r)(qname)) { m[i] = 1; break; }
    }
    return names.set(qname, m);
  }
  return (policy, remoteIdentity, qname) => {
    const m = allowing(policy, qname);
    const entries = policy.perSelector;
    for (let i = 0; i < m.length; i++) {
      if (m[i] === 0) continue;
      const ids = entries[i]!.identities;
      if (ids === 'all' || ids.has(remoteIdentity)) return true;
    }
    return false;
  };
}

/**
 * Whether an endpoint's query for `qname` to `remoteIdentity` (a DNS server) on proto/port may go
 * out: the endpoint's egress MapState decides first (dropped: no; allowed without L7 rules: yes;
 * redirected to another parser: no), then the DNS rules of the entry. No MapState: no.
 */
export type DNSQueryJudge = (ms: MapState | undefined, remoteIdentity: number, proto: number, port: number, qname: string) => boolean;

export function createDNSQueryJudge(opts: { generation?: (ms: MapState) => number } = {}): DNSQueryJudge {
  const dnsAllowed = createDNSDecider();
  // `generation` (the proxy process: a MapState changes only through the feed's applyDelta, which
  // moves its generation): the MapState's answer per (identity, proto, port) is kept with the
  // MapState for one generation. Looked up each time it was up to 36 key strings and map probes
  // per query (the wildcard lane has no entry for the port: every prefix length is tried), ~8 % of
  // the proxy process's CPU in bench/dns. The agent's own MapStates change in place unnumbered:
  // looked up every time there.
  const gen = opts.generation;
  const memo = gen ? new WeakMap<MapState, { gen: number; byKey: BoundedCache<number, LookupResult> }>() : undefined;
  const lookup = (ms: MapState, remoteIdentity: number, proto: number, port: number): LookupResult => {
    if (!memo) return lookupMapState(ms, 'egress', remoteIdentity, proto, port);
    const g = gen!(ms);
    let m = memo.get(ms);
    if (!m || m.gen !== g) { m = { gen: g, byKey: new BoundedCache(MAX_NAMES) }; memo.set(ms, m); }
    // identity < 2^32, proto < 2^8, port < 2^16: one exact number below 2^56 (doubles hold 2^53; identities stay < 2^29)
    const k = (remoteIdentity * 256 + proto) * 65536 + port;
    return m.byKey.get(k) ?? m.byKey.set(k, lookupMapState(ms, 'egress', remoteIdentity, proto, port));
  };
  return (ms, remoteIdentity, proto, port, qname) => {
    if (!ms) return false;
    const r = lookup(ms, remoteIdentity, proto, port);
    if (r.verdict === 'drop') return false;
    const l7 = r.entry?.l7;
    if (r.verdict === 'forward' || !l7) return true;
    if (l7.parser !== 'dns') return false;
    return dnsAllowed(l7, remoteIdentity, qname);
  };
}
