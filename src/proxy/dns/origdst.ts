/**
 * The original destination of a steered UDP query. Node's dgram cannot read IP_RECVORIGDSTADDR,
 * but the datapath created a conntrack entry for the query's flow before steering it: the
 * egress entry (client ip:port → dst:53, endpoint), in the endpoint's own conntrack table,
 * names the destination. Candidates (the last
 * destination this endpoint used, the cluster DNS IP, the kube-dns pods) are tried with point
 * lookups (one syscall each); a full conntrack scan is the fallback.
 *
 * Key layout: bpf/lib/maps.h struct ct_key (44 bytes: saddr[16] daddr[16] sport dport proto
 * family dir pad ep_id pad2), family 4, dir DIR_EGRESS (2).
 */
import type { BpfMap } from '../../sys/bpf.ts';
import { openCtTable } from '../../datapath/linux/index.ts';
import { CT_KEY_SIZE as KEY_SIZE, ctOwnIndex } from '../../datapath/linux/codec.ts';

const DIR_EGRESS = 2;

function v4(ip: string, b: Buffer, off: number): boolean {
  const p = ip.split('.');
  if (p.length !== 4) return false;
  for (let i = 0; i < 4; i++) b[off + i] = Number(p[i]);
  return true;
}

export interface OrigDstDeps {
  pinRoot: string;
  candidates(): string[];
  /** Full scan fallback (LinuxDatapath.conntrack()). */
  scan?(): { srcIp: string; srcPort: number; dstIp: string; dstPort: number; proto: number; direction: string; endpointId: number }[];
}

export function createOrigDstLookup(deps: OrigDstDeps): (clientIp: string, clientPort: number, endpointId: number) => string | undefined {
  const tables = new Map<number, BpfMap>();
  const last = new Map<number, string>();
  const key = Buffer.alloc(KEY_SIZE);
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
  function has(m: BpfMap, clientIp: string, clientPort: number, dst: string, ep: number): boolean {
    key.fill(0);
    if (!v4(clientIp, key, 0) || !v4(dst, key, 16)) return false;
    key.writeUInt16BE(clientPort, 32);
    key.writeUInt16BE(53, 34);
    key[36] = 17;
    key[37] = 4;
    key[38] = DIR_EGRESS;
    key.writeUInt16LE(ep, 40);
    try { return m.lookup(key) !== null; } catch { return false; }
  }
  /**
   * The egress UDP entry of (client ip:port → *:53) in one endpoint's table: its destination. Read
   * in batches (one syscall per 256 entries, not one per key).
   */
  const want = Buffer.alloc(4);
  function scanOwn(m: BpfMap, clientIp: string, clientPort: number): string | undefined {
    if (!v4(clientIp, want, 0)) return undefined;
    let dst: string | undefined;
    try {
      m.forEachBatch(256, (keys, _values, count) => {
        for (let i = 0; i < count && !dst; i++) {
          const o = i * KEY_SIZE;
          if (keys[o + 36] !== 17 || keys[o + 37] !== 4 || keys[o + 38] !== DIR_EGRESS) continue;
          if (keys.readUInt16BE(o + 32) !== clientPort || keys.readUInt16BE(o + 34) !== 53 || keys.compare(want, 0, 4, o, o + 4) !== 0) continue;
          dst = `${keys[o + 16]}.${keys[o + 17]}.${keys[o + 18]}.${keys[o + 19]}`;
        }
      });
    } catch { /* table gone */ }
    return dst;
  }
  // (client ip:port) → destination, briefly: a resolver reusing its socket skips the lookups.
  const recent = new Map<string, { dst: string; at: number }>();
  const RECENT_MS = 2000;
  return (clientIp, clientPort, ep) => {
    const rk = `${clientIp}:${clientPort}`;
    const now = Date.now();
    const hit = recent.get(rk);
    if (hit && now - hit.at < RECENT_MS) return hit.dst;
    const dst = find(clientIp, clientPort, ep);
    if (dst) {
      if (recent.size > 8192) recent.clear();
      recent.set(rk, { dst, at: now });
    }
    return dst;
  };
  function find(clientIp: string, clientPort: number, ep: number): string | undefined {
    for (const fresh of [false, true]) {
      const m = ct(ep, fresh);
      if (!m) continue;
      const tried = new Set<string>();
      for (const c of [last.get(ep), ...deps.candidates()]) {
        if (!c || tried.has(c)) continue;
        tried.add(c);
        if (has(m, clientIp, clientPort, c, ep)) {
          last.set(ep, c);
          return c;
        }
      }
    }
    // no full scan given (the proxy process has no datapath): the endpoint's own table, key by key
    if (!deps.scan) {
      const m = ct(ep);
      const dst = m ? scanOwn(m, clientIp, clientPort) : undefined;
      if (dst) {
        last.set(ep, dst);
        return dst;
      }
    }
    try {
      for (const e of deps.scan?.() ?? []) {
        if (e.proto === 17 && e.srcIp === clientIp && e.srcPort === clientPort && e.endpointId === ep && e.direction === 'egress') {
          last.set(ep, e.dstIp);
          return e.dstIp;
        }
      }
    } catch { /* datapath busy */ }
    return last.get(ep) ?? deps.candidates()[0];
  }
}
