/** The agent API's routes (see api-server.ts): thin adapters from JSON to the Agent. */
import type { Resource } from '../api/types.ts';
import type { Agent } from './agent.ts';
import type { Handler } from './api-server.ts';
import { ApiRequestError } from './api-server.ts';
import type { ApplyResponse, StatusView } from './views.ts';
import type { PolicyEngine } from './ports.ts';
import { endpointPolicy, traceLive } from './policy-api.ts';

function resourcesOf(body: unknown): Resource[] {
  const rs = (body as { resources?: unknown })?.resources;
  if (!Array.isArray(rs)) throw new ApiRequestError('API_BAD_REQUEST', 'body must be {"resources": [...]}');
  return rs as Resource[];
}

export function agentRoutes(agent: Agent, status: () => Promise<StatusView>, policy?: PolicyEngine): Record<string, Handler> {
  return {
    'POST /v1/apply': async (body) => {
      const dryRun = !!(body as { dryRun?: boolean }).dryRun;
      const results = await agent.apply(resourcesOf(body), dryRun);
      if (!dryRun) await agent.settled();
      return { results, dryRun } satisfies ApplyResponse;
    },
    'POST /v1/delete': async (body) => {
      const results = await agent.remove(resourcesOf(body));
      await agent.settled();
      return { results, dryRun: false } satisfies ApplyResponse;
    },
    'GET /v1/resources': async (_b, q) => {
      const kind = q.get('kind') ?? undefined;
      const ns = q.get('namespace');
      const items = (await agent.resources.list(kind as Resource['kind'] | undefined)).filter((r) => !ns || !r.metadata.namespace || r.metadata.namespace === ns);
      return { items };
    },
    'GET /v1/endpoints': async (_b, q) => {
      const ns = q.get('namespace');
      return { items: agent.endpoints().filter((e) => !ns || e.namespace === ns) };
    },
    'GET /v1/identities': async () => ({ items: agent.identities() }),
    'GET /v1/policies': async (_b, q) => ({ items: await agent.policies(q.get('namespace') ?? undefined) }),
    'GET /v1/status': async () => status(),
    // read-only policy questions (the UI's "why" and policy view): src/agent/policy-api.ts
    'POST /v1/policy/trace': async (body) => traceLive(agent, body),
    ...(policy ? { 'GET /v1/endpoint/policy': async (_b: unknown, q: URLSearchParams) => endpointPolicy(agent, policy, q) } : {}),
    'POST /v1/settle': async () => {
      await agent.settled();
      return {};
    },
  };
}
