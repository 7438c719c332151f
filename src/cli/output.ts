/** Shared CLI output helpers: error printing, Go-tabwriter-style tables, ages. */
import { MembraneError, formatIssue, type Issue } from '../common/errors.ts';

export function printError(e: unknown): number {
  if (e instanceof MembraneError) {
    const issues = (e as MembraneError & { issues?: Issue[] }).issues;
    if (issues?.length) for (const i of issues) process.stderr.write(`error: ${formatIssue(i)}\n`);
    process.stderr.write(`error: ${e.code}: ${e.message}\n`);
    if (e.hint) process.stderr.write(`  hint: ${e.hint}\n`);
    return 1;
  }
  process.stderr.write(`error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 2;
}

/** Borderless, space-aligned columns (Go text/tabwriter with padding 3, like kubectl). */
export function table(rows: string[][], padding = 3): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + padding))).join('').trimEnd()).join('\n') + '\n';
}

export function age(fromIso: string | undefined, now = Date.now()): string {
  if (!fromIso) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(fromIso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
