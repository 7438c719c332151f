// The identity and ipcache half of a single-node agent, killed with SIGKILL inside the identity
// store's batch window (identity-restart.test.ts): the store and allocator as the daemon opens them
// (src/agent/kvstore-open.ts), the pinned ipcache as the datapath writes it. Prints the identities
// as JSON: `kept` written to the store before the kill, `lost` allocated and in the map, not written.
import { writeSync } from 'node:fs';
import { openMemoryStore } from '../../../../src/kvstore/memory.ts';
import { openPersistentAllocator } from '../../../../src/agent/identity-store.ts';
import { fqdnIdentityLabels } from '../../../../src/identity/labels.ts';
import { Loader } from '../../../../src/datapath/linux/loader.ts';
import { IPCacheMap } from '../../../../src/datapath/linux/ipcache.ts';

const [storeFile, pinRoot, obj] = process.argv.slice(2) as [string, string, string];
const sels = [{ matchPattern: '*.lab' }];
const kv = await openMemoryStore({ file: storeFile });
const { allocator } = await openPersistentAllocator(kv);
const loader = new Loader();
loader.load(obj, pinRoot);
const ipcache = new IPCacheMap(loader);
const learn = (ip: string) => {
  const id = allocator.allocateSync(fqdnIdentityLabels(ip, sels)).identity.id;
  ipcache.upsert([{ prefix: `${ip}/32`, identity: id, endpointId: 0 }]);
  return id;
};
const kept = learn('198.51.100.10');
// past the store's window (50 ms): this one is on disk
await new Promise((r) => setTimeout(r, 200));
await kv.put('membrane/probe', 'flushed'); // the store's writes are in order: kept's is before this
// two answers learnt, in the maps, and the agent killed before the next write (same tick)
const lost = [learn('203.0.113.20'), learn('203.0.113.21')];
writeSync(1, JSON.stringify({ kept, lost }) + '\n');
process.kill(process.pid, 'SIGKILL');
