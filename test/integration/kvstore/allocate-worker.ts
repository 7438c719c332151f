/**
 * One "node" for etcd.test.ts: opens the etcd kvstore and a cluster allocator in its own process,
 * allocates the label sets given as JSON on argv (all at once), prints {canonical: [id, isNew]}
 * as one JSON line, then stays up (holding its lease) until stdin closes or it is killed.
 */
import { openEtcdStore } from '../../../src/kvstore/etcd.ts';
import { ClusterIdentityAllocator } from '../../../src/identity/cluster-allocator.ts';
import { LabelSet } from '../../../src/labels/labels.ts';

const [endpoint, suffix, ttl, setsJson] = process.argv.slice(2) as [string, string, string, string];
const kv = await openEtcdStore({ endpoints: [endpoint], leaseTtlSeconds: Number(ttl) });
const alloc = await ClusterIdentityAllocator.open({ kv, nodeSuffix: suffix, gcIntervalMs: 0 });
const sets = (JSON.parse(setsJson) as string[][]).map((s) => LabelSet.parse(s));
const res = await Promise.all(sets.map((s) => alloc.allocate(s)));
process.stdout.write(JSON.stringify(Object.fromEntries(sets.map((s, i) => [s.canonical, [res[i]!.identity.id, res[i]!.isNew]]))) + '\n');
process.stdin.resume();
process.stdin.on('end', async () => {
  alloc.stop();
  await kv.close();
  process.exit(0);
});
