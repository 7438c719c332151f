/**
 * The proxy's side of FQDN deltas: applyDelta changes the view's MapStates in place, O(what the
 * delta carries), and what the proxies read from them (lookups, the DNS hold's lane check) stays
 * what a whole snapshot of the same state gives; a delta for another change count than the proxy
 * holds, or a message out of order on the feed, is never applied: the proxy asks for a whole
 * snapshot (the agent's side of it: test/unit/agent/proxy-feed.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { createFeedClient } from '../../../../src/proxy/feed/client.ts';
import { applyDelta, encodeMapState, mapStateGeneration, viewOf, type ProxyDelta, type ProxySnapshot, type WireEntry } from '../../../../src/proxy/feed/snapshot.ts';
import { egressAllowsIdentity } from '../../../../src/proxy/dns/standalone.ts';
import { readLines, send, type ToAgent, type ToProxy } from '../../../../src/proxy/feed/wire.ts';
import { lookupMapState } from '../../../../src/policy/lookup.ts';
import { mapStateKeyString, type MapState, type MapStateEntry, type MapStateKey } from '../../../../src/policy/types.ts';

const entry = (verdict: 'allow' | 'deny'): WireEntry => ({ verdict, l7: null, authType: 0, matchType: 2, origins: [] });

function snapshot(ms: MapState, rev: number): ProxySnapshot {
  return {
    revision: 1, agentPid: 1, nodeAddrs: [], endpoints: [], identities: [], resources: { Secret: [], AIPolicy: [] }, names: [],
    mapStates: [[7, { ...encodeMapState(ms), rev }]],
  };
}

/** The lane check as it was before the lane index: a walk of every entry (the reference). */
function allowsByWalk(ms: MapState, identity: number): boolean {
  let allow = !ms.defaultDeny.egress;
  let denied = false;
  for (const { key, entry: e } of ms.entries.values()) {
    if (key.direction !== 'egress' || (key.identity !== identity && key.identity !== 0)) continue;
    if (e.verdict === 'deny') { if (key.proto === 0) denied = true; } else allow = true;
  }
  return allow && !denied;
}

const keyArb: fc.Arbitrary<MapStateKey> = fc.record({
  direction: fc.constantFrom('egress' as const, 'egress' as const, 'ingress' as const),
  identity: fc.constantFrom(0, 2, 300, 16777217, 16777218, 16777219),
  proto: fc.constantFrom(0, 6, 17),
  port: fc.constantFrom(0, 53, 443),
}).map((k) => (k.proto === 0 ? { ...k, port: 0, portPrefixLen: 0 } : { ...k, portPrefixLen: k.port === 0 ? 0 : 16 }));
const partArb = fc.record({
  upserts: fc.array(fc.tuple(keyArb, fc.constantFrom('allow' as const, 'deny' as const)), { maxLength: 5 }),
  deletes: fc.array(keyArb, { maxLength: 3 }),
  dd: fc.option(fc.boolean(), { nil: undefined }),
});

test('property: MapStates changed in place by deltas judge as a whole snapshot of the same state (lookups, the DNS hold\'s lane check from its index), and each change moves the MapState\'s generation', () => {
  fc.assert(fc.property(fc.array(fc.tuple(keyArb, fc.constantFrom('allow' as const, 'deny' as const)), { maxLength: 8 }), fc.boolean(), fc.array(partArb, { minLength: 1, maxLength: 8 }), (first, dd, parts) => {
    // the agent's MapState, changed as the deltas say
    const agent: MapState = { entries: new Map(), defaultDeny: { ingress: true, egress: dd } };
    const put = (k: MapStateKey, v: 'allow' | 'deny') => agent.entries.set(mapStateKeyString(k), { key: k, entry: entry(v) as MapStateEntry });
    for (const [k, v] of first) put(k, v);
    let view = viewOf(snapshot(agent, 1));
    const ms = view.mapState(7)!;
    // the index is made before the deltas (as the first answer of a round makes it)
    for (const id of [2, 300, 16777217]) assert.equal(egressAllowsIdentity(ms, id), allowsByWalk(ms, id));
    let rev = 1;
    for (const p of parts) {
      for (const k of p.deletes) agent.entries.delete(mapStateKeyString(k));
      for (const [k, v] of p.upserts) put(k, v);
      if (p.dd !== undefined) agent.defaultDeny.egress = p.dd;
      const gen = mapStateGeneration(ms);
      const d: ProxyDelta = {
        mapStates: [{ ep: 7, upserts: p.upserts.map(([k, v]) => [k, entry(v)]), deletes: p.deletes, ...(p.dd !== undefined ? { defaultDeny: { ...agent.defaultDeny } } : {}), base: rev, rev: rev + 1 }],
        identities: [], identitiesGone: [], names: [], namesGone: [],
      };
      rev++;
      view = applyDelta(view, d);
      assert.equal(view.mapState(7), ms, 'changed in place');
      assert.equal(mapStateGeneration(ms), gen + 1);
      const whole = viewOf(snapshot(agent, rev)).mapState(7)!;
      for (const id of [0, 2, 300, 16777217, 16777218, 16777219, 5]) {
        assert.equal(egressAllowsIdentity(ms, id), allowsByWalk(whole, id), `lane ${id}`);
        for (const [proto, port] of [[6, 443], [17, 53], [6, 80], [1, 8]] as const) assert.deepEqual(lookupMapState(ms, 'egress', id, proto, port), lookupMapState(whole, 'egress', id, proto, port));
      }
    }
  }), { numRuns: 300 });
});

test('attacker: a delta for another change count than the proxy holds (one lost, or replayed) is refused before anything changes', () => {
  const agent: MapState = { entries: new Map(), defaultDeny: { ingress: true, egress: true } };
  const v = viewOf(snapshot(agent, 4));
  const ms = v.mapState(7)!;
  const allow443: ProxyDelta['mapStates'][number] = { ep: 7, upserts: [[{ direction: 'egress', identity: 16777217, proto: 6, port: 443, portPrefixLen: 16 }, entry('allow')]], deletes: [], base: 5, rev: 6 };
  const d = (m: ProxyDelta['mapStates'][number]): ProxyDelta => ({ mapStates: [m], identities: [[16777217, ['fqdn:x']]], identitiesGone: [], names: [['203.0.113.1', ['x.']]], namesGone: [], ipcache: { upserts: [['203.0.113.1/32', 16777217, 'fqdn']], deletes: [] } });
  for (const base of [5, 3]) {
    assert.throws(() => applyDelta(v, d({ ...allow443, base })), (e: Error & { code?: string }) => e.code === 'FEED_DELTA_DIVERGED');
    assert.equal(ms.entries.size, 0, 'no entry applied');
    assert.equal(egressAllowsIdentity(ms, 16777217), false);
    assert.equal(v.identityLabels(16777217), undefined, 'no identity applied');
    assert.deepEqual(v.namesForIp('203.0.113.1'), []);
    assert.equal(v.identityOfOther('203.0.113.1'), 2, 'no ipcache entry applied');
    assert.equal(mapStateGeneration(ms), 0);
  }
  // the count held: applied (the control)
  const after = applyDelta(v, d({ ...allow443, base: 4 }));
  assert.equal(egressAllowsIdentity(after.mapState(7)!, 16777217), true);
  assert.equal(after.identityOfOther('203.0.113.1'), 16777217);
  // the same delta again (replayed): refused
  assert.throws(() => applyDelta(after, d({ ...allow443, base: 4 })), (e: Error & { code?: string }) => e.code === 'FEED_DELTA_DIVERGED');
});

test('attacker: feed messages out of order (one lost) are not applied nor acked; the proxy asks for a whole snapshot and applies nothing (nor releases a held answer) before it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-delta-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'l7proxy.sock');
  // a scripted agent: the component under test is the real proxy-side client
  const got: ToAgent[] = [];
  let peer: Socket | undefined;
  const server = createServer((s) => { peer = s; s.on('error', () => {}); readLines<ToAgent>(s, (m) => { got.push(m); }); });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => new Promise<void>((r) => { peer?.destroy(); server.close(() => r()); }));
  const applied: number[] = [];
  const snaps: number[] = [];
  const client = createFeedClient({
    socketPath: path, retryMs: 10, handle: async () => ({}), statusRows: () => [],
    onSnapshot: (_s, seq) => { snaps.push(seq); }, onIpcache: (_d, seq) => { applied.push(seq); }, onDelta: (_d, seq) => { applied.push(seq); },
  });
  client.start();
  t.after(() => client.stop());
  const until = async (f: () => boolean) => { for (let i = 0; !f(); i++) { assert.ok(i < 500, 'condition not met in time'); await new Promise((r) => setTimeout(r, 10)); } };
  await until(() => got.some((m) => m.t === 'hello'));
  const empty = { mapStates: [], identities: [], identitiesGone: [], names: [], namesGone: [] };
  const to = (m: ToProxy) => send(peer!, m);
  to({ t: 'snapshot', seq: 10, snap: snapshot({ entries: new Map(), defaultDeny: { ingress: false, egress: false } }, 1) });
  to({ t: 'delta', seq: 11, ...empty });
  to({ t: 'ipcache', seq: 12, upserts: [], deletes: [] });
  // 13 is lost
  to({ t: 'delta', seq: 14, ...empty });
  to({ t: 'delta', seq: 15, ...empty });
  to({ t: 'ipcache', seq: 16, upserts: [], deletes: [] });
  await until(() => got.some((m) => m.t === 'resync'));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(applied, [11, 12], 'nothing after the gap applied');
  const acks = got.flatMap((m) => (m.t === 'ack' ? [m.seq] : []));
  assert.deepEqual(acks, [10, 11, 12], 'nothing after the gap acked');
  // a held answer the agent says is done while the proxy is stale: released only with the whole snapshot
  let released = false;
  void client.reportAnswer({ ep: 7, name: 'f1.fresh.lab.', ips: ['172.20.0.1'], ttl: 60 }, true)!.then(() => { released = true; });
  await until(() => got.some((m) => m.t === 'dns-answers'));
  const report = got.find((m) => m.t === 'dns-answers') as Extract<ToAgent, { t: 'dns-answers' }>;
  to({ t: 'dns-done', ids: report.items.map((r) => r.id) });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(released, false, 'released before the proxy holds the state the agent sent');
  // the whole snapshot the agent answers with: the answer goes, deltas apply again after it
  to({ t: 'snapshot', seq: 20, snap: snapshot({ entries: new Map(), defaultDeny: { ingress: false, egress: false } }, 1) });
  await until(() => released);
  to({ t: 'delta', seq: 21, ...empty });
  await until(() => applied.includes(21));
  assert.deepEqual(snaps, [10, 20]);
  // a delta the view refuses (it diverged): not acked, a resync asked for
  const asked = got.filter((m) => m.t === 'resync').length;
  const refusing = createFeedClient({
    socketPath: path, retryMs: 10, handle: async () => ({}), statusRows: () => [],
    onSnapshot: () => {}, onIpcache: () => {}, onDelta: () => { throw Object.assign(new Error('diverged'), { code: 'FEED_DELTA_DIVERGED' }); },
  });
  client.stop();
  refusing.start();
  t.after(() => refusing.stop());
  await until(() => got.filter((m) => m.t === 'hello').length >= 2);
  const before = got.length;
  to({ t: 'snapshot', seq: 30, snap: snapshot({ entries: new Map(), defaultDeny: { ingress: false, egress: false } }, 1) });
  to({ t: 'delta', seq: 31, ...empty });
  await until(() => got.filter((m) => m.t === 'resync').length > asked);
  assert.ok(!got.slice(before).some((m) => m.t === 'ack' && m.seq === 31), 'the refused delta is not acked');
});
