// in-process: listing + cluster + apply (policy ipcache + ipcache key/value encoding) + prune scan, CPU per phase
import { openEtcdStore } from '../../src/kvstore/etcd.ts';
import { createCluster } from '../../src/agent/cluster.ts';
import { createLogger } from '../../src/common/logger.ts';
import { createAgentPolicyEngine } from '../../src/policy/agent-engine.ts';
import { encodeIpcacheKeyInto, encodeIpcacheValInto, IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE } from '../../src/datapath/linux/codec.ts';
import { parsePrefix } from '../../src/ipcache/prefix.ts';
import type { IPCacheEntry } from '../../src/datapath/types.ts';
const ep = process.argv[2] ?? 'http://127.0.0.1:23790';
const kv = await openEtcdStore({ endpoints: [ep] });
const policy = createAgentPolicyEngine({});
const keys = Buffer.alloc(4096 * IPCACHE_KEY_SIZE), vals = Buffer.alloc(4096 * IPCACHE_VAL_SIZE);
const inMap = new Set<string>();
let kick: NodeJS.Timeout | undefined;
let applying = Promise.resolve();
const apply = () => { applying = applying.then(async () => {
  for (;;) {
    const { upserts, deletes } = cluster.drainIPCacheChanges(4096);
    if (!upserts.length && !deletes.length) return;
    const ipc = policy.engine.ipcache;
    const write: IPCacheEntry[] = [];
    for (const e of upserts) {
      const w = ipc.upsert(e.prefix, e.identity, 'node');
      const ours = w.identity === e.identity && w.endpointId === 0 && e.tunnelEndpoint;
      write.push({ prefix: e.prefix, identity: w.identity, endpointId: w.endpointId, ...(ours ? { tunnelEndpoint: e.tunnelEndpoint } : {}) });
    }
    let j = 0;
    for (const e of write) { encodeIpcacheKeyInto(keys, j * IPCACHE_KEY_SIZE, e.prefix); encodeIpcacheValInto(vals, j * IPCACHE_VAL_SIZE, e.identity, e.endpointId ?? 0, e.tunnelEndpoint); j++; inMap.add(e.prefix); }
  }
}); return applying; };
const cluster = createCluster({ kv, logger: createLogger({ level: 'warn' }), self: { name: 'bench-self', cluster: 'default', ip: '192.0.2.250' },
  onChange() { kick ??= setTimeout(() => { kick = undefined; void apply(); }, 20); } });
const c0 = process.cpuUsage(), t0 = Date.now();
await cluster.startNodes();
await cluster.listIPCache();
await apply();
const c1 = process.cpuUsage(c0), t1 = Date.now();
const canon = (p: string) => parsePrefix(p)?.text ?? p;
let stale = 0;
for (const p of inMap) { const c = canon(p); if (!cluster.holds(c)) stale++; }
const c2 = process.cpuUsage(c0);
console.log(`list+cluster+apply ${inMap.size}: wall ${t1 - t0} ms CPU ${((c1.user + c1.system) / 1000).toFixed(0)} ms; prune scan CPU ${((c2.user + c2.system - c1.user - c1.system) / 1000).toFixed(0)} ms (${stale} stale); rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
cluster.stop();
await kv.close();
process.exit(0);
