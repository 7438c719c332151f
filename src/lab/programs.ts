/**
 * Workload programs (src/lab/workloads/*.ts) run once per pod, so their memory counts: a Node
 * process that loads a .ts file also loads the TypeScript stripper (WebAssembly, ~25 MB RSS).
 * Self-contained programs (node: imports and relative .ts files that are self-contained too) are
 * stripped once here, by the already-running agent or CLI, into <stateDir>/programs/<name>.<hash>.mjs;
 * if that fails, the .ts runs as is.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { basename, dirname, join } from 'node:path';
import { writeFileAtomicSync } from '../common/atomic-file.ts';

const cache = new Map<string, string>();

export function programPath(repoRoot: string, stateDir: string, name: string): string {
  const src = join(repoRoot, 'src/lab/workloads', `${name}.ts`);
  const key = `${stateDir}:${src}`;
  const hit = cache.get(key);
  if (hit && existsSync(hit)) return hit;
  try {
    const strip = (nodeModule as { stripTypeScriptTypes?: (code: string) => string }).stripTypeScriptTypes;
    if (!strip) return src;
    const out = stripped(src, join(stateDir, 'programs'), strip, 0);
    if (!out) return src;
    cache.set(key, out);
    return out;
  } catch {
    return src;
  }
}

/**
 * The stripped copy of `src` in `dir`, its relative .ts imports stripped beside it (their
 * specifiers rewritten to the copies); undefined when something it imports is a package.
 */
function stripped(src: string, dir: string, strip: (code: string) => string, depth: number): string | undefined {
  if (depth > 4) return undefined;
  let code = readFileSync(src, 'utf8');
  const specifiers = [...code.matchAll(/^\s*import\s[^;]*?from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]!);
  for (const spec of specifiers) {
    if (spec.startsWith('node:')) continue;
    if (!spec.startsWith('.') || !spec.endsWith('.ts')) return undefined; // a package: not self-contained
    const dep = stripped(join(dirname(src), spec), dir, strip, depth + 1);
    if (!dep) return undefined;
    code = code.replaceAll(`'${spec}'`, `'./${basename(dep)}'`).replaceAll(`"${spec}"`, `"./${basename(dep)}"`);
  }
  const hash = createHash('sha256').update(code).digest('hex').slice(0, 12);
  const out = join(dir, `${basename(src, '.ts')}.${hash}.mjs`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    const prev = process.emitWarning;
    process.emitWarning = () => {};
    let js: string;
    try { js = strip(code); } finally { process.emitWarning = prev; }
    writeFileAtomicSync(out, js);
  }
  return out;
}
