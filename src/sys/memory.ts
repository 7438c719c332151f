/**
 * The process's own malloc (glibc), the memory under Node's Buffers and ArrayBuffers.
 *
 * An agent that lists 300,000 ipcache keys (bench/scale) allocates a few MiB per listing page and
 * per map batch. glibc raises its mmap threshold to the largest block freed (up to 32 MiB), so
 * after the first page every such block comes from the brk heap, and freed blocks between live
 * ones stay resident: measured 80 MiB of brk heap holding 17 MiB of live external memory after
 * the listing (bench/scale/apply.ts). Two remedies, both glibc's own:
 *   - a fixed mmap threshold (mallopt M_MMAP_THRESHOLD, which also stops the dynamic raise): a
 *     block of 128 KiB or more is its own mapping and goes back to the kernel when freed;
 *   - malloc_trim(0) after a burst: the free pages inside the heap go back (MADV_DONTNEED).
 * Neither changes what a program sees; on another libc (no such symbols) both do nothing.
 */
import koffi from 'koffi';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const M_MMAP_THRESHOLD = -3;

let lib: { mallopt: (param: number, value: number) => number; trim: (pad: number) => number } | null | undefined;
function glibc(): typeof lib {
  if (lib !== undefined) return lib;
  try {
    const c = koffi.load('libc.so.6');
    lib = { mallopt: c.func('int mallopt(int param, int value)'), trim: c.func('int malloc_trim(size_t pad)') };
  } catch {
    lib = null;
  }
  return lib;
}

/** Blocks of `bytes` or more get their own mapping (returned to the kernel on free). Whether it took. */
export function setMmapThreshold(bytes = 128 * 1024): boolean {
  return glibc()?.mallopt(M_MMAP_THRESHOLD, bytes) === 1;
}

/** Gives malloc's free pages back to the kernel. Whether any memory was released. */
export function releaseFreeMemory(): boolean {
  return glibc()?.trim(0) === 1;
}

let fullGc: (() => void) | undefined;
/**
 * One full V8 collection, then malloc's free pages back to the kernel: after a burst (the agent's
 * full resync) the garbage still holds Buffers whose blocks malloc_trim cannot give back until they
 * are collected. Node's documented way to reach gc() without --expose-gc (v8.setFlagsFromString).
 * Blocks the event loop for one full GC (tens to a few hundred ms at 300,000 remote endpoints):
 * for a one-off after a burst, not a loop. Returns how long it took (ms).
 */
export function collectAndRelease(): number {
  const t0 = performance.now();
  if (!fullGc) {
    setFlagsFromString('--expose-gc');
    fullGc = runInNewContext('gc') as () => void;
  }
  fullGc();
  releaseFreeMemory();
  return performance.now() - t0;
}
