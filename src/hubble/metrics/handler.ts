/**
 * What a Hubble metrics handler is (index.ts registers and runs them; handlers.ts and http.ts
 * are the handlers): apart from index.ts so that the handlers need not import what composes them.
 */
import type { Registry } from 'prom-client';
import type { Flow } from '../gen/flow/flow_pb.js';

export interface HandlerContext {
  /** context label names (labelsContext…, source, destination) */
  names: string[];
  values(flow: Flow): string[];
  /**
   * The values written into `out` from index `at`, without allocating: the per-flow path. They
   * are worked out once per flow for every handler with the same context options.
   */
  into(flow: Flow, out: string[], at: number): void;
}

export interface HandlerInit {
  registry: Registry;
  ctx: HandlerContext;
  /** the handler's own options (context options removed); bare keys have value '' */
  options: Record<string, string>;
}

export interface MetricsHandler {
  name: string;
  /**
   * Counts a flow. It reads the flow during the call only (the agent hands the datapath's flows
   * borrowed, refilled by the next event: hubble/index.ts ingestBorrowed); label values, strings,
   * may be kept.
   */
  process(flow: Flow): void;
}

export type HandlerFactory = (init: HandlerInit) => MetricsHandler;
