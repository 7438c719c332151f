/**
 * Chromium performance traces for the UI benches (run.ts, page.ts): recording one over CDP while
 * `during` runs, and the CPU a thread spent in it.
 */
import type { CDPSession, Page } from 'playwright-core';

export interface TraceEvent { name: string; ph: string; pid: number; tid: number; ts: number; dur?: number; tdur?: number; args?: { name?: string; data?: { name?: string } } }

/** The trace events of `categories` recorded while `during` runs. */
export async function recordTrace(page: Page, during: () => Promise<void>, categories: string[]): Promise<TraceEvent[]> {
  const cdp: CDPSession = await page.context().newCDPSession(page);
  const events: TraceEvent[] = [];
  // playwright's CDPSession types name only its own events; these are Chromium's
  const on = cdp as unknown as { on(ev: string, fn: (m: { value: TraceEvent[] }) => void): void; once(ev: string, fn: () => void): void };
  on.on('Tracing.dataCollected', (m) => { for (const e of m.value) events.push(e); });
  const done = new Promise<void>((res) => on.once('Tracing.tracingComplete', () => res()));
  await cdp.send('Tracing.start', { transferMode: 'ReportEvents', traceConfig: { includedCategories: categories } });
  await during();
  await cdp.send('Tracing.end');
  await done;
  await cdp.detach();
  return events;
}

/** Thread CPU ms of one thread's top-level slices (nested slices are inside their parent) that start before `untilTs` (trace µs). */
export function threadCpu(events: TraceEvent[], key: string | undefined, untilTs = Infinity): number {
  if (!key) return 0;
  const xs = events.filter((e) => e.ph === 'X' && e.dur !== undefined && e.tdur !== undefined && `${e.pid}:${e.tid}` === key && e.ts < untilTs).sort((a, c) => a.ts - c.ts);
  let end = -Infinity;
  let sum = 0;
  for (const e of xs) {
    if (e.ts < end) continue;
    end = e.ts + e.dur!;
    sum += e.tdur! / 1000;
  }
  return sum;
}
