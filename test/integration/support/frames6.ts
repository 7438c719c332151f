// IPv6 frames for the datapath's attack tests (the IPv4 builders live in frames.ts): a fixed
// header, extension headers (hop-by-hop, destination options, routing, fragment, or any next
// header value), TCP and ICMPv6 with their pseudo-header checksums.
import { csum } from './frames.ts';
import { parseIPv6 } from '../../../src/datapath/linux/codec.ts';

export const ETH_IPV6 = 0x86dd;
export const NH = { HOP: 0, TCP: 6, UDP: 17, ROUTING: 43, FRAGMENT: 44, AUTH: 51, ICMPV6: 58, NONE: 59, DEST: 60 } as const;

export function ip6(s: string): Buffer {
  const b = parseIPv6(s);
  if (!b) throw new Error(`not an IPv6 address: ${s}`);
  return b;
}

function pseudo6(src: string, dst: string, nh: number, len: number): Buffer {
  const b = Buffer.alloc(40);
  ip6(src).copy(b, 0);
  ip6(dst).copy(b, 16);
  b.writeUInt32BE(len, 32);
  b[39] = nh;
  return b;
}

export function tcp6(o: { src: string; dst: string; sport: number; dport: number; flags: number; seq?: number }, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  h[12] = 5 << 4;
  h[13] = o.flags;
  h.writeUInt16BE(64240, 14);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(csum(pseudo6(o.src, o.dst, NH.TCP, seg.length), seg), 16);
  return seg;
}

export function icmp6(o: { src: string; dst: string; type: number; code?: number; rest?: Buffer }, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8);
  h[0] = o.type;
  h[1] = o.code ?? 0;
  (o.rest ?? Buffer.alloc(4)).copy(h, 4);
  const m = Buffer.concat([h, payload]);
  m.writeUInt16BE(csum(pseudo6(o.src, o.dst, NH.ICMPV6, m.length), m), 2);
  return m;
}

/** An extension header of `len8` 8-byte units (PadN inside for options; zeros otherwise). */
export function ext(next: number, len8 = 1, fill?: (b: Buffer) => void): Buffer {
  const b = Buffer.alloc(len8 * 8);
  b[0] = next;
  b[1] = len8 - 1;
  if (fill) fill(b);
  else { b[2] = 1; b[3] = len8 * 8 - 4; } // PadN over the rest (valid for hop-by-hop / destination options)
  return b;
}

/** A routing header (type 4, segment routing) with `segmentsLeft`. */
export function routing(next: number, segmentsLeft: number): Buffer {
  return ext(next, 3, (b) => { b[2] = 4; b[3] = segmentsLeft; b[4] = 1; });
}

/** A fragment header: offset in bytes (multiple of 8), more-fragments flag, 32-bit id. */
export function fragment(next: number, offset: number, more: boolean, id: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = next;
  b.writeUInt16BE((offset & 0xfff8) | (more ? 1 : 0), 2);
  b.writeUInt32BE(id >>> 0, 4);
  return b;
}

/** The IPv6 header (first next header `nh`) over `rest` (extension headers + upper layer). */
export function ipv6(o: { src: string; dst: string; nh: number; hopLimit?: number }, rest: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(rest.length, 4);
  h[6] = o.nh;
  h[7] = o.hopLimit ?? 64;
  ip6(o.src).copy(h, 8);
  ip6(o.dst).copy(h, 24);
  return Buffer.concat([h, rest]);
}
