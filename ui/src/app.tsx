/**
 * The page: filter bar on top, the service map with a side panel (edge "why", workload policy,
 * flow detail), the live flows table below. All flow data arrives from flow-worker.ts.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { MapEdge, MapNode, MapSnapshot } from './model/map.ts';
import type { FlowRow } from './model/rows.ts';
import { NO_FILTERS, type UiFilters } from './model/filter-input.ts';
import type { FromWorker } from './worker-protocol.ts';
import { TopBar } from './components/top-bar.tsx';
import { ServiceMapView } from './components/service-map.tsx';
import { FlowsTable } from './components/flows-table.tsx';
import { SidePanel, type Selection } from './components/side-panel.tsx';
import { api } from './api.ts';
import { FIRST_GENERATION, INITIAL_FLOWS, firstFilters, listen, send, worker } from './stream.ts';

/** Rows the table keeps (the newest). */
export const MAX_ROWS = 10_000;

export interface StreamStatus {
  state: 'connecting' | 'loading' | 'live' | 'reconnecting' | 'error';
  message?: string;
  received: number;
  /** flows per second, over the last few seconds */
  rate: number;
  lost: number;
  loaded?: { flows: number; ms: number };
}

export function App() {
  const [filters, setFilters] = useState<UiFilters>(firstFilters);
  const [paused, setPaused] = useState(false);
  const [snapshot, setSnapshot] = useState<MapSnapshot>({ nodes: [], edges: [], flows: 0 });
  const [generation, setGeneration] = useState(FIRST_GENERATION);
  const [rowsVersion, setRowsVersion] = useState(0);
  const [selection, setSelection] = useState<Selection | null>(null);
  const [status, setStatus] = useState<StreamStatus>({ state: 'loading', received: 0, rate: 0, lost: 0 });
  const [info, setInfo] = useState<{ observer: string; lab?: string; node?: string } | undefined>();
  const [namespaces, setNamespaces] = useState<string[]>([]);
  const rows = useRef<FlowRow[]>([]);
  const held = useRef<{ rows: FlowRow[]; map?: MapSnapshot }>({ rows: [] });
  const pausedRef = useRef(false);
  const genRef = useRef(generation);
  const rate = useRef<{ t: number; n: number }[]>([]);

  const apply = useCallback((rowsIn: FlowRow[], map: MapSnapshot | undefined) => {
    if (rowsIn.length) {
      const r = rows.current;
      for (const x of rowsIn) r.push(x);
      if (r.length > MAX_ROWS * 1.2) rows.current = r.slice(r.length - MAX_ROWS);
      setRowsVersion((v) => v + 1);
    }
    if (map) setSnapshot(map);
  }, []);

  useEffect(() => {
    listen((m: FromWorker) => {
      if (m.type === 'detail') return;
      if (m.generation !== genRef.current) return;
      switch (m.type) {
        case 'batch': {
          const now = performance.now();
          rate.current.push({ t: now, n: m.received });
          while (rate.current.length > 2 && now - rate.current[0]!.t > 3000) rate.current.shift();
          const first = rate.current[0]!;
          const perSec = now > first.t ? ((m.received - first.n) * 1000) / (now - first.t) : 0;
          setStatus((s) => ({ ...s, received: m.received, rate: perSec }));
          if (pausedRef.current) {
            held.current.rows.push(...m.rows);
            if (held.current.rows.length > MAX_ROWS) held.current.rows = held.current.rows.slice(-MAX_ROWS);
            if (m.map) held.current.map = m.map;
          } else apply(m.rows, m.map);
          break;
        }
        case 'loaded':
          setStatus((s) => ({ ...s, state: 'live', loaded: { flows: m.flows, ms: m.ms } }));
          // the bench and the tests wait for this: the ring's flows are on the page
          requestAnimationFrame(() => requestAnimationFrame(() => {
            document.body.dataset.loaded = String(m.flows);
            performance.mark('membrane:loaded', { detail: { flows: m.flows } });
          }));
          break;
        case 'state':
          setStatus((s) => ({ ...s, state: m.state, ...(m.message ? { message: m.message } : { message: undefined }) }));
          break;
        case 'lost':
          setStatus((s) => ({ ...s, lost: s.lost + m.count }));
          break;
        case 'error':
          setStatus((s) => ({ ...s, state: 'error', message: m.message }));
          break;
      }
    });
  }, [apply]);

  useEffect(() => {
    const first = generation === FIRST_GENERATION;
    genRef.current = generation;
    if (first) return; // started by stream.ts before the first render
    rows.current = [];
    held.current = { rows: [] };
    rate.current = [];
    delete document.body.dataset.loaded;
    setRowsVersion((v) => v + 1);
    setSnapshot({ nodes: [], edges: [], flows: 0 });
    setStatus({ state: 'loading', received: 0, rate: 0, lost: 0 });
    send({ type: 'start', generation, filters, number: INITIAL_FLOWS });
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    history.replaceState(null, '', q.size ? `?${q}` : location.pathname);
  }, [generation]);

  useEffect(() => {
    // controls are on screen and listening: the bench's "interactive" mark
    requestAnimationFrame(() => performance.mark('membrane:interactive'));
    api.info().then(setInfo).catch(() => {});
    api.endpoints().then((r) => setNamespaces([...new Set(r.items.map((e) => e.namespace))].sort())).catch(() => {});
  }, []);

  const onFilters = useCallback((f: UiFilters) => {
    setFilters(f);
    setSelection(null);
    setGeneration((g) => g + 1);
  }, []);

  const onPause = useCallback(() => {
    const next = !pausedRef.current;
    pausedRef.current = next;
    setPaused(next);
    if (!next) {
      const h = held.current;
      held.current = { rows: [] };
      apply(h.rows, h.map);
    }
  }, [apply]);

  const selectEdge = useCallback((e: MapEdge) => setSelection({ kind: 'edge', id: e.id }), []);
  const selectNode = useCallback((n: MapNode) => setSelection({ kind: 'node', id: n.id }), []);
  const selectFlow = useCallback((r: FlowRow) => setSelection({ kind: 'flow', row: r }), []);

  return (
    <div class="app">
      <TopBar filters={filters} onFilters={onFilters} paused={paused} onPause={onPause} status={status} info={info} namespaces={namespaces} />
      <main class="main">
        <section class="map-pane" aria-label="Service map">
          <ServiceMapView snapshot={snapshot} generation={generation} selected={selection} onEdge={selectEdge} onNode={selectNode} />
        </section>
        <SidePanel selection={selection} snapshot={snapshot} worker={worker} onClose={() => setSelection(null)} />
      </main>
      <FlowsTable rows={rows.current} version={rowsVersion} paused={paused} selected={selection?.kind === 'flow' ? selection.row.uuid : undefined} onSelect={selectFlow} />
    </div>
  );
}
