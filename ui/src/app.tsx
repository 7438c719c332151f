/**
 * The page: filter bar on top, the service map with a side panel (edge "why", workload policy,
 * flow detail), the live flows table below. All flow data arrives from flow-worker.ts.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { MapEdge, MapNode, MapSnapshot } from './model/map.ts';
import type { FlowRow } from './model/rows.ts';
import { NO_FILTERS, type UiFilters } from './model/filter-input.ts';
import type { FromWorker } from './worker-protocol.ts';
import { StreamState, TopBar } from './components/top-bar.tsx';
import { ServiceMapView } from './components/service-map.tsx';
import { FlowsTable } from './components/flows-table.tsx';
import { SidePanel, type Selection } from './components/side-panel.tsx';
import { api } from './api.ts';
import { FIRST_GENERATION, INITIAL_FLOWS, firstFilters, listen, send, worker } from './stream.ts';


export interface StreamStatus {
  state: 'connecting' | 'loading' | 'live' | 'reconnecting' | 'error';
  message?: string;
  received: number;
  /** flows per second, over the last few seconds */
  rate: number;
  lost: number;
  loaded?: { flows: number; ms: number };
}

export interface TableView {
  total: number;
  from: number;
  rows: FlowRow[];
}

export function App() {
  const [filters, setFilters] = useState<UiFilters>(firstFilters);
  const [paused, setPaused] = useState(false);
  const [snapshot, setSnapshot] = useState<MapSnapshot>({ nodes: [], edges: [], flows: 0 });
  const [generation, setGeneration] = useState(FIRST_GENERATION);
  const [view, setView] = useState<TableView>({ total: 0, from: 0, rows: [] });
  const [selection, setSelection] = useState<Selection | null>(null);
  const [status, setStatus] = useState<StreamStatus>({ state: 'loading', received: 0, rate: 0, lost: 0 });
  const [info, setInfo] = useState<{ observer: string; lab?: string; node?: string } | undefined>();
  const [namespaces, setNamespaces] = useState<string[]>([]);
  const pausedRef = useRef(false);
  const genRef = useRef(generation);
  const rate = useRef<{ t: number; n: number }[]>([]);
  const interactiveMarked = useRef(false);

  // at most one render per frame, however many messages arrive in it; the table and the map
  // never render in the same frame (each alone stays well inside a frame's budget, the two
  // together after a replay did not): a pending map waits for the next frame
  const frame = useRef<{ scheduled: boolean; view?: TableView; map?: MapSnapshot; received?: number }>({ scheduled: false });
  const later = useCallback((f: { view?: TableView; map?: MapSnapshot; received?: number }) => {
    Object.assign(frame.current, f);
    if (frame.current.scheduled) return;
    frame.current.scheduled = true;
    requestAnimationFrame(function render() {
      const x = frame.current;
      frame.current = { scheduled: false };
      if (x.view) setView(x.view);
      if (x.map) {
        if (x.view) {
          frame.current.map ??= x.map;
          frame.current.scheduled = true;
          requestAnimationFrame(render);
        } else setSnapshot(x.map);
      }
      if (x.received !== undefined) {
        const now = performance.now();
        rate.current.push({ t: now, n: x.received });
        while (rate.current.length > 2 && now - rate.current[0]!.t > 3000) rate.current.shift();
        const first = rate.current[0]!;
        const perSec = now > first.t ? ((x.received - first.n) * 1000) / (now - first.t) : 0;
        setStatus((s) => ({ ...s, received: x.received!, rate: perSec }));
      }
    });
  }, []);

  useEffect(() => {
    listen((m: FromWorker) => {
      if (m.type === 'detail') return;
      if (m.generation !== genRef.current) return;
      switch (m.type) {
        case 'batch':
          later({ received: m.received, ...(m.map ? { map: m.map } : {}) });
          break;
        case 'view':
          later({ view: { total: m.total, from: m.from, rows: m.rows } });
          break;
        case 'first':
          // the newest screenful is posted: the table renders in the next frame, the map in the
          // one after; the bench's "interactive" mark is when both are painted (and the controls
          // mounted, which happened before any message is handled)
          requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(() => {
            // the worker fetches the older flows only now (they would compete with this paint)
            send({ type: 'painted', generation: m.generation });
            if (interactiveMarked.current) return;
            interactiveMarked.current = true;
            performance.mark('membrane:interactive', { detail: { flows: m.flows } });
          })));
          break;
        case 'loaded':
          setStatus((s) => ({ ...s, state: 'live', loaded: { flows: m.flows, ms: m.ms } }));
          // the bench and the tests wait for this: the ring's flows are on the page
          // (three frames: the table renders in the first, the map in the second)
          requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(() => {
            document.body.dataset.loaded = String(m.flows);
            document.body.dataset.replayMs = m.ms.toFixed(0);
            performance.mark('membrane:loaded', { detail: { flows: m.flows } });
          })));
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
  }, [later]);

  useEffect(() => {
    const first = generation === FIRST_GENERATION;
    genRef.current = generation;
    if (first) return; // started by stream.ts before the first render
    rate.current = [];
    delete document.body.dataset.loaded;
    setView({ total: 0, from: 0, rows: [] });
    setSnapshot({ nodes: [], edges: [], flows: 0 });
    setStatus({ state: 'loading', received: 0, rate: 0, lost: 0 });
    send({ type: 'start', generation, filters, number: INITIAL_FLOWS });
    if (pausedRef.current) send({ type: 'pause', paused: true });
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    history.replaceState(null, '', q.size ? `?${q}` : location.pathname);
  }, [generation]);

  useEffect(() => {
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
    send({ type: 'pause', paused: next });
  }, []);

  const onWindow = useCallback((from: number, count: number) => send({ type: 'view', from, count }), []);

  const onClose = useCallback(() => setSelection(null), []);
  const selectEdge = useCallback((e: MapEdge) => setSelection({ kind: 'edge', id: e.id }), []);
  const selectNode = useCallback((n: MapNode) => setSelection({ kind: 'node', id: n.id }), []);
  const selectFlow = useCallback((r: FlowRow) => setSelection({ kind: 'flow', row: r }), []);

  return (
    <div class="app">
      <header class="top-bar">
        <TopBar filters={filters} onFilters={onFilters} paused={paused} onPause={onPause} info={info} namespaces={namespaces} />
        <StreamState s={status} paused={paused} />
      </header>
      <main class="main">
        <section class="map-pane" aria-label="Service map">
          <ServiceMapView snapshot={snapshot} generation={generation} selected={selection} onEdge={selectEdge} onNode={selectNode} />
        </section>
        <SidePanel selection={selection} snapshot={snapshot} worker={worker} onClose={onClose} />
      </main>
      <FlowsTable view={view} paused={paused} selected={selection?.kind === 'flow' ? selection.row.uuid : undefined} onSelect={selectFlow} onWindow={onWindow} />
    </div>
  );
}
