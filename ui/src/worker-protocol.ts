/** Messages between the page and the flow worker (flow-worker.ts). */
import type { MapSnapshot } from './model/map.ts';
import type { FlowRow } from './model/rows.ts';
import type { UiFilters } from './model/filter-input.ts';

export type ToWorker =
  | { type: 'start'; generation: number; filters: UiFilters; number: number }
  | { type: 'detail'; uuid: string };

export type FromWorker =
  | { type: 'batch'; generation: number; rows: FlowRow[]; map?: MapSnapshot; received: number }
  | { type: 'loaded'; generation: number; flows: number; ms: number }
  | { type: 'state'; generation: number; state: 'live' | 'reconnecting'; message?: string }
  | { type: 'lost'; generation: number; count: number }
  | { type: 'error'; generation: number; message: string }
  | { type: 'detail'; uuid: string; dict?: string; json?: Record<string, unknown>; missing?: boolean; message?: string };
