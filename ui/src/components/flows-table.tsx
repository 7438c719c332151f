/**
 * The live flows table, newest first, virtualized: the rows live in the flow worker and the
 * table asks it for the window in view (only those rows reach the page and its DOM, so 10,000
 * rows cost as much as 30). Up/Down move between rows, Enter opens one.
 */
import { memo } from 'preact/compat';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { FlowRow } from '../model/rows.ts';
import type { TableView } from '../app.tsx';

const ROW_H = 24;
const OVERSCAN = 8;

const VERDICT_CLASS: Record<number, string> = { 1: 'forwarded', 2: 'dropped', 3: 'error', 4: 'audit', 5: 'redirected', 6: 'forwarded', 7: 'forwarded' };

export const FlowsTable = memo(function FlowsTable(p: { view: TableView; paused: boolean; selected: string | undefined; onSelect: (r: FlowRow) => void; onWindow: (from: number, count: number) => void }) {
  const scroller = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [height, setHeight] = useState(300);
  const [cursor, setCursor] = useState(0);
  const n = p.view.total;

  useEffect(() => {
    const el = scroller.current!;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const want = Math.ceil(height / ROW_H) + 2 * OVERSCAN;
  const last = Math.min(n, first + want);
  useEffect(() => p.onWindow(first, want), [first, want]);
  const at = (i: number) => p.view.rows[i - p.view.from];

  const focusRow = (i: number) => {
    const c = Math.max(0, Math.min(n - 1, i));
    setCursor(c);
    const el = scroller.current!;
    if (c * ROW_H < el.scrollTop) el.scrollTop = c * ROW_H;
    else if ((c + 1) * ROW_H > el.scrollTop + el.clientHeight - ROW_H) el.scrollTop = (c + 2) * ROW_H - el.clientHeight;
    requestAnimationFrame(() => (el.querySelector(`[data-index="${c}"]`) as HTMLElement | null)?.focus());
  };

  const items = [];
  for (let i = first; i < last; i++) {
    const r = at(i);
    if (!r) continue; // not here yet: the worker answers within a frame or two
    items.push(
      // keyed by position, not by flow: when flows arrive the same row elements take the new
      // texts (a few text nodes change) instead of every row in view being made anew
      <div key={i} role="row" class={`row v-${VERDICT_CLASS[r.v] ?? 'error'}${p.selected === r.uuid ? ' selected' : ''}`} style={{ transform: `translateY(${i * ROW_H}px)` }}
        tabIndex={i === cursor ? 0 : -1} data-index={i} data-uuid={r.uuid} aria-selected={p.selected === r.uuid}
        onClick={() => { setCursor(i); p.onSelect(r); }}
        onKeyDown={(e) => {
          if (e.key === 'ArrowDown') { e.preventDefault(); focusRow(i + 1); }
          else if (e.key === 'ArrowUp') { e.preventDefault(); focusRow(i - 1); }
          else if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); p.onSelect(r); }
        }}>
        <span role="cell" class="c-time">{r.time}</span>
        <span role="cell" class="c-src" title={`${r.src} ${r.srcId}`}>{r.src}</span>
        <span role="cell" class="c-arrow" aria-hidden="true">{r.arrow}</span>
        <span role="cell" class="c-dst" title={`${r.dst} ${r.dstId}`}>{r.dst}</span>
        <span role="cell" class="c-type">{r.type}</span>
        <span role="cell" class="c-verdict">{r.verdict}</span>
        <span role="cell" class="c-summary" title={r.summary}>{r.summary}</span>
      </div>,
    );
  }

  return (
    <section class="flows" aria-label="Flows">
      <div class="flows-head">
        <h2>Flows</h2>
        <span class="count" data-testid="flow-count">{n.toLocaleString('en-US')} shown{p.paused ? ' · paused' : ''}</span>
      </div>
      <div role="table" aria-label="Flows, newest first" aria-rowcount={n} class="flows-table">
        <div role="row" class="row head">
          <span role="columnheader" class="c-time">Time</span>
          <span role="columnheader" class="c-src">Source</span>
          <span role="columnheader" class="c-arrow" aria-hidden="true"></span>
          <span role="columnheader" class="c-dst">Destination</span>
          <span role="columnheader" class="c-type">Type</span>
          <span role="columnheader" class="c-verdict">Verdict</span>
          <span role="columnheader" class="c-summary">Summary</span>
        </div>
        <div class="flows-body" ref={scroller} onScroll={(e) => setTop(e.currentTarget.scrollTop)} data-testid="flows-body">
          <div role="rowgroup" style={{ height: `${n * ROW_H}px` }} class="flows-canvas">{items}</div>
        </div>
      </div>
    </section>
  );
});
