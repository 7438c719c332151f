/**
 * OTLP/HTTP (JSON encoding) export of one span per proxied HTTP request: the span continues the
 * request's W3C trace (trace id and parent span from `traceparent`) or starts a new trace; kind
 * CLIENT for the egress proxy, SERVER for the ingress proxy; start = request head, end = response
 * (or local reply). Spans are batched (size or 1 s) and POSTed to `<endpoint>/v1/traces`; a
 * failing collector costs dropped spans (counted), never proxy latency.
 */
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import type { AccessRecord } from './types.ts';

export interface OtlpExporterOptions {
  /** collector base URL (`http://collector:4318`) or the full traces URL (`.../v1/traces`) */
  endpoint: string;
  serviceName?: string;
  nodeName?: string;
  maxBatch?: number;
  flushMs?: number;
  /** extra HTTP headers (auth) */
  headers?: Record<string, string>;
}

interface KeyValue { key: string; value: { stringValue?: string; intValue?: string; boolValue?: boolean } }

const str = (key: string, v: string): KeyValue => ({ key, value: { stringValue: v } });
const int = (key: string, v: number): KeyValue => ({ key, value: { intValue: String(v) } });

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_UNSET = 0;
const STATUS_ERROR = 2;

export class OtlpExporter {
  readonly url: URL;
  private readonly opts: OtlpExporterOptions;
  private batch: object[] = [];
  private timer: NodeJS.Timeout | undefined;
  exported = 0;
  dropped = 0;
  private inflight = 0;

  constructor(opts: OtlpExporterOptions) {
    this.opts = opts;
    const u = new URL(opts.endpoint);
    if (!u.pathname.endsWith('/v1/traces')) u.pathname = `${u.pathname.replace(/\/$/, '')}/v1/traces`;
    this.url = u;
  }

  /** Takes response records (one span per request); request records are ignored. */
  record(rec: AccessRecord): void {
    if (rec.type !== 'response') return;
    const endNs = BigInt(Math.round(rec.timeMs * 1e6));
    const startNs = rec.requestTimeMs !== undefined ? BigInt(Math.round(rec.requestTimeMs * 1e6)) : endNs - BigInt(rec.latencyNs);
    const attrs: KeyValue[] = [
      str('http.method', rec.method), str('http.url', rec.url), str('http.flavor', rec.protocol.replace('HTTP/', '')),
      str('http.host', rec.host), str('http.target', rec.path), int('http.status_code', rec.code),
      str('net.peer.ip', rec.client.ip), int('net.peer.port', rec.client.port),
      str('net.host.ip', rec.server.ip), int('net.host.port', rec.server.port),
      int('cilium.source_identity', rec.client.identity), int('cilium.destination_identity', rec.server.identity),
      str('cilium.traffic_direction', rec.direction), str('cilium.verdict', rec.verdict),
    ];
    if (rec.reason) attrs.push(str('cilium.reason', rec.reason));
    const span = {
      traceId: rec.traceId ?? randomBytes(16).toString('hex'),
      spanId: randomBytes(8).toString('hex'),
      ...(rec.parentSpanId ? { parentSpanId: rec.parentSpanId } : {}),
      name: rec.method ? `HTTP ${rec.method}` : 'HTTP',
      kind: rec.direction === 'egress' ? SPAN_KIND_CLIENT : SPAN_KIND_SERVER,
      startTimeUnixNano: startNs.toString(),
      endTimeUnixNano: endNs.toString(),
      attributes: attrs,
      status: rec.verdict === 'forwarded' && rec.code < 500 ? { code: STATUS_UNSET } : { code: STATUS_ERROR, message: rec.reason ?? `HTTP ${rec.code}` },
    };
    if (this.batch.length >= 8192) { this.dropped++; return; }
    this.batch.push(span);
    if (this.batch.length >= (this.opts.maxBatch ?? 512)) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => { this.timer = undefined; this.flush(); }, this.opts.flushMs ?? 1000);
      this.timer.unref();
    }
  }

  /** Sends what is batched; resolves when the collector answered (or failed). */
  flush(): Promise<void> {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    if (!this.batch.length) return Promise.resolve();
    const spans = this.batch;
    this.batch = [];
    const body = JSON.stringify({
      resourceSpans: [{
        resource: { attributes: [str('service.name', this.opts.serviceName ?? 'membrane-http-proxy'), ...(this.opts.nodeName ? [str('k8s.node.name', this.opts.nodeName)] : [])] },
        scopeSpans: [{ scope: { name: 'membrane/proxy/http', version: '0.1.0' }, spans }],
      }],
    });
    const mod = this.url.protocol === 'https:' ? https : http;
    this.inflight++;
    return new Promise((resolve) => {
      const req = mod.request(this.url, {
        method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...this.opts.headers }, timeout: 5000,
      }, (res) => {
        res.resume();
        res.on('end', () => {
          if ((res.statusCode ?? 500) < 300) this.exported += spans.length;
          else this.dropped += spans.length;
          this.inflight--;
          resolve();
        });
      });
      req.on('error', () => { this.dropped += spans.length; this.inflight--; resolve(); });
      req.on('timeout', () => req.destroy());
      req.end(body);
    });
  }

  async stop(): Promise<void> {
    await this.flush();
  }
}
