/**
 * Hubble's `http` metrics handler (pkg/hubble/metrics/http, spec/hubble.md §5.3), fed with
 * decoded flows:
 *
 *   hubble_http_requests_total{[ctx,] method, protocol, reporter}          HTTP REQUEST flows
 *   hubble_http_responses_total{[ctx,] method, protocol, status, reporter} HTTP RESPONSE flows
 *   hubble_http_request_duration_seconds{[ctx,] method, reporter}         RESPONSE flows, latency_ns/1e9
 *
 * With `v2` (httpV2): requests_total counts RESPONSE flows with `status` too, its context is
 * taken from the request's perspective (source/destination inverted), and there is no
 * responses_total. `reporter` is `client` for EGRESS, `server` for INGRESS, else `unknown`.
 * Histograms use Prometheus' default buckets. Context labels (sourceContext/destinationContext)
 * come first, as in Hubble.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { L7FlowType, TrafficDirection, type Endpoint, type Flow } from '../gen/flow/flow_pb.js';

export const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export type ContextIdentifier = 'identity' | 'namespace' | 'pod' | 'pod-name' | 'ip' | 'workload-name' | 'app' | 'reserved-identity';

export interface HttpMetricsOptions {
  registry: Registry;
  /** httpV2 semantics */
  v2?: boolean;
  /** `|`-separated priority lists, e.g. `namespace|ip` (Hubble's sourceContext/destinationContext) */
  sourceContext?: string;
  destinationContext?: string;
  /** attach {traceID} exemplars (OpenMetrics registries only) */
  exemplars?: boolean;
}

/** What every flow metrics handler offers (matches the metrics registry's handler contract). */
export interface FlowMetricsHandler {
  readonly name: string;
  processFlow(flow: Flow): void;
}

function contextValue(spec: string, ep: Endpoint | undefined, ip: string): string {
  for (const id of spec.split('|')) {
    let v = '';
    switch (id as ContextIdentifier) {
      case 'identity': v = ep?.labels.join(',') ?? ''; break;
      case 'namespace': v = ep?.namespace ?? ''; break;
      case 'pod': v = ep?.podName ? `${ep.namespace}/${ep.podName}` : ''; break;
      case 'pod-name': v = ep?.podName ?? ''; break;
      case 'ip': v = ip; break;
      case 'workload-name': v = ep?.workloads[0]?.name ?? ''; break;
      case 'app': {
        for (const k of ['k8s:app.kubernetes.io/name=', 'k8s:k8s-app=', 'k8s:app=']) {
          const l = ep?.labels.find((x) => x.startsWith(k));
          if (l) { v = l.slice(k.length); break; }
        }
        break;
      }
      case 'reserved-identity': {
        const r = ep?.labels.find((x) => x === 'reserved:kube-apiserver') ?? ep?.labels.find((x) => x.startsWith('reserved:'));
        v = r ?? '';
        break;
      }
    }
    if (v) return v;
  }
  return '';
}

export function reporterOf(flow: Flow): string {
  return flow.trafficDirection === TrafficDirection.EGRESS ? 'client' : flow.trafficDirection === TrafficDirection.INGRESS ? 'server' : 'unknown';
}

export function createHttpMetrics(opts: HttpMetricsOptions): FlowMetricsHandler {
  const ctxNames: string[] = [];
  if (opts.sourceContext) ctxNames.push('source');
  if (opts.destinationContext) ctxNames.push('destination');
  const registers = [opts.registry];
  const requests = new Counter({
    name: 'hubble_http_requests_total', help: 'Count of HTTP requests', registers,
    labelNames: [...ctxNames, 'method', 'protocol', ...(opts.v2 ? ['status'] : []), 'reporter'],
  });
  const responses = opts.v2 ? undefined : new Counter({
    name: 'hubble_http_responses_total', help: 'Count of HTTP responses', registers,
    labelNames: [...ctxNames, 'method', 'protocol', 'status', 'reporter'],
  });
  const duration = new Histogram({
    name: 'hubble_http_request_duration_seconds', help: 'Quantiles of HTTP request duration in seconds', registers,
    labelNames: [...ctxNames, 'method', 'reporter'], buckets: DEFAULT_BUCKETS,
  });

  function ctx(flow: Flow, invert: boolean): Record<string, string> {
    const out: Record<string, string> = {};
    const src = invert ? flow.destination : flow.source;
    const dst = invert ? flow.source : flow.destination;
    const sip = (invert ? flow.IP?.destination : flow.IP?.source) ?? '';
    const dip = (invert ? flow.IP?.source : flow.IP?.destination) ?? '';
    if (opts.sourceContext) out.source = contextValue(opts.sourceContext, src, sip);
    if (opts.destinationContext) out.destination = contextValue(opts.destinationContext, dst, dip);
    return out;
  }

  return {
    name: opts.v2 ? 'httpV2' : 'http',
    processFlow(flow) {
      const l7 = flow.l7;
      if (!l7 || l7.record.case !== 'http') return;
      const h = l7.record.value;
      const reporter = reporterOf(flow);
      const isResponse = l7.type === L7FlowType.RESPONSE;
      if (opts.v2) {
        if (!isResponse) return;
        const c = ctx(flow, true);
        requests.inc({ ...c, method: h.method, protocol: h.protocol, status: String(h.code), reporter });
        duration.observe({ ...c, method: h.method, reporter }, Number(l7.latencyNs) / 1e9);
        return;
      }
      const c = ctx(flow, false);
      if (l7.type === L7FlowType.REQUEST) requests.inc({ ...c, method: h.method, protocol: h.protocol, reporter });
      else if (isResponse) {
        responses!.inc({ ...c, method: h.method, protocol: h.protocol, status: String(h.code), reporter });
        duration.observe({ ...c, method: h.method, reporter }, Number(l7.latencyNs) / 1e9);
      }
    },
  };
}
