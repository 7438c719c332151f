/**
 * OTLP/HTTP export of one span per proxied HTTP request, as an OpenTelemetry SDK would send it:
 *
 * - the span continues the request's W3C trace (trace id and parent span from `traceparent`) or
 *   starts a new trace; kind CLIENT for the egress proxy, SERVER for the ingress proxy; start =
 *   request head, end = response (or local reply);
 * - attributes use the stable HTTP semantic conventions (http.request.method, url.full | url.path,
 *   http.response.status_code, server.address, client.address, network.peer.address,
 *   network.protocol.version, error.type, user_agent.original), never the deprecated
 *   http.method / http.url / net.peer.ip;
 * - configured by the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout,
 *   protocol http/protobuf | http/json, gzip compression, CA and client certificate),
 *   OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (`otlpOptionsFromEnv`);
 * - batched (size or 1 s); a batch is retried with exponential backoff and jitter on network
 *   errors and on 429/502/503/504 (Retry-After honoured), as the OTLP/HTTP spec says, a bounded
 *   number of times; anything else is dropped and counted. A failing collector costs dropped spans,
 *   never proxy latency: spans queue up to a bound while a batch is in flight.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { create, toBinary } from '@bufbuild/protobuf';
import { ExportTraceServiceRequestSchema } from '../../hubble/gen/opentelemetry/proto/collector/trace/v1/trace_service_pb.js';
import { MembraneError } from '../../common/errors.ts';
import type { HttpAccessRecord } from '../../common/access-log.ts';

export type OtlpProtocol = 'http/protobuf' | 'http/json';

export interface OtlpRetry {
  /** attempts per batch, the first included */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

export interface OtlpExporterOptions {
  /** collector base URL (`http://collector:4318`, `/v1/traces` is appended) or, with `tracesUrl`, the full URL */
  endpoint: string;
  /** `endpoint` is the full traces URL (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): used as is */
  tracesUrl?: boolean;
  protocol?: OtlpProtocol;
  compression?: 'gzip' | 'none';
  /** extra HTTP headers (auth) */
  headers?: Record<string, string>;
  /** per request, ms (OTLP default 10 s) */
  timeoutMs?: number;
  /** https: trusted CA, client certificate and key (PEM) */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  serviceName?: string;
  nodeName?: string;
  resourceAttributes?: Record<string, string>;
  maxBatch?: number;
  flushMs?: number;
  /** spans held while batches are in flight or retried; beyond it new spans are dropped */
  maxQueue?: number;
  retry?: Partial<OtlpRetry>;
}

type AttrValue = string | number | boolean;
/** What one span is, before encoding (JSON and protobuf read the same object). */
interface SpanData {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: [string, AttrValue][];
  status: { code: number; message?: string };
}

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_UNSET = 0;
const STATUS_ERROR = 2;
/** the methods the HTTP semantic conventions name; any other is `_OTHER` */
const KNOWN_METHODS = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'QUERY', 'TRACE']);
/** OTLP/HTTP: the only statuses worth retrying */
const RETRYABLE = new Set([429, 502, 503, 504]);
const DEFAULT_RETRY: OtlpRetry = { maxAttempts: 5, initialBackoffMs: 1000, maxBackoffMs: 5000 };
const SCOPE = { name: 'membrane/proxy/http', version: '0.1.0' };

/** query parameters whose values the semantic conventions redact in url.full / url.query */
const SENSITIVE_QUERY = new Set(['awsaccesskeyid', 'signature', 'sig', 'x-goog-signature']);

/** url.full / url.query as the semantic conventions want them: no credentials, no signatures. */
export function redactQuery(query: string): string {
  return query.split('&').map((kv) => {
    const eq = kv.indexOf('=');
    return eq > 0 && SENSITIVE_QUERY.has(kv.slice(0, eq).toLowerCase()) ? `${kv.slice(0, eq)}=REDACTED` : kv;
  }).join('&');
}
export function redactUrlFull(url: string): string {
  const u = url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@?#]*@/i, '$1REDACTED:REDACTED@');
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q + 1) + redactQuery(u.slice(q + 1));
}

function header(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < headers.length; i += 2) if (headers[i]!.toLowerCase() === name) return headers[i + 1];
  return undefined;
}

/** The span of one response record (request records make no span). */
export function spanOf(rec: HttpAccessRecord, requestHeaders?: readonly string[]): SpanData {
  const endNs = BigInt(Math.round(rec.timeMs * 1e6));
  const startNs = rec.requestTimeMs !== undefined && rec.requestTimeMs >= 0 ? BigInt(Math.round(rec.requestTimeMs * 1e6)) : endNs - BigInt(rec.latencyNs);
  const client = rec.direction === 'egress';
  const method = rec.method.toUpperCase();
  const known = KNOWN_METHODS.has(method);
  const scheme = rec.tls ? 'https' : 'http';
  const a: [string, AttrValue][] = [['http.request.method', known ? method : '_OTHER']];
  if (!known && rec.method) a.push(['http.request.method_original', rec.method]);
  const hostName = rec.host.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (client) {
    a.push(['url.full', redactUrlFull(rec.url.replace(/^http:/, `${scheme}:`))], ['server.address', hostName || rec.server.ip], ['server.port', rec.server.port]);
    a.push(['network.peer.address', rec.server.ip], ['network.peer.port', rec.server.port]);
  } else {
    const q = rec.path.indexOf('?');
    a.push(['url.scheme', scheme], ['url.path', q < 0 ? rec.path : rec.path.slice(0, q)]);
    if (q >= 0) a.push(['url.query', redactQuery(rec.path.slice(q + 1))]);
    a.push(['server.address', hostName || rec.server.ip], ['server.port', rec.server.port]);
    a.push(['client.address', rec.client.ip], ['client.port', rec.client.port]);
    a.push(['network.peer.address', rec.client.ip], ['network.peer.port', rec.client.port]);
  }
  a.push(['network.local.address', client ? rec.client.ip : rec.server.ip]);
  if (rec.code) a.push(['http.response.status_code', rec.code]);
  const version = rec.protocol.replace(/^HTTP\//, '');
  if (version) a.push(['network.protocol.version', version]);
  const ua = requestHeaders && header(requestHeaders, 'user-agent');
  if (ua) a.push(['user_agent.original', ua]);
  // the semantic conventions: 4xx is an error for a client, only 5xx for a server; no response at all is one for both
  const errorType = !rec.code ? (rec.reason ?? '_OTHER') : rec.code >= 500 || (client && rec.code >= 400) ? String(rec.code) : undefined;
  if (errorType) a.push(['error.type', errorType]);
  a.push(['cilium.source_identity', rec.client.identity], ['cilium.destination_identity', rec.server.identity]);
  a.push(['cilium.traffic_direction', rec.direction], ['cilium.verdict', rec.verdict]);
  if (rec.reason) a.push(['cilium.reason', rec.reason]);
  return {
    traceId: rec.traceId ?? randomBytes(16).toString('hex'),
    spanId: randomBytes(8).toString('hex'),
    ...(rec.parentSpanId ? { parentSpanId: rec.parentSpanId } : {}),
    name: known ? method : 'HTTP',
    kind: client ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER,
    startNs, endNs, attributes: a,
    status: errorType ? { code: STATUS_ERROR, ...(rec.reason ? { message: rec.reason } : {}) } : { code: STATUS_UNSET },
  };
}

const jsonValue = (v: AttrValue) =>
  typeof v === 'string' ? { stringValue: v } : typeof v === 'boolean' ? { boolValue: v } : Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
const protoValue = (v: AttrValue) =>
  typeof v === 'string' ? { case: 'stringValue' as const, value: v } : typeof v === 'boolean' ? { case: 'boolValue' as const, value: v }
    : Number.isInteger(v) ? { case: 'intValue' as const, value: BigInt(v) } : { case: 'doubleValue' as const, value: v };

/** OTLP/JSON: ids in hex, enums as integers, 64-bit integers as strings (the OTLP JSON rules). */
export function encodeJson(resource: [string, AttrValue][], spans: SpanData[]): Buffer {
  const kv = (attrs: [string, AttrValue][]) => attrs.map(([key, v]) => ({ key, value: jsonValue(v) }));
  return Buffer.from(JSON.stringify({
    resourceSpans: [{
      resource: { attributes: kv(resource) },
      scopeSpans: [{
        scope: SCOPE,
        spans: spans.map((s) => ({
          traceId: s.traceId, spanId: s.spanId, ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
          name: s.name, kind: s.kind, startTimeUnixNano: s.startNs.toString(), endTimeUnixNano: s.endNs.toString(),
          attributes: kv(s.attributes), status: s.status,
        })),
      }],
    }],
  }));
}

/** OTLP/protobuf: an ExportTraceServiceRequest of the official opentelemetry-proto (v1.9.0). */
export function encodeProtobuf(resource: [string, AttrValue][], spans: SpanData[]): Buffer {
  const kv = (attrs: [string, AttrValue][]) => attrs.map(([key, v]) => ({ key, value: { value: protoValue(v) } }));
  const msg = create(ExportTraceServiceRequestSchema, {
    resourceSpans: [{
      resource: { attributes: kv(resource) },
      scopeSpans: [{
        scope: SCOPE,
        spans: spans.map((s) => ({
          traceId: Buffer.from(s.traceId, 'hex'), spanId: Buffer.from(s.spanId, 'hex'),
          parentSpanId: s.parentSpanId ? Buffer.from(s.parentSpanId, 'hex') : new Uint8Array(0),
          name: s.name, kind: s.kind, startTimeUnixNano: s.startNs, endTimeUnixNano: s.endNs,
          attributes: kv(s.attributes), status: { code: s.status.code, message: s.status.message ?? '' },
        })),
      }],
    }],
  });
  return Buffer.from(toBinary(ExportTraceServiceRequestSchema, msg));
}

/** Retry-After: seconds or an HTTP date; undefined when absent or unreadable. */
function retryAfterMs(v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

export class OtlpExporter {
  readonly url: URL;
  readonly protocol: OtlpProtocol;
  private readonly opts: OtlpExporterOptions;
  private readonly retry: OtlpRetry;
  private readonly resource: [string, AttrValue][];
  private batch: SpanData[] = [];
  /** request headers of requests still waiting for their response (user_agent.original) */
  private readonly pendingUa = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  private queued = 0;
  private stopped = false;
  exported = 0;
  dropped = 0;
  retries = 0;

  constructor(opts: OtlpExporterOptions) {
    this.opts = opts;
    const u = new URL(opts.endpoint);
    if (!opts.tracesUrl && !u.pathname.endsWith('/v1/traces')) u.pathname = `${u.pathname.replace(/\/$/, '')}/v1/traces`;
    this.url = u;
    this.protocol = opts.protocol ?? 'http/protobuf';
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.resource = [['service.name', opts.serviceName ?? 'membrane-http-proxy']];
    if (opts.nodeName) this.resource.push(['k8s.node.name', opts.nodeName]);
    for (const [k, v] of Object.entries(opts.resourceAttributes ?? {})) {
      const i = this.resource.findIndex(([key]) => key === k);
      if (i >= 0) this.resource[i] = [k, v]; else this.resource.push([k, v]);
    }
  }

  /** Takes access records: a response makes one span; its request lends the user agent. */
  record(rec: HttpAccessRecord): void {
    const key = `${rec.client.ip}:${rec.client.port}>${rec.server.ip}:${rec.server.port}`;
    if (rec.type === 'request') {
      const ua = header(rec.headers, 'user-agent');
      if (ua && this.pendingUa.size < 4096) this.pendingUa.set(key, ua);
      return;
    }
    const ua = this.pendingUa.get(key);
    this.pendingUa.delete(key);
    if (this.stopped || this.queued + this.batch.length >= (this.opts.maxQueue ?? 8192)) { this.dropped++; return; }
    this.batch.push(spanOf(rec, ua ? ['user-agent', ua] : undefined));
    if (this.batch.length >= (this.opts.maxBatch ?? 512)) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => { this.timer = undefined; void this.flush(); }, this.opts.flushMs ?? 1000);
      this.timer.unref();
    }
  }

  /** Sends what is batched (after the batches before it); resolves when it was exported or given up. */
  flush(): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    if (!this.batch.length) return this.sending;
    const spans = this.batch;
    this.batch = [];
    this.queued += spans.length;
    const body = (this.protocol === 'http/json' ? encodeJson : encodeProtobuf)(this.resource, spans);
    this.sending = this.sending.then(() => this.export(body, spans.length)).finally(() => { this.queued -= spans.length; });
    return this.sending;
  }

  private async export(payload: Buffer, n: number): Promise<void> {
    const gzip = this.opts.compression === 'gzip';
    const body = gzip ? gzipSync(payload) : payload;
    let backoff = this.retry.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      const r = await this.post(body, gzip);
      if (r.status !== undefined && r.status >= 200 && r.status < 300) { this.exported += n; return; }
      const retryable = r.status === undefined || RETRYABLE.has(r.status);
      if (!retryable || attempt >= this.retry.maxAttempts || this.stopped) { this.dropped += n; return; }
      // full jitter on the exponential step; the server's Retry-After wins when it says more
      const wait = Math.max(Math.random() * backoff, r.retryAfterMs ?? 0);
      backoff = Math.min(backoff * 2, this.retry.maxBackoffMs);
      this.retries++;
      await new Promise((res) => setTimeout(res, Math.min(wait, 60_000)));
    }
  }

  private post(body: Buffer, gzip: boolean): Promise<{ status?: number; retryAfterMs?: number }> {
    const mod = this.url.protocol === 'https:' ? https : http;
    const tls = this.url.protocol === 'https:' ? this.opts.tls ?? {} : {};
    return new Promise((resolve) => {
      const req = mod.request(this.url, {
        method: 'POST', timeout: this.opts.timeoutMs ?? 10_000, ...tls,
        headers: {
          ...this.opts.headers,
          'content-type': this.protocol === 'http/json' ? 'application/json' : 'application/x-protobuf',
          'content-length': body.length, ...(gzip ? { 'content-encoding': 'gzip' } : {}),
        },
      }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, retryAfterMs: retryAfterMs(res.headers['retry-after']) }));
        res.on('error', () => resolve({}));
      });
      req.on('error', () => resolve({}));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end(body);
    });
  }

  /** Flushes, then gives up pending retries after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    const done = this.flush();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => { timer = setTimeout(r, graceMs); timer.unref(); })]);
    clearTimeout(timer);
    this.stopped = true;
  }
}

/** `k1=v1,k2=v2` with percent-encoded values (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES). */
export function parseOtelList(name: string, v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    const key = eq > 0 ? part.slice(0, eq).trim() : '';
    if (!key) throw new MembraneError('OTLP_CONFIG', `${name}: "${part}" is not key=value`, { hint: `${name}=key1=value1,key2=value2 (values percent-encoded)` });
    try {
      out[key] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      throw new MembraneError('OTLP_CONFIG', `${name}: the value of "${key}" is not valid percent-encoding`, { hint: 'encode ",", "=" and "%" in values as %2C, %3D, %25' });
    }
  }
  return out;
}

/**
 * The exporter's options from the environment, or undefined when no export is configured.
 * Export is on when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or
 * membrane's MEMBRANE_OTLP_ENDPOINT (the agent's --otlp-endpoint) is set, or OTEL_TRACES_EXPORTER
 * is `otlp` (then the spec's default endpoint, localhost:4318); OTEL_SDK_DISABLED=true or
 * OTEL_TRACES_EXPORTER=none turn it off. Signal-specific variables win over the general ones.
 */
export function otlpOptionsFromEnv(env: Readonly<Record<string, string | undefined>>, base: { nodeName?: string } = {}): OtlpExporterOptions | undefined {
  const pick = (suffix: string) => env[`OTEL_EXPORTER_OTLP_TRACES_${suffix}`] ?? env[`OTEL_EXPORTER_OTLP_${suffix}`];
  if (env.OTEL_SDK_DISABLED?.toLowerCase() === 'true' || env.OTEL_TRACES_EXPORTER === 'none') return undefined;
  const tracesEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const endpoint = tracesEndpoint ?? env.OTEL_EXPORTER_OTLP_ENDPOINT ?? env.MEMBRANE_OTLP_ENDPOINT ?? (env.OTEL_TRACES_EXPORTER === 'otlp' ? 'http://localhost:4318' : undefined);
  if (!endpoint) return undefined;
  if (env.OTEL_TRACES_EXPORTER && !['otlp', 'none'].includes(env.OTEL_TRACES_EXPORTER)) {
    throw new MembraneError('OTLP_CONFIG', `OTEL_TRACES_EXPORTER=${env.OTEL_TRACES_EXPORTER}: membrane exports traces over OTLP only`, { hint: 'set OTEL_TRACES_EXPORTER=otlp (or none)' });
  }
  let url: URL;
  try { url = new URL(endpoint); } catch {
    throw new MembraneError('OTLP_CONFIG', `OTLP endpoint "${endpoint}" is not a URL`, { hint: 'e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new MembraneError('OTLP_CONFIG', `OTLP endpoint "${endpoint}": scheme ${url.protocol} is not http or https`, { hint: 'membrane speaks OTLP/HTTP (port 4318), not gRPC' });
  }
  const protocol = pick('PROTOCOL') ?? 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') {
    throw new MembraneError('OTLP_CONFIG', `OTLP protocol "${protocol}" is not supported`, { hint: protocol === 'grpc' ? 'membrane exports OTLP/HTTP only: use http/protobuf or http/json and the collector\'s port 4318' : 'use http/protobuf or http/json' });
  }
  const compression = pick('COMPRESSION') ?? 'none';
  if (compression !== 'gzip' && compression !== 'none') {
    throw new MembraneError('OTLP_CONFIG', `OTLP compression "${compression}" is not supported`, { hint: 'use gzip or none' });
  }
  const timeout = pick('TIMEOUT');
  if (timeout !== undefined && !/^\d+$/.test(timeout)) {
    throw new MembraneError('OTLP_CONFIG', `OTLP timeout "${timeout}" is not a number of milliseconds`, { hint: 'e.g. OTEL_EXPORTER_OTLP_TIMEOUT=10000' });
  }
  const file = (suffix: string) => {
    const path = pick(suffix);
    if (!path) return undefined;
    try { return readFileSync(path); } catch (e) {
      throw new MembraneError('OTLP_CONFIG', `OTEL_EXPORTER_OTLP_${suffix}=${path}: ${(e as Error).message}`, { hint: 'a PEM file readable by the agent' });
    }
  };
  const ca = file('CERTIFICATE'), cert = file('CLIENT_CERTIFICATE'), key = file('CLIENT_KEY');
  if (!cert !== !key) throw new MembraneError('OTLP_CONFIG', 'OTLP client certificate and client key go together', { hint: 'set both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY, or neither' });
  const headers = pick('HEADERS');
  const resource = env.OTEL_RESOURCE_ATTRIBUTES ? parseOtelList('OTEL_RESOURCE_ATTRIBUTES', env.OTEL_RESOURCE_ATTRIBUTES) : {};
  return {
    endpoint, tracesUrl: tracesEndpoint !== undefined, protocol, compression,
    ...(headers ? { headers: parseOtelList('OTEL_EXPORTER_OTLP_HEADERS', headers) } : {}),
    ...(timeout !== undefined ? { timeoutMs: Number(timeout) } : {}),
    ...(ca || cert ? { tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) } } : {}),
    serviceName: env.OTEL_SERVICE_NAME ?? resource['service.name'] ?? 'membrane-http-proxy',
    ...(base.nodeName ? { nodeName: base.nodeName } : {}),
    resourceAttributes: Object.fromEntries(Object.entries(resource).filter(([k]) => k !== 'service.name')),
  };
}
