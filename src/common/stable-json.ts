/**
 * JSON with object keys in sorted order (undefined members left out, Sets as sorted lists): the
 * same value always gives the same text, so it can be compared and hashed (Deployment template
 * hashes, "unchanged" on re-apply, MapState entry signatures).
 */
export function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v instanceof Set) return `set(${[...v].sort().join(',')})`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(',')}}`;
}
