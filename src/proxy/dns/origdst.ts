/**
 * The original destination of a steered UDP query. Node's dgram cannot read IP_RECVORIGDSTADDR,
 * but the datapath created a conntrack entry for the query's flow before steering it: the
 * egress entry (client ip:port → dst:53, endpoint), in the endpoint's own conntrack table,
 * names the destination. The one home of this lookup, for the in-agent proxy and the proxy
 * process alike: candidates (the last destination this endpoint used, the kube-dns pod, the
 * cluster DNS IP) are tried with point lookups (one syscall each), then the endpoint's own table
 * is scanned in batches. Nothing found: the query's destination is UNKNOWN, never guessed (an
 * answer from the wrong address is dropped by the client, and a query judged against a guessed
 * server is judged against the wrong peer); the proxy refuses it with a record saying why.
 *
 * Key layout: bpf/lib/maps.h struct ct_key (CT_KEY_SIZE bytes: saddr[16] daddr[16] sport dport
 * proto family dir pad ep_id pad2), dir DIR_EGRESS (2), family the client's (4 or 6: an IPv4
 * address fills the first 4 bytes of its 16, the rest zero). A query's destination is looked up
 * in its own family only: an IPv6 client's entry never names an IPv4 server, nor the reverse.
 */
import { putU16be, u16be } from '../../common/bytes.ts';
import type { BpfMap } from '../../sys/bpf.ts';
import { sockAddrAt, sockAddrOf, type SockAddr } from '../../sys/sock-addr.ts';
import { openCtTable } from '../../datapath/linux/index.ts';
import { CT_KEY_SIZE as KEY_SIZE, ctOwnIndex } from '../../datapath/linux/codec.ts';

const DIR_EGRESS = 2;

/** Why a query's original destination is not known (the DNS proxy's record carries it). */
export interface OrigDstUnknown { readonly code: 'ORIGINAL_DESTINATION_UNKNOWN'; readonly reason: string }
const NO_TABLE: OrigDstUnknown = Object.freeze({ code: 'ORIGINAL_DESTINATION_UNKNOWN', reason: 'ORIGINAL_DESTINATION_UNKNOWN: the endpoint has no conntrack table (recreated or gone)' });
const NO_ENTRY: OrigDstUnknown = Object.freeze({ code: 'ORIGINAL_DESTINATION_UNKNOWN', reason: 'ORIGINAL_DESTINATION_UNKNOWN: no egress conntrack entry for the query (the datapath did not steer it, or it expired)' });

export interface OrigDstDeps {
  pinRoot: string;
  /** destinations to try first by point lookup (the cluster DNS server and Service IP) */
  candidates(): readonly string[];
}

export type OrigDstLookup = ((client: SockAddr, clientPort: number, endpointId: number) => string | OrigDstUnknown) & {
  /** endpoints whose last destination is remembered (LAST_MAX at most) */
  readonly remembered: () => number;
};

/**
 * Endpoints whose last destination is remembered at most: a long-running agent sees endpoints
 * come and go (an attacker cannot mint endpoint ids, but churn would grow the map for ever). Past
 * it the endpoint that least recently found a destination is forgotten (its next query tries the
 * candidates and the scan, as a first one does); an endpoint whose table is gone is forgotten at once.
 */
export const LAST_MAX = 1024;

export function createOrigDstLookup(deps: OrigDstDeps): OrigDstLookup {
  const tables = new Map<number, BpfMap>();
  /** endpoint id → the destination its last query found, least recently found first (remember()) */
  const last = new Map<number, string>();
  function remember(ep: number, dst: string): void {
    // delete first: a Map keeps insertion order, so the first key is the least recently found
    if (!last.delete(ep) && last.size >= LAST_MAX) last.delete(last.keys().next().value!);
    last.set(ep, dst);
  }
  const key = Buffer.alloc(KEY_SIZE);
  /** a point lookup's value, read by none (the entry's presence is the answer): one buffer per value size, not one per lookup */
  const values = new Map<number, Buffer>();
  /** The endpoint's own table; `fresh` reopens it (the endpoint may have been re-created). */
  function ct(ep: number, fresh = false): BpfMap | undefined {
    let m = tables.get(ep);
    if (m && !fresh) return m;
    m?.close();
    tables.delete(ep);
    try { m = openCtTable(deps.pinRoot, ctOwnIndex(ep)); } catch { return undefined; }
    if (m) {
      if (tables.size > 4096) { for (const t of tables.values()) t.close(); tables.clear(); }
      tables.set(ep, m);
    }
    return m;
  }
  function has(m: BpfMap, client: SockAddr, clientPort: number, dst: string, ep: number): boolean {
    const d = sockAddrOf(dst);
    if (!d || d.family !== client.family) return false;
    // the client address is in key[0..16) already (written once per lookup)
    // byte by byte: Buffer's checked writers make an array per call below V8's optimizing tier (bytes.ts)
    for (let i = 16; i < KEY_SIZE; i++) key[i] = 0;
    const a = d.bytes;
    for (let i = 0; i < a.length; i++) key[16 + i] = a[i]!;
    putU16be(key, 32, clientPort);
    putU16be(key, 34, 53);
    key[36] = 17;
    key[37] = client.family;
    key[38] = DIR_EGRESS;
    key[40] = ep & 255;
    key[41] = (ep >>> 8) & 255;
    let out = values.get(m.valueBufSize);
    if (out === undefined) values.set(m.valueBufSize, (out = Buffer.alloc(m.valueBufSize)));
    try { return m.lookup(key, out) !== null; } catch { return false; }
  }
  /**
   * The egress UDP entry of (client ip:port → *:53) in one endpoint's table: its destination. Read
   * in batches (one syscall per 256 entries, not one per key).
   */
  function scanOwn(m: BpfMap, client: SockAddr, clientPort: number): string | undefined {
    let dst: string | undefined;
    const fam = client.family;
    try {
      m.forEachBatch(256, (keys, _values, count) => {
        for (let i = 0; i < count && !dst; i++) {
          const o = i * KEY_SIZE;
          if (keys[o + 36] !== 17 || keys[o + 37] !== fam || keys[o + 38] !== DIR_EGRESS) continue;
          if (u16be(keys, o + 32) !== clientPort || u16be(keys, o + 34) !== 53 || keys.compare(key, 0, 16, o, o + 16) !== 0) continue;
          dst = sockAddrAt(keys, o + 16, fam).ip;
        }
      });
    } catch { /* table gone */ }
    return dst;
  }
  // (client address, port) → destination, briefly: a resolver reusing its socket skips the
  // lookups. A direct-mapped table by the interned address's key and the port (a slot's key and
  // port compared on every hit; a new pair takes its slot), its times in a Float64Array: nothing
  // made per query (an entry object, a Map key of key × 65536 + port above 2^30, and Date.now()
  // were heap objects per query: a resolver's fresh source port misses on every query).
  const RECENT_BITS = 13;
  const RECENT_MS = 2000;
  const recentAddr = new Int32Array(1 << RECENT_BITS).fill(-1);
  const recentPort = new Int32Array(1 << RECENT_BITS);
  const recentAt = new Float64Array(1 << RECENT_BITS);
  const recentDst: (string | undefined)[] = new Array<string | undefined>(1 << RECENT_BITS).fill(undefined);
  const lookup = (client: SockAddr, clientPort: number, ep: number): string | OrigDstUnknown => {
    const slot = (Math.imul(client.key, 0x9e3779b1) ^ Math.imul(clientPort, 0x85ebca6b)) >>> (32 - RECENT_BITS);
    const now = performance.now();
    if (recentAddr[slot] === client.key && recentPort[slot] === clientPort && now - recentAt[slot]! < RECENT_MS) return recentDst[slot]!;
    const dst = find(client, clientPort, ep);
    if (typeof dst === 'string') {
      recentAddr[slot] = client.key;
      recentPort[slot] = clientPort;
      recentAt[slot] = now;
      recentDst[slot] = dst;
    }
    return dst;
  };
  return Object.assign(lookup, { remembered: () => last.size });
  function find(client: SockAddr, clientPort: number, ep: number): string | OrigDstUnknown {
    for (let i = 0; i < 16; i++) key[i] = 0;
    const a = client.bytes;
    for (let i = 0; i < a.length; i++) key[i] = a[i]!;
    let table = false;
    for (let pass = 0; pass < 2; pass++) {
      const m = ct(ep, pass === 1);
      if (!m) {
        // the endpoint's table is gone (the endpoint with it, or recreated without one yet)
        last.delete(ep);
        continue;
      }
      table = true;
      const l = last.get(ep);
      if (l && has(m, client, clientPort, l, ep)) return l;
      const cands = deps.candidates();
      for (let i = 0; i < cands.length; i++) {
        const c = cands[i]!;
        if (c === l) continue;
        if (has(m, client, clientPort, c, ep)) {
          remember(ep, c);
          return c;
        }
      }
      const dst = scanOwn(m, client, clientPort);
      if (dst) {
        remember(ep, dst);
        return dst;
      }
    }
    return table ? NO_ENTRY : NO_TABLE;
  }
}
