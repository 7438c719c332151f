/**
 * bench/ui: the web UI under load, in Debian's chromium, on a real lab.
 *
 *   1. Star Wars demo with rule1 (L3/L4); the node's Hubble ring sized 16383
 *      (MEMBRANE_HUBBLE_EVENT_BUFFER_CAPACITY) and filled with >= 10,000 real flows: the xwing's
 *      UDP datagrams to a deathstar pod, each dropped by policy (a policy-verdict and a drop flow).
 *   2. Load: a fresh page, navigation start -> interactive (the newest screenful of flows in the
 *      table and on the map, painted: `membrane:interactive`; no long task after it) and -> the
 *      ring's 10,000 flows decoded, folded in and painted (`membrane:loaded`); then
 *      one input (open a flow's detail) and its response time. Median of --loads runs.
 *   3. Live: with the page open and following, the xwing sends --rate datagrams/s (2 flows each)
 *      for --secs seconds while a Chromium performance trace records; frames are the intervals
 *      between the renderer main thread's BeginMainThreadFrame events while the page animates (a
 *      requestAnimationFrame loop asks for a frame every vsync, as a user scrolling would), plus
 *      the renderer main thread's longest task.
 *
 *   bin/node bench/ui/run.ts [--loads 5] [--rate 1000] [--secs 10] [--debug] [--trace-dir DIR] [--ab DIR] [--event-budget N]
 *
 * --ab DIR measures a second build of the UI (a copy of another commit's dist/ui) in the same
 * run, against the same lab and ring, right after this one: an A/B that a busy machine skews less
 * than two runs apart. Thread CPU times from the trace (what contention does not add) are
 * reported beside the wall times.
 */
import { parseArgs } from 'node:util';
import os from 'node:os';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, REPO } from '../../test/integration/support/lab.ts';
import { launchChromium } from '../../test/integration/ui/browser.ts';
import { createUiServer } from '../../src/ui/server.ts';
import { observerClient } from '../../src/hubble/client.ts';
import { BpfMap, closeFd } from '../../src/sys/bpf.ts';
import { readCounters, perCpuCounter } from '../../src/datapath/linux/statsmap.ts';
import type { Page } from 'playwright-core';
import { recordTrace, threadCpu, type TraceEvent } from './trace.ts';

const { values } = parseArgs({ options: { loads: { type: 'string', default: '5' }, rate: { type: 'string', default: '1000' }, secs: { type: 'string', default: '10' }, debug: { type: 'boolean' }, nice: { type: 'string' }, 'trace-dir': { type: 'string' }, ab: { type: 'string' }, 'event-budget': { type: 'string' } } });
const LOADS = Math.max(1, Math.min(20, Number(values.loads)));
const RATE = Math.max(1, Math.min(5000, Number(values.rate)));
const SECS = Math.max(1, Math.min(60, Number(values.secs)));
const RING = 16383;
const FILL_FLOWS = 10_000;

const lab = new TestLab(`uibench${process.pid % 10000}`);
lab.env.MEMBRANE_HUBBLE_EVENT_BUFFER_CAPACITY = String(RING);
/**
 * Each sender's datapath event budget (MEMBRANE_BPF_EVENTS_DEFAULT_RATE_LIMIT, 1000 events/s by
 * default): one xwing sends all the load, 2 events per datagram, so the default budget passes
 * only half of the flows at --rate 1000 (the rest are counted as lost in the kernel; the stage
 * counts below show it). The bench measures the UI at the offered rate, so by default the budget
 * covers it (4 x the offered events/s, burst as much); --event-budget N sets it (0: none).
 */
const EVENT_BUDGET = values['event-budget'] !== undefined ? Math.max(0, Number(values['event-budget'])) : 4 * 2 * RATE;
lab.env.MEMBRANE_BPF_EVENTS_DEFAULT_RATE_LIMIT = String(EVENT_BUDGET);
lab.env.MEMBRANE_BPF_EVENTS_DEFAULT_BURST_LIMIT = String(Math.max(1000, EVENT_BUDGET));
const EX = join(REPO, 'examples/starwars');
const SENDER = join(REPO, 'bench/ui/sender.ts');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const say = (s: string) => process.stderr.write(`bench/ui: ${s}\n`);

async function trace(page: Page, during: () => Promise<void>, name = 'trace'): Promise<TraceEvent[]> {
  const events = await recordTrace(page, during, ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'disabled-by-default-devtools.timeline.frame', 'toplevel', '__metadata', ...(values['trace-dir'] ? ['v8.execute', 'disabled-by-default-v8.cpu_profiler'] : [])]);
  // --trace-dir: the whole trace, for Chromium's DevTools (Performance > Load profile) or a script
  if (values['trace-dir']) writeFileSync(join(values['trace-dir'], `${name}.json`), JSON.stringify({ traceEvents: events }));
  return events;
}

/**
 * Waits for the page's "loaded" (body[data-loaded]) without polling: playwright's waitForSelector
 * queries the DOM on every animation frame, which in the load traces was tens of ms of the page's
 * main-thread CPU, charged to the page being measured. A MutationObserver costs nothing until it fires.
 */
async function loadedOn(page: Page): Promise<void> {
  await page.waitForLoadState('domcontentloaded');
  await page.evaluate(`new Promise((res, rej) => {
    if (document.body.dataset.loaded) return res();
    const mo = new MutationObserver(() => { if (document.body.dataset.loaded) { mo.disconnect(); res(); } });
    mo.observe(document.body, { attributes: true, attributeFilter: ['data-loaded'] });
    setTimeout(() => rej(new Error('the page did not load its flows in 30 s')), 30000);
  })`);
}

/** Pids of the processes below `pid` (from /proc), excluding `pid` itself. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const [c, pp] of parent) if (pp === p) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

/** The renderer main thread's tasks (the CrRendererMain with the most): wall and thread-CPU ms. */
function mainThreadTasks(events: TraceEvent[]): { key: string | undefined; wall: number[]; cpu: number[] } {
  const names = new Map<string, string>();
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') names.set(`${e.pid}:${e.tid}`, e.args?.name ?? '');
  const by = new Map<string, { wall: number[]; cpu: number[] }>();
  for (const e of events) {
    if (e.name !== 'RunTask' || e.ph !== 'X' || e.dur === undefined) continue;
    const k = `${e.pid}:${e.tid}`;
    if (names.get(k) !== 'CrRendererMain') continue;
    let l = by.get(k);
    if (!l) by.set(k, (l = { wall: [], cpu: [] }));
    l.wall.push(e.dur / 1000);
    if (e.tdur !== undefined) l.cpu.push(e.tdur / 1000);
  }
  const best = [...by.entries()].sort((a, c) => c[1].wall.length - a[1].wall.length)[0];
  return { key: best?.[0], wall: best?.[1].wall ?? [], cpu: best?.[1].cpu ?? [] };
}

/** The flow worker's thread (a DedicatedWorker of the renderer with the main thread `mainKey`). */
function workerKey(events: TraceEvent[], mainKey: string | undefined): string | undefined {
  const pid = mainKey?.split(':')[0];
  const keys = new Set<string>();
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name' && String(e.pid) === pid && e.args?.name === 'DedicatedWorker thread') keys.add(`${e.pid}:${e.tid}`);
  // the busiest one, should there be more
  let best: string | undefined;
  let most = -1;
  for (const k of keys) {
    const c = threadCpu(events, k);
    if (c > most) [best, most] = [k, c];
  }
  return best;
}

/** Where the live window's events went: the datapath's counters (pinned mb_stats, mb_lost). */
function datapathCounts(pinRoot: string): { emitted: bigint; limited: bigint; ringFull: bigint } {
  const stats = BpfMap.fromPin(join(pinRoot, 'mb_stats'));
  const lost = BpfMap.fromPin(join(pinRoot, 'mb_lost'));
  try {
    const c = readCounters(stats);
    return { emitted: c.events, limited: c.eventsRateLimited, ringFull: perCpuCounter(lost, 0) };
  } finally {
    closeFd(stats.fd);
    closeFd(lost.fd);
  }
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const loadAvg = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  await lab.up();
  await lab.ok(['apply', '-f', join(EX, 'http-sw-app.yaml'), join(EX, 'sw_l3_l4_policy.yaml')]);
  await lab.settle();
  const ips = await lab.podIPs();
  const target = Object.entries(ips).find(([k]) => k.startsWith('default/deathstar-'))![1];
  const paths = lab.paths;
  const observer = observerClient({ kind: 'unix', path: paths.hubbleSocket('node1') });
  const numFlows = async () => Number((await observer.serverStatus({})).numFlows);
  const send = (rate: number, count: number) => lab.exec('default', 'xwing', [join(REPO, 'bin/node'), SENDER, '--to', `${target}:9`, '--rate', String(rate), '--count', String(count)], 120_000);

  say(`filling the ring (${RING}) with >= ${FILL_FLOWS} flows`);
  for (let i = 0; i < 10 && (await numFlows()) < FILL_FLOWS + 200; i++) await send(2000, 2600);
  const ringFlows = await numFlows();
  const status = await observer.serverStatus({});
  if (ringFlows < FILL_FLOWS) throw new Error(`the ring holds ${ringFlows} flows, fewer than ${FILL_FLOWS}`);

  const builds = [{ name: 'dist/ui', dir: join(REPO, 'dist/ui') }, ...(values.ab ? [{ name: values.ab, dir: values.ab }] : [])];
  const servers = builds.map((x) => createUiServer({ port: 0, observer: { kind: 'unix', path: paths.hubbleSocket('node1') }, agentSocket: paths.agentSocket('node1'), assetsDir: x.dir, labels: { lab: lab.name, node: 'node1' } }));
  for (const ui of servers) await ui.start();
  const b = await launchChromium({ width: 1440, height: 900 });
  if (values.nice) {
    // a variant that shows what the other work on the 2 shared cores costs the page: this
    // process's chromium descendants get priority (renice), nothing else is touched
    const mine = descendants(process.pid).filter((pid) => {
      try { return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('chrom'); } catch { return false; }
    });
    await new Promise<void>((res, rej) => execFile('renice', ['-n', values.nice!, '-p', ...mine.map(String)], (e) => (e ? rej(e) : res())));
    say(`reniced ${mine.length} chromium processes to ${values.nice}`);
  }
  const p = (xs: number[], q: number) => [...xs].sort((a, c) => a - c)[Math.min(xs.length - 1, Math.floor(xs.length * q))] ?? 0;

  /** Loads and live of one build; its table's rows. */
  async function measure(ui: (typeof servers)[number], build: string): Promise<string[]> {
    const tag = builds.length > 1 ? `${builds.findIndex((x) => x.name === build)}-` : '';
    const loads: { cpuLongest: number; cpuOver50: number; cpuMain: number; cpuWorker: number; loaded: number; tti: number; interactive: number; replay: number; flows: number; input: number; longTasks: number; longest: number }[] = [];
    for (let i = 0; i < LOADS; i++) {
      const page = await b.context.newPage();
      // in the page (strings: this file is compiled without the DOM library)
      await page.addInitScript(`window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); }).observe({ type: 'longtask', buffered: true });`);
      const loadEvents = await trace(page, async () => {
        await page.goto(ui.url());
        await loadedOn(page);
      }, `load-${tag}${i}`);
      const lt = mainThreadTasks(loadEvents);
      const m = await page.evaluate(`({ loaded: performance.getEntriesByName('membrane:loaded')[0].startTime, interactive: performance.getEntriesByName('membrane:interactive')[0].startTime, flows: Number(document.body.dataset.loaded), replay: Number(document.body.dataset.replayMs), long: window.__long })`) as { loaded: number; interactive: number; flows: number; replay: number; long: [number, number][] };
      // interactive (as Lighthouse's TTI): the first table and map painted (the page marks it
      // three frames after posting them), and no long task after that point up to the loaded mark
      const tti = Math.max(m.interactive, ...m.long.map(([st, d]) => st + d));
      const tIn = Date.now();
      await page.locator('[data-testid="flows-body"] .row').first().click();
      await page.locator('[data-testid="flow-dict"]').waitFor({ timeout: 10_000 });
      loads.push({
        cpuLongest: Math.max(0, ...lt.cpu), cpuOver50: lt.cpu.filter((c) => c > 50).length, cpuMain: threadCpu(loadEvents, lt.key), cpuWorker: threadCpu(loadEvents, workerKey(loadEvents, lt.key)),
        loaded: m.loaded, tti, interactive: m.interactive, replay: m.replay, flows: m.flows, input: Date.now() - tIn, longTasks: m.long.length, longest: Math.max(0, ...m.long.map(([, d]) => d)),
      });
      await page.close();
    }

    // live: page open and following, flows arriving at 2 x RATE per second
    const page = await b.context.newPage();
    await page.goto(ui.url());
    await loadedOn(page);
    await page.evaluate(`(() => {
      window.__gaps = []; window.__stop = false;
      let last = performance.now();
      const tick = (t) => { window.__gaps.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
    })()`);
    let sent = { sent: 0, seconds: 0 };
    const receivedAt = async () => Number(/· ([\d,]+) flows/.exec((await page.locator('[data-testid="stream-state"]').textContent()) ?? '')?.[1]?.replace(/,/g, '') ?? 0);
    const r0 = await receivedAt();
    const dp0 = datapathCounts(paths.pinRoot('node1'));
    const seen0 = Number((await observer.serverStatus({})).seenFlows);
    const events = await trace(page, async () => {
      const out = await send(RATE, RATE * SECS);
      sent = JSON.parse(out.stdout.trim().split('\n').pop()!) as typeof sent;
      await page.waitForTimeout(1000);
    }, `live${tag ? `-${tag.slice(0, -1)}` : ''}`);
    const r1 = await receivedAt();
    const dp1 = datapathCounts(paths.pinRoot('node1'));
    const seen1 = Number((await observer.serverStatus({})).seenFlows);
    const gaps = await page.evaluate(`(() => { window.__stop = true; return window.__gaps.slice(1); })()`) as number[];
    await page.close();

    const mt = mainThreadTasks(events);
    const mainTasks = mt.wall;
    const mainCpu = mt.cpu;
    const mainKey = mt.key;
    const liveMainCpu = threadCpu(events, mainKey);
    const liveWorkerCpu = threadCpu(events, workerKey(events, mainKey));
    const liveFlows = Math.max(1, r1 - r0);
    if (values.debug) {
      // what the longest main-thread tasks spent their time on
      const onMain = events.filter((e) => `${e.pid}:${e.tid}` === mainKey && e.ph === 'X' && e.dur !== undefined);
      const long = onMain.filter((e) => e.name === 'RunTask' && e.dur! > 50_000).sort((a, c) => c.dur! - a.dur!).slice(0, 5);
      for (const t of long) {
        const inner = onMain.filter((e) => e !== t && e.ts >= t.ts && e.ts + e.dur! <= t.ts + t.dur!).sort((a, c) => c.dur! - a.dur!).slice(0, 8);
        say(`${build}: long task ${(t.dur! / 1000).toFixed(1)} ms (cpu ${((t.tdur ?? 0) / 1000).toFixed(1)}): ${inner.map((e) => `${e.name} ${(e.dur! / 1000).toFixed(1)}`).join(', ')}`);
      }
    }
    // frames: the renderer main thread begins one per vsync while the page animates; an interval
    // over 50 ms between two of them is a frame that took over 50 ms
    const begins = events.filter((e) => e.name === 'BeginMainThreadFrame' && `${e.pid}:${e.tid}` === mainKey).map((e) => e.ts).sort((a, c) => a - c);
    const frames = begins.slice(1).map((t, i) => (t - begins[i]!) / 1000);
    const draws = events.filter((e) => e.name === 'DrawFrame').length;

    const loaded = median(loads.map((l) => l.loaded));
    const tti = median(loads.map((l) => l.tti));
    return [
      ...(builds.length > 1 ? [`**build ${build}**`, ''] : []),
      '| measure | result | goal | |',
      '|---|---|---|---|',
      `| navigation -> interactive: controls mounted, the table and the map painted with the newest flows (a screenful), no long task after, to the end of the replay (median of ${LOADS}) | ${tti.toFixed(0)} ms (runs: ${loads.map((l) => l.tti.toFixed(0)).join(', ')}) | <= 1000 ms | ${tti <= 1000 ? 'ok' : 'MISSED'} |`,
      `| navigation -> all 10,000 flows on the map and in the table, painted (median of ${LOADS}) | ${loaded.toFixed(0)} ms (runs: ${loads.map((l) => l.loaded.toFixed(0)).join(', ')}) | | |`,
      `| of which: first screenful painted (the page's membrane:interactive mark) / the worker's whole replay (first request to last flow decoded) | ${median(loads.map((l) => l.interactive)).toFixed(0)} ms / ${median(loads.map((l) => l.replay)).toFixed(0)} ms | | |`,
      `| flows on the page at that mark | ${loads.map((l) => l.flows).join(', ')} | 10,000 | |`,
      `| first input after load (open a flow's detail), median | ${median(loads.map((l) => l.input)).toFixed(0)} ms | | |`,
      `| long tasks (> 50 ms) during load, median count / longest (wall) | ${median(loads.map((l) => l.longTasks))} / ${median(loads.map((l) => l.longest)).toFixed(0)} ms | | |`,
      `| longest main-thread task during load, CPU time of the thread (median) / tasks over 50 ms of CPU (median count) | ${median(loads.map((l) => l.cpuLongest)).toFixed(1)} ms / ${median(loads.map((l) => l.cpuOver50))} | | |`,
      `| load: CPU time of the page's main thread / of the flow worker's thread, navigation to loaded (median) | ${median(loads.map((l) => l.cpuMain)).toFixed(0)} ms / ${median(loads.map((l) => l.cpuWorker)).toFixed(0)} ms | | |`,
      `| live: flows received by the page | ${(r1 - r0).toLocaleString('en-US')} in ${sent.seconds.toFixed(1)} s of sending (${((r1 - r0) / (sent.seconds + 1)).toFixed(0)}/s over the traced window, ${sent.sent} datagrams) | ${(2 * RATE).toLocaleString('en-US')}/s | |`,
      `| live: events at each stage: offered (2 per datagram) / emitted by BPF to the ring / held back by the sender's event budget / lost to a full BPF ring / flows Hubble decoded (seen_flows) / flows the page received | ${2 * sent.sent} / ${dp1.emitted - dp0.emitted} / ${dp1.limited - dp0.limited} / ${dp1.ringFull - dp0.ringFull} / ${seen1 - seen0} / ${r1 - r0} | | |`,
      `| live: frames (trace: intervals between the renderer's BeginMainThreadFrame) | ${frames.length} frames (${draws} drawn), p50 ${p(frames, 0.5).toFixed(1)} ms, p99 ${p(frames, 0.99).toFixed(1)} ms, max ${Math.max(0, ...frames).toFixed(1)} ms, ${frames.filter((f) => f > 50).length} over 50 ms | none > 50 ms | ${frames.length && Math.max(...frames) <= 50 ? 'ok' : 'MISSED'} |`,
      `| live: requestAnimationFrame gaps in the page | ${gaps.length} frames, max ${Math.max(0, ...gaps).toFixed(1)} ms, ${gaps.filter((g) => g > 50).length} over 50 ms | | |`,
      `| live: renderer main thread tasks, wall time | ${mainTasks.length} tasks, longest ${Math.max(0, ...mainTasks).toFixed(1)} ms, ${mainTasks.filter((d) => d > 50).length} over 50 ms | | |`,
      `| live: the same tasks, CPU time of the thread (what contention for the 2 cores does not add) | longest ${Math.max(0, ...mainCpu).toFixed(1)} ms, p99 ${p(mainCpu, 0.99).toFixed(1)} ms, ${mainCpu.filter((d) => d > 50).length} over 50 ms, ${mainCpu.filter((d) => d > 16.7).length} over 16.7 ms | | |`,
      `| live: CPU time per 1,000 flows received, page's main thread / flow worker's thread | ${((liveMainCpu * 1000) / liveFlows).toFixed(1)} ms / ${((liveWorkerCpu * 1000) / liveFlows).toFixed(1)} ms | | |`,
      '',
    ];
  }

  try {
    const lines = [
      `Command: \`bin/node bench/ui/run.ts --loads ${LOADS} --rate ${RATE} --secs ${SECS}${values.nice ? ` --nice=${values.nice}` : ''}${values.ab ? ` --ab ${values.ab}` : ''}\``,
      '',
      `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (load average at start ${loadAvg}), Node ${process.version}, Chromium (Debian) headless 1440x900, 2 vCPU shared with the lab (agent, workloads), the UI server and other work on the machine${values.nice ? `; chromium's processes reniced to ${values.nice}` : ''}. Each sender's datapath event budget ${EVENT_BUDGET ? `${EVENT_BUDGET} events/s` : 'off'} (MEMBRANE_BPF_EVENTS_DEFAULT_RATE_LIMIT). Ring ${Number(status.maxFlows)} slots holding ${ringFlows} real flows (xwing -> deathstar UDP datagrams dropped by rule1: policy-verdict + drop flow each). The page replays the last 10,000 matching flows, then follows.${builds.length > 1 ? ` Two builds of the UI, measured one after the other against the same ring: ${builds.map((x) => x.name).join(' then ')}.` : ''}`,
      '',
    ];
    for (const [k, x] of builds.entries()) {
      lines.push(...await measure(servers[k]!, x.name));
      say(`measured ${x.name} (load average now ${os.loadavg().map((l) => l.toFixed(2)).join(' ')})`);
    }
    lines.push(`Total bench time ${((Date.now() - t0) / 1000).toFixed(0)} s.`);
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await b.close();
    for (const ui of servers) await ui.stop();
  }
}

try {
  await main();
} finally {
  await lab.down();
}
