/**
 * The agent's side of the proxy feed with a real policy engine and a real proxy-side client over
 * a unix socket: a snapshot's DNS names follow the ipcache's winning FQDN entries as they change
 * (kept as they change, not found by a walk of the whole ipcache per snapshot).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgentProxyFeed } from '../../../src/agent/proxy-feed.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { createFeedClient } from '../../../src/proxy/feed/client.ts';
import { applyDelta, applyIpcacheDelta, viewOf, type PolicyView, type ProxyDelta, type ProxySnapshot } from '../../../src/proxy/feed/snapshot.ts';
import { createNameManager } from '../../../src/fqdn/name-manager.ts';
import { egressAllowsIdentity } from '../../../src/proxy/dns/standalone.ts';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import type { Agent } from '../../../src/agent/agent.ts';
import fc from 'fast-check';
import { cnp, ns, pod } from '../policy/helpers.ts';

test('proxy feed: a snapshot names the IPs whose winning ipcache entry is an FQDN one, before and after the feed started, and no other', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agent-feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const policy = createAgentPolicyEngine();
  const ipc = policy.engine.ipcache;
  const names = new Map([['198.51.100.1', ['a.example']], ['198.51.100.2', ['b.example']], ['198.51.100.3', ['c.example']], ['10.244.1.9', ['pod.example']]]);
  ipc.upsert('198.51.100.1/32', 16777217, 'fqdn'); // before the feed starts
  const feed = createAgentProxyFeed({
    socketPath: join(dir, 'l7proxy.sock'), agent: () => undefined, policy, nodeAddrs: [],
    resolved: () => { throw new Error('no endpoints here'); },
    namesForIp: (ip) => names.get(ip) ?? [], emitRecord: () => {},
    logger: { info: () => {}, warn: () => {} },
  });
  await feed.start();
  t.after(() => feed.stop());
  let snap: ProxySnapshot | undefined;
  const client = createFeedClient({ socketPath: join(dir, 'l7proxy.sock'), retryMs: 10, onSnapshot: (s) => { snap = s; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  for (let i = 0; !snap; i++) { assert.ok(i < 500, 'no first snapshot'); await new Promise((r) => setTimeout(r, 10)); }
  const named = async () => { await feed.settled(); return Object.fromEntries(snap!.names); };
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'] });
  ipc.upsert('198.51.100.2/32', 16777218, 'fqdn');
  ipc.upsert('198.51.100.3/32', 16777219, 'fqdn');
  ipc.upsert('10.244.1.8/32', 300, 'endpoint');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'], '198.51.100.2': ['b.example'], '198.51.100.3': ['c.example'] });
  // an endpoint claim wins over the FQDN one: the address is the pod's, its DNS names are not sent
  ipc.upsert('198.51.100.2/32', 301, 'endpoint');
  ipc.delete('198.51.100.3/32', 'fqdn');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'] });
  // the endpoint goes: the FQDN claim under it wins again
  ipc.delete('198.51.100.2/32', 'endpoint');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'], '198.51.100.2': ['b.example'] });
  // an FQDN claim under an endpoint's is not the winner: no names
  ipc.upsert('10.244.1.9/32', 302, 'endpoint');
  ipc.upsert('10.244.1.9/32', 16777220, 'fqdn');
  assert.deepEqual(Object.keys(await named()).sort(), ['198.51.100.1', '198.51.100.2']);
});

test('proxy feed: policy, endpoint and identity changes reach the proxy when they happen, without a poll (the backstop an hour away)', async (t) => {
  const { dir, policy, namespace, web, identity } = await webWorld(t);
  const recs = [{ id: 7, identity, namespace: 'prod', pod: 'web', labels: policy.identityLabels(identity)!, ip: '10.244.1.7' }];
  let version = 1;
  const listeners = new Set<() => void>();
  const table = {
    all: () => recs, version: () => version, byId: (id: number) => recs.find((r) => r.id === id), byIp: () => undefined,
    onChange: (cb: () => void) => { listeners.add(cb); return () => { listeners.delete(cb); }; },
  };
  const agent = { endpointTable: () => table, resources: { list: async () => [], watch: () => () => {} } } as unknown as Agent;
  const feed = createAgentProxyFeed({
    socketPath: join(dir, 'l7proxy.sock'), agent: () => agent, policy, nodeAddrs: [], backstopMs: 3_600_000,
    resolved: (ep) => ({ id: ep.id, identity: ep.identity, namespace: ep.namespace, pod: ep.pod, labels: ep.labels }),
    namesForIp: () => [], emitRecord: () => {}, logger: { info: () => {}, warn: () => {} },
  });
  await feed.start();
  t.after(() => feed.stop());
  let snap: ProxySnapshot | undefined;
  const client = createFeedClient({ socketPath: join(dir, 'l7proxy.sock'), retryMs: 10, onSnapshot: (s) => { snap = s; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  const until = async (f: () => boolean, what: string) => { for (let i = 0; !f(); i++) { assert.ok(i < 300, what); await new Promise((r) => setTimeout(r, 10)); } };
  await until(() => snap !== undefined, 'no first snapshot');
  // idle: nothing compares the sources' counters (a poll read them every 50 ms)
  let reads = 0;
  const revision = policy.revision;
  policy.revision = () => { reads++; return revision(); };
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(reads, 0, 'the idle feed read the policy revision');
  // a policy import (the repository's revision)
  const rev = snap!.revision;
  policy.setPolicies([cnp('a', 'prod', { endpointSelector: { matchLabels: { app: 'web' } }, egress: [{ toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }] })]);
  await until(() => snap!.revision > rev, 'a policy import did not reach the proxy');
  // an endpoint and its MapState (the engine's mapStateVersion)
  policy.addEndpoint({ id: 7, identity, pod: web, namespace });
  policy.regenerate();
  await until(() => snap!.mapStates.some(([id]) => id === 7), 'an endpoint\'s MapState did not reach the proxy');
  // the endpoint table (a new pod)
  recs.push({ id: 8, identity, namespace: 'prod', pod: 'web2', labels: recs[0]!.labels, ip: '10.244.1.8' });
  version++;
  for (const l of listeners) l();
  await until(() => snap!.endpoints.some((e) => e.ip === '10.244.1.8'), 'an endpoint table change did not reach the proxy');
});

/** A state directory (removed after the test), a policy engine, and pod prod/web with its identity. */
async function webWorld(t: { after(fn: () => unknown): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'agent-feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const policy = createAgentPolicyEngine();
  const namespace = ns('prod');
  const web = pod('prod', 'web', { app: 'web' });
  const { id: identity } = await policy.allocateIdentity({ pod: web, namespace });
  return { dir, policy, namespace, web, identity };
}

/**
 * The agent with one endpoint whose egress policy has toFQDNs rules (one L3/L4, one with HTTP
 * rules: an L7 policy whose identity sets the selector cache changes in place), a name manager
 * writing the engine as src/proxy/dns/node.ts does, and a proxy-side view kept by snapshots and
 * deltas as src/proxy/process/process.ts keeps it.
 */
async function fqdnWorld(t: { after(fn: () => unknown): void }, deltas = true, o: { skipDelta?: number } = {}) {
  const { dir, policy, namespace, web, identity } = await webWorld(t);
  policy.setPolicies([cnp('f', 'prod', {
    endpointSelector: { matchLabels: { app: 'web' } },
    egress: [
      { toFQDNs: [{ matchPattern: '*.example.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] },
      { toFQDNs: [{ matchName: 'api.example.com' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET' }] } }] },
    ],
  })]);
  policy.addEndpoint({ id: 7, identity, pod: web, namespace });
  policy.regenerate();
  const rec = { id: 7, identity, namespace: 'prod', pod: 'web', labels: policy.identityLabels(identity)!, ip: '10.244.1.7' };
  const table = { all: () => [rec], version: () => 1, byId: (id: number) => (id === 7 ? rec : undefined), byIp: () => undefined };
  const agent = { endpointTable: () => table, resources: { list: async () => [], watch: () => () => {} } } as unknown as Agent;
  const nm = createNameManager({
    allocator: policy.engine.allocator,
    onUpdate: async (u) => {
      policy.regenerate();
      for (const x of u.ipcacheUpserts) policy.engine.ipcache.upsert(x.prefix, x.identity, 'fqdn');
      for (const x of u.ipcacheDeletes) policy.engine.ipcache.delete(x.prefix, 'fqdn');
    },
  });
  await nm.setSelectors(policy.engine.repository.fqdnSelectors());
  const feed = createAgentProxyFeed({
    socketPath: join(dir, 'l7proxy.sock'), agent: () => agent, policy, nodeAddrs: [],
    resolved: (ep) => ({ id: ep.id, identity: ep.identity, namespace: ep.namespace, pod: ep.pod, labels: ep.labels }),
    namesForIp: (ip) => nm.namesForIP(ip), emitRecord: () => {},
    logger: { info: () => {}, warn: () => {} },
  });
  await feed.start();
  t.after(() => feed.stop());
  const got = { snapshots: 0, deltas: 0, view: undefined as PolicyView | undefined };
  const client = createFeedClient({
    socketPath: join(dir, 'l7proxy.sock'), retryMs: 10, handle: async () => ({}), statusRows: () => [],
    onSnapshot: (s) => { got.snapshots++; got.view = viewOf(s, got.view?.ipcache); },
    onIpcache: (d) => { if (got.view) applyIpcacheDelta(got.view.ipcache, d); },
    ...(deltas ? {
      onDelta: (d: ProxyDelta) => {
        got.deltas++;
        // `skipDelta`: a proxy that lost this delta (a bug, a message gone): the next one must not apply to its state
        if (got.deltas === o.skipDelta) return;
        if (got.view) got.view = applyDelta(got.view, d);
      },
    } : {}),
  });
  client.start();
  t.after(() => client.stop());
  for (let i = 0; !got.view; i++) { assert.ok(i < 500, 'no first snapshot'); await new Promise((r) => setTimeout(r, 10)); }
  await feed.settled();
  /** a second proxy, connected now: the whole snapshot of what is current */
  async function fresh(): Promise<PolicyView> {
    let v: PolicyView | undefined;
    const c = createFeedClient({ socketPath: join(dir, 'l7proxy.sock'), retryMs: 10, handle: async () => ({}), statusRows: () => [], onSnapshot: (s) => { v = viewOf(s, v?.ipcache); }, onIpcache: (d) => { if (v) applyIpcacheDelta(v.ipcache, d); } });
    c.start();
    try {
      for (let i = 0; !v; i++) { assert.ok(i < 500, 'no snapshot'); await new Promise((r) => setTimeout(r, 10)); }
      await feed.settled();
      return v;
    } finally { c.stop(); }
  }
  const learn = async (name: string, ip: string) => { await nm.onDNSResponse(7, name, [ip], 300); await feed.settled(); };
  /** the agent's write after a batch's releases (node.ts applyUpdate's flush) */
  const flush = async () => { policy.regenerate(); await feed.settled(); };
  return { policy, nm, feed, got, fresh, learn, flush };
}

/** Every entry of a view's MapState as JSON (sets as sorted arrays), sorted: two views judge alike when these are equal. */
function entriesOf(v: PolicyView, ep: number): string[] {
  const ms = v.mapState(ep);
  if (!ms) return [];
  return [...ms.entries].map(([ks, { key, entry }]) => JSON.stringify([ks, key, entry, entry.l7?.perSelector.map((s) => (s.identities === 'all' ? 'all' : [...s.identities].sort()))])).sort();
}

test('proxy feed: a new FQDN IP reaches the proxy as a delta (its identity, the entries of the selectors that select it, its name and ipcache entry), and the view after deltas judges as a whole snapshot does', async (t) => {
  const w = await fqdnWorld(t);
  assert.equal(w.got.snapshots, 1);
  await w.learn('api.example.com', '203.0.113.10');
  await w.learn('www.example.com', '203.0.113.11');
  await w.learn('api.example.com', '203.0.113.12');
  const v = w.got.view!;
  assert.equal(w.got.snapshots, 1, 'no whole snapshot after the first');
  assert.ok(w.got.deltas >= 3, `${w.got.deltas} deltas`);
  const whole = await w.fresh();
  assert.deepEqual(entriesOf(v, 7), entriesOf(whole, 7));
  const api = w.nm.identityForIP('203.0.113.10')!, www = w.nm.identityForIP('203.0.113.11')!;
  for (const ip of ['203.0.113.10', '203.0.113.11', '203.0.113.12']) {
    assert.equal(v.identityOfOther(ip), whole.identityOfOther(ip));
    assert.equal(v.identityOfOther(ip), w.nm.identityForIP(ip), 'the identity the agent gave');
    assert.deepEqual(v.identityLabels(v.identityOfOther(ip)), whole.identityLabels(v.identityOfOther(ip)));
    assert.deepEqual(v.namesForIp(ip), whole.namesForIp(ip));
  }
  assert.deepEqual(v.namesForIp('203.0.113.10'), ['api.example.com.']);
  const ms = v.mapState(7)!;
  assert.equal(egressAllowsIdentity(ms, api), true);
  // the HTTP rule's L7 policy selects the api names' identities only (its set grew in place on the agent)
  const http = lookupMapState(ms, 'egress', api, 6, 80);
  assert.equal(http.verdict, 'redirect');
  assert.equal(lookupMapState(ms, 'egress', www, 6, 80).verdict, 'drop');
  assert.equal(lookupMapState(ms, 'egress', www, 6, 443).verdict, 'forward');
});

test('attacker: after deltas, an IP no allowed name resolved to (or one learnt for a name no rule selects) has no identity the policy allows, in the proxy as in the agent', async (t) => {
  const w = await fqdnWorld(t);
  await w.learn('api.example.com', '203.0.113.10');
  await w.learn('evil.other.net', '198.51.100.66');
  const v = w.got.view!;
  assert.equal(w.got.snapshots, 1);
  const ms = v.mapState(7)!;
  for (const ip of ['198.51.100.66', '198.51.100.67']) {
    const id = v.identityOfOther(ip);
    assert.equal(id, w.policy.engine.ipcache.lookupIdentity(ip), 'the identity the agent gives');
    assert.equal(egressAllowsIdentity(ms, id), false, `${ip} (identity ${id}) allowed`);
    assert.equal(lookupMapState(ms, 'egress', id, 6, 443).verdict, 'drop');
  }
  // the name expires on the agent: the delta takes its IP's entries and names away in the proxy too
  await w.nm.forceExpire((n) => n === 'api.example.com.');
  // the agent writes the released identities' removals after the batch (node.ts applyUpdate's
  // flush): the proxy hears of a MapState change with the regeneration that takes it, as the datapath
  await w.flush();
  const after = w.got.view!;
  assert.equal(after.identityOfOther('203.0.113.10'), w.policy.engine.ipcache.lookupIdentity('203.0.113.10'));
  assert.deepEqual(after.namesForIp('203.0.113.10'), []);
  assert.equal(w.got.snapshots, 1);
  assert.deepEqual(entriesOf(after, 7), entriesOf(await w.fresh(), 7));
});

test('proxy feed: a proxy that does not apply deltas gets a whole snapshot per FQDN change, as before', async (t) => {
  const w = await fqdnWorld(t, false);
  await w.learn('api.example.com', '203.0.113.10');
  assert.ok(w.got.snapshots >= 2, `${w.got.snapshots} snapshots`);
  assert.equal(w.got.deltas, 0);
  assert.deepEqual(entriesOf(w.got.view!, 7), entriesOf(await w.fresh(), 7));
});

test('property: after any sequence of names learnt and expired (L3/L4 and HTTP toFQDNs rules), the proxy\'s view kept by deltas equals a whole snapshot of the agent\'s state, L7 identity sets included, with no whole snapshot sent', async (t) => {
  const NAMES = ['api.example.com', 'www.example.com', 'evil.other.net'];
  await fc.assert(fc.asyncProperty(fc.array(fc.record({ expire: fc.boolean(), name: fc.integer({ min: 0, max: 2 }), ip: fc.integer({ min: 1, max: 6 }) }), { minLength: 1, maxLength: 10 }), async (ops) => {
    const cleanups: (() => unknown)[] = [];
    try {
      const w = await fqdnWorld({ after: (fn) => { cleanups.push(fn); } });
      for (const op of ops) {
        const name = NAMES[op.name]!;
        if (op.expire) await w.nm.forceExpire((n) => n === `${name}.`);
        else await w.learn(name, `203.0.113.${op.ip}`);
        await w.flush();
      }
      assert.equal(w.got.snapshots, 1, 'deltas only');
      const whole = await w.fresh();
      const v = w.got.view!;
      assert.deepEqual(entriesOf(v, 7), entriesOf(whole, 7));
      for (let i = 1; i <= 6; i++) {
        const ip = `203.0.113.${i}`;
        assert.equal(v.identityOfOther(ip), whole.identityOfOther(ip));
        assert.equal(v.identityOfOther(ip), w.policy.engine.ipcache.lookupIdentity(ip));
        assert.deepEqual(v.namesForIp(ip), whole.namesForIp(ip));
        const id = v.identityOfOther(ip);
        assert.equal(egressAllowsIdentity(v.mapState(7)!, id), egressAllowsIdentity(whole.mapState(7)!, id), ip);
        assert.deepEqual(lookupMapState(v.mapState(7)!, 'egress', id, 6, 80), lookupMapState(whole.mapState(7)!, 'egress', id, 6, 80));
      }
    } finally {
      for (const c of cleanups.reverse()) await c();
    }
  }), { numRuns: 12 });
});

test('attacker: a proxy that lost a delta never applies the next one to its state: it asks for a whole snapshot and then holds what the agent holds', async (t) => {
  const w = await fqdnWorld(t, true, { skipDelta: 1 });
  await w.learn('api.example.com', '203.0.113.10'); // lost by the proxy
  const v0 = w.got.view!;
  assert.equal(egressAllowsIdentity(v0.mapState(7)!, w.nm.identityForIP('203.0.113.10')!), false, 'the lost delta\'s entries are not there');
  await w.learn('www.example.com', '203.0.113.11');
  for (let i = 0; w.got.snapshots < 2; i++) { assert.ok(i < 300, 'no whole snapshot after the divergence'); await new Promise((r) => setTimeout(r, 10)); }
  await w.feed.settled();
  assert.equal(w.got.snapshots, 2, 'one whole snapshot');
  const v = w.got.view!;
  assert.deepEqual(entriesOf(v, 7), entriesOf(await w.fresh(), 7));
  for (const ip of ['203.0.113.10', '203.0.113.11']) {
    const id = w.nm.identityForIP(ip)!;
    assert.equal(v.identityOfOther(ip), id);
    assert.equal(egressAllowsIdentity(v.mapState(7)!, id), true);
  }
  // deltas apply again after the whole snapshot (the second proxy's connection above sent one more)
  for (let i = 0; w.feed.clients().length > 1; i++) { assert.ok(i < 300, 'the second proxy did not go'); await new Promise((r) => setTimeout(r, 10)); }
  const snaps = w.got.snapshots;
  await w.learn('api.example.com', '203.0.113.12');
  assert.equal(w.got.snapshots, snaps, 'a delta, no whole snapshot');
  assert.equal(egressAllowsIdentity(w.got.view!.mapState(7)!, w.nm.identityForIP('203.0.113.12')!), true);
  assert.deepEqual(entriesOf(w.got.view!, 7), entriesOf(await w.fresh(), 7));
});
