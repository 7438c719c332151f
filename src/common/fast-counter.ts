/**
 * The one home of counters (and histograms) incremented per packet, flow, query or request (Hubble metrics, the
 * agent's cilium_* counters, the proxies). prom-client hashes the label object on every inc (also
 * through a labels() child, which allocates one per call); here the counts live in a tree of Maps
 * keyed by each label value in turn, so a counted series is found with one Map.get per label and
 * no allocation: the caller fills a scratch array it owns and reuses. The counts are copied into
 * the prom-client Counter when the registry is scraped (collect).
 *
 *   const c = fastCounter({ name: 'x_total', help: '…', labelNames: ['a', 'b'], registers: [r] });
 *   const v = ['', ''];              // once
 *   v[0] = a; v[1] = b; c.inc(v);    // per event
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { MembraneError } from './errors.ts';

export interface FastCounter {
  /**
   * Adds `n` (default 1) to the series named by `values` (label order). The array may be a reused
   * scratch: it is copied only when the series is new. `n` = 0 creates the series at zero.
   */
  inc(values: readonly string[], n?: number): void;
  /**
   * inc, with `hint`: an object that stands for the series on the caller's side (e.g. the shared
   * message of a DNS flow). The series last counted with it is compared label by label with
   * `values` (the same strings, mostly: pointer compares) and counted on a match, without the walk
   * of one Map.get per label; otherwise inc's walk, and the hint then stands for that series. Only
   * a shortcut: the count always goes to the series `values` name.
   */
  incAt(hint: object, values: readonly string[], n?: number): void;
}

/**
 * Series removal for fast counters (prom-client rebuilds them from here at each scrape, so its own
 * remove() would not last): per registry, the metric names and a function removing the series a
 * predicate selects. Hubble's forgetPod uses it.
 */
export const fastCounterRemovers = new WeakMap<Registry, Map<string, (tied: (labels: Record<string, string>) => boolean) => number>>();

/**
 * The series of one metric, found by walking one Map level per label value: a counted event does
 * one Map.get per label and allocates only when its series is new (then `values` is copied, so the
 * caller's scratch array can be reused).
 */
interface SeriesTree<S extends { values: string[] }> {
  get(values: readonly string[]): S;
  each(f: (s: S) => void): void;
  /** removes the series whose labels `tied` selects; returns how many */
  remove(tied: (labels: Record<string, string>) => boolean): number;
  labelsOf(s: S): Record<string, string>;
}

/** one level per label: value → next level (the last level holds the series) */
type Level<S> = Map<string, Level<S> | S>;

function seriesTree<S extends { values: string[] }>(names: readonly string[], make: (values: string[]) => S): SeriesTree<S> {
  const depth = names.length;
  const root: Level<S> = new Map();
  /** the series of a metric without labels */
  let only: S | undefined;
  /** every series in creation order: scraped in the order prom-client itself would print them */
  let order: S[] = [];

  function walk(level: Level<S>, d: number, f: (s: S, level: Level<S>, key: string) => void): void {
    for (const [k, v] of level) {
      if (d === depth - 1) f(v as S, level, k);
      else walk(v as Level<S>, d + 1, f);
    }
  }
  function prune(level: Level<S>, d: number): void {
    if (d === depth - 1) return;
    for (const [k, v] of level) {
      prune(v as Level<S>, d + 1);
      if ((v as Level<S>).size === 0) level.delete(k);
    }
  }
  const labelsOf = (s: S): Record<string, string> => {
    const labels: Record<string, string> = {};
    for (let i = 0; i < depth; i++) labels[names[i]!] = s.values[i] ?? '';
    return labels;
  };
  return {
    get(values) {
      if (depth === 0) return only ?? (only = make([]));
      let level = root;
      const last = depth - 1;
      for (let i = 0; i < last; i++) {
        const k = values[i] ?? '';
        let next = level.get(k) as Level<S> | undefined;
        if (!next) level.set(k, (next = new Map()));
        level = next;
      }
      const k = values[last] ?? '';
      let s = level.get(k) as S | undefined;
      if (!s) { level.set(k, (s = make(values.slice(0, depth)))); order.push(s); }
      return s;
    },
    each(f) {
      if (depth === 0) { if (only) f(only); return; }
      for (const s of order) f(s);
    },
    remove(tied) {
      let n = 0;
      if (depth === 0) {
        if (only && tied({})) { only = undefined; n++; }
        return n;
      }
      const gone = new Set<S>();
      walk(root, 0, (s, level, key) => { if (tied(labelsOf(s))) { level.delete(key); gone.add(s); n++; } });
      prune(root, 0);
      if (gone.size) order = order.filter((s) => !gone.has(s));
      return n;
    },
    labelsOf,
  };
}

function registerRemover(name: string, registers: Registry[], remove: (tied: (labels: Record<string, string>) => boolean) => number): void {
  for (const r of registers) {
    let m = fastCounterRemovers.get(r);
    if (!m) fastCounterRemovers.set(r, (m = new Map()));
    m.set(name, remove);
  }
}

interface CounterSeries { values: string[]; n: number }

export function fastCounter(opts: { name: string; help: string; labelNames: readonly string[]; registers: Registry[] }): FastCounter {
  const tree = seriesTree<CounterSeries>(opts.labelNames, (values) => ({ values, n: 0 }));
  /** incAt's hints: the series last counted with each (forgotten at any removal: a removed series is no longer scraped) */
  let hinted = new WeakMap<object, CounterSeries>();
  const depth = opts.labelNames.length;
  registerRemover(opts.name, opts.registers, (tied) => {
    const n = tree.remove(tied);
    if (n > 0) hinted = new WeakMap();
    return n;
  });
  const unlabelled = opts.labelNames.length === 0;
  new Counter({
    name: opts.name, help: opts.help, labelNames: [...opts.labelNames], registers: opts.registers,
    collect() {
      this.reset();
      tree.each((s) => { if (unlabelled) this.inc(s.n); else this.inc(tree.labelsOf(s), s.n); });
    },
  });
  return {
    inc(values, n = 1) { tree.get(values).n += n; },
    incAt(hint, values, n = 1) {
      let s = hinted.get(hint);
      if (s !== undefined) {
        const sv = s.values;
        for (let i = 0; i < depth; i++) {
          if ((values[i] ?? '') !== (sv[i] ?? '')) { s = undefined; break; }
        }
      }
      if (s === undefined) hinted.set(hint, (s = tree.get(values)));
      s.n += n;
    },
  };
}

/**
 * The series map of a prom-client Histogram, which fastHistogram fills at each scrape: private in
 * prom-client 15 (`hashMap`, rendered by getForPromString). A prom-client without it gets a coded
 * error instead of histograms silently exported empty.
 */
export function promHistogramSeries(h: object, name: string): Record<string, unknown> {
  const m = (h as { hashMap?: unknown }).hashMap;
  if (typeof m !== 'object' || m === null || Array.isArray(m) || typeof (h as { getForPromString?: unknown }).getForPromString !== 'function') {
    throw new MembraneError('METRICS_HISTOGRAM_SHAPE', `histogram ${name}: prom-client's Histogram has no series map (hashMap, getForPromString) for fastHistogram to fill`, {
      hint: 'src/common/fast-counter.ts fills prom-client 15\'s private Histogram.hashMap at scrape: keep prom-client at 15.x (package.json) or port fastHistogram to the new version',
    });
  }
  return m as Record<string, unknown>;
}

/**
 * observeSlot()'s value, written here by the caller: a double handed to a call TurboFan does not
 * inline is a new heap number per call (the http metric's seconds, one per HTTP response: 16 B of
 * the agent's garbage per response when observe() was not inlined into the handler).
 */
export const OBSERVE_SLOT = new Float64Array(1);

export interface FastHistogram {
  /** Observes `value` in the series named by `values` (label order; a reusable scratch, as inc). */
  observe(value: number, values: readonly string[]): void;
  /** observe(OBSERVE_SLOT[0], values) */
  observeSlot(values: readonly string[]): void;
}

interface HistogramSeries { values: string[]; buckets: Float64Array; sum: number; count: number }

/**
 * A histogram kept like fastCounter: per series the bucket counts (per bound, not cumulative), sum
 * and count, copied into the prom-client Histogram when it is scraped. prom-client's own observe
 * builds and hashes a label object per call (~1 KB of garbage per observation).
 */
export function fastHistogram(opts: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[]; registers: Registry[] }): FastHistogram {
  const bounds = opts.buckets;
  const tree = seriesTree<HistogramSeries>(opts.labelNames, (values) => ({ values, buckets: new Float64Array(bounds.length), sum: 0, count: 0 }));
  registerRemover(opts.name, opts.registers, tree.remove);
  const hist = new Histogram({
    name: opts.name, help: opts.help, labelNames: [...opts.labelNames], buckets: [...bounds], registers: opts.registers,
    collect() {
      // prom-client 15 (pinned) keeps a histogram's series in `hashMap`, keyed by its label hash:
      // { labels, bucketValues (per bound, not cumulative), sum, count }; rebuilt here from the
      // series above (the key only has to be unique per series). reset() replaces the map.
      this.reset();
      const series = promHistogramSeries(this, opts.name);
      let i = 0;
      tree.each((s) => {
        const bucketValues: Record<number, number> = {};
        for (let b = 0; b < bounds.length; b++) bucketValues[bounds[b]!] = s.buckets[b]!;
        series[`s${i++}`] = { labels: tree.labelsOf(s), bucketValues, sum: s.sum, count: s.count };
      });
    },
  });
  // checked when made (the agent's start), not first at a scrape: another prom-client fails loudly
  promHistogramSeries(hist, opts.name);
  const observeSlot = (values: readonly string[]): void => {
    const value = OBSERVE_SLOT[0]!;
    const s = tree.get(values);
    s.sum += value;
    s.count++;
    // the first bound at or above the value (above the last bound: in +Inf only)
    for (let b = 0; b < bounds.length; b++) if (value <= bounds[b]!) { s.buckets[b]!++; break; }
  };
  return {
    observe(value, values) {
      OBSERVE_SLOT[0] = value;
      observeSlot(values);
    },
    observeSlot,
  };
}
