/**
 * AI API metrics of the agent (Prometheus text on the agent's metrics port, :9962 as Cilium's):
 *
 *   membrane_ai_requests_total{provider, model, source_namespace, source_workload, outcome}
 *       outcome: forwarded | denied | rate_limited | budget_exhausted | invalid | too_large
 *   membrane_ai_tokens_total{provider, model, source_namespace, source_workload, direction}
 *       direction: prompt | completion (estimated counts included; flows say which were)
 *   membrane_ai_request_duration_seconds{provider, model, source_namespace, source_workload}
 *       request start → end of the response
 *   membrane_ai_time_to_first_token_seconds{provider, model, source_namespace, source_workload}
 *       request start → first byte of the response body (the first token of a stream)
 *
 * The model comes from the client's request: at most `maxModels` distinct values per provider
 * become labels, later ones are counted under `other` (a client cannot grow the series without
 * bound by naming random models).
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import { Counter, Histogram, type Registry } from 'prom-client';

const LABELS = ['provider', 'model', 'source_namespace', 'source_workload'] as const;
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export type AIOutcome = 'forwarded' | 'denied' | 'rate_limited' | 'budget_exhausted' | 'invalid' | 'too_large';

export interface AIMetricLabels {
  provider: string;
  model: string;
  namespace: string;
  workload: string;
}

/** Counts of one (provider, model, workload) since the agent started (the agent API's usage view). */
export interface AIUsageRow {
  provider: string;
  model: string;
  namespace: string;
  workload: string;
  requests: Partial<Record<AIOutcome, number>>;
  promptTokens: number;
  completionTokens: number;
}

export interface AIMetrics {
  /** the counters by (provider, model, workload) */
  usage(): Promise<AIUsageRow[]>;
  request(l: AIMetricLabels, outcome: AIOutcome): void;
  tokens(l: AIMetricLabels, prompt: number, completion: number): void;
  duration(l: AIMetricLabels, seconds: number): void;
  firstToken(l: AIMetricLabels, seconds: number): void;
}

export function createAIMetrics(registry: Registry, opts: { maxModels?: number } = {}): AIMetrics {
  const registers = [registry];
  const requests = new Counter({ name: 'membrane_ai_requests_total', help: 'AI API requests seen by the HTTP proxy, by outcome', labelNames: [...LABELS, 'outcome'], registers });
  const tokens = new Counter({ name: 'membrane_ai_tokens_total', help: 'AI API tokens charged, prompt and completion', labelNames: [...LABELS, 'direction'], registers });
  const duration = new Histogram({ name: 'membrane_ai_request_duration_seconds', help: 'AI API request duration (request start to end of response)', labelNames: [...LABELS], buckets: LATENCY_BUCKETS, registers });
  const ttft = new Histogram({ name: 'membrane_ai_time_to_first_token_seconds', help: 'AI API time to the first response byte (first token of a stream)', labelNames: [...LABELS], buckets: TTFT_BUCKETS, registers });
  const maxModels = opts.maxModels ?? 100;
  const models = new Map<string, Set<string>>();
  const model = (provider: string, m: string): string => {
    if (m === '') return 'unknown';
    let seen = models.get(provider);
    if (!seen) models.set(provider, (seen = new Set()));
    if (seen.has(m)) return m;
    if (seen.size >= maxModels) return 'other';
    seen.add(m);
    return m;
  };
  // the series of one (provider, model, workload): looked up once, then a Map hit per request
  interface Series {
    requests: Map<AIOutcome, { inc(): void }>;
    prompt: { inc(n: number): void };
    completion: { inc(n: number): void };
    duration: { observe(v: number): void };
    ttft: { observe(v: number): void };
  }
  const series = new BoundedCache<string, Series>(10_000);
  const of = (l: AIMetricLabels): Series => {
    const key = `${l.provider}\u0000${l.model}\u0000${l.namespace}\u0000${l.workload}`;
    let x = series.get(key);
    if (!x) {
      const v = [l.provider, model(l.provider, l.model), l.namespace, l.workload];
      x = {
        requests: new Map(), prompt: tokens.labels(...v, 'prompt'), completion: tokens.labels(...v, 'completion'),
        duration: duration.labels(...v), ttft: ttft.labels(...v),
      };
      series.set(key, x);
    }
    return x;
  };
  return {
    async usage() {
      const rows = new Map<string, AIUsageRow>();
      const row = (l: Partial<Record<string, string | number>>): AIUsageRow => {
        const v = [l.provider, l.model, l.source_namespace, l.source_workload].map((x) => String(x ?? ''));
        const key = v.join('\u0000');
        let r = rows.get(key);
        if (!r) rows.set(key, (r = { provider: v[0]!, model: v[1]!, namespace: v[2]!, workload: v[3]!, requests: {}, promptTokens: 0, completionTokens: 0 }));
        return r;
      };
      for (const x of (await requests.get()).values) {
        const r = row(x.labels);
        const o = x.labels.outcome as AIOutcome;
        r.requests[o] = (r.requests[o] ?? 0) + x.value;
      }
      for (const x of (await tokens.get()).values) {
        const r = row(x.labels);
        if (x.labels.direction === 'prompt') r.promptTokens += x.value;
        else r.completionTokens += x.value;
      }
      return [...rows.values()];
    },
    request(l, outcome) {
      const x = of(l);
      let c = x.requests.get(outcome);
      if (!c) x.requests.set(outcome, (c = requests.labels(l.provider, model(l.provider, l.model), l.namespace, l.workload, outcome)));
      c.inc();
    },
    tokens(l, prompt, completion) {
      const x = of(l);
      if (prompt > 0) x.prompt.inc(prompt);
      if (completion > 0) x.completion.inc(completion);
    },
    duration(l, s) { of(l).duration.observe(s); },
    firstToken(l, s) { of(l).ttft.observe(s); },
  };
}
