/**
 * Hubble metrics context options (spec hubble.md §5.2): `sourceContext` / `destinationContext`
 * (one label each, `|`-separated priority list, first non-empty wins), their per-direction
 * overrides, and `labelsContext` (one label per listed name, fixed order, always present).
 * Label order on a series: labelsContext labels, then `source`, then `destination`.
 */
import { TrafficDirection, type Endpoint, type Flow } from '../gen/flow/flow_pb.js';

export const LABELS_CONTEXT_ORDER = [
  'source_ip', 'source_pod', 'source_namespace', 'source_workload', 'source_workload_kind', 'source_app',
  'destination_ip', 'destination_pod', 'destination_namespace', 'destination_workload', 'destination_workload_kind', 'destination_app',
  'traffic_direction',
] as const;

const IDENTIFIERS = new Set(['identity', 'namespace', 'pod', 'pod-short', 'pod-name', 'dns', 'ip', 'reserved-identity', 'workload', 'workload-name', 'app']);

export interface ContextOptions {
  source?: string[];
  destination?: string[];
  sourceEgress?: string[];
  sourceIngress?: string[];
  destinationEgress?: string[];
  destinationIngress?: string[];
  labels: string[];
}

export class MetricsConfigError extends Error {}

function ids(v: string, opt: string): string[] {
  const out = v.split('|').map((s) => s.trim()).filter(Boolean);
  for (const i of out) if (!IDENTIFIERS.has(i)) throw new MetricsConfigError(`${opt}: unknown context identifier "${i}"`);
  return out;
}

/** The context part of a handler's options (other keys are the handler's own). */
export function parseContext(opts: Record<string, string>): ContextOptions {
  const c: ContextOptions = { labels: [] };
  if (opts.sourceContext) c.source = ids(opts.sourceContext, 'sourceContext');
  if (opts.destinationContext) c.destination = ids(opts.destinationContext, 'destinationContext');
  if (opts.sourceEgressContext) c.sourceEgress = ids(opts.sourceEgressContext, 'sourceEgressContext');
  if (opts.sourceIngressContext) c.sourceIngress = ids(opts.sourceIngressContext, 'sourceIngressContext');
  if (opts.destinationEgressContext) c.destinationEgress = ids(opts.destinationEgressContext, 'destinationEgressContext');
  if (opts.destinationIngressContext) c.destinationIngress = ids(opts.destinationIngressContext, 'destinationIngressContext');
  if (opts.labelsContext) {
    const want = new Set(opts.labelsContext.split(',').map((s) => s.trim()).filter(Boolean));
    for (const w of want) if (!(LABELS_CONTEXT_ORDER as readonly string[]).includes(w)) throw new MetricsConfigError(`labelsContext: unknown label "${w}"`);
    c.labels = LABELS_CONTEXT_ORDER.filter((l) => want.has(l));
  }
  return c;
}

export function contextLabelNames(c: ContextOptions): string[] {
  return [...c.labels, ...(c.source ? ['source'] : []), ...(c.destination ? ['destination'] : [])];
}

const APP_LABELS = ['k8s:app.kubernetes.io/name', 'k8s:k8s-app', 'k8s:app'];

function labelValue(ep: Endpoint | undefined, key: string): string {
  for (const l of ep?.labels ?? []) {
    const i = l.indexOf('=');
    if ((i < 0 ? l : l.slice(0, i)) === key) return i < 0 ? '' : l.slice(i + 1);
  }
  return '';
}

function app(ep: Endpoint | undefined): string {
  for (const k of APP_LABELS) {
    const v = labelValue(ep, k);
    if (v) return v;
  }
  return '';
}

/** `namespace/pod` strings made once per pod (a label value of every flow: no new string per flow) */
const podKeys = new Map<string, Map<string, string>>();
let podKeyCount = 0;
function podKey(namespace: string, pod: string): string {
  let byPod = podKeys.get(namespace);
  if (!byPod) podKeys.set(namespace, (byPod = new Map()));
  let k = byPod.get(pod);
  if (k === undefined) {
    // bounded: pods come and go; the map starts over rather than grow with every pod ever seen
    if (podKeyCount >= 65536) { podKeys.clear(); podKeyCount = 0; podKeys.set(namespace, byPod); }
    byPod.set(pod, (k = `${namespace}/${pod}`));
    podKeyCount++;
  }
  return k;
}

function identifier(id: string, flow: Flow, side: 'source' | 'destination'): string {
  const ep = side === 'source' ? flow.source : flow.destination;
  const ip = side === 'source' ? flow.IP?.source ?? '' : flow.IP?.destination ?? '';
  switch (id) {
    case 'identity': return (ep?.labels ?? []).join(',');
    case 'namespace': return ep?.namespace ?? '';
    case 'pod': return ep?.podName ? podKey(ep.namespace, ep.podName) : '';
    case 'pod-name': return ep?.podName ?? '';
    case 'pod-short': return ep?.podName ? ep.podName.replace(/^(.+?)(-[a-z0-9]+){1,2}$/, '$1') : '';
    case 'dns': return (side === 'source' ? flow.sourceNames : flow.destinationNames).join(',');
    case 'ip': return ip;
    case 'reserved-identity': {
      const ls = (ep?.labels ?? []).filter((l) => l.startsWith('reserved:'));
      return ls.includes('reserved:kube-apiserver') ? 'reserved:kube-apiserver' : ls[0] ?? '';
    }
    case 'workload': return ep?.workloads?.[0] ? `${ep.namespace}/${ep.workloads[0].name}` : '';
    case 'workload-name': return ep?.workloads?.[0]?.name ?? '';
    case 'app': return app(ep);
    default: return '';
  }
}

function firstOf(list: string[] | undefined, flow: Flow, side: 'source' | 'destination'): string {
  for (const id of list ?? []) {
    const v = identifier(id, flow, side);
    if (v) return v;
  }
  return '';
}

export function contextLabelValues(c: ContextOptions, flow: Flow): string[] {
  const out = new Array<string>(contextLabelNames(c).length);
  contextLabelValuesInto(c, flow, out, 0);
  return out;
}

/** The context label values of a flow written into `out` from index `at` (no array made). */
export function contextLabelValuesInto(c: ContextOptions, flow: Flow, out: string[], at: number): void {
  let i = at;
  for (const l of c.labels) {
    switch (l) {
      case 'source_ip': out[i++] = flow.IP?.source ?? ''; break;
      case 'source_pod': out[i++] = flow.source?.podName ?? ''; break;
      case 'source_namespace': out[i++] = flow.source?.namespace ?? ''; break;
      case 'source_workload': out[i++] = flow.source?.workloads?.[0]?.name ?? ''; break;
      case 'source_workload_kind': out[i++] = flow.source?.workloads?.[0]?.kind ?? ''; break;
      case 'source_app': out[i++] = app(flow.source); break;
      case 'destination_ip': out[i++] = flow.IP?.destination ?? ''; break;
      case 'destination_pod': out[i++] = flow.destination?.podName ?? ''; break;
      case 'destination_namespace': out[i++] = flow.destination?.namespace ?? ''; break;
      case 'destination_workload': out[i++] = flow.destination?.workloads?.[0]?.name ?? ''; break;
      case 'destination_workload_kind': out[i++] = flow.destination?.workloads?.[0]?.kind ?? ''; break;
      case 'destination_app': out[i++] = app(flow.destination); break;
      case 'traffic_direction': out[i++] = flow.trafficDirection === TrafficDirection.INGRESS ? 'ingress' : flow.trafficDirection === TrafficDirection.EGRESS ? 'egress' : 'unknown'; break;
    }
  }
  const egress = flow.trafficDirection === TrafficDirection.EGRESS;
  const ingress = flow.trafficDirection === TrafficDirection.INGRESS;
  if (c.source) out[i++] = firstOf((egress && c.sourceEgress) || (ingress && c.sourceIngress) || c.source, flow, 'source');
  if (c.destination) out[i++] = firstOf((egress && c.destinationEgress) || (ingress && c.destinationIngress) || c.destination, flow, 'destination');
}
