/**
 * Loading resources from YAML/JSON files, directories and stdin.
 *
 *   text ──yaml.parseAllDocuments──► documents ──(kind List → items)──► objects
 *        ──envelope checks + zod schema──► shape issues
 *        ──policy translation (per policy, with locate)──► semantic issues
 *
 * Every problem of the input is collected (never the first one only), each with a stable code,
 * its YAML path and line:col. Callers treat any issue as "change nothing". The loader never
 * throws on bad content; it throws only for I/O it cannot report against a line (it reports a
 * missing file as an issue too, so `validate a.yaml missing.yaml` lists both).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments, isMap, isSeq, isScalar, isPair, type Node, type Document } from 'yaml';
import type { z } from 'zod';
import type { Issue, SourceRef } from '../errors.ts';
import type { AIPolicy, PolicyResource, Resource } from './types.ts';
import { resourceKey } from './types.ts';
import { KINDS, schemaFor, type KnownKind } from './schema.ts';
import { translatePolicy } from '../policy/translate.ts';
import { translateAIPolicy } from '../policy/ai.ts';

export type YamlPath = (string | number)[];
export type Locator = (resource: object, path: YamlPath) => { line: number; col: number } | undefined;

export interface LoadResult {
  resources: Resource[];
  issues: Issue[];
  /** line:col of a path inside a loaded resource (for policy trace and rule origins). */
  locate: Locator;
}

export interface LoadOptions {
  /** Also run the policy translator on each policy (default true). */
  semantic?: boolean;
  /** Refuse files larger than this (default 8 MiB). */
  maxBytes?: number;
}

const YAML_EXT = /\.(ya?ml|json)$/i;
const DEFAULT_MAX_BYTES = 8 * 1024 * 1024;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Where each loaded object's document lives, so any path inside it can be located later. */
interface Origin {
  root: Node | null;
  lines: LineCounter;
}
const origins = new WeakMap<object, Origin>();

export const locate: Locator = (resource, path) => {
  const o = origins.get(resource);
  if (!o) return undefined;
  return positionOf(o, path);
};

function positionOf(o: Origin, path: YamlPath): { line: number; col: number } | undefined {
  // Walk as deep as the document goes; a missing field points at its nearest present parent.
  let node: Node | null = o.root;
  let best: number | undefined = node?.range?.[0];
  for (const seg of path) {
    if (!node) break;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      const key = pair.key as Node;
      best = key.range?.[0] ?? best;
      node = (pair.value as Node | null) ?? null;
      if (node?.range && !isMap(node) && !isSeq(node)) best = node.range[0];
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as Node | undefined;
      if (!item) break;
      node = item;
      best = item.range?.[0] ?? best;
    } else break;
  }
  if (best === undefined) return undefined;
  return o.lines.linePos(best);
}

/** Loads several paths as one input: a resource defined twice anywhere in it is reported. */
export async function loadPaths(paths: readonly string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const seen = new Map<string, SourceRef>();
  const resources: Resource[] = [];
  const issues: Issue[] = [];
  for (const p of paths) {
    const r = await loadPath(p, { ...opts, seen });
    resources.push(...r.resources);
    issues.push(...r.issues);
  }
  return { resources, issues, locate };
}

/** Loads a file, a directory (its .yaml/.yml/.json files, recursively, in name order) or `-`. */
export async function loadPath(path: string, opts: LoadOptions & { seen?: Map<string, SourceRef> } = {}): Promise<LoadResult> {
  const issues: Issue[] = [];
  const resources: Resource[] = [];
  const files: { file: string; text?: string }[] = [];
  if (path === '-') {
    files.push({ file: '<stdin>', text: await readStdin() });
  } else {
    try {
      const st = await stat(path);
      if (st.isDirectory()) {
        for (const f of await listYaml(path)) files.push({ file: f });
        if (files.length === 0) {
          issues.push({ code: 'API_DIR_EMPTY', message: `no .yaml, .yml or .json files in ${path}`, path: [], file: path, line: 0, col: 0, hint: 'give a file or a directory holding manifests' });
        }
      } else files.push({ file: path });
    } catch (e) {
      issues.push({
        code: 'API_FILE_NOT_FOUND', message: `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        path: [], file: path, line: 0, col: 0, hint: 'check the path (use - for stdin)',
      });
    }
  }
  const seen = opts.seen ?? new Map<string, SourceRef>();
  for (const f of files) {
    let text = f.text;
    if (text === undefined) {
      try {
        const st = await stat(f.file);
        const max = opts.maxBytes ?? DEFAULT_MAX_BYTES;
        if (st.size > max) {
          issues.push({ code: 'API_FILE_TOO_LARGE', message: `${f.file} is ${st.size} bytes, more than ${max}`, path: [], file: f.file, line: 0, col: 0, hint: 'split the manifests into several files' });
          continue;
        }
        text = await readFile(f.file, 'utf8');
      } catch (e) {
        issues.push({ code: 'API_FILE_NOT_FOUND', message: `cannot read ${f.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, path: [], file: f.file, line: 0, col: 0 });
        continue;
      }
    }
    const r = loadText(text, f.file, { ...opts, seen });
    resources.push(...r.resources);
    issues.push(...r.issues);
  }
  issues.sort(byPosition);
  return { resources, issues, locate };
}

function byPosition(a: Issue, b: Issue): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.col - b.col;
}

async function listYaml(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (YAML_EXT.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Loads the documents of one text. Never throws: whatever the input, the result is resources
 * (only those without any issue) and issues.
 */
export function loadText(text: string, file: string, opts: LoadOptions & { seen?: Map<string, SourceRef> } = {}): LoadResult {
  const issues: Issue[] = [];
  const resources: Resource[] = [];
  const seen = opts.seen ?? new Map<string, SourceRef>();
  const lines = new LineCounter();
  let docs: Document.Parsed[];
  try {
    docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true }) as Document.Parsed[];
    if (!Array.isArray(docs)) docs = [docs as unknown as Document.Parsed];
  } catch (e) {
    issues.push({ code: 'API_YAML_SYNTAX', message: (e as Error).message, path: [], file, line: 1, col: 1 });
    return { resources, issues, locate };
  }
  docs.forEach((doc, docIndex) => {
    const at = (offset: number | undefined) => (offset === undefined ? { line: 1, col: 1 } : lines.linePos(offset));
    if (doc.errors.length) {
      for (const err of doc.errors) {
        const p = at(err.pos?.[0]);
        issues.push({
          code: 'API_YAML_SYNTAX', message: firstLine(err.message), path: [], file, ...p,
          hint: err.code === 'DUPLICATE_KEY' ? 'a key may appear only once in a mapping' : 'fix the YAML syntax (indentation, quoting, colons)',
        });
      }
      return;
    }
    const root = doc.contents as Node | null;
    if (root === null || (isScalar(root) && (root.value === null || root.value === undefined))) return; // empty document
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 50 });
    } catch (e) {
      issues.push({ code: 'API_YAML_SYNTAX', message: firstLine((e as Error).message), path: [], file, ...at(root.range?.[0]), hint: 'aliases may expand at most 50 times' });
      return;
    }
    const origin: Origin = { root, lines };
    const docSource = { file, ...at(root.range?.[0]) };
    if (isPlainObject(value) && value.kind === 'List' && Array.isArray(value.items)) {
      const items = value.items as unknown[];
      const itemNodes = isMap(root) ? (root.get('items', true) as Node | undefined) : undefined;
      items.forEach((item, i) => {
        const node = itemNodes && isSeq(itemNodes) ? (itemNodes.items[i] as Node) : null;
        const o: Origin = { root: node, lines };
        const src = { file, ...at(node?.range?.[0] ?? root.range?.[0]) };
        checkObject(item, o, src, docIndex, issues, resources, seen, opts);
      });
      return;
    }
    checkObject(value, origin, docSource, docIndex, issues, resources, seen, opts);
  });
  return { resources, issues, locate };
}

function checkObject(
  value: unknown, origin: Origin, source: SourceRef, docIndex: number,
  issues: Issue[], resources: Resource[], seen: Map<string, SourceRef>, opts: LoadOptions,
): void {
  const before = issues.length;
  const add = (code: string, path: YamlPath, message: string, hint?: string) => {
    const p = positionOf(origin, path) ?? { line: source.line, col: source.col };
    issues.push({ code, message, path, file: source.file, line: p.line, col: p.col, ...(hint ? { hint } : {}) });
  };
  if (!isPlainObject(value)) {
    add('API_DOCUMENT_INVALID', [], `document ${docIndex + 1} is not a mapping (found ${describe(value)})`, 'each document is one resource with apiVersion, kind and metadata');
    return;
  }
  const kind = value.kind;
  const apiVersion = value.apiVersion;
  if (typeof kind !== 'string' || kind === '') {
    add('API_KIND_MISSING', ['kind'], 'kind is required', `kinds: ${Object.keys(KINDS).join(', ')}`);
    return;
  }
  if (!(kind in KINDS)) {
    add('API_KIND_UNKNOWN', ['kind'], `unknown kind "${kind}"`, `membrane accepts: ${Object.keys(KINDS).join(', ')}`);
    return;
  }
  const spec = KINDS[kind as KnownKind];
  if (apiVersion !== spec.apiVersion) {
    add(
      typeof apiVersion === 'string' ? 'API_VERSION_UNSUPPORTED' : 'API_VERSION_MISSING', ['apiVersion'],
      typeof apiVersion === 'string' ? `${kind} ${apiVersion} is not supported` : 'apiVersion is required',
      `use apiVersion: ${spec.apiVersion}`,
    );
  }
  const parsed = schemaFor(kind)!.safeParse(value);
  if (!parsed.success) {
    for (const zi of parsed.error.issues) reportZodIssue(zi, add);
  }
  const meta = isPlainObject(value.metadata) ? value.metadata : undefined;
  if (meta) checkMetadata(kind as KnownKind, meta, add);
  if (parsed.success) checkKindRules(kind as KnownKind, value, add);
  const isPolicy = kind === 'CiliumNetworkPolicy' || kind === 'CiliumClusterwideNetworkPolicy' || kind === 'NetworkPolicy';
  if (issues.length > before) {
    // Still report the policy's semantic problems, except under paths already reported: all
    // errors of a file at once, none twice.
    if (isPolicy && opts.semantic !== false && isPlainObject(value.metadata)) {
      const shapePaths = issues.slice(before).map((i) => i.path.join('\u0000') + '\u0000');
      const copy = structuredClone(value) as unknown as Resource;
      normalizePorts(copy);
      Object.defineProperty(copy, 'source', { value: source, enumerable: true });
      origins.set(copy, origin);
      for (const si of translatePolicy(copy as PolicyResource, { locate: (r, p) => locate(r, p) }).issues) {
        const sp = si.path.join('\u0000') + '\u0000';
        if (!shapePaths.some((p) => sp.startsWith(p) || p.startsWith(sp))) issues.push(si);
      }
    }
    return;
  }

  const resource = value as unknown as Resource;
  const metadata = resource.metadata;
  if (spec.namespaced) metadata.namespace = metadata.namespace || 'default';
  else delete metadata.namespace;
  if (kind === 'CiliumNetworkPolicy' || kind === 'CiliumClusterwideNetworkPolicy') normalizePorts(resource);
  Object.defineProperty(resource, 'source', { value: source, enumerable: true, writable: true, configurable: true });
  origins.set(resource, origin);

  const key = resourceKey(resource);
  const prev = seen.get(key);
  if (prev) {
    add('API_DUPLICATE', ['metadata', 'name'], `${kind} ${metadata.namespace ? metadata.namespace + '/' : ''}${metadata.name} is also defined at ${prev.file}:${prev.line}`, 'each resource may appear once per apply');
    return;
  }
  seen.set(key, source);

  if (opts.semantic !== false && isPolicy) {
    const t = translatePolicy(resource as PolicyResource, { locate: (r, p) => locate(r, p) });
    if (t.issues.length) {
      issues.push(...t.issues);
      return;
    }
  }
  if (opts.semantic !== false && kind === 'AIPolicy') {
    const t = translateAIPolicy(resource as AIPolicy, { locate: (r, p) => locate(r, p) });
    if (t.issues.length) {
      issues.push(...t.issues);
      return;
    }
  }
  resources.push(resource);
}

type Add = (code: string, path: YamlPath, message: string, hint?: string) => void;

function reportZodIssue(zi: z.core.$ZodIssue, add: Add): void {
  const path = zi.path.filter((p): p is string | number => typeof p !== 'symbol');
  switch (zi.code) {
    case 'unrecognized_keys':
      for (const k of zi.keys) add('API_FIELD_UNKNOWN', [...path, k], `unknown field "${k}"`, 'check the spelling and the indentation (a field may belong one level up or down)');
      return;
    case 'invalid_type': {
      const missing = (zi as { input?: unknown }).input === undefined;
      if (missing) add('API_FIELD_REQUIRED', path, `${pathText(path)} is required`);
      else add('API_FIELD_TYPE', path, `${pathText(path)} must be ${article(zi.expected)}, not ${describe((zi as { input?: unknown }).input)}`);
      return;
    }
    case 'invalid_union':
      add('API_FIELD_TYPE', path, `${pathText(path)} has the wrong type`, 'expected a string or a number');
      return;
    case 'invalid_value':
      add('API_FIELD_VALUE', path, `${pathText(path)}: ${zi.message}`);
      return;
    case 'too_big':
    case 'too_small':
      add('API_FIELD_VALUE', path, `${pathText(path)}: ${zi.message}`);
      return;
    default:
      add('API_FIELD_INVALID', path, `${pathText(path)}: ${zi.message}`);
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
      if (!BASE64.test(v.replace(/\s+/g, ''))) add('API_SECRET_DATA_INVALID', ['data', k], `data.${k} is not valid base64`, 'put plain text under stringData instead');
    }
  }
  if (kind === 'Service') {
    const ports = (spec?.ports as { name?: string }[]) ?? [];
    if (ports.length > 1) ports.forEach((p, i) => { if (!p.name) add('API_FIELD_REQUIRED', ['spec', 'ports', i, 'name'], 'ports need names when a Service has more than one'); });
  }
}

/** Cilium's CRD types `port` as a string; YAML users often write a number. */
function normalizePorts(res: Resource): void {
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

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
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
    case 'object': return 'a mapping';
    case 'array': return 'a list';
    case 'int': return 'an integer';
    default: return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
  }
}

function pathText(path: YamlPath): string {
  if (path.length === 0) return 'the document';
  return path.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}
