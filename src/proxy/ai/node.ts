/**
 * The AI filter on a node: AIPolicy resources (read at start and on every change) compiled into
 * the set the filter selects from, the budget ledger persisted in the node's state directory, and
 * the membrane_ai_* metrics. The agent adds the filter to the HTTP proxy's chain
 * (`configureHttp`) and starts this before the proxy listens, so no request is seen before the
 * policies are.
 */
import { BoundedCache } from '../../common/bounded-cache.ts';
import type { Registry } from 'prom-client';
import { resourceKey, type AIPolicy } from '../../api/types.ts';
import { AIPolicySet, translateAIPolicy, type CompiledAIPolicy } from '../../policy/ai.ts';
import type { HttpFilterChain } from '../http/proxy.ts';
import { AIBudgetLedger } from './budget.ts';
import { createAIFilter, DEFAULT_MAX_BODY_BYTES } from './filter.ts';
import { createAIMetrics, type AIMetrics, type AIUsageRow } from './metrics.ts';

export interface AIPolicyStore {
  list(kind: 'AIPolicy'): Promise<unknown[]>;
  watch(cb: (ev: { type: 'put'; resource: { kind: string; metadata: { name: string; namespace?: string } } } | { type: 'delete'; key: string }) => void): () => void;
}

export interface AINodeDeps {
  /** the node's name (in the usage view) */
  node?: string;
  /** the agent's resource store (AIPolicy objects) */
  resources?: () => AIPolicyStore | undefined;
  /** where budgets are kept across restarts (e.g. <node dir>/ai-budgets.json) */
  stateFile?: string;
  identityLabels(identity: number): string[] | undefined;
  namesForIp?(ip: string): readonly string[];
  maxBodyBytes?: number;
  /** the agent's metrics registry */
  registry?: Registry;
  logger?: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void; error?(o: unknown, m?: string): void };
}

/** One token budget or request rate of an identity in its current window. */
export interface AIBudgetRow {
  policy: string;
  unit: 'tokens' | 'requests';
  /** `1d`, `1m`, … as the policy wrote it */
  window: string;
  /** the identity's labels (every replica of a workload shares them) */
  identity: string;
  used: number;
  /** tokens reserved by calls in flight */
  reserved: number;
  /** undefined when the policy no longer sets this limit */
  limit: number | undefined;
  /** epoch ms */
  windowEnd: number;
}

/** `GET /v1/ai/usage` of the agent: what `membrane ai usage` prints. */
export interface AIUsageView {
  node?: string;
  /** since the agent started (the metrics' counters) */
  workloads: AIUsageRow[];
  /** the live windows (kept across restarts) */
  budgets: AIBudgetRow[];
}

export interface AINode {
  policies(): AIPolicySet;
  usage(): Promise<AIUsageView>;
  /** the agent API routes (`GET /v1/ai/usage`) */
  routes(): Record<string, () => Promise<unknown>>;
  ledger: AIBudgetLedger;
  metrics: AIMetrics | undefined;
  configureHttp(chain: HttpFilterChain): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createAINode(deps: AINodeDeps): AINode {
  let set = new AIPolicySet([]);
  let revision = 0;
  const ledger = new AIBudgetLedger({ ...(deps.stateFile ? { file: deps.stateFile } : {}), ...(deps.logger ? { logger: deps.logger } : {}) });
  const metrics = deps.registry ? createAIMetrics(deps.registry) : undefined;
  const identityKeys = new BoundedCache<number, string>(4096);
  let unwatch: (() => void) | undefined;
  const byKey = new Map<string, AIPolicy>();

  const makeIdentityKey = (id: number): string => {
    const labels = deps.identityLabels(id);
    return labels && labels.length ? [...labels].sort().join(',') : `identity:${id}`;
  };
  const identityKey = (id: number): string => identityKeys.getOrMake(id, makeIdentityKey);

  /** Compiles the stored AIPolicies into the set the filter selects from (synchronously: an apply sees it at once). */
  function rebuild(): void {
    const compiled: CompiledAIPolicy[] = [];
    for (const res of byKey.values()) {
      const t = translateAIPolicy(res);
      if (t.policy) compiled.push(t.policy);
      // the agent refuses such a policy at apply; one in the store from elsewhere is reported
      else deps.logger?.warn({ policy: `${res.metadata.namespace}/${res.metadata.name}`, issues: t.issues.map((i) => `${i.code} ${i.path.join('.')}: ${i.message}`) }, 'AIPolicy not applied');
    }
    set = new AIPolicySet(compiled, ++revision);
    identityKeys.clear();
    deps.logger?.info({ policies: compiled.map((p) => p.key) }, 'AI policies loaded');
  }

  async function usage(): Promise<AIUsageView> {
    const limits = new Map<string, { text: string; limit: number }>();
    for (const p of set.policies) {
      for (const b of p.budgets) limits.set(`${p.key}|tokens|${b.window.ms}`, { text: b.window.text, limit: b.tokens });
      for (const r of p.rateLimits) limits.set(`${p.key}|requests|${r.window.ms}`, { text: r.window.text, limit: r.requests });
    }
    const budgets: AIBudgetRow[] = [];
    for (const e of ledger.snapshot()) {
      // <policy>|<unit>|<window ms>|<identity labels>
      const [policy, unit, ms, ...rest] = e.key.split('|');
      const l = limits.get(`${policy}|${unit}|${ms}`);
      budgets.push({
        policy: policy!, unit: unit === 'requests' ? 'requests' : 'tokens', window: l?.text ?? `${Number(ms) / 1000}s`, identity: rest.join('|'),
        used: e.used, reserved: e.reserved, limit: l?.limit, windowEnd: e.windowEnd,
      });
    }
    return { ...(deps.node ? { node: deps.node } : {}), workloads: metrics ? await metrics.usage() : [], budgets };
  }

  return {
    policies: () => set,
    usage,
    routes: () => ({ 'GET /v1/ai/usage': usage }),
    ledger,
    metrics,
    configureHttp(chain) {
      chain.addHttp(createAIFilter({
        policies: () => set, ledger, identityKey,
        ...(metrics ? { metrics } : {}),
        ...(deps.namesForIp ? { namesForIp: deps.namesForIp } : {}),
        maxBodyBytes: deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      }));
    },
    async start() {
      await ledger.load();
      const store = deps.resources?.();
      if (!store) return;
      // watch first: a change while listing is not lost (the list then overwrites with the same objects)
      unwatch = store.watch((ev) => {
        if (ev.type === 'put' && ev.resource.kind === 'AIPolicy') byKey.set(resourceKey(ev.resource), ev.resource as AIPolicy);
        else if (ev.type === 'delete' && ev.key.startsWith('AIPolicy/')) byKey.delete(ev.key);
        else return;
        rebuild();
      });
      for (const res of (await store.list('AIPolicy')) as AIPolicy[]) byKey.set(resourceKey(res), res);
      rebuild();
    },
    async stop() {
      unwatch?.();
      await ledger.stop();
    },
  };
}
