/**
 * Hubble's `http` and `httpV2` metrics handlers (pkg/hubble/metrics/http, spec/hubble.md §5.3),
 * registered with the metrics registry (index.ts) as `http` and `httpV2`:
 *
 *   http    hubble_http_requests_total{ctx, method, protocol, reporter}          HTTP REQUEST flows
 *           hubble_http_responses_total{ctx, method, protocol, status, reporter} HTTP RESPONSE flows
 *           hubble_http_request_duration_seconds{ctx, method, reporter}         RESPONSE, latency_ns/1e9
 *   httpV2  hubble_http_requests_total{ctx, method, protocol, status, reporter}  RESPONSE flows only,
 *           context from the request's perspective (source/destination inverted)
 *           hubble_http_request_duration_seconds{ctx, method, reporter}         RESPONSE flows
 *           option `exemplars=true`: {traceID} exemplars (the registry is then OpenMetrics)
 *
 * `reporter` is `client` for EGRESS, `server` for INGRESS, else `unknown`; `status` the decimal
 * code; histograms use Prometheus' default buckets, as Hubble's do.
 */
import { Counter, Histogram } from 'prom-client';
import { L7FlowType, TrafficDirection, type Flow } from '../gen/flow/flow_pb.js';
import type { HandlerFactory } from './handler.ts';
import { fastCounter, fastHistogram, OBSERVE_SLOT } from '../../common/fast-counter.ts';
import { latencyNsOf } from '../lent-layer7.ts';

export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function reporterOf(flow: Flow): string {
  return flow.trafficDirection === TrafficDirection.EGRESS ? 'client' : flow.trafficDirection === TrafficDirection.INGRESS ? 'server' : 'unknown';
}

/** The flow as seen from the request's side (httpV2 labels responses by their request). */
function inverted(f: Flow): Flow {
  return {
    ...f,
    source: f.destination, destination: f.source, sourceNames: f.destinationNames, destinationNames: f.sourceNames,
    IP: f.IP ? { ...f.IP, source: f.IP.destination, destination: f.IP.source } : undefined,
  };
}

export const httpHandler: HandlerFactory = ({ registry, ctx }) => {
  const registers = [registry];
  // per request and response: Map lookups (fastCounter), not prom-client's label hashing
  const requests = fastCounter({ name: 'hubble_http_requests_total', help: 'Count of HTTP requests', labelNames: [...ctx.names, 'method', 'protocol', 'reporter'], registers });
  const responses = fastCounter({ name: 'hubble_http_responses_total', help: 'Count of HTTP responses', labelNames: [...ctx.names, 'method', 'protocol', 'status', 'reporter'], registers });
  const duration = fastHistogram({ name: 'hubble_http_request_duration_seconds', help: 'Quantiles of HTTP request duration in seconds', labelNames: [...ctx.names, 'method', 'reporter'], buckets: DEFAULT_BUCKETS, registers });
  // scratch label arrays, filled per flow: context values first, then the metric's own
  const n = ctx.names.length;
  const req = new Array<string>(n + 3).fill('');
  const res = new Array<string>(n + 4).fill('');
  const dur = new Array<string>(n + 2).fill('');
  return {
    name: 'http',
    process(f) {
      const l7 = f.l7;
      if (!l7 || l7.record.case !== 'http') return;
      const h = l7.record.value;
      const reporter = reporterOf(f);
      if (l7.type === L7FlowType.REQUEST) {
        ctx.into(f, req, 0);
        req[n] = h.method; req[n + 1] = h.protocol; req[n + 2] = reporter;
        requests.inc(req);
      } else if (l7.type === L7FlowType.RESPONSE) {
        ctx.into(f, res, 0);
        for (let i = 0; i < n; i++) dur[i] = res[i]!;
        res[n] = h.method; res[n + 1] = h.protocol; res[n + 2] = statusText(h.code); res[n + 3] = reporter;
        responses.inc(res);
        dur[n] = h.method; dur[n + 1] = reporter;
        // through the slot: the seconds (a double) handed to observe() not inlined were a heap number per response
        OBSERVE_SLOT[0] = latencyNsOf(l7) / 1e9;
        duration.observeSlot(dur);
      }
    },
  };
};

/** `status` label values, made once per code */
const STATUS = new Map<number, string>();
function statusText(code: number): string {
  let s = STATUS.get(code);
  if (s === undefined) STATUS.set(code, (s = String(code)));
  return s;
}

export const httpV2Handler: HandlerFactory = ({ registry, ctx, options }) => {
  const registers = [registry];
  const exemplars = options.exemplars === 'true';
  const requestLabels = [...ctx.names, 'method', 'protocol', 'status', 'reporter'];
  const durationLabels = [...ctx.names, 'method', 'reporter'];
  // exemplars live in prom-client's series only; without them the fast path (Map lookups)
  const requests = exemplars ? new Counter({ name: 'hubble_http_requests_total', help: 'Count of HTTP requests', labelNames: requestLabels, registers, enableExemplars: true }) : undefined;
  const duration = exemplars ? new Histogram({ name: 'hubble_http_request_duration_seconds', help: 'Quantiles of HTTP request duration in seconds', labelNames: durationLabels, buckets: DEFAULT_BUCKETS, registers, enableExemplars: true }) : undefined;
  const fastRequests = exemplars ? undefined : fastCounter({ name: 'hubble_http_requests_total', help: 'Count of HTTP requests', labelNames: requestLabels, registers });
  const fastDuration = exemplars ? undefined : fastHistogram({ name: 'hubble_http_request_duration_seconds', help: 'Quantiles of HTTP request duration in seconds', labelNames: durationLabels, buckets: DEFAULT_BUCKETS, registers });
  return {
    name: 'httpV2',
    process(f) {
      const l7 = f.l7;
      if (!l7 || l7.record.case !== 'http' || l7.type !== L7FlowType.RESPONSE) return;
      const h = l7.record.value;
      const reporter = reporterOf(f);
      const c = ctx.values(inverted(f));
      const seconds = latencyNsOf(l7) / 1e9;
      if (requests && duration) {
        const traceId = f.traceContext?.parent?.traceId;
        const rl = [...c, h.method, h.protocol, statusText(h.code), reporter];
        const dl = [...c, h.method, reporter];
        // an exemplar-enabled metric takes the object form only (positional labels lose them)
        const ex = traceId ? { exemplarLabels: { traceID: traceId } } : {};
        requests.inc({ labels: Object.fromEntries(requestLabels.map((n, i) => [n, rl[i]!])), value: 1, ...ex });
        duration.observe({ labels: Object.fromEntries(durationLabels.map((n, i) => [n, dl[i]!])), value: seconds, ...ex });
        return;
      }
      fastRequests!.inc([...c, h.method, h.protocol, statusText(h.code), reporter]);
      fastDuration!.observe(seconds, [...c, h.method, reporter]);
    },
  };
};
