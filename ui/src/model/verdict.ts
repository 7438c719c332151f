/** Verdict names for the map's edges (no protobuf here: the page's bundle stays small). */
export type VerdictName = 'forwarded' | 'dropped' | 'audit' | 'redirected' | 'error';

/** The verdict shown for an edge: forwarded if anything got through, else the strongest other. */
export function edgeVerdict(e: { counts: Record<VerdictName, number> }): VerdictName {
  const c = e.counts;
  if (c.forwarded) return 'forwarded';
  if (c.redirected) return 'redirected';
  if (c.audit) return 'audit';
  if (c.dropped) return 'dropped';
  return 'error';
}
