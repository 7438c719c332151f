/**
 * `matchName` / `matchPattern` → anchored regular expressions, exactly as Cilium's
 * matchpattern.Sanitize + ToAnchoredRegexp (spec policy.md §6.4):
 *
 *   `*` (or `**`, `*.`)  every name with ≥ 1 label, and the root `.`
 *   `*.cilium.io`        exactly one label before `.cilium.io.`
 *   `**.cilium.io`       one or more labels before `.cilium.io.`
 *   `sub*.cilium.io`     a run of `*` is zero or more label characters, never a dot
 *   `cilium.io`          literal; case-insensitive; trailing dot optional
 *
 * Names are matched in FQDN form: lower case with a trailing dot (`normalizeName`).
 *
 * The one home of these rules: policy validation (src/policy/translate), DNS-rule and SNI
 * decisions (src/policy/l7.ts), and toFQDNs selectors (name-manager.ts) all use this module.
 *
 * Compiled matchers are cached (LRU) by selector text, so policy updates that repeat selectors
 * compile nothing. The generated regex is run by V8's RegExp when that is provably linear (at
 * most one `*` run per label: every label then has a single way to match) and by RE2 otherwise
 * (`a*b*c*.com` would backtrack polynomially in V8).
 */
import { BoundedCache } from '../common/bounded-cache.ts';
import { RE2JS } from 're2js';
import { MembraneError } from '../common/errors.ts';
import type { FQDNSelector, PortRuleDNS } from '../api/types.ts';

const LABEL = '[-a-zA-Z0-9_]';
/** Regex of the pure wildcard: any name of one or more labels, or the root. */
export const ALL_NAMES_REGEX = `(^(${LABEL}+[.])+$)|(^[.]$)`;
/** Regex of a leading `**.`: one or more whole labels, then the dot. */
const SUBDOMAINS_REGEX = `(${LABEL}+([.]${LABEL}+){0,})[.]`;
const MAX_LENGTH = 255;
const PATTERN_CHARS = /^[-a-zA-Z0-9_.*]+$/;
const NAME_CHARS = /^[-a-zA-Z0-9_.]+$/;
const PURE_WILDCARD = /^\*+\.?$/;

/** Cilium's text for a bad matchPattern, or undefined when it is valid. */
export function matchPatternProblem(pattern: string): string | undefined {
  if (typeof pattern !== 'string') return 'matchPattern must be a string';
  const p = pattern.trim();
  if (p.length > MAX_LENGTH) return `Invalid MatchPattern: "${pattern}". Must be <= ${MAX_LENGTH} characters long.`;
  if (!PATTERN_CHARS.test(p)) {
    return `Invalid characters in MatchPattern: "${pattern}". Only 0-9, a-z, A-Z and ., -, _ and * characters are allowed`;
  }
  return undefined;
}

/** The problem with a matchName, or undefined when it is valid (the root `.` is valid). */
export function matchNameProblem(name: string): string | undefined {
  if (typeof name !== 'string') return 'matchName must be a string';
  const n = name.trim();
  if (n.length > MAX_LENGTH) return `Invalid MatchName: "${name}". Must be <= ${MAX_LENGTH} characters long.`;
  if (!NAME_CHARS.test(n) || n.includes('..') || (n.startsWith('.') && n !== '.')) {
    return `Invalid characters in MatchName: "${name}". Only 0-9, a-z, A-Z and ., -, _ characters are allowed`;
  }
  return undefined;
}

/** The form names are matched in: trimmed, lower case, trailing dot. */
export function normalizeName(name: string): string {
  let n = name;
  // Fast path for what the DNS decoder already produces (lower case, trailing dot).
  if (n.length > 0 && n.charCodeAt(n.length - 1) === 46 && !hasUpperOrSpace(n)) return n;
  n = n.trim().toLowerCase();
  return n.endsWith('.') ? n : `${n}.`;
}

function hasUpperOrSpace(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c >= 65 && c <= 90) || c <= 32) return true;
  }
  return false;
}

/** Trimmed, lower-cased pattern (Cilium's Sanitize); throws MembraneError when invalid. */
export function sanitizePattern(pattern: string): string {
  const problem = matchPatternProblem(pattern);
  if (problem) throw new MembraneError('FQDN_PATTERN_INVALID', problem, { hint: 'matchPattern allows a-z, 0-9, -, _, . and *; at most 255 characters' });
  return pattern.trim().toLowerCase();
}

function escapeLiteral(c: string): string {
  // Validation admits only [-a-z0-9_], so this never fires for checked input; it keeps an
  // unchecked caller from smuggling regex syntax into an anchored pattern.
  return /[-a-z0-9_]/.test(c) ? c : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** The anchored regex source of a matchPattern (§6.4). Throws on an invalid pattern. */
export function matchPatternToRegex(pattern: string): string {
  let p = sanitizePattern(pattern);
  if (PURE_WILDCARD.test(p)) return ALL_NAMES_REGEX;
  if (!p.endsWith('.')) p += '.';
  let out = '';
  const lead = /^\*{2,}\./.exec(p);
  if (lead) {
    out += SUBDOMAINS_REGEX;
    p = p.slice(lead[0].length);
  }
  for (let i = 0; i < p.length;) {
    const c = p[i]!;
    if (c === '.') {
      out += '[.]';
      i++;
    } else if (c === '*') {
      while (p[i] === '*') i++;
      out += `${LABEL}*`;
    } else {
      out += escapeLiteral(c);
      i++;
    }
  }
  return `^${out}$`;
}

/** The anchored regex source of a matchName: exact, case-insensitive, trailing dot optional. */
export function matchNameToRegex(name: string): string {
  const problem = matchNameProblem(name);
  if (problem) throw new MembraneError('FQDN_NAME_INVALID', problem, { hint: 'matchName allows a-z, 0-9, -, _ and .; at most 255 characters' });
  const n = normalizeName(name);
  if (n === '.') return '^[.]$';
  let out = '';
  for (const c of n) out += c === '.' ? '[.]' : escapeLiteral(c);
  return `^${out}$`;
}

export type NameMatcher = (normalizedName: string) => boolean;

/** Whether V8's backtracking engine runs this pattern in linear time (see file comment). */
function linearInV8(sanitized: string): boolean {
  if (PURE_WILDCARD.test(sanitized)) return true;
  const body = sanitized.replace(/^\*{2,}\./, '');
  for (const label of body.split('.')) {
    const runs = label.match(/\*+/g);
    if (runs && runs.length > 1) return false;
  }
  return true;
}

function compileRegex(source: string, v8: boolean): NameMatcher {
  if (v8) {
    const re = new RegExp(source);
    return (name) => re.test(name);
  }
  const re = RE2JS.compile(source);
  return (name) => re.test(name);
}

/** least recently used first out (`use` on a hit): a compiled RE2 program is costly to make again */
const cache = new BoundedCache<string, NameMatcher>(4096, 'oldest');

/** Compiled matcher of a matchPattern; the argument to the matcher must be `normalizeName`d. */
export function compileMatchPattern(pattern: string): NameMatcher {
  const key = `p:${pattern}`;
  let m = cache.use(key);
  if (!m) {
    const source = matchPatternToRegex(pattern);
    m = compileRegex(source, linearInV8(sanitizePattern(pattern)));
    cache.set(key, m);
  }
  return m;
}

/** Compiled matcher of a matchName (exact compare; no regex needed). */
export function compileMatchName(name: string): NameMatcher {
  const key = `n:${name}`;
  let m = cache.use(key);
  if (!m) {
    matchNameToRegex(name); // validates
    const want = normalizeName(name);
    m = (n) => n === want;
    cache.set(key, m);
  }
  return m;
}

const present = (v: string | null | undefined): v is string => v !== undefined && v !== null && v !== '';

/**
 * The problem with a toFQDNs or DNS-rule selector (exactly one of matchName/matchPattern, each
 * valid), with the field it is about; undefined when it is valid.
 */
export function selectorProblem(sel: FQDNSelector | PortRuleDNS | null | undefined): { field?: 'matchName' | 'matchPattern'; message: string } | undefined {
  const hasName = present(sel?.matchName);
  const hasPattern = present(sel?.matchPattern);
  if (hasName && hasPattern) return { message: 'only one of MatchName or MatchPattern is allowed in an FQDNSelector' };
  if (!hasName && !hasPattern) return { message: 'one of matchName or matchPattern is required' };
  const message = hasName ? matchNameProblem(sel!.matchName!) : matchPatternProblem(sel!.matchPattern!);
  return message ? { field: hasName ? 'matchName' : 'matchPattern', message } : undefined;
}

/** Compiled matcher of a toFQDNs or DNS-rule selector (exactly one of matchName/matchPattern). */
export function compileSelector(sel: FQDNSelector | PortRuleDNS): NameMatcher {
  const problem = selectorProblem(sel);
  if (problem) throw new MembraneError(problem.field ? (problem.field === 'matchName' ? 'FQDN_NAME_INVALID' : 'FQDN_PATTERN_INVALID') : 'FQDN_SELECTOR_INVALID', problem.message);
  if (present(sel.matchName)) return compileMatchName(sel.matchName);
  return compileMatchPattern(sel.matchPattern!);
}

const queryMatchers = new WeakMap<object, (qname: string) => boolean>();
const textMatchers = new BoundedCache<string, (qname: string) => boolean>(4096, 'oldest');

/**
 * queryMatcher for a bare name or pattern (a TLS serverName: `*` in it makes it a pattern),
 * cached by its text.
 */
export function nameOrPatternMatcher(text: string): (qname: string) => boolean {
  let m = textMatchers.use(text);
  if (!m) {
    m = queryMatcher(text.includes('*') ? { matchPattern: text } : { matchName: text });
    textMatchers.set(text, m);
  }
  return m;
}

/**
 * The matcher a policy decision uses (DNS rules, SNI): takes a query name as it comes (normalized
 * here), and never throws: import rejects invalid selectors, so one that slips through matches
 * nothing. Cached per selector object (policy selectors are frozen), so a decision only looks up.
 */
export function queryMatcher(sel: FQDNSelector | PortRuleDNS): (qname: string) => boolean {
  let m = queryMatchers.get(sel);
  if (!m) {
    let compiled: NameMatcher;
    try {
      compiled = compileSelector(sel);
      m = (q) => compiled(normalizeName(q));
    } catch {
      m = () => false;
    }
    queryMatchers.set(sel, m);
  }
  return m;
}

/** The regex source of a selector, for display (`membrane policy trace`, docs). */
export function selectorRegex(sel: FQDNSelector | PortRuleDNS): string {
  if (sel.matchName !== undefined && sel.matchName !== '') return matchNameToRegex(sel.matchName);
  return matchPatternToRegex(sel.matchPattern ?? '');
}

/**
 * The stable key of a selector: `fqdn:` label key of Cilium's FQDNSelector.IdentityLabel
 * (lower case, no trailing dot; the root stays `.`). Same text as identity/labels.ts
 * fqdnSelectorLabel, so a toFQDNs peer selects identities carrying `fqdn:<key>`.
 */
export function selectorKey(sel: FQDNSelector | PortRuleDNS): string {
  const raw = (sel.matchName !== undefined && sel.matchName !== '' ? sel.matchName : sel.matchPattern ?? '').trim().toLowerCase();
  return raw.length > 1 && raw.endsWith('.') ? raw.slice(0, -1) : raw;
}

/** One-off test of a name against a selector (tests, CLI); hot paths keep the compiled matcher. */
export function matchesSelector(sel: FQDNSelector | PortRuleDNS, name: string): boolean {
  return compileSelector(sel)(normalizeName(name));
}
