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
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import { reservedIdentityName } from '../../hubble/names.ts';
import type { AccessRecord } from './types.ts';
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
    // policy denials read exactly like Hubble's; refusals by the parser say why
    if (rec.reason && rec.verdict === 'error') summary += ` [${rec.reason}]`;
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
      extensions: undefined,
      egressAllowedBy: [],
      ingressAllowedBy: [],
      egressDeniedBy: [],
      ingressDeniedBy: [],
      policyLog: [],
      aggregate: undefined,
    };
  };
}
