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
 * Unknown or refused names, bad options and conflicts (http with httpV2) are reported in
 * `configErrors` and skipped; every other handler still runs.
 *
 * Adding a handler (e.g. src/hubble/metrics/http.ts): export a `HandlerFactory` and register it
 *
 *   export const httpHandler: HandlerFactory = ({ registry, ctx, options }) => {
 *     const c = fastCounter({ name: 'hubble_http_requests_total', help: '…',          // src/common/fast-counter.ts
 *       labelNames: [...ctx.names, 'method', 'protocol', 'reporter'], registers: [registry] });
 *     const v = new Array<string>(ctx.names.length + 3).fill('');                       // one scratch per handler
 *     return { name: 'http', process(flow) { if (flow.l7?.record.case !== 'http') return;
 *       ctx.into(flow, v, 0); v[ctx.names.length] = …; c.inc(v); } };
 *   };
 *   registerHandler('http', httpHandler);
 *
 * `ctx.names` are the context label names in Hubble's order (put them where the spec's table
 * says "ctx"), `ctx.values(flow)` their values for one flow (`ctx.into` writes them into a
 * scratch array, for src/common/fast-counter.ts). `process` runs for every flow on the agent's
 * flow path: it must not throw (a throw is counted and swallowed) and should not allocate.
 */
import type { Server } from 'node:http';
import { metricsEndpoint } from '../../common/metrics-endpoint.ts';
import { Counter, Registry, type RegistryContentType } from 'prom-client';
import type { Flow } from '../gen/flow/flow_pb.js';
import { contextLabelNames, contextLabelValues, contextLabelValuesInto, MetricsConfigError, parseContext, type ContextOptions } from './context.ts';
import { fastCounterRemovers } from '../../common/fast-counter.ts';
import {
  dnsHandler, dropHandler, flowHandler, flowsToWorldHandler, icmpHandler, policyHandler, portDistributionHandler, tcpHandler,
} from './handlers.ts';
import { httpHandler, httpV2Handler } from './http.ts';
import type { HandlerContext, HandlerFactory, MetricsHandler } from './handler.ts';

export { MetricsConfigError } from './context.ts';

export type { HandlerContext, HandlerFactory, HandlerInit, MetricsHandler } from './handler.ts';

const factories = new Map<string, HandlerFactory>([
  ['flow', flowHandler], ['drop', dropHandler], ['dns', dnsHandler], ['policy', policyHandler], ['tcp', tcpHandler],
  ['port-distribution', portDistributionHandler], ['icmp', icmpHandler], ['flows-to-world', flowsToWorldHandler],
  ['http', httpHandler], ['httpV2', httpV2Handler],
]);

/** Handlers Cilium has that membrane refuses, with why (nothing would ever be counted). */
const REFUSED: Readonly<Record<string, string>> = {
  kafka: 'membrane has no Kafka parser, so there are no Kafka flows to count',
};

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

/** Parses a `--hubble-metrics` string (space-separated entries). */
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
    out.push({ name, options });
  }
  return out;
}

/** The agent's default: every built-in handler, pods as source/destination context. */
export const DEFAULT_METRICS = 'dns:query;sourceContext=pod|ip;destinationContext=pod|dns|ip http:sourceContext=pod|ip;destinationContext=pod|dns|ip drop:sourceContext=pod|ip;destinationContext=pod|dns|ip tcp flow port-distribution icmp flows-to-world policy:sourceContext=pod|ip;destinationContext=pod|dns|ip';

export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface HubbleMetricsOptions {
  /** serve OpenMetrics to scrapers that ask for it (Cilium's --enable-hubble-open-metrics) */
  openMetrics?: boolean;
}

export interface HubbleMetrics {
  registry: Registry;
  handlers: MetricsHandler[];
  /**
   * What the configuration asked for that is not served, one message each (unknown handler,
   * bad option, a handler listed twice…): the other handlers run regardless.
   */
  configErrors: string[];
  /** whether scrapers that accept it get OpenMetrics (with exemplars) */
  openMetrics: boolean;
  process(flow: Flow): void;
  /** `hubble_lost_events_total{source}` (source lowercased LostEventSource name) */
  lost(source: string, n: number): void;
  /**
   * Removes the series tied to a deleted pod (Hubble does so about a minute after the deletion):
   * those whose `source`/`destination` label is `ns/pod`, or whose labelsContext pair
   * `*_namespace`/`*_pod` names it. Returns how many series were removed.
   */
  forgetPod(namespace: string, pod: string): Promise<number>;
  /** The exposition for a scrape: OpenMetrics if enabled and accepted, else Prometheus text 0.0.4. */
  render(accept?: string): Promise<{ contentType: string; body: string }>;
  /** Serves GET /metrics on TCP; resolves once listening. */
  serve(port: number, host?: string): Promise<Server>;
  /** Serves GET /metrics on a unix socket (mode 0600), for a host-side forwarder. */
  serveUnix(path: string): Promise<Server>;
  errors(): number;
}

/**
 * Prometheus text 0.0.4 from prom-client's OpenMetrics rendering: counters' family names get
 * their `_total` back, exemplars and `# EOF` go.
 */
export function openMetricsToPrometheus(om: string): string {
  const counters = new Set<string>();
  const out: string[] = [];
  for (const line of om.split('\n')) {
    if (line === '# EOF' || line === '') continue;
    const t = /^# TYPE (\S+) counter$/.exec(line);
    if (t) counters.add(t[1]!);
    const meta = /^# (HELP|TYPE) (\S+)(.*)$/.exec(line);
    if (meta) {
      out.push(counters.has(meta[2]!) || (meta[1] === 'HELP' && om.includes(`# TYPE ${meta[2]} counter`)) ? `# ${meta[1]} ${meta[2]}_total${meta[3]}` : line);
      continue;
    }
    const hash = line.indexOf(' # {');
    out.push(hash >= 0 ? line.slice(0, hash) : line);
  }
  return out.join('\n') + '\n';
}

export function createHubbleMetrics(config: string | MetricSpec[] = DEFAULT_METRICS, opts: HubbleMetricsOptions = {}): HubbleMetrics {
  const configErrors: string[] = [];
  let specs: MetricSpec[];
  try {
    specs = typeof config === 'string' ? parseMetricsConfig(config) : config;
  } catch (e) {
    configErrors.push((e as Error).message);
    specs = [];
  }
  // Exemplars exist only in OpenMetrics registries (prom-client refuses them otherwise).
  const wantsExemplars = specs.some((s) => s.name === 'httpV2' && s.options.exemplars === 'true');
  // (prom-client's typings omit the constructor's content-type argument)
  const RegistryOf = Registry as unknown as new (contentType: RegistryContentType) => Registry;
  const registry = new RegistryOf(wantsExemplars || opts.openMetrics ? Registry.OPENMETRICS_CONTENT_TYPE : Registry.PROMETHEUS_CONTENT_TYPE);
  const handlers: MetricsHandler[] = [];
  const seen = new Set<string>();
  // Handlers with the same context options share its values, worked out once per process(flow)
  // (a generation, not the flow object: a caller may change a flow and count it again).
  let generation = 0;
  const contexts = new Map<string, HandlerContext>();
  const contextOf = (c: ContextOptions): HandlerContext => {
    const key = JSON.stringify(c);
    let ctx = contexts.get(key);
    if (ctx) return ctx;
    const names = contextLabelNames(c);
    const memo = new Array<string>(names.length);
    let memoGen = -1;
    let memoFlow: Flow | undefined;
    ctx = {
      names,
      values: (fl) => contextLabelValues(c, fl),
      into(fl, out, at) {
        // once per flow processed, shared by the handlers with these options (the flow is compared
        // too: a handler may pass another view of it, e.g. httpV2's inverted flow)
        if (memoGen !== generation || memoFlow !== fl) { contextLabelValuesInto(c, fl, memo, 0); memoGen = generation; memoFlow = fl; }
        for (let i = 0; i < memo.length; i++) out[at + i] = memo[i]!;
      },
    };
    contexts.set(key, ctx);
    return ctx;
  };
  for (const s of specs) {
    const refused = REFUSED[s.name];
    const f = factories.get(s.name);
    if (seen.has(s.name)) { configErrors.push(`metric "${s.name}" listed twice: the first entry is used`); continue; }
    if (refused) { configErrors.push(`metric "${s.name}" not served: ${refused}`); continue; }
    if (!f) { configErrors.push(`unknown metric "${s.name}" (known: ${handlerNames().join(', ')}): not served, the others are`); continue; }
    if ((s.name === 'http' && seen.has('httpV2')) || (s.name === 'httpV2' && seen.has('http'))) {
      configErrors.push(`metric "${s.name}" not served: http and httpV2 count the same series, enable one of them`);
      continue;
    }
    try {
      const ctxOpts = parseContext(s.options);
      const own: Record<string, string> = {};
      for (const [k, v] of Object.entries(s.options)) if (!CONTEXT_KEYS.has(k)) own[k] = v;
      handlers.push(f({ registry, options: own, ctx: contextOf(ctxOpts) }));
      seen.add(s.name);
    } catch (e) {
      if (!(e instanceof MetricsConfigError)) throw e;
      configErrors.push(`metric "${s.name}" not served: ${e.message}`);
    }
  }
  if (wantsExemplars && !opts.openMetrics) configErrors.push('httpV2:exemplars=true: exemplars are only exposed with OpenMetrics (MEMBRANE_HUBBLE_METRICS_OPENMETRICS=true); Prometheus text carries none');
  const lostC = new Counter({ name: 'hubble_lost_events_total', help: 'Number of lost events', labelNames: ['source'], registers: [registry] });
  const om = (registry.contentType as string) === Registry.OPENMETRICS_CONTENT_TYPE;
  let errs = 0;
  const render = async (accept = '') => {
    const text = await registry.metrics();
    if (!om) return { contentType: PROMETHEUS_CONTENT_TYPE, body: text };
    if (opts.openMetrics && accept.includes('application/openmetrics-text')) return { contentType: OPENMETRICS_CONTENT_TYPE, body: text };
    return { contentType: PROMETHEUS_CONTENT_TYPE, body: openMetricsToPrometheus(text) };
  };
  const endpoint = metricsEndpoint(render);
  return {
    registry, handlers, configErrors, openMetrics: om && !!opts.openMetrics,
    process(flow) {
      generation++;
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
        const seenSeries = new Set<string>();
        for (const v of (await metric.get()).values) {
          // Histograms list a value per bucket (with `le`) plus sum and count: remove the series once.
          const { le: _le, ...labels } = v.labels;
          const key = JSON.stringify(labels);
          if (seenSeries.has(key) || !tied(labels)) continue;
          seenSeries.add(key);
          metric.remove(labels);
          removed++;
        }
      }
      return removed;
    },
    render,
    serve: endpoint.serve,
    serveUnix: endpoint.serveUnix,
    errors: () => errs,
  };
}
