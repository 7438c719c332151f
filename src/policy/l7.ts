/**
 * L7 decisions for the proxies, per request: HTTP (method/path/host as RE2 full-string matches,
 * headers, headerMatches — spec §3.4), DNS query names (§3.5) and TLS SNI (§3.7).
 *
 * A request from remote identity X is allowed iff some perSelector entry whose identities hold X
 * has no L7 restriction (`null`: wildcarded by an L4-only rule) or has a rule that matches.
 * Regular expressions are compiled once per rule object and cached; decisions never throw.
 */
import { RE2JS } from 're2js';
import type { PortRuleDNS, PortRuleHTTP } from '../api/types.ts';
import type { L7Policy, RuleOrigin } from './types.ts';
import { nameOrPatternMatcher, queryMatcher } from '../fqdn/matchpattern.ts';

export interface HTTPRequest {
  method: string;
  /** `:path`, query string included */
  path: string;
  /** `:authority` / Host, with `:port` if the client sent one */
  host: string;
  /** header name → value(s); names are matched case-insensitively */
  headers?: Record<string, string | string[] | undefined>;
}

export type HeaderAction =
  | { action: 'LOG'; name: string; value: string }
  | { action: 'ADD'; name: string; value: string }
  | { action: 'DELETE'; name: string; value: string }
  | { action: 'REPLACE'; name: string; value: string };

export interface L7Verdict {
  allowed: boolean;
  /** selector (display form) of the entry that allowed it */
  selector?: string;
  /** index of the matching rule in that entry's list; -1 when the entry has no L7 restriction */
  ruleIndex?: number;
  rule?: PortRuleHTTP | PortRuleDNS | string | null;
  origins?: RuleOrigin[];
  /** headerMatches mismatch actions the proxy must carry out (LOG/ADD/DELETE/REPLACE) */
  headerActions?: HeaderAction[];
}

export interface L7Options {
  /** Resolves headerMatches[].secret to its single value; missing ⇒ the match fails unless `value` is set. */
  secret?: (name: string, namespace: string | undefined) => string | undefined;
}

interface CompiledHTTP {
  method?: RE2JS;
  path?: RE2JS;
  host?: RE2JS;
  headers: { name: string; value?: string }[];
  matches: { name: string; value?: string; secret?: { name: string; namespace?: string }; mismatch?: HeaderAction['action'] }[];
  /** a rule with an invalid regex (cannot pass validation) never matches */
  broken: boolean;
}

const compiledHTTP = new WeakMap<PortRuleHTTP, CompiledHTTP>();

function re(s: string | undefined): RE2JS | undefined {
  return s === undefined || s === '' ? undefined : RE2JS.compile(s);
}

export function compileHTTPRule(rule: PortRuleHTTP): CompiledHTTP {
  let c = compiledHTTP.get(rule);
  if (c) return c;
  try {
    c = {
      method: re(rule.method), path: re(rule.path), host: re(rule.host), broken: false,
      headers: (rule.headers ?? []).map((h) => {
        // "Name" ⇒ must be present; "Name: value" ⇒ exact value (split at the first space).
        const sp = h.indexOf(' ');
        const name = (sp < 0 ? h : h.slice(0, sp)).replace(/:+$/, '').toLowerCase();
        return sp < 0 ? { name } : { name, value: h.slice(sp + 1).trim() };
      }),
      matches: (rule.headerMatches ?? []).map((m) => ({
        name: m.name.toLowerCase(),
        ...(m.value !== undefined ? { value: m.value } : {}),
        ...(m.secret ? { secret: m.secret } : {}),
        ...(m.mismatch ? { mismatch: m.mismatch } : {}),
      })),
    };
  } catch {
    c = { headers: [], matches: [], broken: true };
  }
  compiledHTTP.set(rule, c);
  return c;
}

function headerValues(req: HTTPRequest, name: string): string[] {
  const h = req.headers;
  if (!h) return [];
  for (const k in h) {
    if (k.toLowerCase() !== name) continue;
    const v = h[k];
    if (v === undefined) return [];
    return Array.isArray(v) ? v : [v];
  }
  return [];
}

/** Whether one HTTP rule matches; `actions` collects mismatch actions of headerMatches. */
export function httpRuleMatches(rule: PortRuleHTTP, req: HTTPRequest, opts: L7Options = {}, actions?: HeaderAction[]): boolean {
  const c = compileHTTPRule(rule);
  if (c.broken) return false;
  if (c.method && !c.method.testExact(req.method)) return false;
  if (c.path && !c.path.testExact(req.path)) return false;
  if (c.host && !c.host.testExact(req.host)) return false;
  for (const h of c.headers) {
    const vs = headerValues(req, h.name);
    if (vs.length === 0) return false;
    if (h.value !== undefined && !vs.includes(h.value)) return false;
  }
  const pending: HeaderAction[] = [];
  for (const m of c.matches) {
    let want = m.value;
    if (want === undefined && m.secret) {
      want = opts.secret?.(m.secret.name, m.secret.namespace);
      if (want === undefined) return false; // secret missing and no value: never matches
    }
    const vs = headerValues(req, m.name);
    const ok = want === undefined ? vs.length > 0 : vs.includes(want);
    if (ok) continue;
    if (!m.mismatch) return false;
    pending.push({ action: m.mismatch, name: m.name, value: want ?? '' });
  }
  actions?.push(...pending);
  return true;
}

function applies(e: L7Policy['perSelector'][number], identity: number): boolean {
  return e.identities === 'all' || e.identities.has(identity);
}

/** The HTTP decision of an L7 policy for a request from `remoteIdentity`. */
export function decideHTTP(policy: L7Policy, remoteIdentity: number, req: HTTPRequest, opts: L7Options = {}): L7Verdict {
  for (const e of policy.perSelector) {
    if (!applies(e, remoteIdentity)) continue;
    if (e.http === null || e.http === undefined) return { allowed: true, selector: e.selector, ruleIndex: -1, rule: null, origins: e.origins };
    for (let i = 0; i < e.http.length; i++) {
      const actions: HeaderAction[] = [];
      if (httpRuleMatches(e.http[i]!, req, opts, actions)) {
        return { allowed: true, selector: e.selector, ruleIndex: i, rule: e.http[i]!, origins: e.origins, ...(actions.length ? { headerActions: actions } : {}) };
      }
    }
  }
  return { allowed: false };
}

/** The DNS decision for a query name (lower-cased, trailing dot optional). */
export function decideDNS(policy: L7Policy, remoteIdentity: number, qname: string): L7Verdict {
  for (const e of policy.perSelector) {
    if (!applies(e, remoteIdentity)) continue;
    if (e.dns === null || e.dns === undefined) return { allowed: true, selector: e.selector, ruleIndex: -1, rule: null, origins: e.origins };
    for (let i = 0; i < e.dns.length; i++) {
      if (queryMatcher(e.dns[i]!)(qname)) return { allowed: true, selector: e.selector, ruleIndex: i, rule: e.dns[i]!, origins: e.origins };
    }
  }
  return { allowed: false };
}

/**
 * The TLS decision for a ClientHello's SNI: allowed iff some applicable entry has no
 * serverNames restriction or lists a matching name (`*.x` one label, `**.x` any depth).
 */
export function decideSNI(policy: L7Policy, remoteIdentity: number, sni: string | undefined): L7Verdict {
  for (const e of policy.perSelector) {
    if (!applies(e, remoteIdentity)) continue;
    if (!e.serverNames) return { allowed: true, selector: e.selector, ruleIndex: -1, rule: null, origins: e.origins };
    if (sni === undefined || sni === '') continue;
    for (let i = 0; i < e.serverNames.length; i++) {
      const pat = e.serverNames[i]!;
      if (nameOrPatternMatcher(pat)(sni)) return { allowed: true, selector: e.selector, ruleIndex: i, rule: pat, origins: e.origins };
    }
  }
  return { allowed: false };
}
