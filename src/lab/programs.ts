/**
 * Workload programs (src/lab/workloads/*.ts) run once per pod, so their memory counts: a Node
 * process that loads a .ts file also loads the TypeScript stripper (WebAssembly, ~25 MB RSS).
 * Self-contained programs (only node: imports) are stripped once here, by the already-running
 * agent or CLI, into <stateDir>/programs/<name>.<hash>.mjs; if that fails, the .ts runs as is.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { join } from 'node:path';

const cache = new Map<string, string>();

export function programPath(repoRoot: string, stateDir: string, name: string): string {
  const src = join(repoRoot, 'src/lab/workloads', `${name}.ts`);
  const key = `${stateDir}:${src}`;
  const hit = cache.get(key);
  if (hit && existsSync(hit)) return hit;
  try {
    const strip = (nodeModule as { stripTypeScriptTypes?: (code: string) => string }).stripTypeScriptTypes;
    if (!strip) return src;
    const code = readFileSync(src, 'utf8');
    if (/^\s*import\s[^;]*from\s+['"](?!node:)/m.test(code)) return src; // not self-contained
    const hash = createHash('sha256').update(code).digest('hex').slice(0, 12);
    const dir = join(stateDir, 'programs');
    const out = join(dir, `${name}.${hash}.mjs`);
    if (!existsSync(out)) {
      mkdirSync(dir, { recursive: true });
      const prev = process.emitWarning;
      process.emitWarning = () => {};
      let js: string;
      try { js = strip(code); } finally { process.emitWarning = prev; }
      writeFileSync(`${out}.tmp`, js);
      renameSync(`${out}.tmp`, out);
    }
    cache.set(key, out);
    return out;
  } catch {
    return src;
  }
}
