/**
 * `membrane policy trace --model`: what the AIPolicies of the given files do with one AI call
 * from a pod, offline — which policies select the pod and name the host, what each decides
 * (with the line of the deciding part), the budgets and rates the proxy will count at run time,
 * and whether the connection reaches the HTTP proxy at all (the AI filter only sees requests the
 * network policy redirects to it; HTTPS needs TLS interception).
 */
import type { AIPolicy, Resource } from '../api/types.ts';
import {
  AIPolicySet, decideAIRequest, mayBeOperation, normalizeHost, recognizeOperation, translateAIPolicy, DEFAULT_PATH_PREFIX,
  type AIOperation, type CompiledAIPolicy, type TranslateAIOptions,
} from './ai.ts';
import type { TracePeer, TraceResult } from './trace.ts';

export interface AITraceInput {
  resources: Resource[];
  locate?: TranslateAIOptions['locate'];
  source: TracePeer;
  host: string;
  /** default POST */
  method?: string;
  /** default: the call of the first selecting provider's API (chat completions, messages) */
  path?: string;
  model: string;
  stream?: boolean;
  maxTokens?: number;
  /** the network trace of the same connection (is it redirected to the HTTP proxy?) */
  network?: TraceResult;
}

export interface AITracePolicy {
  policy: string;
  file: string;
  line: number;
  api: string;
  operation: AIOperation | 'other';
  allowed: boolean;
  code?: string;
  message?: string;
  /** the part of the policy that decided a denial */
  rule?: { file: string; line: number };
  budgets: string[];
  rateLimits: string[];
}

export interface AITrace {
  host: string;
  method: string;
  path: string;
  model: string;
  policies: AITracePolicy[];
  /** ALLOWED / DENIED by the AIPolicies, NOT_SELECTED when none applies */
  verdict: 'ALLOWED' | 'DENIED' | 'NOT_SELECTED';
  /** the connection goes through the HTTP proxy (where the AI filter runs) */
  enforced?: boolean;
  note?: string;
}

export function traceAI(input: AITraceInput): AITrace {
  const compiled: CompiledAIPolicy[] = [];
  for (const r of input.resources) {
    if (r.kind !== 'AIPolicy') continue;
    const t = translateAIPolicy(r as AIPolicy, input.locate ? { locate: input.locate } : {});
    if (t.policy) compiled.push(t.policy);
  }
  const host = normalizeHost(input.host);
  const method = (input.method ?? 'POST').toUpperCase();
  const src = input.source;
  const set = new AIPolicySet(compiled);
  const selecting = src.kind === 'pod' && src.namespace ? set.forEndpoint(src.namespace, src.labels) : [];
  const applied = selecting.map((p) => ({ p, provider: AIPolicySet.provider(p, [host]) })).filter((x) => x.provider);
  const first = applied[0]?.provider;
  const path = input.path ?? (first ? `${first.pathPrefix}${first.api === 'anthropic' ? '/messages' : '/chat/completions'}` : `${DEFAULT_PATH_PREFIX}/chat/completions`);
  const out: AITrace = { host, method, path, model: input.model, policies: [], verdict: 'NOT_SELECTED' };
  if (applied.length === 0) {
    out.note = src.kind !== 'pod' ? 'AIPolicies select pods; the source is not a pod' : `no AIPolicy selects ${src.namespace}/${src.name} for host ${host}`;
    return out;
  }
  for (const { p, provider } of applied) {
    const op = recognizeOperation(provider!, method, path);
    const origin = p.origin([]);
    const row: AITracePolicy = {
      policy: p.key, file: origin.file, line: origin.line, api: provider!.api, operation: op, allowed: true,
      budgets: p.budgets.map((b) => `${b.tokens} tokens per ${b.window.text}`),
      rateLimits: p.rateLimits.map((r) => `${r.requests} requests per ${r.window.text}`),
    };
    if (op === 'other') {
      if (mayBeOperation(provider!, method, path)) Object.assign(row, { allowed: false, code: 'request_not_allowed', message: `${method} ${path} is an AI call in another form (refused whatever otherRequests says)`, rule: p.origin(['spec', 'providers']) });
      else if (!p.otherRequests) Object.assign(row, { allowed: false, code: 'request_not_allowed', message: `${method} ${path} is not an AI call and otherRequests is Deny`, rule: p.origin(['spec', 'otherRequests']) });
    } else {
      const d = decideAIRequest(p, { operation: op, model: input.model, stream: input.stream ?? false, maxTokens: input.maxTokens });
      if (!d.allowed) Object.assign(row, { allowed: false, code: d.code, message: d.message, rule: p.origin(d.path ?? []) });
    }
    out.policies.push(row);
  }
  out.verdict = out.policies.every((x) => x.allowed) ? 'ALLOWED' : 'DENIED';
  const n = input.network;
  if (n) {
    const eg = n.egress;
    out.enforced = eg.verdict === 'REDIRECTED' && eg.proxy === 'http';
    if (!out.enforced) {
      out.note = eg.verdict === 'DROPPED'
        ? 'the network trace drops the connection before any AI policy applies (offline there is no DNS: an address matches no toFQDNs rule; in a lab it does once resolved)'
        : 'NOT ENFORCED: the connection is not redirected to the HTTP proxy; add an HTTP rule on this port (rules.http, and terminatingTLS/originatingTLS for HTTPS) so the AI filter sees the requests';
    }
  }
  return out;
}

export function formatAITrace(t: AITrace): string {
  const lines = [`AI: ${t.method} ${t.host}${t.path} model ${t.model}`];
  if (t.verdict === 'NOT_SELECTED') lines.push(`  ${t.note}`);
  for (const p of t.policies) {
    const what = p.operation === 'other' ? 'other request' : `${p.api} ${p.operation}`;
    lines.push(`  AIPolicy ${p.policy} (${p.file}:${p.line}): ${what}: ${p.allowed ? 'allowed' : `DENIED (${p.code}): ${p.message}${p.rule ? ` (${p.rule.file}:${p.rule.line})` : ''}`}`);
    if (p.allowed && (p.budgets.length || p.rateLimits.length)) lines.push(`    counted at run time per identity: ${[...p.budgets, ...p.rateLimits].join(', ')}`);
  }
  if (t.note && t.verdict !== 'NOT_SELECTED') lines.push(`  ${t.note}`);
  lines.push(`AI verdict: ${t.verdict}${t.verdict === 'DENIED' ? ' (HTTP 403 in the provider\'s error shape)' : ''}`);
  return lines.join('\n') + '\n';
}
