/**
 * Hubble's L7 parser (Cilium's pkg/hubble/parser/seven): the proxies' access records
 * (src/common/access-log.ts) → L7 flows (spec/hubble.md §1.5). One base flow for every protocol:
 * Type L7, event type 129, l7.type REQUEST/RESPONSE, is_reply = response, addresses and ports of
 * the record's client and server (swapped for responses), endpoints enriched from the agent,
 * the proxy's traffic direction. The protocol parts below fill the rest:
 *
 *   HTTP  http {code, method, url, protocol, headers sorted by key, sensitive values redacted},
 *         latency on responses, trace_context from traceparent, AI facts as extensions
 *         `HTTP/1.1 GET http://host/path`, `HTTP/1.1 200 3ms (GET http://host/path)`
 *   DNS   dns {query, qtypes, rcode, ips, ttl, cnames, rrtypes, observation_source proxy}
 *         `DNS Query example.com. A`, `DNS Answer "1.2.3.4" TTL: 30 (Proxy example.com. A)`
 *   TLS   no record (Hubble's flow has none; cilium#28513), the server name in destination_names
 *         `TLS ClientHello SNI api.openai.com (TLS 1.3, alpn h2,http/1.1)`
 *
 * Flows are literals in create(FlowSchema)'s shape: create() per request costs ~10x on this path.
 * uuid, emitter and workloads are left to Hubble's ingestRecord (index.ts), as for every flow built outside it;
 * the ring keeps the common HTTP and DNS flows compactly (keep, HttpCompact, DnsCompact) and makes them again on read.
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import {
  DropReason, FlowType, L7FlowType, TrafficDirection, Verdict,
  type Endpoint, type Flow, type HTTP, type Layer4, type Layer7,
} from './gen/flow/flow_pb.js';
import type { Any } from '@bufbuild/protobuf/wkt';
import type {
  AccessAI, AccessLogRecord, AccessPeer, DnsAccessRecord, HttpAccessRecord, TlsAccessRecord,
} from '../common/access-log.ts';
import type { ResolvedEndpoint } from '../common/endpoint.ts';
import { DEFAULT_PROXY_PORTS } from '../common/proxy-ports.ts';
import { DNS_RCODE_NAMES } from './names.ts';
import { createEndpointMessages, createIpMessages, ipVersionOf } from './endpoint-messages.ts';
import { timeInRing, type CompactFlow, type FlowRing } from './ring.ts';
import { lentFlow, type FlowIdSource, type LentFlow } from './flow-id.ts';
import { lentResponseL7, type LentResponseL7 } from './lent-layer7.ts';
import { L4_TCP, L4_UDP, newLayer4, refillLayer4 } from './flow.ts';
import { aiExtension } from './ai-extension.ts';
import { identityScope, ReservedIdentity } from '../identity/identity.ts';

export const REDACTED = 'HUBBLE_REDACTED';

/** Header names whose values never leave the proxy (lower-case). */
export const SENSITIVE_HEADERS = new Set([
  'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'api-key', 'x-auth-token',
  'x-csrf-token', 'x-xsrf-token', 'openai-api-key', 'x-goog-api-key', 'x-amz-security-token',
]);

/**
 * What the parser asks the agent: the endpoint at an address (local, or a pod on another node
 * known from the kvstore: Hubble's endpoint getter, then its ipcache's pod metadata), an
 * identity's labels. The same resolver as the datapath flows' (flow.ts), so an L7 flow names a
 * peer as the L3/L4 flows of the same connection do.
 */
export interface L7Resolver {
  byIp(ip: string): ResolvedEndpoint | undefined;
  identityLabels(identity: number): string[] | undefined;
}

export interface L7ParserOptions {
  nodeName: string;
  resolver: L7Resolver;
  /** cluster name of endpoints (default `default`) */
  clusterName?: string;
}

/** The protocol-specific part of a flow; everything else comes from the base. */
interface L7Part {
  isReply: boolean;
  verdict: Verdict;
  transport: 'TCP' | 'UDP';
  l7: Layer7;
  summary: string;
  proxyPort: number;
  traceContext?: Flow['traceContext'];
  extensions?: Any;
  destinationNames?: string[];
  dropReasonDesc?: DropReason;
}

/** `http://user:pass@host/` → `http://user:HUBBLE_REDACTED@host/` (Hubble's URL redaction). */
export function redactUrl(url: string): string {
  // no userinfo without an '@': the common URL is returned without running the pattern
  if (!url.includes('@')) return url;
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/@]*):([^/@]*)@/i.exec(url);
  return m ? `${m[1]}${m[2]}:${REDACTED}@${url.slice(m[0].length)}` : url;
}

/** lengths of the names in SENSITIVE_HEADERS: only a name of such a length is lower-cased and looked up */
const SENSITIVE_LEN = new Uint8Array(64);
for (const n of SENSITIVE_HEADERS) SENSITIVE_LEN[n.length] = 1;

export function flowHeaders(flat: readonly string[]): { $typeName: 'flow.HTTPHeader'; key: string; value: string }[] {
  const out: { $typeName: 'flow.HTTPHeader'; key: string; value: string }[] = [];
  for (let i = 0; i < flat.length; i += 2) {
    const key = flat[i]!;
    const sensitive = key.length < 64 && SENSITIVE_LEN[key.length] === 1 && SENSITIVE_HEADERS.has(key.toLowerCase());
    const h = { $typeName: 'flow.HTTPHeader' as const, key, value: sensitive ? REDACTED : flat[i + 1]! };
    // sorted by key as they come (insertion, stable): a few headers, and no work array per flow as Array#sort makes
    let j = out.length;
    out.push(h);
    while (j > 0 && out[j - 1]!.key > key) { out[j] = out[j - 1]!; j--; }
    out[j] = h;
  }
  return out;
}

/** ` [ai openai gpt-4o-mini stream, tokens 12+30]` */
function aiSummary(ai: AccessAI): string {
  let s = ` [ai ${ai.provider} ${ai.operation === 'other' ? 'other request' : ai.model || '(no model)'}${ai.stream ? ' stream' : ''}`;
  if (ai.promptTokens !== undefined || ai.completionTokens !== undefined) s += `, tokens ${ai.promptTokens ?? 0}+${ai.completionTokens ?? 0}${ai.usage === 'estimated' ? ' estimated' : ''}`;
  return `${s}]`;
}

/** The summary's first part, of the request or response line alone (the ring's compact flows make it again from these). */
function httpLine(isReq: boolean, protocol: string, method: string, url: string, code: number, latencyNs: number): string {
  // Hubble's `%dms`: whole milliseconds, truncated
  if (isReq) return method ? `${protocol} ${method} ${url}` : `${protocol} malformed request`;
  return method ? `${protocol} ${code} ${Math.floor(latencyNs / 1e6)}ms (${method} ${url})` : `${protocol} ${code} (malformed request)`;
}

export function httpSummary(rec: HttpAccessRecord, url = redactUrl(rec.url)): string {
  let s = httpLine(rec.type === 'request', rec.protocol, rec.method, url, rec.code, rec.latencyNs);
  // AI calls: provider, model and tokens (src/proxy/ai)
  if (rec.ai) s += aiSummary(rec.ai);
  // policy denials read exactly like Hubble's; refusals by the parser (and the AI filter) say why
  if (rec.reason && (rec.verdict === 'error' || (rec.ai && rec.verdict === 'denied'))) s += ` [${rec.reason}]`;
  // HTTP seen inside TLS the proxy terminated (terminatingTLS): the URL is https://, and the summary says so
  if (rec.tls?.intercepted) s += interceptedSuffix(rec.tls.sni);
  return s;
}

/** The summary's suffix of HTTP inside TLS the proxy terminated (one home: the parser's flows and the ring's compact ones). */
function interceptedSuffix(sni: string): string {
  return ` [TLS intercepted, SNI ${sni}]`;
}

export function dnsSummary(r: Pick<DnsAccessRecord, 'type' | 'query' | 'qtypes' | 'rcode' | 'ips' | 'ttl' | 'reason'>): string {
  const qt = r.qtypes.join(',');
  if (r.type === 'request') return r.reason ? `DNS Query ${r.query} ${qt} refused: ${r.reason}` : `DNS Query ${r.query} ${qt}`;
  if (r.rcode) return `DNS Answer RCode: ${DNS_RCODE_NAMES[r.rcode] ?? String(r.rcode)} TTL: ${r.ttl ?? 0} (Proxy ${r.query} ${qt})`;
  return `DNS Answer "${(r.ips ?? []).join(',')}" TTL: ${r.ttl ?? 0} (Proxy ${r.query} ${qt})`;
}

export function tlsSummary(r: Pick<TlsAccessRecord, 'verdict' | 'sni' | 'version' | 'alpn' | 'intercepted' | 'resumed' | 'reason'>): string {
  let s = 'TLS ClientHello';
  if (r.sni) s += ` SNI ${r.sni}`;
  if (r.verdict === 'forwarded') {
    const details = [r.version, r.alpn?.length ? `alpn ${r.alpn.join(',')}` : '', r.intercepted ? 'intercepted' : '', r.resumed ? 'resumed' : ''].filter(Boolean);
    if (details.length) s += ` (${details.join(', ')})`;
    return s;
  }
  return `${s} ${r.verdict === 'denied' ? 'refused' : 'failed'}: ${r.reason ?? 'unknown'}`;
}

/**
 * An HTTP message and what flows share with it: its `record` oneof, and for requests (no
 * latency) the whole Layer7. Keyed by the record's URL, method, protocol, code and headers.
 */
interface HttpShared {
  method: string;
  protocol: string;
  code: number;
  /** the record's headers as the proxy gave them (compared value by value) */
  flat: readonly string[];
  record: Extract<Layer7['record'], { case: 'http' }>;
  request: Layer7 | undefined;
  /**
   * The last summary made for a flow of this message (httpSharedSummary), with what it depends on
   * beyond the message: request or response, a response's whole milliseconds, the intercepted
   * server name. A request's summary, and a response's while its latency stays in the same
   * millisecond, is the same string for every flow: made once, not per record (its strings were
   * the agent's largest garbage per intercepted HTTP record, ~250 of ~1280 B).
   */
  summary: string | undefined;
  summaryReply: boolean;
  summaryMs: number;
  summarySni: string | undefined;
}

function sameFlat(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Messages remembered per URL at most (the oldest gives way), and URLs (then all are forgotten). */
const HTTP_PER_URL = 8;
const HTTP_URLS = 4096;

/**
 * The HTTP messages of flows, shared between flows of the same request or response (URL, method,
 * protocol, code, headers): a proxy's flows repeat a few of them, and each one a flow held alone
 * (the message, its headers list, a message per header) was copied by every scavenge while the
 * ring kept the flow. Messages are never changed once in a flow (as the endpoints).
 */
function createHttpMessages(): (rec: HttpAccessRecord) => HttpShared {
  const byUrl = new BoundedCache<string, HttpShared[]>(HTTP_URLS);
  return function httpShared(rec) {
    let list = byUrl.get(rec.url);
    if (list) {
      for (const m of list) {
        if (m.method === rec.method && m.protocol === rec.protocol && m.code === rec.code && sameFlat(m.flat, rec.headers)) return m;
      }
    } else list = byUrl.set(rec.url, []);
    const http: HTTP = { $typeName: 'flow.HTTP', code: rec.code, method: rec.method, url: redactUrl(rec.url), protocol: rec.protocol, headers: flowHeaders(rec.headers) };
    const record = { case: 'http' as const, value: http };
    const m: HttpShared = {
      method: rec.method, protocol: rec.protocol, code: rec.code, flat: rec.headers, record,
      request: rec.type === 'request' ? { $typeName: 'flow.Layer7', type: L7FlowType.REQUEST, latencyNs: 0n, record } : undefined,
      summary: undefined, summaryReply: false, summaryMs: 0, summarySni: undefined,
    };
    if (list.length >= HTTP_PER_URL) list.shift();
    list.push(m);
    return m;
  };
}

/** A response's Layer7 (its latency its own). */
function responseL7(record: HttpShared['record'], latencyNs: number): Layer7 {
  return { $typeName: 'flow.Layer7', type: L7FlowType.RESPONSE, latencyNs: BigInt(Math.max(0, Math.round(latencyNs))), record };
}

/** `lent` (a borrowed flow's response Layer7, lent-layer7.ts) as responseL7(record, latencyNs) would make it. */
function lendResponseL7(lent: LentResponseL7, record: HttpShared['record'], latencyNs: number): Layer7 {
  lent.lend(Math.max(0, Math.round(latencyNs)), record);
  return lent.l7;
}

/**
 * httpSummary(rec) for a record of `shared`'s message: the string made for the last flow of the
 * message when it read the same (request or response, the response's whole milliseconds, the
 * server name of intercepted TLS); a record with an AI call or a reason (their summaries say more)
 * is made as before, and not remembered.
 */
function httpSharedSummary(rec: HttpAccessRecord, shared: HttpShared): string {
  if (rec.ai !== undefined || rec.reason !== undefined) return httpSummary(rec, shared.record.value.url);
  const reply = rec.type !== 'request';
  // httpLine's `%dms` (a request's line has none)
  const ms = reply ? Math.floor(rec.latencyNs / 1e6) : 0;
  const sni = rec.tls?.intercepted ? rec.tls.sni : undefined;
  if (shared.summary !== undefined && shared.summaryReply === reply && shared.summaryMs === ms && shared.summarySni === sni) return shared.summary;
  const s = httpSummary(rec, shared.record.value.url);
  shared.summary = s; shared.summaryReply = reply; shared.summaryMs = ms; shared.summarySni = sni;
  return s;
}

/**
 * httpPart's result: one object refilled per record (its callers read it at once and keep none of
 * it but the values), not an object per record of the agent's garbage.
 */
const HTTP_PART: L7Part = {
  isReply: false, verdict: Verdict.FORWARDED, transport: 'TCP', l7: undefined as unknown as Layer7, summary: '', proxyPort: DEFAULT_PROXY_PORTS.http,
  traceContext: undefined, extensions: undefined, destinationNames: undefined, dropReasonDesc: undefined,
};

/**
 * `respL7`: the borrowed flow's response Layer7, refilled here (its readers keep none of it: the
 * ring keeps a response's latency as a number and its message), not a new one per response.
 */
function httpPart(rec: HttpAccessRecord, shared: HttpShared, respL7?: LentResponseL7): L7Part {
  const isReq = rec.type === 'request';
  const part = HTTP_PART;
  part.isReply = !isReq;
  // the proxy's own refusals (400, 408, 503) end the request like a policy denial does
  part.verdict = rec.verdict === 'forwarded' ? Verdict.FORWARDED : Verdict.DROPPED;
  part.l7 = isReq ? (shared.request ?? { $typeName: 'flow.Layer7', type: L7FlowType.REQUEST, latencyNs: 0n, record: shared.record })
    : respL7 ? lendResponseL7(respL7, shared.record, rec.latencyNs) : responseL7(shared.record, rec.latencyNs);
  part.summary = httpSharedSummary(rec, shared);
  part.traceContext = rec.traceId ? { $typeName: 'flow.TraceContext', parent: { $typeName: 'flow.TraceParent', traceId: rec.traceId } } : undefined;
  part.extensions = rec.ai ? aiExtension(rec.ai) : undefined;
  return part;
}

/**
 * A DNS message and what flows share with it: its `record` oneof, its summary, and for requests
 * (no latency) the whole Layer7. Keyed by the record's question, types, answer and reason: a
 * proxied name's queries and answers repeat a few of them, as a proxy's HTTP flows repeat their
 * requests (createHttpMessages), and the ring then holds none of a DNS flow's parts alone.
 */
interface DnsShared {
  type: DnsAccessRecord['type'];
  rcode: number;
  ttl: number;
  reason: string;
  /** the record's lists as the feed gave them (compared value by value) */
  qtypes: readonly string[];
  ips: readonly string[];
  cnames: readonly string[];
  rrtypes: readonly string[];
  record: Extract<Layer7['record'], { case: 'dns' }>;
  summary: string;
  request: Layer7 | undefined;
}

/** Messages remembered per question at most (the oldest gives way), and questions (then all are forgotten). */
const DNS_PER_QUERY = 8;
const DNS_QUERIES = 4096;

function createDnsMessages(): (rec: DnsAccessRecord) => DnsShared {
  const byQuery = new Map<string, DnsShared[]>();
  return function dnsShared(rec) {
    const rcode = rec.rcode ?? 0, ttl = rec.ttl ?? 0, reason = rec.reason ?? '';
    const ips = rec.ips ?? NONE, cnames = rec.cnames ?? NONE, rrtypes = rec.rrtypes ?? NONE;
    let list = byQuery.get(rec.query);
    if (list) {
      for (const m of list) {
        if (m.type === rec.type && m.rcode === rcode && m.ttl === ttl && m.reason === reason && sameFlat(m.qtypes, rec.qtypes) && sameFlat(m.ips, ips) &&
          sameFlat(m.rrtypes, rrtypes) && sameFlat(m.cnames, cnames)) return m;
      }
    } else {
      if (byQuery.size >= DNS_QUERIES) byQuery.clear();
      byQuery.set(rec.query, (list = []));
    }
    const record = {
      case: 'dns' as const,
      value: { $typeName: 'flow.DNS' as const, query: rec.query, ips, ttl, cnames, observationSource: 'proxy', rcode, qtypes: rec.qtypes, rrtypes },
    };
    const isReq = rec.type === 'request';
    const m: DnsShared = {
      type: rec.type, rcode, ttl, reason, qtypes: rec.qtypes, ips, cnames, rrtypes, record, summary: dnsSummary(rec),
      request: isReq ? { $typeName: 'flow.Layer7', type: L7FlowType.REQUEST, latencyNs: 0n, record } : undefined,
    };
    if (list.length >= DNS_PER_QUERY) list.shift();
    list.push(m);
    return m;
  };
}

/** a DNS record's latency (ns, a number on the wire and in the record) as the flow's uint64 */
function dnsLatency(ns: number | undefined): bigint {
  return ns === undefined || !(ns > 0) ? 0n : BigInt(Math.round(ns));
}

/** A DNS flow's Layer7: a request's shared one, or one of its own (a latency, or a response). */
function dnsL7(shared: DnsShared, isResp: boolean, latencyNs: bigint): Layer7 {
  if (!isResp && latencyNs === 0n && shared.request) return shared.request;
  return { $typeName: 'flow.Layer7', type: isResp ? L7FlowType.RESPONSE : L7FlowType.REQUEST, latencyNs, record: shared.record };
}

const dnsVerdict = (v: DnsAccessRecord['verdict']): Verdict => (v === 'denied' ? Verdict.DROPPED : v === 'error' ? Verdict.ERROR : Verdict.FORWARDED);

function dnsPart(rec: DnsAccessRecord, shared: DnsShared): L7Part {
  const isResp = rec.type === 'response';
  return {
    isReply: isResp,
    verdict: dnsVerdict(rec.verdict),
    transport: rec.transport,
    l7: dnsL7(shared, isResp, dnsLatency(rec.latencyNs)),
    summary: shared.summary,
    // the DNS proxy's flows carry no proxy port (it is not a redirect of the connection's own port)
    proxyPort: 0,
  };
}

/** A TLS flow's Layer7 (a request without a record: Hubble's flow has none for TLS). */
function tlsL7(): Layer7 {
  return { $typeName: 'flow.Layer7', type: L7FlowType.REQUEST, latencyNs: 0n, record: { case: undefined } };
}

function tlsPart(rec: TlsAccessRecord): L7Part {
  return {
    isReply: false,
    verdict: rec.verdict === 'forwarded' ? Verdict.FORWARDED : Verdict.DROPPED,
    transport: 'TCP',
    l7: tlsL7(),
    summary: tlsSummary(rec),
    proxyPort: rec.proxyPort ?? DEFAULT_PROXY_PORTS.tls,
    destinationNames: rec.sni ? [rec.sni] : [],
    ...(rec.verdict === 'denied' ? { dropReasonDesc: DropReason.POLICY_DENIED } : {}),
  };
}

/** every L7 flow's event type (shared: flows are never changed in place after ingest) */
const L7_EVENT = { $typeName: 'flow.CiliumEventType' as const, type: 129, subType: 0 };
/**
 * The empty list fields of an L7 flow (eight per flow) share one frozen array: a flow is kept in
 * the ring for a while, so each object per flow is copied by the GC before it dies. Frozen, so a
 * consumer that would change it in place fails loudly instead of changing every flow.
 */
const NONE = Object.freeze([]) as unknown as never[];

/**
 * The identities of addresses outside the cluster (the world, a CIDR's or a DNS name's local
 * identity, 2^24 and up): no pod is looked up for them, which is most of a DNS proxy's servers
 * and every toFQDNs peer (the lookup was ~20 % of such a record's parse).
 */
function neverPod(identity: number): boolean {
  return identity === ReservedIdentity.world || identity === ReservedIdentity.worldIPv4 || identity === ReservedIdentity.worldIPv6 || identityScope(identity) === 'local';
}

/**
 * The L7 parser: a record's flow, and (keep) the ring's compact form of it. Hubble's ingest
 * finishes a flow (uuid, emitter, workloads) before it is kept, so `keep` takes the finished one.
 */
export interface L7Parser {
  (rec: AccessLogRecord): Flow;
  /**
   * A DNS or HTTP record's flow written into the parser's one scratch Flow (its Timestamp and
   * Layer4 too), valid until the next borrow: as the datapath's FlowBuilder.borrow (flow.ts), for
   * Hubble's ingest when every reader reads the flow during the call only (index.ts ingestRecord).
   * Equal to parse(rec); its DNS or HTTP message, a request's Layer7, IP and endpoint messages are
   * the shared ones (an HTTP response's Layer7 is the scratch's, refilled; a DNS one's is new).
   * `id`: the flow's uuid as two parts (FlowIdSource's head and low after advance()), its string
   * made when a reader reads flow.uuid (as the ring's compact flows make it), not per record;
   * without it the uuid is empty.
   */
  borrow(rec: DnsAccessRecord | HttpAccessRecord, id?: Pick<FlowIdSource, 'head' | 'low'>): Flow;
  /**
   * Keeps `flow` (this parser's flow of `rec`, finished by Hubble's ingest, its uuid the last of
   * `ids`) in `ring` compactly when the ring can make the same flow again from shared messages and
   * numbers: an HTTP record without trace context, AI facts or reason, plain or inside intercepted
   * TLS (the proxies' common record), a TLS record (the connection's ClientHello decision), or a DNS record (its message, summary and a request's Layer7 shared per question and
   * answer). Returns false for any other (the caller pushes the Flow itself).
   */
  keep(ring: FlowRing, rec: AccessLogRecord, flow: Flow, ids: Pick<FlowIdSource, 'head' | 'low'>): boolean;
}

/**
 * An L7 flow as the ring keeps it (ring.ts CompactFlow): one object per ring position, refilled
 * in place; it refers only to messages shared between flows (endpoints, the IP pair, the L7
 * message) and strings the feed's decoder or the id source share, so nothing per flow is left for
 * the scavenger to copy. toFlow() makes the Flow the parser and Hubble's ingest made. What HTTP's
 * and DNS's have alike; each kind adds its message.
 */
abstract class L7Compact implements CompactFlow {
  readonly kind = 'compact' as const;
  timeMs = 0;
  uuidHead = '';
  uuidLow = 0;
  isReply = false;
  verdict: Verdict = Verdict.FORWARDED;
  direction: TrafficDirection = TrafficDirection.INGRESS;
  srcPort = 0;
  dstPort = 0;
  /** a response's latency (ns; a request's is 0 and its Layer7 the kind's shared one) */
  latencyNs = 0;
  ip: Flow['IP'] = undefined;
  source: Flow['source'] = undefined;
  destination: Flow['destination'] = undefined;
  emitter: Flow['emitter'] = undefined;
  nodeName = '';
  readonly owner: object;
  constructor(owner: object) { this.owner = owner; }

  /** the parts every kind takes from the flow as built */
  fill(flow: Flow, timeMs: number, ids: Pick<FlowIdSource, 'head' | 'low'>, isReply: boolean, srcPort: number, dstPort: number, latencyNs: number): void {
    this.timeMs = timeMs;
    this.uuidHead = ids.head;
    this.uuidLow = ids.low;
    this.isReply = isReply;
    this.verdict = flow.verdict;
    this.direction = flow.trafficDirection;
    this.srcPort = srcPort;
    this.dstPort = dstPort;
    this.latencyNs = latencyNs;
    this.ip = flow.IP;
    this.source = flow.source;
    this.destination = flow.destination;
    this.emitter = flow.emitter;
    this.nodeName = flow.nodeName;
  }

  abstract toFlow(): Flow;
}

/**
 * The TCP proxies' flows as the ring keeps them: an HTTP request or response, or (tlsSummary set)
 * the TLS ClientHello decision of a connection the SNI filter or the interceptor saw. One class
 * for both, so a ring position that held one kind is refilled for the other without a new object
 * (an intercepted connection makes one of each, mixed in the ring).
 */
class HttpCompact extends L7Compact {
  /** the HTTP message's oneof (shared), and a request's whole Layer7 (shared: no latency) */
  record: HttpShared['record'] | undefined = undefined;
  request: Layer7 | undefined = undefined;
  /**
   * HTTP inside TLS the proxy terminated: the server name (the record's string, which the feed's
   * decoder and the interceptor share between records), its summary suffix made again by toFlow().
   * A TLS flow: its one destination name.
   */
  sni: string | undefined = undefined;
  /** a TLS flow: its summary (a string per connection, as the whole flow held), proxy port and drop reason; undefined: HTTP */
  tlsSummary: string | undefined = undefined;
  proxyPort = 0;
  dropReasonDesc: DropReason = 0;

  toFlow(): Flow {
    if (this.tlsSummary !== undefined) {
      return l7Flow(
        this.timeMs, this.uuidHead + this.uuidLow.toString(16), this.emitter, this.verdict, this.ip,
        l7Layer4(false, this.srcPort, this.dstPort), this.source, this.destination, this.nodeName, this.sni === undefined ? [] : [this.sni],
        tlsL7(), this.direction, this.dropReasonDesc, false, this.proxyPort, undefined, this.tlsSummary, undefined,
      );
    }
    const http = this.record!.value;
    const isReq = !this.isReply;
    const line = httpLine(isReq, http.protocol, http.method, http.url, http.code, this.latencyNs);
    return l7Flow(
      this.timeMs, this.uuidHead + this.uuidLow.toString(16), this.emitter, this.verdict, this.ip,
      l7Layer4(false, this.srcPort, this.dstPort), this.source, this.destination, this.nodeName, NONE,
      isReq ? this.request! : responseL7(this.record!, this.latencyNs),
      this.direction, 0, this.isReply, DEFAULT_PROXY_PORTS.http, undefined,
      this.sni === undefined ? line : line + interceptedSuffix(this.sni), undefined,
    );
  }
}

/**
 * A DNS flow as the ring keeps it: the DNS message with its summary shared per question and
 * answer. A proxied query's two flows were a dozen young objects each that every scavenge copied
 * while the ring held them (bench/dns: the agent's scavenges ~17 % of its main thread and its GC
 * threads as much again).
 */
class DnsCompact extends L7Compact {
  udp = true;
  shared: DnsShared | undefined = undefined;

  toFlow(): Flow {
    const shared = this.shared!;
    return l7Flow(
      this.timeMs, this.uuidHead + this.uuidLow.toString(16), this.emitter, this.verdict, this.ip,
      l7Layer4(this.udp, this.srcPort, this.dstPort), this.source, this.destination, this.nodeName, NONE,
      dnsL7(shared, this.isReply, BigInt(this.latencyNs)), this.direction, 0, this.isReply, 0, undefined, shared.summary, undefined,
    );
  }
}

/** An L7 flow's Layer4 (flow.ts builds every Layer4): TCP or UDP ports, no flags. */
function l7Layer4(udp: boolean, sourcePort: number, destinationPort: number): Layer4 {
  return newLayer4(udp ? L4_UDP : L4_TCP, sourcePort, destinationPort, undefined)!;
}

/** the flows of one second share its BigInt (a heap object per flow otherwise) */
let lastSeconds = -1, lastSecondsBig = 0n;

/**
 * `timeMs`'s nanoseconds within its second; its seconds left in lastSecondsBig. Seconds and nanos
 * apart: epoch ms × 1e6 is past 2^53 and would lose the low digits.
 */
function timeNanos(timeMs: number): number {
  const seconds = Math.floor(timeMs / 1000);
  if (seconds !== lastSeconds) { lastSeconds = seconds; lastSecondsBig = BigInt(seconds); }
  return Math.min(999_999_999, Math.round((timeMs - seconds * 1000) * 1e6));
}

/** Every L7 flow, in create(FlowSchema)'s shape (one literal for the parser and the ring's compact flows). */
function l7Flow(
  timeMs: number, uuid: string, emitter: Flow['emitter'], verdict: Verdict, ip: Flow['IP'], l4: Layer4, source: Flow['source'], destination: Flow['destination'],
  nodeName: string, destinationNames: string[], l7: Layer7, direction: TrafficDirection, dropReasonDesc: DropReason, isReply: boolean, proxyPort: number,
  traceContext: Flow['traceContext'], summary: string, extensions: Any | undefined,
): Flow {
  const nanos = timeNanos(timeMs);
  return {
    $typeName: 'flow.Flow',
    time: { $typeName: 'google.protobuf.Timestamp', seconds: lastSecondsBig, nanos },
    uuid,
    emitter,
    verdict,
    dropReason: 0,
    authType: 0,
    ethernet: undefined,
    IP: ip,
    l4,
    tunnel: undefined,
    source,
    destination,
    Type: FlowType.L7,
    nodeName,
    nodeLabels: NONE,
    sourceNames: NONE,
    destinationNames,
    l7,
    reply: false,
    eventType: L7_EVENT,
    sourceService: undefined,
    destinationService: undefined,
    trafficDirection: direction,
    policyMatchType: 0,
    traceObservationPoint: 0,
    traceReason: 0,
    file: undefined,
    ipTraceId: undefined,
    dropReasonDesc,
    isReply,
    debugCapturePoint: 0,
    interface: undefined,
    proxyPort,
    traceContext,
    sockXlatePoint: 0,
    socketCookie: 0n,
    cgroupId: 0n,
    Summary: summary,
    extensions,
    egressAllowedBy: NONE,
    ingressAllowedBy: NONE,
    egressDeniedBy: NONE,
    ingressDeniedBy: NONE,
    policyLog: NONE,
    aggregate: undefined,
  };
}

/**
 * l7Flow's varying fields written into `f`, a Flow l7Flow made (its Timestamp refilled in place):
 * the fields l7Flow always sets to the same value are left as they are (a borrowed flow's readers
 * do not change it).
 */
function refillL7Flow(
  f: Flow, rec: { readonly timeMs: number }, emitter: Flow['emitter'], verdict: Verdict, ip: Flow['IP'], l4: Layer4, source: Flow['source'], destination: Flow['destination'],
  nodeName: string, l7: Layer7, direction: TrafficDirection, isReply: boolean, summary: string,
): void {
  // the record, not its time: a double passed to a call TurboFan does not inline is a heap number
  const t = f.time!;
  t.nanos = timeNanos(rec.timeMs);
  t.seconds = lastSecondsBig;
  f.uuid = '';
  f.emitter = emitter;
  f.verdict = verdict;
  f.IP = ip;
  f.l4 = l4;
  f.source = source;
  f.destination = destination;
  f.nodeName = nodeName;
  f.destinationNames = NONE;
  f.l7 = l7;
  f.trafficDirection = direction;
  f.dropReasonDesc = 0;
  f.isReply = isReply;
  f.proxyPort = 0;
  f.traceContext = undefined;
  f.Summary = summary;
  f.extensions = undefined;
}

export function createL7Parser(opts: L7ParserOptions): L7Parser {
  const cluster = opts.clusterName ?? 'default';
  const messages = createEndpointMessages(opts.resolver, cluster);
  const ipMessage = createIpMessages();
  const httpShared = createHttpMessages();
  const dnsShared = createDnsMessages();
  /** the DNS message of the last record parsed (keep() takes it with that record's flow) */
  let lastDns: DnsShared | undefined;
  // A peer's endpoint as Cilium's common.EndpointResolver gives it: the proxy's own endpoint, else
  // the pod at the address (this node's or another's: pod name and namespace), with the identity
  // the proxy judged by; only an address that is no pod is named by labels or identity alone.
  function endpoint(p: AccessPeer): Endpoint {
    const e = p.endpoint ?? (neverPod(p.identity) ? undefined : opts.resolver.byIp(p.ip));
    if (e) return messages.local(e, p.identity);
    return p.labels ? messages.labelled(p.labels, p.identity) : messages.remote(p.identity);
  }

  const parse = function parse(rec: AccessLogRecord): Flow {
    lastDns = rec.l7 === 'dns' ? dnsShared(rec) : undefined;
    const part = rec.l7 === 'http' ? httpPart(rec, httpShared(rec)) : lastDns ? dnsPart(rec as DnsAccessRecord, lastDns) : tlsPart(rec as TlsAccessRecord);
    // the flow goes client → server for requests, server → client for responses
    const src = part.isReply ? rec.server : rec.client;
    const dst = part.isReply ? rec.client : rec.server;
    return l7Flow(
      rec.timeMs, '', undefined, part.verdict, ipMessage(src.ip, dst.ip, ipVersionOf(src.ip)), l7Layer4(part.transport === 'UDP', src.port, dst.port), endpoint(src), endpoint(dst),
      opts.nodeName, part.destinationNames ?? NONE, part.l7, rec.direction === 'ingress' ? TrafficDirection.INGRESS : TrafficDirection.EGRESS,
      part.dropReasonDesc ?? 0, part.isReply, part.proxyPort, part.traceContext, part.summary, part.extensions,
    );
  } as L7Parser;

  // The scratch Flow of borrow(): the first borrowed flow, with one Layer4 per kind (L4_UDP, L4_TCP)
  // and one HTTP response Layer7.
  let scratch: Flow | undefined;
  /** lends the scratch its uuid (lentFlow) */
  let lendId: LentFlow<Flow>['lend'] | undefined;
  let scratchResponse: LentResponseL7 | undefined;
  const scratchL4: (Layer4 | undefined)[] = [];
  const scratchLayer4 = (kind: number, src: number, dst: number): Layer4 => {
    const l4 = scratchL4[kind];
    if (!l4) return (scratchL4[kind] = l7Layer4(kind === L4_UDP, src, dst));
    refillLayer4(l4, src, dst, undefined);
    return l4;
  };
  parse.borrow = (rec, id) => {
    const f = borrowFlow(rec);
    // the parser's refill leaves an empty uuid (refillL7Flow), made again here when lent
    if (id) lendId!(id.head, id.low);
    return f;
  };
  const borrowFlow = (rec: DnsAccessRecord | HttpAccessRecord): Flow => {
    if (!scratch) {
      const lent = lentFlow(parse(rec));
      scratch = lent.flow;
      lendId = lent.lend;
      scratchL4[rec.l7 === 'dns' && rec.transport === 'UDP' ? L4_UDP : L4_TCP] = scratch.l4;
      return scratch;
    }
    if (rec.l7 === 'http') {
      // as parse(): the HTTP part (its messages the shared ones), written into the scratch
      lastDns = undefined;
      const isResp = rec.type !== 'request';
      const shared = httpShared(rec);
      const part = httpPart(rec, shared, isResp ? (scratchResponse ??= lentResponseL7(shared.record)) : undefined);
      const src = part.isReply ? rec.server : rec.client;
      const dst = part.isReply ? rec.client : rec.server;
      const f = scratch;
      refillL7Flow(
        f, rec, undefined, part.verdict, ipMessage(src.ip, dst.ip, ipVersionOf(src.ip)), scratchLayer4(L4_TCP, src.port, dst.port), endpoint(src), endpoint(dst), opts.nodeName,
        part.l7, rec.direction === 'ingress' ? TrafficDirection.INGRESS : TrafficDirection.EGRESS, part.isReply, part.summary,
      );
      f.destinationNames = part.destinationNames ?? NONE;
      f.dropReasonDesc = part.dropReasonDesc ?? 0;
      f.proxyPort = part.proxyPort;
      f.traceContext = part.traceContext;
      f.extensions = part.extensions;
      return f;
    }
    const shared = (lastDns = dnsShared(rec));
    const isResp = rec.type === 'response';
    const src = isResp ? rec.server : rec.client;
    const dst = isResp ? rec.client : rec.server;
    const l4 = scratchLayer4(rec.transport === 'UDP' ? L4_UDP : L4_TCP, src.port, dst.port);
    refillL7Flow(
      scratch, rec, undefined, dnsVerdict(rec.verdict), ipMessage(src.ip, dst.ip, ipVersionOf(src.ip)), l4, endpoint(src), endpoint(dst), opts.nodeName,
      dnsL7(shared, isResp, dnsLatency(rec.latencyNs)), rec.direction === 'ingress' ? TrafficDirection.INGRESS : TrafficDirection.EGRESS, isResp, shared.summary,
    );
    return scratch;
  };

  const owner = {};
  const make = () => new HttpCompact(owner);
  // its own owner: a position an HttpCompact held is not refilled as a DnsCompact
  const dnsOwner = {};
  const makeDns = () => new DnsCompact(dnsOwner);
  /** A DNS flow (this parser's, of `rec`) kept compactly; false when it is not what toFlow() would make again. */
  const keepDns = (ring: FlowRing, rec: DnsAccessRecord, flow: Flow, ids: Pick<FlowIdSource, 'head' | 'low'>): boolean => {
    const shared = lastDns;
    const l7 = flow.l7;
    const p = flow.l4?.protocol;
    if (!shared || l7?.record !== shared.record || flow.Summary !== shared.summary || (p?.case !== 'UDP' && p?.case !== 'TCP')) return false;
    const isReply = flow.isReply === true;
    if (isReply !== (rec.type === 'response') || (!isReply && l7 !== shared.request)) return false;
    if (flow.destinationNames.length || flow.dropReasonDesc || flow.traceContext || flow.extensions || flow.proxyPort !== 0) return false;
    // a latency past 2^53 ns (104 days) would not come back exact as a number
    if (l7.latencyNs > 9007199254740991n || l7.latencyNs < 0n) return false;
    const c = ring.compactSlot(dnsOwner, makeDns);
    c.fill(flow, rec.timeMs, ids, isReply, p.value.sourcePort, p.value.destinationPort, Number(l7.latencyNs));
    c.udp = p.case === 'UDP';
    c.shared = shared;
    ring.pushCompact(c, timeInRing(flow));
    return true;
  };
  /**
   * A TLS flow (this parser's, of `rec`) kept compactly: whole, a flow per intercepted connection
   * cost the agent ~2 µs more than with the ring off (bench/tls, i-tls16: 4.1 against 1.8 µs),
   * each living through scavenges while the ring held it. False when it is not what toFlow()
   * would make again.
   */
  const keepTls = (ring: FlowRing, rec: TlsAccessRecord, flow: Flow, ids: Pick<FlowIdSource, 'head' | 'low'>): boolean => {
    const l7 = flow.l7;
    const tcp = flow.l4?.protocol.case === 'TCP' ? flow.l4.protocol.value : undefined;
    if (!l7 || !tcp || l7.record.case !== undefined || l7.type !== L7FlowType.REQUEST || l7.latencyNs !== 0n || tcp.flags !== undefined) return false;
    const names = flow.destinationNames;
    if (flow.isReply || flow.traceContext || flow.extensions || names.length > 1 || (names.length === 1 && names[0] !== rec.sni)) return false;
    const c = ring.compactSlot(owner, make);
    c.fill(flow, rec.timeMs, ids, false, tcp.sourcePort, tcp.destinationPort, 0);
    c.record = undefined;
    c.request = undefined;
    c.sni = names.length ? names[0] : undefined;
    c.tlsSummary = flow.Summary;
    c.proxyPort = flow.proxyPort;
    c.dropReasonDesc = flow.dropReasonDesc;
    ring.pushCompact(c, timeInRing(flow));
    return true;
  };
  parse.keep = (ring, rec, flow, ids) => {
    // the flow's time in the ring read where it is pushed (timeInRing): a double passed in would
    // be a heap number per record
    if (rec.l7 === 'dns') return keepDns(ring, rec, flow, ids);
    if (rec.l7 === 'tls') return keepTls(ring, rec, flow, ids);
    if (rec.l7 !== 'http' || rec.traceId !== undefined || rec.ai !== undefined || rec.reason !== undefined) return false;
    // HTTP inside intercepted TLS (two records per request, as plain HTTP's) is kept compactly too:
    // whole, its flows cost the agent ~1.3 µs more per record, the ring's retention (bench/tls)
    const tls = rec.tls;
    if (tls !== undefined && (tls.intercepted !== true || typeof tls.sni !== 'string')) return false;
    const l7 = flow.l7;
    const tcp = flow.l4?.protocol.case === 'TCP' ? flow.l4.protocol.value : undefined;
    if (l7?.record.case !== 'http' || !tcp) return false;
    // toFlow() makes these as the HTTP part does today: a flow that differs in any is kept whole
    // rather than made again wrong, should the HTTP part ever fill them
    if (flow.destinationNames.length || flow.dropReasonDesc || flow.traceContext || flow.extensions || flow.proxyPort !== DEFAULT_PROXY_PORTS.http) return false;
    const c = ring.compactSlot(owner, make);
    c.fill(flow, rec.timeMs, ids, flow.isReply === true, tcp.sourcePort, tcp.destinationPort, rec.type === 'response' ? rec.latencyNs : 0);
    // the parser's shared messages (httpShared): the ring holds no Layer7 but a response's
    c.record = l7.record;
    c.request = c.isReply ? undefined : l7;
    c.sni = tls?.sni;
    c.tlsSummary = undefined;
    ring.pushCompact(c, timeInRing(flow));
    return true;
  };
  return parse;
}
