/**
 * lookupMapState: the datapath's policy lookup (types.ts contract) in TypeScript. The C side
 * (bpf/lib/policy.h) must give the same answer for every key; unit tests pin this one.
 */
import { type Direction, type MapState, type MapStateEntry, type MapStateKey, PolicyMatchType, mapStateKeyString } from './types.ts';

export const DropReason = { POLICY_DENIED: 133, POLICY_DENY: 181, AUTH_REQUIRED: 189 } as const;

export interface LookupResult {
  /** forward: allowed, no proxy; redirect: allowed via the L7 proxy (entry.l7); drop: see dropReason */
  verdict: 'forward' | 'redirect' | 'drop';
  /** 133 POLICY_DENIED (default deny, no entry) or 181 POLICY_DENY (deny entry) */
  dropReason?: 133 | 181;
  matchType: number;
  /** the entry that decided, if any */
  key?: MapStateKey;
  entry?: MapStateEntry;
  /** 0 none; 1 SPIRE; 2 test-always-fail: the datapath drops with 189 until authenticated */
  authType: number;
}

function lpm(ms: MapState, dir: Direction, identity: number, proto: number, port: number): { key: MapStateKey; entry: MapStateEntry; len: number } | undefined {
  const probe: MapStateKey = { direction: dir, identity, proto, port, portPrefixLen: 16 };
  if (proto !== 0) {
    for (let plen = 16; plen >= 0; plen--) {
      probe.portPrefixLen = plen;
      probe.port = plen === 0 ? 0 : (port >>> (16 - plen)) << (16 - plen);
      const hit = ms.entries.get(mapStateKeyString(probe));
      if (hit) return { ...hit, len: 8 + plen };
    }
  }
  probe.proto = 0;
  probe.port = 0;
  probe.portPrefixLen = 0;
  const hit = ms.entries.get(mapStateKeyString(probe));
  return hit ? { ...hit, len: 0 } : undefined;
}

/**
 * Looks up (direction, remote identity, protocol, port) — for ICMP the port is the ICMP type —
 * exactly as the contract in types.ts describes: longest match in the identity's lane and in
 * the wildcard lane; a deny in either drops (181); neither ⇒ default deny decides (133 or
 * forward); else the longer wins, the identity's lane on a tie.
 */
export function lookupMapState(ms: MapState, dir: Direction, identity: number, proto: number, port: number): LookupResult {
  const e1 = identity !== 0 ? lpm(ms, dir, identity, proto, port) : undefined;
  const e2 = lpm(ms, dir, 0, proto, port);
  const deny = e1?.entry.verdict === 'deny' ? e1 : e2?.entry.verdict === 'deny' ? e2 : undefined;
  if (deny) return { verdict: 'drop', dropReason: 181, matchType: deny.entry.matchType, key: deny.key, entry: deny.entry, authType: 0 };
  if (!e1 && !e2) {
    return ms.defaultDeny[dir]
      ? { verdict: 'drop', dropReason: 133, matchType: PolicyMatchType.none, authType: 0 }
      : { verdict: 'forward', matchType: PolicyMatchType.none, authType: 0 };
  }
  const win = e1 && (!e2 || e1.len >= e2.len) ? e1 : e2!;
  return {
    verdict: win.entry.l7 ? 'redirect' : 'forward', matchType: win.entry.matchType, key: win.key, entry: win.entry, authType: win.entry.authType,
  };
}

/** A lookup result as an endpoint in policy audit mode sees it. */
export interface AuditedResult extends LookupResult {
  /** the policy would have dropped the packet (dropReason, or 189 for authType); audit mode let it pass */
  audited?: true;
  /** what enforcement would have dropped it with */
  auditedReason?: 133 | 181 | 189;
}

/**
 * Cilium's policy audit mode (bpf/lib/policy.h policy_audit): for an endpoint in audit mode every
 * L3/L4 drop — default deny 133, deny rule 181, authentication required 189 — becomes a pass
 * marked audited. Explicit deny rules are audited too (Cilium's audit covers every policy error);
 * a redirect stays a redirect, so L7 rules are still enforced by the proxy (Cilium audits L3/L4
 * only). `auditMode` is the mode of the endpoint whose policy decided, never of its peer.
 */
export function auditVerdict(r: LookupResult, auditMode: boolean): AuditedResult {
  if (!auditMode) return r;
  if (r.verdict === 'drop') {
    const { dropReason, ...rest } = r;
    return { ...rest, verdict: 'forward', audited: true, auditedReason: dropReason ?? 133 };
  }
  if (r.authType !== 0) return { ...r, audited: true, auditedReason: 189 };
  return r;
}
