/**
 * DNS wire helpers for the proxy: a guarded query parse (size, header, one question), error
 * replies built from the raw header (so even an undecodable packet gets one), and the facts of
 * an answer the proxy needs (IPs, minimum TTL, CNAMEs, record types, rcode). Never throws.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { u16be } from '../../common/bytes.ts';
import dnsPacket from 'dns-packet';

/** Largest query the proxy accepts (a query is one question; EDNS adds a few bytes). */
export const MAX_QUERY_BYTES = 512;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/**
 * A query's question section as it came (name labels, type, class: `bytes`) and what the proxy
 * reads from it. Interned by those bytes: the same question parses to the same object, so a
 * steady stream of known names makes no new name string per query (building it char by char was
 * most of the bytes a proxied query allocated), and the name's hash is already in the string for
 * every Map that looks it up after. Never changed once made.
 */
export interface Question {
  /** the question section, `msg[12, 12 + bytes.length)` of the query it came in */
  readonly bytes: Buffer;
  readonly name: string;
  /** [the question's type], shared by every query of the question: read only */
  readonly qtypes: string[];
}

export type ParsedQuery =
  | { ok: true; id: number; name: string; qtypes: string[]; question: Question }
  | { ok: false; reason: QueryFault; id?: number };

/** Why a query was not parsed (what is not parsed is dropped or answered FORMERR, never forwarded). */
export type QueryFault = 'short' | 'oversized' | 'malformed' | 'not-a-query' | 'no-question';

/** Interned questions by their bytes' hash (a collision replaces: the bytes are compared on every hit). */
const MAX_QUESTIONS = 8192;
const questions = new BoundedCache<number, Question>(MAX_QUESTIONS);

/**
 * parseQuery of the query `buf[off, off + len)` (a slot of a receive arena: no view made of it),
 * as the hot path takes it: the interned question, or why there is none (a string: no object per
 * query either way). The query's id is `buf.readUInt16BE(off)` (len ≥ 12 unless 'short').
 */
export function queryAt(buf: Buffer, off: number, len: number): Question | QueryFault {
  if (len < 12) return 'short';
  if (len > MAX_QUERY_BYTES) return 'oversized';
  if (buf[off + 2]! & 0x80) return 'not-a-query';
  if (u16be(buf, off + 4) !== 1) return 'no-question';
  if (u16be(buf, off + 6) !== 0 || u16be(buf, off + 8) !== 0) return 'malformed';
  // the labels' structure first (bounded by the message: ≤ 512 bytes)
  const msgEnd = off + len;
  let o = off + 12;
  for (;;) {
    if (o >= msgEnd) return 'malformed';
    const l = buf[o]!;
    if (l === 0) { o++; break; }
    if (l > 63) return 'malformed'; // compression pointer or reserved bits
    if (o + 1 + l > msgEnd) return 'malformed';
    o += l + 1;
  }
  if (o + 4 > msgEnd) return 'malformed';
  const end = o + 4;
  // FNV-1a over the question's bytes
  let h = 0x811c9dc5;
  for (let i = off + 12; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  // a key below 2^30 is a small integer: a Map key from the full 32 bits was a heap number per query
  h &= 0x3fffffff;
  const had = questions.get(h);
  if (had !== undefined && sameBytes(had.bytes, buf, off + 12, end)) return had;
  const q = parseQuestion(buf, off, end);
  if (q === undefined) return 'malformed';
  questions.set(h, q);
  return q;
}

/**
 * Parses a query without dns-packet: header, exactly one question with an uncompressed name
 * (RFC 1035 limits: labels ≤ 63, name ≤ 255), no answer/authority records (an EDNS OPT in the
 * additional section is fine). Anything else is malformed. Every query is checked whole; a
 * question whose bytes were parsed before is taken from `questions` (the name depends on those
 * bytes alone, so it is the name a new parse would make).
 */
export function parseQuery(msg: Buffer): ParsedQuery {
  const q = queryAt(msg, 0, msg.length);
  if (typeof q === 'string') return q === 'short' ? { ok: false, reason: q } : { ok: false, reason: q, id: msg.readUInt16BE(0) };
  return { ok: true, id: msg.readUInt16BE(0), name: q.name, qtypes: q.qtypes, question: q };
}

function sameBytes(a: Buffer, msg: Buffer, start: number, end: number): boolean {
  if (a.length !== end - start) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== msg[start + i]) return false;
  return true;
}

/** The name of the question of the query at `off` whose labels were checked (`end`: past qtype and qclass); undefined: over 255 characters. */
function parseQuestion(msg: Buffer, off: number, end: number): Question | undefined {
  let o = off + 12;
  let name = '';
  for (;;) {
    const len = msg[o]!;
    if (len === 0) { o++; break; }
    for (let i = o + 1; i <= o + len; i++) {
      let c = msg[i]!;
      if (c >= 65 && c <= 90) c += 32;
      name += c === 46 || c <= 32 || c >= 127 ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
    }
    name += '.';
    o += len + 1;
    if (name.length > 255) return undefined;
  }
  return { bytes: Buffer.from(msg.subarray(off + 12, end)), name: name === '' ? '.' : name, qtypes: qtypeList(msg.readUInt16BE(o)) };
}

/** One shared, frozen [type name] per query type. */
const qtypeLists = new Map<number, string[]>();
function qtypeList(t: number): string[] {
  let l = qtypeLists.get(t);
  if (l === undefined) {
    l = Object.freeze([qtypeName(t)]) as string[];
    if (qtypeLists.size < 1024) qtypeLists.set(t, l);
  }
  return l;
}

const QTYPE_NAMES: Record<number, string> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 13: 'HINFO', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 35: 'NAPTR',
  39: 'DNAME', 41: 'OPT', 43: 'DS', 46: 'RRSIG', 47: 'NSEC', 48: 'DNSKEY', 52: 'TLSA', 64: 'SVCB', 65: 'HTTPS',
  252: 'AXFR', 255: 'ANY', 257: 'CAA',
};
/** A query type's name as Hubble shows it (`TYPE<n>` when unnamed). */
export function qtypeName(t: number): string {
  return QTYPE_NAMES[t] ?? `TYPE${t}`;
}

/**
 * An error reply (REFUSED, NXDOMAIN, FORMERR, SERVFAIL) to a query: its id, RD copied, QR and
 * RA set, the question echoed when the query had a well-formed one.
 */
export function errorReply(query: Buffer, rcode: number): Buffer | null {
  if (query.length < 12) return null;
  const h = Buffer.alloc(12);
  query.copy(h, 0, 0, 4);
  const rd = query[2]! & 0x01;
  h[2] = 0x80 | (query[2]! & 0x78) | rd; // QR, opcode, RD
  h[3] = 0x80 | (rcode & 0x0f); // RA, rcode
  let question: Buffer = Buffer.alloc(0);
  if (rcode !== RCODE.FORMERR && query.readUInt16BE(4) === 1) {
    let o = 12;
    while (o < query.length && query[o]! !== 0 && (query[o]! & 0xc0) === 0) o += query[o]! + 1;
    if (o < query.length && query[o] === 0 && o + 5 <= query.length) {
      question = query.subarray(12, o + 5);
      h.writeUInt16BE(1, 4);
    }
  }
  return Buffer.concat([h, question]);
}

/**
 * errorReply(query, rcode) for a query that parsed (rcode not FORMERR), from what the proxy kept
 * of it: the id, its third header byte (opcode, RD) and its question. The same bytes; no copy of
 * the query is kept while it is upstream.
 */
export function questionReply(id: number, flags: number, q: Question, rcode: number): Buffer {
  const r = Buffer.allocUnsafe(12 + q.bytes.length);
  r.writeUInt16BE(id, 0);
  r[2] = 0x80 | (flags & 0x78) | (flags & 0x01); // QR, opcode, RD
  r[3] = 0x80 | (rcode & 0x0f); // RA, rcode
  r.writeUInt16BE(1, 4);
  r.writeUInt32BE(0, 6);
  r.writeUInt16BE(0, 10);
  q.bytes.copy(r, 12);
  return r;
}

export interface AnswerFacts {
  id: number;
  rcode: number;
  ips: string[];
  /** minimum TTL over the A/AAAA records (0 when none) */
  ttl: number;
  cnames: string[];
  rrtypes: string[];
}

/**
 * The dotted text of A-record addresses, and [that text] for one-record answers (shared and
 * frozen: answers' facts are read only), interned in a direct-mapped table by the address as an
 * int32 (a slot's address compared on every hit; a new address takes its slot): answers repeat
 * the same few IPs. No Map and no number box per lookup (an address from 64.0.0.0 up is no small
 * integer, and a Map key of it was an allocation per answer).
 */
const V4_BITS = 14;
const v4Keys = new Int32Array(1 << V4_BITS);
const v4Texts: (string | undefined)[] = new Array<string | undefined>(1 << V4_BITS).fill(undefined);
const v4Lists: (string[] | undefined)[] = new Array<string[] | undefined>(1 << V4_BITS).fill(undefined);
function v4Key(buf: Buffer, o: number): number {
  return (buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!;
}
function v4Slot(k: number): number {
  return Math.imul(k, 0x9e3779b1) >>> (32 - V4_BITS);
}
/** Dotted text of the A record at buf[o..o+4). */
function v4At(buf: Buffer, o: number): string {
  const k = v4Key(buf, o);
  const i = v4Slot(k);
  const t = v4Texts[i];
  if (t !== undefined && v4Keys[i] === k) return t;
  const text = `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`;
  v4Keys[i] = k;
  v4Texts[i] = text;
  v4Lists[i] = undefined;
  return text;
}
/** [the dotted text] of a one-record answer's address. */
function v4ListAt(buf: Buffer, o: number): string[] {
  const text = v4At(buf, o); // the slot now holds this address
  const i = v4Slot(v4Key(buf, o));
  return v4Lists[i] ?? (v4Lists[i] = Object.freeze([text]) as string[]);
}

/**
 * The distinct addresses, in order, of the `an` A records from `msg[o]` (checked: 16 bytes each),
 * interned as v4Lists are: a direct-mapped table by a hash of the list (its list compared on every
 * hit, a new list takes the slot), so a multi-address answer (or one with none) makes no list per
 * answer. Over 64 records: a list of its own, as aRecords.
 */
const MULTI_BITS = 12;
const multiLists: (string[] | undefined)[] = new Array<string[] | undefined>(1 << MULTI_BITS).fill(undefined);
const distinct: string[] = [];
function v4ListOf(msg: Buffer, o: number, an: number): string[] {
  if (an > 64) {
    const ips: string[] = [];
    for (let i = 0, r = o; i < an; i++, r += 16) {
      const ip = v4At(msg, r + 12);
      if (!ips.includes(ip)) ips.push(ip);
    }
    return ips;
  }
  let n = 0;
  let h = 0x811c9dc5;
  for (let i = 0, r = o; i < an; i++, r += 16) {
    const ip = v4At(msg, r + 12);
    let seen = false;
    for (let j = 0; j < n; j++) if (distinct[j] === ip) { seen = true; break; }
    if (seen) continue;
    distinct[n++] = ip;
    h = Math.imul(h ^ v4Key(msg, r + 12), 0x01000193);
  }
  const slot = (h ^ n) >>> (32 - MULTI_BITS);
  const had = multiLists[slot];
  if (had !== undefined && had.length === n) {
    let same = true;
    for (let j = 0; j < n; j++) if (had[j] !== distinct[j]) { same = false; break; }
    if (same) return had;
  }
  const list = Object.freeze(distinct.slice(0, n)) as string[];
  multiLists[slot] = list;
  return list;
}

/**
 * The common answer `msg[off, off + len)` without dns-packet (the per-answer hot path): one
 * question with a plain name, only A records whose owner is a pointer to that question (0xc00c)
 * with 4 bytes of data, nothing in authority or additional. Any other shape returns undefined and
 * goes through dns-packet, so the facts are exactly what dns-packet would give.
 */
function fastAnswerFacts(msg: Buffer, off: number, len: number, into: AnswerFacts | undefined): AnswerFacts | undefined {
  const end = off + len;
  if (len < 12 || u16be(msg, off + 4) !== 1 || u16be(msg, off + 8) !== 0 || u16be(msg, off + 10) !== 0) return undefined;
  let o = off + 12;
  let total = 0;
  for (;;) {
    if (o >= end) return undefined;
    const l = msg[o++]!;
    if (l === 0) break;
    if ((l & 0xc0) !== 0 || o + l > end) return undefined;
    total += l + 1;
    if (total > 254) return undefined;
    o += l;
  }
  o += 4; // qtype, qclass
  if (o > end) return undefined;
  const an = u16be(msg, off + 6);
  // every record checked before anything is made: the common one-record answer then costs its
  // facts alone (its IP list, the record types and the empty CNAME list are shared)
  let ttl = -1;
  for (let i = 0, r = o; i < an; i++, r += 16) {
    // owner 0xc00c, type A, class, ttl, rdlength 4, address
    if (r + 16 > end || msg[r] !== 0xc0 || msg[r + 1] !== 12 || u16be(msg, r + 2) !== 1 || u16be(msg, r + 10) !== 4) return undefined;
    // the TTL from its bytes: readUInt32BE's number was a heap number per record
    const t = msg[r + 6]! * 0x1000000 + ((msg[r + 7]! << 16) | (msg[r + 8]! << 8) | msg[r + 9]!);
    ttl = ttl < 0 ? t : Math.min(ttl, t);
  }
  const ips = an === 1 ? v4ListAt(msg, o + 12) : v4ListOf(msg, o, an);
  const id = u16be(msg, off), rcode = msg[off + 3]! & 0x0f;
  if (into === undefined) return { id, rcode, ips, ttl: Math.max(0, ttl), cnames: NO_NAMES, rrtypes: aRecords(an) };
  into.id = id; into.rcode = rcode; into.ips = ips; into.ttl = Math.max(0, ttl); into.cnames = NO_NAMES; into.rrtypes = aRecords(an);
  return into;
}

/** Shared, frozen lists (answers' facts are read only): no CNAMEs, and n record types 'A'. */
const NO_NAMES = Object.freeze([]) as unknown as string[];
const aLists: string[][] = [];
function aRecords(n: number): string[] {
  if (n > 64) return new Array<string>(n).fill('A');
  let l = aLists[n];
  if (l === undefined) aLists[n] = l = Object.freeze(new Array<string>(n).fill('A')) as string[];
  return l;
}

/** The facts of an answer (null when it does not decode). */
export function answerFacts(msg: Buffer): AnswerFacts | null {
  return answerFactsAt(msg, 0, msg.length);
}

/**
 * answerFacts of the answer `buf[off, off + len)` (a slot of a receive arena: a view is made only
 * for dns-packet). `scratch`: the common answer's facts are written into it and it is returned
 * (valid until its next use: a caller that keeps them copies); other shapes make their own.
 */
export function answerFactsAt(buf: Buffer, off: number, len: number, scratch?: AnswerFacts): AnswerFacts | null {
  if (len < 12) return null;
  const fast = fastAnswerFacts(buf, off, len, scratch);
  if (fast) return fast;
  return slowAnswerFacts(off === 0 && len === buf.length ? buf : buf.subarray(off, off + len));
}

/** answerFacts through dns-packet (every shape; exported for the equivalence test). */
export function slowAnswerFacts(msg: Buffer): AnswerFacts | null {
  if (msg.length < 12) return null;
  let p: dnsPacket.Packet;
  try {
    p = dnsPacket.decode(msg);
  } catch {
    return null;
  }
  const ips: string[] = [];
  const cnames: string[] = [];
  const rrtypes: string[] = [];
  let ttl = -1;
  for (const a of p.answers ?? []) {
    rrtypes.push(String(a.type));
    if (a.type === 'A' || a.type === 'AAAA') {
      const ip = String(a.data);
      if (!ips.includes(ip)) ips.push(ip);
      const t = (a as { ttl?: number }).ttl ?? 0;
      ttl = ttl < 0 ? t : Math.min(ttl, t);
    } else if (a.type === 'CNAME') {
      const c = String(a.data);
      cnames.push(c.endsWith('.') ? c : `${c}.`);
    }
  }
  return { id: msg.readUInt16BE(0), rcode: (msg[3]! & 0x0f), ips, ttl: Math.max(0, ttl), cnames, rrtypes };
}
