/**
 * MapState: the resolved policy of one endpoint, in exactly the shape the datapath looks up.
 * This file is the contract between the policy engine (src/policy) and the datapath writer
 * (src/datapath): both implement `lookupMapState` semantics, the engine in TS, the datapath in C.
 *
 * Key: (direction, remote identity, protocol, destination port with a prefix length).
 *   identity 0  = any remote identity (wildcard lane)
 *   proto 0     = any protocol (then port must be 0 and portPrefixLen 0)
 *   portPrefixLen 16 = exactly `port`; 0 = any port; n = the top n bits of `port` (ranges are
 *   split into such prefixes). For ICMP/ICMPv6 the "port" is the ICMP type (exact, 16 bits... the
 *   type in the low byte; code is never matched).
 *
 * Lookup (per packet of a new connection; replies never reach policy):
 *   1. e1 = longest-prefix match among entries with identity == remote identity
 *      e2 = longest-prefix match among entries with identity == 0
 *      "longest" orders by (proto != 0 ? 8 : 0) + portPrefixLen.
 *   2. if e1 or e2 is a deny  -> DROP, reason 181 (POLICY_DENY)
 *   3. if neither exists      -> default-deny in this direction ? DROP 133 (POLICY_DENIED) : FORWARD
 *   4. else the longer of e1/e2 wins (tie: e1); it is an allow, possibly redirecting to a proxy.
 * The engine guarantees that within one identity lane no allow lies under a covering deny
 * (a more specific allow under a broader deny of the same lane is emitted as a deny), so the two
 * lookups above give "deny beats allow" for every (identity, proto, port).
 */

export type Direction = 'ingress' | 'egress';

export const Proto = { ANY: 0, ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58, SCTP: 132 } as const;

export interface MapStateKey {
  direction: Direction;
  identity: number;
  proto: number;
  port: number;
  portPrefixLen: number;
}

export type Verdict = 'allow' | 'deny';

/** Cilium's policy_match_type numbers (flow.proto / monitor). */
export const PolicyMatchType = {
  none: 0, l3Only: 1, l3l4: 2, l4Only: 3, all: 4, l3Proto: 5, protoOnly: 6,
} as const;

/** Which rule of which file produced an entry: what `policy trace` and flows print. */
export interface RuleOrigin {
  /** `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy` or `NetworkPolicy` */
  kind: string;
  name: string;
  namespace: string;
  file: string;
  line: number;
  /** Rule log value (Cilium `log.value`), copied into flows' policy_log. */
  log?: string;
}

/** The L7 policy attached to a redirect: evaluated by the proxies per request. */
export interface L7Policy {
  /** 'http' | 'dns' | 'tls' (serverNames/TLS contexts only) ... */
  parser: 'http' | 'dns' | 'kafka' | 'generic' | 'tls';
  /**
   * Per remote selector: the list of allowed L7 rules (ORed). An entry with rules `null`
   * means "no L7 restriction for peers of this selector" (wildcarded by an L4-only rule).
   * The proxy allows a request from identity X iff some entry whose `identities` has X allows it.
   */
  perSelector: {
    selector: string; // canonical selector string (for display)
    identities: ReadonlySet<number> | 'all';
    http?: import('../api/types.ts').PortRuleHTTP[] | null;
    dns?: import('../api/types.ts').PortRuleDNS[] | null;
    serverNames?: string[];
    terminatingTLS?: import('../api/types.ts').TLSContext;
    originatingTLS?: import('../api/types.ts').TLSContext;
    origins: RuleOrigin[];
    /** canonical selector key (stable identity of the selector; `selector` is for display) */
    selectorKey?: string;
    kafka?: Record<string, string>[] | null;
    /** generic (proxylib) parser name and rules */
    l7proto?: string;
    l7?: Record<string, string>[] | null;
  }[];
}

export interface MapStateEntry {
  verdict: Verdict;
  /** Non-null: connections matching this entry go to the L7 proxy with this policy. */
  l7: L7Policy | null;
  /** 0 none, 1 SPIRE (authentication.mode required), 2 test-always-fail */
  authType: number;
  /** policy_match_type this entry reports when it decides. */
  matchType: number;
  origins: RuleOrigin[];
}

/** The endpoint's resolved policy. `defaultDeny` per direction decides step 3 of the lookup. */
export interface MapState {
  entries: Map<string, { key: MapStateKey; entry: MapStateEntry }>;
  defaultDeny: { ingress: boolean; egress: boolean };
}

/** What changed between two MapStates: the datapath applies exactly this. */
export interface MapStateDelta {
  upserts: { key: MapStateKey; entry: MapStateEntry }[];
  deletes: MapStateKey[];
  defaultDenyChanged: boolean;
  /** The new default-deny flags, present when `defaultDenyChanged`. */
  defaultDeny?: { ingress: boolean; egress: boolean };
}

export function mapStateKeyString(k: MapStateKey): string {
  return `${k.direction === 'ingress' ? 'i' : 'e'}/${k.identity}/${k.proto}/${k.port}/${k.portPrefixLen}`;
}
