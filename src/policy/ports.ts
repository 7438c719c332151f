/**
 * L4 vocabulary: protocol numbers, port ranges as (port, prefix length) pairs the datapath's LPM
 * key understands, named ports, and ICMP type names (IANA).
 */
import { Proto } from './types.ts';

export const PROTO_BY_NAME: Readonly<Record<string, number>> = Object.freeze({
  TCP: Proto.TCP, UDP: Proto.UDP, SCTP: Proto.SCTP, ICMP: Proto.ICMP, ICMPV6: Proto.ICMPV6, VRRP: 112, IGMP: 2,
});

export const PROTO_NAME: Readonly<Record<number, string>> = Object.freeze({
  0: 'ANY', 1: 'ICMP', 2: 'IGMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 112: 'VRRP', 132: 'SCTP',
});

/** `ANY` (or no protocol) means these three; it never covers ICMP (spec §3.2). */
export const ANY_PROTOCOLS: readonly number[] = Object.freeze([Proto.TCP, Proto.UDP, Proto.SCTP]);

/**
 * IANA service name syntax (RFC 6335 §5.1): 1–15 characters, letters, digits and hyphens, at
 * least one letter, no leading, trailing or double hyphen. `0x10` is therefore a name.
 */
export function isNamedPort(s: string): boolean {
  return s.length >= 1 && s.length <= 15 && /^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$/.test(s) && /[A-Za-z]/.test(s);
}

/**
 * Splits the inclusive range [lo, hi] into the fewest (port, prefixLen) blocks, prefixLen 16 being
 * one port. The whole range 0–65535 is (0, 0).
 */
export function rangeToPrefixes(lo: number, hi: number): { port: number; plen: number }[] {
  const out: { port: number; plen: number }[] = [];
  let cur = lo;
  while (cur <= hi) {
    // Largest aligned block starting at cur that stays within hi.
    let size = cur === 0 ? 0x10000 : cur & -cur;
    while (cur + size - 1 > hi) size >>= 1;
    out.push({ port: cur, plen: 16 - Math.log2(size) });
    cur += size;
  }
  return out;
}

/** Whether the block (aPort, aLen) contains the block (bPort, bLen). */
export function portBlockCovers(aPort: number, aLen: number, bPort: number, bLen: number): boolean {
  if (aLen > bLen) return false;
  if (aLen === 0) return true;
  const shift = 16 - aLen;
  return aPort >>> shift === bPort >>> shift;
}

export function portBlockRange(port: number, plen: number): [number, number] {
  const size = 1 << (16 - plen);
  return [port, port + size - 1];
}

/** ICMP type names (spec §2.10). */
export const ICMPV4_TYPES: Readonly<Record<string, number>> = Object.freeze({
  EchoReply: 0, DestinationUnreachable: 3, Redirect: 5, Echo: 8, EchoRequest: 8, RouterAdvertisement: 9,
  RouterSelection: 10, TimeExceeded: 11, ParameterProblem: 12, Timestamp: 13, TimestampReply: 14,
  Photuris: 40, ExtendedEchoRequest: 42, ExtendedEchoReply: 43,
});

export const ICMPV6_TYPES: Readonly<Record<string, number>> = Object.freeze({
  DestinationUnreachable: 1, PacketTooBig: 2, TimeExceeded: 3, ParameterProblem: 4, EchoRequest: 128,
  EchoReply: 129, MulticastListenerQuery: 130, MulticastListenerReport: 131, MulticastListenerDone: 132,
  RouterSolicitation: 133, RouterAdvertisement: 134, NeighborSolicitation: 135, NeighborAdvertisement: 136,
  RedirectMessage: 137, RouterRenumbering: 138, ICMPNodeInformationQuery: 139, ICMPNodeInformationResponse: 140,
  InverseNeighborDiscoverySolicitation: 141, InverseNeighborDiscoveryAdvertisement: 142,
  HomeAgentAddressDiscoveryRequest: 144, HomeAgentAddressDiscoveryReply: 145, MobilePrefixSolicitation: 146,
  MobilePrefixAdvertisement: 147, DuplicateAddressRequestCodeSuffix: 157, DuplicateAddressConfirmationCodeSuffix: 158,
  ExtendedEchoRequest: 160, ExtendedEchoReply: 161,
});

/** ICMP type from a number (0–255), a numeric string or a CamelCase name; undefined if invalid. */
export function parseICMPType(family: 'IPv4' | 'IPv6', type: number | string): number | undefined {
  if (typeof type === 'number') return Number.isInteger(type) && type >= 0 && type <= 255 ? type : undefined;
  if (/^\d+$/.test(type)) {
    const n = Number(type);
    return n <= 255 ? n : undefined;
  }
  const table = family === 'IPv6' ? ICMPV6_TYPES : ICMPV4_TYPES;
  return Object.hasOwn(table, type) ? table[type] : undefined;
}
