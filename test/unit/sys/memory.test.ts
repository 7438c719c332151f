import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collectAndRelease, releaseFreeMemory, setMmapThreshold } from '../../../src/sys/memory.ts';

test('glibc takes the fixed mmap threshold (this machine runs glibc)', () => {
  assert.equal(setMmapThreshold(), true);
});

test('collectAndRelease runs a full collection: an object only a WeakRef names is gone after it', () => {
  let held: object | undefined = { big: new Array(1000).fill(0) };
  const ref = new WeakRef(held);
  held = undefined;
  // a WeakRef target stays alive until the end of the current job: the collection runs in the next one
  return new Promise<void>((resolve, reject) => setImmediate(() => {
    try {
      const ms = collectAndRelease();
      assert.ok(ms >= 0);
      assert.equal(ref.deref(), undefined);
      resolve();
    } catch (e) { reject(e as Error); }
  }));
});

test('collectAndRelease gives the memory of unreachable Buffers back: RSS falls by most of 64 MiB', () => {
  setMmapThreshold(64 * 1024 * 1024); // the opposite: 1 MiB Buffers from the brk heap, kept when freed
  let bufs: Buffer[] | undefined = Array.from({ length: 64 }, () => Buffer.alloc(1 << 20, 1));
  const before = process.memoryUsage().rss;
  bufs = undefined;
  void bufs;
  collectAndRelease();
  const after = process.memoryUsage().rss;
  setMmapThreshold();
  assert.ok(before - after > 32 * 2 ** 20, `rss ${before >> 20} -> ${after >> 20} MiB`);
  assert.equal(typeof releaseFreeMemory(), 'boolean');
});
