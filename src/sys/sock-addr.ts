/**
 * An IP address of either family as the datagram paths carry it (udp-batch's sockaddrs, the DNS
 * proxy's clients, the conntrack keys of origdst): one interned object per address, holding its
 * text, its family and its network-order bytes. A proxy sees few distinct peers, so a datagram's
 * source costs a map lookup, never a parse or a string; the text⇄bytes conversions (libc's
 * inet_pton/inet_ntop, whose text is the RFC 5952 form Node prints) run once per address.
 */
import koffi from 'koffi';
import { BoundedCache } from '../common/bounded-cache.ts';

const libc = koffi.load('libc.so.6');
const inetPton = libc.func('int inet_pton(int af, const char *src, void *dst)');
const inetNtop = libc.func('void *inet_ntop(int af, const void *src, void *dst, uint32_t size)');

export const AF_INET = 2;
export const AF_INET6 = 10;

export type IpFamily = 4 | 6;

export interface SockAddr {
  readonly ip: string;
  readonly family: IpFamily;
  /** network-order address bytes: 4 (IPv4) or 16 (IPv6) */
  readonly bytes: Buffer;
  /**
   * A small number per interned address (never reused): `key * 65536 + port` names an
   * (address, port) pair as one number below 2^53.
   */
  readonly key: number;
}

const LIMIT = 65536;
let nextKey = 1;
/** IPv4 by its low 30 bits (the first byte checked), IPv6 by its last 48 bits folded to 30 (the interface id: a node's pods share the prefix), checked in full */
const byV4 = new BoundedCache<number, SockAddr>(LIMIT);
const byV6 = new BoundedCache<number, SockAddr>(LIMIT);
const byText = new BoundedCache<string, SockAddr | null>(LIMIT);
const text = Buffer.alloc(64);

function make(family: IpFamily, bytes: Buffer, ip?: string): SockAddr {
  if (ip === undefined) {
    inetNtop(family === 4 ? AF_INET : AF_INET6, bytes, text, text.length);
    ip = text.toString('latin1', 0, text.indexOf(0));
  }
  return { ip, family, bytes, key: nextKey++ };
}

/**
 * The caches' keys stay below 2^30 (V8's small integers): a key from all 32 bits (or 48) was a
 * heap number per datagram from 64.0.0.0 up. So keys are shared, and a hit is checked in full.
 */
function v4Key(b: Buffer, off: number): number {
  return ((b[off]! & 0x3f) << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!;
}
function v6Key(b: Buffer, off: number): number {
  return (((b[off + 10]! << 22) ^ (b[off + 11]! << 14)) + ((b[off + 12]! << 24) | (b[off + 13]! << 16) | (b[off + 14]! << 8) | b[off + 15]!)) & 0x3fffffff;
}

/** The address whose bytes are `b[off ..)` (4 or 16 of them, by family). */
export function sockAddrAt(b: Buffer, off: number, family: IpFamily): SockAddr {
  if (family === 4) {
    const k = v4Key(b, off);
    const had = byV4.get(k);
    if (had && had.bytes[0] === b[off]) return had;
    return byV4.set(k, make(4, Buffer.from(b.subarray(off, off + 4))));
  }
  const k = v6Key(b, off);
  const had = byV6.get(k);
  if (had && had.bytes.compare(b, off, off + 16) === 0) return had;
  return byV6.set(k, make(6, Buffer.from(b.subarray(off, off + 16))));
}

/** The address of IPv4 or IPv6 text, or undefined when it is neither. */
export function sockAddrOf(ip: string): SockAddr | undefined {
  const had = byText.get(ip);
  if (had !== undefined) return had ?? undefined;
  const v6 = ip.includes(':');
  const b = Buffer.alloc(v6 ? 16 : 4);
  let a: SockAddr | null = null;
  if ((inetPton(v6 ? AF_INET6 : AF_INET, ip, b) as number) === 1) {
    // the same object as the datagram path's (one address, one key)
    const fam: IpFamily = v6 ? 6 : 4;
    const inBytes = sockAddrAt(b, 0, fam);
    a = inBytes.ip === ip ? inBytes : make(fam, b, ip);
  }
  byText.set(ip, a);
  return a ?? undefined;
}
