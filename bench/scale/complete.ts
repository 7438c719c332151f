// Completeness of a real agent's pinned ipcache against etcd, for bench/scale/run.ts: the map must
// hold exactly what the cluster's keys name (every ipcache key, every other node's addresses) plus
// the node's own entries (what it held before any simulated key existed and the cluster does not
// name: world, host, ...), no more and no less; the identities of a sample are compared too.
// etcd is read at one revision, in pages, keys only for the ipcache (300,000 values would be
// ~100 MB); node values are read whole (their addresses are in them).
import type { Etcd3 } from 'etcd3';
import type { BpfMap } from '../../src/sys/bpf.ts';
import { decodeIpcacheKey, decodeIpcacheVal, IPCACHE_KEY_SIZE } from '../../src/datapath/linux/codec.ts';
import { IPCACHE_PREFIX, NODES_PREFIX, parseIpcacheValue, parseNodeValue } from '../../src/agent/cluster-keys.ts';
import { hostPrefix } from '../../src/ipcache/prefix.ts';
import { ReservedIdentity } from '../../src/identity/identity.ts';

// keys per range read: under grpc-js's 4 MiB a response (an ipcache key alone ~50 bytes, a node
// key with its value ~460: 10,000 nodes in one page would not fit)
const KEYS_PAGE = 20_000;
const VALUES_PAGE = 2_000;

function prefixEnd(p: string): Buffer {
  const b = Buffer.from(p);
  b[b.length - 1]!++;
  return b;
}

/** What etcd holds at one revision: the ipcache keys' addresses, and every node's addresses by node key. */
export interface ClusterSnapshot {
  revision: number;
  /** host prefixes of every ipcache key (`10.1.2.3/32`) */
  ipcache: Set<string>;
  /** `<cluster>/<node>` → that node's addresses as host prefixes (InternalIP, router IPs) */
  nodes: Map<string, string[]>;
  /** node keys whose value does not parse (none expected: the bench writes them) */
  badNodes: string[];
}

async function pages(etcd: Etcd3, prefix: string, keysOnly: boolean, revision: number | undefined, visit: (key: string, value: Buffer) => void): Promise<number> {
  const end = prefixEnd(prefix);
  let from = Buffer.from(prefix);
  let rev = revision ?? 0;
  for (;;) {
    const r = await etcd.kv.range({ key: from, range_end: end, limit: keysOnly ? KEYS_PAGE : VALUES_PAGE, keys_only: keysOnly, ...(rev ? { revision: String(rev) } : {}) });
    if (!rev) rev = Number(r.header.revision);
    for (const kv of r.kvs) visit(kv.key.toString('utf8', Buffer.byteLength(prefix)), kv.value);
    if (!r.more || !r.kvs.length) return rev;
    from = Buffer.concat([r.kvs.at(-1)!.key, Buffer.from([0])]);
  }
}

export async function readCluster(etcd: Etcd3): Promise<ClusterSnapshot> {
  const ipcache = new Set<string>();
  const revision = await pages(etcd, IPCACHE_PREFIX, true, undefined, (ip) => { ipcache.add(hostPrefix(ip)); });
  const nodes = new Map<string, string[]>();
  const badNodes: string[] = [];
  await pages(etcd, NODES_PREFIX, false, revision, (key, value) => {
    const n = parseNodeValue(value.toString());
    if (!n) { badNodes.push(key); return; }
    nodes.set(key, [n.ip, ...(n.routerIp ? [n.routerIp] : []), ...(n.routerIp6 ? [n.routerIp6] : [])].map(hostPrefix));
  });
  return { revision, ipcache, nodes, badNodes };
}

/** What node `self` (`default/node2`) must hold from the cluster: every ipcache key, every other node's addresses. */
export function expectedFromCluster(c: ClusterSnapshot, self: string): Map<string, 'pod' | 'node'> {
  const out = new Map<string, 'pod' | 'node'>();
  for (const [name, addrs] of c.nodes) if (name !== self) for (const a of addrs) out.set(a, 'node');
  // a remote pod's entry wins over a node address (cluster.ts entryAt)
  for (const p of c.ipcache) out.set(p, 'pod');
  return out;
}

/** Every entry of a pinned ipcache: prefix → identity. */
export function readMap(m: BpfMap): Map<string, number> {
  const out = new Map<string, number>();
  m.forEachBatch(4096, (keys, values, count) => {
    const vs = values.length / (keys.length / IPCACHE_KEY_SIZE);
    for (let i = 0; i < count; i++) {
      out.set(decodeIpcacheKey(keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE)), decodeIpcacheVal(values.subarray(i * vs, (i + 1) * vs)).identity);
    }
  });
  return out;
}

export interface Verdict {
  node: string;
  entries: number;
  expected: number;
  missing: string[];
  extra: string[];
  /** sampled keys whose identity in the map is not etcd's */
  wrongIdentity: string[];
  sampled: number;
}

/** The node's own entries: what its map held with no simulated key yet, less what the cluster named then. */
export function ownEntries(map: Map<string, number>, c: ClusterSnapshot, self: string): Set<string> {
  const fromCluster = expectedFromCluster(c, self);
  return new Set([...map.keys()].filter((k) => !fromCluster.has(k)));
}

/**
 * Compares one node's map with the cluster. `values`: ipcache key (address) → its value, for the
 * sample whose identities are checked (node addresses are all checked: remote-node).
 */
export function compare(node: string, self: string, map: Map<string, number>, c: ClusterSnapshot, own: Set<string>, values: Map<string, string>): Verdict {
  const want = expectedFromCluster(c, self);
  for (const k of own) if (!want.has(k)) want.set(k, 'node');
  const missing: string[] = [];
  const extra: string[] = [];
  const wrongIdentity: string[] = [];
  for (const k of want.keys()) if (!map.has(k)) missing.push(k);
  for (const k of map.keys()) if (!want.has(k)) extra.push(k);
  for (const [k, kind] of want) {
    if (kind !== 'node' || own.has(k) || !map.has(k)) continue;
    if (map.get(k) !== ReservedIdentity.remoteNode) wrongIdentity.push(`${k} ${map.get(k)} (remote-node ${ReservedIdentity.remoteNode})`);
  }
  for (const [ip, v] of values) {
    const p = hostPrefix(ip);
    const e = parseIpcacheValue(`${IPCACHE_PREFIX}${ip}`, v);
    if (!e || !map.has(p) || own.has(p)) continue;
    if (map.get(p) !== e.identity) wrongIdentity.push(`${p} ${map.get(p)} (etcd ${e.identity})`);
  }
  return { node, entries: map.size, expected: want.size, missing: missing.sort(), extra: extra.sort(), wrongIdentity, sampled: values.size };
}

/** `n` ipcache keys spread over the snapshot, with their values now (a key gone meanwhile is left out); 128 gets per Txn. */
export async function sampleValues(etcd: Etcd3, c: ClusterSnapshot, n: number): Promise<Map<string, string>> {
  const all = [...c.ipcache];
  const step = Math.max(1, Math.floor(all.length / n));
  const ips = all.filter((_, i) => i % step === 0).slice(0, n).map((p) => p.slice(0, p.lastIndexOf('/')));
  const out = new Map<string, string>();
  for (let i = 0; i < ips.length; i += 128) {
    const part = ips.slice(i, i + 128);
    const r = await etcd.kv.txn({ compare: [], success: part.map((ip) => ({ request_range: { key: Buffer.from(`${IPCACHE_PREFIX}${ip}`) } })), failure: [] });
    r.responses.forEach((x, j) => { const kv = x.response_range?.kvs[0]; if (kv) out.set(part[j]!, kv.value.toString()); });
  }
  return out;
}

export const sameSnapshot = (a: ClusterSnapshot, b: ClusterSnapshot): boolean =>
  a.ipcache.size === b.ipcache.size && [...a.ipcache].every((k) => b.ipcache.has(k))
  && a.nodes.size === b.nodes.size && [...a.nodes].every(([k, v]) => b.nodes.get(k)?.join() === v.join());

export function describe(v: Verdict, sample = 10): string {
  const s = (xs: string[]) => `${xs.length}${xs.length ? ` (${xs.slice(0, sample).join(', ')}${xs.length > sample ? ', …' : ''})` : ''}`;
  return `${v.node}: ${v.entries} entries, ${v.expected} expected; missing ${s(v.missing)}; extra ${s(v.extra)}; wrong identity ${s(v.wrongIdentity)} of ${v.sampled} sampled`;
}

export const complete = (v: Verdict): boolean => !v.missing.length && !v.extra.length && !v.wrongIdentity.length;
