/**
 * etcd's KV.Range on the wire, for listings: the request encoded and the response read straight
 * from its protobuf bytes. A page of 16,384 ipcache keys through the generic client (protobufjs
 * objects, four int64 fields per key turned into decimal strings, a Buffer per key and value) cost
 * ~10 µs a key of agent CPU; read here it is the key and value text and the revision, nothing else.
 *
 * Field numbers (etcd api/etcdserverpb/rpc.proto, api/mvccpb/kv.proto):
 *   RangeRequest  key=1 range_end=2 limit=3 revision=4
 *   RangeResponse header=1 (ResponseHeader: revision=3) kvs=2 more=3 count=4
 *   KeyValue      key=1 create_revision=2 mod_revision=3 version=4 value=5 lease=6
 */
import { MembraneError } from '../common/errors.ts';

export interface RangeRequest {
  key: Buffer;
  rangeEnd: Buffer;
  limit?: number;
  revision?: number;
}

function varintSize(n: number): number {
  let s = 1;
  while (n >= 128) { n = Math.floor(n / 128); s++; }
  return s;
}
function putVarint(b: Buffer, at: number, n: number): number {
  while (n >= 128) { b[at++] = (n % 128) | 128; n = Math.floor(n / 128); }
  b[at++] = n;
  return at;
}

export function encodeRangeRequest(r: RangeRequest): Buffer {
  const limit = r.limit ?? 0, revision = r.revision ?? 0;
  const size = 1 + varintSize(r.key.length) + r.key.length + 1 + varintSize(r.rangeEnd.length) + r.rangeEnd.length
    + (limit ? 1 + varintSize(limit) : 0) + (revision ? 1 + varintSize(revision) : 0);
  const b = Buffer.alloc(size);
  let at = 0;
  b[at++] = (1 << 3) | 2; at = putVarint(b, at, r.key.length); at += r.key.copy(b, at);
  b[at++] = (2 << 3) | 2; at = putVarint(b, at, r.rangeEnd.length); at += r.rangeEnd.copy(b, at);
  if (limit) { b[at++] = 3 << 3; at = putVarint(b, at, limit); }
  if (revision) { b[at++] = 4 << 3; at = putVarint(b, at, revision); }
  return b;
}

/**
 * One listed key: the key's text past `skip` bytes (the prefix), its value (bytes `start` to `end`
 * of `buf`, valid during the call only), its mod_revision.
 */
export type RangeVisitor = (rest: string, buf: Buffer, start: number, end: number, modRevision: number) => void;

export interface RangeResult {
  /** the store's revision the range was read at (header.revision) */
  revision: number;
  more: boolean;
  count: number;
  /** the last key's bytes (a copy): where the next page starts */
  lastKey: Buffer | undefined;
}

function bad(what: string): never {
  throw new MembraneError('KVSTORE_PROTOCOL', `etcd: malformed RangeResponse (${what})`, { hint: 'is the endpoint an etcd v3 server?' });
}

/**
 * Reads a RangeResponse, calling `visit` for every key in order. `skip`: bytes of each key not
 * given as text (the listed prefix). Without `visit`, only the header fields and the last key are
 * read (each key-value stepped over by its length): where the next page starts, before this one
 * is handed on.
 */
export function decodeRangeResponse(b: Buffer, skip: number, visit: RangeVisitor | undefined): RangeResult {
  let pos = 0;
  const end = b.length;
  const varint = (): number => {
    let n = 0, mul = 1;
    for (;;) {
      if (pos >= end) bad('truncated varint');
      const c = b[pos++]!;
      n += (c & 127) * mul;
      if (c < 128) return n;
      mul *= 128;
      if (mul > 2 ** 63) bad('varint too long');
    }
  };
  const skipField = (wire: number): void => {
    if (wire === 0) varint();
    else if (wire === 2) { const l = varint(); pos += l; } // (pos += varint() would add to the position before the length)
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else bad(`wire type ${wire}`);
    if (pos > end) bad('truncated field');
  };
  let revision = 0, more = false, count = 0, lastStart = -1, lastEnd = -1, lastKv = -1;
  while (pos < end) {
    const tag = varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 1 && wire === 2) {
      const hEnd = varint() + pos;
      if (hEnd > end) bad('truncated header');
      while (pos < hEnd) {
        const t = varint();
        if (t === (3 << 3)) revision = varint(); else skipField(t & 7);
      }
    } else if (field === 2 && wire === 2) {
      const lenAt = pos;
      const kvEnd = varint() + pos;
      if (kvEnd > end) bad('truncated key-value');
      if (!visit) { lastKv = lenAt; pos = kvEnd; continue; }
      let kS = -1, kE = -1, vS = 0, vE = 0, mod = 0;
      while (pos < kvEnd) {
        const t = varint();
        if (t === ((1 << 3) | 2)) { const l = varint(); kS = pos; kE = pos + l; pos = kE; }
        else if (t === ((5 << 3) | 2)) { const l = varint(); vS = pos; vE = pos + l; pos = vE; }
        else if (t === (3 << 3)) mod = varint();
        else skipField(t & 7);
      }
      if (pos !== kvEnd || kS < 0 || kE > kvEnd || vE > kvEnd || kE - kS < skip) bad('key-value fields');
      visit(b.toString('utf8', kS + skip, kE), b, vS, vE, mod);
      lastStart = kS; lastEnd = kE;
    } else if (field === 3 && wire === 0) more = varint() !== 0;
    else if (field === 4 && wire === 0) count = varint();
    else skipField(wire);
  }
  if (lastKv >= 0) {
    // without a visitor the key-values were stepped over by their length: the last one's key is read now
    pos = lastKv;
    const kvEnd = varint() + pos;
    while (pos < kvEnd) {
      const t = varint();
      if (t === ((1 << 3) | 2)) { const l = varint(); lastStart = pos; lastEnd = pos + l; pos = lastEnd; } else skipField(t & 7);
    }
    if (pos !== kvEnd || lastStart < 0 || lastEnd > kvEnd || lastEnd - lastStart < skip) bad('key-value fields');
  }
  return { revision, more, count, lastKey: lastStart >= 0 ? Buffer.from(b.subarray(lastStart, lastEnd)) : undefined };
}
