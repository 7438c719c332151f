// in-process: listing + cluster + apply (policy ipcache + ipcache key/value encoding) + prune scan, CPU per phase;
// with node --expose-gc, the live heap and external memory after each phase (per structure: the
// cluster's remote store after the listing, the policy ipcache after the apply), per entry.
//   bin/node --expose-gc --max-semi-space-size=16 bench/scale/apply.ts [etcd endpoint] [--malloc-default] [--heap-snapshot FILE]
// (the agent's V8 flags: src/lab/names.ts AGENT_NODE_FLAGS). A fixed data set without leases, e.g.
// 10,000 nodes: printf '%s\n' '{"cmd":"masters"}' '{"cmd":"grow","to":10000,"noLease":true}' '{"cmd":"stop"}' | bin/node bench/scale/sim.ts <endpoint> 0 1
import { openEtcdStore } from '../../src/kvstore/etcd.ts';
import { createCluster } from '../../src/agent/cluster.ts';
import { createLogger } from '../../src/common/logger.ts';
import { createAgentPolicyEngine } from '../../src/policy/agent-engine.ts';
import { encodeIpcacheKeyInto, encodeIpcacheValInto, IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE } from '../../src/datapath/linux/codec.ts';
import { parsePrefix } from '../../src/ipcache/prefix.ts';
import type { IPCacheEntry } from '../../src/datapath/types.ts';
import { readFileSync } from 'node:fs';
import { releaseFreeMemory, setMmapThreshold } from '../../src/sys/memory.ts';
// as the agent (src/agent/daemon.ts): large blocks mapped on their own, free pages given back after
// the apply; --malloc-default: glibc as it comes (the before of an A/B)
const mallocTuned = !process.argv.includes('--malloc-default');
if (mallocTuned) setMmapThreshold();
const ep = process.argv[2]?.startsWith('http') ? process.argv[2] : 'http://127.0.0.1:23790';
const kv = await openEtcdStore({ endpoints: [ep] });
const policy = createAgentPolicyEngine({});
const keys = Buffer.alloc(4096 * IPCACHE_KEY_SIZE), vals = Buffer.alloc(4096 * IPCACHE_VAL_SIZE);
const inMap = new Set<string>();
// measuring memory: nothing applied while listing (the remote store alone after it)
const gcOnly = typeof (globalThis as { gc?: unknown }).gc === 'function';
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
  onChange() { if (gcOnly) return; kick ??= setTimeout(() => { kick = undefined; void apply(); }, 20); } });
const gc = (globalThis as { gc?: () => void }).gc;
const mem = () => { gc?.(); gc?.(); const m = process.memoryUsage(); return { heap: m.heapUsed, ext: m.external, rss: m.rss }; };
/**
 * Where the RSS is (/proc/self/smaps): the program's text, glibc malloc's main heap (brk: Node's
 * Buffers and ArrayBuffers, V8 zones, what free() keeps), other anonymous memory (V8's heap pages,
 * malloc's thread arenas, large typed arrays).
 */
function rssParts(): string {
  let name = '';
  const kib = { text: 0, brk: 0, anon: 0, other: 0 };
  for (const l of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(l);
    if (m) { name = m[1]!; continue; }
    if (!l.startsWith('Rss:')) continue;
    const n = Number(l.split(/\s+/)[1]);
    if (name === '[heap]') kib.brk += n; else if (name === '') kib.anon += n; else if (name.endsWith('/node')) kib.text += n; else kib.other += n;
  }
  return `node binary ${(kib.text / 1024).toFixed(0)}, malloc brk heap ${(kib.brk / 1024).toFixed(0)}, anonymous ${(kib.anon / 1024).toFixed(0)}, other ${(kib.other / 1024).toFixed(0)} MiB`;
}
const m0 = mem();
const c0 = process.cpuUsage(), t0 = Date.now();
await cluster.startNodes();
await cluster.listIPCache();
const m1 = mem();
await apply();
const m2 = mem();
// --heap-snapshot FILE: the heap after the apply, to count by constructor (bench/scale/heap-summary.ts)
const snapAt = process.argv.indexOf('--heap-snapshot');
if (snapAt > 0) (await import('node:v8')).writeHeapSnapshot(process.argv[snapAt + 1]);
// the remote store alone (the policy ipcache cleared): what the cluster keeps after the listing
if (gc) for (const e of [...policy.engine.ipcache.entries()]) policy.engine.ipcache.delete(e.prefix);
const m3 = mem();
const per = (a: number, b: number, n: number) => `${((b - a) / 2 ** 20).toFixed(1)} MiB (${((b - a) / Math.max(1, n)).toFixed(0)} B/entry)`;
if (gc) console.log(`live heap after GC (${inMap.size} entries): after the listing, before any apply (remote store + pending changes) +${per(m0.heap, m1.heap, inMap.size)}, external +${per(m0.ext, m1.ext, inMap.size)}; applied (remote store + policy ipcache) +${per(m0.heap, m2.heap, inMap.size)}; remote store alone +${per(m0.heap, m3.heap, inMap.size)}, external +${per(m0.ext, m3.ext, inMap.size)}`);
const c1 = process.cpuUsage(c0), t1 = Date.now();
const canon = (p: string) => parsePrefix(p)?.text ?? p;
let stale = 0;
for (const p of inMap) { const c = canon(p); if (!cluster.holds(c)) stale++; }
const c2 = process.cpuUsage(c0);
const rssBefore = process.memoryUsage().rss;
if (mallocTuned) releaseFreeMemory();
const mu = process.memoryUsage();
console.log(`list+cluster+apply ${inMap.size}: wall ${t1 - t0} ms CPU ${((c1.user + c1.system) / 1000).toFixed(0)} ms; prune scan CPU ${((c2.user + c2.system - c1.user - c1.system) / 1000).toFixed(0)} ms (${stale} stale); rss ${(rssBefore / 2 ** 20).toFixed(0)} MiB${mallocTuned ? `, ${(mu.rss / 2 ** 20).toFixed(0)} MiB after malloc_trim` : ' (glibc malloc untuned)'} (${rssParts()}), heap used ${(mu.heapUsed / 2 ** 20).toFixed(0)} / total ${(mu.heapTotal / 2 ** 20).toFixed(0)} MiB, external ${(mu.external / 2 ** 20).toFixed(0)} MiB`);
cluster.stop();
await kv.close();
process.exit(0);
