/**
 * The shape checks of one resource: envelope (a mapping with a known kind and its apiVersion),
 * the kind's zod schema (schema.ts), metadata (names, namespaces, labels) and the rules the API
 * server enforces beyond the schema. The file loader (load.ts) and the agent API (requests.ts)
 * run the same checks, so a resource the CLI would reject is rejected by the agent too.
 */
import type { z } from 'zod';
import { KINDS, schemaFor, type KnownKind } from './schema.ts';
import type { Resource } from './types.ts';

export type YamlPath = (string | number)[];
/** Reports one problem at a path inside the resource. */
export type Add = (code: string, path: YamlPath, message: string, hint?: string) => void;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Cilium's CRD types `port` as a string; YAML users often write a number. */
export function normalizePorts(res: Resource): void {
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) { v.forEach(walk); return; }
    if (!isPlainObject(v)) return;
    if (Array.isArray(v.ports)) {
      for (const p of v.ports) if (isPlainObject(p) && typeof p.port === 'number') p.port = String(p.port);
    }
    for (const x of Object.values(v)) walk(x);
  };
  const r = res as unknown as Record<string, unknown>;
  walk(r.spec);
  walk(r.specs);
}

/** Keys of a Cilium rule (api.Rule): a list of mappings made of these is a rule list. */
const RULE_KEYS = new Set(['endpointSelector', 'nodeSelector', 'ingress', 'ingressDeny', 'egress', 'egressDeny', 'labels', 'description', 'enableDefaultDeny', 'log']);

/** A JSON/YAML list of Cilium rules, as `cilium-dbg policy import` takes (Cilium's examples/policies/*.json). */
export function isCiliumRuleList(v: unknown): boolean {
  const isRule = (r: unknown) => isPlainObject(r) && Object.keys(r).length > 0 && Object.keys(r).every((k) => RULE_KEYS.has(k));
  const selects = (r: unknown) => isPlainObject(r) && ('endpointSelector' in r || 'nodeSelector' in r);
  if (Array.isArray(v)) return v.length > 0 && v.every(isRule) && v.some(selects);
  return isRule(v) && selects(v); // one bare rule
}

/** Fields whose value is a string map: a null inside is a bad value, never an absent key. */
const STRING_MAPS = new Set(['matchLabels', 'labels', 'annotations', 'data', 'stringData', 'selector', 'nodeSelector']);

/**
 * An empty YAML value (`egress:`) is null; the API server treats a null field as absent (Go
 * decodes it as the zero value), so a mapping's null fields are dropped. Never inside lists
 * (`- ` stays an invalid element) nor inside string maps: `matchLabels: {app: }` must not turn
 * into a selector that matches more (the schema rejects the null instead).
 */
export function dropNullFields(v: unknown): void {
  if (Array.isArray(v)) { for (const x of v) if (x !== null) dropNullFields(x); return; }
  if (!isPlainObject(v)) return;
  for (const [k, x] of Object.entries(v)) {
    if (x === null) delete v[k];
    else if (!STRING_MAPS.has(k)) dropNullFields(x);
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks one resource's shape, reporting every problem through `add`; `what` names it in
 * messages ("document 2"). Returns its kind when kind and apiVersion are known (problems in the
 * rest may still have been reported), else undefined.
 */
export function checkResourceShape(value: unknown, what: string, add: Add): KnownKind | undefined {
  if (isCiliumRuleList(value)) {
    const many = Array.isArray(value);
    add(
      'API_CILIUM_RULE_LIST', [], `${what} is ${many ? 'a bare list of Cilium rules' : 'a bare Cilium rule'} (the \`cilium-dbg policy import\` format), not a resource`,
      `wrap it: apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: NAME, namespace: NAMESPACE}, ${many ? 'specs: <this list>' : 'spec: <this rule>'} (CiliumClusterwideNetworkPolicy for rules across namespaces)`,
    );
    return undefined;
  }
  if (!isPlainObject(value)) {
    add('API_DOCUMENT_INVALID', [], `${what} is not a mapping (found ${describe(value)})`, 'each document is one resource with apiVersion, kind and metadata');
    return undefined;
  }
  dropNullFields(value);
  const kind = value.kind;
  const apiVersion = value.apiVersion;
  if (typeof kind !== 'string' || kind === '') {
    add('API_KIND_MISSING', ['kind'], 'required field is missing', `kinds: ${Object.keys(KINDS).join(', ')}`);
    return undefined;
  }
  if (!(kind in KINDS)) {
    add('API_KIND_UNKNOWN', ['kind'], `unknown kind "${kind}"`, `membrane accepts: ${Object.keys(KINDS).join(', ')}`);
    return undefined;
  }
  const spec = KINDS[kind as KnownKind];
  if (apiVersion !== spec.apiVersion) {
    add(
      typeof apiVersion === 'string' ? 'API_VERSION_UNSUPPORTED' : 'API_VERSION_MISSING', ['apiVersion'],
      typeof apiVersion === 'string' ? `${kind} ${apiVersion} is not supported` : 'required field is missing',
      `use apiVersion: ${spec.apiVersion}`,
    );
  }
  const parsed = schemaFor(kind)!.safeParse(value, { reportInput: true });
  if (!parsed.success) {
    // kind and apiVersion were judged above (with a better hint): never reported twice.
    for (const zi of parsed.error.issues) {
      if (zi.path.length === 1 && (zi.path[0] === 'apiVersion' || zi.path[0] === 'kind')) continue;
      reportZodIssue(zi, add);
    }
  }
  const meta = isPlainObject(value.metadata) ? value.metadata : undefined;
  if (meta) checkMetadata(kind as KnownKind, meta, add);
  if (parsed.success) checkKindRules(kind as KnownKind, value, add);
  return kind as KnownKind;
}

export function reportZodIssue(zi: z.core.$ZodIssue, add: Add): void {
  const path = zi.path.filter((p): p is string | number => typeof p !== 'symbol');
  // Messages never repeat the path: every issue carries it and formatIssue prints it.
  switch (zi.code) {
    case 'unrecognized_keys':
      for (const k of zi.keys) add('API_FIELD_UNKNOWN', [...path, k], `unknown field "${k}"`, 'check the spelling and the indentation (a field may belong one level up or down)');
      return;
    case 'invalid_type': {
      const missing = (zi as { input?: unknown }).input === undefined;
      if (missing) add('API_FIELD_REQUIRED', path, `required field is missing (${article(zi.expected)})`);
      else add('API_FIELD_TYPE', path, `must be ${article(zi.expected)}, not ${describe((zi as { input?: unknown }).input)}`);
      return;
    }
    case 'invalid_union':
      add('API_FIELD_TYPE', path, 'has the wrong type', 'expected a string or a number');
      return;
    case 'invalid_value':
    case 'too_big':
    case 'too_small':
      add('API_FIELD_VALUE', path, zi.message);
      return;
    default:
      add('API_FIELD_INVALID', path, zi.message);
  }
}

function checkMetadata(kind: KnownKind, meta: Record<string, unknown>, add: Add): void {
  const name = meta.name;
  if (typeof name === 'string') {
    const re = kind === 'Namespace' || kind === 'Service' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
    const max = kind === 'Namespace' || kind === 'Service' ? 63 : 253;
    if (name === '') add('API_NAME_INVALID', ['metadata', 'name'], `${kind} must have name`);
    else if (name.length > max || !re.test(name)) {
      add('API_NAME_INVALID', ['metadata', 'name'], `invalid name "${name}"`, `lower-case letters, digits and '-'${re === DNS1123_SUBDOMAIN ? " or '.'" : ''}, starting and ending with a letter or digit, at most ${max} characters`);
    }
  }
  const ns = meta.namespace;
  if (typeof ns === 'string' && ns !== '' && (ns.length > 63 || !DNS1123_LABEL.test(ns))) {
    add('API_NAMESPACE_INVALID', ['metadata', 'namespace'], `invalid namespace "${ns}"`, "lower-case letters, digits and '-', at most 63 characters");
  }
  if (isPlainObject(meta.labels)) {
    for (const [k, v] of Object.entries(meta.labels)) {
      const problem = labelKeyProblem(k);
      if (problem) add('API_LABEL_INVALID', ['metadata', 'labels', k], `label key "${k}": ${problem}`);
      if (typeof v === 'string' && v !== '' && (v.length > 63 || !LABEL_NAME.test(v))) {
        add('API_LABEL_INVALID', ['metadata', 'labels', k], `label value "${v}" is invalid`, "at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit");
      }
    }
  }
}

function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : '';
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (slash >= 0 && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) return 'the prefix must be a DNS subdomain';
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) return "the name must be 1-63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit";
  return undefined;
}

/** Rules the API server enforces beyond the schema's shape. */
function checkKindRules(kind: KnownKind, obj: Record<string, unknown>, add: Add): void {
  const spec = obj.spec as Record<string, unknown> | undefined;
  if (kind === 'Pod' || kind === 'Deployment') {
    const podSpec = kind === 'Pod' ? spec : ((spec?.template as Record<string, unknown>)?.spec as Record<string, unknown>);
    const base: YamlPath = kind === 'Pod' ? ['spec'] : ['spec', 'template', 'spec'];
    const names = new Set<string>();
    ((podSpec?.containers as { name: string; ports?: { name?: string }[] }[]) ?? []).forEach((c, i) => {
      if (names.has(c.name)) add('API_CONTAINER_DUPLICATE', [...base, 'containers', i, 'name'], `container name "${c.name}" is used twice`);
      names.add(c.name);
      if (!DNS1123_LABEL.test(c.name)) add('API_NAME_INVALID', [...base, 'containers', i, 'name'], `invalid container name "${c.name}"`, "lower-case letters, digits and '-'");
      const portNames = new Set<string>();
      (c.ports ?? []).forEach((p, j) => {
        if (p.name === undefined) return;
        if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.name) || p.name.length > 15 || !/[a-z]/.test(p.name)) {
          add('API_PORT_NAME_INVALID', [...base, 'containers', i, 'ports', j, 'name'], `invalid port name "${p.name}"`, 'an IANA service name: at most 15 lower-case letters, digits and -, with at least one letter');
        } else if (portNames.has(p.name)) add('API_PORT_NAME_INVALID', [...base, 'containers', i, 'ports', j, 'name'], `port name "${p.name}" is used twice`);
        portNames.add(p.name);
      });
    });
  }
  if (kind === 'Deployment') {
    const selector = spec?.selector as { matchLabels?: Record<string, string>; matchExpressions?: unknown[] } | undefined;
    const labels = ((spec?.template as { metadata?: { labels?: Record<string, string> } })?.metadata?.labels) ?? {};
    const ml = selector?.matchLabels ?? {};
    if (Object.keys(ml).length === 0 && !(selector?.matchExpressions?.length)) {
      add('API_DEPLOYMENT_SELECTOR', ['spec', 'selector'], 'empty selector is invalid for a Deployment', 'set spec.selector.matchLabels to the template labels');
    } else if (Object.entries(ml).some(([k, v]) => labels[k] !== v)) {
      add('API_DEPLOYMENT_SELECTOR', ['spec', 'template', 'metadata', 'labels'], '`selector` does not match template `labels`', 'every spec.selector.matchLabels entry must be in spec.template.metadata.labels');
    }
  }
  if (kind === 'Secret') {
    const data = obj.data as Record<string, string> | undefined;
    for (const [k, v] of Object.entries(data ?? {})) {
      if (!BASE64.test(v.replace(/\s+/g, ''))) add('API_SECRET_DATA_INVALID', ['data', k], 'is not valid base64', 'put plain text under stringData instead');
    }
  }
  if (kind === 'Service') {
    const ports = (spec?.ports as { name?: string }[]) ?? [];
    if (ports.length > 1) ports.forEach((p, i) => { if (!p.name) add('API_FIELD_REQUIRED', ['spec', 'ports', i, 'name'], 'ports need names when a Service has more than one'); });
  }
}


function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string "${v.length > 40 ? v.slice(0, 40) + '…' : v}"`;
  return `${typeof v} ${String(v)}`;
}

function article(expected: string): string {
  switch (expected) {
    case 'object': case 'record': return 'a mapping';
    case 'array': return 'a list';
    case 'int': return 'an integer';
    default: return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
  }
}
