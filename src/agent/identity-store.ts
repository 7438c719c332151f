/**
 * Identities outlive the agent process: the pinned ipcache and policy maps hold their numbers, so
 * a restarted agent must hand out the same number for the same labels. Allocations are mirrored
 * into the kvstore under Cilium's layout (`cilium/state/identities/v1/id/<id>` → labels) and
 * restored, with no references, before anything allocates. What a kill loses of the last 50 ms
 * (see openPersistentAllocator) the daemon holds from the pinned ipcache (daemon.ts, allocator hold).
 */
import { LocalIdentityAllocator } from '../identity/allocator.ts';
import { LabelSet } from '../labels/labels.ts';
import type { KVStore, TxnOp } from '../kvstore/types.ts';

const PREFIX = 'cilium/state/identities/v1/id/';

/**
 * The allocator and `flush()`, which writes what is not mirrored yet (the agent's stop; the store's
 * close then waits for it on disk).
 */
export interface PersistentAllocator { allocator: LocalIdentityAllocator; flush(): void }

/**
 * Allocations are mirrored in one transaction per `batchMs` (default 50 ms), not one write per
 * identity: the memory store writes its whole file per transaction, so a burst of fresh DNS
 * names (an FQDN identity each) cost a write of every identity per name, O(the identities) for
 * each and most of the agent's CPU per fresh name (bench/dns). The mirror was never awaited by
 * the allocation (a write in flight was lost to a crash before too); a stop writes what waits.
 */
export async function openPersistentAllocator(kv: KVStore, o: { batchMs?: number } = {}): Promise<PersistentAllocator> {
  const restore = (await kv.list(PREFIX)).map((p) => ({ id: Number(p.key.slice(PREFIX.length)), labels: LabelSet.parse(JSON.parse(p.value) as string[]) }));
  const allocator = new LocalIdentityAllocator({ restore });
  /** key → labels as stored (null: delete), the last change of each key since the last write */
  const pending = new Map<string, string | null>();
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    if (timer) { clearTimeout(timer); timer = undefined; }
    if (!pending.size) return;
    const ops: TxnOp[] = [];
    for (const [key, value] of pending) ops.push(value === null ? { op: 'delete', key } : { op: 'put', key, value });
    pending.clear();
    void kv.txn(ops);
  };
  allocator.watch((ev) => {
    pending.set(`${PREFIX}${ev.identity.id}`, ev.type === 'add' ? JSON.stringify(ev.identity.labels.toStrings()) : null);
    if (!timer) {
      timer = setTimeout(flush, o.batchMs ?? 50);
      timer.unref();
    }
  });
  return { allocator, flush };
}
