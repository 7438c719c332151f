/**
 * The membrane HTTP proxy as the AI bench runs it: the production connection code, L7 policy
 * filter and flow path (bench/proxy-harness.ts) with one HTTP rule (`POST /v1/chat/completions`),
 * and with `--ai` the AI filter too: an AIPolicy selecting the client (model allow-list, max
 * tokens, a token budget and a request rate, both large enough never to refuse), its ledger
 * persisted to a state file, membrane_ai_* metrics, flows with the AI extension.
 *
 *   bin/node bench/ai/proxy-server.ts --port 18281 --origin 18280 [--ai --state /tmp/x.json]
 */
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import type { L7Policy } from '../../src/policy/types.ts';
import type { AIPolicy } from '../../src/api/types.ts';
import { AIPolicySet, translateAIPolicy } from '../../src/policy/ai.ts';
import { AIBudgetLedger } from '../../src/proxy/ai/budget.ts';
import { createAIFilter } from '../../src/proxy/ai/filter.ts';
import { createAIMetrics } from '../../src/proxy/ai/metrics.ts';
import { startBenchProxy } from '../proxy-harness.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18281' }, origin: { type: 'string', default: '18280' }, ai: { type: 'boolean', default: false }, state: { type: 'string' } } });
const policy: L7Policy = { parser: 'http', perSelector: [{ selector: 'bench', identities: 'all', origins: [], http: [{ method: 'POST', path: '/v1/chat/completions' }] }] };
const aiPolicy = {
  apiVersion: 'membrane.dev/v1alpha1', kind: 'AIPolicy', metadata: { name: 'bench', namespace: 'default' }, source: { file: 'bench', line: 1, col: 1 },
  spec: {
    endpointSelector: {}, providers: [{ api: 'openai', hosts: ['api.openai.com'] }],
    models: { allow: ['gpt-4o-mini', 'gpt-4.1-*'], deny: ['*-realtime-*'] }, maxTokensPerRequest: 1024,
    budgets: [{ window: '1d', tokens: 1e12 }, { window: '1m', tokens: 1e11 }], rateLimits: [{ window: '1m', requests: 1e9 }],
  },
} as unknown as AIPolicy;
const compiled = translateAIPolicy(aiPolicy).policy!;
const set = new AIPolicySet([compiled]);
const ledger = new AIBudgetLedger(values.state ? { file: values.state } : {});
const metrics = createAIMetrics(new Registry());
await startBenchProxy({
  port: Number(values.port), origin: Number(values.origin), policy, remote: { identity: 16777217, labels: ['fqdn:api.openai.com', 'reserved:world'] },
  ...(values.ai ? { configure: (chain) => { chain.addHttp(createAIFilter({ policies: () => set, ledger, metrics, identityKey: () => 'k8s:app=client' })); } } : {}),
});
