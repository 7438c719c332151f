/**
 * A preload for a bench's proxy process (`node --import bench/http/loop-probe.ts`): the stretches
 * of its event loop in which the main thread ran more than MEMBRANE_BENCH_PROBE_US of CPU (default
 * 1000) between two turns of a 1 ms timer, with the GC pauses V8 reported inside them. Thread CPU,
 * not wall time: a stretch is work the loop did without coming back, not time the process waited
 * for a CPU (that is the run-queue wait ab.ts prints). Written as JSON to MEMBRANE_BENCH_PROBE at
 * exit; bench/http/stalls.ts tells what ran in each stretch from a --cpu-prof profile of the run.
 */
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';

const out = process.env.MEMBRANE_BENCH_PROBE;
if (out) {
  const minUs = Number(process.env.MEMBRANE_BENCH_PROBE_US ?? 1000);
  /** [start, end] (µs, CLOCK_MONOTONIC as process.hrtime and --cpu-prof), thread CPU µs, GC pauses [kind, ms] */
  const stretches: { t0: number; t1: number; cpuUs: number; gc: [number, number][] }[] = [];
  let gc: [number, number][] = [];
  new PerformanceObserver((l) => {
    for (const e of l.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) gc.push([e.detail?.kind ?? 0, Math.round(e.duration * 100) / 100]);
  }).observe({ entryTypes: ['gc'] });
  const cpu = () => { const c = process.threadCpuUsage(); return c.user + c.system; };
  let lastCpu = cpu();
  let lastT = process.hrtime.bigint();
  let turns = 0;
  setInterval(() => {
    turns++;
    const c = cpu(), t = process.hrtime.bigint();
    if (c - lastCpu > minUs) stretches.push({ t0: Number(lastT / 1000n), t1: Number(t / 1000n), cpuUs: c - lastCpu, gc });
    gc = [];
    lastCpu = c;
    lastT = t;
  }, 1).unref();
  process.on('exit', () => writeFileSync(out, JSON.stringify({ minUs, turns, stretches })));
}
