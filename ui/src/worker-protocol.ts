/** Messages between the page and the flow worker (flow-worker.ts). */
import type { MapSnapshot } from './model/map.ts';
import type { FlowRow } from './model/rows.ts';
import type { UiFilters } from './model/filter-input.ts';

export type ToWorker =
  | { type: 'start'; generation: number; filters: UiFilters; number: number }
  | { type: 'detail'; uuid: string }
  /** the table shows newest-first rows [from, from + count) */
  | { type: 'view'; from: number; count: number }
  /** the page painted the replay's first screenful: the rest of the replay may start */
  | { type: 'painted'; generation: number }
  /** freeze the table's rows (the map and counts go on) */
  | { type: 'pause'; paused: boolean };

export type FromWorker =
  | { type: 'batch'; generation: number; map?: MapSnapshot; received: number }
  | { type: 'view'; generation: number; total: number; from: number; rows: FlowRow[]; paused: boolean }
  /** the replay's newest screenful is posted (view and map): the page can paint and be used */
  | { type: 'first'; generation: number; flows: number; ms: number }
  | { type: 'loaded'; generation: number; flows: number; ms: number }
  | { type: 'state'; generation: number; state: 'live' | 'reconnecting'; message?: string }
  | { type: 'lost'; generation: number; count: number }
  | { type: 'error'; generation: number; message: string }
  | { type: 'detail'; uuid: string; dict?: string; json?: Record<string, unknown>; missing?: boolean; message?: string };
