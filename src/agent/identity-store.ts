/**
 * Identities outlive the agent process: the pinned ipcache and policy maps hold their numbers, so
 * a restarted agent must hand out the same number for the same labels. Allocations are mirrored
 * into the kvstore under Cilium's layout (`cilium/state/identities/v1/id/<id>` → labels) and
 * restored, with no references, before anything allocates.
 */
import { LocalIdentityAllocator } from '../identity/allocator.ts';
import { LabelSet } from '../labels/labels.ts';
import type { KVStore } from '../kvstore/types.ts';

const PREFIX = 'cilium/state/identities/v1/id/';

export async function openPersistentAllocator(kv: KVStore): Promise<LocalIdentityAllocator> {
  const restore = (await kv.list(PREFIX)).map((p) => ({ id: Number(p.key.slice(PREFIX.length)), labels: LabelSet.parse(JSON.parse(p.value) as string[]) }));
  const allocator = new LocalIdentityAllocator({ restore });
  allocator.watch((ev) => {
    const key = `${PREFIX}${ev.identity.id}`;
    if (ev.type === 'add') void kv.put(key, JSON.stringify(ev.identity.labels.toStrings()));
    else void kv.delete(key);
  });
  return allocator;
}
