/**
 * Where a restarted agent resumes its cluster watch: the etcd revision its pinned ipcache
 * reflects, saved in the node's state directory. Valid only for the same etcd (its cluster id)
 * and the same map (the datapath's instance: a recreated map is empty, whatever the file says).
 * Written atomically (a temporary file renamed over it), and only with a revision every change
 * up to which is in the map: a crash between two writes leaves an older revision, which resumes
 * from further back (changes applied twice, none missed).
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ResumePoint {
  /** the etcd cluster's id (KVStore.clusterId) */
  etcd: string;
  /** the ipcache map instance (Datapath.ipcacheInstance) */
  map: string;
  revision: number;
}

export const resumeFile = (nodeDir: string): string => join(nodeDir, 'ipcache-revision.json');

/**
 * The saved revision when it applies to this etcd and this map; otherwise why not (a start
 * without one lists the cluster whole, as before).
 */
export async function readResume(file: string, etcd: string | undefined, map: string | undefined): Promise<{ revision: number } | { why: string }> {
  if (!etcd || !map) return { why: 'no etcd cluster id or map instance' };
  let p: Partial<ResumePoint>;
  try {
    p = JSON.parse(await readFile(file, 'utf8')) as Partial<ResumePoint>;
  } catch (e) {
    return { why: (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'none saved' : `unreadable: ${(e as Error).message}` };
  }
  if (!p || typeof p !== 'object' || !Number.isSafeInteger(p.revision) || p.revision! <= 0) return { why: 'malformed' };
  if (p.etcd !== etcd) return { why: `saved for etcd cluster ${String(p.etcd)}, this is ${etcd}` };
  if (p.map !== map) return { why: `saved for ipcache ${String(p.map)}, this is ${map}` };
  return { revision: p.revision! };
}

export async function saveResume(file: string, p: ResumePoint): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(p));
  await rename(tmp, file);
}
