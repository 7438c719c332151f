// An agent of a newer build starting over an older build's pins (an upgrade without `membrane
// down`): the pinned maps whose definition changed are replaced (pins.ts), those of the same
// layout with their entries (conntrack tables by reference), the others empty and written again by
// the agent; pods keep their traffic and their policy; a load that fails puts the old pins back.
// Needs root. Everything made here (mdp-u* namespaces, /sys/fs/bpf/mdp-u* and mb-upgrade-* pins)
// is removed in after() / finally.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { tcpConnect, type Pod } from './support/topo.ts';
import type { Driver } from './support/rpc.ts';
import { DatapathNode } from './support/node.ts';
import { skipUnless } from '../../support/requirements.ts';
import { BpfMap, MapType, mapInfo } from '../../../src/sys/bpf.ts';
import { loadMigrating } from '../../../src/datapath/linux/pins.ts';
import { BpfObject } from '../../../src/sys/bpf.ts';
import { CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES } from '../../../src/datapath/linux/codec.ts';
import type { MapStateKey } from '../../../src/policy/types.ts';

const OBJ = fileURLToPath(new URL('../../../dist/bpf/endpoint.bpf.o', import.meta.url));
const BPF_F_NO_PREALLOC = 1;
const node = new DatapathNode({ prefix: 'u', pods: 3, subnet: 5, identityBase: 5000 });

type WireEntry = { key: MapStateKey; entry: { verdict: 'allow' | 'deny'; matchType?: number } };
const ingress = (identity: number, proto: number, port: number): WireEntry =>
  ({ key: { direction: 'ingress', identity, proto, port, portPrefixLen: port ? 16 : 0 }, entry: { verdict: 'allow', matchType: 2 } });

/** Replaces the map pinned at `path` by `make()`'s (an older build's definition), carrying `copy`'s entries. */
function pinOlder(path: string, make: () => BpfMap, copy: (from: BpfMap, to: BpfMap) => void = () => {}): void {
  const cur = BpfMap.fromPin(path);
  const older = make();
  try {
    copy(cur, older);
    rmSync(path);
    older.pin(path);
  } finally {
    cur.close();
    older.close();
  }
}

const copyAll = (from: BpfMap, to: BpfMap) => {
  for (const k of from.keys()) { const v = from.lookup(k); if (v) to.update(k, v); }
};

const infoOf = (path: string) => { const m = BpfMap.fromPin(path); try { return mapInfo(m.fd); } finally { m.close(); } };

describe('an upgrade over an older build\'s pins (root, namespaces, eBPF)', { skip: skipUnless('root'), concurrency: false }, () => {
  let d: Driver;
  let A: Pod, B: Pod, C: Pod;

  before(async () => {
    await node.up();
    d = node.d;
    [A, B, C] = node.topo.pods as [Pod, Pod, Pod];
    await node.serve([B.ns, '8080,9090', '']);
  });
  after(() => node.down());

  it('the agent starts without `membrane down`: maps of another definition replaced, traffic and policy hold, conntrack kept', async () => {
    const policyB = [ingress(node.idOf(A), 6, 8080)];
    await d.call('applyFull', B.id, policyB, { ingress: true, egress: false });
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'A -> B:8080 allowed (positive control)');
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'C -> B:8080 denied (positive control)');
    // a connection held across the upgrade: one echo round trip per line
    const hold = node.spawn(A.ns, ['hold', B.ip, '8080']);
    const lines = createInterface({ input: hold.stdout! })[Symbol.asyncIterator]();
    const roundTrip = async () => { hold.stdin!.write('x\n'); return (await lines.next()).value as string; };
    assert.equal((await lines.next()).value, 'connected');
    assert.equal(await roundTrip(), 'pong', 'the held connection carries data (positive control)');
    const ctBefore = (await d.call<{ srcIp: string; dstPort: number }[]>('conntrack')).filter((e) => e.srcIp === A.ip && e.dstPort === 8080).length;
    assert.ok(ctBefore > 0, 'A\'s connections are in conntrack (positive control)');
    await d.close();

    // what an older build pinned: mb_endpoints preallocated (before BPF_F_NO_PREALLOC), the
    // conntrack array of half the size (same tables), mb_policy with another value layout, a
    // smaller event ring
    const pin = (n: string) => `${node.pinRoot}/${n}`;
    pinOlder(pin('mb_endpoints'), () => BpfMap.create(MapType.HASH, 'mb_endpoints', 4, 40, 4096), copyAll);
    const template = BpfMap.create(MapType.LRU_HASH, 'mb_ct_tmpl', CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES);
    try {
      pinOlder(pin('mb_ct_tables'), () => BpfMap.create(MapType.ARRAY_OF_MAPS, 'mb_ct_tables', 4, 4, 65536 * 2 - 2, { innerMapFd: template.fd }), (from, to) => {
        for (const k of from.keys()) {
          if (k.readUInt32LE(0) >= to.info.maxEntries) continue;
          const v = from.lookup(k);
          if (!v) continue;
          const t = BpfMap.fromId(v.readUInt32LE(0));
          try { const fd = Buffer.alloc(4); fd.writeUInt32LE(t.fd); to.update(k, fd); } finally { t.close(); }
        }
      });
    } finally {
      template.close();
    }
    pinOlder(pin('mb_policy'), () => BpfMap.create(MapType.LPM_TRIE, 'mb_policy', 15, 4, 1024 * 1024, { flags: BPF_F_NO_PREALLOC }));
    pinOlder(pin('mb_events'), () => BpfMap.create(MapType.RINGBUF, 'mb_events', 0, 0, 1 << 20));
    const oldIds = Object.fromEntries(['mb_endpoints', 'mb_ct_tables', 'mb_policy', 'mb_events'].map((n) => [n, infoOf(pin(n)).id]));
    assert.equal(infoOf(pin('mb_endpoints')).flags, 0, 'the older mb_endpoints is preallocated (positive control)');
    // no agent: the attached programs keep the older maps they were loaded with
    assert.equal(await roundTrip(), 'pong', 'the held connection carries data while no agent runs');

    // the agent of this build starts and reconciles (endpoints, ipcache, policy), as after a restart
    d = node.driver();
    await d.call('start');
    for (const [n, id] of Object.entries(oldIds)) assert.notEqual(infoOf(pin(n)).id, id, `${n} replaced`);
    assert.equal(infoOf(pin('mb_endpoints')).flags & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC, 'mb_endpoints is of this build\'s definition');
    assert.equal(infoOf(pin('mb_ct_tables')).maxEntries, 65536 * 2);
    assert.deepEqual(readdirSync(node.pinRoot).filter((n) => n.endsWith(':old')), [], 'no pin set aside is left');
    // conntrack carried over: the tables are the older array's, by reference
    const ctAfter = (await d.call<{ srcIp: string; dstPort: number }[]>('conntrack')).filter((e) => e.srcIp === A.ip && e.dstPort === 8080).length;
    assert.ok(ctAfter >= ctBefore, `A's connections still in conntrack (${ctBefore} -> ${ctAfter})`);
    for (const p of node.topo.pods) await d.call('upsertEndpoint', { id: p.id, identity: node.idOf(p), ipv4: p.ip, ifname: p.hostIf, ifindex: p.ifindex, mac: p.mac });
    await d.call('upsertIPCache', [
      ...node.topo.pods.map((p) => ({ prefix: `${p.ip}/32`, identity: node.idOf(p), endpointId: p.id })),
      { prefix: '10.250.0.1/32', identity: 1 },
    ]);
    await d.call('applyFull', B.id, policyB, { ingress: true, egress: false });
    assert.equal((await d.call<unknown[]>('policyDump', B.id)).length, 1, 'B\'s policy written again into the new mb_policy');
    assert.equal(await roundTrip(), 'pong', 'the held connection carries data after the upgrade');
    assert.equal(tcpConnect(A.ns, B.ip, 8080), true, 'A -> B:8080 allowed after the upgrade');
    assert.equal(tcpConnect(A.ns, B.ip, 9090), false, 'A -> B:9090 denied after the upgrade');
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false, 'C -> B:8080 denied after the upgrade');
    // events come through the new ring
    await d.call('events', 0);
    assert.equal(tcpConnect(C.ns, B.ip, 8080), false);
    const evs = await node.events();
    assert.ok(evs.some((e) => e.srcIp === C.ip && e.dstPort === 8080 && e.type === 1), `C's drop reported through the new ring: ${JSON.stringify(evs.slice(-3))}`);
    hold.stdin!.end();
  });

  it('a load that fails puts the pins it set aside back', () => {
    const pinRoot = mkdtempSync('/sys/fs/bpf/mb-upgrade-');
    try {
      BpfObject.load(OBJ, pinRoot).close();
      pinOlder(`${pinRoot}/mb_endpoints`, () => BpfMap.create(MapType.HASH, 'mb_endpoints', 4, 40, 4096));
      const id = infoOf(`${pinRoot}/mb_endpoints`).id;
      assert.throws(() => loadMigrating(OBJ, pinRoot, () => { throw new Error('verifier says no'); }, (o: BpfObject, n) => o.map(n)), /verifier says no/);
      assert.equal(infoOf(`${pinRoot}/mb_endpoints`).id, id, 'the older map is pinned again');
      assert.equal(existsSync(`${pinRoot}/mb_endpoints:old`), false);
      // and the next load replaces it
      const { obj, migrated } = loadMigrating(OBJ, pinRoot, () => BpfObject.load(OBJ, pinRoot), (o, n) => o.map(n));
      obj.close();
      assert.deepEqual(migrated.map((m) => [m.name, m.kept]), [['mb_endpoints', 'copied']]);
      assert.notEqual(infoOf(`${pinRoot}/mb_endpoints`).id, id);
    } finally {
      rmSync(pinRoot, { recursive: true, force: true });
    }
  });
});
