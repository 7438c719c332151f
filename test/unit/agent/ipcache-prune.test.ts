/**
 * The kernel's ipcache outlives the agent (pinned map). What an earlier agent wrote for a pod
 * deleted, a CIDR rule dropped or a remote endpoint gone while no agent ran must not survive the
 * restart: an address left with its old identity keeps that identity's permissions for whoever
 * gets the address next. The restarted agent removes exactly what nothing claims and keeps every
 * claimed prefix. Real agent and policy engine, in-memory kvstore, fake datapath pre-filled as a
 * previous agent left it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { createFakeDatapath } from '../../../src/datapath/fake.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { createAgent } from '../../../src/agent/agent.ts';

const SRC = { file: 'p.yaml', line: 1, col: 1 };
const res = (r: Record<string, unknown>) => ({ ...r, source: SRC });

test('a restarted agent removes the stale ipcache entries and keeps every claimed one', async () => {
  const kv = await openMemoryStore();
  const put = (r: { kind: string; metadata: { name: string; namespace?: string } }) => kv.put(`membrane/resources/${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`, JSON.stringify(r));
  await put(res({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }) as never);
  await put(res({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' } }, spec: { containers: [{ name: 'c' }] } }) as never);
  await put(res({
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'out', namespace: 'shop' },
    spec: { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toCIDR: ['198.51.100.0/24'] }] },
  }) as never);

  const datapath = createFakeDatapath();
  // as the previous agent left the map: the live pod's address (its IPv6 in another spelling),
  // a deleted pod, a CIDR of a deleted policy, a remote pod that is gone, a remote pod still there
  await datapath.upsertIPCache([
    { prefix: '10.244.1.11/32', identity: 40000, endpointId: 1 },
    { prefix: 'fd00:10:244:1:0::b/128', identity: 40000, endpointId: 1 },
    { prefix: '10.244.1.99/32', identity: 40001, endpointId: 7 },
    { prefix: '203.0.113.0/24', identity: 16777217, endpointId: 0 },
    { prefix: '10.244.2.5/32', identity: 40002, endpointId: 0 },
    { prefix: '10.244.2.6/32', identity: 40003, endpointId: 0 },
  ]);
  const remote = new Set(['10.244.2.6/32']);
  const lines: string[] = [];
  const policy = createAgentPolicyEngine();
  const agent = await createAgent({
    config: { node: 'node1', hostIp: '192.0.2.1', lab: 't' }, kv, datapath, policy,
    logger: pino({ level: 'info' }, { write: (l: string) => { lines.push(l); } }),
    networks: { ensure: async () => ({ ip: '10.244.1.11', ip6: 'fd00:10:244:1::b', mac: '02:00:00:00:00:01', netns: 'ns1', hostIfname: 'lxc1', hostIfindex: 101 }), remove: async () => {} },
    workloads: { ensure: async () => ({ ready: 1, total: 1 }), stop: async () => {} },
    extraIPCache: () => policy.ipcacheEntries(),
    // the cluster, as far as the agent asks it: one node (leader, schedules nothing elsewhere), one remote pod
    cluster: { holds: (p: string) => remote.has(p), isLeader: () => true, schedule: () => {} } as never,
  });
  try {
    await agent.start();
    await agent.settled();
    assert.deepEqual(agent.lastErrors(), []);
    assert.deepEqual(agent.endpoints().map((e) => e.pod), ["web"]);
    const removed = await agent.pruneStaleIPCache();
    assert.deepEqual(removed.sort(), ['10.244.1.99/32', '10.244.2.5/32', '203.0.113.0/24']);
    const left = datapath.ipcachePrefixes().sort();
    assert.ok(left.includes('10.244.1.11/32'), `the live pod's address stays: ${left.join(' ')}`);
    assert.ok(left.some((p) => p.startsWith('fd00:10:244:1:')), `the live pod's IPv6 stays: ${left.join(' ')}`);
    assert.ok(left.includes('10.244.2.6/32'), 'the remote pod the cluster still holds stays');
    assert.ok(left.includes('198.51.100.0/24'), 'the CIDR of the live policy stays (positive control)');
    assert.ok(!left.includes('10.244.1.99/32') && !left.includes('203.0.113.0/24') && !left.includes('10.244.2.5/32'));
    assert.ok(lines.some((l) => l.includes('stale ipcache entries removed')));
    // a second pass finds nothing more
    assert.deepEqual(await agent.pruneStaleIPCache(), []);
  } finally {
    await agent.stop();
  }
});
