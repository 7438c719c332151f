/**
 * Access records → Hubble L7 flows, the way Cilium's seven parser fills them (spec/hubble.md
 * §1.5): Type L7, event_type 129, l7.type REQUEST/RESPONSE, is_reply = response, verdict
 * FORWARDED / DROPPED (denied) / ERROR, http {code, method, url, protocol, headers sorted by key
 * with sensitive values redacted}, latency_ns on responses, trace_context from traceparent,
 * traffic direction of the proxy, and the Summary the compact printer shows
 * (`HTTP/1.1 GET http://host/path`, `HTTP/1.1 200 3ms (GET http://host/path)`).
 */
import {
  FlowType, Verdict, TrafficDirection, IPVersion, L7FlowType, type Endpoint, type Flow, type HTTP,
} from '../../hubble/gen/flow/flow_pb.js';
import type { Any } from '@bufbuild/protobuf/wkt';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import { reservedIdentityName } from '../../hubble/names.ts';
import type { AccessAI, AccessRecord } from './types.ts';
import { DEFAULT_PROXY_PORTS } from '../../common/proxy-ports.ts';

/** The HTTP proxy port the datapath redirects to (DEFAULT_PROXY_PORTS.http). */
export const HTTP_PROXY_PORT = DEFAULT_PROXY_PORTS.http;

export const REDACTED = 'HUBBLE_REDACTED';

/** Header names whose values never leave the proxy (lower-case). */
export const SENSITIVE_HEADERS = new Set([
  'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'api-key', 'x-auth-token',
  'x-csrf-token', 'x-xsrf-token', 'openai-api-key', 'x-goog-api-key', 'x-amz-security-token',
]);

export interface FlowEndpointResolver {
  byIp(ip: string): ResolvedEndpoint | undefined;
  identityLabels(identity: number): string[] | undefined;
}

/** `http://user:pass@host/` → `http://user:HUBBLE_REDACTED@host/` (Hubble's URL redaction). */
export function redactUrl(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/@]*):([^/@]*)@/i.exec(url);
  return m ? `${m[1]}${m[2]}:${REDACTED}@${url.slice(m[0].length)}` : url;
}

export function flowHeaders(flat: readonly string[]): { $typeName: 'flow.HTTPHeader'; key: string; value: string }[] {
  const out: { $typeName: 'flow.HTTPHeader'; key: string; value: string }[] = [];
  for (let i = 0; i < flat.length; i += 2) {
    const key = flat[i]!;
    const lk = key.toLowerCase();
    out.push({ $typeName: 'flow.HTTPHeader', key, value: SENSITIVE_HEADERS.has(lk) ? REDACTED : flat[i + 1]! });
  }
  out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return out;
}

/**
 * An AI call's facts as the flow's `extensions` (Hubble's field for data beyond its schema): a
 * google.protobuf.Any holding a Struct `{ai: {...}}`, which every protobuf runtime can print
 * (`hubble observe -o json` shows it as JSON), unlike a type of our own.
 */
export function aiExtension(ai: AccessAI): Any {
  const w = new StructWriter();
  const inner = w.begin();
  w.string('provider', ai.provider);
  w.string('operation', ai.operation);
  w.string('model', ai.model);
  w.bool('stream', ai.stream);
  if (ai.policy) w.string('policy', ai.policy);
  if (ai.promptTokens !== undefined) w.number('prompt_tokens', ai.promptTokens);
  if (ai.completionTokens !== undefined) w.number('completion_tokens', ai.completionTokens);
  if (ai.promptTokens !== undefined || ai.completionTokens !== undefined) w.number('total_tokens', (ai.promptTokens ?? 0) + (ai.completionTokens ?? 0));
  if (ai.usage) w.string('usage', ai.usage);
  if (ai.firstByteNs !== undefined) w.number('time_to_first_byte_ns', ai.firstByteNs);
  const ext = new StructWriter();
  ext.struct('ai', w.bytes(inner));
  return { $typeName: 'google.protobuf.Any', typeUrl: 'type.googleapis.com/google.protobuf.Struct', value: ext.bytes(0) };
}

/**
 * google.protobuf.Struct in the wire format, written directly into one buffer (an AI flow's
 * extension; the generic fromJson + anyPack path cost more than the rest of the flow). Struct {
 * map<string, Value> fields = 1 }: each entry {key = 1, value = 2}; Value: number_value = 2
 * (double), string_value = 3, bool_value = 4, struct_value = 5.
 */
class StructWriter {
  private buf = Buffer.allocUnsafe(512);
  private n = 0;
  begin(): number {
    return this.n;
  }
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.n + k));
    this.buf.copy(b, 0, 0, this.n);
    this.buf = b;
  }
  private varint(v: number): void {
    while (v > 0x7f) { this.buf[this.n++] = (v & 0x7f) | 0x80; v >>>= 7; }
    this.buf[this.n++] = v;
  }
  /** one map entry whose Value holds field `valueTag` with `payloadLen` bytes (their length prefix included by the caller's `len`) */
  private entry(key: string, valueTag: number, payloadLen: number, lengthPrefixed: boolean): void {
    const keyLen = Buffer.byteLength(key);
    const valueLen = 1 + (lengthPrefixed ? varintSize(payloadLen) : 0) + payloadLen;
    const entryLen = 1 + varintSize(keyLen) + keyLen + 1 + varintSize(valueLen) + valueLen;
    this.room(1 + varintSize(entryLen) + entryLen);
    this.buf[this.n++] = 0x0a;
    this.varint(entryLen);
    this.buf[this.n++] = 0x0a;
    this.varint(keyLen);
    this.n += this.buf.write(key, this.n, 'utf8');
    this.buf[this.n++] = 0x12;
    this.varint(valueLen);
    this.buf[this.n++] = valueTag;
    if (lengthPrefixed) this.varint(payloadLen);
  }
  string(key: string, v: string): void {
    this.entry(key, 0x1a, Buffer.byteLength(v), true);
    this.n += this.buf.write(v, this.n, 'utf8');
  }
  bool(key: string, v: boolean): void {
    this.entry(key, 0x20, 1, false);
    this.buf[this.n++] = v ? 1 : 0;
  }
  number(key: string, v: number): void {
    this.entry(key, 0x11, 8, false);
    this.n = this.buf.writeDoubleLE(v, this.n);
  }
  struct(key: string, inner: Uint8Array): void {
    this.entry(key, 0x2a, inner.length, true);
    this.buf.set(inner, this.n);
    this.n += inner.length;
  }
  bytes(from: number): Uint8Array {
    return new Uint8Array(this.buf.subarray(from, this.n));
  }
}

function varintSize(v: number): number {
  let n = 1;
  while (v > 0x7f) { v >>>= 7; n++; }
  return n;
}

/** ` [ai openai gpt-4o-mini stream, tokens 12+30]` */
function aiSummary(ai: AccessAI): string {
  let s = ` [ai ${ai.provider} ${ai.operation === 'other' ? 'other request' : ai.model || '(no model)'}${ai.stream ? ' stream' : ''}`;
  if (ai.promptTokens !== undefined || ai.completionTokens !== undefined) s += `, tokens ${ai.promptTokens ?? 0}+${ai.completionTokens ?? 0}${ai.usage === 'estimated' ? ' estimated' : ''}`;
  return `${s}]`;
}

/** Hubble's `%dms` (whole milliseconds, truncated) in response summaries. */
function formatLatency(ns: number): string {
  return `${Math.floor(ns / 1e6)}ms`;
}

export function createFlowBuilder(opts: { nodeName: string; resolver: FlowEndpointResolver; clusterName?: string }) {
  const cluster = opts.clusterName ?? 'default';
  const labelCache = new Map<number, string[]>();
  // endpoint label arrays are stable objects (the agent's records): sort each once
  const sortedCache = new WeakMap<readonly string[], string[]>();
  const sorted = (l: readonly string[]) => {
    let v = sortedCache.get(l);
    if (!v) sortedCache.set(l, (v = [...l].sort()));
    return v;
  };

  function endpoint(ip: string, identity: number): Endpoint {
    const r = opts.resolver.byIp(ip);
    if (r) {
      return { $typeName: 'flow.Endpoint', ID: r.id, identity: r.identity, clusterName: cluster, namespace: r.namespace, labels: sorted(r.labels), podName: r.pod, workloads: [] };
    }
    let labels = labelCache.get(identity);
    if (!labels) {
      const raw = opts.resolver.identityLabels(identity);
      const name = reservedIdentityName(identity);
      labels = raw ? [...raw].sort() : name && identity ? [`reserved:${name}`] : [];
      if (labelCache.size > 4096) labelCache.clear();
      labelCache.set(identity, labels);
    }
    return { $typeName: 'flow.Endpoint', ID: 0, identity, clusterName: '', namespace: '', labels, podName: '', workloads: [] };
  }

  return function build(rec: AccessRecord): Flow {
    const isReq = rec.type === 'request';
    // the flow goes client → server for requests, server → client for responses
    const src = isReq ? rec.client : rec.server;
    const dst = isReq ? rec.server : rec.client;
    const verdict = rec.verdict === 'forwarded' ? Verdict.FORWARDED : Verdict.DROPPED;
    const url = redactUrl(rec.url);
    let summary: string;
    if (isReq) summary = rec.method ? `${rec.protocol} ${rec.method} ${url}` : `${rec.protocol} malformed request`;
    else summary = rec.method ? `${rec.protocol} ${rec.code} ${formatLatency(rec.latencyNs)} (${rec.method} ${url})` : `${rec.protocol} ${rec.code} (malformed request)`;
    // AI calls: provider, model and tokens (src/proxy/ai)
    if (rec.ai) summary += aiSummary(rec.ai);
    // policy denials read exactly like Hubble's; refusals by the parser (and the AI filter) say why
    if (rec.reason && (rec.verdict === 'error' || (rec.ai && rec.verdict === 'denied'))) summary += ` [${rec.reason}]`;
    // HTTP seen inside TLS the proxy terminated (terminatingTLS): the URL is https://, and the summary says so
    if (rec.tls?.intercepted) summary += ` [TLS intercepted, SNI ${rec.tls.sni}]`;
    const wallNs = BigInt(Math.round(rec.timeMs * 1e6));
    const http: HTTP = { $typeName: 'flow.HTTP', code: rec.code, method: rec.method, url, protocol: rec.protocol, headers: flowHeaders(rec.headers) };
    // A literal in create(FlowSchema)'s shape (as hubble/flow.ts builds datapath flows): no create() per request.
    return {
      $typeName: 'flow.Flow',
      time: { $typeName: 'google.protobuf.Timestamp', seconds: wallNs / 1_000_000_000n, nanos: Number(wallNs % 1_000_000_000n) },
      uuid: '',
      emitter: undefined,
      verdict,
      dropReason: 0,
      authType: 0,
      ethernet: undefined,
      IP: { $typeName: 'flow.IP', source: src.ip, sourceXlated: '', destination: dst.ip, ipVersion: src.ip.includes(':') ? IPVersion.IPv6 : IPVersion.IPv4, encrypted: false },
      l4: { $typeName: 'flow.Layer4', protocol: { case: 'TCP', value: { $typeName: 'flow.TCP', sourcePort: src.port, destinationPort: dst.port, flags: undefined } } },
      tunnel: undefined,
      source: endpoint(src.ip, src.identity),
      destination: endpoint(dst.ip, dst.identity),
      Type: FlowType.L7,
      nodeName: opts.nodeName,
      nodeLabels: [],
      sourceNames: [],
      destinationNames: [],
      l7: {
        $typeName: 'flow.Layer7',
        type: isReq ? L7FlowType.REQUEST : L7FlowType.RESPONSE,
        latencyNs: BigInt(isReq ? 0 : Math.max(0, Math.round(rec.latencyNs))),
        record: { case: 'http', value: http },
      },
      reply: false,
      eventType: { $typeName: 'flow.CiliumEventType', type: 129, subType: 0 },
      sourceService: undefined,
      destinationService: undefined,
      trafficDirection: rec.direction === 'ingress' ? TrafficDirection.INGRESS : TrafficDirection.EGRESS,
      policyMatchType: 0,
      traceObservationPoint: 0,
      traceReason: 0,
      file: undefined,
      ipTraceId: undefined,
      dropReasonDesc: 0,
      isReply: !isReq,
      debugCapturePoint: 0,
      interface: undefined,
      proxyPort: HTTP_PROXY_PORT,
      traceContext: rec.traceId ? { $typeName: 'flow.TraceContext', parent: { $typeName: 'flow.TraceParent', traceId: rec.traceId } } : undefined,
      sockXlatePoint: 0,
      socketCookie: 0n,
      cgroupId: 0n,
      Summary: summary,
      extensions: rec.ai ? aiExtension(rec.ai) : undefined,
      egressAllowedBy: [],
      ingressAllowedBy: [],
      egressDeniedBy: [],
      ingressDeniedBy: [],
      policyLog: [],
      aggregate: undefined,
    };
  };
}
