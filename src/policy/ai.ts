/**
 * AIPolicy (membrane.dev/v1alpha1) → what the HTTP proxy's AI filter applies. Pure: no I/O.
 *
 *   AIPolicy ─translateAIPolicy─► issues (codes AI_*, each at its YAML path) | CompiledAIPolicy
 *   CompiledAIPolicy[] ─► AIPolicySet: the policies selecting an endpoint, the provider of a host
 *   request facts (operation, model, stream, max tokens) ─decideAIRequest─► allowed | why not
 *
 * An AIPolicy only restricts: it never allows traffic the network policy does not, and it is
 * enforced where the HTTP proxy sees the requests (an L7 HTTP rule on the port; for HTTPS, TLS
 * interception). Several AIPolicies selecting one endpoint and host all apply (each must allow).
 *
 * Model patterns are globs where `*` matches any run of characters, compared without regard to
 * case (a server that ignores case must not turn a denied model into an allowed one). Windows
 * are fixed, aligned to multiples of their length since the Unix epoch (UTC midnight for `1d`).
 */
import type { AIPolicy, LabelSelector } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import { LabelSet } from '../labels/labels.ts';
import { compileSelector, validateSelector, type CompiledSelector } from '../labels/selector.ts';

export type AIApi = 'openai' | 'anthropic';
export type AIOperation = 'chat.completions' | 'completions' | 'responses' | 'embeddings' | 'messages';
type Path = (string | number)[];

/** The calls each wire format has, by path under the provider's prefix (POST only). */
export const AI_ROUTES: Readonly<Record<AIApi, Readonly<Record<string, AIOperation>>>> = Object.freeze({
  openai: Object.freeze({ '/chat/completions': 'chat.completions', '/completions': 'completions', '/responses': 'responses', '/embeddings': 'embeddings' }),
  anthropic: Object.freeze({ '/messages': 'messages' }),
});

export const DEFAULT_PATH_PREFIX = '/v1';
const MAX_WINDOW_MS = 31 * 86_400_000;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const HOST_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const PREFIX_RE = /^(\/[A-Za-z0-9._~-]+)*$/;
/** model ids as providers and OpenAI-compatible servers write them (`ft:gpt-4o:org::id`, `meta-llama/Llama-3.1-8B`) */
const MODEL_PATTERN_RE = /^[A-Za-z0-9._:/@+*-]+$/;

export interface AIWindow {
  /** as written, e.g. `1m`, `24h` */
  text: string;
  ms: number;
}

export interface CompiledAIProvider {
  api: AIApi;
  /** lower-case names (or IPv4 literals), without port */
  hosts: readonly string[];
  /** '' or `/segment...` without a trailing slash */
  pathPrefix: string;
  /** index in spec.providers */
  index: number;
}

export interface ModelPattern {
  text: string;
  matches(model: string): boolean;
}

export interface CompiledAIPolicy {
  /** `namespace/name` */
  key: string;
  namespace: string;
  name: string;
  selector: CompiledSelector;
  providers: readonly CompiledAIProvider[];
  /** null: every model not denied */
  allow: readonly ModelPattern[] | null;
  deny: readonly ModelPattern[];
  maxTokensPerRequest?: number;
  streaming: boolean;
  otherRequests: boolean;
  budgets: readonly { window: AIWindow; tokens: number }[];
  rateLimits: readonly { window: AIWindow; requests: number }[];
  /** where each part came from (policy trace), by YAML path */
  origin(path: Path): { file: string; line: number };
}

export interface TranslateAIOptions {
  locate?: (resource: AIPolicy, path: Path) => { line: number; col: number } | undefined;
}

/** `1m`, `24h`, `7d` → milliseconds; undefined when not a whole duration of 1 s to 31 d. */
export function parseWindow(text: unknown): AIWindow | undefined {
  if (typeof text !== 'string') return undefined;
  const m = /^([1-9]\d{0,6})(s|m|h|d)$/.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms <= MAX_WINDOW_MS ? { text, ms } : undefined;
}

/** A `*` glob compared without regard to case: segments found in order, no backtracking. */
export function modelPattern(text: string): ModelPattern {
  const parts = text.toLowerCase().split('*');
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  const exact = parts.length === 1;
  return {
    text,
    matches(model: string): boolean {
      const m = model.toLowerCase();
      if (exact) return m === first;
      if (m.length < first.length + last.length || !m.startsWith(first) || !m.endsWith(last)) return false;
      let at = first.length;
      const end = m.length - last.length;
      for (let i = 1; i < parts.length - 1; i++) {
        const seg = parts[i]!;
        if (seg === '') continue;
        const j = m.indexOf(seg, at);
        if (j < 0 || j + seg.length > end) return false;
        at = j + seg.length;
      }
      return true;
    },
  };
}

/** `Host` / `:authority` / SNI → the name compared with provider hosts (lower case, no port, no final dot). */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.lastIndexOf(':');
  if (colon >= 0) h = h.slice(0, colon);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

/**
 * Checks an AIPolicy's values (the loader has checked its shape) and compiles it. Every problem
 * is reported, each at its YAML path; with any problem there is no policy.
 */
export function translateAIPolicy(res: AIPolicy, opts: TranslateAIOptions = {}): { policy?: CompiledAIPolicy; issues: Issue[] } {
  const issues: Issue[] = [];
  const src = res.source ?? { file: '<input>', line: 0, col: 0 };
  const issue = (code: string, path: Path, message: string, hint?: string) => {
    const at = opts.locate?.(res, path) ?? { line: src.line, col: src.col };
    issues.push({ code, message, path, file: src.file, line: at.line, col: at.col, ...(hint ? { hint } : {}) });
  };
  const spec = res.spec;
  const namespace = res.metadata.namespace || 'default';

  let selector: CompiledSelector | undefined;
  const selProblems = validateSelector(spec.endpointSelector);
  for (const p of selProblems) issue('AI_SELECTOR_INVALID', ['spec', 'endpointSelector', ...p.path], p.message, 'a Kubernetes label selector (matchLabels, matchExpressions) with valid label keys and values');
  if (selProblems.length === 0) selector = compileSelector(stripNamespace(spec.endpointSelector));

  const providers: CompiledAIProvider[] = [];
  const hostApi = new Map<string, { api: AIApi; path: Path }>();
  spec.providers.forEach((p, i) => {
    const base: Path = ['spec', 'providers', i];
    const hosts: string[] = [];
    p.hosts.forEach((h, j) => {
      const n = h.toLowerCase();
      if (n.length > 253 || (!HOST_RE.test(n) && !IPV4_RE.test(n))) {
        issue('AI_HOST_INVALID', [...base, 'hosts', j], `"${h}" is not a host name`, 'a DNS name such as api.openai.com (no scheme, port, path or wildcard), or an IPv4 address');
        return;
      }
      const prior = hostApi.get(n);
      if (prior) {
        issue('AI_HOST_DUPLICATE', [...base, 'hosts', j], `host ${n} is already listed at ${prior.path.join('.')}`, 'list each host once per policy (one API per host)');
        return;
      }
      hostApi.set(n, { api: p.api, path: [...base, 'hosts', j] });
      hosts.push(n);
    });
    let prefix = p.pathPrefix ?? DEFAULT_PATH_PREFIX;
    if (prefix === '/') prefix = '';
    if (!PREFIX_RE.test(prefix) || prefix.split('/').some((seg) => seg === '.' || seg === '..')) {
      issue('AI_PATH_PREFIX_INVALID', [...base, 'pathPrefix'], `invalid pathPrefix "${p.pathPrefix}"`, 'a path such as /v1 or /openai/v1: segments of letters, digits and ._~-, no trailing slash, no query');
    }
    providers.push({ api: p.api, hosts, pathPrefix: prefix, index: i });
  });

  const patterns = (list: string[] | undefined, key: 'allow' | 'deny'): ModelPattern[] => {
    const out: ModelPattern[] = [];
    (list ?? []).forEach((t, i) => {
      if (t.length === 0 || t.length > 256 || !MODEL_PATTERN_RE.test(t)) {
        issue('AI_MODEL_PATTERN_INVALID', ['spec', 'models', key, i], `invalid model pattern "${t}"`, 'a model id such as gpt-4o-mini, with * for any characters (letters, digits and . _ : / @ + - only)');
      } else out.push(modelPattern(t));
    });
    return out;
  };
  const allow = spec.models?.allow === undefined ? null : patterns(spec.models.allow, 'allow');
  const deny = patterns(spec.models?.deny, 'deny');

  const windows = <T extends { window: string }>(list: T[] | undefined, key: 'budgets' | 'rateLimits'): (T & { w: AIWindow })[] => {
    const out: (T & { w: AIWindow })[] = [];
    const seen = new Set<number>();
    (list ?? []).forEach((b, i) => {
      const w = parseWindow(b.window);
      if (!w) {
        issue('AI_WINDOW_INVALID', ['spec', key, i, 'window'], `invalid window "${b.window}"`, 'a whole number and a unit: 30s, 1m, 1h, 24h, 7d (at most 31d)');
        return;
      }
      if (seen.has(w.ms)) {
        issue('AI_WINDOW_DUPLICATE', ['spec', key, i, 'window'], `a second ${key === 'budgets' ? 'budget' : 'rate limit'} for the same window (${b.window})`, 'give each window once');
        return;
      }
      seen.add(w.ms);
      out.push({ ...b, w });
    });
    return out;
  };
  const budgets = windows(spec.budgets, 'budgets').map((b) => ({ window: b.w, tokens: b.tokens }));
  const rateLimits = windows(spec.rateLimits, 'rateLimits').map((r) => ({ window: r.w, requests: r.requests }));

  if (issues.length || !selector) return { issues };
  const locate = opts.locate;
  const policy: CompiledAIPolicy = Object.freeze({
    key: `${namespace}/${res.metadata.name}`,
    namespace, name: res.metadata.name, selector, providers, allow, deny,
    ...(spec.maxTokensPerRequest !== undefined ? { maxTokensPerRequest: spec.maxTokensPerRequest } : {}),
    streaming: spec.streaming !== 'Deny',
    otherRequests: spec.otherRequests === 'Allow',
    budgets, rateLimits,
    origin: (path: Path) => ({ file: src.file, line: locate?.(res, path)?.line ?? src.line }),
  });
  return { policy, issues };
}

/** The namespace is the policy's own (as for a CiliumNetworkPolicy's subject): a selector cannot reach another. */
function stripNamespace(sel: LabelSelector): LabelSelector {
  const ns = (k: string) => k === 'io.kubernetes.pod.namespace' || k.endsWith(':io.kubernetes.pod.namespace');
  const out: LabelSelector = {};
  if (sel.matchLabels) out.matchLabels = Object.fromEntries(Object.entries(sel.matchLabels).filter(([k]) => !ns(k)));
  if (sel.matchExpressions) out.matchExpressions = sel.matchExpressions.filter((e) => !ns(e.key));
  return out;
}

/** The operation a request is, for a provider: its POST paths under the prefix, query ignored; `other` for anything else. */
export function recognizeOperation(p: CompiledAIProvider, method: string, path: string): AIOperation | 'other' {
  if (method !== 'POST') return 'other';
  const q = path.indexOf('?');
  const bare = q >= 0 ? path.slice(0, q) : path;
  if (!bare.startsWith(p.pathPrefix)) return 'other';
  const route = bare.slice(p.pathPrefix.length);
  return Object.hasOwn(AI_ROUTES[p.api], route) ? AI_ROUTES[p.api][route]! : 'other';
}

/**
 * Whether a request that is not literally a recognised call could be one to a server that
 * normalises paths (percent-decoding, `//`, dot segments, `\\`, a trailing `/`, `;params`, any case,
 * a lower-case method): such a request is never passed as "another request", since the model in
 * it would not be judged. A target that does not decode counts as one (fail closed).
 */
export function mayBeOperation(p: CompiledAIProvider, method: string, path: string): boolean {
  if (method.toUpperCase() !== 'POST') return false;
  let bare = path;
  const cut = bare.search(/[?#]/);
  if (cut >= 0) bare = bare.slice(0, cut);
  for (let i = 0; i < 3 && bare.includes('%'); i++) {
    try { bare = decodeURIComponent(bare); } catch { return true; }
  }
  const segs: string[] = [];
  for (let seg of bare.replace(/\\/g, '/').toLowerCase().split('/')) {
    const semi = seg.indexOf(';');
    if (semi >= 0) seg = seg.slice(0, semi);
    seg = seg.trim();
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segs.pop();
    else segs.push(seg);
  }
  const canonical = '/' + segs.join('/');
  const prefix = p.pathPrefix.toLowerCase();
  if (!canonical.startsWith(prefix)) return false;
  return Object.hasOwn(AI_ROUTES[p.api], canonical.slice(prefix.length));
}

/** A `model` parameter in the query of a recognised call: a server could read it instead of the body's (refused as ambiguous). */
export function queryNamesModel(path: string): boolean {
  const q = path.indexOf('?');
  if (q < 0) return false;
  for (const part of path.slice(q + 1).split(/[&;]/)) {
    const eq = part.indexOf('=');
    let name = eq >= 0 ? part.slice(0, eq) : part;
    try { name = decodeURIComponent(name.replace(/\+/g, ' ')); } catch { return true; }
    if (name.trim().toLowerCase() === 'model') return true;
  }
  return false;
}

export interface AIRequestFacts {
  operation: AIOperation;
  model: string;
  stream: boolean;
  /** the most completion tokens the request may produce (max tokens × choices); undefined when it sets none */
  maxTokens: number | undefined;
}

export type AIDenyCode = 'model_denied' | 'model_not_allowed' | 'streaming_denied' | 'max_tokens_exceeded' | 'max_tokens_required' | 'request_not_allowed';

export interface AIDecision {
  allowed: boolean;
  code?: AIDenyCode;
  message?: string;
  /** the part of the policy that decided (a denial), for flows and trace */
  path?: Path;
}

const ALLOWED: AIDecision = Object.freeze({ allowed: true });

/** The policy's verdict on one recognised request (budgets and rates are the proxy's, they need counts). */
export function decideAIRequest(p: CompiledAIPolicy, f: AIRequestFacts): AIDecision {
  for (let i = 0; i < p.deny.length; i++) {
    if (p.deny[i]!.matches(f.model)) {
      return { allowed: false, code: 'model_denied', message: `model "${f.model}" is denied by AIPolicy ${p.key} (${p.deny[i]!.text})`, path: ['spec', 'models', 'deny', i] };
    }
  }
  if (p.allow && !p.allow.some((m) => m.matches(f.model))) {
    return { allowed: false, code: 'model_not_allowed', message: `model "${f.model}" is not allowed by AIPolicy ${p.key}`, path: ['spec', 'models', 'allow'] };
  }
  if (f.stream && !p.streaming) {
    return { allowed: false, code: 'streaming_denied', message: `streaming is not allowed by AIPolicy ${p.key}`, path: ['spec', 'streaming'] };
  }
  if (p.maxTokensPerRequest !== undefined && f.operation !== 'embeddings') {
    if (f.maxTokens === undefined) {
      return { allowed: false, code: 'max_tokens_required', message: `AIPolicy ${p.key} requires a maximum of output tokens (at most ${p.maxTokensPerRequest})`, path: ['spec', 'maxTokensPerRequest'] };
    }
    if (f.maxTokens > p.maxTokensPerRequest) {
      return { allowed: false, code: 'max_tokens_exceeded', message: `up to ${f.maxTokens} output tokens requested; AIPolicy ${p.key} allows at most ${p.maxTokensPerRequest} per request`, path: ['spec', 'maxTokensPerRequest'] };
    }
  }
  return ALLOWED;
}

/**
 * The AIPolicies of a node, selected per endpoint. Selections are cached per endpoint label
 * array (the agent's records are stable objects); a new set starts a new cache.
 */
export class AIPolicySet {
  readonly policies: readonly CompiledAIPolicy[];
  readonly revision: number;
  private readonly byLabels = new WeakMap<readonly string[], CompiledAIPolicy[]>();
  private readonly hosts: ReadonlySet<string>;

  constructor(policies: readonly CompiledAIPolicy[], revision = 0) {
    this.policies = policies;
    this.revision = revision;
    this.hosts = new Set(policies.flatMap((p) => p.providers.flatMap((x) => x.hosts)));
  }

  get size(): number {
    return this.policies.length;
  }

  /** Whether any policy names this host (a cheap first test per request). */
  hasHost(host: string): boolean {
    return this.hosts.has(host);
  }

  /** The policies selecting an endpoint of `namespace` with `labels` (`source:key=value` strings). */
  forEndpoint(namespace: string, labels: readonly string[]): CompiledAIPolicy[] {
    let v = this.byLabels.get(labels);
    if (!v) {
      const set = LabelSet.parse(labels);
      v = this.policies.filter((p) => p.namespace === namespace && p.selector.matches(set));
      this.byLabels.set(labels, v);
    }
    return v;
  }

  /** The provider of `p` that serves one of `names` (normalised host names). */
  static provider(p: CompiledAIPolicy, names: readonly string[]): CompiledAIProvider | undefined {
    for (const x of p.providers) for (const n of names) if (x.hosts.includes(n)) return x;
    return undefined;
  }
}
