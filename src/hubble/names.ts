/**
 * Hubble's vocabularies: monitor event types, datapath trace points, drop reason strings,
 * reserved identities, policy match types, DNS response codes (spec/hubble.md §1.3–1.4). Shared by the flow builder,
 * filters, printers and the `observe` CLI.
 */

/** Monitor event type numbers (pkg/monitor/api/types.go) and their `--type` names. */
export const MONITOR_TYPES: Readonly<Record<string, number>> = {
  drop: 1, debug: 2, capture: 3, trace: 4, 'policy-verdict': 5, 'recorder': 6, 'trace-sock': 7, l7: 129, agent: 130,
};

/** Datapath trace sub-type numbering (0 = to-endpoint) → CLI name. */
export const TRACE_POINT_NAMES: readonly string[] = [
  'to-endpoint', 'to-proxy', 'to-host', 'to-stack', 'to-overlay', 'from-endpoint', 'from-proxy',
  'from-host', 'from-stack', 'from-overlay', 'from-network', 'to-network', 'from-crypto', 'to-crypto',
];

/** Datapath trace sub-type → flow.TraceObservationPoint (0 becomes TO_ENDPOINT = 101). */
export function traceObservationPoint(subType: number): number {
  return subType === 0 ? 101 : subType;
}

/** Human drop strings (pkg/monitor/api/drop.go), printed in the compact TYPE column. */
export const DROP_REASON_TEXT: Readonly<Record<number, string>> = {
  0: 'Success', 2: 'Invalid packet', 3: 'Interface', 4: 'Interface Decrypted',
  5: 'LB, sock cgroup: No backend slot entry found', 6: 'LB, sock cgroup: No backend entry found',
  7: 'LB, sock cgroup: Reverse entry update failed', 8: 'LB, sock cgroup: Reverse entry stale', 9: 'Fragmented packet',
  10: 'Fragmented packet entry update failed', 11: 'Missed tail call to custom program',
  130: 'Invalid source mac', 131: 'Invalid destination mac', 132: 'Invalid source ip', 133: 'Policy denied',
  134: 'Invalid packet', 135: 'CT: Truncated or invalid header', 136: 'Fragmentation needed',
  137: 'CT: Unknown L4 protocol', 138: "CT: Can't create entry from packet", 139: 'Unsupported L3 protocol',
  140: 'Missed tail call', 141: 'Error writing to packet', 142: 'Unknown L4 protocol', 143: 'Unknown ICMPv4 code',
  144: 'Unknown ICMPv4 type', 145: 'Unknown ICMPv6 code', 146: 'Unknown ICMPv6 type', 147: 'Error retrieving tunnel key',
  148: 'Error retrieving tunnel options', 149: 'Invalid Geneve option', 150: 'Unknown L3 target address', 151: 'Stale or unroutable IP', 152: 'No matching local container found', 153: 'Error while correcting L3 checksum',
  154: 'Error while correcting L4 checksum', 155: 'CT: Map insertion failed', 156: 'Invalid IPv6 extension header',
  157: 'IP fragmentation not supported', 158: 'Service backend not found',
  160: 'No tunnel/encapsulation endpoint (datapath BUG!)', 161: 'NAT 46/64 not enabled',
  162: 'Reached EDT rate-limiting drop horizon', 163: 'Unknown connection tracking state', 164: 'Local host is unreachable',
  165: 'No configuration available to perform policy decision',
  166: 'Unsupported L2 protocol', 167: 'No mapping for NAT masquerade', 168: 'Unsupported protocol for NAT masquerade',
  169: 'FIB lookup failed', 170: 'Encapsulation traffic is prohibited', 171: 'Invalid identity', 172: 'Unknown sender',
  173: 'NAT not needed', 174: 'Is a ClusterIP', 175: 'First logical datagram fragment not found',
  176: 'Forbidden ICMPv6 message', 177: 'Denied by LB src range check', 178: 'Socket lookup failed',
  179: 'Socket assign failed', 180: 'Proxy redirection not supported for protocol',
  181: 'Policy denied by denylist', 182: 'VLAN traffic disallowed by VLAN filter', 183: 'Incorrect VNI from VTEP',
  184: 'Failed to update or lookup TC buffer', 185: 'No SID was found for the IP address',
  186: 'SRv6 state was removed during tail call', 187: 'L3 translation from IPv4 to IPv6 failed (NAT46)',
  188: 'L3 translation from IPv6 to IPv4 failed (NAT64)', 189: 'Authentication required',
  190: 'No conntrack map found', 191: 'No nat map found', 192: 'Invalid ClusterID', 193: 'Unsupported packet protocol for DSR encapsulation', 194: 'No egress gateway found',
  195: 'Traffic is unencrypted', 196: 'TTL exceeded', 197: 'No node ID found', 198: 'Rate limited', 199: 'IGMP handled', 200: 'IGMP subscribed', 201: 'Multicast handled',
  202: 'Host datapath not ready', 203: 'Endpoint policy program not available', 204: 'No Egress IP configured',
  205: 'Punt to proxy',
};

export function dropReasonText(code: number): string {
  return DROP_REASON_TEXT[code] ?? `Unknown drop reason ${code}`;
}

/** Reserved security identities (pkg/identity/numericidentity.go). */
export const RESERVED_IDENTITIES: readonly string[] = [
  'unknown', 'host', 'world', 'unmanaged', 'health', 'init', 'remote-node', 'kube-apiserver', 'ingress',
  'world-ipv4', 'world-ipv6',
];

export function reservedIdentityName(id: number): string | undefined {
  return id >= 0 && id < RESERVED_IDENTITIES.length ? RESERVED_IDENTITIES[id] : undefined;
}

/** Reserved identity name (`world`, `reserved:world`) or decimal string → number; undefined if neither. */
export function parseIdentity(text: string): number | undefined {
  const name = text.startsWith('reserved:') ? text.slice(9) : text;
  const i = RESERVED_IDENTITIES.indexOf(name);
  if (i >= 0) return i;
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n <= 0xffffffff) return n;
  }
  return undefined;
}

/** flow.policy_match_type → CLI string (pkg/monitor/api PolicyMatchType.String). */
export function policyMatchTypeName(t: number): string {
  return ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only'][t] ?? 'unknown';
}

/** gopacket's ICMPv4 TypeCode strings. */
const ICMP4_TYPES: Record<number, [string, Record<number, string>?]> = {
  0: ['EchoReply'],
  3: ['DestinationUnreachable', {
    0: 'Net', 1: 'Host', 2: 'Protocol', 3: 'Port', 4: 'FragmentationNeeded', 5: 'SourceRoutingFailed',
    6: 'NetUnknown', 7: 'HostUnknown', 8: 'SourceIsolated', 9: 'NetAdminProhibited', 10: 'HostAdminProhibited',
    11: 'NetTOS', 12: 'HostTOS', 13: 'CommAdminProhibited', 14: 'HostPrecedence', 15: 'PrecedenceCutoff',
  }],
  4: ['SourceQuench'],
  5: ['Redirect', { 0: 'Network', 1: 'Host', 2: 'TOS+Network', 3: 'TOS+Host' }],
  8: ['EchoRequest'],
  9: ['RouterAdvertisement'],
  10: ['RouterSolicitation'],
  11: ['TimeExceeded', { 0: 'TTLExceeded', 1: 'FragmentReassemblyTimeExceeded' }],
  12: ['ParameterProblem', { 0: 'PointerIndicatesError', 1: 'MissingOption', 2: 'BadLength' }],
  13: ['TimestampRequest'], 14: ['TimestampReply'], 15: ['InfoRequest'], 16: ['InfoReply'],
  17: ['AddressMaskRequest'], 18: ['AddressMaskReply'],
};

const ICMP6_TYPES: Record<number, [string, Record<number, string>?]> = {
  1: ['DestinationUnreachable', {
    0: 'NoRouteToDst', 1: 'AdminProhibited', 2: 'BeyondScopeOfSrc', 3: 'AddressUnreachable', 4: 'PortUnreachable',
    5: 'SrcAddressFailedPolicy', 6: 'RejectRouteToDst',
  }],
  2: ['PacketTooBig'],
  3: ['TimeExceeded', { 0: 'HopLimitExceeded', 1: 'FragmentReassemblyTimeExceeded' }],
  4: ['ParameterProblem', { 0: 'ErroneousHeaderField', 1: 'UnrecognizedNextHeader', 2: 'UnrecognizedIPv6Option' }],
  128: ['EchoRequest'], 129: ['EchoReply'], 133: ['RouterSolicitation'], 134: ['RouterAdvertisement'],
  135: ['NeighborSolicitation'], 136: ['NeighborAdvertisement'], 137: ['Redirect'],
};

function typeCode(table: Record<number, [string, Record<number, string>?]>, type: number, code: number): string {
  const info = table[type];
  if (!info) return `${type}(${code})`;
  const [name, codes] = info;
  if (!codes) return code === 0 ? name : `${name}(Code: ${code})`;
  const c = codes[code];
  return c ? `${name}(${c})` : `${name}(Code: ${code})`;
}

export function icmpv4TypeCode(type: number, code: number): string {
  return typeCode(ICMP4_TYPES, type, code);
}

export function icmpv6TypeCode(type: number, code: number): string {
  return typeCode(ICMP6_TYPES, type, code);
}

/** DNS response code names as Hubble prints them (flow summaries, `hubble_dns_responses_total{rcode}`). */
export const DNS_RCODE_NAMES: Readonly<Record<number, string>> = {
  0: 'No Error', 1: 'Format Error', 2: 'Server Failure', 3: 'Non-Existent Domain', 4: 'Not Implemented', 5: 'Query Refused',
  6: 'Name Exists when it should not', 7: 'RR Set Exists when it should not', 8: 'RR Set that should exist does not',
  9: 'Server Not Authoritative for zone', 10: 'Name not contained in zone', 11: 'DSO-TYPE Not Implemented',
  16: 'Bad OPT Version', 17: 'Key not recognized', 18: 'Signature out of time window', 19: 'Bad TKEY Mode',
  20: 'Duplicate key name', 21: 'Algorithm not supported', 22: 'Bad Truncation', 23: 'Bad/missing Server Cookie',
};
