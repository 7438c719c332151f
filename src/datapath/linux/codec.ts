/**
 * Byte codecs for the BPF maps and the event record (bpf/lib/maps.h, bpf/lib/events.h).
 * Little-endian host (x86-64/arm64) for host-order fields; ports and addresses in network order.
 * test/unit/datapath/layout.test.ts checks these sizes/offsets against the C headers.
 */
import type { Direction, MapStateKey, MapStateEntry } from '../../policy/types.ts';
import { copyEvent, type DatapathEvent } from '../types.ts';
import { BoundedCache } from '../../common/bounded-cache.ts';
import { MembraneError } from '../../common/errors.ts';
import { isMac, macBytes } from '../../common/mac.ts';
import { parseHostPrefix4, parseIPv4 as ipv4Number, parseIPv6 as ipv6Number } from '../../ipcache/prefix.ts';

export const DIR_INGRESS = 1;
export const DIR_EGRESS = 2;
export function dirCode(d: Direction): number {
  return d === 'ingress' ? DIR_INGRESS : DIR_EGRESS;
}

// ------------------------------------------------------------------ addresses

export interface ParsedPrefix { family: 4 | 6; addr: Buffer /* 16 bytes */; len: number }

/** An address's bytes in network order, as the maps' keys hold them; null when it is not one. */
export function parseIPv4(ip: string): Buffer | null {
  const n = ipv4Number(ip);
  if (n === undefined) return null;
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function parseIPv6(ip: string): Buffer | null {
  const n = ipv6Number(ip);
  if (n === undefined) return null;
  const b = Buffer.allocUnsafe(16);
  b.writeBigUInt64BE(n >> 64n, 0);
  b.writeBigUInt64BE(n & 0xffffffffffffffffn, 8);
  return b;
}

export function parsePrefix(prefix: string): ParsedPrefix {
  const [ip, lenStr] = prefix.split('/');
  const v4 = parseIPv4(ip ?? '');
  const addr = Buffer.alloc(16);
  if (v4) {
    v4.copy(addr, 0);
    const len = lenStr === undefined ? 32 : Number(lenStr);
    if (!Number.isInteger(len) || len < 0 || len > 32) throw badPrefix(prefix);
    maskBits(addr, len);
    return { family: 4, addr, len };
  }
  const v6 = parseIPv6(ip ?? '');
  if (!v6) throw badPrefix(prefix);
  v6.copy(addr, 0);
  const len = lenStr === undefined ? 128 : Number(lenStr);
  if (!Number.isInteger(len) || len < 0 || len > 128) throw badPrefix(prefix);
  maskBits(addr, len);
  return { family: 6, addr, len };
}

function badPrefix(p: string): MembraneError {
  return new MembraneError('DATAPATH_BAD_PREFIX', `not an IP prefix: "${p}"`, { hint: 'use e.g. 10.244.1.5/32 or 0.0.0.0/0' });
}

function maskBits(b: Buffer, bits: number): void {
  for (let i = 0; i < b.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    b[i] = b[i]! & ((0xff << (8 - keep)) & 0xff);
  }
}

export function formatIp(b: Buffer, off: number, family: number): string {
  if (family === 4) return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
  const g: string[] = [];
  for (let i = 0; i < 8; i++) g.push(b.readUInt16BE(off + i * 2).toString(16));
  // compress the longest run of zeros
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}

/** aa:bb:cc:dd:ee:ff as its six bytes (none: zeros); `hint` says where the address came from. */
export function parseMac(mac: string | undefined, hint = 'six hex pairs, aa:bb:cc:dd:ee:ff'): Buffer {
  if (!mac) return Buffer.alloc(6);
  if (!isMac(mac)) throw new MembraneError('DATAPATH_BAD_MAC', `not a MAC address: "${mac}"`, { hint });
  return macBytes(mac);
}

// ------------------------------------------------------------------ endpoint config

export const EP_CONFIG_SIZE = 40;
export const EP_F_DENY_INGRESS = 1;
export const EP_F_DENY_EGRESS = 2;
/** the endpoint is in policy audit mode (bpf/lib/policy.h policy_audit) */
export const EP_F_AUDIT = 4;
/** mb_policy holds no entry of the endpoint in that direction (bpf/lib/maps.h: policy_lookup
 * decides without the lookups); set only once the last is gone, cleared before the first */
export const EP_F_NO_POLICY_INGRESS = 0x08;
export const EP_F_NO_POLICY_EGRESS = 0x10;

export interface EpConfig {
  ifindex: number;
  epId: number;
  flags: number;
  identity: number;
  ipv4: string;
  ipv6?: string;
  mac?: string;
}

export function encodeU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

/** A u32 key or value (array indexes, map ids in a map-in-map array, backend ids). */
export function decodeU32(b: Buffer): number {
  return b.readUInt32LE(0);
}

/** Sum of a per-CPU u64 counter (one 8-byte slot per possible CPU). */
export function decodePerCpuSum(v: Buffer): bigint {
  let s = 0n;
  for (let o = 0; o + 8 <= v.length; o += 8) s += v.readBigUInt64LE(o);
  return s;
}

/** Value of a sockmap slot: the socket's fd (u64). */
export function encodeSockmapFd(fd: number): Buffer {
  const v = Buffer.alloc(8);
  v.writeBigUInt64LE(BigInt(fd));
  return v;
}

export function encodeEpConfig(c: EpConfig): Buffer {
  const b = Buffer.alloc(EP_CONFIG_SIZE);
  b.writeUInt32LE(c.ifindex, 0);
  b.writeUInt16LE(c.epId, 4);
  b.writeUInt8(c.flags, 6);
  b.writeUInt32LE(c.identity >>> 0, 8);
  const v4 = parseIPv4(c.ipv4);
  if (!v4) throw new MembraneError('DATAPATH_BAD_IP', `endpoint ${c.epId}: not an IPv4 address: "${c.ipv4}"`);
  v4.copy(b, 12);
  if (c.ipv6) {
    const v6 = parseIPv6(c.ipv6);
    if (!v6) throw new MembraneError('DATAPATH_BAD_IP', `endpoint ${c.epId}: not an IPv6 address: "${c.ipv6}"`);
    v6.copy(b, 16);
  }
  parseMac(c.mac).copy(b, 32);
  return b;
}

/** Rewrites the flags of an encoded ep_config in place (the other fields stay as the kernel map has them). */
export function setEpConfigFlags(b: Buffer, flags: number): void {
  b.writeUInt8(flags, 6);
}

export function decodeEpConfig(b: Buffer): EpConfig {
  const v6 = b.subarray(16, 32);
  const mac = b.subarray(32, 38);
  return {
    ifindex: b.readUInt32LE(0), epId: b.readUInt16LE(4), flags: b.readUInt8(6), identity: b.readUInt32LE(8),
    ipv4: formatIp(b, 12, 4),
    ...(v6.some((x) => x !== 0) ? { ipv6: formatIp(b, 16, 6) } : {}),
    ...(mac.some((x) => x !== 0) ? { mac: [...mac].map((x) => x.toString(16).padStart(2, '0')).join(':') } : {}),
  };
}

// ------------------------------------------------------------------ ipcache

export const IPCACHE_KEY_SIZE = 24;
export const IPCACHE_VAL_SIZE = 12;
const IPCACHE_STATIC_PREFIX = 32;

export function encodeIpcacheKey(prefix: string): Buffer {
  return encodeIpcacheKeyInto(Buffer.alloc(IPCACHE_KEY_SIZE), 0, prefix);
}

/** Writes the key of `prefix` at `off` of `b` (a batch of keys in one buffer); returns `b`. */
export function encodeIpcacheKeyInto(b: Buffer, off: number, prefix: string): Buffer {
  const a = parseHostPrefix4(prefix);
  if (a !== undefined) {
    b.fill(0, off, off + IPCACHE_KEY_SIZE);
    b.writeUInt32LE(IPCACHE_STATIC_PREFIX + 32, off);
    b[off + 4] = 4;
    b.writeUInt32BE(a, off + 8);
    return b;
  }
  const p = parsePrefix(prefix);
  b.fill(0, off, off + IPCACHE_KEY_SIZE);
  b.writeUInt32LE(IPCACHE_STATIC_PREFIX + p.len, off);
  b.writeUInt8(p.family, off + 4);
  p.addr.copy(b, off + 8);
  return b;
}

export function decodeIpcacheKey(b: Buffer): string {
  const family = b.readUInt8(4);
  return `${formatIp(b, 8, family)}/${b.readUInt32LE(0) - IPCACHE_STATIC_PREFIX}`;
}

/** `tunnelEndpoint`: the underlay address of the node the prefix lives on (tunnel routing mode). */
export function encodeIpcacheVal(identity: number, epId = 0, tunnelEndpoint?: string): Buffer {
  return encodeIpcacheValInto(Buffer.alloc(IPCACHE_VAL_SIZE), 0, identity, epId, tunnelEndpoint);
}

/** Writes an ipcache value at `off` of `b`; returns `b`. */
export function encodeIpcacheValInto(b: Buffer, off: number, identity: number, epId = 0, tunnelEndpoint?: string): Buffer {
  b.fill(0, off, off + IPCACHE_VAL_SIZE);
  b.writeUInt32LE(identity >>> 0, off);
  b.writeUInt16LE(epId, off + 4);
  if (tunnelEndpoint) {
    const a = ipv4Number(tunnelEndpoint);
    if (a !== undefined) b.writeUInt32BE(a, off + 8);
    else parsePrefix(`${tunnelEndpoint}/32`).addr.copy(b, off + 8, 0, 4);
  }
  return b;
}

export function decodeIpcacheVal(b: Buffer): { identity: number; endpointId: number; tunnelEndpoint?: string } {
  const te = b.readUInt32BE(8);
  return { identity: b.readUInt32LE(0), endpointId: b.readUInt16LE(4), ...(te ? { tunnelEndpoint: formatIp(b, 8, 4) } : {}) };
}

// ------------------------------------------------------------------ policy

export const POLICY_KEY_SIZE = 15; // packed
export const POLICY_VAL_SIZE = 8;
export const POLICY_STATIC_PREFIX = 64;
export const POL_F_DENY = 1;

export function encodePolicyKey(epId: number, k: MapStateKey, out?: Buffer, off = 0): Buffer {
  const b = out ?? Buffer.alloc(POLICY_KEY_SIZE);
  const proto = k.proto & 0xff;
  const plen = proto === 0 ? 0 : Math.max(0, Math.min(16, k.portPrefixLen));
  const port = plen === 0 ? 0 : (k.port & (0xffff << (16 - plen))) & 0xffff;
  b.writeUInt32LE(POLICY_STATIC_PREFIX + (proto ? 8 + plen : 0), off);
  b.writeUInt16LE(epId, off + 4);
  b.writeUInt8(dirCode(k.direction), off + 6);
  b.writeUInt8(0, off + 7);
  b.writeUInt32LE(k.identity >>> 0, off + 8);
  b.writeUInt8(proto, off + 12);
  b.writeUInt16BE(port, off + 13);
  return b;
}

export function decodePolicyKey(b: Buffer): { epId: number; key: MapStateKey } {
  const prefix = b.readUInt32LE(0);
  const proto = b.readUInt8(12);
  return {
    epId: b.readUInt16LE(4),
    key: {
      direction: b.readUInt8(6) === DIR_INGRESS ? 'ingress' : 'egress',
      identity: b.readUInt32LE(8),
      proto,
      port: b.readUInt16BE(13),
      portPrefixLen: proto ? prefix - POLICY_STATIC_PREFIX - 8 : 0,
    },
  };
}

/** The endpoint a policy key belongs to (without decoding the rest). */
export function policyKeyEndpoint(b: Buffer): number {
  return b.readUInt16LE(4);
}

export function policyKeyDirection(b: Buffer): Direction {
  return b.readUInt8(6) === DIR_INGRESS ? 'ingress' : 'egress';
}

export interface PolicyVal { deny: boolean; authType: number; matchType: number; specLen: number; proxyPort: number; proxySlot: number }

export function encodePolicyVal(v: PolicyVal, out?: Buffer, off = 0): Buffer {
  const b = out ?? Buffer.alloc(POLICY_VAL_SIZE);
  b.writeUInt8(v.deny ? POL_F_DENY : 0, off);
  b.writeUInt8(v.authType & 0xff, off + 1);
  b.writeUInt8(v.matchType & 0xff, off + 2);
  b.writeUInt8(v.specLen, off + 3);
  b.writeUInt16LE(v.proxyPort, off + 4);
  b.writeUInt16LE(v.proxySlot, off + 6);
  return b;
}

export function decodePolicyVal(b: Buffer): PolicyVal {
  return {
    deny: (b.readUInt8(0) & POL_F_DENY) !== 0, authType: b.readUInt8(1), matchType: b.readUInt8(2), specLen: b.readUInt8(3),
    proxyPort: b.readUInt16LE(4), proxySlot: b.readUInt16LE(6),
  };
}

/** MapStateEntry → policy value; `proxy` gives the proxy port/slot for entries with L7. */
export function policyValFor(key: MapStateKey, e: MapStateEntry, proxy: { port: number; slot: number } | null): PolicyVal {
  const specLen = key.proto ? 8 + Math.max(0, Math.min(16, key.portPrefixLen)) : 0;
  return {
    deny: e.verdict === 'deny', authType: e.authType, matchType: e.matchType, specLen,
    proxyPort: e.verdict === 'allow' && e.l7 && proxy ? proxy.port : 0,
    proxySlot: e.verdict === 'allow' && e.l7 && proxy ? proxy.slot : 0,
  };
}

/**
 * Encodes policy entries for one batch update: `keys`/`vals` are the packed arrays the kernel's
 * batch call reads, `keyList` a copy of each key (for the agent's index of the map).
 */
export function encodePolicyBatch(epId: number, entries: { key: MapStateKey; val: PolicyVal }[]): { keys: Buffer; vals: Buffer; keyList: Buffer[] } {
  const keys = Buffer.alloc(entries.length * POLICY_KEY_SIZE);
  const vals = Buffer.alloc(entries.length * POLICY_VAL_SIZE);
  const keyList = entries.map((e, i) => {
    encodePolicyKey(epId, e.key, keys, i * POLICY_KEY_SIZE);
    encodePolicyVal(e.val, vals, i * POLICY_VAL_SIZE);
    return Buffer.from(keys.subarray(i * POLICY_KEY_SIZE, (i + 1) * POLICY_KEY_SIZE));
  });
  return { keys, vals, keyList };
}

// ------------------------------------------------------------------ conntrack

export const CT_KEY_SIZE = 44;
export const CT_VAL_SIZE = 48;
/** Entries per conntrack table (bpf/lib/maps.h CT_TABLE_ENTRIES); every endpoint has two. */
export const CT_TABLE_ENTRIES = 8192;
/** Slots of the table array (two per endpoint id 0..65535). */
export const CT_TABLES = 65536 * 2;
/** Table of the connections an endpoint opened (and of the ingress entries they create at local destinations). */
export function ctOwnIndex(endpointId: number): number {
  return endpointId * 2;
}
/** Table of the connections opened towards an endpoint by senders that are not endpoints of this node. */
export function ctExtIndex(endpointId: number): number {
  return endpointId * 2 + 1;
}

export interface CtEntry {
  srcIp: string; dstIp: string; srcPort: number; dstPort: number; proto: number; direction: Direction; endpointId: number;
  expiresNs: bigint; createdNs: bigint; fwdFlags: number; revFlags: number; state: number; proxyPort: number; srcIdentity: number;
  /** reverse-NAT id of a load-balanced connection (0: none) */
  revNat: number;
  /** policy revision the connection's forward direction was last allowed at */
  policyRevision: number;
  /** a DIR_SERVICE entry (frontend tuple -> backend id in srcIdentity) */
  service?: true;
  /** a DIR_FRAG entry: srcPort holds the IP id; the first fragment's ports */
  fragment?: { srcPort: number; dstPort: number };
}

export const DIR_SERVICE = 3;
export const DIR_FRAG = 4;
export const CT_F_PREDECIDED = 0x10;
/** the ingress L7 proxy's upstream connection (bpf: its replies may belong to a socket of the node) */
export const CT_F_PROXY_UPSTREAM = 0x20;

export function decodeCt(k: Buffer, v: Buffer): CtEntry {
  const fam = k.readUInt8(37);
  const dir = k.readUInt8(38);
  return {
    srcIp: formatIp(k, 0, fam), dstIp: formatIp(k, 16, fam), srcPort: k.readUInt16BE(32), dstPort: k.readUInt16BE(34),
    proto: k.readUInt8(36), direction: dir === DIR_INGRESS ? 'ingress' : 'egress', endpointId: k.readUInt16LE(40),
    expiresNs: v.readBigUInt64LE(0), createdNs: v.readBigUInt64LE(8), fwdFlags: v.readUInt8(16), revFlags: v.readUInt8(17),
    state: v.readUInt8(18), proxyPort: v.readUInt16LE(20), srcIdentity: v.readUInt32LE(24), revNat: v.readUInt16LE(28),
    policyRevision: v.readUInt32LE(32),
    ...(dir === DIR_SERVICE ? { service: true as const } : {}),
    ...(dir === DIR_FRAG ? { fragment: { srcPort: v.readUInt16BE(36), dstPort: v.readUInt16BE(38) } } : {}),
  };
}

export function ctKeyEndpoint(k: Buffer): number {
  return k.readUInt16LE(40);
}

// ------------------------------------------------------------------ datapath config (mb_config)

export const DP_CONFIG_SIZE = 32;

/** mb_config flags: routing mode tunnel (pods may not send to the tunnel port). */
export const DP_F_TUNNEL = 0x01;
/** mb_config flags: IPv6 enforced (Cilium's enable-ipv6); without it endpoints drop IPv6 (139). */
export const DP_F_IPV6 = 0x02;
/** mb_config flags: the node has no services; pods' packets skip the frontend lookup (set only while the service maps are empty). */
export const DP_F_NO_SERVICES = 0x04;
/** mb_config flags: strict ingress of transparent encryption (Cilium's --enable-encryption-strict-mode-ingress): a pod's packet from another node that did not arrive decrypted is dropped (195). */
export const DP_F_STRICT_INGRESS = 0x08;

export interface DpConfig {
  /** bumped after every policy, ipcache or endpoint change: established connections are decided again */
  policyRevision: number;
  /** DP_F_* (absent: 0) */
  flags?: number;
  /** event budget per sender: one event per interval (0 = unlimited) ... */
  eventIntervalNs: bigint;
  /** ... in bursts of up to burstNs / intervalNs + 1 events */
  eventBurstNs: bigint;
  /** routing mode tunnel: the VXLAN device's ifindex once its programs are attached (absent: 0) */
  overlayIfindex?: number;
  /** Cilium's --monitor-aggregation as the datapath reads it (absent: medium, Cilium's default) */
  monitorAggregation?: MonitorAggregation;
  /** Cilium's --monitor-aggregation-interval in seconds (absent: 5) */
  monitorIntervalS?: number;
}

/** What the datapath traces of a connection's packets (bpf/README.md "Monitor aggregation"). */
export type MonitorAggregation = 'medium' | 'low';
const MON_AGG: Record<MonitorAggregation, number> = { medium: 0, low: 1 };

export function encodeDpConfig(c: DpConfig): Buffer {
  const b = Buffer.alloc(DP_CONFIG_SIZE);
  b.writeUInt32LE(c.policyRevision >>> 0, 0);
  b.writeUInt32LE((c.flags ?? 0) >>> 0, 4);
  b.writeBigUInt64LE(c.eventIntervalNs, 8);
  b.writeBigUInt64LE(c.eventBurstNs, 16);
  b.writeUInt32LE((c.overlayIfindex ?? 0) >>> 0, 24);
  b.writeUInt8(MON_AGG[c.monitorAggregation ?? 'medium'], 28);
  b.writeUInt16LE(c.monitorIntervalS ?? 0, 30);
  return b;
}

export function decodeDpConfig(b: Buffer): DpConfig {
  const flags = b.readUInt32LE(4);
  const full = b.length >= DP_CONFIG_SIZE;
  const overlayIfindex = full ? b.readUInt32LE(24) : 0;
  const monitorAggregation = full && b.readUInt8(28) === MON_AGG.low ? 'low' : undefined;
  const monitorIntervalS = full ? b.readUInt16LE(30) : 0;
  return {
    policyRevision: b.readUInt32LE(0), ...(flags ? { flags } : {}), eventIntervalNs: b.readBigUInt64LE(8), eventBurstNs: b.readBigUInt64LE(16),
    ...(overlayIfindex ? { overlayIfindex } : {}), ...(monitorAggregation ? { monitorAggregation } : {}), ...(monitorIntervalS ? { monitorIntervalS } : {}),
  };
}

/** Event budget (events/s, burst) → the GCRA parameters the datapath reads. rate 0 = unlimited. */
export function eventBudget(rate: number, burst: number): { eventIntervalNs: bigint; eventBurstNs: bigint } {
  if (!(rate > 0)) return { eventIntervalNs: 0n, eventBurstNs: 0n };
  const interval = BigInt(Math.max(1, Math.round(1e9 / rate)));
  return { eventIntervalNs: interval, eventBurstNs: interval * BigInt(Math.max(0, Math.floor(burst) - 1)) };
}

/** Per-sender event budgets (mb_ev_buckets), numbered like the conntrack tables. */
export const EV_BUCKET_SIZE = 16;
/** A budget with nothing spent and nothing lost. */
export function emptyEvBucket(): Buffer {
  return Buffer.alloc(EV_BUCKET_SIZE);
}
export function decodeEvBucketLost(b: Buffer): bigint {
  return b.readBigUInt64LE(8);
}

// ------------------------------------------------------------------ events

export const EVENT_SIZE = 80;
/** mb_event.flags: a policy verdict the endpoint's audit mode turned from a drop into a pass */
export const EV_F_AUDITED = 1;

/**
 * IPv4 addresses as text, one string per address: events name the same few addresses over and
 * over, and the flows built from them stay in Hubble's ring for seconds (one shared string each,
 * not a new one per event). Bounded: cleared when full.
 */
const ipv4Texts = new BoundedCache<number, string>(65536);
function ipv4Text(b: Buffer, off: number): string {
  const k = b.readUInt32BE(off);
  return ipv4Texts.get(k) ?? ipv4Texts.set(k, formatIp(b, off, 4));
}

/**
 * An mb_event record decoded in place: the kernel reader keeps one and refills it per record
 * (decodeEventInto), so an event costs no object, and its time no BigInt: timeSec / timeNsec are
 * numbers, timeNs is made from them only when asked. A subscriber that keeps an event copies it
 * (types.ts copyEvent).
 */
export class DecodedEvent implements DatapathEvent {
  type = 0;
  subType = 0;
  timeSec = 0;
  timeNsec = 0;
  endpointId = 0;
  ifindex = 0;
  srcIdentity = 0;
  dstIdentity = 0;
  ipVersion: 4 | 6 = 4;
  srcIp = '';
  dstIp = '';
  proto = 0;
  srcPort = 0;
  dstPort = 0;
  tcpFlags = 0;
  icmpType = 0;
  icmpCode = 0;
  ctReason = 0;
  direction: DatapathEvent['direction'] = 'unknown';
  verdict = 0;
  matchType = 0;
  authType = 0;
  audited = false;
  length = 0;
  etherType = 0;
  get timeNs(): bigint {
    return BigInt(this.timeSec) * 1_000_000_000n + BigInt(this.timeNsec);
  }
}

/**
 * CLOCK_MONOTONIC → the reader's time, as numbers: the record's 64-bit time is hi·2^32 + lo; the
 * part hi·2^32 + offset is split into seconds and nanoseconds once per hi (it moves every 4.3 s)
 * or offset (fixed per reader), so per event only lo (< 2^32) is added, exactly, in doubles.
 */
let clockHi = -1;
let clockOffset = 0n;
let clockSec = 0;
let clockNsec = 0;
function refreshClock(hi: number, timeOffsetNs: bigint): void {
  const base = (BigInt(hi) << 32n) + timeOffsetNs;
  let sec = base / 1_000_000_000n;
  if (base < sec * 1_000_000_000n) sec -= 1n; // floor for a negative sum (a test's offset)
  clockSec = Number(sec);
  clockNsec = Number(base - sec * 1_000_000_000n);
  clockHi = hi;
  clockOffset = timeOffsetNs;
}

/** Decodes one mb_event record into `ev`; `timeOffsetNs` converts CLOCK_MONOTONIC to wall-clock ns. */
export function decodeEventInto(ev: DecodedEvent, b: Buffer, off: number, timeOffsetNs: bigint): DecodedEvent {
  // per event on the agent's ring consumer: bytes read by index, no allocation (addresses are
  // shared strings, the time numbers)
  const family = b[off + 10]!;
  const proto = b[off + 11]!;
  const dir = b[off + 66]!;
  const icmp = proto === 1 || proto === 58;
  const hi = b.readUInt32LE(off + 4);
  if (hi !== clockHi || timeOffsetNs !== clockOffset) refreshClock(hi, timeOffsetNs);
  const ns = clockNsec + b.readUInt32LE(off);
  const carry = Math.floor(ns / 1_000_000_000);
  ev.timeSec = clockSec + carry;
  ev.timeNsec = ns - carry * 1_000_000_000;
  ev.type = b[off + 8]!;
  ev.subType = b[off + 9]!;
  ev.endpointId = b.readUInt16LE(off + 12);
  ev.ifindex = b.readUInt32LE(off + 16);
  ev.srcIdentity = b.readUInt32LE(off + 20);
  ev.dstIdentity = b.readUInt32LE(off + 24);
  ev.ipVersion = family === 6 ? 6 : 4;
  // a frame that is not IP (dropped as such) has no addresses: empty, not "::"
  ev.srcIp = family === 4 ? ipv4Text(b, off + 32) : family === 6 ? formatIp(b, off + 32, 6) : '';
  ev.dstIp = family === 4 ? ipv4Text(b, off + 48) : family === 6 ? formatIp(b, off + 48, 6) : '';
  ev.proto = proto;
  ev.srcPort = icmp ? 0 : b.readUInt16LE(off + 28);
  ev.dstPort = icmp ? 0 : b.readUInt16LE(off + 30);
  ev.tcpFlags = b[off + 14]!;
  ev.icmpType = b[off + 64]!;
  ev.icmpCode = b[off + 65]!;
  ev.ctReason = b[off + 15]!;
  ev.direction = dir === DIR_INGRESS ? 'ingress' : dir === DIR_EGRESS ? 'egress' : 'unknown';
  ev.verdict = b.readInt32LE(off + 68);
  ev.matchType = b[off + 67]!;
  ev.authType = b[off + 72]!;
  ev.audited = (b[off + 73]! & EV_F_AUDITED) !== 0;
  ev.length = b.readUInt32LE(off + 76);
  ev.etherType = b.readUInt16BE(off + 74);
  return ev;
}

const scratch = new DecodedEvent();
/** Decodes one mb_event record as an event of its own (tests, tools); the reader uses decodeEventInto. */
export function decodeEvent(b: Buffer, off: number, timeOffsetNs: bigint): DatapathEvent {
  return copyEvent(decodeEventInto(scratch, b, off, timeOffsetNs));
}

/** Encodes a DatapathEvent as the kernel would (tests, fake ring producers). */
export function encodeEvent(e: DatapathEvent, timeOffsetNs = 0n): Buffer {
  const b = Buffer.alloc(EVENT_SIZE);
  b.writeBigUInt64LE(e.timeNs - timeOffsetNs, 0);
  b.writeUInt8(e.type, 8);
  b.writeUInt8(e.subType, 9);
  b.writeUInt8(e.ipVersion, 10);
  b.writeUInt8(e.proto, 11);
  b.writeUInt16LE(e.endpointId, 12);
  b.writeUInt8(e.tcpFlags, 14);
  b.writeUInt8(e.ctReason, 15);
  b.writeUInt32LE(e.ifindex, 16);
  b.writeUInt32LE(e.srcIdentity >>> 0, 20);
  b.writeUInt32LE(e.dstIdentity >>> 0, 24);
  b.writeUInt16LE(e.srcPort, 28);
  b.writeUInt16LE(e.dstPort, 30);
  const s = e.ipVersion === 4 ? parseIPv4(e.srcIp) : parseIPv6(e.srcIp);
  const d = e.ipVersion === 4 ? parseIPv4(e.dstIp) : parseIPv6(e.dstIp);
  s?.copy(b, 32);
  d?.copy(b, 48);
  b.writeUInt8(e.icmpType, 64);
  b.writeUInt8(e.icmpCode, 65);
  b.writeUInt8(e.direction === 'ingress' ? DIR_INGRESS : e.direction === 'egress' ? DIR_EGRESS : 0, 66);
  b.writeUInt8(e.matchType, 67);
  b.writeInt32LE(e.verdict, 68);
  b.writeUInt8(e.authType, 72);
  b.writeUInt8(e.audited ? EV_F_AUDITED : 0, 73);
  b.writeUInt16BE(e.etherType ?? (e.ipVersion === 6 ? 0x86dd : 0x0800), 74);
  b.writeUInt32LE(e.length, 76);
  return b;
}

// ------------------------------------------------------------------ stats

export const STAT_NAMES = [
  'pktsFromEndpoint', 'pktsToEndpoint', 'pass', 'drop', 'ctNew', 'ctEstablished', 'ctReply', 'ctRelated',
  'policyLookups', 'proxyRedirects', 'events', 'nonIPv4', 'lbTranslations', 'ingressDecidedEarly', 'pktsFromNetwork',
  'eventsRateLimited', 'policyRechecks', 'fragments', 'malformed', 'overlayRx', 'overlayTx', 'neighbourDiscovery',
  'wireguardDelivered', 'overlayRedirects', 'ctHinted', 'localDelivered', 'overlayDelivered', 'networkDelivered',
  'nativeRedirects',
] as const;
export const STAT_MAX = 29;
/** mb_stats' entries: STAT_MAX and room for more (a pinned map keeps its size; a counter added within it needs no `membrane down`). */
export const STAT_ENTRIES = 32;
/** Index of the counter of events not emitted because their sender's budget was spent. */
export const STAT_EVENTS_LIMITED = STAT_NAMES.indexOf('eventsRateLimited');

// ------------------------------------------------------------------ network devices (mb_devices)

/** mb_devices flags: the underlay (the only device other nodes' addresses may arrive on). */
export const DEV_F_UNDERLAY = 0x01;
export const DEV_CONFIG_SIZE = 4;

export function encodeDevConfig(flags: number): Buffer {
  const b = Buffer.alloc(DEV_CONFIG_SIZE);
  b.writeUInt32LE(flags >>> 0, 0);
  return b;
}

// ------------------------------------------------------------------ other nodes' underlay MACs (mb_node_macs)

export const NODE_MAC_SIZE = 8;
/** The key of mb_node_macs: a node's InternalIP, network order. */
export function encodeNodeMacKey(ip: string): Buffer {
  const b = parseIPv4(ip);
  if (!b) throw new MembraneError('DATAPATH_BAD_IP', `node address ${ip} is not IPv4`, { hint: 'nodes are IPv4 peers on the underlay' });
  return b;
}

export function encodeNodeMac(mac: string): Buffer {
  // no address is no node's address here (parseMac reads it as zeros, an endpoint's "none")
  if (!mac) throw new MembraneError('DATAPATH_BAD_MAC', 'not a MAC address: ""', { hint: 'a node entry\'s UnderlayMAC' });
  const b = Buffer.alloc(NODE_MAC_SIZE);
  parseMac(mac, 'a node entry\'s UnderlayMAC').copy(b);
  return b;
}

export function decodeNodeMacKey(k: Buffer): string {
  return `${k[0]}.${k[1]}.${k[2]}.${k[3]}`;
}

// ------------------------------------------------------------------ load balancing (lb4)

export const LB4_KEY_SIZE = 12;
export const LB4_SERVICE_SIZE = 8;
export const LB4_BACKEND_SIZE = 8;
export const LB4_REVNAT_SIZE = 8;

export function protoNumber(p: 'TCP' | 'UDP'): number {
  return p === 'UDP' ? 17 : 6;
}

/** A service's protocol number back to its name (anything but UDP reads as TCP, as before). */
export function protoName(n: number): 'TCP' | 'UDP' {
  return n === 17 ? 'UDP' : 'TCP';
}

function v4(ip: string, what: string): Buffer {
  const b = parseIPv4(ip);
  if (!b) throw new MembraneError('DATAPATH_BAD_IP', `${what}: not an IPv4 address: "${ip}"`);
  return b;
}

/*
 * The lb4 and lb6 structs (bpf/lib/lb.h) share one layout after the address (4 or 16 bytes, at
 * 0): key = port (BE), proto, pad, slot (LE); backend = port (BE), proto; rev-NAT = port (BE).
 * Written once here, for either address length.
 */
function lbKey(addr: Buffer, size: number, port: number, proto: number, slot: number): Buffer {
  const b = lbBackend(addr, size, port, proto);
  b.writeUInt16LE(slot, addr.length + 4);
  return b;
}
function lbBackend(addr: Buffer, size: number, port: number, proto: number): Buffer {
  const b = lbRevNat(addr, size, port);
  b.writeUInt8(proto, addr.length + 2);
  return b;
}
function lbRevNat(addr: Buffer, size: number, port: number): Buffer {
  const b = Buffer.alloc(size);
  addr.copy(b, 0);
  b.writeUInt16BE(port, addr.length);
  return b;
}
const decodeLbBackend = (b: Buffer, family: 4 | 6): { ip: string; port: number; proto: number } => {
  const n = family === 4 ? 4 : 16;
  return { ip: formatIp(b, 0, family), port: b.readUInt16BE(n), proto: b.readUInt8(n + 2) };
};
const decodeLbKey = (b: Buffer, family: 4 | 6): { ip: string; port: number; proto: number; slot: number } =>
  ({ ...decodeLbBackend(b, family), slot: b.readUInt16LE(family === 4 ? 8 : 20) });

export function encodeLb4Key(ip: string, port: number, proto: number, slot: number): Buffer {
  return lbKey(v4(ip, 'service frontend'), LB4_KEY_SIZE, port, proto, slot);
}

export function decodeLb4Key(b: Buffer): { ip: string; port: number; proto: number; slot: number } {
  return decodeLbKey(b, 4);
}

export function encodeLb4Service(backendId: number, count: number, revNat: number): Buffer {
  const b = Buffer.alloc(LB4_SERVICE_SIZE);
  b.writeUInt32LE(backendId >>> 0, 0);
  b.writeUInt16LE(count, 4);
  b.writeUInt16LE(revNat, 6);
  return b;
}

export function decodeLb4Service(b: Buffer): { backendId: number; count: number; revNat: number } {
  return { backendId: b.readUInt32LE(0), count: b.readUInt16LE(4), revNat: b.readUInt16LE(6) };
}

export function encodeLb4Backend(ip: string, port: number, proto: number): Buffer {
  return lbBackend(v4(ip, 'service backend'), LB4_BACKEND_SIZE, port, proto);
}

export function decodeLb4Backend(b: Buffer): { ip: string; port: number; proto: number } {
  return decodeLbBackend(b, 4);
}

export function encodeLb4RevNat(ip: string, port: number): Buffer {
  return lbRevNat(v4(ip, 'service frontend'), LB4_REVNAT_SIZE, port);
}

// ------------------------------------------------------------------ frontend address filter (mb_lb_vips)

export const LB_VIP_FILTER_WORDS = 4;
export const LB_VIP_FILTER_SIZE = LB_VIP_FILTER_WORDS * 8;

/**
 * A frontend address's bit in mb_lb_vips (bpf/lib/maps.h lb_vip_bit): the address as 16 bytes (an
 * IPv4 address in the first 4, zeros after), its four words as the little-endian host the BPF
 * program runs on reads them, folded by xor, times 0x9e3779b1, the top 8 bits.
 */
export function lbVipBit(ip: string): number {
  const b = Buffer.alloc(16);
  const a = ip.includes(':') ? v6(ip, 'service frontend') : v4(ip, 'service frontend');
  a.copy(b, 0);
  const fold = (b.readUInt32LE(0) ^ b.readUInt32LE(4) ^ b.readUInt32LE(8) ^ b.readUInt32LE(12)) >>> 0;
  return Math.imul(fold, 0x9e3779b1) >>> 24;
}

/** Sets `ip`'s bit in mb_lb_vips' value `b`; false when it was set already. */
export function setLbVipBit(b: Buffer, ip: string): boolean {
  const bit = lbVipBit(ip);
  const mask = 1 << (bit & 7);
  if (b[bit >> 3]! & mask) return false;
  b[bit >> 3] = b[bit >> 3]! | mask;
  return true;
}

/** mb_lb_vips' one value: the bits of these frontend addresses set. */
export function encodeLbVipFilter(ips: Iterable<string>): Buffer {
  const b = Buffer.alloc(LB_VIP_FILTER_SIZE);
  for (const ip of ips) setLbVipBit(b, ip);
  return b;
}

// ------------------------------------------------------------------ load balancing (lb6)

export const LB6_KEY_SIZE = 24;
export const LB6_BACKEND_SIZE = 20;
export const LB6_REVNAT_SIZE = 20;

/** An IPv6 service address; IPv4-mapped ones are refused (the parser drops them on the wire: 134). */
function v6(ip: string, what: string): Buffer {
  const b = parseIPv6(ip);
  if (!b) throw new MembraneError('DATAPATH_BAD_IP', `${what}: not an IPv6 address: "${ip}"`);
  if (b.readUInt32BE(0) === 0 && b.readUInt32BE(4) === 0 && b.readUInt32BE(8) === 0xffff) {
    throw new MembraneError('DATAPATH_BAD_IP', `${what}: "${ip}" is an IPv4-mapped IPv6 address`, { hint: 'an IPv4 service or backend takes its IPv4 address (10.96.x.y); the datapath drops IPv4-mapped addresses (134)' });
  }
  return b;
}

export function encodeLb6Key(ip: string, port: number, proto: number, slot: number): Buffer {
  return lbKey(v6(ip, 'service frontend'), LB6_KEY_SIZE, port, proto, slot);
}

export function decodeLb6Key(b: Buffer): { ip: string; port: number; proto: number; slot: number } {
  return decodeLbKey(b, 6);
}

export function encodeLb6Backend(ip: string, port: number, proto: number): Buffer {
  return lbBackend(v6(ip, 'service backend'), LB6_BACKEND_SIZE, port, proto);
}

export function decodeLb6Backend(b: Buffer): { ip: string; port: number; proto: number } {
  return decodeLbBackend(b, 6);
}

export function encodeLb6RevNat(ip: string, port: number): Buffer {
  return lbRevNat(v6(ip, 'service frontend'), LB6_REVNAT_SIZE, port);
}
