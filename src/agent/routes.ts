/**
 * The agent API's routes (see api-server.ts): each checks its body and query with the zod
 * schemas of src/api/requests.ts, then calls the Agent. Bad input is a 400 API_BAD_REQUEST with
 * every issue and changes nothing.
 */
import type { Issue } from '../common/errors.ts';
import {
  checkApplyRequest, checkDeleteRequest, checkWith, emptyRequestSchema, endpointConfigRequestSchema, endpointPolicyQuerySchema, namespaceQuerySchema, resourceQuerySchema,
  traceRequestSchema, type Checked,
} from '../api/requests.ts';
import type { Agent } from './agent.ts';
import type { Handler } from './api-server.ts';
import { ApiRequestError } from './api-server.ts';
import type { ApplyResponse, StatusView } from './views.ts';
import type { AgentPolicy } from '../policy/agent-engine.ts';
import { endpointPolicy, traceLive, type TraceLiveLookups } from './policy-api.ts';

/** The checked value, or a 400 naming the first problem and carrying all of them. */
export function valid<T>(c: Checked<T>, what: string, hint: string): T {
  if (c.ok) return c.value;
  const first = c.issues[0]!;
  const at = first.path.length ? `${first.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '')}: ` : '';
  throw new ApiRequestError('API_BAD_REQUEST', `${what}: ${c.issues.length} problem(s), first ${at}${first.message}; nothing was changed`, { hint, issues: c.issues as Issue[] });
}

const RESOURCES_HINT = 'the body is {"resources": [<resource>...], "dryRun": false}; each resource as `membrane policy validate` accepts it';
const query = (q: URLSearchParams) => Object.fromEntries(q);
const TRACE_HINT = 'the body is {"from", "to", "port", "protocol", "http"?, "dnsName"?, "with"?} (src/api/requests.ts traceRequestSchema)';

export function agentRoutes(agent: Agent, status: () => Promise<StatusView>, policy?: AgentPolicy, live?: TraceLiveLookups): Record<string, Handler> {
  return {
    'POST /v1/apply': async (body) => {
      const { resources, dryRun } = valid(checkApplyRequest(body), 'POST /v1/apply', RESOURCES_HINT);
      const results = await agent.apply(resources, dryRun);
      if (!dryRun) await agent.settled();
      return { results, dryRun } satisfies ApplyResponse;
    },
    'POST /v1/delete': async (body) => {
      const { resources } = valid(checkDeleteRequest(body), 'POST /v1/delete', 'the body is {"resources": [<resource>...]}');
      const results = await agent.remove(resources);
      await agent.settled();
      return { results, dryRun: false } satisfies ApplyResponse;
    },
    'GET /v1/resources': async (_b, q) => {
      const { kind, namespace: ns } = valid(checkWith(resourceQuerySchema, query(q)), 'GET /v1/resources', 'query: kind=<a kind membrane accepts>, namespace=<name>');
      const items = (await agent.resources.list(kind)).filter((r) => !ns || !r.metadata.namespace || r.metadata.namespace === ns);
      return { items };
    },
    'GET /v1/endpoints': async (_b, q) => {
      const { namespace: ns } = valid(checkWith(namespaceQuerySchema, query(q)), 'GET /v1/endpoints', 'query: namespace=<name>');
      return { items: agent.endpoints().filter((e) => !ns || e.namespace === ns) };
    },
    'POST /v1/endpoint/config': async (body) => {
      const { id, options } = valid(checkWith(endpointConfigRequestSchema, body), 'POST /v1/endpoint/config', 'the body is {"id": <endpoint id>, "options": {"PolicyAuditMode": true|false|null}}');
      return agent.configureEndpoint(id, options.PolicyAuditMode === undefined ? {} : { PolicyAuditMode: options.PolicyAuditMode });
    },
    'GET /v1/identities': async (_b, q) => {
      valid(checkWith(emptyQuery, query(q)), 'GET /v1/identities', 'this route takes no query');
      return { items: agent.identities() };
    },
    'GET /v1/policies': async (_b, q) => {
      const { namespace } = valid(checkWith(namespaceQuerySchema, query(q)), 'GET /v1/policies', 'query: namespace=<name>');
      return { items: await agent.policies(namespace) };
    },
    'GET /v1/status': async () => status(),
    // read-only policy questions (the UI's "why" and policy view): src/agent/policy-api.ts
    'POST /v1/policy/trace': async (body) => traceLive(agent, live, valid(checkWith(traceRequestSchema, body), 'POST /v1/policy/trace', TRACE_HINT)),
    ...(policy ? {
      'GET /v1/endpoint/policy': async (_b: unknown, q: URLSearchParams) =>
        endpointPolicy(agent, policy, valid(checkWith(endpointPolicyQuerySchema, query(q)), 'GET /v1/endpoint/policy', 'query: namespace=<name>&pod=<pod or Deployment>')),
    } : {}),
    'POST /v1/settle': async (body) => {
      valid(checkWith(emptyRequestSchema, body), 'POST /v1/settle', 'send no body, or {}');
      await agent.settled();
      return {};
    },
  };
}

const emptyQuery = namespaceQuerySchema.pick({});
