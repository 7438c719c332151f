/**
 * Builds the UI bundle into dist/ui (run by scripts/setup.sh): everything the page needs is in
 * it, so `membrane ui` works offline with no CDN. Rebuilds only when a source is newer.
 */
import { build } from 'vite';
import { statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const here = import.meta.dirname;
const repo = join(here, '..');
const out = join(repo, 'dist/ui/index.html');

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

const inputs = [join(here, 'src'), join(repo, 'src/hubble'), join(repo, 'src/ui')];
const builtAt = (() => { try { return statSync(out).mtimeMs; } catch { return 0; } })();
const changed = Math.max(...inputs.map(newest), statSync(join(here, 'index.html')).mtimeMs, statSync(join(here, 'vite.config.ts')).mtimeMs, statSync(join(repo, 'package-lock.json')).mtimeMs);
if (process.argv.includes('--force') || changed > builtAt) {
  await build({ configFile: join(here, 'vite.config.ts') });
  console.log('ui: built dist/ui');
} else console.log('ui: dist/ui is up to date');
