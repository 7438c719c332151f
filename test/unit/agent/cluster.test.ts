/**
 * The cluster part of an agent on the memory kvstore: Cilium's node and ipcache value formats,
 * two nodes seeing each other's endpoints, corrupt values skipped, a node's own ipcache key put
 * back when something else deletes it, leader choice and spread scheduling.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { createCluster } from '../../../src/agent/cluster.ts';
import { createIpcacheBytesReader, IPCACHE_PREFIX, NODES_PREFIX, nodeValue, parseIpcacheValue, parseNodeValue } from '../../../src/agent/cluster-keys.ts';
import { createLogger } from '../../../src/common/logger.ts';
import type { Pod } from '../../../src/api/types.ts';
import { until } from '../../support/until.ts';

const logger = createLogger({ level: 'silent' });

test("node value: Cilium's types.Node JSON (Go field names, base64 mask) and both CIDR forms read back", () => {
  const v = JSON.parse(nodeValue({ name: 'node2', cluster: 'default', ip: '192.0.2.2', routerIp: '10.244.2.1', podCidr: '10.244.2.0/24' }, 'b')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(v).slice(0, 4), ['Name', 'Cluster', 'IPAddresses', 'IPv4AllocCIDR']);
  assert.deepEqual(v.IPv4AllocCIDR, { IP: '10.244.2.0', Mask: '////AA==' });
  assert.deepEqual(v.IPAddresses, [{ Type: 'InternalIP', IP: '192.0.2.2' }, { Type: 'CiliumInternalIP', IP: '10.244.2.1' }]);
  assert.equal(v.EncryptionKey, 0);
  assert.deepEqual(parseNodeValue(JSON.stringify(v)), { name: 'node2', cluster: 'default', ip: '192.0.2.2', routerIp: '10.244.2.1', podCidr: '10.244.2.0/24' });
  assert.equal(parseNodeValue(JSON.stringify({ ...v, IPv4AllocCIDR: '10.9.0.0/16' }))?.podCidr, '10.9.0.0/16');
  for (const bad of ['', 'null', '{"Name":""}', '{"Name":"n","Cluster":"c","IPAddresses":[]}', '[1]']) assert.equal(parseNodeValue(bad), undefined, bad);
});

test('node value: the underlay MAC (UnderlayMAC) round-trips lower case; anything not six bytes is no MAC', () => {
  const n = { name: 'node2', cluster: 'default', ip: '192.0.2.2', underlayMac: '02:00:c0:00:02:02' };
  const v = JSON.parse(nodeValue(n, 'b')) as Record<string, unknown>;
  assert.equal(v.UnderlayMAC, '02:00:c0:00:02:02');
  assert.deepEqual(parseNodeValue(JSON.stringify(v)), n);
  assert.equal(parseNodeValue(JSON.stringify({ ...v, UnderlayMAC: '02:00:C0:00:02:0A' }))?.underlayMac, '02:00:c0:00:02:0a');
  for (const bad of ['', '02:00:c0:00:02', '02:00:c0:00:02:02:03', 'zz:00:c0:00:02:02', 7, null]) {
    const p = parseNodeValue(JSON.stringify({ ...v, UnderlayMAC: bad }));
    assert.ok(p && !('underlayMac' in p), JSON.stringify(bad));
  }
  // a node without one (an older agent) publishes none
  assert.equal('UnderlayMAC' in (JSON.parse(nodeValue({ name: 'n', cluster: 'default', ip: '192.0.2.3' }, 'b')) as object), false);
});

test("ipcache value: Cilium's IPIdentityPair; the host identity from another node reads as remote-node; junk refused", () => {
  const k = `${IPCACHE_PREFIX}10.244.2.7`;
  const good = { IP: '10.244.2.7', Mask: null, HostIP: '192.0.2.2', ID: 4242, Key: 0, Metadata: 'cilium-global:default:node2:123', K8sNamespace: 'x', K8sPodName: 'p' };
  assert.deepEqual(parseIpcacheValue(k, JSON.stringify(good)), { ip: '10.244.2.7', hostIp: '192.0.2.2', identity: 4242, node: 'node2', namespace: 'x', pod: 'p' });
  assert.equal(parseIpcacheValue(k, JSON.stringify({ ...good, ID: 1 }))?.identity, 6);
  for (const bad of [{ ...good, IP: '10.244.2.8' }, { ...good, Mask: 'AAAA' }, { ...good, ID: -1 }, { ...good, ID: 1 << 24 }, { ...good, ID: '5' }, { ...good, HostIP: 'x' }]) {
    assert.equal(parseIpcacheValue(k, JSON.stringify(bad)), undefined, JSON.stringify(bad));
  }
  assert.equal(parseIpcacheValue(k, 'not json'), undefined);
});

test('ipcache value read from bytes: the same answer as the JSON reading for the agent layout and for everything else', () => {
  const read = createIpcacheBytesReader();
  const good = { IP: '10.244.2.7', Mask: null, HostIP: '192.0.2.2', ID: 4242, Key: 0, Metadata: 'cilium-global:default:node2:123', K8sNamespace: 'x', K8sPodName: 'p' };
  const texts = [
    JSON.stringify(good), JSON.stringify({ ...good, ID: 1 }), JSON.stringify({ ...good, ID: 0 }), JSON.stringify({ ...good, K8sNamespace: '' }),
    JSON.stringify({ ...good, IP: '10.244.2.8' }), JSON.stringify({ ...good, IP: '10.244.2.70' }), JSON.stringify({ ...good, Mask: 'AAAA' }),
    JSON.stringify({ ...good, ID: -1 }), JSON.stringify({ ...good, ID: 1 << 24 }), JSON.stringify({ ...good, ID: 99999999999 }), JSON.stringify({ ...good, ID: '5' }),
    JSON.stringify({ ...good, HostIP: 'x' }), JSON.stringify({ ...good, HostIP: '192.0.2.256' }), JSON.stringify({ ...good, HostIP: '192.0.02.2' }),
    JSON.stringify({ ...good, Metadata: 'other' }), JSON.stringify({ ...good, Metadata: 'cilium-global:default::1' }), JSON.stringify({ ...good, Metadata: 'cilium-global:a:b:c:1' }),
    JSON.stringify({ ...good, K8sPodName: 'p\"q' }), JSON.stringify({ ...good, K8sPodName: 'pödé' }), JSON.stringify({ ...good, NamedPorts: [{ Name: 'http', Port: 80 }] }),
    JSON.stringify({ HostIP: good.HostIP, IP: good.IP, Mask: null, ID: good.ID, Key: 0, Metadata: good.Metadata, K8sNamespace: 'x', K8sPodName: 'p' }), JSON.stringify({ IP: good.IP, HostIP: good.HostIP, ID: 7 }), `${JSON.stringify(good)} `, JSON.stringify(good).slice(0, -2), 'not json', '',
  ];
  for (const t of texts) assert.deepEqual(read('10.244.2.7', Buffer.from(t)), parseIpcacheValue(`${IPCACHE_PREFIX}10.244.2.7`, t), t);
  // the agent layout: strings shared across entries (one node name, one namespace), not re-read
  const a = read('10.244.2.7', Buffer.from(JSON.stringify(good)))!, b = read('10.244.2.9', Buffer.from(JSON.stringify({ ...good, IP: '10.244.2.9', K8sPodName: 'q' })))!;
  assert.equal(b.node, 'node2'); assert.equal(b.pod, 'q'); assert.equal(a.namespace, b.namespace);
});

test('two nodes on one store: each sees the other and its endpoints; corrupt keys skipped; own key restored', async () => {
  const kv = await openMemoryStore();
  const warned: string[] = [];
  const log = { ...logger, child: () => ({ info() {}, warn: (o: object, m: string) => void warned.push(`${m} ${JSON.stringify(o)}`) }) } as unknown as typeof logger;
  let changes = 0;
  const n1 = createCluster({ kv, logger: log, self: { name: 'node1', cluster: 'default', ip: '192.0.2.1', routerIp: '10.244.1.1', podCidr: '10.244.1.0/24' }, onChange: () => { changes++; } });
  const n2 = createCluster({ kv, logger, self: { name: 'node2', cluster: 'default', ip: '192.0.2.2', routerIp: '10.244.2.1', podCidr: '10.244.2.0/24' } });
  await n1.start();
  await n2.start();
  assert.deepEqual(n1.nodes().map((n) => n.name), ['node1', 'node2']);
  assert.equal(n1.isLeader(), true);
  assert.equal(n2.isLeader(), false);
  // node2 gets an endpoint: node1 learns the pod with its identity and node
  await kv.put('membrane/endpoints/node2/x/p', JSON.stringify({ id: 7, namespace: 'x', pod: 'p', identity: 4242, ip: '10.244.2.7', labels: [] }));
  await n2.flushed();
  await until('node1 learns the remote endpoint 10.244.2.7', () => n1.remoteEndpoint('10.244.2.7') !== undefined, 2000);
  assert.deepEqual(n1.remoteEndpoint('10.244.2.7'), { ip: '10.244.2.7', hostIp: '192.0.2.2', identity: 4242, node: 'node2', namespace: 'x', pod: 'p' });
  assert.ok(changes > 0);
  const entries = n1.ipcacheEntries();
  // every remote entry names its node's InternalIP as tunnel endpoint; the node's own address names itself
  assert.deepEqual(entries.find((e) => e.prefix === '10.244.2.7/32'), { prefix: '10.244.2.7/32', identity: 4242, endpointId: 0, tunnelEndpoint: '192.0.2.2' });
  assert.deepEqual(entries.filter((e) => e.identity === 6).map((e) => `${e.prefix}>${e.tunnelEndpoint}`).sort(), ['10.244.2.1/32>192.0.2.2', '192.0.2.2/32>192.0.2.2']);
  assert.equal(n2.remoteEndpoint('10.244.2.7'), undefined, 'a node does not list its own pods as remote');
  // the deltas the datapath applies: every entry once, then only what changed
  const first = n1.drainIPCacheChanges();
  assert.deepEqual(first.upserts.map((e) => `${e.prefix}=${e.identity}`).sort(), ['10.244.2.1/32=6', '10.244.2.7/32=4242', '192.0.2.2/32=6']);
  assert.deepEqual(first.deletes, []);
  assert.deepEqual(n1.drainIPCacheChanges(), { upserts: [], deletes: [] });
  assert.equal(n1.holds('10.244.2.7/32'), true);
  assert.equal(n1.holds('192.0.2.2/32'), true);
  assert.equal(n1.holds('192.0.2.1/32'), false, 'its own address is not a remote claim');
  // corrupt values are logged and skipped
  await kv.put(`${IPCACHE_PREFIX}10.244.2.99`, '{"IP":"oops"}');
  await kv.put(`${NODES_PREFIX}default/nodeX`, 'garbage');
  assert.equal(n1.remoteEndpoint('10.244.2.99'), undefined);
  assert.equal(n1.nodes().length, 2);
  assert.equal(warned.length, 2, warned.join('\n'));
  // someone deletes node2's key: node2 writes it back (Cilium's self-deletion protection)
  await kv.delete(`${IPCACHE_PREFIX}10.244.2.7`);
  await n2.flushed();
  await until('node1 learns the remote endpoint 10.244.2.7', () => n1.remoteEndpoint('10.244.2.7') !== undefined, 2000);
  assert.ok(await kv.get(`${IPCACHE_PREFIX}10.244.2.7`));
  // the endpoint goes: its key and node1's entry go
  await kv.delete('membrane/endpoints/node2/x/p');
  await n2.flushed();
  await until('node1 forgets the remote endpoint 10.244.2.7', () => n1.remoteEndpoint('10.244.2.7') === undefined, 2000);
  assert.equal(await kv.get(`${IPCACHE_PREFIX}10.244.2.7`), undefined);
  const gone = n1.drainIPCacheChanges();
  assert.ok(gone.deletes.includes('10.244.2.7/32'), JSON.stringify(gone));
  assert.equal(gone.upserts.some((e) => e.prefix === '10.244.2.7/32'), false);
  assert.equal(n1.holds('10.244.2.7/32'), false);
  n1.stop(); n2.stop();
});

test('dual stack: IPv6AllocCIDR and the IPv6 CiliumInternalIP in the node value; a pod\'s IPv6 address is an ipcache key of its own', async () => {
  const self2 = { name: 'node2', cluster: 'default', ip: '192.0.2.2', routerIp: '10.244.2.1', routerIp6: 'fd00:10:244:2::1', podCidr: '10.244.2.0/24', podCidr6: 'fd00:10:244:2::/64' };
  const v = JSON.parse(nodeValue(self2, 'b')) as Record<string, unknown>;
  assert.deepEqual(v.IPv6AllocCIDR, { IP: 'fd00:10:244:2::', Mask: '//////////8AAAAAAAAAAA==' });
  assert.deepEqual(v.IPAddresses, [{ Type: 'InternalIP', IP: '192.0.2.2' }, { Type: 'CiliumInternalIP', IP: '10.244.2.1' }, { Type: 'CiliumInternalIP', IP: 'fd00:10:244:2::1' }]);
  assert.deepEqual(parseNodeValue(JSON.stringify(v)), self2);
  assert.equal(parseNodeValue(JSON.stringify({ ...v, IPv6AllocCIDR: 'fd00:9::/64' }))?.podCidr6, 'fd00:9::/64');
  // a CIDR of the wrong family, or a mask of the wrong length, is no pod CIDR
  for (const bad of ['10.9.0.0/16', { IP: 'fd00:9::', Mask: '////AA==' }, 'fd00::/129', { IP: '10.1.0.0', Mask: '//////////8AAAAAAAAAAA==' }]) {
    assert.equal(parseNodeValue(JSON.stringify({ ...v, IPv6AllocCIDR: bad }))?.podCidr6, undefined, JSON.stringify(bad));
  }
  assert.equal(parseNodeValue(JSON.stringify({ ...v, IPv4AllocCIDR: 'fd00:9::/64' }))?.podCidr, undefined);
  // the underlay is IPv4: an IPv6 InternalIP alone makes no node
  assert.equal(parseNodeValue(JSON.stringify({ ...v, IPAddresses: [{ Type: 'InternalIP', IP: 'fd00::2' }] })), undefined);

  // IPv6 ipcache values: keyed by the canonical text only
  const good = { IP: 'fd00:10:244:2::7', Mask: null, HostIP: '192.0.2.2', ID: 4242, Key: 0, Metadata: 'cilium-global:default:node2:123', K8sNamespace: 'x', K8sPodName: 'p' };
  assert.equal(parseIpcacheValue(`${IPCACHE_PREFIX}fd00:10:244:2::7`, JSON.stringify(good))?.ip, 'fd00:10:244:2::7');
  assert.equal(createIpcacheBytesReader()('fd00:10:244:2::7', Buffer.from(JSON.stringify(good)))?.identity, 4242);
  for (const ip of ['fd00:10:244:2:0:0:0:7', 'FD00:10:244:2::7', '::ffff:10.244.2.7']) {
    assert.equal(parseIpcacheValue(`${IPCACHE_PREFIX}${ip}`, JSON.stringify({ ...good, IP: ip })), undefined, ip);
  }
  assert.equal(parseIpcacheValue(`${IPCACHE_PREFIX}fd00:10:244:2::7`, JSON.stringify({ ...good, HostIP: 'fd00::2' })), undefined, 'the tunnel endpoint is an IPv4 node');

  const kv = await openMemoryStore();
  const n1 = createCluster({ kv, logger, self: { name: 'node1', cluster: 'default', ip: '192.0.2.1', routerIp: '10.244.1.1', routerIp6: 'fd00:10:244:1::1', podCidr: '10.244.1.0/24', podCidr6: 'fd00:10:244:1::/64' } });
  const n2 = createCluster({ kv, logger, self: { ...self2 } });
  await n1.start();
  await n2.start();
  assert.equal(n1.nodes().find((n) => n.name === 'node2')?.podCidr6, 'fd00:10:244:2::/64');
  await kv.put('membrane/endpoints/node2/x/p', JSON.stringify({ id: 7, namespace: 'x', pod: 'p', identity: 4242, ip: '10.244.2.7', ip6: 'fd00:10:244:2::7', labels: [] }));
  await n2.flushed();
  await until('node1 learns both addresses of the remote pod', () => n1.remoteEndpoint('fd00:10:244:2::7') !== undefined && n1.remoteEndpoint('10.244.2.7') !== undefined, 2000);
  const six = JSON.parse((await kv.get(`${IPCACHE_PREFIX}fd00:10:244:2::7`))!.value) as Record<string, unknown>;
  assert.deepEqual({ IP: six.IP, HostIP: six.HostIP, ID: six.ID, Mask: six.Mask }, { IP: 'fd00:10:244:2::7', HostIP: '192.0.2.2', ID: 4242, Mask: null });
  const first = n1.drainIPCacheChanges();
  // the IPv6 entries (pod and node router address) are /128, behind node2's IPv4 InternalIP
  assert.deepEqual(first.upserts.filter((e) => e.prefix.includes(':')).map((e) => `${e.prefix}=${e.identity}>${e.tunnelEndpoint}`).sort(),
    ['fd00:10:244:2::1/128=6>192.0.2.2', 'fd00:10:244:2::7/128=4242>192.0.2.2']);
  assert.ok(n1.ipcacheEntries().some((e) => e.prefix === 'fd00:10:244:2::7/128' && e.tunnelEndpoint === '192.0.2.2'));
  assert.equal(n1.holds('fd00:10:244:2::7/128'), true);
  assert.equal(n1.holds('fd00:10:244:2::7/32'), false);
  await kv.delete('membrane/endpoints/node2/x/p');
  await n2.flushed();
  await until('node1 forgets the IPv6 address', () => n1.remoteEndpoint('fd00:10:244:2::7') === undefined, 2000);
  assert.equal(await kv.get(`${IPCACHE_PREFIX}fd00:10:244:2::7`), undefined);
  assert.ok(n1.drainIPCacheChanges().deletes.includes('fd00:10:244:2::7/128'));
  n1.stop(); n2.stop();
});

test('scheduling: nodeName kept, the rest spread to the fewest pods, lowest node first', async () => {
  const kv = await openMemoryStore();
  const cs = ['node1', 'node2', 'node3'].map((n, i) => createCluster({ kv, logger, self: { name: n, cluster: 'default', ip: `192.0.2.${i + 1}` } }));
  for (const c of cs) await c.start();
  const pod = (name: string, nodeName?: string) => ({ metadata: { name, namespace: 'd' }, spec: { containers: [], ...(nodeName ? { nodeName } : {}) } }) as unknown as Pod;
  const existing = [pod('dns', 'node1')];
  const batch = [pod('a', 'node2'), pod('b'), pod('c'), pod('d'), pod('e')];
  cs[0]!.schedule(batch, existing);
  assert.deepEqual(batch.map((p) => p.spec.nodeName), ['node2', 'node3', 'node1', 'node2', 'node3']);
  // re-scheduling a pod that exists counts it once
  const again = [pod('b', 'node3')];
  cs[0]!.schedule(again, [...existing, ...batch]);
  assert.equal(again[0]!.spec.nodeName, 'node3');
  for (const c of cs) c.stop();
});
