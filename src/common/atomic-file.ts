/**
 * Whole-or-nothing file writes for state that a crash must not leave half-written (IPAM, CNI
 * attachments, the lab CA, AI budgets, the DNS cache, supervisor state, kvstore snapshots).
 *
 * Each write has its own temporary file (process id and a counter), so that two writers of the same
 * file, in one process or two, never truncate each other's temporary and the last rename wins whole.
 * A stale temporary of a crashed writer with the same name is removed first, and the temporary is
 * created exclusively so that a key is never written into a file someone else created (and may hold
 * open) with looser permissions.
 */
import { chmodSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface AtomicWriteOptions {
  /** File mode of the result (default 0644); the temporary file has it from creation on. */
  mode?: number;
  /** Create the parent directory first. */
  mkdir?: boolean;
}

let seq = 0;
const tmpOf = (file: string) => `${file}.${process.pid}.${++seq}.tmp`;

export async function writeFileAtomic(file: string, data: string | Uint8Array, o: AtomicWriteOptions = {}): Promise<void> {
  const mode = o.mode ?? 0o644;
  if (o.mkdir) await mkdir(dirname(file), { recursive: true });
  const tmp = tmpOf(file);
  await rm(tmp, { force: true });
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await chmod(tmp, mode); // the umask may have narrowed the creation mode
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export function writeFileAtomicSync(file: string, data: string | Uint8Array, o: AtomicWriteOptions = {}): void {
  const mode = o.mode ?? 0o644;
  if (o.mkdir) mkdirSync(dirname(file), { recursive: true });
  const tmp = tmpOf(file);
  rmSync(tmp, { force: true });
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
