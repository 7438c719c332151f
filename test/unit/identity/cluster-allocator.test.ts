/**
 * The kvstore identity allocator on the memory kvstore (the etcd one runs the same protocol in
 * test/integration/kvstore/etcd.test.ts): Cilium's label string, same labels → same number from
 * concurrent allocators, distinct labels → distinct numbers even when every allocator picks the
 * same random number, release and the two-pass GC, corrupt keys skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import {
  ClusterIdentityAllocator, ID_PREFIX, VALUE_PREFIX, kvstoreLabelString, parseKvstoreLabelString,
} from '../../../src/identity/cluster-allocator.ts';
import { LabelSet, makeLabel } from '../../../src/labels/labels.ts';
import { podIdentityLabels } from '../../../src/identity/labels.ts';
import type { Pod } from '../../../src/api/types.ts';

const logs: { obj: object; msg: string }[] = [];
const log = { info: () => {}, warn: (obj: object, msg: string) => void logs.push({ obj, msg }) };
const L = (...t: string[]) => LabelSet.parse(t);

test("label string: Cilium's source:key=value; per label, sorted by key, trailing ;", () => {
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w', namespace: 'prod', labels: { app: 'web' } }, spec: { containers: [] }, source: { file: '', line: 0, col: 0 } } as unknown as Pod;
  const s = kvstoreLabelString(podIdentityLabels({ pod, namespace: undefined }));
  assert.match(s, /^k8s:app=web;/);
  assert.ok(s.includes('k8s:io.kubernetes.pod.namespace=prod;'));
  assert.ok(s.endsWith(';'));
  assert.equal(kvstoreLabelString(new LabelSet([makeLabel('k8s', 'b', ''), makeLabel('k8s', 'a', '1')])), 'k8s:a=1;k8s:b=;');
  for (const bad of ['', 'k8s:a=1', 'noseparator;', ':a=1;', 'k8s:=1;', '{"json":1}']) assert.equal(parseKvstoreLabelString(bad), undefined, bad);
});

test('label string round-trips (property)', () => {
  const word = fc.stringMatching(/^[a-z][a-z0-9.\-/]{0,10}$/);
  fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom('k8s', 'container', 'unspec'), word, fc.stringMatching(/^[a-z0-9.\-_]{0,8}$/)), { minLength: 1, maxLength: 6 }), (ls) => {
    const set = new LabelSet(ls.map(([s, k, v]) => makeLabel(s, k, v)));
    assert.equal(parseKvstoreLabelString(kvstoreLabelString(set))?.canonical, set.canonical);
  }));
});

test('concurrent allocators: same labels → same identity, distinct labels → distinct, even when all pick the same number', async () => {
  const kv = await openMemoryStore();
  const nodes = await Promise.all(['192.0.2.1', '192.0.2.2', '192.0.2.3'].map((s) => ClusterIdentityAllocator.open({ kv, nodeSuffix: s, gcIntervalMs: 0, log, random: () => 0.5 })));
  const sets = [L('app=a'), L('app=b'), L('app=c'), L('app=a', 'tier=x')];
  const got = await Promise.all(nodes.flatMap((n) => sets.map(async (s) => ({ node: n, s, r: await n.allocate(s) }))));
  for (const s of sets) {
    const ids = new Set(got.filter((g) => g.s === s).map((g) => g.r.identity.id));
    assert.equal(ids.size, 1, `one id for ${s.canonical}: ${[...ids]}`);
    assert.equal(got.filter((g) => g.s === s && g.r.isNew).length, 1, 'exactly one allocator created it');
  }
  const ids = sets.map((s) => got.find((g) => g.s === s)!.r.identity.id);
  assert.equal(new Set(ids).size, sets.length);
  assert.equal((await kv.list(ID_PREFIX)).length, sets.length);
  // one slave key per node and label set, holding the id
  const slaves = await kv.list(VALUE_PREFIX);
  assert.equal(slaves.length, sets.length * nodes.length);
  // every node knows every identity (the selector cache needs remote ones)
  for (const n of nodes) for (const [i, s] of sets.entries()) assert.equal(n.lookupByLabels(s)?.id, ids[i]);
  // 'app=a' must not match the longer 'app=a;tier=x' set's slave keys
  assert.notEqual(ids[0], ids[3]);
  for (const n of nodes) n.stop();
});

test('release: the last local reference deletes the slave key; GC frees the master after two passes', async () => {
  const kv = await openMemoryStore();
  const a = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.1', gcIntervalMs: 0, log });
  const b = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.2', gcIntervalMs: 0, log });
  const s = L('app=rel');
  const id = (await a.allocate(s)).identity.id;
  await a.allocate(s); // second local reference
  assert.equal((await b.allocate(s)).identity.id, id);
  await a.release(id);
  assert.ok(await kv.get(`${VALUE_PREFIX}${kvstoreLabelString(s)}/192.0.2.1`), 'still referenced once on a');
  await a.release(id);
  assert.equal(await kv.get(`${VALUE_PREFIX}${kvstoreLabelString(s)}/192.0.2.1`), undefined);
  // b still uses it: no GC
  assert.deepEqual(await a.gc(), []);
  assert.deepEqual(await a.gc(), []);
  assert.equal(a.lookupById(id)?.labels.canonical, s.canonical, 'a keeps knowing it while the cluster has it');
  await b.release(id);
  assert.deepEqual(await a.gc(), [], 'first pass only marks');
  assert.deepEqual(await a.gc(), [id]);
  assert.equal(await kv.get(`${ID_PREFIX}${id}`), undefined);
  assert.equal(a.lookupById(id), undefined);
  assert.equal(b.lookupById(id), undefined);
  a.stop(); b.stop();
});

test('a master key re-used between GC passes is not deleted', async () => {
  const kv = await openMemoryStore();
  const a = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.1', gcIntervalMs: 0, log });
  const s = L('app=again');
  const id = (await a.allocate(s)).identity.id;
  await a.release(id);
  assert.deepEqual(await a.gc(), []);
  assert.equal((await a.allocate(s)).identity.id, id, 'same number again');
  assert.deepEqual(await a.gc(), []);
  assert.ok(await kv.get(`${ID_PREFIX}${id}`));
  a.stop();
});

test('corrupt or unexpected identity keys are logged and skipped', async () => {
  const kv = await openMemoryStore();
  await kv.put(`${ID_PREFIX}notanumber`, 'k8s:app=x;');
  await kv.put(`${ID_PREFIX}300`, '["k8s:app=json"]');
  await kv.put(`${ID_PREFIX}70000000`, 'k8s:app=toolarge;');
  await kv.put(`${ID_PREFIX}301`, 'k8s:app=good;');
  await kv.put(`${VALUE_PREFIX}k8s:app=good;/192.0.2.9`, 'garbage');
  logs.length = 0;
  const a = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.1', gcIntervalMs: 0, log });
  assert.equal(a.lookupById(301)?.labels.canonical, L('app=good').canonical);
  assert.equal(a.lookupById(300), undefined);
  assert.equal(logs.length, 3, JSON.stringify(logs));
  // allocation of the good labels reuses 301 despite the bad slave key beside it
  assert.equal((await a.allocate(L('app=good'))).identity.id, 301);
  await kv.put(`${ID_PREFIX}302`, 'not labels');
  assert.equal(a.lookupById(302), undefined);
  assert.ok((await a.allocate(L('app=new'))).identity.id >= 256);
  a.stop();
});

test('allocateSync refuses a cluster identity this node has not allocated through the kvstore', async () => {
  const kv = await openMemoryStore();
  const a = await ClusterIdentityAllocator.open({ kv, nodeSuffix: '192.0.2.1', gcIntervalMs: 0, log });
  assert.throws(() => a.allocateSync(L('app=sync')), /IDENTITY_NOT_ALLOCATED|no identity on this node/);
  const r = await a.allocate(L('app=sync'));
  assert.equal(a.allocateSync(L('app=sync')).identity.id, r.identity.id);
  assert.equal(a.references(r.identity.id), 2);
  // local-scope (CIDR) labels stay synchronous and never touch the kvstore
  const cidr = a.allocateSync(new LabelSet([makeLabel('cidr', '10.0.0.0/8')]));
  assert.ok(cidr.identity.id > 1 << 24);
  assert.equal((await kv.list(ID_PREFIX)).length, 1);
  a.stop();
});
