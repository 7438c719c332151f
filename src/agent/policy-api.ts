/**
 * The live policy questions the UI asks the agent: "why was this flow allowed or dropped" (the
 * offline trace engine of `membrane policy trace`, src/policy/trace.ts, run over what this agent
 * holds right now) and "what policy applies to this endpoint" (the policies selecting it and a
 * summary of its resolved MapState). Requests arrive checked (routes.ts with the schemas of
 * src/api/requests.ts); nothing here changes any state.
 */
import type { z } from 'zod';
import type { Pod, Resource } from '../api/types.ts';
import type { endpointPolicyQuerySchema, traceRequestSchema } from '../api/requests.ts';
import { resourceKey } from '../api/types.ts';
import { loadText } from '../api/load.ts';
import { policyCheck } from '../policy/check.ts';
import { RESERVED_NAMES } from '../identity/identity.ts';
import { PROTO_NAME } from '../policy/ports.ts';
import { formatTrace, tracePolicy, type TraceInput, type TraceResult, type TraceRule } from '../policy/trace.ts';
import type { MapStateEntry, MapStateKey, RuleOrigin } from '../policy/types.ts';
import type { Agent } from './agent.ts';
import { ApiRequestError } from './api-server.ts';
import type { AgentPolicy } from '../policy/agent-engine.ts';
import type { EndpointView, PolicyView } from './views.ts';

export interface TraceResponse {
  trace: TraceResult;
  /** the same text `membrane policy trace` prints */
  text: string;
}

/**
 * What the trace engine is given: every stored resource except Deployments, whose pods the agent
 * has already made (with their real addresses and names), plus `with` replacing same-named ones.
 */
async function traceResources(agent: Agent, extra: unknown[] | undefined): Promise<Resource[]> {
  const stored: Resource[] = (await agent.resources.list()).filter((r) => r.kind !== 'Deployment');
  if (!extra?.length) return stored;
  const text = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: extra });
  const loaded = loadText(text, '<with>', { policyCheck });
  if (loaded.issues.length) {
    throw new ApiRequestError('API_INVALID', `${loaded.issues.length} problem(s) in "with"; nothing was traced`, {
      hint: 'each item is a resource as `membrane apply` takes it', issues: loaded.issues,
    });
  }
  const byKey = new Map<string, Resource>(stored.map((r) => [resourceKey(r), r]));
  for (const r of loaded.resources) byKey.set(resourceKey(r), r);
  return [...byKey.values()];
}

/**
 * What the agent knows that the files cannot say (tracePolicy's inputs of the same names): the
 * identity labels of an IP learnt through the DNS proxy, and the identity (cluster-wide number,
 * labels) of the pod at an address, this node's or another's.
 */
export type TraceLiveLookups = Pick<TraceInput, 'learnedIPLabels' | 'podIdentity'>;

/**
 * Traces a request routes.ts has checked (src/api/requests.ts traceRequestSchema) with the
 * agent's live lookups: the same verdict and identity numbers whichever node of a cluster is asked.
 */
export async function traceLive(agent: Agent, live: TraceLiveLookups | undefined, req: z.output<typeof traceRequestSchema>): Promise<TraceResponse> {
  const resources = await traceResources(agent, req.with);
  const trace = tracePolicy({
    resources, from: req.from, to: req.to, port: req.port, protocol: req.protocol,
    ...(live?.learnedIPLabels ? { learnedIPLabels: live.learnedIPLabels } : {}), ...(live?.podIdentity ? { podIdentity: live.podIdentity } : {}),
    ...(req.http ? { http: req.http } : {}), ...(req.dnsName ? { dnsName: req.dnsName } : {}),
  });
  return { trace, text: formatTrace(trace) };
}

/** One line of an endpoint's effective policy: MapState entries that differ only by peer. */
export interface EffectiveRule {
  verdict: 'allow' | 'deny';
  /** `80/TCP`, `8000-8015/TCP`, `any/UDP`, `any` */
  port: string;
  /** remote identities: `any` for the wildcard lane, else each identity's id and labels */
  peers: { identity: number; labels: string[] }[] | 'any';
  /** more peers than listed */
  morePeers: number;
  l7?: { parser: string; rules: { selector: string; http?: { method?: string; path?: string; host?: string }[] | null; dns?: unknown[] | null }[] };
  auth?: 'required' | 'test-always-fail';
  rules: TraceRule[];
}

export interface EndpointPolicyView {
  endpoint: EndpointView;
  policies: PolicyView[];
  defaultDeny: { ingress: boolean; egress: boolean };
  ingress: EffectiveRule[];
  egress: EffectiveRule[];
}

const MAX_PEERS = 20;

function portText(k: MapStateKey): string {
  if (k.proto === 0) return 'any';
  const proto = PROTO_NAME[k.proto] ?? String(k.proto);
  if (k.portPrefixLen === 0) return `any/${proto}`;
  if (k.portPrefixLen >= 16) return `${k.port}/${proto}`;
  return `${k.port}-${k.port + (1 << (16 - k.portPrefixLen)) - 1}/${proto}`;
}

const ruleOf = (o: RuleOrigin): TraceRule => ({ file: o.file, line: o.line, policy: o.namespace ? `${o.namespace}/${o.name}` : o.name, kind: o.kind });

function l7Of(e: MapStateEntry): EffectiveRule['l7'] {
  if (!e.l7) return undefined;
  return {
    parser: e.l7.parser,
    rules: e.l7.perSelector.map((s) => ({
      selector: s.selector,
      ...(s.http !== undefined ? { http: s.http?.map((h) => ({ ...(h.method ? { method: h.method } : {}), ...(h.path ? { path: h.path } : {}), ...(h.host ? { host: h.host } : {}) })) ?? null } : {}),
      ...(s.dns !== undefined ? { dns: s.dns } : {}),
    })),
  };
}

/** The policies selecting `namespace/pod` and its MapState grouped by everything but the peer. */
export async function endpointPolicy(agent: Agent, policy: AgentPolicy, q: z.output<typeof endpointPolicyQuerySchema>): Promise<EndpointPolicyView> {
  const { namespace: ns, pod } = q;
  const ep = agent.endpoints().find((e) => e.namespace === ns && e.pod === pod)
    // a Deployment's name stands for its first pod (as `policy trace` resolves it)
    ?? await ownedPod(agent, ns, pod);
  if (!ep) throw new ApiRequestError('API_NOT_FOUND', `no endpoint for pod ${ns}/${pod} on this node`, { hint: 'see `membrane get endpoints -A`' });
  const selecting = policy.policiesSelecting(ep.identity);
  const policies = (await agent.policies()).filter((p) => selecting.has(resourceKey({ kind: p.kind, metadata: { name: p.name, ...(p.namespace ? { namespace: p.namespace } : {}) } })));
  const ms = policy.mapState(ep.id);
  const groups = new Map<string, { dir: 'ingress' | 'egress'; rule: EffectiveRule; ids: Set<number> }>();
  for (const { key, entry } of ms?.entries.values() ?? []) {
    const l7 = l7Of(entry);
    const rules = entry.origins.map(ruleOf);
    const g = JSON.stringify([key.direction, entry.verdict, key.proto, key.port, key.portPrefixLen, l7, entry.authType, rules]);
    let cur = groups.get(g);
    if (!cur) {
      cur = {
        dir: key.direction,
        rule: {
          verdict: entry.verdict, port: portText(key), peers: [], morePeers: 0, rules,
          ...(l7 ? { l7 } : {}), ...(entry.authType ? { auth: entry.authType === 2 ? 'test-always-fail' as const : 'required' as const } : {}),
        },
        ids: new Set(),
      };
      groups.set(g, cur);
    }
    cur.ids.add(key.identity);
  }
  const out: EndpointPolicyView = {
    endpoint: ep, policies, defaultDeny: ms?.defaultDeny ?? { ingress: false, egress: false }, ingress: [], egress: [],
  };
  for (const { dir, rule, ids } of groups.values()) {
    if (ids.has(0)) rule.peers = 'any';
    else {
      const sorted = [...ids].sort((a, b) => a - b);
      rule.peers = sorted.slice(0, MAX_PEERS).map((id) => ({ identity: id, labels: policy.identityLabels(id) ?? (RESERVED_NAMES[id] ? [`reserved:${RESERVED_NAMES[id]}`] : []) }));
      rule.morePeers = Math.max(0, sorted.length - MAX_PEERS);
    }
    out[dir].push(rule);
  }
  const order = (a: EffectiveRule, b: EffectiveRule) => (a.verdict === b.verdict ? a.port.localeCompare(b.port) : a.verdict === 'deny' ? -1 : 1);
  out.ingress.sort(order);
  out.egress.sort(order);
  return out;
}

async function ownedPod(agent: Agent, ns: string, deployment: string): Promise<EndpointView | undefined> {
  const pods = (await agent.resources.list('Pod')) as Pod[];
  const names = new Set(pods.filter((p) => p.metadata.namespace === ns && p.metadata.annotations?.['membrane.dev/owned-by'] === `Deployment/${deployment}`).map((p) => p.metadata.name));
  return agent.endpoints().filter((e) => e.namespace === ns && names.has(e.pod)).sort((a, b) => a.pod.localeCompare(b.pod))[0];
}
