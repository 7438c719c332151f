/**
 * The one home of counters incremented per packet, flow, query or request (Hubble metrics, the
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
import { Counter, type Registry } from 'prom-client';

export interface FastCounter {
  /**
   * Adds `n` (default 1) to the series named by `values` (label order). The array may be a reused
   * scratch: it is copied only when the series is new. `n` = 0 creates the series at zero.
   */
  inc(values: readonly string[], n?: number): void;
}

/**
 * Series removal for fast counters (prom-client rebuilds them from here at each scrape, so its own
 * remove() would not last): per registry, the metric names and a function removing the series a
 * predicate selects. Hubble's forgetPod uses it.
 */
export const fastCounterRemovers = new WeakMap<Registry, Map<string, (tied: (labels: Record<string, string>) => boolean) => number>>();

interface Series { values: string[]; n: number }
/** one level per label: value → next level (the last level holds the series) */
type Level = Map<string, Level | Series>;

export function fastCounter(opts: { name: string; help: string; labelNames: readonly string[]; registers: Registry[] }): FastCounter {
  const names = opts.labelNames;
  const depth = names.length;
  const root: Level = new Map();
  /** the series of a counter without labels */
  let only: Series | undefined;

  function each(level: Level, d: number, f: (s: Series, level: Level, key: string) => void): void {
    for (const [k, v] of level) {
      if (d === depth - 1) f(v as Series, level, k);
      else each(v as Level, d + 1, f);
    }
  }
  const labelsOf = (s: Series): Record<string, string> => {
    const labels: Record<string, string> = {};
    for (let i = 0; i < depth; i++) labels[names[i]!] = s.values[i] ?? '';
    return labels;
  };
  function prune(level: Level, d: number): void {
    if (d === depth - 1) return;
    for (const [k, v] of level) {
      prune(v as Level, d + 1);
      if ((v as Level).size === 0) level.delete(k);
    }
  }
  const remover = (tied: (labels: Record<string, string>) => boolean): number => {
    let n = 0;
    if (depth === 0) {
      if (only && tied({})) { only = undefined; n++; }
      return n;
    }
    each(root, 0, (s, level, key) => { if (tied(labelsOf(s))) { level.delete(key); n++; } });
    prune(root, 0);
    return n;
  };
  for (const r of opts.registers) {
    let m = fastCounterRemovers.get(r);
    if (!m) fastCounterRemovers.set(r, (m = new Map()));
    m.set(opts.name, remover);
  }
  new Counter({
    name: opts.name, help: opts.help, labelNames: [...names], registers: opts.registers,
    collect() {
      this.reset();
      if (depth === 0) { if (only) this.inc(only.n); return; }
      each(root, 0, (s) => this.inc(labelsOf(s), s.n));
    },
  });
  return {
    inc(values, n = 1) {
      if (depth === 0) {
        if (only) only.n += n;
        else only = { values: [], n };
        return;
      }
      let level = root;
      const last = depth - 1;
      for (let i = 0; i < last; i++) {
        const k = values[i] ?? '';
        let next = level.get(k) as Level | undefined;
        if (!next) level.set(k, (next = new Map()));
        level = next;
      }
      const k = values[last] ?? '';
      const s = level.get(k) as Series | undefined;
      if (s) s.n += n;
      else level.set(k, { values: values.slice(0, depth), n });
    },
  };
}
