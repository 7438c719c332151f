/**
 * bench/ui/page.ts: the page's load alone, without a lab: an Observer in a child process serving
 * bench/ui's 10,000 synthetic flows (replay-server.ts --serve), the UI server in this process and
 * Debian's chromium. Per load, from a Chromium trace: navigation -> the page's marks
 * (membrane:interactive, membrane:loaded), the thread CPU of the page's main thread and of the
 * flow worker before each mark, and the main thread's longest task; and the first input, given
 * as soon as the first screenful is painted (while the older flows are still replayed): a click
 * on the newest row, answered when its detail panel shows the flow (Event Timing's duration for
 * the click itself: input to the next paint; 0 when under its 16 ms floor). Builds given with --ab are
 * loaded in turn (A, B, A, B, ...), so a busy machine skews them alike. The Observer's CPU time
 * per load (process.cpuUsage of its process: serving the replay and the follow until loaded) is
 * reported beside the page's threads.
 *
 *   bin/node bench/ui/page.ts [--loads 5] [--ab DIR] [--trace-dir DIR]
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createUiServer } from '../../src/ui/server.ts';
import { launchChromium } from '../../test/integration/ui/browser.ts';
import type { Page } from 'playwright-core';
import { recordTrace, threadCpu, type TraceEvent } from './trace.ts';

const { values } = parseArgs({ options: { loads: { type: 'string', default: '5' }, ab: { type: 'string' }, 'trace-dir': { type: 'string' } } });
const LOADS = Math.max(1, Math.min(30, Number(values.loads)));
const REPO = resolve(import.meta.dirname, '../..');
const traced = (page: Page, during: () => Promise<void>): Promise<TraceEvent[]> =>
  recordTrace(page, during, ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'toplevel', '__metadata', 'blink.user_timing', ...(values['trace-dir'] ? ['v8.execute', 'disabled-by-default-v8.cpu_profiler'] : [])]);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const dir = mkdtempSync(join(os.tmpdir(), 'mb-uipage-'));
const sock = join(dir, 'hubble.sock');
const child = fork(join(REPO, 'bench/ui/replay-server.ts'), ['--serve', join(REPO, 'src'), sock], { execArgv: process.execArgv });
try {
  await new Promise<void>((res, rej) => { child.once('message', () => res()); child.once('exit', (c) => rej(new Error(`observer exited ${c}`))); });
  const builds = [{ name: 'dist/ui', dir: join(REPO, 'dist/ui') }, ...(values.ab ? [{ name: values.ab, dir: resolve(values.ab) }] : [])];
  const servers = builds.map((b) => createUiServer({ port: 0, observer: { kind: 'unix', path: sock }, agentSocket: join(dir, 'no-agent.sock'), assetsDir: b.dir }));
  for (const s of servers) await s.start();
  const b = await launchChromium({ width: 1440, height: 900 });
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const ask = () => new Promise<NodeJS.CpuUsage>((res) => child.once('message', (x) => res(x as NodeJS.CpuUsage)).send('cpu'));
  type R = { server: number; answered: number; clickPaint: number; interactive: number; loaded: number; mainI: number; workerI: number; mainL: number; workerL: number; longestWall: number; longestCpu: number; tti: number };
  const results = builds.map(() => [] as R[]);
  try {
    for (let i = 0; i < LOADS; i++) {
      for (const [k, ui] of servers.entries()) {
        const page = await b.context.newPage();
        await page.addInitScript(`window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); }).observe({ type: 'longtask', buffered: true });
          window.__input = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.name === 'click') window.__input.push(e.duration); }).observe({ type: 'event', durationThreshold: 16, buffered: true });`);
        let answered = 0;
        const c0 = await ask();
        const events = await traced(page, async () => {
          await page.goto(ui.url());
          await page.evaluate(`new Promise((res) => { if (performance.getEntriesByName('membrane:interactive').length) return res(); new PerformanceObserver((l, o) => { if (l.getEntries().some((e) => e.name === 'membrane:interactive')) { o.disconnect(); res(); } }).observe({ type: 'mark' }); })`);
          const t = Date.now();
          await page.locator('[data-testid="flows-body"] .row').first().click();
          await page.locator('[data-testid="flow-dict"]').waitFor({ timeout: 30_000 });
          answered = Date.now() - t;
          await page.evaluate(`new Promise((res) => { const ok = () => document.body.dataset.loaded; if (ok()) return res(); const mo = new MutationObserver(() => { if (ok()) { mo.disconnect(); res(); } }); mo.observe(document.body, { attributes: true, attributeFilter: ['data-loaded'] }); })`);
        });
        const c1 = await ask();
        if (values['trace-dir']) writeFileSync(join(values['trace-dir'], `page-${k}-${i}.json`), JSON.stringify({ traceEvents: events }));
        const m = await page.evaluate(`({ i: performance.getEntriesByName('membrane:interactive')[0].startTime, l: performance.getEntriesByName('membrane:loaded')[0].startTime, long: window.__long, input: window.__input })`) as { i: number; l: number; long: [number, number][]; input: number[] };
        await page.close();
        // the renderer main thread: the CrRendererMain with the most RunTasks; the worker: its DedicatedWorker thread
        const names = new Map<string, string>();
        for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') names.set(`${e.pid}:${e.tid}`, e.args?.name ?? '');
        const count = new Map<string, number>();
        for (const e of events) if (e.name === 'RunTask' && names.get(`${e.pid}:${e.tid}`) === 'CrRendererMain') count.set(`${e.pid}:${e.tid}`, (count.get(`${e.pid}:${e.tid}`) ?? 0) + 1);
        const mainKey = [...count].sort((a, c) => c[1] - a[1])[0]?.[0];
        const workerKey = [...names].find(([k, n]) => n === 'DedicatedWorker thread' && k.split(':')[0] === mainKey?.split(':')[0])?.[0];
        // the marks in trace time: the page's time origin is the trace's navigationStart (one per load)
        const nav = events.find((e) => e.name === 'navigationStart');
        if (!nav) throw new Error('the trace has no navigationStart');
        const navTs = nav.ts;
        const tasks = events.filter((e) => e.name === 'RunTask' && e.ph === 'X' && `${e.pid}:${e.tid}` === mainKey && e.ts < navTs + m.l * 1000);
        const tti = Math.max(m.i, ...m.long.filter(([st]) => st < m.l).map(([st, d]) => st + d));
        results[k]!.push({
          server: (c1.user - c0.user + c1.system - c0.system) / 1000, answered, clickPaint: m.input[0] ?? 0, interactive: m.i, loaded: m.l, tti,
          mainI: threadCpu(events, mainKey, navTs + m.i * 1000), workerI: threadCpu(events, workerKey, navTs + m.i * 1000),
          mainL: threadCpu(events, mainKey, navTs + m.l * 1000), workerL: threadCpu(events, workerKey, navTs + m.l * 1000),
          longestWall: Math.max(0, ...tasks.map((t) => t.dur! / 1000)), longestCpu: Math.max(0, ...tasks.map((t) => (t.tdur ?? 0) / 1000)),
        });
      }
    }
  } finally {
    await b.close();
    for (const s of servers) await s.stop();
  }
  const lines = [
    `Command: \`bin/node bench/ui/page.ts --loads ${LOADS}${values.ab ? ` --ab ${values.ab}` : ''}\``, '',
    `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (load average at start ${load}, at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}), Node ${process.version}, Chromium (Debian) headless 1440x900. A synthetic Observer (10,000 flows, replay-server.ts) behind the UI server; no lab. Medians of ${LOADS} loads${builds.length > 1 ? ', builds loaded in turn' : ''}.`, '',
    '| build | interactive (mark, then no long task to loaded) | first screenful mark | loaded mark | first input at the mark: detail shown / click to next paint | main thread CPU to first screenful / to loaded | worker CPU to first screenful / to loaded | longest main-thread task wall / CPU | Observer process CPU per load |',
    '|---|---|---|---|---|---|---|---|---|',
    ...builds.map((bd, k) => {
      const r = results[k]!;
      const f = (g: (x: R) => number) => median(r.map(g)).toFixed(0);
      return `| ${bd.name} | ${f((x) => x.tti)} ms (${r.map((x) => x.tti.toFixed(0)).join(', ')}) | ${f((x) => x.interactive)} ms | ${f((x) => x.loaded)} ms | ${f((x) => x.answered)} / ${f((x) => x.clickPaint)} ms | ${f((x) => x.mainI)} / ${f((x) => x.mainL)} ms | ${f((x) => x.workerI)} / ${f((x) => x.workerL)} ms | ${f((x) => x.longestWall)} / ${f((x) => x.longestCpu)} ms | ${f((x) => x.server)} ms |`;
    }),
  ];
  process.stdout.write(lines.join('\n') + '\n');
} finally {
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
