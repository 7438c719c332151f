/**
 * Loading resources from YAML/JSON files, directories and stdin.
 *
 *   text ──yaml.parseAllDocuments──► documents ──(kind List → items)──► objects
 *        ──envelope checks + zod schema──► shape issues
 *        ──the caller's policy check (per policy, with locate)──► semantic issues
 *
 * The semantic check is the policy layer's (src/policy/check.ts): api sits below policy, so the
 * caller hands it in (`LoadOptions.policyCheck`) and loading alone checks shapes only.
 *
 * Every problem of the input is collected (never the first one only), each with a stable code,
 * its YAML path and line:col. Callers treat any issue as "change nothing". The loader never
 * throws on bad content; it throws only for I/O it cannot report against a line (it reports a
 * missing file as an issue too, so `validate a.yaml missing.yaml` lists both).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, parseAllDocuments, isMap, isSeq, isScalar, isPair, type Node, type Document } from 'yaml';
import type { Issue, SourceRef } from '../common/errors.ts';
import type { PolicyResource, Resource } from './types.ts';
import { resourceKey } from './types.ts';
import { checkResourceShape, isPlainObject, normalizePorts, type YamlPath } from './validate.ts';
import { KINDS } from './schema.ts';

export type Locator = (resource: object, path: YamlPath) => { line: number; col: number } | undefined;

export interface LoadResult {
  resources: Resource[];
  issues: Issue[];
  /** line:col of a path inside a loaded resource (for policy trace and rule origins). */
  locate: Locator;
}

/** Semantic problems of one policy (every issue at its YAML path, located with `locate`). */
export type PolicyCheck = (policy: PolicyResource, locate: Locator) => Issue[];

export interface LoadOptions {
  /** Runs on each policy after its shape checks (src/policy/check.ts); without it, shapes only. */
  policyCheck?: PolicyCheck;
  /** Refuse files larger than this (default 8 MiB). */
  maxBytes?: number;
}

const YAML_EXT = /\.(ya?ml|json)$/i;
const DEFAULT_MAX_BYTES = 8 * 1024 * 1024;

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
  const kind = checkResourceShape(value, `document ${docIndex + 1}`, add);
  if (kind === undefined || !isPlainObject(value)) return;
  const isPolicy = kind === 'CiliumNetworkPolicy' || kind === 'CiliumClusterwideNetworkPolicy' || kind === 'NetworkPolicy';
  if (issues.length > before) {
    // Still report the policy's semantic problems, except under paths already reported: all
    // errors of a file at once, none twice.
    if (isPolicy && opts.policyCheck && isPlainObject(value.metadata)) {
      const shapePaths = issues.slice(before).map((i) => i.path.join('\u0000') + '\u0000');
      const copy = structuredClone(value) as unknown as Resource;
      normalizePorts(copy);
      Object.defineProperty(copy, 'source', { value: source, enumerable: true });
      origins.set(copy, origin);
      for (const si of opts.policyCheck(copy as PolicyResource, locate)) {
        const sp = si.path.join('\u0000') + '\u0000';
        if (!shapePaths.some((p) => sp.startsWith(p) || p.startsWith(sp))) issues.push(si);
      }
    }
    return;
  }

  const resource = value as unknown as Resource;
  const metadata = resource.metadata;
  if (KINDS[kind].namespaced) metadata.namespace = metadata.namespace || 'default';
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

  if (opts.policyCheck && isPolicy) {
    const found = opts.policyCheck(resource as PolicyResource, locate);
    if (found.length) {
      issues.push(...found);
      return;
    }
  }
  resources.push(resource);
}






function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}
