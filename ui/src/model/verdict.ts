/** Verdict names for the map's edges (no protobuf here: the page's bundle stays small). */
export type VerdictName = 'forwarded' | 'dropped' | 'audit' | 'redirected' | 'error';

/**
 * The verdict shown for an edge: forwarded if anything got through, else the strongest other;
 * flows only seen leaving (`transit`: the destination's node not observed) read forwarded.
 */
export function edgeVerdict(e: { counts: Record<VerdictName, number>; transit?: number }): VerdictName {
  const c = e.counts;
  if (c.forwarded) return 'forwarded';
  if (c.redirected) return 'redirected';
  if (c.audit) return 'audit';
  if (c.dropped) return 'dropped';
  if (e.transit) return 'forwarded';
  return 'error';
}

/** What the edge's ✓ counts: delivered flows, or those seen leaving when nothing else is known. */
export function passedCount(e: { counts: Record<VerdictName, number>; transit?: number }): number {
  const c = e.counts;
  const n = c.forwarded + c.redirected;
  return n || c.dropped || c.audit || c.error ? n : (e.transit ?? 0);
}
