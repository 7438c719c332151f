/**
 * Label selectors (Kubernetes matchLabels + matchExpressions) over source-qualified labels,
 * compiled once into a matcher and a canonical key.
 *
 * Keys are `source:key`; a key without a source matches labels of that key from any source.
 * Operator semantics are exactly Kubernetes': In / NotIn / Exists / DoesNotExist, where NotIn and
 * DoesNotExist also match when the key is absent. All requirements are ANDed. The empty selector
 * matches every label set.
 */
import type { LabelSelector } from '../api/types.ts';
import { LabelSource, parseSourceKey, type LabelSet } from './labels.ts';

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface Requirement {
  readonly source: string;
  readonly key: string;
  readonly operator: SelectorOperator;
  /** sorted, deduplicated; empty for Exists/DoesNotExist */
  readonly values: readonly string[];
}

export interface CompiledSelector {
  /** Canonical text: equal selectors (in meaning, modulo ordering and In-vs-matchLabels) compare equal. */
  readonly key: string;
  readonly requirements: readonly Requirement[];
  /** No requirement at all: matches everything. */
  readonly isEmpty: boolean;
  matches(labels: LabelSet): boolean;
}

const OPS = new Set<SelectorOperator>(['In', 'NotIn', 'Exists', 'DoesNotExist']);

// Kubernetes label value syntax (CRD pattern in the Cilium CRDs), max 63.
const VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
// Qualified name: optional DNS-subdomain prefix and `/`, then a name of 1-63 chars.
const NAME_RE = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const PREFIX_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export interface SelectorProblem {
  path: (string | number)[];
  message: string;
}

function keyProblem(key: string): string | undefined {
  if (key === '') return 'label key must not be empty';
  const slash = key.lastIndexOf('/');
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const prefix = slash >= 0 ? key.slice(0, slash) : '';
  if (slash >= 0 && (prefix.length === 0 || prefix.length > 253 || !PREFIX_RE.test(prefix.toLowerCase()))) {
    return `invalid label key "${key}": prefix must be a DNS subdomain`;
  }
  if (name.length > 63 || !NAME_RE.test(name)) {
    return `invalid label key "${key}": name must be 63 characters or less, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character`;
  }
  return undefined;
}

function valueProblem(v: string): string | undefined {
  if (v.length > 63 || !VALUE_RE.test(v)) {
    return `invalid label value "${v}": must be 63 characters or less, empty or alphanumeric with '-', '_' or '.' inside`;
  }
  return undefined;
}

/**
 * Every problem of a selector, with paths relative to the selector. Keys may carry a source
 * (`k8s:app`); the part after the source is checked as a Kubernetes qualified name, except for
 * sources whose keys are not Kubernetes names (cidr, fqdn, reserved).
 */
export function validateSelector(sel: LabelSelector | undefined | null): SelectorProblem[] {
  const out: SelectorProblem[] = [];
  if (sel === undefined || sel === null) return out;
  if (typeof sel !== 'object' || Array.isArray(sel)) return [{ path: [], message: 'invalid label selector: must be an object' }];
  if (sel.matchLabels !== undefined && sel.matchLabels !== null && (typeof sel.matchLabels !== 'object' || Array.isArray(sel.matchLabels))) {
    return [{ path: ['matchLabels'], message: 'invalid label selector: matchLabels must be a map' }];
  }
  if (sel.matchExpressions !== undefined && sel.matchExpressions !== null && !Array.isArray(sel.matchExpressions)) {
    return [{ path: ['matchExpressions'], message: 'invalid label selector: matchExpressions must be a list' }];
  }
  const checkKey = (raw: string, path: (string | number)[]) => {
    const { source, key } = parseSourceKey(raw);
    if (source === LabelSource.cidr || source === LabelSource.fqdn || source === LabelSource.reserved) {
      if (key === '') out.push({ path, message: 'invalid label selector: empty key' });
      return;
    }
    const p = keyProblem(key);
    if (p) out.push({ path, message: `invalid label selector: ${p}` });
  };
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) {
    checkKey(k, ['matchLabels', k]);
    if (typeof v !== 'string') out.push({ path: ['matchLabels', k], message: 'invalid label selector: value must be a string' });
    else {
      const p = valueProblem(v);
      if (p) out.push({ path: ['matchLabels', k], message: `invalid label selector: ${p}` });
    }
  }
  (sel.matchExpressions ?? []).forEach((e, i) => {
    if (!e || typeof e.key !== 'string') {
      out.push({ path: ['matchExpressions', i, 'key'], message: 'invalid label selector: key is required' });
      return;
    }
    checkKey(e.key, ['matchExpressions', i, 'key']);
    if (!OPS.has(e.operator)) {
      out.push({ path: ['matchExpressions', i, 'operator'], message: `invalid label selector: "${show(e.operator)}" is not a valid label selector operator` });
      return;
    }
    if (e.values !== undefined && e.values !== null && !Array.isArray(e.values)) {
      out.push({ path: ['matchExpressions', i, 'values'], message: 'invalid label selector: values must be a list' });
      return;
    }
    const values = e.values ?? [];
    if ((e.operator === 'In' || e.operator === 'NotIn') && values.length === 0) {
      out.push({ path: ['matchExpressions', i, 'values'], message: `invalid label selector: values: Required value: must be specified when \`operator\` is '${e.operator}'` });
    }
    if ((e.operator === 'Exists' || e.operator === 'DoesNotExist') && values.length > 0) {
      out.push({ path: ['matchExpressions', i, 'values'], message: `invalid label selector: values: Forbidden: may not be specified when \`operator\` is '${e.operator}'` });
    }
    values.forEach((v, j) => {
      const p = typeof v === 'string' ? valueProblem(v) : 'value must be a string';
      if (p) out.push({ path: ['matchExpressions', i, 'values', j], message: `invalid label selector: ${p}` });
    });
  });
  return out;
}

/** Text of an arbitrary value for a message (never throws). */
export function show(v: unknown): string {
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

export function requirement(rawKey: string, operator: SelectorOperator, values: readonly string[] = [], defaultSource: string = LabelSource.any): Requirement {
  const { source, key } = parseSourceKey(rawKey, defaultSource);
  const vs = operator === 'In' || operator === 'NotIn' ? [...new Set(values)].sort() : [];
  return Object.freeze({ source, key, operator, values: Object.freeze(vs) });
}

/** The requirements of a LabelSelector, keys parsed with `defaultSource` when they carry none. */
export function selectorRequirements(sel: LabelSelector | undefined, defaultSource: string = LabelSource.any): Requirement[] {
  const out: Requirement[] = [];
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) out.push(requirement(k, 'In', [v], defaultSource));
  for (const e of sel?.matchExpressions ?? []) out.push(requirement(e.key, e.operator, e.values ?? [], defaultSource));
  return out;
}

export function requirementString(r: Requirement): string {
  const k = `${r.source}:${r.key}`;
  switch (r.operator) {
    case 'In': return r.values.length === 1 ? `${k}=${r.values[0]}` : `${k} in (${r.values.join(',')})`;
    case 'NotIn': return `${k} notin (${r.values.join(',')})`;
    case 'Exists': return k;
    case 'DoesNotExist': return `!${k}`;
  }
}

function compileRequirement(r: Requirement): (ls: LabelSet) => boolean {
  const { source, key } = r;
  const any = source === LabelSource.any;
  const values = new Set(r.values);
  // Candidates: labels with this key from the requested source (or any source).
  const found = (ls: LabelSet, pred?: (v: string) => boolean): boolean => {
    for (const l of ls.byKey(key)) {
      if (!any && l.source !== source) continue;
      if (!pred || pred(l.value)) return true;
    }
    return false;
  };
  switch (r.operator) {
    case 'In': return (ls) => found(ls, (v) => values.has(v));
    case 'NotIn': return (ls) => !found(ls, (v) => values.has(v));
    case 'Exists': return (ls) => found(ls);
    case 'DoesNotExist': return (ls) => !found(ls);
  }
}

/** Compiles requirements (already validated) into a matcher with a canonical key. */
export function compileRequirements(reqs: Iterable<Requirement>): CompiledSelector {
  const byText = new Map<string, Requirement>();
  for (const r of reqs) byText.set(requirementString(r), r);
  const texts = [...byText.keys()].sort();
  const requirements = Object.freeze(texts.map((t) => byText.get(t)!));
  const tests = requirements.map(compileRequirement);
  const n = tests.length;
  const matches = n === 0
    ? () => true
    : n === 1
      ? tests[0]!
      : (ls: LabelSet) => {
          for (let i = 0; i < n; i++) if (!tests[i]!(ls)) return false;
          return true;
        };
  return Object.freeze({ key: `{${texts.join(',')}}`, requirements, isEmpty: n === 0, matches });
}

/** Compiles a LabelSelector. Call `validateSelector` first for user input. */
export function compileSelector(sel: LabelSelector | undefined, defaultSource: string = LabelSource.any): CompiledSelector {
  return compileRequirements(selectorRequirements(sel, defaultSource));
}
