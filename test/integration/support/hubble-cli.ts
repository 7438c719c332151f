/**
 * The upstream hubble CLI (v1.17.0) the compatibility tests run: `../shared/tools/hubble/hubble`
 * from the project root (a worktree one level deeper finds it one level up), or $MEMBRANE_HUBBLE_CLI.
 * Missing is a failure, not a skip: these tests exist to run it.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../../..');

export function hubbleCli(): string {
  const candidates = [process.env.MEMBRANE_HUBBLE_CLI, resolve(REPO, '../shared/tools/hubble/hubble'), resolve(REPO, '../../shared/tools/hubble/hubble')];
  const found = candidates.find((c): c is string => !!c && existsSync(c));
  if (!found) throw new Error(`the hubble CLI is not at ${candidates.filter(Boolean).join(' or ')}; set MEMBRANE_HUBBLE_CLI`);
  return found;
}
