// Boundary lint (DESIGN.md §3): only src/sys/ may touch FFI (koffi) or run system commands,
// and the policy engine and its inputs stay pure (no I/O modules).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const SYSTEM_MODULES = /(['"])(koffi|node:child_process|child_process|node:worker_threads)\1/;
const PURE_DIRS = ['src/policy/', 'src/labels/', 'src/identity/'];
const IO_MODULES = /from\s+(['"])node:(fs|fs\/promises|net|dgram|child_process|http|https|http2|dns|tls)\1/;

function* walk(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const problems: string[] = [];
for (const file of walk(join(root, 'src'))) {
  const rel = relative(root, file);
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    const at = `${rel}:${i + 1}`;
    if (!rel.startsWith('src/sys/') && SYSTEM_MODULES.test(line) && /\b(import|require)\b/.test(line)) {
      problems.push(`${at}: LINT_SYS_BOUNDARY: FFI and system commands belong in src/sys/ (${line.trim()})`);
    }
    if (PURE_DIRS.some((d) => rel.startsWith(d)) && IO_MODULES.test(line)) {
      problems.push(`${at}: LINT_PURE: the policy engine is pure; move I/O out of ${rel} (${line.trim()})`);
    }
  });
}
if (problems.length > 0) {
  for (const p of problems) console.error(p);
  console.error(`lint: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log('lint: ok');
