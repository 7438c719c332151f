import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic, writeFileAtomicSync } from '../../../src/common/atomic-file.ts';

function scratch(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mb-atomic-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('writes the whole content with the asked mode and leaves no temporary', async (t) => {
  const dir = scratch(t);
  const key = join(dir, 'sub', 'key');
  await writeFileAtomic(key, 'secret\n', { mode: 0o600, mkdir: true });
  assert.equal(readFileSync(key, 'utf8'), 'secret\n');
  assert.equal(statSync(key).mode & 0o777, 0o600);
  writeFileAtomicSync(join(dir, 'plain'), 'x');
  assert.equal(statSync(join(dir, 'plain')).mode & 0o777, 0o644);
  assert.deepEqual(readdirSync(dir).sort(), ['plain', 'sub']);
  assert.deepEqual(readdirSync(join(dir, 'sub')), ['key']);
});

test('replacing a file narrows its mode to the asked one (an old 0644 key becomes 0600)', async (t) => {
  const dir = scratch(t);
  const f = join(dir, 'k');
  writeFileSync(f, 'old', { mode: 0o644 });
  await writeFileAtomic(f, 'new', { mode: 0o600 });
  assert.equal(readFileSync(f, 'utf8'), 'new');
  assert.equal(statSync(f).mode & 0o777, 0o600);
});

test('a failed write keeps the old content and removes its temporary', async (t) => {
  const dir = scratch(t);
  const target = join(dir, 'target');
  mkdirSync(join(target, 'child'), { recursive: true }); // rename of a file onto a non-empty directory fails
  await assert.rejects(writeFileAtomic(target, 'x'));
  assert.throws(() => writeFileAtomicSync(target, 'x'));
  assert.deepEqual(readdirSync(dir), ['target']);
  assert.deepEqual(readdirSync(target), ['child']);
});

test('concurrent writers of one file never interleave: the result is one writer\'s whole content', async (t) => {
  const dir = scratch(t);
  const f = join(dir, 'state.json');
  const bodies = Array.from({ length: 40 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(20000 + i) }));
  await Promise.all(bodies.map((b) => writeFileAtomic(f, b)));
  assert.ok(bodies.includes(readFileSync(f, 'utf8')));
  assert.deepEqual(readdirSync(dir), ['state.json']);
});
