/**
 * What ran in a proxy's event-loop stretches (bench/http/loop-probe.ts): each stretch's --cpu-prof
 * samples, named by the outermost frame of this repository (src/, bench/) or, without one, by
 * the event-loop phase (timers, immediates, I/O) or V8 (GC, program); stretches whose GC pauses
 * reported by V8 add up to half of them or more are GC's. Only stretches inside `windows`
 * (measured runs, µs on CLOCK_MONOTONIC) count.
 *
 *   bin/node bench/http/stalls.ts PROFILE.cpuprofile PROBE.json
 */
import { readFileSync } from 'node:fs';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface Profile { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] }
interface Probe { minUs: number; turns: number; stretches: { t0: number; t1: number; cpuUs: number; gc: [number, number][] }[] }

const GC_KIND: Record<number, string> = { 1: 'scavenge', 2: 'minor-ms', 4: 'mark-compact', 8: 'incremental marking', 16: 'weak callbacks' };

export function stallReport(profilePath: string, probePath: string, windows?: [number, number][]): string[] {
  const p = JSON.parse(readFileSync(profilePath, 'utf8')) as Profile;
  const probe = JSON.parse(readFileSync(probePath, 'utf8')) as Probe;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ours = (n: ProfileNode) => /\/(src|bench)\//.test(n.callFrame.url);
  const label = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*?\/(src|bench)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
  // a sample's name: the outermost frame of ours, else the loop phase it ran in, else its own frame
  const nameOf = new Map<number, string>();
  const sampleName = (id: number): string => {
    let v = nameOf.get(id);
    if (v !== undefined) return v;
    let outer: ProfileNode | undefined;
    let phase = '';
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const n = byId.get(x)!;
      if (ours(n)) outer = n;
      const f = n.callFrame.functionName;
      if (f === 'processTimers') phase = 'timers';
      else if (f === 'processImmediate') phase = 'immediates';
      else if (f === 'processTicksAndRejections') phase ||= 'ticks';
      else if (f === 'onStreamRead') phase ||= 'I/O';
    }
    const own = byId.get(id)!.callFrame.functionName;
    v = outer ? `${phase ? `${phase}: ` : ''}${label(outer)}` : own === '(garbage collector)' || own === '(program)' || own === '(idle)' ? own : `${phase || 'node'}: ${label(byId.get(id)!)}`;
    nameOf.set(id, v);
    return v;
  };
  let t = p.startTime;
  const ts = p.timeDeltas.map((d) => (t += d));
  const inWindow = (s: Probe['stretches'][number]) => !windows || windows.some(([a, b]) => s.t0 >= a && s.t1 <= b);
  const stretches = probe.stretches.filter(inWindow);
  const byCause = new Map<string, { n: number; cpuUs: number; max: number }>();
  let i0 = 0;
  for (const s of stretches) {
    const gcMs = s.gc.reduce((a, [, ms]) => a + ms, 0);
    let cause: string;
    if (gcMs * 1000 >= s.cpuUs / 2) {
      cause = `GC: ${[...new Set(s.gc.map(([k]) => GC_KIND[k] ?? String(k)))].join(' + ')}`;
    } else {
      const counts = new Map<string, number>();
      while (i0 < ts.length && ts[i0]! <= s.t0) i0++;
      for (let i = i0; i < ts.length && ts[i]! <= s.t1; i++) {
        const k = sampleName(p.samples[i]!);
        if (k !== '(idle)') counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      cause = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '(no samples)';
    }
    const c = byCause.get(cause) ?? { n: 0, cpuUs: 0, max: 0 };
    c.n++; c.cpuUs += s.cpuUs; c.max = Math.max(c.max, s.cpuUs);
    byCause.set(cause, c);
  }
  const lines = [`${stretches.length} stretches over ${probe.minUs / 1000} ms of thread CPU (of ${probe.stretches.length} in the whole run), by what ran most in them:`];
  for (const [k, v] of [...byCause].sort((a, b) => b[1].cpuUs - a[1].cpuUs)) {
    lines.push(`  ${String(v.n).padStart(5)} x, ${(v.cpuUs / 1000).toFixed(1).padStart(7)} ms CPU, longest ${(v.max / 1000).toFixed(1)} ms: ${k}`);
  }
  return lines;
}

if (import.meta.main) {
  const [profile, probe] = process.argv.slice(2);
  if (!profile || !probe) throw new Error('usage: bin/node bench/http/stalls.ts PROFILE.cpuprofile PROBE.json');
  for (const l of stallReport(profile, probe)) console.log(l);
}
