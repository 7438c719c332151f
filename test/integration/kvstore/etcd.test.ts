/**
 * The etcd kvstore and the cluster identity allocator against a real etcd (Debian's etcd-server,
 * started and removed here): concurrent allocators in separate processes agree on identities,
 * a dead node's lease takes its slave keys and the GC then frees the identity, corrupt keys are
 * skipped, the etcd lock excludes, and TLS with client certificates.
 */
import { skipUnless } from '../../support/requirements.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { startEtcd, type TestEtcd } from '../support/etcd.ts';
import { openEtcdStore } from '../../../src/kvstore/etcd.ts';
import type { KVStore } from '../../../src/kvstore/types.ts';
import { ClusterIdentityAllocator, ID_PREFIX, VALUE_PREFIX, kvstoreLabelString } from '../../../src/identity/cluster-allocator.ts';
import { LabelSet } from '../../../src/labels/labels.ts';
import { until } from '../../support/until.ts';
import { Etcd3 } from 'etcd3';
import { createCluster } from '../../../src/agent/cluster.ts';
import { IPCACHE_PREFIX } from '../../../src/agent/cluster-keys.ts';
import { createLogger } from '../../../src/common/logger.ts';

const REPO = join(import.meta.dirname, '../../..');
const skip = skipUnless('etcd');
let etcd: TestEtcd;
const children: ChildProcess[] = [];
const stores: KVStore[] = [];

before(async () => {
  if (skip) return;
  etcd = await startEtcd();
});
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const s of stores) await s.close().catch(() => {});
  await etcd?.stop();
});

async function store(ttl = 30): Promise<KVStore> {
  const s = await openEtcdStore({ endpoints: [etcd.endpoint], leaseTtlSeconds: ttl });
  stores.push(s);
  return s;
}

test('follow lists in pages at one revision, each key once and in order, then follows puts and deletes', { skip }, async () => {
  const kv = await openEtcdStore({ endpoints: [etcd.endpoint], leaseTtlSeconds: 30, listPageSize: 3 });
  stores.push(kv);
  const prefix = 'membrane/test-follow/';
  // 10 keys over 4 pages; one with a multi-byte name (the prefix is cut by bytes, not characters)
  const names = [...Array.from({ length: 9 }, (_, i) => `k${i}`), 'z-é'];
  await kv.txn(names.map((n) => ({ op: 'put', key: `${prefix}${n}`, value: `v-${n}` })));
  await kv.put('membrane/test-follow0', 'outside the prefix');
  const events: string[] = [];
  const stop = await kv.follow(prefix, (ev) => void events.push(ev.type === 'put' ? `put ${ev.kv.key}=${ev.kv.value}` : `delete ${ev.key}`));
  try {
    assert.deepEqual(events, names.map((n) => `put ${prefix}${n}=v-${n}`));
    await kv.put(`${prefix}k1`, 'changed');
    await kv.delete(`${prefix}z-é`);
    await until('the watch delivers both', () => events.length === 12, 5000);
    assert.deepEqual(events.slice(10), [`put ${prefix}k1=changed`, `delete ${prefix}z-é`]);
  } finally {
    stop();
    await kv.txn([...names.map((n) => ({ op: 'delete' as const, key: `${prefix}${n}` })), { op: 'delete', key: 'membrane/test-follow0' }]);
  }
});

/** Starts a worker process (one node); resolves with its allocations. */
function worker(suffix: string, sets: string[][], ttl = 30): Promise<{ child: ChildProcess; ids: Record<string, [number, boolean]> }> {
  const child = spawn(join(REPO, 'bin/node'), [join(REPO, 'test/integration/kvstore/allocate-worker.ts'), etcd.endpoint, suffix, String(ttl), JSON.stringify(sets)], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((res, rej) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) res({ child, ids: JSON.parse(out.split('\n')[0]!) as Record<string, [number, boolean]> });
    });
    child.on('exit', (code) => rej(new Error(`worker ${suffix} exited ${code}: ${err}`)));
  });
}

test('same labels → same identity from four allocator processes at once; distinct labels → distinct', { skip }, async () => {
  const sets = [['app=web'], ['app=db'], ['app=web', 'tier=front'], ['app=cache'], ['app=q'], ['app=w2']];
  const ws = await Promise.all(['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4'].map((s) => worker(s, sets)));
  for (const s of sets) {
    const c = LabelSet.parse(s).canonical;
    const ids = new Set(ws.map((w) => w.ids[c]![0]));
    assert.equal(ids.size, 1, `${c}: ${[...ids]}`);
    assert.equal(ws.filter((w) => w.ids[c]![1]).length, 1, `${c}: created by exactly one node`);
  }
  const all = sets.map((s) => ws[0]!.ids[LabelSet.parse(s).canonical]![0]);
  assert.equal(new Set(all).size, sets.length);
  const kv = await store();
  const masters = await kv.list(ID_PREFIX);
  assert.equal(masters.length, sets.length);
  // Cilium's value formats: the master holds the label string, each slave the id as text
  const web = LabelSet.parse(['app=web']);
  const webId = ws[0]!.ids[web.canonical]![0];
  assert.equal((await kv.get(`${ID_PREFIX}${webId}`))?.value, 'k8s:app=web;');
  assert.equal((await kv.get(`${VALUE_PREFIX}k8s:app=web;/192.0.2.3`))?.value, String(webId));
  assert.equal((await kv.list(VALUE_PREFIX)).length, sets.length * 4);
  for (const w of ws) w.child.stdin!.end(); // clean stop: leases revoked, slave keys gone
  await until('slave keys removed on clean stop', async () => (await kv.list(VALUE_PREFIX)).length === 0, 10_000);
});

test("a dead node's lease takes its slave keys; the GC then frees the identity, not one still in use", { skip }, async () => {
  const kv = await store();
  const gcer = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.10', gcIntervalMs: 300 });
  try {
    const dying = await worker('192.0.2.11', [['app=dying'], ['app=shared']], 2);
    const survivor = await worker('192.0.2.12', [['app=shared']], 30);
    const dyingId = dying.ids[LabelSet.parse(['app=dying']).canonical]![0];
    const sharedId = survivor.ids[LabelSet.parse(['app=shared']).canonical]![0];
    assert.equal(dying.ids[LabelSet.parse(['app=shared']).canonical]![0], sharedId);
    await until('the GC node learns both identities', () => gcer.lookupById(dyingId) !== undefined && gcer.lookupById(sharedId) !== undefined, 5000);
    const t0 = Date.now();
    dying.child.kill('SIGKILL'); // no revoke: the lease must expire
    await until('the dead node\'s slave keys expire', async () => !(await kv.get(`${VALUE_PREFIX}${kvstoreLabelString(LabelSet.parse(['app=dying']))}/192.0.2.11`)), 15_000);
    assert.ok(Date.now() - t0 >= 1000, 'gone by lease expiry, not at once');
    await until('the unused identity is released', async () => !(await kv.get(`${ID_PREFIX}${dyingId}`)) && gcer.lookupById(dyingId) === undefined, 10_000);
    // positive control: still used by the survivor
    assert.equal((await kv.get(`${ID_PREFIX}${sharedId}`))?.value, 'k8s:app=shared;');
    assert.equal(gcer.lookupById(sharedId)?.labels.canonical, LabelSet.parse(['app=shared']).canonical);
    survivor.child.stdin!.end();
  } finally {
    gcer.stop();
  }
});

test('corrupt and unexpected identity keys are logged and skipped, at start and while watching', { skip }, async () => {
  const kv = await store();
  await kv.put(`${ID_PREFIX}junk`, 'k8s:app=x;');
  await kv.put(`${ID_PREFIX}900`, '{"not":"labels"}');
  const warnings: string[] = [];
  const a = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.20', gcIntervalMs: 0, log: { info() {}, warn: (o, m) => void warnings.push(`${m} ${JSON.stringify(o)}`) } });
  try {
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.equal(a.lookupById(900), undefined);
    await kv.put(`${ID_PREFIX}901`, 'no semicolon');
    await kv.put(`${ID_PREFIX}902`, 'k8s:app=fine;');
    await until('the good key arrives', () => a.lookupById(902) !== undefined, 5000);
    assert.equal(a.lookupById(901), undefined);
    assert.equal(warnings.length, 3);
    // allocation still works beside them
    assert.equal((await a.allocate(LabelSet.parse(['app=fine']))).identity.id, 902);
    await a.release(902);
  } finally {
    a.stop();
    await kv.delete(`${ID_PREFIX}junk`);
    await kv.delete(`${ID_PREFIX}900`);
    await kv.delete(`${ID_PREFIX}901`);
    await kv.delete(`${ID_PREFIX}902`);
  }
});

test('the etcd lock excludes a second holder until the first unlocks; a lost lock fails its guarded write', { skip }, async () => {
  const [a, b] = [await store(), await store()];
  const la = await a.lock('test/locks/x');
  let bHas = false;
  const lb = b.lock('test/locks/x').then((l) => { bHas = true; return l; });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(bHas, false);
  assert.equal(await a.cas([{ lock: la }], [{ op: 'put', key: 'test/guarded', value: '1' }]), true);
  await la.unlock();
  const l2 = await lb;
  assert.equal(bHas, true);
  // the lock key is deleted behind b's back (as a lease expiry would): its guarded write fails
  for (const p of await a.list('test/locks/x/')) await a.delete(p.key);
  assert.equal(await b.cas([{ lock: l2 }], [{ op: 'put', key: 'test/guarded', value: '2' }]), false);
  assert.equal((await a.get('test/guarded'))?.value, '1');
  await l2.unlock();
});

test('TLS with client certificates: accepted with the certificate, refused without', { skip }, async () => {
  const tlsEtcd = await startEtcd({ tls: true });
  try {
    const ok = await openEtcdStore({ endpoints: [tlsEtcd.endpoint], tls: tlsEtcd.tls! });
    await ok.put('tls/k', 'v');
    assert.equal((await ok.get('tls/k'))?.value, 'v');
    assert.match((await ok.status()).message, /1\/1 connected.*3\.4\.\d+ \(Leader\)/);
    await ok.close();
    await assert.rejects(openEtcdStore({ endpoints: [tlsEtcd.endpoint], tls: { ca: tlsEtcd.tls!.ca }, connectTimeoutMs: 3000 }), /KVSTORE_UNREACHABLE|does not answer/);
    await assert.rejects(openEtcdStore({ endpoints: [tlsEtcd.endpoint] }), /needs a CA certificate/);
  } finally {
    await tlsEtcd.stop();
  }
});

test('etcd stopped: every call that reaches it is KVSTORE_UNAVAILABLE (list, cas and the listing too, not only get/put/delete/txn)', { skip }, async () => {
  const gone = await startEtcd();
  const kv = await openEtcdStore({ endpoints: [gone.endpoint], leaseTtlSeconds: 30, connectTimeoutMs: 3000 });
  try {
    await kv.put('down/k', 'v');
    await gone.stop();
    const code = (e: unknown) => { assert.equal((e as { code?: string }).code, 'KVSTORE_UNAVAILABLE', String((e as Error).message)); return true; };
    await assert.rejects(kv.list('down/'), code);
    await assert.rejects(kv.cas([{ key: 'down/k', absent: true }], [{ op: 'put', key: 'down/k', value: 'w' }]), code);
    await assert.rejects(kv.cas([{ key: 'down/n', absent: true }], [{ op: 'put', key: 'down/n', value: 'w', lease: true }]), code);
    await assert.rejects(kv.followBytes('down/', () => {}), code);
    await assert.rejects(kv.get('down/k'), code);
    await assert.rejects(kv.txn([{ op: 'delete', key: 'down/k' }]), code);
  } finally {
    await kv.close().catch(() => {});
    await gone.stop();
  }
});

test('a restarted member resumes its ipcache watch from the saved revision: a key written and one deleted while it was away come as events; a compacted revision falls back to the listing', { skip }, async () => {
  const warnings: string[] = [];
  const kv = await openEtcdStore({ endpoints: [etcd.endpoint], leaseTtlSeconds: 30, log: { info: () => {}, warn: (_o, msg) => void warnings.push(msg) } });
  stores.push(kv);
  const raw = new Etcd3({ hosts: [etcd.endpoint] });
  const logger = createLogger({ level: 'silent' });
  const self = { name: 'resume1', cluster: 'default', ip: '192.0.2.1' };
  const value = (ip: string, id: number) => JSON.stringify({ IP: ip, Mask: null, HostIP: '192.0.2.9', ID: id, Key: 0, Metadata: `cilium-global:default:sim9:${id}`, K8sNamespace: 'default', K8sPodName: `p${id}` });
  const key = (i: number) => `${IPCACHE_PREFIX}10.9.0.${i}`;
  const clusters: ReturnType<typeof createCluster>[] = [];
  const member = () => { const c = createCluster({ kv, self, logger }); clusters.push(c); return c; };
  try {
    await kv.txn([1, 2, 3, 4, 5].map((i) => ({ op: 'put' as const, key: key(i), value: value(`10.9.0.${i}`, 1000 + i) })));
    // the first agent: listed, drained (its map holds everything), its revision saved
    const first = member();
    await first.start();
    assert.equal(first.drainIPCacheChanges().upserts.length, 5);
    await kv.put(key(5), value('10.9.0.5', 2005));
    await until('the first agent has the change', () => first.remoteEndpoint('10.9.0.5')?.identity === 2005, 5000);
    first.drainIPCacheChanges();
    const saved = first.ipcacheRevision();
    assert.ok(saved > 0, 'a revision once the listing and the watch delivered');
    first.stop();

    // while no agent runs: one endpoint written, one deleted
    await kv.put(key(6), value('10.9.0.6', 1006));
    const deletedAt = await kv.txn([{ op: 'delete', key: key(2) }]);
    const second = member();
    await second.startNodes();
    await second.listIPCache({ resume: saved });
    // (beside a listing of five keys the watch's history may come a moment after it)
    await until('the resumed watch has brought what changed while away', () => second.ipcacheRevision() >= deletedAt, 5000);
    const d = second.drainIPCacheChanges();
    // a listing cannot name a key this process never held: the delete came from the resumed watch
    assert.deepEqual(d.deletes, ['10.9.0.2/32']);
    assert.deepEqual(d.upserts.map((e) => `${e.prefix} ${e.identity}`).sort(), ['10.9.0.1/32 1001', '10.9.0.3/32 1003', '10.9.0.4/32 1004', '10.9.0.5/32 2005', '10.9.0.6/32 1006']);
    assert.equal(second.remoteEndpoint('10.9.0.2'), undefined);
    // and it goes on following
    await kv.put(key(7), value('10.9.0.7', 1007));
    await until('a later change arrives', () => second.remoteEndpoint('10.9.0.7') !== undefined, 5000);
    const saved2 = second.ipcacheRevision();
    second.stop();

    // away again, and etcd compacts its history past the saved revision
    await kv.delete(key(3));
    const now = await kv.put(key(8), value('10.9.0.8', 1008));
    await raw.kv.compact({ revision: String(now), physical: true });
    const third = member();
    await third.startNodes();
    await third.listIPCache({ resume: saved2 });
    const f = third.drainIPCacheChanges();
    // the listing alone: what exists now, and no delete (the agent's prune removes what nothing lists)
    assert.deepEqual(f.deletes, []);
    assert.deepEqual(f.upserts.map((e) => e.prefix).sort(), ['10.9.0.1/32', '10.9.0.4/32', '10.9.0.5/32', '10.9.0.6/32', '10.9.0.7/32', '10.9.0.8/32']);
    // (etcd cancels a compacted watch after creating it: the fallback may come after this small listing)
    await until('the fallback claims the listing\'s revision', () => third.ipcacheRevision() >= now, 5000);
    assert.deepEqual(third.drainIPCacheChanges(), { upserts: [], deletes: [] });
    // followed from the listing's revision on
    await kv.delete(key(4));
    assert.ok(warnings.some((w) => /saved revision|watch lost/.test(w)), `the fallback is logged: ${warnings.join('; ')}`);
    await until('a delete after the fallback listing arrives', () => third.remoteEndpoint('10.9.0.4') === undefined, 5000);
    assert.deepEqual(third.drainIPCacheChanges().deletes, ['10.9.0.4/32']);
  } finally {
    for (const c of clusters) c.stop();
    await kv.txn([1, 2, 3, 4, 5, 6, 7, 8].map((i) => ({ op: 'delete' as const, key: key(i) }))).catch(() => {});
    raw.close();
  }
});

/**
 * A loopback TCP relay in front of etcd whose connections can be cut: what an etcd restart or a
 * network blip does to a client's gRPC connection (the etcd behind it keeps its state).
 */
async function relay(target: string): Promise<{ endpoint: string; cut(): void; close(): Promise<void> }> {
  const { createServer, connect } = await import('node:net');
  const u = new URL(target);
  const open = new Set<import('node:net').Socket>();
  const server = createServer((c) => {
    const up = connect(Number(u.port), u.hostname);
    for (const [a, b] of [[c, up], [up, c]] as const) {
      open.add(a);
      a.on('error', () => {});
      a.on('close', () => { open.delete(a); b.destroy(); });
      a.pipe(b);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    cut: () => { for (const s of open) s.destroy(); },
    close: () => new Promise<void>((r) => { for (const s of open) s.destroy(); server.close(() => r()); }),
  };
}

test('a watch whose connection breaks while it catches up goes on from the last event it delivered: no change is lost (etcd3 would resume from the store revision it was created at)', { skip }, async () => {
  const r = await relay(etcd.endpoint);
  const kv = await openEtcdStore({ endpoints: [r.endpoint], leaseTtlSeconds: 30 });
  stores.push(kv);
  const raw = new Etcd3({ hosts: [etcd.endpoint] });
  const prefix = 'membrane/test-catchup/';
  const N = 2500;
  const key = (i: number) => `${prefix}k${String(i).padStart(5, '0')}`;
  let stop: (() => void) | undefined;
  try {
    for (let i = 0; i < N; i += 100) {
      const puts = await Promise.all(Array.from({ length: Math.min(100, N - i) }, (_, j) => raw.put(key(i + j)).value(`v${i + j}`).op()));
      await raw.kv.txn({ compare: [], success: puts, failure: [] });
    }
    const saved = Number((await raw.kv.range({ key: Buffer.from(prefix), range_end: Buffer.from('membrane/test-catchup0'), count_only: true })).header.revision);
    // while the follower is away: every key deleted, one revision each (etcd hands a catching-up
    // watch at most 1,000 revisions per response, a response at most every 100 ms: three or more)
    for (let i = 0; i < N; i += 50) await Promise.all(Array.from({ length: Math.min(50, N - i) }, (_, j) => raw.delete().key(key(i + j)).exec()));
    const last = Number((await raw.kv.range({ key: Buffer.from(prefix), range_end: Buffer.from('membrane/test-catchup0'), count_only: true })).header.revision);
    assert.ok(last - saved >= N, `${N} revisions to catch up (${saved} → ${last})`);
    // the follower held every key (its map, as a restarted agent's pinned ipcache): only the
    // resumed watch can name what went
    const held = new Set(Array.from({ length: N }, (_, i) => key(i).slice(prefix.length)));
    let cut = false;
    let progress = 0;
    stop = await kv.followBytes(prefix, (ev) => {
      if (ev.type === 'delete') held.delete(ev.rest); else held.add(ev.rest);
      // the connection breaks while the first of the catch-up's responses is being applied
      if (!cut) { cut = true; r.cut(); }
    }, { keys: () => [...held], resume: saved, onProgress: (rev) => { progress = rev; } });
    await until('every deletion made while away has come', () => held.size === 0, 20_000).catch(() => {});
    assert.ok(cut, 'the connection was cut during the catch-up');
    assert.equal(held.size, 0, `${held.size} of ${N} deletions never came after the reconnect (first missing: ${[...held].sort()[0]})`);
    assert.equal(progress, last, 'the revision claimed is the last deletion\'s');
    // and it goes on following after the reconnect
    await raw.put(key(0)).value('again');
    await until('a put after the catch-up arrives', () => held.has(key(0).slice(prefix.length)), 10_000);
  } finally {
    stop?.();
    await raw.delete().prefix(prefix).exec().catch(() => {});
    raw.close();
    await r.close();
  }
});
