/**
 * The UI bundle (dist/ui, built by `scripts/setup.sh`) held in memory: only the files the build
 * wrote are served, by exact path; anything else is 404 (no directory walking, no traversal).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, relative, sep } from 'node:path';
import { MembraneError } from '../common/errors.ts';

export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
  /** content-hashed build output may be cached forever; index.html never */
  immutable: boolean;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json', '.woff2': 'font/woff2', '.ico': 'image/x-icon',
};

export function loadAssets(dir: string): Map<string, StaticFile> {
  let files: string[];
  try {
    files = walk(dir);
  } catch {
    files = [];
  }
  if (!files.some((f) => relative(dir, f) === 'index.html')) {
    throw new MembraneError('UI_NOT_BUILT', `no UI bundle in ${dir}`, { hint: 'run `bash scripts/setup.sh` (it builds the UI with `bin/node ui/build.ts`)' });
  }
  const out = new Map<string, StaticFile>();
  for (const f of files) {
    const rel = relative(dir, f).split(sep).join('/');
    const ext = rel.slice(rel.lastIndexOf('.'));
    const type = TYPES[ext];
    if (!type) continue;
    const body = readFileSync(f);
    out.set(`/${rel}`, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`, immutable: rel.startsWith('assets/') });
  }
  out.set('/', out.get('/index.html')!);
  return out;
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}
