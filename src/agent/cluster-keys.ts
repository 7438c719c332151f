/**
 * The kvstore's cluster keys and their values, as Cilium writes them (so a Cilium agent's keys read
 * here and ours read there):
 *
 *   cilium/state/nodes/v1/<cluster>/<node>  Cilium's types.Node JSON (nodeValue / parseNodeValue)
 *   cilium/state/ip/v1/default/<ip>         Cilium's IPIdentityPair JSON (ipcacheValue / parseIpcacheValue,
 *                                           and a reader of the watch's raw bytes that skips JSON.parse)
 *
 * Pure: no kvstore, no timers. src/agent/cluster.ts keeps the cluster in sync with these keys.
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import { isMac } from '../common/mac.ts';
import type { EndpointRecord } from './endpoints.ts';
import { ReservedIdentity } from '../identity/identity.ts';
import { isWireguardKey } from '../sys/wireguard.ts';
import { formatIPv4, formatIPv6, hostPrefix, isIPv4Mapped, parseIPv4, parseIPv6 } from '../ipcache/prefix.ts';
import type { RemoteEndpoint } from './remote-store.ts';

const isIPv6 = (s: string): boolean => s.includes(':') && parseIPv6(s) !== undefined && !isIPv4Mapped(s);
/** an IPv6 address in its one RFC 5952 text (what an agent writes as a key) */
function canonical6(s: string): boolean {
  const n = s.includes(':') ? parseIPv6(s) : undefined;
  return n !== undefined && !isIPv4Mapped(s) && formatIPv6(n) === s;
}

export const NODES_PREFIX = 'cilium/state/nodes/v1/';
export const IPCACHE_PREFIX = 'cilium/state/ip/v1/default/';

export interface ClusterNode {
  name: string;
  cluster: string;
  /** InternalIP */
  ip: string;
  /** CiliumInternalIP (the node's router address on its pod network) */
  routerIp?: string;
  /** enable-ipv6: the node's IPv6 CiliumInternalIP (its own address in its IPv6 pod CIDR) */
  routerIp6?: string;
  podCidr?: string;
  /** enable-ipv6: IPv6AllocCIDR, the node's IPv6 pod CIDR */
  podCidr6?: string;
  /** WireguardPubKey: the node's WireGuard public key (transparent encryption) */
  wireguardPubKey?: string;
  /**
   * UnderlayMAC (membrane's, beside Cilium's fields; Cilium ignores it): the link-layer address of
   * the node's underlay device, lower case. The others' datapaths take a remote pod's packet from
   * the underlay only from it (routing mode native; bpf/lib/overlay.h).
   */
  underlayMac?: string;
}

/**
 * Cilium's net.IPNet JSON: {"IP":"10.244.1.0","Mask":"////AA=="}; an IPv6 CIDR's mask is 16
 * bytes ({"IP":"fd00:10:244:1::","Mask":"//////////8AAAAAAAAAAA=="}).
 */
function ipNet(cidr: string): { IP: string; Mask: string } {
  const [ip, len] = cidr.split('/') as [string, string];
  const bits = Number(len);
  const mask = Buffer.alloc(isIPv6(ip) ? 16 : 4);
  for (let i = 0; i < mask.length; i++) mask[i] = bits >= (i + 1) * 8 ? 0xff : bits > i * 8 ? (0xff << (8 - (bits - i * 8))) & 0xff : 0;
  return { IP: ip, Mask: mask.toString('base64') };
}

/** Reads `{"IP","Mask"}` (base64 mask) or the newer `"<ip>/n"` form, of the family `v6` says. */
function parseIpNet(v: unknown, v6 = false): string | undefined {
  const fam = (ip: string) => (v6 ? isIPv6(ip) : IPV4.test(ip));
  if (typeof v === 'string') {
    const [ip, len, extra] = v.split('/');
    return ip && len && extra === undefined && fam(ip) && /^\d+$/.test(len) && Number(len) <= (v6 ? 128 : 32) ? v : undefined;
  }
  if (!v || typeof v !== 'object') return undefined;
  const o = v as { IP?: unknown; Mask?: unknown };
  if (typeof o.IP !== 'string' || typeof o.Mask !== 'string' || !fam(o.IP)) return undefined;
  const m = Buffer.from(o.Mask, 'base64');
  if (m.length !== (v6 ? 16 : 4)) return undefined;
  let len = 0;
  for (const b of m) for (let i = 7; i >= 0; i--) if (b & (1 << i)) len++;
  return `${o.IP}/${len}`;
}

export function nodeValue(n: ClusterNode, bootId: string): string {
  return JSON.stringify({
    Name: n.name, Cluster: n.cluster,
    IPAddresses: [
      { Type: 'InternalIP', IP: n.ip },
      ...(n.routerIp ? [{ Type: 'CiliumInternalIP', IP: n.routerIp }] : []),
      ...(n.routerIp6 ? [{ Type: 'CiliumInternalIP', IP: n.routerIp6 }] : []),
    ],
    IPv4AllocCIDR: n.podCidr ? ipNet(n.podCidr) : null, IPv4SecondaryAllocCIDRs: null, IPv6AllocCIDR: n.podCidr6 ? ipNet(n.podCidr6) : null, IPv6SecondaryAllocCIDRs: null,
    IPv4HealthIP: '', IPv6HealthIP: '', IPv4IngressIP: '', IPv6IngressIP: '',
    ClusterID: 0, Source: 'local', EncryptionKey: 0, Labels: {}, Annotations: {}, WireguardPubKey: n.wireguardPubKey ?? '', BootID: bootId,
    ...(n.underlayMac ? { UnderlayMAC: n.underlayMac } : {}),
  });
}

export function parseNodeValue(text: string): ClusterNode | undefined {
  let o: Record<string, unknown>;
  try { o = JSON.parse(text) as Record<string, unknown>; } catch { return undefined; }
  if (!o || typeof o !== 'object' || typeof o.Name !== 'string' || !o.Name || typeof o.Cluster !== 'string' || !o.Cluster) return undefined;
  const addrs = Array.isArray(o.IPAddresses) ? (o.IPAddresses as { Type?: unknown; IP?: unknown }[]) : [];
  // one address of each family per type (Cilium lists a node's IPv4 and IPv6 addresses side by side)
  const pick = (t: string, v6 = false) => addrs.find((a) => a && a.Type === t && typeof a.IP === 'string' && (v6 ? isIPv6(a.IP) : IPV4.test(a.IP)))?.IP as string | undefined;
  // the underlay is IPv4: a node without an IPv4 InternalIP is no tunnel peer here
  const ip = pick('InternalIP') ?? pick('ExternalIP');
  if (!ip) return undefined;
  const routerIp = pick('CiliumInternalIP');
  const routerIp6 = pick('CiliumInternalIP', true);
  const podCidr = parseIpNet(o.IPv4AllocCIDR);
  const podCidr6 = parseIpNet(o.IPv6AllocCIDR, true);
  // a key that is not 32 bytes of base64 is no key: such a node gets no peer (strict mode drops)
  const wg = isWireguardKey(o.WireguardPubKey) ? o.WireguardPubKey : undefined;
  // anything else than six bytes is no address: such a node sends no remote pod's packet here
  const mac = typeof o.UnderlayMAC === 'string' ? o.UnderlayMAC.toLowerCase() : undefined;
  const underlayMac = mac && isMac(mac) ? mac : undefined;
  return {
    name: o.Name, cluster: o.Cluster, ip, ...(routerIp ? { routerIp } : {}), ...(routerIp6 ? { routerIp6 } : {}), ...(podCidr ? { podCidr } : {}),
    ...(podCidr6 ? { podCidr6 } : {}), ...(wg ? { wireguardPubKey: wg } : {}), ...(underlayMac ? { underlayMac } : {}),
  };
}

/** The IPIdentityPair of one of the endpoint's addresses (`ip`: its IPv4 or, with enable-ipv6, its IPv6 one). */
export function ipcacheValue(ep: EndpointRecord, node: string, hostIp: string, ip: string = ep.ip): string {
  return JSON.stringify({
    IP: ip, Mask: null, HostIP: hostIp, ID: ep.identity, Key: 0, Metadata: `cilium-global:default:${node}:${ep.id}`,
    K8sNamespace: ep.namespace, K8sPodName: ep.pod,
  });
}

/**
 * Strings that repeat across hundreds of thousands of entries (HostIP, node name, namespace) are
 * kept once: at 10,000 nodes / 300,000 endpoints a fresh copy per entry is tens of MiB.
 */
export function createInterner(max = 65_536): (s: string) => string {
  // a cache only: emptying it when full is safe
  const table = new BoundedCache<string, string>(max);
  return (s) => table.get(s) ?? table.set(s, s);
}
const sharedIntern = createInterner();

const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;
const METADATA = /^cilium-global:[^:]*:([^:]+):\d+$/;

export function parseIpcacheValue(key: string, text: string, intern: (s: string) => string = sharedIntern): RemoteEndpoint | undefined {
  let o: Record<string, unknown>;
  try { o = JSON.parse(text) as Record<string, unknown>; } catch { return undefined; }
  if (!o || typeof o !== 'object') return undefined;
  // host entries only (Mask null); CIDR entries (`<ip>/<len>`) are not written by agents here
  // IPv4 or IPv6 (enable-ipv6: Cilium keys a pod's IPv6 address the same way); the key names it
  // as written, and only the canonical text form is accepted (one key per address)
  if (typeof o.IP !== 'string' || !(IPV4.test(o.IP) || canonical6(o.IP)) || key.length !== IPCACHE_PREFIX.length + o.IP.length || !key.endsWith(o.IP) || o.Mask != null) return undefined;
  if (typeof o.ID !== 'number' || !Number.isInteger(o.ID) || o.ID < 0 || o.ID >= 1 << 24) return undefined;
  if (typeof o.HostIP !== 'string' || !IPV4.test(o.HostIP)) return undefined;
  const meta = typeof o.Metadata === 'string' ? METADATA.exec(o.Metadata) : null;
  // the IP string from the value, not a slice of the key: a slice would keep the whole key alive
  const ip = o.IP, hostIp = intern(o.HostIP);
  // a remote entry claiming the host identity is another node's host: remote-node (Cilium)
  const identity = o.ID === ReservedIdentity.host ? ReservedIdentity.remoteNode : o.ID;
  // an agent's entry has every field: one literal keeps them in the object (fields added later
  // go to a separate property array, 40 bytes more per remote pod)
  if (meta && typeof o.K8sNamespace === 'string' && typeof o.K8sPodName === 'string') {
    return { ip, hostIp, identity, node: intern(meta[1]!), namespace: intern(o.K8sNamespace), pod: o.K8sPodName };
  }
  const e: RemoteEndpoint = { ip, hostIp, identity };
  if (meta) e.node = intern(meta[1]!);
  if (typeof o.K8sNamespace === 'string') e.namespace = intern(o.K8sNamespace);
  if (typeof o.K8sPodName === 'string') e.pod = o.K8sPodName;
  return e;
}

/**
 * The value layout an agent writes (ipcacheValue, and Go's encoding/json for Cilium's
 * IPIdentityPair: fields in struct order, NamedPorts omitted), read straight from its bytes: a
 * listing of 300,000 keys is no JSON.parse, object and value text per key. Anything else (another
 * field order, escapes, non-ASCII, extra fields) is null here and goes through parseIpcacheValue.
 */
const lit = (s: string) => Buffer.from(s, 'latin1');
const L_IP = lit('{"IP":"'), L_HOST = lit('","Mask":null,"HostIP":"'), L_ID = lit('","ID":'), L_KEY = lit(',"Key":');
const L_META = lit(',"Metadata":"cilium-global:'), L_NS = lit('","K8sNamespace":"'), L_POD = lit('","K8sPodName":"');

/** one-entry cache of a string read from bytes: pods of one node come one after another */
function bytesInterner(intern: (s: string) => string): (b: Buffer, s: number, e: number) => string {
  let last = Buffer.alloc(0);
  let str = '';
  return (b, s, e) => {
    const n = e - s;
    if (n === last.length) {
      let i = 0;
      while (i < n && b[s + i] === last[i]) i++;
      if (i === n) return str;
    }
    str = intern(b.toString('latin1', s, e));
    last = Buffer.from(b.subarray(s, e));
    return str;
  };
}

export function createIpcacheBytesReader(intern: (s: string) => string = sharedIntern): (rest: string, b: Buffer) => RemoteEndpoint | undefined {
  const host = bytesInterner(intern), node = bytesInterner(intern), ns = bytesInterner(intern);
  let at = 0;
  const match = (b: Buffer, l: Buffer): boolean => {
    if (at + l.length > b.length) return false;
    for (let i = 0; i < l.length; i++) if (b[at + i] !== l[i]) return false;
    at += l.length;
    return true;
  };
  /** a dotted quad as written by Go (no leading zeros) up to a '"'; -1 if not one */
  const quad = (b: Buffer): number => {
    let n = 0;
    for (let part = 0; part < 4; part++) {
      if (part && b[at++] !== 0x2e) return -1;
      const s = at;
      let v = 0;
      while (at < b.length && b[at]! >= 0x30 && b[at]! <= 0x39 && at - s < 3) v = v * 10 + b[at++]! - 0x30;
      if (at === s || v > 255 || (b[s] === 0x30 && at - s > 1)) return -1;
      n = n * 256 + v;
    }
    return b[at] === 0x22 ? n : -1;
  };
  const digits = (b: Buffer): number => {
    const s = at;
    let v = 0;
    while (at < b.length && b[at]! >= 0x30 && b[at]! <= 0x39 && at - s < 9) v = v * 10 + b[at++]! - 0x30;
    return at === s || (b[s] === 0x30 && at - s > 1) ? -1 : v;
  };
  /** plain ASCII string content up to `stop` (no escapes); the end offset or -1 */
  const text = (b: Buffer, stop: number): number => {
    while (at < b.length) {
      const c = b[at]!;
      if (c === stop || c === 0x22) return c === stop ? at : -1;
      if (c === 0x5c || c < 0x20 || c >= 0x80) return -1;
      at++;
    }
    return -1;
  };
  const fast = (rest: string, b: Buffer): RemoteEndpoint | undefined | null => {
    at = 0;
    if (!match(b, L_IP)) return null;
    const ipS = at;
    if (quad(b) < 0) return null;
    // the key names the address the value holds (the slow path's check)
    if (rest.length !== at - ipS) return undefined;
    for (let i = 0; i < rest.length; i++) if (rest.charCodeAt(i) !== b[ipS + i]) return undefined;
    if (!match(b, L_HOST)) return null;
    const hS = at;
    if (quad(b) < 0) return null;
    const hE = at;
    if (!match(b, L_ID)) return null;
    const id = digits(b);
    if (id < 0) return null;
    if (id >= 1 << 24) return undefined;
    if (!match(b, L_KEY) || digits(b) < 0 || !match(b, L_META)) return null;
    // cilium-global:<namespace>:<node>:<endpoint id>
    if (text(b, 0x3a) < 0) return null;
    const nS = ++at;
    const nE = text(b, 0x3a);
    if (nE <= nS) return null;
    at++;
    if (digits(b) < 0 || !match(b, L_NS)) return null;
    const sS = at, sE = text(b, 0x22);
    if (sE < 0 || !match(b, L_POD)) return null;
    const pS = at, pE = text(b, 0x22);
    if (pE < 0 || pE + 2 !== b.length || b[pE + 1] !== 0x7d) return null;
    const identity = id === ReservedIdentity.host ? ReservedIdentity.remoteNode : id;
    return { ip: rest, hostIp: host(b, hS, hE), identity, node: node(b, nS, nE), namespace: ns(b, sS, sE), pod: b.toString('latin1', pS, pE) };
  };
  return (rest, b) => {
    const e = fast(rest, b);
    return e === null ? parseIpcacheValue(`${IPCACHE_PREFIX}${rest}`, b.toString(), intern) : e;
  };
}

