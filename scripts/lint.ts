/**
 * The project's lint (run by scripts/test.sh):
 *
 *   LINT_LAYER      an import from one folder of src/ to another that LAYERS does not allow
 *                   (DESIGN.md §4b: imports go down the layers, never up)
 *   LINT_CYCLE      a cycle between folders of src/ (printed folder by folder, with one import each)
 *   LINT_DIR_CYCLE  two folders at any depth that import each other, a parent and its sub-folder
 *                   included (src/policy ↔ src/policy/translate): one of them owns the shared part
 *   LINT_FILE_CYCLE a cycle between files of src/, type-only imports included (a cycle of types is a
 *                   cycle of concepts); one problem per knot of files, with one cycle through it
 *   LINT_SYS_BOUNDARY  FFI (koffi) and system commands outside src/sys/
 *   LINT_PURE       I/O modules in the pure layers (labels, identity, policy)
 *   LINT_ENV        process.env read outside the configuration builder (src/common/config.ts)
 *   LINT_ERROR_CODE an error code used in src/ that ERRORS.md does not list
 *   LINT_TEST_LAB_NAME  an integration test's lab whose name does not come from its process
 *                   (scripts/test.sh runs two test files at a time)
 *
 * Every rule reports file:line and what to do; the script exits 1 on any problem.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/**
 * The layer table: folder of src/ → the folders it may import. Read bottom-up, it is the order
 * data flows in (DESIGN.md §4b):
 *
 *   common, sys ─ api, labels ─ kvstore ─ identity, ipcache ─ policy, fqdn ─ datapath ─ hubble | proxy
 *     ─ agent ─ lab | cni | relay ─ ui ─ cli
 *
 * Folders of one rank import each other in one direction only (labels → api, identity → ipcache,
 * policy → fqdn); the cycle check below catches any pair that would point both ways.
 */
export const LAYERS: Readonly<Record<string, readonly string[]>> = {
  common: [],
  sys: ['common'],
  api: ['common'],
  labels: ['common', 'api'],
  kvstore: ['common'],
  ipcache: ['common', 'api', 'labels'],
  identity: ['common', 'api', 'labels', 'kvstore', 'ipcache'],
  fqdn: ['common', 'api', 'labels', 'kvstore', 'ipcache', 'identity'],
  policy: ['common', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'fqdn'],
  datapath: ['common', 'sys', 'api', 'labels', 'ipcache', 'identity', 'policy', 'fqdn'],
  hubble: ['common', 'sys', 'api', 'labels', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath'],
  // the proxies emit access records (common/access-log.ts); Hubble's L7 parser makes them flows
  proxy: ['common', 'sys', 'api', 'labels', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath'],
  agent: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy'],
  lab: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy', 'agent'],
  cni: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy', 'agent'],
  relay: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy', 'agent'],
  // the web UI server: a client of the agent API and the Observer, started by `membrane ui`
  ui: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy', 'agent', 'lab', 'cni', 'relay'],
  cli: ['common', 'sys', 'api', 'labels', 'kvstore', 'ipcache', 'identity', 'policy', 'fqdn', 'datapath', 'hubble', 'proxy', 'agent', 'lab', 'cni', 'relay', 'ui'],
};

/**
 * Imports the table does not allow yet, each named by file and target folder. Only imports in
 * files that a later phase restructures may stand here, each with a TODO(phase B).
 */
export const LAYER_EXCEPTIONS: readonly { file: string; to: string; why: string }[] = [
  {
    file: 'src/proxy/http/otlp.ts', to: 'hubble',
    why: 'the OTLP protobuf code is generated into src/hubble/gen by the one `buf generate` run; TODO(phase B): generate it beside the exporter',
  },
];

// Turned on by the steps that move configuration into one object and list every code.
const CHECK_ENV = true;
const CHECK_ERROR_CODES = true;

/**
 * Files that may read process.env: the configuration builder. (The CNI plugin's CNI_* variables
 * are read by the native plugin, src/cni/membrane-cni.c, and reach the agent in its request.)
 */
export const ENV_READERS: readonly string[] = ['src/common/config.ts'];

const SYSTEM_MODULES = /(['"])(koffi|node:child_process|child_process|node:worker_threads)\1/;
const PURE_DIRS = ['src/policy/', 'src/labels/', 'src/identity/'];
const IO_MODULES = /from\s+(['"])node:(fs|fs\/promises|net|dgram|child_process|http|https|http2|dns|tls)\1/;
/** import/export … from '…', import('…'), import '…' — across line breaks. */
const IMPORT_RE = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
/** Error codes as the code's error constructors and helpers take them (check(rc, CODE, …) of src/sys, #fail(CODE) of parsers). */
const ERROR_CODE_RE = /(?:new\s+[A-Za-z]*Error\(\s*|\b(?:issue|bad|add|super|#?fail)\(\s*|\bcheck\([^;'`]*?,\s*|\bcode:\s*)'([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z][A-Z0-9]+)'/g;

export interface Problem {
  at: string;
  code: string;
  message: string;
}

export interface ImportEdge {
  /** src-relative folder names */
  from: string;
  to: string;
  /** file:line of one import that makes the edge */
  at: string;
  file: string;
}

export function* walk(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const lineOf = (text: string, index: number) => text.slice(0, index).split('\n').length;

/** The folder of src/ a repo-relative path belongs to ('' for files directly in src/ or outside). */
export function folderOf(rel: string): string {
  const m = /^src\/([^/]+)\//.exec(rel);
  return m ? m[1]! : '';
}

/** Every import from one folder of src/ into another, per file (imports of generated code included). */
export function importEdges(root: string, files: Iterable<string>): ImportEdge[] {
  const out: ImportEdge[] = [];
  for (const e of fileEdges(root, files)) {
    const from = folderOf(e.from) || e.from;
    const to = folderOf(e.to) || e.to;
    if (from !== to) out.push({ from, to, at: e.at, file: e.from });
  }
  return out;
}

/** Imports the layer table does not allow (and that no exception names). */
export function layerProblems(edges: readonly ImportEdge[], layers = LAYERS, exceptions = LAYER_EXCEPTIONS): Problem[] {
  const out: Problem[] = [];
  for (const e of edges) {
    if (!(e.from in layers)) {
      out.push({ at: e.at, code: 'LINT_LAYER', message: `${e.from} is not a folder of the layer table in scripts/lint.ts; add it at its layer (DESIGN.md §4b)` });
      continue;
    }
    if (!(e.to in layers)) {
      out.push({ at: e.at, code: 'LINT_LAYER', message: `${e.from} imports ${e.to}, which is not a folder of the layer table (files directly in src/ have no layer; move it into a folder)` });
      continue;
    }
    if (layers[e.from]!.includes(e.to)) continue;
    if (exceptions.some((x) => x.file === e.file && x.to === e.to)) continue;
    out.push({
      at: e.at, code: 'LINT_LAYER',
      message: `${e.from} may not import ${e.to} (layers: ${e.from} → ${layers[e.from]!.join(', ') || 'nothing'}); move the shared part down to a folder both may import, or pass it in as an option`,
    });
  }
  return out;
}

/** One cycle of the folder graph as a list of edges (a → b → … → a), or undefined when it has none. */
export function findCycle(edges: readonly ImportEdge[]): ImportEdge[] | undefined {
  const next = new Map<string, Map<string, ImportEdge>>();
  for (const e of edges) {
    let m = next.get(e.from);
    if (!m) next.set(e.from, (m = new Map()));
    if (!m.has(e.to)) m.set(e.to, e);
  }
  const state = new Map<string, 'open' | 'done'>();
  const stack: ImportEdge[] = [];
  const visit = (n: string): ImportEdge[] | undefined => {
    state.set(n, 'open');
    for (const [to, e] of [...(next.get(n) ?? [])].sort(([a], [b]) => a.localeCompare(b))) {
      if (state.get(to) === 'open') {
        const start = stack.findIndex((s) => s.from === to);
        return [...(start < 0 ? [] : stack.slice(start)), e];
      }
      if (state.get(to) === 'done') continue;
      stack.push(e);
      const c = visit(to);
      if (c) return c;
      stack.pop();
    }
    state.set(n, 'done');
    return undefined;
  };
  for (const n of [...next.keys()].sort()) {
    if (state.has(n)) continue;
    const c = visit(n);
    if (c) return c;
  }
  return undefined;
}

/**
 * File cycles the lint allows, each the exact set of files of one knot: a knot that grows or
 * shrinks is reported again. Only a cycle another change is breaking may stand here.
 */
export const FILE_CYCLE_EXCEPTIONS: readonly { files: readonly string[]; why: string }[] = [];

/** One import from a file of src/ to another file, both repo-relative. */
export interface FileEdge {
  from: string;
  to: string;
  /** file:line of the import */
  at: string;
}

/**
 * Every relative import between files, type-only imports and `import('…')` types included.
 * Generated code is imported as `.js` beside its `.ts`: the edge names the file that exists.
 */
export function fileEdges(root: string, files: Iterable<string>): FileEdge[] {
  const out: FileEdge[] = [];
  for (const file of files) {
    const rel = relative(root, file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT_RE)) {
      let target = resolve(dirname(file), m[2]!);
      if (target.endsWith('.js') && !existsSync(target) && existsSync(`${target.slice(0, -3)}.ts`)) target = `${target.slice(0, -3)}.ts`;
      out.push({ from: rel, to: relative(root, target), at: `${rel}:${lineOf(text, m.index)}` });
    }
  }
  return out;
}

/** The folder a file edge goes between: each directory its own node, a sub-folder apart from its parent. */
export function dirEdges(edges: readonly FileEdge[]): ImportEdge[] {
  return edges
    .map((e) => ({ from: dirname(e.from), to: dirname(e.to), at: e.at, file: e.from }))
    .filter((e) => e.from !== e.to);
}

/**
 * Every knot of an import graph, of files or of folders (a strongly connected set of two or more
 * nodes, or one that imports itself), each as its sorted nodes (`files`) and one shortest cycle
 * through its first.
 */
export function knotsOf<E extends FileEdge>(edges: readonly E[]): { files: string[]; cycle: E[] }[] {
  const next = new Map<string, E[]>();
  for (const e of edges) {
    if (!next.has(e.from)) next.set(e.from, []);
    next.get(e.from)!.push(e);
  }
  // Tarjan's strongly connected components, iterative (a deep import chain must not overflow the stack).
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const knots: string[][] = [];
  let counter = 0;
  for (const root of [...next.keys()].sort()) {
    if (index.has(root)) continue;
    const work: { node: string; i: number }[] = [{ node: root, i: 0 }];
    index.set(root, counter); low.set(root, counter++); stack.push(root); onStack.add(root);
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const out = next.get(top.node) ?? [];
      if (top.i < out.length) {
        const to = out[top.i++]!.to;
        if (!index.has(to)) {
          index.set(to, counter); low.set(to, counter++); stack.push(to); onStack.add(to);
          work.push({ node: to, i: 0 });
        } else if (onStack.has(to)) {
          low.set(top.node, Math.min(low.get(top.node)!, index.get(to)!));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]!.node;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.node)!));
      }
      if (low.get(top.node) === index.get(top.node)) {
        const knot: string[] = [];
        let n: string;
        do { n = stack.pop()!; onStack.delete(n); knot.push(n); } while (n !== top.node);
        const selfLoop = out.some((e) => e.to === top.node);
        if (knot.length > 1 || selfLoop) knots.push(knot.sort());
      }
    }
  }
  return knots
    .sort((a, b) => a[0]!.localeCompare(b[0]!))
    .map((files) => {
      // Shortest way from the knot's first file back to it, inside the knot (breadth first).
      const inKnot = new Set(files);
      const start = files[0]!;
      const via = new Map<string, E>();
      const queue = [start];
      let last: E | undefined;
      for (let q = 0; q < queue.length && !last; q++) {
        for (const e of next.get(queue[q]!) ?? []) {
          if (!inKnot.has(e.to)) continue;
          if (e.to === start) { last = e; break; }
          if (!via.has(e.to)) { via.set(e.to, e); queue.push(e.to); }
        }
      }
      const cycle: E[] = [last!];
      for (let n = last!.from; n !== start; n = via.get(n)!.from) cycle.unshift(via.get(n)!);
      return { files, cycle };
    });
}

/** Folders (at any depth) that import each other: one problem per knot of folders. */
export function dirCycleProblems(edges: readonly ImportEdge[]): Problem[] {
  return knotsOf(edges).map((k) => ({
    at: k.cycle[0]!.at, code: 'LINT_DIR_CYCLE',
    message: `folders import each other (${k.files.join(', ')}): ${[...k.cycle.map((e) => e.from), k.cycle[0]!.from].join(' → ')}\n${k.cycle.map((e) => `    ${e.from} → ${e.to} at ${e.at}`).join('\n')}\n    a parent and its sub-folder too: the shared part belongs to one of them (or a small types file)`,
  }));
}

/**
 * Knots of files that FILE_CYCLE_EXCEPTIONS does not name exactly, and allowances that name no
 * knot any more (the cycle was broken: remove the allowance, so that it cannot come back unseen).
 */
export function fileCycleProblems(edges: readonly FileEdge[], exceptions = FILE_CYCLE_EXCEPTIONS): Problem[] {
  const knots = knotsOf(edges);
  const same = (x: { files: readonly string[] }, k: { files: readonly string[] }) =>
    x.files.length === k.files.length && x.files.every((f) => k.files.includes(f));
  const stale = exceptions.filter((x) => !knots.some((k) => same(x, k))).map((x) => ({
    at: 'scripts/lint.ts', code: 'LINT_FILE_CYCLE',
    message: `FILE_CYCLE_EXCEPTIONS allows a cycle of ${x.files.join(', ')} that is no longer there as written (${x.why}); remove the allowance (or, if the knot changed, break what is left of it)`,
  }));
  return [...stale, ...knots
    .filter((k) => !exceptions.some((x) => same(x, k)))
    .map((k) => ({
      at: k.cycle[0]!.at, code: 'LINT_FILE_CYCLE',
      message: `import cycle between files (${k.files.length} file(s) in this knot: ${k.files.join(', ')}): ${[...k.cycle.map((e) => e.from), k.cycle[0]!.from].join(' → ')}\n${k.cycle.map((e) => `    ${e.from} → ${e.to} at ${e.at}`).join('\n')}\n    move the shared type or function to the file that owns the concept (or a small types file)`,
    }))];
}

/** Error codes used in a source text, with the line of each use. */
export function errorCodes(text: string): { code: string; line: number }[] {
  return [...text.matchAll(ERROR_CODE_RE)].map((m) => ({ code: m[1]!, line: lineOf(text, m.index) }));
}

/** Codes ERRORS.md lists: every `CODE` in backticks. */
export function documentedCodes(markdown: string): Set<string> {
  return new Set([...markdown.matchAll(/`([A-Z][A-Z0-9]*(?:_[A-Z0-9_]+)?)`/g)].map((m) => m[1]!));
}

/**
 * Labs made by integration tests (`new TestLab(name)`, `new HostModeLab(name)`): the name must come
 * from the test's process (`process.pid`). The test command runs two files at a time, and a lab's
 * name is its namespaces', BPF pins' and state directory's: two runs of one name take each other's.
 */
export function labNameProblems(rel: string, text: string): Problem[] {
  return [...text.matchAll(/new (?:TestLab|HostModeLab)\(([^,)]*)/g)].filter((m) => !/process\.pid/.test(m[1]!)).map((m) => ({
    at: `${rel}:${lineOf(text, m.index)}`, code: 'LINT_TEST_LAB_NAME',
    message: `name the lab after the test's process, e.g. \`xyz\${process.pid % 10000}\` (scripts/test.sh runs two test files at once): ${m[0]}`,
  }));
}

export function lint(root: string, fileCycleExceptions = FILE_CYCLE_EXCEPTIONS): Problem[] {
  const problems: Problem[] = [];
  const files = [...walk(join(root, 'src'))];
  const documented = documentedCodes(readFileSync(join(root, 'ERRORS.md'), 'utf8'));
  for (const file of files) {
    const rel = relative(root, file);
    const text = readFileSync(file, 'utf8');
    text.split('\n').forEach((line, i) => {
      const at = `${rel}:${i + 1}`;
      if (!rel.startsWith('src/sys/') && SYSTEM_MODULES.test(line) && /\b(import|require)\b/.test(line)) {
        problems.push({ at, code: 'LINT_SYS_BOUNDARY', message: `FFI and system commands belong in src/sys/ (${line.trim()})` });
      }
      if (PURE_DIRS.some((d) => rel.startsWith(d)) && IO_MODULES.test(line)) {
        problems.push({ at, code: 'LINT_PURE', message: `the policy engine is pure; move I/O out of ${rel} (${line.trim()})` });
      }
      if (CHECK_ENV && !ENV_READERS.includes(rel) && /\bprocess\.env\b/.test(line)) {
        problems.push({ at, code: 'LINT_ENV', message: 'configuration comes from the config object (src/common/config.ts builds it from defaults, environment and flags); take it as an option' });
      }
    });
    if (CHECK_ERROR_CODES && !rel.includes('/gen/')) {
      for (const { code, line } of errorCodes(text)) {
        if (!documented.has(code)) problems.push({ at: `${rel}:${line}`, code: 'LINT_ERROR_CODE', message: `error code ${code} is not in ERRORS.md; add it with what it means` });
      }
    }
  }
  const integration = join(root, 'test/integration');
  if (existsSync(integration)) for (const file of walk(integration)) problems.push(...labNameProblems(relative(root, file), readFileSync(file, 'utf8')));
  const edges = importEdges(root, files);
  problems.push(...layerProblems(edges));
  // An excepted import is already a reported debt: cycles through it are the same debt.
  const cycle = findCycle(edges.filter((e) => !LAYER_EXCEPTIONS.some((x) => x.file === e.file && x.to === e.to)));
  if (cycle) {
    problems.push({
      at: cycle[0]!.at, code: 'LINT_CYCLE',
      message: `import cycle between folders of src/: ${[...cycle.map((e) => e.from), cycle[0]!.from].join(' → ')}\n${cycle.map((e) => `    ${e.from} → ${e.to} at ${e.at}`).join('\n')}`,
    });
  }
  const between = fileEdges(root, files);
  problems.push(...dirCycleProblems(dirEdges(between)));
  problems.push(...fileCycleProblems(between, fileCycleExceptions));
  return problems;
}

if (import.meta.main) {
  const root = join(dirname(new URL(import.meta.url).pathname), '..');
  const problems = lint(root);
  for (const p of problems) console.error(`${p.at}: ${p.code}: ${p.message}`);
  if (problems.length > 0) {
    console.error(`lint: ${problems.length} problem(s)`);
    process.exit(1);
  }
  console.log('lint: ok');
}
