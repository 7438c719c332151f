/**
 * `membrane ai usage`: AI API use per workload, from each node's agent (`GET /v1/ai/usage`):
 * requests and tokens by provider and model since the agent started (the membrane_ai_* counters),
 * and the token budgets and request rates of each identity in their current windows (kept across
 * restarts). Budgets are per node, so every node is asked unless --node says which.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { callAgent } from '../../agent/api-client.ts';
import type { MembraneConfig } from '../../common/config.ts';
import { MembraneError } from '../../common/errors.ts';
import { labPaths } from '../../common/paths.ts';
import type { AIUsageView } from '../../proxy/ai/node.ts';
import { table } from '../output.ts';

const NS_LABEL = /(^|:)io\.kubernetes\.pod\.namespace=/;

/** The namespace of an identity's label set (`k8s:io.kubernetes.pod.namespace=llm,k8s:app=chatbot`). */
export function identityNamespace(identity: string): string {
  for (const l of identity.split(',')) if (NS_LABEL.test(l)) return l.slice(l.indexOf('=') + 1);
  return '';
}

/** The labels a reader knows the workload by: the pod's own, without the source prefix or the ones Kubernetes/Cilium add. */
export function identityShort(identity: string): string {
  const own = identity.split(',').map((l) => l.replace(/^[a-z0-9-]+:/, '')).filter((l) => l && !/^(io\.kubernetes\.|io\.cilium\.|pod-template-hash=)/.test(l));
  return own.length ? own.join(',') : identity;
}

function until(ms: number): string {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return d ? `${d}d${h}h` : h ? `${h}h${m}m` : m ? `${m}m${s}s` : `${s}s`;
}

/** The two tables `membrane ai usage` prints (pure: tests call it with views). */
export function formatAIUsage(views: AIUsageView[], o: { namespace?: string; now?: number } = {}): string {
  const now = o.now ?? Date.now();
  const rows: string[][] = [['NODE', 'NAMESPACE', 'WORKLOAD', 'PROVIDER', 'MODEL', 'FORWARDED', 'REFUSED', 'PROMPT', 'COMPLETION', 'TOTAL']];
  for (const v of views) {
    const ws = v.workloads.filter((w) => !o.namespace || w.namespace === o.namespace)
      .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.workload.localeCompare(b.workload) || a.provider.localeCompare(b.provider) || a.model.localeCompare(b.model));
    for (const w of ws) {
      const forwarded = w.requests.forwarded ?? 0;
      const refused = Object.entries(w.requests).reduce((n, [k, c]) => (k === 'forwarded' ? n : n + (c ?? 0)), 0);
      rows.push([v.node ?? '', w.namespace, w.workload, w.provider, w.model, String(forwarded), String(refused), String(w.promptTokens), String(w.completionTokens), String(w.promptTokens + w.completionTokens)]);
    }
  }
  const budgets: string[][] = [['NODE', 'POLICY', 'IDENTITY', 'WINDOW', 'USED', 'LIMIT', 'RESERVED', 'RESETS IN']];
  for (const v of views) {
    const bs = v.budgets.filter((b) => !o.namespace || identityNamespace(b.identity) === o.namespace || b.policy.startsWith(`${o.namespace}/`))
      .sort((a, b) => a.policy.localeCompare(b.policy) || a.identity.localeCompare(b.identity) || a.unit.localeCompare(b.unit));
    for (const b of bs) {
      budgets.push([v.node ?? '', b.policy, identityShort(b.identity), b.window, `${b.used} ${b.unit}`, b.limit === undefined ? '-' : String(b.limit), b.unit === 'tokens' ? String(b.reserved) : '-', until(b.windowEnd - now)]);
    }
  }
  let out = rows.length > 1 ? table(rows) : 'No AI API calls seen since the agents started.\n';
  out += '\n' + (budgets.length > 1 ? table(budgets) : 'No token budget or request rate has been spent in its current window.\n');
  return out;
}

/** The nodes of the lab with an agent socket. */
function labNodes(config: MembraneConfig): string[] {
  const p = labPaths(config);
  const dir = join(p.stateDir, 'nodes');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => existsSync(p.agentSocket(n))).sort();
}

export function register(program: Command, config: MembraneConfig): void {
  const ai = program.command('ai').description('AI API use under AIPolicy');
  ai.command('usage')
    .description('Requests and tokens per workload, provider and model; token budgets and request rates per identity in their current windows')
    .option('-n, --namespace <ns>', 'only this namespace')
    .option('--node <name>', 'ask only this node\'s agent (budgets are kept per node)')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { namespace?: string; node?: string; output?: string }) => {
      const nodes = o.node ? [o.node] : labNodes(config);
      if (nodes.length === 0) throw new MembraneError('AGENT_UNREACHABLE', `no agent socket under ${join(labPaths(config).stateDir, 'nodes')}`, { hint: 'start the lab with `membrane up`' });
      const views: AIUsageView[] = [];
      for (const n of nodes) views.push({ ...(await callAgent<AIUsageView>(labPaths(config).agentSocket(n), 'GET', '/v1/ai/usage')), node: n });
      if (o.output === 'json') {
        const f = (v: AIUsageView): AIUsageView => (o.namespace ? {
          ...v, workloads: v.workloads.filter((w) => w.namespace === o.namespace),
          budgets: v.budgets.filter((b) => identityNamespace(b.identity) === o.namespace || b.policy.startsWith(`${o.namespace}/`)),
        } : v);
        return void process.stdout.write(JSON.stringify({ items: views.map(f) }, null, 2) + '\n');
      }
      process.stdout.write(formatAIUsage(views, o.namespace ? { namespace: o.namespace } : {}));
    });
}
