/**
 * The proxies' memory lines bench/soak reads: `mem {rss, heapUsed, heapTotal, external,
 * arrayBuffers, …extra}` every MEMBRANE_BENCH_MEM_MS (nothing when unset or 0). A file of its own,
 * importing nothing, so that the process it measures loads no more than it did.
 */
export function sampleMemory(extra?: () => Record<string, number>): void {
  const memMs = Number(process.env.MEMBRANE_BENCH_MEM_MS ?? 0);
  if (!(memMs > 0)) return;
  // MEMBRANE_BENCH_GC=1 (with node --expose-gc): a full GC before each sample, to tell garbage not yet collected from memory still held
  const gc = process.env.MEMBRANE_BENCH_GC === '1' ? (globalThis as { gc?: () => void }).gc : undefined;
  setInterval(() => {
    gc?.();
    const m = process.memoryUsage();
    console.log(`mem ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, ...extra?.() })}`);
  }, memMs).unref();
}
