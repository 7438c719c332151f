/**
 * DNS name patterns (`matchName`, `matchPattern`) → anchored RE2 regular expressions, the
 * algorithm of Cilium's matchpattern.Sanitize + ToAnchoredRegexp (spec §6.4). Used by DNS rules
 * (the DNS proxy) and by toFQDNs selectors (the fqdn name manager).
 *
 *   `*.cilium.io`  → one label, then `.cilium.io.`     `**.cilium.io` → one or more labels
 *   `*`            → every name, root `.` included      `sub*.x`       → `*` stays within one label
 * Names are compared lower-cased with a trailing dot.
 */
import { RE2JS } from 're2js';
import type { FQDNSelector, PortRuleDNS } from '../api/types.ts';

const LABEL_CHARS = '[-a-zA-Z0-9_]';
const ALL_NAMES = `(^(${LABEL_CHARS}+[.])+$)|(^[.]$)`;
const SUBDOMAINS = `(${LABEL_CHARS}+([.]${LABEL_CHARS}+){0,})[.]`;

export const MATCH_PATTERN_RE = /^[-a-zA-Z0-9_*.]*$/;
export const MATCH_NAME_RE = /^([-a-zA-Z0-9_]+[.]?)+$/;

/** Problem with a matchPattern (Cilium's wording), or undefined. */
export function matchPatternProblem(p: string): string | undefined {
  if (typeof p !== 'string') return 'matchPattern must be a string';
  if (p.length > 255) return `Invalid MatchPattern: "${p}". Must be <= 255 characters long.`;
  if (!MATCH_PATTERN_RE.test(p.trim()) || p.trim() === '') {
    return `Invalid characters in MatchPattern: "${p}". Only 0-9, a-z, A-Z and ., -, _ and * characters are allowed`;
  }
  return undefined;
}

export function matchNameProblem(n: string): string | undefined {
  if (typeof n !== 'string') return 'matchName must be a string';
  if (n.length > 255) return `Invalid MatchName: "${n}". Must be <= 255 characters long.`;
  if (n.trim() === '.' ) return undefined;
  if (!MATCH_NAME_RE.test(n.trim())) {
    return `Invalid characters in MatchName: "${n}". Only 0-9, a-z, A-Z and . and - characters are allowed`;
  }
  return undefined;
}

/** Lower-case, trailing dot: the form query names are matched in. */
export function normalizeQueryName(name: string): string {
  const n = name.trim().toLowerCase();
  return n.endsWith('.') ? n : `${n}.`;
}

export function matchPatternToRegex(pattern: string): string {
  let p = pattern.trim().toLowerCase();
  if (/^\*+\.?$/.test(p)) return ALL_NAMES;
  if (!p.endsWith('.')) p += '.';
  let out = '';
  const lead = /^\*{2,}\./.exec(p);
  if (lead) {
    out += SUBDOMAINS;
    p = p.slice(lead[0].length);
  }
  for (let i = 0; i < p.length;) {
    const c = p[i]!;
    if (c === '.') { out += '[.]'; i++; }
    else if (c === '*') {
      while (p[i] === '*') i++;
      out += `${LABEL_CHARS}*`;
    } else { out += c; i++; }
  }
  return `^${out}$`;
}

export function matchNameToRegex(name: string): string {
  const n = normalizeQueryName(name);
  if (n === '.') return '^[.]$';
  return `^${n.replaceAll('.', '[.]')}$`;
}

export function dnsSelectorRegex(sel: PortRuleDNS | FQDNSelector): string {
  if (sel.matchName !== undefined && sel.matchName !== '') return matchNameToRegex(sel.matchName);
  return matchPatternToRegex(sel.matchPattern ?? '');
}

const compiled = new Map<string, RE2JS>();

/** A matcher for one selector; compiled once per distinct regex. */
export function compileDNSSelector(sel: PortRuleDNS | FQDNSelector): (qname: string) => boolean {
  const re = dnsSelectorRegex(sel);
  let r = compiled.get(re);
  if (!r) {
    try {
      r = RE2JS.compile(re);
    } catch {
      // Validation rejects such patterns on import; a decision path never throws.
      return () => false;
    }
    compiled.set(re, r);
  }
  const rr = r;
  return (qname: string) => rr.test(normalizeQueryName(qname));
}

/** Whether `qname` matches the selector (matchName or matchPattern). */
export function dnsNameMatches(sel: PortRuleDNS | FQDNSelector, qname: string): boolean {
  return compileDNSSelector(sel)(qname);
}
