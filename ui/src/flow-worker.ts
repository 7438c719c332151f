/// <reference lib="webworker" />
/**
 * The flow stream, off the page's main thread: Observer.GetFlows over gRPC-web through the UI
 * server (which relays the bytes to the upstream Observer), read frame by frame
 * (grpc-web-stream.ts) and decoded here, folded into the service map and turned into table rows; the
 * page gets batches a few times a second, so decoding 2,000 flows/s never blocks a frame.
 *
 * Positioning: first a screenful, the newest FIRST_FLOWS that match, painted at once (the page
 * is usable from then on); then the older ones up to N (`until` the screenful's oldest instant,
 * the uuids already held skipped), folded in off screen and shown in one render ("loaded"); then
 * follow from the newest one's time, skipping the uuids already seen at that instant.
 */
import { create, fromBinary, toJson } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError } from '@connectrpc/connect';
import { GetFlowsRequestSchema, GetFlowsResponseSchema } from '../../src/hubble/gen/observer/observer_pb.js';
import { FlowFilterSchema, FlowSchema, type Flow } from '../../src/hubble/gen/flow/flow_pb.js';
import { dictBlock } from '../../src/hubble/printer.ts';
import { getFlows } from './grpc-web-stream.ts';
import { ServiceMap } from './model/map.ts';
import { flowRow, type FlowRow } from './model/rows.ts';
import { toFlowFilters, type UiFilters } from './model/filters.ts';
import type { FromWorker, ToWorker } from './worker-protocol.ts';
import { installShortUtf8 } from './utf8.ts';

declare const self: DedicatedWorkerGlobalScope;

installShortUtf8();

/**
 * What the map and the table read (proto names): the stream carries only these, so the upstream
 * encodes and the worker decodes less. A flow's detail asks for the whole flow by its uuid.
 */
export const FLOW_FIELDS = [
  'time', 'uuid', 'verdict', 'drop_reason', 'drop_reason_desc', 'auth_type', 'IP', 'l4', 'source', 'destination', 'Type',
  'node_name', 'source_names', 'destination_names', 'l7', 'event_type', 'source_service', 'destination_service',
  'traffic_direction', 'trace_observation_point', 'policy_match_type', 'debug_capture_point', 'sock_xlate_point', 'is_reply', 'Summary', 'ip_trace_id',
  // the AI extension (provider, model, tokens) of the HTTP proxy's flows: only those carry one
  'extensions',
];
const BATCH_MS = 400;
/**
 * The replay's first request: enough for the table's first screen and the map's picture. The
 * ring streams its last N oldest first, so without this the newest rows (the table's top) came
 * last, after the whole replay.
 */
export const FIRST_FLOWS = 300;
const MAP_MS = 800;
/** rows the table offers (the newest) */
export const MAX_ROWS = 10_000;

const map = new ServiceMap();
/**
 * The table's flows live here, not in the page: the page asks for the window it shows (a few
 * dozen rows), so a busy stream allocates nothing on the page's thread. Flows have sequence
 * numbers; newest-first index i is seq `top - i`.
 *
 * Each is held as its GetFlowsResponse's bytes (one ~500-byte array), not as the decoded Flow
 * (an object graph of dozens of objects): the map folds a flow in as it arrives and keeps only
 * its aggregates, and a row is decoded again when shown. Holding 10,000 decoded flows made the
 * replay's garbage collections a third of the worker's CPU time (Chromium CPU profile, bench/ui).
 */
const rows: Uint8Array[] = [];
/** rows are made when shown (a few dozen), not for every flow */
const rowOf = new WeakMap<Uint8Array, FlowRow>();
function row(bytes: Uint8Array): FlowRow | undefined {
  let r = rowOf.get(bytes);
  if (!r) {
    const m = fromBinary(GetFlowsResponseSchema, bytes).responseTypes;
    if (m.case !== 'flow') return undefined;
    rowOf.set(bytes, (r = flowRow(m.value)));
  }
  return r;
}
let dropped = 0;
let rowsChanged = false;
let paused = false;
let frozenTop = -1;
let view = { from: 0, count: 60 };
let generation = 0;
let abort: AbortController | undefined;
let received = 0;
let lastMapPost = 0;
let mapDirty = false;

const post = (m: FromWorker) => self.postMessage(m);

/** `bytes`: the flow's GetFlowsResponse, a view valid only now (grpc-web-stream.ts): copied */
function ingest(f: Flow, bytes: Uint8Array): void {
  received++;
  if (map.add(f)) mapDirty = true;
  rows.push(bytes.slice());
  rowsChanged = true;
  if (rows.length > MAX_ROWS * 1.2) {
    // keep what a paused page may still be looking at
    const n = Math.min(rows.length - MAX_ROWS, paused ? Math.max(0, frozenTop - MAX_ROWS + 1 - dropped) : Infinity);
    if (n > 0) {
      rows.splice(0, n);
      dropped += n;
    }
  }
}

function postView(): void {
  const top = paused ? frozenTop : dropped + rows.length - 1;
  const total = Math.max(0, Math.min(MAX_ROWS, top - dropped + 1));
  const out: FlowRow[] = [];
  const end = Math.min(total, view.from + view.count);
  for (let i = view.from; i < end; i++) {
    const b = rows[top - i - dropped];
    const r = b && row(b);
    if (r) out.push(r);
  }
  post({ type: 'view', generation, total, from: view.from, rows: out, paused });
}

/**
 * True while the ring's last N flows are replayed: the page then gets only the count (its map
 * and table would be stale a moment later, and each render of them would compete with the
 * replay for the same 2 cores); the whole picture follows once, when the replay ends.
 */
let replaying = false;

function flush(force = false): void {
  const now = Date.now();
  if (replaying && !force) {
    post({ type: 'batch', generation, received });
    return;
  }
  const sendMap = mapDirty && (force || now - lastMapPost >= MAP_MS);
  if (!rowsChanged && !sendMap && !force) return;
  if (sendMap) {
    lastMapPost = now;
    mapDirty = false;
  }
  if ((rowsChanged && !paused) || force) postView();
  rowsChanged = false;
  post({ type: 'batch', generation, ...(sendMap || force ? { map: map.snapshot(now) } : {}), received });
}

async function run(filters: UiFilters, number: number, gen: number): Promise<void> {
  abort?.abort();
  const ctl = new AbortController();
  abort = ctl;
  map.clear();
  rows.length = 0;
  dropped = 0;
  rowsChanged = false;
  frozenTop = -1;
  // the window stays: the table keeps its scroll position across a filter change
  received = 0;
  let whitelist;
  try {
    whitelist = toFlowFilters(filters);
  } catch (e) {
    post({ type: 'error', generation: gen, message: (e as Error).message });
    return;
  }
  const timer = setInterval(() => { if (gen === generation) flush(); }, BATCH_MS);
  let retry = 0;
  let lastTime = 0;
  /** uuid → time of the newest flows: a (re)started follow begins 1 ms before them and repeats some */
  const tail = new Map<string, number>();
  const seen = (f: Flow): boolean => {
    const t = f.time ? Number(f.time.seconds) * 1000 + f.time.nanos / 1e6 : Date.now();
    if (tail.has(f.uuid)) return true;
    if (t > lastTime) lastTime = t;
    tail.set(f.uuid, t);
    if (tail.size > 2000) for (const [u, ut] of tail) if (ut < lastTime - 2) tail.delete(u);
    return false;
  };
  let loaded = false;
  try {
    while (!ctl.signal.aborted) {
      try {
        if (!loaded) {
          const t0 = performance.now();
          replaying = true;
          // 1. the newest screenful, painted at once
          const first: Flow[] = [];
          await getFlows(self.location.origin, create(GetFlowsRequestSchema, { number: BigInt(Math.min(number, FIRST_FLOWS)), whitelist, fieldMask: { paths: FLOW_FIELDS } }), (r, bytes) => {
            if (r.responseTypes.case !== 'flow') return;
            const f = r.responseTypes.value;
            if (!seen(f)) {
              ingest(f, bytes);
              first.push(f);
            }
          }, ctl.signal);
          flush(true);
          post({ type: 'first', generation: gen, flows: received, ms: performance.now() - t0 });
          // the older flows wait for the page's first paint: fetching, serving and decoding them
          // would take the 2 cores from the paint that makes the page usable
          await firstPaint(gen, ctl.signal);
          // 2. the older ones, up to `number` in all: the server counts the flows at the
          // screenful's oldest instant again (until is inclusive), so those are asked for on top
          const oldest = first[0]?.time;
          if (first.length >= FIRST_FLOWS && number > first.length && oldest) {
            const held = new Set<string>();
            for (const f of first) if (f.time && f.time.seconds === oldest.seconds && f.time.nanos === oldest.nanos) held.add(f.uuid);
            const older: Uint8Array[] = [];
            await getFlows(self.location.origin, create(GetFlowsRequestSchema, { number: BigInt(number - first.length + held.size), until: oldest, whitelist, fieldMask: { paths: FLOW_FIELDS } }), (r, bytes) => {
              if (r.responseTypes.case !== 'flow') return;
              const f = r.responseTypes.value;
              if (held.has(f.uuid)) return;
              older.push(bytes.slice());
              received++;
              if (map.add(f)) mapDirty = true;
            }, ctl.signal);
            // the table's order: older, then the screenful and whatever followed it
            const add = older.slice(Math.max(0, older.length - MAX_ROWS));
            rows.splice(0, 0, ...add);
            // a page paused meanwhile keeps looking at the same flows (their sequence numbers moved)
            if (paused && frozenTop >= 0) frozenTop += add.length;
            rowsChanged = true;
          }
          if (!lastTime) lastTime = Date.now() - (performance.now() - t0);
          loaded = true;
          replaying = false;
          flush(true);
          post({ type: 'loaded', generation: gen, flows: received, ms: performance.now() - t0 });
        }
        retry = 0;
        post({ type: 'state', generation: gen, state: 'live' });
        await getFlows(self.location.origin, create(GetFlowsRequestSchema, { follow: true, since: timestampFromMs(Math.floor(lastTime) - 1), whitelist, fieldMask: { paths: FLOW_FIELDS } }), (r, bytes) => {
          if (r.responseTypes.case === 'lostEvents') {
            post({ type: 'lost', generation: gen, count: Number(r.responseTypes.value.numEventsLost) });
            return;
          }
          if (r.responseTypes.case !== 'flow') return;
          const f = r.responseTypes.value;
          if (!seen(f)) ingest(f, bytes);
        }, ctl.signal);
      } catch (e) {
        if (ctl.signal.aborted) return;
        const ce = ConnectError.from(e);
        post({ type: 'state', generation: gen, state: 'reconnecting', message: ce.rawMessage });
        if (ce.code === Code.InvalidArgument) {
          post({ type: 'error', generation: gen, message: ce.rawMessage });
          return;
        }
      }
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** retry++)));
    }
  } finally {
    clearInterval(timer);
  }
}

/**
 * Resolves when the page says it painted generation `gen`'s first screenful, or after
 * PAINT_WAIT_MS (a page in a background tab gets no animation frames), or on abort.
 */
const PAINT_WAIT_MS = 1000;
let painted: { gen: number; done: () => void } | undefined;
function firstPaint(gen: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      if (painted?.gen === gen) painted = undefined;
      resolve();
    };
    const timer = setTimeout(done, PAINT_WAIT_MS);
    signal.addEventListener('abort', done, { once: true });
    painted = { gen, done };
  });
}

/** The whole flow, every field, by its uuid (Hubble's uuid filter), while the ring still holds it. */
async function detail(uuid: string): Promise<void> {
  let f: Flow | undefined;
  try {
    await getFlows(self.location.origin, create(GetFlowsRequestSchema, { number: 1n, whitelist: [create(FlowFilterSchema, { uuid: [uuid] })] }), (r) => {
      if (r.responseTypes.case === 'flow') f = r.responseTypes.value;
    }, new AbortController().signal);
  } catch (e) {
    post({ type: 'detail', uuid, missing: true, message: ConnectError.from(e).rawMessage });
    return;
  }
  post(f
    ? { type: 'detail', uuid, dict: dictBlock(f, { printNodeName: true, printPolicyNames: true }), json: toJson(FlowSchema, f, { useProtoFieldName: true }) as Record<string, unknown> }
    : { type: 'detail', uuid, missing: true });
}

self.onmessage = (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  if (m.type === 'start') {
    generation = m.generation;
    void run(m.filters, m.number, m.generation);
  } else if (m.type === 'painted') {
    if (painted?.gen === m.generation) painted.done();
  } else if (m.type === 'detail') void detail(m.uuid);
  else if (m.type === 'view') {
    view = { from: Math.max(0, Math.min(MAX_ROWS, m.from)), count: Math.max(0, Math.min(500, m.count)) };
    postView();
  } else if (m.type === 'pause') {
    paused = m.paused;
    frozenTop = dropped + rows.length - 1;
    postView();
  }
};
