/**
 * The UI's JSON API under /api/v1: a fixed, read-only set of questions forwarded to the node's
 * agent API (src/agent/routes.ts), plus "why" (trace + a suggested policy, checked by tracing
 * again with it). Nothing here can apply, delete or change anything: the browser gets no route
 * to the agent's write calls, and `with` is only ever the server's own suggestion.
 */
import { stringify } from 'yaml';
import { z } from 'zod';
import { callAgent, AgentCallError } from '../agent/api-client.ts';
import { MembraneError } from '../common/errors.ts';
import type { TraceResponse } from '../agent/policy-api.ts';
import type { EndpointView } from '../agent/views.ts';
import { suggestPolicy } from './suggest.ts';
import { podPeerSpec } from '../policy/trace.ts';

export const WhyRequestSchema = z.strictObject({
  from: z.string().min(1).max(253),
  to: z.string().min(1).max(253),
  port: z.number().int().min(0).max(65535),
  protocol: z.enum(['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPV6']),
  http: z.strictObject({
    method: z.string().regex(/^[A-Za-z]{1,16}$/),
    path: z.string().max(4096),
    host: z.string().max(253),
  }).optional(),
});
export type WhyRequest = z.infer<typeof WhyRequestSchema>;

export interface WhyResponse extends TraceResponse {
  suggestion?: {
    note: string;
    /** YAML for `membrane apply -f -` (empty when no policy can allow it) */
    yaml: string;
    /** the trace with the suggestion added, as if applied */
    check?: TraceResponse;
  };
}

export class UiRequestError extends MembraneError {
  readonly status: number;
  readonly issues: unknown[] | undefined;
  constructor(status: number, code: string, message: string, opts: { hint?: string; issues?: unknown[] } = {}) {
    super(code, message, opts.hint === undefined ? {} : { hint: opts.hint });
    this.status = status;
    this.issues = opts.issues;
  }
}

export type ApiHandler = (body: unknown, query: URLSearchParams) => Promise<unknown>;

const TIMEOUT_MS = 15_000;

export function uiApi(opts: { agentSocket: string; otherAgentSockets?: string[]; info: () => Record<string, unknown> }): Record<string, ApiHandler> {
  const others = opts.otherAgentSockets ?? [];
  const agent = <T>(method: 'GET' | 'POST', path: string, body?: unknown, socket = opts.agentSocket) => callAgent<T>(socket, method, path, body, TIMEOUT_MS).catch((e: unknown) => {
    if (e instanceof AgentCallError) throw new UiRequestError(e.code === 'API_NOT_FOUND' ? 404 : 400, e.code, e.message, { ...(e.hint ? { hint: e.hint } : {}), ...(e.issues ? { issues: e.issues } : {}) });
    if (e instanceof MembraneError) throw new UiRequestError(502, e.code, e.message, e.hint ? { hint: e.hint } : {});
    throw e;
  });
  const ns = (q: URLSearchParams) => {
    const v = q.get('namespace');
    return v ? `?namespace=${encodeURIComponent(v)}` : '';
  };
  return {
    'GET /api/v1/info': async () => opts.info(),
    'GET /api/v1/status': () => agent('GET', '/v1/status'),
    // a cluster's endpoints are each on their own node's agent: the page lists them all
    'GET /api/v1/endpoints': async (_b, q) => {
      const all = await Promise.all([opts.agentSocket, ...others].map((s, i) => agent<{ items: unknown[] }>('GET', `/v1/endpoints${ns(q)}`, undefined, s)
        .catch((e: unknown) => { if (i === 0) throw e; return { items: [] }; })));
      return { items: all.flatMap((r) => r.items) };
    },
    'GET /api/v1/identities': () => agent('GET', '/v1/identities'),
    'GET /api/v1/policies': (_b, q) => agent('GET', `/v1/policies${ns(q)}`),
    'GET /api/v1/endpoint/policy': (_b, q) => {
      const n = q.get('namespace') ?? '';
      const p = q.get('pod') ?? '';
      if (!n || !p) throw new UiRequestError(400, 'UI_BAD_REQUEST', 'namespace and pod are required', { hint: '/api/v1/endpoint/policy?namespace=NS&pod=POD' });
      const path = `/v1/endpoint/policy?namespace=${encodeURIComponent(n)}&pod=${encodeURIComponent(p)}`;
      // the pod's own node knows its MapState: on a cluster, the first agent that has it answers
      return (async () => {
        let first: unknown;
        for (const s of [opts.agentSocket, ...others]) {
          try {
            return await agent('GET', path, undefined, s);
          } catch (e) {
            if (!(e instanceof UiRequestError && e.status === 404)) throw e;
            first ??= e;
          }
        }
        throw first;
      })();
    },
    'POST /api/v1/why': async (body) => {
      const parsed = WhyRequestSchema.safeParse(body ?? {});
      if (!parsed.success) {
        const issues = parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message }));
        throw new UiRequestError(400, 'UI_BAD_REQUEST', `why: ${issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`, { issues });
      }
      const req = parsed.data;
      // the agent of the node that made the verdict answers: what it learnt (toFQDNs addresses, its
      // endpoints' state) is its own, whatever identities the cluster shares
      const { socket, res } = others.length ? await verdictAgentTrace(req) : { socket: opts.agentSocket, res: await agent<TraceResponse>('POST', '/v1/policy/trace', req) };
      const out: WhyResponse = { ...res };
      if (res.trace.verdict === 'DROPPED') {
        const s = suggestPolicy(res.trace, req.http ? { method: req.http.method.toUpperCase(), path: req.http.path } : undefined);
        out.suggestion = { note: s.note, yaml: s.policies.map((p) => stringify(p)).join('---\n') };
        if (s.policies.length) out.suggestion.check = await agent<TraceResponse>('POST', '/v1/policy/trace', { ...req, with: s.policies }, socket);
      }
      return out;
    },
  };

  /**
   * On a cluster, the trace of the node that decides: the destination's for ingress, the source's
   * for egress. Each agent lists its own endpoints, so a peer's node is the agent listing it. The
   * destination's node (when the destination is a pod) traces first; a drop its trace puts at the
   * egress side is the source node's to explain, and that node traces again.
   */
  async function verdictAgentTrace(req: WhyRequest): Promise<{ socket: string; res: TraceResponse }> {
    const sockets = [opts.agentSocket, ...others];
    const lists = await Promise.all(sockets.map((s) => agent<{ items: EndpointView[] }>('GET', '/v1/endpoints', undefined, s).then((r) => r.items, () => [] as EndpointView[])));
    // a Deployment's name stands for its first pod by name, as the trace takes it
    const nodeOf = (spec: string): string | undefined => lists
      .flatMap((items, i) => items.filter((e) => holds(e, spec)).map((e) => ({ pod: e.pod, socket: sockets[i]! })))
      .sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : 0))[0]?.socket;
    const src = nodeOf(req.from);
    const dst = nodeOf(req.to);
    const first = dst ?? src ?? opts.agentSocket;
    const res = await agent<TraceResponse>('POST', '/v1/policy/trace', req, first);
    if (src && src !== first && decidedAtEgress(res.trace)) return { socket: src, res: await agent<TraceResponse>('POST', '/v1/policy/trace', req, src) };
    return { socket: first, res };
  }
}

/** Whether the endpoint is the peer `spec` names as `policy trace` takes it: NS/POD, POD (namespace default), a Deployment's pod, or its IP. */
function holds(e: EndpointView, spec: string): boolean {
  const s = spec.trim();
  if (s === e.ipv4 || s === e.ipv6) return true;
  const { ns, name } = podPeerSpec(s);
  return e.namespace === ns && (e.pod === name || e.workloads?.some((w) => w.kind === 'Deployment' && w.name === name) === true);
}

function decidedAtEgress(t: TraceResponse['trace']): boolean {
  if (t.egress.verdict === 'DROPPED') return true;
  return t.verdict === 'DROPPED' && t.ingress.verdict !== 'DROPPED' && t.l7?.direction === 'egress';
}
