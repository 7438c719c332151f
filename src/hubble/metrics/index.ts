/**
 * Hubble metrics (spec hubble.md §5): a Prometheus registry fed by every flow, served as text
 * on `GET /metrics` (the agent: TCP :9965 in the node's namespace).
 *
 * Configuration is Cilium's `--hubble-metrics` string: space-separated `name[:opt[;opt…]]`,
 * each opt `key=value` or bare `key`, e.g.
 *   `dns:query;ignoreAAAA;sourceContext=pod drop flow tcp port-distribution policy`
 * Context options (sourceContext, destinationContext, their Egress/Ingress overrides,
 * labelsContext) apply to every handler (context.ts).
 *
 * Adding a handler (e.g. src/hubble/metrics/http.ts): export a `HandlerFactory` and register it
 *
 *   export const httpHandler: HandlerFactory = ({ registry, ctx, options }) => {
 *     const c = new Counter({ name: 'hubble_http_requests_total', help: '…',
 *       labelNames: [...ctx.names, 'method', 'protocol', 'reporter'], registers: [registry] });
 *     return { name: 'http', process(flow) { if (flow.l7?.record.case === 'http') c.labels(...ctx.values(flow), …).inc(); } };
 *   };
 *   registerHandler('http', httpHandler);
 *
 * `ctx.names` are the context label names in Hubble's order (put them where the spec's table
 * says "ctx"), `ctx.values(flow)` their values for one flow. `process` runs for every flow on
 * the agent's flow path: it must not throw (a throw is counted and swallowed) and should not
 * allocate more than the label values.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Registry } from 'prom-client';
import type { Flow } from '../gen/flow/flow_pb.js';
import { contextLabelNames, contextLabelValues, MetricsConfigError, parseContext } from './context.ts';
import { dnsHandler, dropHandler, fastCounterRemovers, flowHandler, policyHandler, portDistributionHandler, tcpHandler } from './handlers.ts';

export { MetricsConfigError } from './context.ts';

export interface HandlerContext {
  /** context label names (labelsContext…, source, destination) */
  names: string[];
  values(flow: Flow): string[];
}

export interface HandlerInit {
  registry: Registry;
  ctx: HandlerContext;
  /** the handler's own options (context options removed); bare keys have value '' */
  options: Record<string, string>;
}

export interface MetricsHandler {
  name: string;
  process(flow: Flow): void;
}

export type HandlerFactory = (init: HandlerInit) => MetricsHandler;

const factories = new Map<string, HandlerFactory>([
  ['flow', flowHandler], ['drop', dropHandler], ['dns', dnsHandler], ['policy', policyHandler], ['tcp', tcpHandler],
  ['port-distribution', portDistributionHandler],
]);

/** Registers (or replaces) a handler by its `--hubble-metrics` name. */
export function registerHandler(name: string, f: HandlerFactory): void {
  factories.set(name, f);
}

export function handlerNames(): string[] {
  return [...factories.keys()];
}

const CONTEXT_KEYS = new Set(['sourceContext', 'destinationContext', 'sourceEgressContext', 'sourceIngressContext', 'destinationEgressContext', 'destinationIngressContext', 'labelsContext']);

export interface MetricSpec {
  name: string;
  options: Record<string, string>;
}

/** Parses a `--hubble-metrics` string. */
export function parseMetricsConfig(text: string): MetricSpec[] {
  const out: MetricSpec[] = [];
  for (const entry of text.split(/\s+/).filter(Boolean)) {
    const i = entry.indexOf(':');
    const name = i < 0 ? entry : entry.slice(0, i);
    const options: Record<string, string> = {};
    if (i >= 0) {
      for (const o of entry.slice(i + 1).split(';').filter(Boolean)) {
        const eq = o.indexOf('=');
        options[eq < 0 ? o : o.slice(0, eq)] = eq < 0 ? '' : o.slice(eq + 1);
      }
    }
    if (out.some((s) => s.name === name)) throw new MetricsConfigError(`metric "${name}" listed twice`);
    out.push({ name, options });
  }
  return out;
}

/** The agent's default: every built-in handler, pods as source/destination context. */
export const DEFAULT_METRICS = 'dns:query;sourceContext=pod|ip;destinationContext=pod|dns|ip http:sourceContext=pod|ip;destinationContext=pod|dns|ip drop:sourceContext=pod|ip;destinationContext=pod|dns|ip tcp flow port-distribution policy:sourceContext=pod|ip;destinationContext=pod|dns|ip';

export interface HubbleMetrics {
  registry: Registry;
  handlers: MetricsHandler[];
  process(flow: Flow): void;
  /** `hubble_lost_events_total{source}` (source lowercased LostEventSource name) */
  lost(source: string, n: number): void;
  /**
   * Removes the series tied to a deleted pod (Hubble does so about a minute after the deletion):
   * those whose `source`/`destination` label is `ns/pod`, or whose labelsContext pair
   * `*_namespace`/`*_pod` names it. Returns how many series were removed.
   */
  forgetPod(namespace: string, pod: string): Promise<number>;
  /** Serves GET /metrics; resolves once listening. */
  serve(port: number, host?: string): Promise<Server>;
  errors(): number;
}

export function createHubbleMetrics(config: string | MetricSpec[] = DEFAULT_METRICS, registry = new Registry()): HubbleMetrics {
  const specs = typeof config === 'string' ? parseMetricsConfig(config) : config;
  const handlers: MetricsHandler[] = [];
  for (const s of specs) {
    const f = factories.get(s.name);
    if (!f) throw new MetricsConfigError(`unknown metric "${s.name}" (known: ${handlerNames().join(', ')})`);
    const ctxOpts = parseContext(s.options);
    const own: Record<string, string> = {};
    for (const [k, v] of Object.entries(s.options)) if (!CONTEXT_KEYS.has(k)) own[k] = v;
    handlers.push(f({ registry, options: own, ctx: { names: contextLabelNames(ctxOpts), values: (fl) => contextLabelValues(ctxOpts, fl) } }));
  }
  const lostC = new Counter({ name: 'hubble_lost_events_total', help: 'Number of lost events', labelNames: ['source'], registers: [registry] });
  let errs = 0;
  let server: Server | undefined;
  return {
    registry, handlers,
    process(flow) {
      for (const h of handlers) {
        try { h.process(flow); } catch { errs++; }
      }
    },
    lost(source, n) {
      if (n > 0) lostC.labels(source.toLowerCase()).inc(n);
    },
    async forgetPod(namespace, pod) {
      const full = `${namespace}/${pod}`;
      const tied = (l: Record<string, string | number>) =>
        l.source === full || l.destination === full ||
        (l.source_namespace === namespace && l.source_pod === pod) ||
        (l.destination_namespace === namespace && l.destination_pod === pod);
      let removed = 0;
      const fast = fastCounterRemovers.get(registry);
      for (const remove of fast?.values() ?? []) removed += remove(tied);
      for (const m of registry.getMetricsAsArray()) {
        if (fast?.has((m as unknown as { name: string }).name)) continue;
        const metric = m as unknown as { get(): Promise<{ values: { labels: Record<string, string | number> }[] }>; remove(labels: Record<string, string | number>): void };
        const seen = new Set<string>();
        for (const v of (await metric.get()).values) {
          // Histograms list a value per bucket (with `le`) plus sum and count: remove the series once.
          const { le: _le, ...labels } = v.labels;
          const key = JSON.stringify(labels);
          if (seen.has(key) || !tied(labels)) continue;
          seen.add(key);
          metric.remove(labels);
          removed++;
        }
      }
      return removed;
    },
    serve(port, host = '0.0.0.0') {
      server = createServer((req, res) => {
        if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: GET /metrics\n');
          return;
        }
        registry.metrics().then((text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        }, (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`${e.message}\n`);
        });
      });
      const s = server;
      return new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, host, () => { s.removeListener('error', reject); resolve(s); });
      });
    },
    errors: () => errs,
  };
}
