/** bench/scale/complete.ts: a node's ipcache against what etcd names, its own entries, sampled identities. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compare, complete, describe, expectedFromCluster, ownEntries, sameSnapshot, type ClusterSnapshot } from '../../../bench/scale/complete.ts';
import { ipcacheValue } from '../../../src/agent/cluster-keys.ts';
import type { EndpointRecord } from '../../../src/agent/endpoints.ts';

const snap = (ipcache: string[], nodes: Record<string, string[]>): ClusterSnapshot => ({
  revision: 7, ipcache: new Set(ipcache.map((ip) => `${ip}/32`)), badNodes: [],
  nodes: new Map(Object.entries(nodes).map(([k, v]) => [k, v.map((ip) => `${ip}/32`)])),
});
const value = (ip: string, identity: number) => ipcacheValue({ id: 1, ip, identity, namespace: 'sim', pod: 'p' } as EndpointRecord, 'sim1', '100.64.0.1');

// node2's view: node1 and node3 (InternalIP, router IP), one simulated node, two remote pods
const c = snap(['100.96.0.33', '100.96.0.34'], {
  'default/node1': ['192.0.2.1', '10.244.1.1'], 'default/node2': ['192.0.2.2', '10.244.2.1'], 'default/node3': ['192.0.2.3', '10.244.3.1'], 'default/sim1': ['100.64.0.1'],
});
const good = (): Map<string, number> => new Map([
  ['192.0.2.2/32', 1], ['10.244.2.1/32', 1], ['0.0.0.0/0', 2], // its own: host, router, world
  ['192.0.2.1/32', 6], ['10.244.1.1/32', 6], ['192.0.2.3/32', 6], ['10.244.3.1/32', 6], ['100.64.0.1/32', 6],
  ['100.96.0.33/32', 60017], ['100.96.0.34/32', 60018],
]);

test('the cluster names every ipcache key and every other node\'s addresses, not its own', () => {
  const e = expectedFromCluster(c, 'default/node2');
  assert.deepEqual([...e.keys()].sort(), ['10.244.1.1/32', '10.244.3.1/32', '100.64.0.1/32', '100.96.0.33/32', '100.96.0.34/32', '192.0.2.1/32', '192.0.2.3/32']);
  assert.equal(e.get('100.96.0.33/32'), 'pod');
  assert.equal(e.get('192.0.2.1/32'), 'node');
});

test('own entries: what the map holds that the cluster does not name', () => {
  assert.deepEqual([...ownEntries(good(), c, 'default/node2')].sort(), ['0.0.0.0/0', '10.244.2.1/32', '192.0.2.2/32']);
});

test('a map that is the cluster plus its own entries is complete; one missing, one extra or a wrong identity is not, and is named', () => {
  const own = ownEntries(good(), c, 'default/node2');
  const values = new Map([['100.96.0.33', value('100.96.0.33', 60017)], ['100.96.0.34', value('100.96.0.34', 60018)]]);
  const ok = compare('node2', 'default/node2', good(), c, own, values);
  assert.ok(complete(ok), describe(ok));
  assert.equal(ok.expected, 10);

  const lost = good();
  lost.delete('100.96.0.34/32');
  lost.delete('0.0.0.0/0'); // an own entry gone is missing too
  const m = compare('node2', 'default/node2', lost, c, own, values);
  assert.ok(!complete(m));
  assert.deepEqual(m.missing, ['0.0.0.0/0', '100.96.0.34/32']);
  assert.match(describe(m), /missing 2 \(0\.0\.0\.0\/0, 100\.96\.0\.34\/32\)/);

  const stale = good();
  stale.set('100.96.0.99/32', 60017); // a pod deleted from etcd, still in the map
  const x = compare('node2', 'default/node2', stale, c, own, values);
  assert.deepEqual(x.extra, ['100.96.0.99/32']);
  assert.deepEqual(x.missing, []);

  const relabeled = good();
  relabeled.set('100.96.0.33/32', 60999);
  relabeled.set('192.0.2.3/32', 2); // a node address that is not remote-node
  const w = compare('node2', 'default/node2', relabeled, c, own, values);
  assert.deepEqual(w.wrongIdentity.sort(), ['100.96.0.33/32 60999 (etcd 60017)', '192.0.2.3/32 2 (remote-node 6)']);
});

test('two reads of etcd agree only when they hold the same keys and node addresses', () => {
  assert.ok(sameSnapshot(c, snap(['100.96.0.34', '100.96.0.33'], Object.fromEntries([...c.nodes].map(([k, v]) => [k, v.map((p) => p.slice(0, -3))])))));
  assert.ok(!sameSnapshot(c, snap(['100.96.0.33'], Object.fromEntries([...c.nodes].map(([k, v]) => [k, v.map((p) => p.slice(0, -3))])))));
  const moved = new Map(c.nodes);
  moved.set('default/sim1', ['100.64.0.9/32']);
  assert.ok(!sameSnapshot(c, { ...c, nodes: moved }));
});
