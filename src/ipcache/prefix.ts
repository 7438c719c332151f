/**
 * IPv4/IPv6 addresses and prefixes as numbers (IPv4: uint32 in a number, IPv6: bigint), with
 * canonical text forms. Pure, no I/O; shared by the ipcache, CIDR labels and CIDR selectors.
 */

export type Family = 4 | 6;

export interface Prefix {
  readonly family: Family;
  /** Network address with host bits cleared: number for IPv4, bigint for IPv6. */
  readonly addr: number | bigint;
  readonly len: number;
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  readonly text: string;
}

export function parseIPv4(s: string): number | undefined {
  // by character codes: every ipcache write of a remote pod parses its address (300,000 after a
  // restart at 10,000 nodes), and a split and four regular expressions each were most of it
  let n = 0, v = 0, digits = 0, dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (!digits || ++dots > 3) return undefined;
      n = n * 256 + v; v = 0; digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits === 1 && v === 0)) return undefined; // four digits, or a leading zero
      v = v * 10 + c - 48; digits++;
      if (v > 255) return undefined;
    } else return undefined;
  }
  if (!digits || dots !== 3) return undefined;
  return (n * 256 + v) >>> 0;
}

/** The host prefix of an address: /32, or /128 for IPv6. */
export const hostPrefix = (ip: string): string => `${ip}/${ip.includes(':') ? 128 : 32}`;

/**
 * `a.b.c.d/32` (a remote pod's host prefix, the common case) as its address number, without
 * parsePrefix's mask, text and freeze; undefined for any other form (including a non-canonical
 * address), which then takes parsePrefix.
 */
export function parseHostPrefix4(text: string): number | undefined {
  const n = text.length;
  if (n < 10 || text.charCodeAt(n - 3) !== 47 || text.charCodeAt(n - 2) !== 51 || text.charCodeAt(n - 1) !== 50) return undefined;
  return parseIPv4(text.slice(0, n - 3));
}

export function parseIPv6(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  let text = s;
  // Embedded IPv4 in the last 32 bits.
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.') && lastColon >= 0) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = [v4 >>> 16, v4 & 0xffff];
    const head = text.slice(0, lastColon + 1);
    text = head.endsWith('::') ? head : head.slice(0, -1);
  }
  const dbl = text.indexOf('::');
  if (dbl >= 0 && text.indexOf('::', dbl + 1) >= 0) return undefined;
  const parseGroups = (t: string): number[] | undefined => {
    if (t === '') return [];
    const out: number[] = [];
    for (const g of t.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (dbl >= 0) {
    const head = parseGroups(text.slice(0, dbl));
    const rest = parseGroups(text.slice(dbl + 2));
    if (!head || !rest) return undefined;
    const fill = 8 - head.length - rest.length - tail.length;
    if (fill < 1) return undefined;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest, ...tail];
  } else {
    const g = parseGroups(text);
    if (!g) return undefined;
    groups = [...g, ...tail];
  }
  if (groups.length !== 8) return undefined;
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(g);
  return n;
}

/**
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d): never a pod's, a service's or an FQDN identity's
 * address (the datapath drops such packets, 134), so no one may name an IPv4 host through one.
 */
export function isIPv4Mapped(s: string): boolean {
  const a = s.includes(':') ? parseIPv6(s) : undefined;
  return a !== undefined && a >> 32n === 0xffffn;
}

export function parseIP(s: string): { family: Family; addr: number | bigint } | undefined {
  if (s.includes(':')) {
    const a = parseIPv6(s);
    return a === undefined ? undefined : { family: 6, addr: a };
  }
  const a = parseIPv4(s);
  return a === undefined ? undefined : { family: 4, addr: a };
}

export function formatIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** RFC 5952 text: lower case, longest run (≥2) of zero groups compressed to `::`. */
export function formatIPv6(n: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatIP(family: Family, addr: number | bigint): string {
  return family === 4 ? formatIPv4(addr as number) : formatIPv6(addr as bigint);
}

export function maskV4(addr: number, len: number): number {
  return len === 0 ? 0 : (addr & (0xffffffff << (32 - len))) >>> 0;
}

const V6_ALL = (1n << 128n) - 1n;
export function maskV6(addr: bigint, len: number): bigint {
  return len === 0 ? 0n : addr & (V6_ALL ^ ((1n << BigInt(128 - len)) - 1n));
}

export function makePrefix(family: Family, addr: number | bigint, len: number): Prefix {
  const a = family === 4 ? maskV4(addr as number, len) : maskV6(addr as bigint, len);
  return Object.freeze({ family, addr: a, len, text: `${formatIP(family, a)}/${len}` });
}

/**
 * Parses `addr/len`, or a bare address when `allowBare` (then /32 or /128). Host bits are
 * cleared (`10.1.2.3/8` → `10.0.0.0/8`), as Go's ParseCIDR does for the network.
 */
export function parsePrefix(s: string, allowBare = true): Prefix | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.trim();
  const slash = t.indexOf('/');
  if (slash < 0) {
    if (!allowBare) return undefined;
    const ip = parseIP(t);
    return ip ? makePrefix(ip.family, ip.addr, ip.family === 4 ? 32 : 128) : undefined;
  }
  const ip = parseIP(t.slice(0, slash));
  const lenText = t.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(lenText)) return undefined;
  const len = Number(lenText);
  if (len > (ip.family === 4 ? 32 : 128)) return undefined;
  return makePrefix(ip.family, ip.addr, len);
}

/** Whether `inner` lies inside `outer` (same family, outer no longer, same network bits). */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || outer.len > inner.len) return false;
  if (outer.family === 4) return maskV4(inner.addr as number, outer.len) === outer.addr;
  return maskV6(inner.addr as bigint, outer.len) === outer.addr;
}

export function prefixContainsIP(outer: Prefix, family: Family, addr: number | bigint): boolean {
  if (outer.family !== family) return false;
  if (family === 4) return maskV4(addr as number, outer.len) === outer.addr;
  return maskV6(addr as bigint, outer.len) === outer.addr;
}
