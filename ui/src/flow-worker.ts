/// <reference lib="webworker" />
/**
 * The flow stream, off the page's main thread: Observer.GetFlows over gRPC-web through the UI
 * server (which relays the bytes to the upstream Observer), decoded here, folded into the service map and turned into table rows; the
 * page gets batches a few times a second, so decoding 2,000 flows/s never blocks a frame.
 *
 * Positioning: first the last N flows that match (no follow: the stream's end says "loaded"),
 * then follow from the newest one's time, skipping the uuids already seen at that instant.
 */
import { create, toJson } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcWebTransport } from '@connectrpc/connect-web';
import { Observer, GetFlowsRequestSchema } from '../../src/hubble/gen/observer/observer_pb.js';
import { FlowFilterSchema, FlowSchema, type Flow } from '../../src/hubble/gen/flow/flow_pb.js';
import { dictBlock } from '../../src/hubble/printer.ts';
import { ServiceMap } from './model/map.ts';
import { flowRow, type FlowRow } from './model/rows.ts';
import { toFlowFilters, type UiFilters } from './model/filters.ts';
import type { FromWorker, ToWorker } from './worker-protocol.ts';

declare const self: DedicatedWorkerGlobalScope;

/**
 * What the map and the table read (proto names): the stream carries only these, so the upstream
 * encodes and the worker decodes less. A flow's detail asks for the whole flow by its uuid.
 */
export const FLOW_FIELDS = [
  'time', 'uuid', 'verdict', 'drop_reason', 'drop_reason_desc', 'auth_type', 'IP', 'l4', 'source', 'destination', 'Type',
  'node_name', 'source_names', 'destination_names', 'l7', 'event_type', 'source_service', 'destination_service',
  'traffic_direction', 'policy_match_type', 'debug_capture_point', 'sock_xlate_point', 'is_reply', 'Summary', 'ip_trace_id',
];
const BATCH_MS = 250;
const ROWS_PER_MESSAGE = 1000;
const MAP_MS = 500;

const client = createClient(Observer, createGrpcWebTransport({ baseUrl: self.location.origin }));
const map = new ServiceMap();
let pendingRows: FlowRow[] = [];
let generation = 0;
let abort: AbortController | undefined;
let received = 0;
let lastMapPost = 0;
let mapDirty = false;

const post = (m: FromWorker) => self.postMessage(m);

function ingest(f: Flow): void {
  received++;
  if (map.add(f)) mapDirty = true;
  pendingRows.push(flowRow(f));
}

function flush(force = false): void {
  const now = Date.now();
  const rows = pendingRows;
  pendingRows = [];
  const sendMap = mapDirty && (force || now - lastMapPost >= MAP_MS);
  if (!rows.length && !sendMap && !force) return;
  if (sendMap) {
    lastMapPost = now;
    mapDirty = false;
  }
  // rows in slices: the page takes each in a short task, never one long one
  let i = 0;
  for (; rows.length - i > ROWS_PER_MESSAGE; i += ROWS_PER_MESSAGE) post({ type: 'batch', generation, rows: rows.slice(i, i + ROWS_PER_MESSAGE), received });
  const last = i ? rows.slice(i) : rows;
  post({ type: 'batch', generation, rows: last, ...(sendMap || force ? { map: map.snapshot(now) } : {}), received });
}

async function run(filters: UiFilters, number: number, gen: number): Promise<void> {
  abort?.abort();
  const ctl = new AbortController();
  abort = ctl;
  map.clear();
  pendingRows = [];
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
          for await (const r of client.getFlows(create(GetFlowsRequestSchema, { number: BigInt(number), whitelist, fieldMask: { paths: FLOW_FIELDS } }), { signal: ctl.signal })) {
            if (r.responseTypes.case !== 'flow') continue;
            const f = r.responseTypes.value;
            if (!seen(f)) ingest(f);
          }
          if (!lastTime) lastTime = Date.now() - (performance.now() - t0);
          loaded = true;
          flush(true);
          post({ type: 'loaded', generation: gen, flows: received, ms: performance.now() - t0 });
        }
        retry = 0;
        post({ type: 'state', generation: gen, state: 'live' });
        for await (const r of client.getFlows(create(GetFlowsRequestSchema, { follow: true, since: timestampFromMs(Math.floor(lastTime) - 1), whitelist, fieldMask: { paths: FLOW_FIELDS } }), { signal: ctl.signal })) {
          if (r.responseTypes.case === 'lostEvents') {
            post({ type: 'lost', generation: gen, count: Number(r.responseTypes.value.numEventsLost) });
            continue;
          }
          if (r.responseTypes.case !== 'flow') continue;
          const f = r.responseTypes.value;
          if (!seen(f)) ingest(f);
        }
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

/** The whole flow, every field, by its uuid (Hubble's uuid filter), while the ring still holds it. */
async function detail(uuid: string): Promise<void> {
  let f: Flow | undefined;
  try {
    for await (const r of client.getFlows(create(GetFlowsRequestSchema, { number: 1n, whitelist: [create(FlowFilterSchema, { uuid: [uuid] })] }))) {
      if (r.responseTypes.case === 'flow') f = r.responseTypes.value;
    }
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
  } else if (m.type === 'detail') void detail(m.uuid);
};
