/**
 * The feed socket's framing: one JSON message per line, both ways. Agent → proxy: snapshots and
 * requests; proxy → agent: hello, acks, access records, status and replies.
 */
import type { Socket } from 'node:net';
import { NO_REQUEST_TIME, type AccessLogRecord, type AccessPeer, type AccessVerdict, type DnsAccessRecord, type HttpAccessRecord, type TlsAccessRecord } from '../../common/access-log.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import type { IpcacheDelta, ProxyDelta, ProxySnapshot } from './snapshot.ts';
import { FRAME_HEADER, FRAME_MARK, NUMBER_SLOT, RecordDecoder, TEXT_SLOTS, type RecordEncoder } from './record-codec.ts';

export interface ProxyStatusRow { name: string; port: number; state: string }

/**
 * An allowed DNS answer's IPs, reported by the DNS proxy to the agent (Cilium's standalone DNS
 * proxy: the FQDN → IP mapping the agent's name manager turns into identities and map writes).
 * `id` > 0: the proxy holds the answer until the agent says `dns-done` for it; 0: sent already.
 */
export interface DnsAnswerReport { id: number; ep: number; name: string; ips: string[]; ttl: number }

export type ProxyRequest = 'ai-usage' | 'metrics' | 'dns-stats';

export type ToProxy =
  | { t: 'snapshot'; seq: number; snap: ProxySnapshot }
  | ({ t: 'ipcache'; seq: number } & IpcacheDelta)
  /** what FQDN learning changed since the last snapshot or delta (the ipcache's changes with it) */
  | ({ t: 'delta'; seq: number } & ProxyDelta)
  | { t: 'req'; id: number; what: ProxyRequest }
  /** the datapath (and this proxy's snapshot, sent before) has these reports' IPs */
  | { t: 'dns-done'; ids: number[] }
  /**
   * what this agent reads besides JSON lines: `bin1`, access records as binary frames
   * (record-codec.ts); `tags`: the highest record tag it decodes (absent: 4; WIRE_TAGS now)
   */
  | { t: 'caps'; records: 'bin1'; tags?: number };

export type ToAgent =
  /** `deltas`: the proxy applies delta messages (an older one gets snapshots only) */
  | { t: 'hello'; pid: number; deltas?: boolean }
  | { t: 'ack'; seq: number }
  | { t: 'records'; items: WireRecord[]; lost?: number }
  | { t: 'dns-answers'; items: DnsAnswerReport[] }
  | { t: 'status'; rows: ProxyStatusRow[] }
  /** a delta or ipcache message came out of order, or did not apply to what the proxy holds: send a whole snapshot */
  | { t: 'resync'; seq: number; reason: string }
  | { t: 'res'; id: number; ok: boolean; body?: unknown; error?: string };

/**
 * An access record on the feed. Its peers travel as address, port, identity and the local
 * endpoint's id (0: none), never as the endpoint with its labels: the agent has both (its
 * endpoint table, its identities), and its Hubble parser then reuses the one flow endpoint it
 * made per endpoint view instead of sorting labels per record. Sent whole, a DNS query's two
 * records (both endpoints, their labels) were ~2 kB of JSON and most of the agent's CPU per
 * proxied query (bench/dns, 2026-12-05: JSON.parse, GC and label sorting, ~88 µs per query).
 *
 * A DNS record (two per query) is one flat array: tag 0, then the fields in DnsFields' order;
 * absent numbers are -1, absent lists 0, an absent reason ''. An HTTP record without optional
 * fields (nearly every request and response) is one too: tag 2, HttpFields (positional, ~0.5 us
 * to encode instead of ~1.3 us for the object, thread CPU). Other records: tag 1, the record
 * without its peers, then the two peers. A DNS response after its request in the same message:
 * tag 3 (the answer's fields and how far back the request is). An intercepted HTTPS request or
 * response (TLS interception: `tls` set, nothing else optional) is tag 4, tag 2's fields and the
 * server name: as its object (tag 1) it cost ~5 µs from encoding to the agent's decoded record
 * against ~2 µs (thread CPU, loop of 200k), two per request, and 404 bytes against ~200.
 * A TLS record (one per connection the SNI filter or the interceptor decides) whose optional
 * fields are the ones those proxies set is tag 5, TlsFields: as its object (tag 1) it was JSON
 * both ways, ~1.1 µs more to encode and ~1.5 µs more for the agent's decode and flow per record
 * (one per intercepted or SNI-decided connection), 237 bytes against 57.
 */
export type WireRecord =
  | [0, ...DnsFields]
  | [1, Omit<AccessLogRecord, 'client' | 'server'>, ...WirePeers]
  | [2, ...HttpFields]
  | [3, ...DnsAnswerFields]
  | [4, ...HttpFields, sni: string]
  | [5, ...TlsFields];
type WirePeers = [cIp: string, cPort: number, cIdentity: number, cEp: number, sIp: string, sPort: number, sIdentity: number, sEp: number];
type DnsFields = [
  type: 0 | 1, transport: 0 | 1, verdict: 0 | 1 | 2, direction: 0 | 1, timeMs: number, ...WirePeers,
  query: string, qtypes: string[], rcode: number, ips: string[] | 0, ttl: number, cnames: string[] | 0, rrtypes: string[] | 0, latencyNs: number, reason: string,
];

/**
 * Tag 3: a DNS response whose request record went `back` items earlier in the same message (the
 * proxy's two records of a query share their peers, name, types, transport and direction): only
 * what the answer adds travels, ~60 % of the pair's second record. A message split that would part
 * them sends the response whole (tag 0) instead (expandAnswer).
 */
type DnsAnswerFields = [back: number, verdict: 0 | 1 | 2, timeMs: number, rcode: number, ips: string[] | 0, ttl: number, cnames: string[] | 0, rrtypes: string[] | 0, latencyNs: number, reason: string];

type HttpFields = [
  type: 0 | 1, verdict: 0 | 1 | 2, direction: 0 | 1, timeMs: number, ...WirePeers, endpointId: number,
  method: string, url: string, host: string, path: string, protocol: string, headers: readonly string[], code: number, latencyNs: number, requestTimeMs: number,
];

/** Absent strings are '', absent alpn 0, absent proxyPort -1; flags: 1 intercepted, 2 resumed (both only ever `true` when set). */
type TlsFields = [
  verdict: 0 | 1 | 2, direction: 0 | 1, timeMs: number, ...WirePeers, endpointId: number,
  sni: string, version: string, alpn: readonly string[] | 0, flags: number, reason: string, proxyPort: number,
];

/**
 * The highest record tag this build decodes (the agent says so in its caps). A proxy writes tag
 * 5 only to an agent that said it reads it: an older agent would refuse it (counted as bad, the
 * flow gone); to one that did not say, a TLS record goes as its object (tag 1).
 */
export const WIRE_TAGS = 5;

/** Values a positional record has, its tag included (the encoder's open() and both decoders' check); 0: no positional tag. */
const DNS_VALUES = 23, HTTP_VALUES = 23, INTERCEPTED_VALUES = 24, ANSWER_VALUES = 11, TLS_VALUES = 19;
function positionalValues(tag: number): number {
  return tag === 0 ? DNS_VALUES : tag === 2 ? HTTP_VALUES : tag === 4 ? INTERCEPTED_VALUES : tag === 3 ? ANSWER_VALUES : tag === 5 ? TLS_VALUES : 0;
}

const VERDICTS: readonly AccessVerdict[] = ['forwarded', 'denied', 'error'];
const verdictCode = (v: AccessVerdict): 0 | 1 | 2 => (v === 'forwarded' ? 0 : v === 'denied' ? 1 : 2);

/** The response `r` as tag 3, its request `back` records earlier in the same message. */
export function encodeAnswer(r: DnsAccessRecord, back: number): WireRecord {
  const out = new ArraySink(3);
  answerFields(out, r, back);
  return out.a as WireRecord;
}

/** Appends encodeAnswer(r, back) to the encoder's open frame, the same bytes, value by value (no array per answer). */
export function pushAnswer(enc: RecordEncoder, r: DnsAccessRecord, back: number): void {
  enc.open(ANSWER_VALUES);
  enc.value(3);
  answerFields(enc, r, back);
  enc.done();
}

/** A tag-3 record's values after its tag, in DnsAnswerFields' order: the one place that order is written. */
function answerFields(out: FieldSink, r: DnsAccessRecord, back: number): void {
  out.value(back);
  out.value(verdictCode(r.verdict));
  NUMBER_SLOT[0] = r.timeMs;
  out.slotNumber();
  dnsAnswer(out, r);
}

/** The answer's part of a tag-0 or tag-3 record (rcode to reason), absent values as the wire has them. */
function dnsAnswer(out: FieldSink, r: DnsAccessRecord): void {
  out.value(r.rcode ?? -1);
  out.value(r.ips ?? 0);
  out.value(r.ttl ?? -1);
  out.value(r.cnames ?? 0);
  out.value(r.rrtypes ?? 0);
  out.value(r.latencyNs === undefined ? -1 : r.latencyNs);
  out.value(r.reason ?? '');
}

/** The client's and the server's values, in the order every access record has them. */
function peerFields(out: FieldSink, c: AccessPeer, s: AccessPeer): void {
  out.text(c.ip, SLOT_CLIENT_IP);
  out.value(c.port);
  out.value(c.identity);
  out.value(c.endpoint?.id ?? 0);
  out.text(s.ip, SLOT_SERVER_IP);
  out.value(s.port);
  out.value(s.identity);
  out.value(s.endpoint?.id ?? 0);
}

/** A tag-0 record's values after its tag, in DnsFields' order. */
function dnsFields(out: FieldSink, r: DnsAccessRecord): void {
  out.value(r.type === 'request' ? 0 : 1);
  out.value(r.transport === 'UDP' ? 0 : 1);
  out.value(verdictCode(r.verdict));
  out.value(r.direction === 'egress' ? 0 : 1);
  NUMBER_SLOT[0] = r.timeMs;
  out.slotNumber();
  peerFields(out, r.client, r.server);
  out.value(r.query);
  out.value(r.qtypes);
  dnsAnswer(out, r);
}

/** A tag-3 record made whole (tag 0) from its request's record (tag 0): for a message that does not carry the request. */
export function expandAnswer(a: WireRecord, req: WireRecord): WireRecord | undefined {
  if (a[0] !== 3 || req[0] !== 0) return undefined;
  const [, , verdict, timeMs, rcode, ips, ttl, cnames, rrtypes, latencyNs, reason] = a;
  const [, , transport, , direction, , ci, cp, cid, cep, si, sp, sid, sep, query, qtypes] = req;
  return [0, 1, transport, verdict, direction, timeMs, ci, cp, cid, cep, si, sp, sid, sep, query, qtypes, rcode, ips, ttl, cnames, rrtypes, latencyNs, reason];
}

/** `tags`: the highest tag the agent reads (WIRE_TAGS; 4: an agent that did not say: a TLS record as its object). */
export function encodeRecord(r: AccessLogRecord, tags = WIRE_TAGS): WireRecord {
  if (r.l7 === 'dns') {
    const out = new ArraySink(0);
    dnsFields(out, r);
    return out.a as WireRecord;
  }
  if (r.l7 === 'http') {
    const sni = plainHttpSni(r);
    if (sni !== null) {
      const out = new ArraySink(sni === undefined ? 2 : 4);
      httpFields(out, r, sni);
      return out.a as WireRecord;
    }
  } else if (tags >= 5 && tlsPositional(r)) {
    const out = new ArraySink(5);
    tlsFields(out, r);
    return out.a as WireRecord;
  }
  // tag 1: the record's other fields as its object, then the peers as every tag has them
  const { client, server, ...rest } = r;
  const out = new ArraySink(1);
  out.a.push(rest);
  peerFields(out, client, server);
  return out.a as WireRecord;
}

/**
 * Appends `r` to the encoder's open frame as push(encodeRecord(r)) would, the same bytes: a DNS
 * record, a plain or intercepted HTTP record (nearly every one, two per request) is written field by field, with
 * no WireRecord array made and held until the frame is sent; any other record goes through
 * encodeRecord. The feed client encodes records as they come (client.ts), so a message's flush
 * only writes.
 */
export function pushRecord(enc: RecordEncoder, r: AccessLogRecord, tags = WIRE_TAGS): void {
  if (r.l7 === 'dns') {
    enc.open(DNS_VALUES);
    enc.value(0);
    dnsFields(enc, r);
    enc.done();
    return;
  }
  if (r.l7 === 'http') {
    const sni = plainHttpSni(r);
    if (sni !== null) {
      enc.open(sni === undefined ? HTTP_VALUES : INTERCEPTED_VALUES);
      enc.value(sni === undefined ? 2 : 4);
      httpFields(enc, r, sni);
      enc.done();
      return;
    }
  } else if (tags >= 5 && tlsPositional(r)) {
    enc.open(TLS_VALUES);
    enc.value(5);
    tlsFields(enc, r);
    enc.done();
    return;
  }
  enc.push(encodeRecord(r, tags));
}

/** The keys a tag-5 TLS record may have (set, not undefined), as the SNI filter and the interceptor make them. */
const TLS_KEYS = new Set(['l7', 'verdict', 'direction', 'timeMs', 'client', 'server', 'endpointId', 'sni', 'version', 'alpn', 'intercepted', 'resumed', 'reason', 'proxyPort']);

/**
 * Whether a TLS record travels positionally (tag 5): no key but TLS_KEYS, strings non-empty
 * (tag 5's '' is absent), alpn a list of strings, intercepted and resumed `true` when set, the
 * proxy port a port. Anything else goes as its object (tag 1), as before.
 */
function tlsPositional(r: TlsAccessRecord): boolean {
  for (const k in r) if (!TLS_KEYS.has(k) && (r as unknown as Record<string, unknown>)[k] !== undefined) return false;
  const str = (v: unknown) => v === undefined || (typeof v === 'string' && v !== '');
  if (!str(r.sni) || !str(r.version) || !str(r.reason)) return false;
  if (r.intercepted !== undefined && r.intercepted !== true) return false;
  if (r.resumed !== undefined && r.resumed !== true) return false;
  if (r.proxyPort !== undefined && !(Number.isInteger(r.proxyPort) && r.proxyPort >= 0 && r.proxyPort <= 65535)) return false;
  if (r.alpn !== undefined && !(Array.isArray(r.alpn) && r.alpn.every((a) => typeof a === 'string'))) return false;
  return typeof r.endpointId === 'number' && Number.isInteger(r.endpointId) && r.endpointId >= 0 && typeof r.timeMs === 'number';
}

/** A tag-5 record's values after its tag, in TlsFields' order: the one place that order is written. */
function tlsFields(out: FieldSink, r: TlsAccessRecord): void {
  out.value(verdictCode(r.verdict));
  out.value(r.direction === 'egress' ? 0 : 1);
  NUMBER_SLOT[0] = r.timeMs;
  out.slotNumber();
  peerFields(out, r.client, r.server);
  out.value(r.endpointId);
  out.value(r.sni ?? '');
  out.value(r.version ?? '');
  out.value(r.alpn ?? 0);
  out.value((r.intercepted ? 1 : 0) | (r.resumed ? 2 : 0));
  out.value(r.reason ?? '');
  out.value(r.proxyPort ?? -1);
}

/**
 * Whether an HTTP record travels positionally: undefined for tag 2 (no optional field), the
 * server name for tag 4 (intercepted TLS, nothing else optional), null for neither (tag 1).
 */
function plainHttpSni(r: HttpAccessRecord): string | undefined | null {
  if (r.traceId !== undefined || r.parentSpanId !== undefined || r.reason !== undefined || r.headerActions !== undefined || r.ai !== undefined) return null;
  const tls = r.tls;
  if (tls === undefined) return undefined;
  if (tls.intercepted !== true || typeof tls.sni !== 'string') return null;
  // no key but the two (counted without Object.keys' array per record)
  let n = 0;
  for (const k in tls) if (Object.hasOwn(tls, k)) n++;
  return n === 2 ? tls.sni : null;
}

/**
 * Where the fields go: the frame encoder (pushRecord) or an array (encodeRecord). text() and
 * texts() write what value() would; the encoder first compares with the last string at the same
 * slot (record-codec.ts text(): no hash of a new string object equal to the last record's).
 */
interface FieldSink {
  value(v: number | string | readonly string[]): void;
  /** value(NUMBER_SLOT[0]) (record-codec.ts slotNumber: a double that is never boxed on the way) */
  slotNumber(): void;
  text(s: string, slot: number): void;
  texts(list: readonly string[], slot: number): void;
}

class ArraySink implements FieldSink {
  readonly a: unknown[];
  constructor(tag: number) { this.a = [tag]; }
  value(v: number | string | readonly string[]): void { this.a.push(v); }
  slotNumber(): void { this.a.push(NUMBER_SLOT[0]); }
  text(s: string): void { this.a.push(s); }
  texts(list: readonly string[]): void { this.a.push(list); }
}

/** text() slots (record-codec.ts TEXT_SLOTS): one per place a string has in a record, the HTTP headers' by position. */
const SLOT_CLIENT_IP = 0, SLOT_SERVER_IP = 1, SLOT_METHOD = 2, SLOT_URL = 3, SLOT_HOST = 4, SLOT_PATH = 5, SLOT_PROTOCOL = 6, SLOT_SNI = 7;
const SLOT_REQUEST_HEADERS = 8, SLOT_RESPONSE_HEADERS = 8 + (TEXT_SLOTS - 8) / 2;

/**
 * A tag-2 or tag-4 record's values after its tag, in HttpFields' order (tag 4: the server name
 * last): the one place that order is written, for both the array and the frame.
 */
function httpFields(out: FieldSink, r: HttpAccessRecord, sni: string | undefined): void {
  out.value(r.type === 'request' ? 0 : 1);
  out.value(verdictCode(r.verdict));
  out.value(r.direction === 'egress' ? 0 : 1);
  // the times (epoch ms, no small integers) through the slot: value(r.timeMs) was a heap number per record
  NUMBER_SLOT[0] = r.timeMs;
  out.slotNumber();
  peerFields(out, r.client, r.server);
  out.value(r.endpointId);
  out.text(r.method, SLOT_METHOD);
  out.text(r.url, SLOT_URL);
  out.text(r.host, SLOT_HOST);
  out.text(r.path, SLOT_PATH);
  out.text(r.protocol, SLOT_PROTOCOL);
  // a long request's header list runs on into the response's slots: they are a cache, the bytes the same
  out.texts(r.headers, r.type === 'request' ? SLOT_REQUEST_HEADERS : SLOT_RESPONSE_HEADERS);
  out.value(r.code);
  out.value(r.latencyNs);
  NUMBER_SLOT[0] = r.requestTimeMs ?? -1;
  out.slotNumber();
  if (sni !== undefined) out.text(sni, SLOT_SNI);
}

/**
 * The record again, its endpoints the agent's own views (`endpointById`); a peer whose endpoint
 * is gone (or that had none) is left to the parser's lookup by address and identity. Not a
 * record of either shape: undefined (the caller counts it and goes on). A positional record is
 * read by the readers FrameReader reads a frame with (readDns, readAnswer, readHttp, readTls),
 * here from its value array: a field of the wrong kind refuses the record, as in a frame.
 */
export function decodeRecord(w: WireRecord, endpointById: (id: number) => ResolvedEndpoint | undefined, earlier?: (back: number) => AccessLogRecord | undefined): AccessLogRecord | undefined {
  if (!Array.isArray(w)) return undefined;
  const tag: unknown = w[0], n = w.length;
  if (tag === 1) {
    if (n !== 10 || typeof w[1] !== 'object' || w[1] === null) return undefined;
    const [, rest, ci, cp, cid, cep, si, sp, sid, sep] = w;
    return { ...rest, client: accessPeer(ci, cp, cid, cep, endpointById), server: accessPeer(si, sp, sid, sep, endpointById) } as AccessLogRecord;
  }
  if (typeof tag !== 'number' || n !== positionalValues(tag)) return undefined;
  const d = arraySource;
  d.reset(w);
  if (tag === 0) return readDns(d, endpointById);
  if (tag === 3) return earlier ? readAnswer(d, earlier) : undefined;
  if (tag === 5) return readTls(d, endpointById);
  // tags 2 and 4: into the array path's scratch, then a record of its own with only the fields it has
  const s = arrayHttp;
  if (!readHttp(d, endpointById, tag, s, undefined)) return undefined;
  const rec: HttpAccessRecord = {
    l7: 'http', type: s.type, verdict: s.verdict, direction: s.direction, timeMs: s.timeMs, client: { ...s.client }, server: { ...s.server },
    endpointId: s.endpointId, method: s.method, url: s.url, host: s.host, path: s.path, protocol: s.protocol, headers: s.headers, code: s.code, latencyNs: s.latencyNs,
  };
  if (s.requestTimeMs! >= 0) rec.requestTimeMs = s.requestTimeMs;
  if (s.tls !== undefined) rec.tls = s.tls;
  return rec;
}

/** A record's peer, its endpoint the agent's own view by id (none: left to the parser's lookup by address). */
function accessPeer(ip: string, port: number, identity: number, ep: number, endpointById: (id: number) => ResolvedEndpoint | undefined): AccessPeer {
  return { ip, port, identity, endpoint: ep ? endpointById(ep) : undefined };
}

/**
 * A tag-4 record's `tls`: one object per server name in a row, as the proxy gives each record of
 * a connection its connection's (records are never changed once made), not one per record.
 */
let lastTls: { sni: string; intercepted: boolean } | undefined;
function interceptedTls(sni: string): { sni: string; intercepted: boolean } {
  if (lastTls === undefined || lastTls.sni !== sni) lastTls = { sni, intercepted: true };
  return lastTls;
}

/** The answer's fields a wire record carries (a negative number or 0 for a list: absent). */
function withAnswer(r: DnsAccessRecord, rcode: number, ips: DnsAccessRecord['ips'] | 0, ttl: number, cnames: DnsAccessRecord['cnames'] | 0,
  rrtypes: DnsAccessRecord['rrtypes'] | 0, latencyNs: number, reason: string | undefined): DnsAccessRecord {
  if (rcode >= 0) r.rcode = rcode;
  if (ips !== 0) r.ips = ips;
  if (ttl >= 0) r.ttl = ttl;
  if (cnames !== 0) r.cnames = cnames;
  if (rrtypes !== 0) r.rrtypes = rrtypes;
  if (latencyNs >= 0) r.latencyNs = latencyNs;
  if (reason) r.reason = reason;
  return r;
}

/**
 * A message's records in order (a tag-3 record finds its request among those before it); what
 * is not a record (or refers to none) is counted in `bad` and skipped.
 */
export function decodeRecords(items: readonly WireRecord[], endpointById: (id: number) => ResolvedEndpoint | undefined): { records: AccessLogRecord[]; bad: number } {
  const out: (AccessLogRecord | undefined)[] = new Array(items.length);
  let i = 0;
  const earlier = (back: number): AccessLogRecord | undefined => (back <= i ? out[i - back] : undefined);
  let bad = 0;
  for (; i < items.length; i++) {
    const r = decodeRecord(items[i]!, endpointById, earlier);
    out[i] = r;
    if (!r) bad++;
  }
  const records: AccessLogRecord[] = [];
  for (const r of out) if (r) records.push(r);
  return { records, bad };
}

/**
 * Where a positional record's fields are read from, value after value in the order the encoder
 * wrote them: a binary frame's bytes (record-codec.ts RecordDecoder: FrameReader, the agent's
 * path) or a record's value array (ArraySource: decodeRecord, for JSON messages and tests). The
 * readers below are the one place each tag's field order is read, for both. A value of another
 * kind than asked is read all the same (the source stays in step) and sets `wrong`, which the
 * caller clears before a record.
 */
export interface FieldSource {
  wrong: boolean;
  num(): number;
  /** num() into NUMBER_SLOT[0] (a time: never a heap number on the way) */
  numSlot(): void;
  str(): string;
  strs(): string[];
  /** strs(), or `prev` itself when equal to it string by string (a source may always make a new list) */
  strsAs(prev: readonly string[] | undefined): readonly string[];
  /** a list of strings, or 0 (absent) */
  strsOr0(): string[] | 0;
  /** strsOr0(), or `prev` itself as strsAs() */
  strsOr0As(prev: readonly string[] | undefined): readonly string[] | 0;
  any(): unknown;
}

/** A record's value array as a FieldSource (its values after the tag). */
class ArraySource implements FieldSource {
  wrong = false;
  private a: readonly unknown[] = [];
  private i = 0;
  reset(a: readonly unknown[]): void {
    this.a = a;
    this.i = 1;
    this.wrong = false;
  }
  num(): number {
    const v = this.a[this.i++];
    if (typeof v === 'number') return v;
    this.wrong = true;
    return 0;
  }
  numSlot(): void { NUMBER_SLOT[0] = this.num(); }
  str(): string {
    const v = this.a[this.i++];
    if (typeof v === 'string') return v;
    this.wrong = true;
    return '';
  }
  strs(): string[] {
    const v = this.a[this.i++];
    if (Array.isArray(v) && v.every((s) => typeof s === 'string')) return v as string[];
    this.wrong = true;
    return [];
  }
  strsAs(): readonly string[] { return this.strs(); }
  strsOr0(): string[] | 0 {
    if (this.a[this.i] === 0) { this.i++; return 0; }
    return this.strs();
  }
  strsOr0As(): readonly string[] | 0 { return this.strsOr0(); }
  any(): unknown { return this.a[this.i++]; }
}
const arraySource = new ArraySource();

/** A record's peer as peerFields wrote it (the endpoint the agent's own view by id). */
function readPeer(d: FieldSource, byId: (id: number) => ResolvedEndpoint | undefined): AccessPeer {
  const ip = d.str(), port = d.num(), identity = d.num(), ep = d.num();
  return { ip, port, identity, endpoint: ep ? byId(ep) : undefined };
}

/**
 * The last lists a reader's DNS records had (DNS_QTYPES … DNS_RRTYPES): a record's list equal to
 * the last one at its place is that list again (lists once made are never changed; the answer's
 * types and a name's query types repeat record after record), not a new one per record.
 */
type DnsLists = (readonly string[] | undefined)[];
const DNS_QTYPES = 0, DNS_IPS = 1, DNS_CNAMES = 2, DNS_RRTYPES = 3;

/** A DNS record's answer lists through `lists` (strsOr0As), the last ones updated. */
function answerList(d: FieldSource, lists: DnsLists | undefined, at: number): string[] | 0 {
  if (lists === undefined) return d.strsOr0();
  const l = d.strsOr0As(lists[at]);
  if (l !== 0) lists[at] = l;
  // shared, never changed (DnsAccessRecord's lists are not read-only in their type)
  return l as string[] | 0;
}

/** A tag-0 record's fields in DnsFields' order (dnsFields); undefined when one is not of its kind. */
function readDns(d: FieldSource, byId: (id: number) => ResolvedEndpoint | undefined, lists?: DnsLists): DnsAccessRecord | undefined {
  const type = d.num(), transport = d.num(), verdict = d.num(), direction = d.num();
  d.numSlot();
  const timeMs = NUMBER_SLOT[0]!;
  const client = readPeer(d, byId), server = readPeer(d, byId);
  const query = d.str(), qtypes = (lists === undefined ? d.strs() : (lists[DNS_QTYPES] = d.strsAs(lists[DNS_QTYPES]))) as string[];
  const rcode = d.num(), ips = answerList(d, lists, DNS_IPS), ttl = d.num(), cnames = answerList(d, lists, DNS_CNAMES), rrtypes = answerList(d, lists, DNS_RRTYPES);
  const latencyNs = d.num(), reason = d.str();
  if (d.wrong) return undefined;
  const r: DnsAccessRecord = {
    l7: 'dns', type: type === 0 ? 'request' : 'response', transport: transport === 0 ? 'UDP' : 'TCP', verdict: VERDICTS[verdict] ?? 'error',
    direction: direction === 0 ? 'egress' : 'ingress', timeMs, client, server, query, qtypes,
  };
  return withAnswer(r, rcode, ips, ttl, cnames, rrtypes, latencyNs, reason);
}

/**
 * A tag-3 record's fields in DnsAnswerFields' order (answerFields): its request's peers (the same
 * objects), name, types, transport and direction, with the answer's fields; undefined when its
 * request (`back` records earlier, by `earlier`) is no DNS request or a field not of its kind.
 */
function readAnswer(d: FieldSource, earlier: (back: number) => AccessLogRecord | undefined, lists?: DnsLists): DnsAccessRecord | undefined {
  const back = d.num(), verdict = d.num();
  d.numSlot();
  const timeMs = NUMBER_SLOT[0]!;
  const rcode = d.num(), ips = answerList(d, lists, DNS_IPS), ttl = d.num(), cnames = answerList(d, lists, DNS_CNAMES), rrtypes = answerList(d, lists, DNS_RRTYPES);
  const latencyNs = d.num(), reason = d.str();
  const q = !d.wrong && back > 0 ? earlier(back) : undefined;
  if (q === undefined || q.l7 !== 'dns' || q.type !== 'request') return undefined;
  const r: DnsAccessRecord = {
    l7: 'dns', type: 'response', transport: q.transport, verdict: VERDICTS[verdict] ?? 'error', direction: q.direction, timeMs,
    client: q.client, server: q.server, query: q.query, qtypes: q.qtypes,
  };
  return withAnswer(r, rcode, ips, ttl, cnames, rrtypes, latencyNs, reason);
}

/** A tag-5 record's fields in TlsFields' order (tlsFields); undefined when one is not of its kind. */
function readTls(d: FieldSource, byId: (id: number) => ResolvedEndpoint | undefined): TlsAccessRecord | undefined {
  const verdict = d.num(), direction = d.num();
  d.numSlot();
  const timeMs = NUMBER_SLOT[0]!;
  const client = readPeer(d, byId), server = readPeer(d, byId);
  const endpointId = d.num(), sni = d.str(), version = d.str(), alpn = d.strsOr0(), flags = d.num(), reason = d.str(), proxyPort = d.num();
  if (d.wrong) return undefined;
  const rec: TlsAccessRecord = { l7: 'tls', verdict: VERDICTS[verdict] ?? 'error', direction: direction === 0 ? 'egress' : 'ingress', timeMs, client, server, endpointId };
  if (sni) rec.sni = sni;
  if (version) rec.version = version;
  if (alpn !== 0) rec.alpn = alpn;
  if (flags & 1) rec.intercepted = true;
  if (flags & 2) rec.resumed = true;
  if (reason) rec.reason = reason;
  if (proxyPort >= 0) rec.proxyPort = proxyPort;
  return rec;
}

/** An HTTP record with every field a record read by readHttp ever has, in one shape from the start (the optional ones undefined). */
function httpScratch(headers: readonly string[]): HttpAccessRecord {
  return {
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 0.5,
    client: { ip: '', port: 0, identity: 0, endpoint: undefined }, server: { ip: '', port: 0, identity: 0, endpoint: undefined },
    endpointId: 0, method: '', url: '', host: '', path: '', protocol: '', headers, code: 0, latencyNs: 0, requestTimeMs: NO_REQUEST_TIME, tls: undefined,
  };
}
/** decodeRecord's HTTP scratch (copied into a record of its own) */
const arrayHttp = httpScratch([]);

/**
 * A tag-2 or tag-4 record's fields in HttpFields' order (httpFields; tag 4: the server name last),
 * written into `r` (a scratch of httpScratch's shape: its peers refilled) only when every one is
 * of its kind (false: none written). `lastHeaders`: the last header list of a request ([0]) and
 * of a response ([1]), the same list again while a record's are equal to it (then updated).
 */
function readHttp(d: FieldSource, byId: (id: number) => ResolvedEndpoint | undefined, tag: number, r: HttpAccessRecord, lastHeaders: (readonly string[] | undefined)[] | undefined): boolean {
  const type = d.num(), verdict = d.num(), direction = d.num();
  d.numSlot();
  const timeMs = NUMBER_SLOT[0]!;
  const cIp = d.str(), cPort = d.num(), cIdentity = d.num(), cEp = d.num();
  const sIp = d.str(), sPort = d.num(), sIdentity = d.num(), sEp = d.num();
  const endpointId = d.num(), method = d.str(), url = d.str(), host = d.str(), path = d.str(), protocol = d.str();
  const kind = type === 0 ? 0 : 1;
  const headers = d.strsAs(lastHeaders === undefined ? undefined : lastHeaders[kind]);
  const code = d.num(), latencyNs = d.num();
  // a response's request time, as the record's time (a fraction of a ms: num() would return a heap number)
  d.numSlot();
  const requestTimeMs = NUMBER_SLOT[0]!;
  const sni = tag === 4 ? d.str() : '';
  if (d.wrong) return false;
  if (lastHeaders !== undefined) lastHeaders[kind] = headers;
  r.type = kind === 0 ? 'request' : 'response';
  r.verdict = VERDICTS[verdict] ?? 'error';
  r.direction = direction === 0 ? 'egress' : 'ingress';
  r.timeMs = timeMs;
  const c = r.client, s = r.server;
  c.ip = cIp; c.port = cPort; c.identity = cIdentity; c.endpoint = cEp ? byId(cEp) : undefined;
  s.ip = sIp; s.port = sPort; s.identity = sIdentity; s.endpoint = sEp ? byId(sEp) : undefined;
  r.endpointId = endpointId;
  r.method = method; r.url = url; r.host = host; r.path = path; r.protocol = protocol;
  r.headers = headers;
  r.code = code;
  r.latencyNs = latencyNs;
  // as the wire says it, −1 (any negative) when none, not undefined: a field that only ever
  // holds numbers keeps a time in place, where one that may be undefined holds a new heap number
  // per response (and so does a choice between the time and a constant here)
  r.requestTimeMs = requestTimeMs;
  r.tls = tag === 4 ? interceptedTls(sni) : undefined;
  return true;
}

/**
 * A connection's binary frames as records, made straight from the frame's bytes (the agent's end):
 * no array of values per record, and a plain or intercepted HTTP record (tags 2 and 4, two per
 * request) is one of the reader's scratch records refilled, with its two peers: lent to `each`
 * for the call only (Hubble's ingestRecord keeps none of a record but its values and its lists,
 * which are never changed once made). Every other record is its own object, as decodeRecord makes
 * it (a DNS answer shares its request's peers). The whole frame is decoded before any of its
 * records is handed on: a frame that does not decode is undefined, none of its records seen. A
 * record whose fields are not of their kinds (a number where a string goes, a list of other than
 * strings) is counted in `bad` and skipped, the rest of the frame delivered; a record of no
 * positional tag's shape takes decodeRecord's way. One reader per connection (its decoder's
 * string table, its scratch).
 */
export class FrameReader {
  readonly decoder = new RecordDecoder();
  /** scratch HTTP records, the k-th of a frame refilled by the k-th of the next (SCRATCH_MAX at most: then new ones) */
  private readonly pool: HttpAccessRecord[] = [];
  private poolUsed = 0;
  /** the last header list of a request ([0]) and of a response ([1]): the same list while a record's are equal to it */
  private readonly headers: (readonly string[] | undefined)[] = [undefined, undefined];
  /** the last lists of its DNS records (readDns) */
  private readonly dnsLists: DnsLists = [undefined, undefined, undefined, undefined];
  /** the frame's records by number, until they are handed on (a tag-3 answer's request among them) */
  private readonly out: (AccessLogRecord | undefined)[] = [];
  /** the number of the record being read */
  private at = 0;
  /** the record `back` before the one being read (readAnswer's request), made once per reader */
  private readonly earlier = (back: number): AccessLogRecord | undefined => (back <= this.at ? this.out[this.at - back] : undefined);

  /** the frame being read: its record count, the agent's endpoints by id */
  private count = 0;
  private byId: (id: number) => ResolvedEndpoint | undefined = () => undefined;
  /** the frame's records into `out` (RecordDecoder.read's callback: made once per reader, not a closure per frame) */
  private readonly readFrame = (d: RecordDecoder, n: number, lost: number): { bad: number; lost: number } => {
    this.count = n;
    this.poolUsed = 0;
    let bad = 0;
    for (let i = 0; i < n; i++) {
      this.at = i;
      if ((this.out[i] = this.record(d, this.byId)) === undefined) bad++;
    }
    return { bad, lost };
  };

  read(payload: Buffer, endpointById: (id: number) => ResolvedEndpoint | undefined, each: (rec: AccessLogRecord) => void): { bad: number; lost: number } | undefined {
    const out = this.out;
    this.count = 0;
    this.byId = endpointById;
    try {
      const f = this.decoder.read(payload, this.readFrame);
      // handed on only now: the frame decoded to its end
      if (f) for (let i = 0; i < this.count; i++) { const r = out[i]; if (r !== undefined) each(r); }
      return f;
    } finally {
      out.fill(undefined, 0, this.count);
      if (out.length > SCRATCH_MAX) out.length = SCRATCH_MAX;
    }
  }

  /** The record being read (undefined: not one). */
  private record(d: RecordDecoder, byId: (id: number) => ResolvedEndpoint | undefined): AccessLogRecord | undefined {
    const n = d.list();
    if (n === 0) return undefined;
    d.wrong = false;
    const tag = d.num();
    if (d.wrong) { for (let k = 1; k < n; k++) d.any(); return undefined; }
    if (n === positionalValues(tag)) {
      if (tag === 2 || tag === 4) {
        let r = this.poolUsed < this.pool.length ? this.pool[this.poolUsed] : undefined;
        if (r === undefined) {
          r = httpScratch([]);
          if (this.pool.length < SCRATCH_MAX) this.pool.push(r);
        }
        if (!readHttp(d, byId, tag, r, this.headers)) return undefined;
        this.poolUsed++;
        return r;
      }
      if (tag === 0) return readDns(d, byId, this.dnsLists);
      if (tag === 3) return readAnswer(d, this.earlier, this.dnsLists);
      return readTls(d, byId);
    }
    // tag 1 (a record as its object) or no shape of ours: its values, then decodeRecord as for a JSON message
    const w: unknown[] = new Array(n);
    w[0] = tag;
    for (let k = 1; k < n; k++) w[k] = d.any();
    return decodeRecord(w as WireRecord, byId, this.earlier);
  }
}

/** Scratch HTTP records per connection at most (the proxy's frames hold 128 records at most). */
const SCRATCH_MAX = 256;

/** Largest line accepted (a snapshot of a big node is a few MB; a line past this ends the connection). */
const MAX_LINE = 64 * 1024 * 1024;

/**
 * Calls `onMessage` per line and `onFrame` per binary frame (record-codec.ts: FRAME_MARK, u32
 * length, payload; only the agent takes them); a line that is not JSON, a frame without
 * `onFrame` or anything too long closes the socket. Chunks wait in a list until their line or
 * frame is whole (a snapshot of a few MB comes in many reads: no copy per read).
 */
export function readLines<T>(sock: Socket, onMessage: (m: T) => void, onFrame?: (payload: Buffer) => boolean): void {
  let parts: Buffer[] = [];
  let have = 0;
  /** bytes the frame in `parts` needs in all, as far as known (0: a line, its end not seen yet) */
  let need = 0;
  sock.on('data', (chunk: Buffer) => {
    if (parts.length && need === 0 && chunk.indexOf(10) < 0) {
      parts.push(chunk);
      have += chunk.length;
      if (have > MAX_LINE) sock.destroy();
      return;
    }
    if (parts.length && need > have + chunk.length) {
      parts.push(chunk);
      have += chunk.length;
      return;
    }
    const buf = parts.length ? Buffer.concat([...parts, chunk]) : chunk;
    parts = [];
    have = 0;
    need = 0;
    let off = 0;
    while (off < buf.length) {
      if (buf[off] === FRAME_MARK) {
        if (!onFrame) { sock.destroy(); return; }
        if (buf.length - off < FRAME_HEADER) { need = FRAME_HEADER; break; }
        const n = buf.readUInt32LE(off + 1);
        if (n > MAX_LINE) { sock.destroy(); return; }
        if (buf.length - off - FRAME_HEADER < n) { need = FRAME_HEADER + n; break; }
        if (!onFrame(buf.subarray(off + FRAME_HEADER, off + FRAME_HEADER + n))) { sock.destroy(); return; }
        off += FRAME_HEADER + n;
        continue;
      }
      const nl = buf.indexOf(10, off);
      if (nl < 0) break;
      if (nl > off) {
        let m: T;
        try { m = JSON.parse(buf.toString('utf8', off, nl)) as T; } catch { sock.destroy(); return; }
        onMessage(m);
        if (sock.destroyed) return;
      }
      off = nl + 1;
    }
    if (off < buf.length) {
      const rest = buf.subarray(off);
      if (rest.length > MAX_LINE) { sock.destroy(); return; }
      parts.push(rest);
      have = rest.length;
    }
  });
}

export function send(sock: Socket, m: ToProxy | ToAgent): boolean {
  if (sock.destroyed) return false;
  return sock.write(`${JSON.stringify(m)}\n`);
}

/** Where a node's agent serves the feed, and the proxy process's own files, in the node's state directory. */
export function proxyFiles(nodeDir: string): { feed: string; pid: string; log: string; supervisor: string } {
  return { feed: `${nodeDir}/l7proxy.sock`, pid: `${nodeDir}/l7proxy.pid`, log: `${nodeDir}/l7proxy.log`, supervisor: `${nodeDir}/l7proxy-supervisor.json` };
}

/** The `records` message of a batch of encoded access records. */
export function recordsMessage(items: WireRecord[], lost: number): Extract<ToAgent, { t: 'records' }> {
  return lost ? { t: 'records', items, lost } : { t: 'records', items };
}
