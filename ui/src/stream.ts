/**
 * The flow worker, started before the page renders (the stream's first bytes race the UI's
 * own start-up); messages that arrive before the page listens are held for it.
 */
import type { FromWorker, ToWorker } from './worker-protocol.ts';
import { NO_FILTERS, type UiFilters } from './model/filter-input.ts';

export const worker = new Worker(new URL('./flow-worker.ts', import.meta.url), { type: 'module' });
let listener: ((m: FromWorker) => void) | undefined;
const early: FromWorker[] = [];
worker.onmessage = (ev: MessageEvent<FromWorker>) => {
  if (listener) listener(ev.data);
  else early.push(ev.data);
};

export function listen(fn: (m: FromWorker) => void): void {
  listener = fn;
  for (const m of early.splice(0)) fn(m);
}

export const send = (m: ToWorker) => worker.postMessage(m);

/** The filters in the page's address (shared links keep their view). */
export function filtersFromUrl(): UiFilters {
  const q = new URLSearchParams(location.search);
  const f = { ...NO_FILTERS };
  for (const k of Object.keys(f) as (keyof UiFilters)[]) {
    const v = q.get(k);
    if (v !== null) (f as Record<string, string>)[k] = v;
  }
  return f;
}

export const INITIAL_FLOWS = 10_000;
export const FIRST_GENERATION = 1;
export const firstFilters = filtersFromUrl();
send({ type: 'start', generation: FIRST_GENERATION, filters: firstFilters, number: INITIAL_FLOWS });
