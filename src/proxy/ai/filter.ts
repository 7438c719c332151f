/**
 * The AI filter of the HTTP proxy (an HTTP filter, after the L7 policy filter):
 *
 *   decodeHeaders  egress request of an endpoint some AIPolicy selects, to a host one of its
 *                  providers names (Host, TLS SNI or the destination's DNS names: a lying Host
 *                  header does not avoid the policy) → a recognised call (POST chat/completions,
 *                  completions, responses, embeddings; messages) has its body held (bounded);
 *                  anything else on that host is refused unless the policy allows other requests
 *   decodeBody     the body is read strictly (request.ts) → model, streaming, max tokens judged
 *                  by every selecting policy (decideAIRequest) → request rates and token budgets
 *                  of the source identity (budget.ts) → forwarded, or answered in the provider's
 *                  error shape: 403 (policy), 429 + Retry-After (rate, budget), 400 (unreadable),
 *                  413 (larger than the bound)
 *   encodeHeaders  the response's usage is read as it streams to the client (usage.ts) and
 *                  charged to the identity's budgets when it ends; flows and metrics carry the
 *                  provider, model and tokens
 *
 * Nothing of a recognised request goes upstream before the decision (the proxy holds head and
 * body until decodeBody returns). Request bodies are asked in plain encoding: the request's
 * Accept-Encoding becomes `identity` so the usage stays readable.
 */
import { AI_ROUTES, AIPolicySet, decideAIRequest, mayBeOperation, normalizeHost, queryNamesModel, recognizeOperation, type AIApi, type AIOperation, type CompiledAIPolicy, type CompiledAIProvider } from '../../policy/ai.ts';
import type { HttpFilter } from '../filter-chain.ts';
import { headerValue } from '../http/parser.ts';
import type { HttpStream } from '../http/stream.ts';
import { AIBudgetLedger } from './budget.ts';
import { aiErrorReply, type AIErrorKind, type AIRateInfo } from './errors.ts';
import type { AIMetricLabels, AIMetrics, AIOutcome } from './metrics.ts';
import { readAIRequest } from './request.ts';
import { UsageReader, type UsageResult } from './usage.ts';

export const DEFAULT_MAX_BODY_BYTES = 1 << 20;

export interface AIFilterDeps {
  policies(): AIPolicySet;
  ledger: AIBudgetLedger;
  metrics?: AIMetrics;
  /** request bodies are held up to this many bytes (as received), default 1 MiB */
  maxBodyBytes?: number;
  /** what budgets are kept by for an identity (its label set: the same for every replica) */
  identityKey(identity: number): string;
  /** names the DNS proxy saw for an address (toFQDNs cache) */
  namesForIp?(ip: string): readonly string[];
}

interface Applied {
  policy: CompiledAIPolicy;
  provider: CompiledAIProvider;
  op: AIOperation | 'other';
}

interface Exchange {
  applied: Applied[];
  api: AIApi;
  op: AIOperation;
  identity: string;
  startNs: bigint;
  labels: AIMetricLabels;
  reservation?: object;
  charges: { key: string; window: import('../../policy/ai.ts').AIWindow }[];
  reader?: UsageReader;
}

const DST_NAMES = 'ai.dstNames';
const NO_NAMES: readonly string[] = Object.freeze([]);

/** The header fields with Accept-Encoding set to identity. */
function identityEncoding(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() !== 'accept-encoding') out.push(headers[i]!, headers[i + 1]!);
  out.push('accept-encoding', 'identity');
  return out;
}

export function createAIFilter(deps: AIFilterDeps): HttpFilter<HttpStream> {
  const exchanges = new WeakMap<HttpStream, Exchange>();
  const maxBody = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const metrics = deps.metrics;
  const ledger = deps.ledger;

  /** The names a request may be for: Host, SNI, the destination's DNS names (those some policy lists). */
  function names(s: HttpStream, set: AIPolicySet): string[] {
    const out: string[] = [];
    const add = (n: string) => { if (set.hasHost(n) && !out.includes(n)) out.push(n); };
    add(normalizeHost(s.host));
    const tls = s.conn.tls;
    if (tls?.sni) add(normalizeHost(tls.sni));
    add(s.conn.server.ip);
    if (deps.namesForIp) {
      let dns = s.conn.state.get(DST_NAMES) as readonly string[] | undefined;
      if (!dns) {
        dns = deps.namesForIp(s.conn.server.ip).map(normalizeHost);
        s.conn.state.set(DST_NAMES, dns.length ? dns : NO_NAMES);
      }
      for (const n of dns) add(n);
    }
    return out;
  }

  function refuse(s: HttpStream, api: AIApi, kind: AIErrorKind, message: string, reason: string, opts: { code?: string; param?: string; rate?: AIRateInfo } = {}): 'stop' {
    const r = aiErrorReply(api, kind, message, opts);
    s.respond(r.status, r.body, reason, 'application/json', r.headers);
    return 'stop';
  }

  function count(ex: Exchange | undefined, labels: AIMetricLabels, outcome: AIOutcome): void {
    metrics?.request(ex?.labels ?? labels, outcome);
  }

  function finish(s: HttpStream, ex: Exchange, u: UsageResult): void {
    const tokens = u.promptTokens + u.completionTokens;
    ledger.settle(ex.reservation, ex.charges, tokens);
    if (metrics) {
      metrics.tokens(ex.labels, u.promptTokens, u.completionTokens);
      metrics.duration(ex.labels, Number(process.hrtime.bigint() - ex.startNs) / 1e9);
      if (u.firstByteNs !== undefined) metrics.firstToken(ex.labels, u.firstByteNs / 1e9);
    }
    s.ai = {
      ...s.ai!, promptTokens: u.promptTokens, completionTokens: u.completionTokens,
      ...(u.reported ? { usage: 'reported' as const } : tokens > 0 ? { usage: 'estimated' as const } : {}),
      ...(u.firstByteNs !== undefined ? { firstByteNs: u.firstByteNs } : {}),
    };
  }

  return {
    name: 'membrane.ai',

    decodeHeaders(s) {
      const conn = s.conn;
      if (conn.direction !== 'egress' || !conn.endpoint) return 'continue';
      const set = deps.policies();
      if (set.size === 0) return 'continue';
      const ep = conn.endpoint;
      const pols = set.forEndpoint(ep.namespace, ep.labels);
      if (pols.length === 0) return 'continue';
      const hosts = names(s, set);
      if (hosts.length === 0) return 'continue';
      let applied: Applied[] = [];
      for (const p of pols) {
        const provider = AIPolicySet.provider(p, hosts);
        if (provider) applied.push({ policy: p, provider, op: recognizeOperation(provider, s.head.method, s.path) });
      }
      if (applied.length === 0) return 'continue';
      const first = applied[0]!;
      const labels: AIMetricLabels = { provider: first.provider.api, model: '', namespace: ep.namespace, workload: ep.workloads?.[0]?.name ?? ep.pod };
      if (applied.some((a) => a.op === 'other')) {
        s.ai = { provider: first.provider.api, operation: 'other', model: '', stream: false };
        // a call in disguise (`/v1/chat%2Fcompletions`, `/v1//chat/completions/`): a server that normalises paths would
        // run it, so it is not "another request" even where those are allowed; it is refused, never judged by guesswork
        const disguised = applied.find((a) => a.op === 'other' && mayBeOperation(a.provider, s.head.method, s.path));
        if (disguised) {
          const bare = s.path.split('?')[0]!.slice(0, 200);
          s.ai.policy = disguised.policy.key;
          count(undefined, labels, 'denied');
          return refuse(s, disguised.provider.api, 'forbidden', `${s.head.method} ${bare} is not written as an AI API call is (${disguised.provider.pathPrefix}${Object.keys(AI_ROUTES[disguised.provider.api]).join(', ')}): refused by AIPolicy ${disguised.policy.key}`,
            `ai: ${s.head.method} ${bare} refused by AIPolicy ${disguised.policy.key} (an AI call in another form)`, { code: 'request_not_allowed' });
        }
        const refusing = applied.find((a) => a.op === 'other' && !a.policy.otherRequests);
        if (refusing) {
          s.ai.policy = refusing.policy.key;
          count(undefined, labels, 'denied');
          return refuse(s, refusing.provider.api, 'forbidden', `${s.head.method} ${s.path.split('?')[0]} is not an AI API call that AIPolicy ${refusing.policy.key} allows (otherRequests: Deny)`,
            `ai: ${s.head.method} ${s.path.split('?')[0]} refused by AIPolicy ${refusing.policy.key} (not a recognised AI call)`, { code: 'request_not_allowed' });
        }
        applied = applied.filter((a) => a.op !== 'other');
        if (applied.length === 0) return 'continue';
      }
      const main = applied[0]!;
      const op = main.op as AIOperation;
      if (s.head.upgrade && s.head.upgradeType !== 'h2c') {
        // no AI call switches protocols; after a 101 the client's bytes would no longer be read as calls (h2c is
        // stripped by the proxy: that request goes on as plain HTTP/1.1 and is judged like any other)
        s.ai = { provider: main.provider.api, operation: op, model: '', stream: false };
        count(undefined, labels, 'invalid');
        return refuse(s, main.provider.api, 'invalid', `${s.path.split('?')[0]} does not switch protocols (Upgrade refused)`, 'ai: upgrade requested on an AI API call', { code: 'upgrade_not_allowed' });
      }
      if (queryNamesModel(s.path)) {
        s.ai = { provider: main.provider.api, operation: op, model: '', stream: false };
        count(undefined, labels, 'invalid');
        return refuse(s, main.provider.api, 'invalid', 'the model is named in the query; name it only in the body', 'ai: model named in the query', { code: 'invalid_field', param: 'model' });
      }
      const ce = headerValue(s.requestHeaders(), 'content-encoding');
      if (ce !== undefined && ce.trim().toLowerCase() !== 'identity') {
        s.ai = { provider: main.provider.api, operation: op, model: '', stream: false };
        count(undefined, labels, 'invalid');
        return refuse(s, main.provider.api, 'invalid', `request bodies with content-encoding ${ce.slice(0, 40)} are not accepted here; send JSON without compression`,
          'ai: compressed request body', { code: 'unsupported_content_encoding' });
      }
      s.holdBody(maxBody);
      s.setHeaders(identityEncoding(s.requestHeaders()));
      exchanges.set(s, { applied, api: main.provider.api, op, identity: deps.identityKey(ep.identity), startNs: process.hrtime.bigint(), labels, charges: [] });
      return 'continue';
    },

    decodeBody(s, body) {
      const ex = exchanges.get(s);
      if (!ex) return 'continue';
      const api = ex.api;
      s.ai = { provider: api, operation: ex.op, model: '', stream: false };
      if (body === null) {
        count(ex, ex.labels, 'too_large');
        return refuse(s, api, 'too_large', `the request body is larger than ${maxBody} bytes, the most this proxy reads`, `ai: request body larger than ${maxBody} bytes`, { code: 'request_too_large' });
      }
      const r = readAIRequest(body, ex.op);
      if (!r.ok) {
        count(ex, ex.labels, 'invalid');
        return refuse(s, api, 'invalid', r.message, `ai: unreadable request body (${r.code})`, { code: r.code, ...(r.param ? { param: r.param } : {}) });
      }
      s.ai = { provider: api, operation: ex.op, model: r.model, stream: r.stream };
      ex.labels = { ...ex.labels, model: r.model };
      for (const a of ex.applied) {
        const facts = a.op === ex.op ? r : readAIRequest(body, a.op as AIOperation);
        if (!facts.ok) {
          count(ex, ex.labels, 'invalid');
          return refuse(s, api, 'invalid', facts.message, `ai: unreadable request body (${facts.code})`, { code: facts.code });
        }
        const d = decideAIRequest(a.policy, { operation: a.op as AIOperation, model: facts.model, stream: facts.stream, maxTokens: facts.maxTokens });
        if (!d.allowed) {
          s.ai.policy = a.policy.key;
          count(ex, ex.labels, 'denied');
          const param = d.code === 'streaming_denied' ? 'stream' : d.code === 'model_denied' || d.code === 'model_not_allowed' ? 'model' : 'max_tokens';
          return refuse(s, api, 'forbidden', d.message!, `ai: ${d.message}`, { code: d.code!, param });
        }
      }
      // a background response runs after this exchange ends and its usage is read by another request: it cannot be charged
      const metered = ex.applied.find((a) => a.policy.budgets.length > 0);
      if (r.background && metered) {
        s.ai.policy = metered.policy.key;
        count(ex, ex.labels, 'denied');
        const msg = `background responses are not allowed under AIPolicy ${metered.policy.key}: their tokens could not be charged to its budget`;
        return refuse(s, api, 'forbidden', msg, `ai: ${msg}`, { code: 'background_not_metered', param: 'background' });
      }
      // rates and budgets: every limit is judged before any is counted
      const now = ledger.now();
      const requestKeys: Exchange['charges'] = [];
      const tokenKeys: Exchange['charges'] = [];
      for (const a of ex.applied) {
        for (const rl of a.policy.rateLimits) {
          const key = AIBudgetLedger.key(a.policy.key, 'requests', rl.window, ex.identity);
          const st = ledger.state(key, rl.window, now);
          if (st.used >= rl.requests) {
            s.ai.policy = a.policy.key;
            count(ex, ex.labels, 'rate_limited');
            const msg = `Rate limit reached for requests under AIPolicy ${a.policy.key}: limit ${rl.requests} per ${rl.window.text}, used ${st.used}. Please try again in ${Math.ceil((st.windowEnd - now) / 1000)}s.`;
            return refuse(s, api, 'rate_limit', msg, `ai: request rate ${rl.requests}/${rl.window.text} of AIPolicy ${a.policy.key} reached`,
              { rate: { unit: 'requests', limit: rl.requests, remaining: 0, resetAt: st.windowEnd, now } });
          }
          requestKeys.push({ key, window: rl.window });
        }
        for (const b of a.policy.budgets) {
          const key = AIBudgetLedger.key(a.policy.key, 'tokens', b.window, ex.identity);
          const st = ledger.state(key, b.window, now);
          if (st.used + st.reserved >= b.tokens) {
            s.ai.policy = a.policy.key;
            count(ex, ex.labels, 'budget_exhausted');
            // spent: wait for the next window; only in flight: wait for those responses
            const resetAt = st.used >= b.tokens ? st.windowEnd : now + 1000;
            const msg = `Token budget reached for ${r.model} under AIPolicy ${a.policy.key}: limit ${b.tokens} tokens per ${b.window.text}, used ${st.used}` +
              `${st.reserved ? `, ${st.reserved} reserved by requests in flight` : ''}. Please try again in ${Math.ceil((resetAt - now) / 1000)}s.`;
            return refuse(s, api, 'rate_limit', msg, `ai: token budget ${b.tokens}/${b.window.text} of AIPolicy ${a.policy.key} exhausted`,
              { rate: { unit: 'tokens', limit: b.tokens, remaining: b.tokens - st.used - st.reserved, resetAt, now } });
          }
          tokenKeys.push({ key, window: b.window });
        }
      }
      ledger.countRequest(requestKeys, now);
      if (tokenKeys.length) ex.reservation = ledger.reserve(tokenKeys.map((k) => k.key), Math.ceil(body.length / 4) + (r.maxTokens ?? 0), now);
      ex.charges = tokenKeys;
      ex.reader = new UsageReader({ api, operation: ex.op, startNs: ex.startNs, requestBytes: body.length, maxTokens: r.maxTokens, onEnd: (u) => finish(s, ex, u) });
      s.observeResponse(ex.reader);
      count(ex, ex.labels, 'forwarded');
      return 'continue';
    },

    encodeHeaders(s) {
      const ex = exchanges.get(s);
      const res = s.response;
      if (ex?.reader && res) ex.reader.head(res.status, headerValue(res.headers, 'content-type'), headerValue(res.headers, 'content-encoding'));
      return 'continue';
    },
  };
}
