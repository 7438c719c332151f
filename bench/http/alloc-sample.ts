/**
 * Where a proxy's garbage per request is made: loaded with `--import` into the proxy's process, it
 * starts V8's sampling heap profiler on SIGUSR2 (every 512 bytes allocated, objects that died in
 * a scavenge or a mark-compact kept: the garbage is what is measured) and on SIGUSR1 writes the
 * sampled bytes by allocating frame with its two callers, largest first, to
 * $MEMBRANE_BENCH_ALLOC_OUT (tab-separated: bytes, frames). Divide by the requests made between
 * the two signals. Investigation only: the sampling slows the proxy several-fold.
 *
 *   MEMBRANE_BENCH_ALLOC_OUT=/tmp/alloc.txt bin/node --import=./bench/http/alloc-sample.ts bench/http/proxy-server.ts ...
 *   kill -USR2 <pid>; wrk ...; kill -USR1 <pid>
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

interface SampleNode { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: SampleNode[] }

const session = new Session();
session.connect();
await session.post('HeapProfiler.enable');
process.on('SIGUSR2', () => {
  void session.post('HeapProfiler.startSampling', { samplingInterval: 512, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true });
});
process.on('SIGUSR1', () => {
  void session.post('HeapProfiler.stopSampling').then(({ profile }) => {
    const bytes = new Map<string, number>();
    const walk = (n: SampleNode, stack: string[]): void => {
      const f = n.callFrame;
      const here = [...stack, `${f.functionName || '(anonymous)'} ${f.url.replace(/.*\/(src|bench|node_modules)\//, '$1/')}:${f.lineNumber + 1}`];
      if (n.selfSize) {
        const key = here.slice(-3).reverse().join(' < ');
        bytes.set(key, (bytes.get(key) ?? 0) + n.selfSize);
      }
      for (const c of n.children) walk(c, here);
    };
    walk(profile.head as SampleNode, []);
    const rows = [...bytes.entries()].sort((a, b) => b[1] - a[1]);
    writeFileSync(process.env.MEMBRANE_BENCH_ALLOC_OUT ?? 'alloc-sample.txt', rows.map(([k, v]) => `${v}\t${k}`).join('\n') + '\n');
  });
});
