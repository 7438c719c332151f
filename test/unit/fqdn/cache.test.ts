/**
 * DNS cache (spec policy.md §6.2–6.3): TTLs, tofqdns-min-ttl, max IPs per name, idle-connection
 * grace, GC never removing an in-use IP; the node-level union; and the name manager end to end
 * with the real policy engine (toFQDNs selects exactly the learned IPs, per selector).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { EndpointDNSCache, NodeDNSCache } from '../../../src/fqdn/cache.ts';
import { createNameManager, type FQDNUpdate } from '../../../src/fqdn/name-manager.ts';
import { PolicyEngine } from '../../../src/policy/engine.ts';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import { podIdentityLabels } from '../../../src/identity/labels.ts';
import type { CiliumNetworkPolicy } from '../../../src/api/types.ts';

const N = 'api.example.com.';

test('an IP is valid for max(TTL, min-ttl) and expires at the first GC after that', () => {
  let now = 0;
  const c = new EndpointDNSCache(1, { now: () => now, minTTL: 0 });
  assert.deepEqual(c.update(N, ['1.1.1.1'], 10).added, [{ name: N, ip: '1.1.1.1' }]);
  now = 9_999;
  assert.deepEqual(c.gc().removed, []);
  now = 10_000;
  assert.deepEqual(c.gc().removed, [{ name: N, ip: '1.1.1.1' }]);
  const m = new EndpointDNSCache(1, { now: () => now, minTTL: 60 });
  m.update(N, ['1.1.1.1'], 1);
  now += 59_000;
  assert.deepEqual(m.gc().removed, [], 'min-ttl raises a short TTL');
  now += 1_000;
  assert.equal(m.gc().removed.length, 1);
});

test('a later answer only extends validity', () => {
  let now = 0;
  const c = new EndpointDNSCache(1, { now: () => now });
  c.update(N, ['1.1.1.1'], 100);
  c.update(N, ['1.1.1.1'], 1);
  now = 50_000;
  assert.deepEqual(c.gc().removed, []);
});

test('max IPs per name: the oldest go, unless a connection uses them (zombie)', () => {
  let now = 0;
  const inUse = new Set<string>();
  const c = new EndpointDNSCache(1, { now: () => now, maxIPsPerName: 2, isInUse: (ip) => inUse.has(ip) });
  c.update(N, ['1.0.0.1'], 100);
  now = 1;
  c.update(N, ['1.0.0.2'], 100);
  now = 2;
  let ch = c.update(N, ['1.0.0.3'], 100);
  assert.deepEqual(ch.removed, [{ name: N, ip: '1.0.0.1' }]);
  inUse.add('1.0.0.2');
  now = 3;
  ch = c.update(N, ['1.0.0.4'], 100);
  assert.deepEqual(ch.removed, [], '1.0.0.2 is in use: kept as a zombie');
  assert.ok(c.namesForIP('1.0.0.2').includes(N));
  assert.deepEqual(c.lookup(N).sort(), ['1.0.0.3', '1.0.0.4']);
});

test('GC never removes an IP in use; it goes once the connection is gone (plus the idle grace)', () => {
  let now = 0;
  const inUse = new Set(['2.2.2.2']);
  const c = new EndpointDNSCache(7, { now: () => now, idleGracePeriodMs: 5_000, isInUse: (ip, ep) => ep === 7 && inUse.has(ip) });
  c.update(N, ['2.2.2.2', '3.3.3.3'], 1);
  now = 1_000;
  let ch = c.gc();
  assert.deepEqual(ch.removed, [], 'in use, and 3.3.3.3 within the grace period');
  now = 6_001;
  ch = c.gc();
  assert.deepEqual(ch.removed, [{ name: N, ip: '3.3.3.3' }]);
  now = 60_000;
  assert.deepEqual(c.gc().removed, [], 'still in use after a minute');
  inUse.clear();
  now = 61_000;
  assert.deepEqual(c.gc().removed, [], 'idle, within grace');
  now = 66_001;
  assert.deepEqual(c.gc().removed, [{ name: N, ip: '2.2.2.2' }]);
});

test('node cache: a pair is valid while any endpoint holds it', () => {
  let now = 0;
  const n = new NodeDNSCache({ now: () => now });
  assert.equal(n.update(1, N, ['9.9.9.9'], 10).added.length, 1);
  assert.equal(n.update(2, N, ['9.9.9.9'], 100).added.length, 0);
  now = 20_000;
  assert.deepEqual(n.gc().removed, []);
  assert.deepEqual(n.ipsForName(N), ['9.9.9.9']);
  assert.deepEqual(n.removeEndpoint(2).removed, [{ name: N, ip: '9.9.9.9' }]);
});

test('property: with no connections, after GC at time t the valid IPs are exactly those answered with expiry > t', () => {
  fc.assert(fc.property(
    fc.array(fc.record({ t: fc.integer({ min: 0, max: 100 }), ip: fc.integer({ min: 1, max: 6 }), ttl: fc.integer({ min: 0, max: 50 }) }), { maxLength: 30 }),
    fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 20 }),
    (answers, t, minTTL) => {
      let now = 0;
      const c = new EndpointDNSCache(1, { now: () => now, minTTL, maxIPsPerName: 1000 });
      const sorted = [...answers].sort((a, b) => a.t - b.t);
      const expiry = new Map<string, number>();
      for (const a of sorted) {
        now = a.t * 1000;
        const ip = `10.0.0.${a.ip}`;
        c.update(N, [ip], a.ttl);
        expiry.set(ip, Math.max(expiry.get(ip) ?? 0, now + Math.max(a.ttl, minTTL) * 1000));
      }
      now = Math.max(now, t * 1000);
      c.gc();
      const want = [...expiry].filter(([, e]) => e > now).map(([ip]) => ip).sort();
      assert.deepEqual([...c.pairs()].map((p) => p.ip).sort(), want);
    }), { numRuns: 300 });
});

// ---- name manager + policy engine -----------------------------------------------------------

function setup() {
  const engine = new PolicyEngine();
  const client = engine.allocatePodIdentity({ metadata: { name: 'c', namespace: 'default', labels: { app: 'c' } }, spec: { containers: [] } } as never, undefined).identity;
  const policy: CiliumNetworkPolicy = {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'fq', namespace: 'default' }, source: { file: 't', line: 1, col: 1 },
    spec: { endpointSelector: { matchLabels: { app: 'c' } }, egress: [{ toFQDNs: [{ matchPattern: '*.example.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }] },
  } as never;
  engine.applyPolicies([policy]);
  const ep = engine.addEndpoint({ id: 10, identity: client.id, labels: client.labels });
  const updates: FQDNUpdate[] = [];
  const nm = createNameManager({
    allocator: engine.allocator,
    onUpdate: async (u) => { updates.push(u); engine.regenerate(); },
    skipIP: (ip) => ip.startsWith('10.244.'),
  });
  void nm.setSelectors(engine.repository.fqdnSelectors());
  const allowed = (ip: string) => {
    const id = nm.identityForIP(ip) ?? 2;
    return lookupMapState(ep.mapState, 'egress', id, 6, 443).verdict;
  };
  return { engine, nm, updates, allowed, podLabels: podIdentityLabels };
}

test('name manager: learned IPs of matching names get an fqdn identity the policy allows; others stay world', async () => {
  const { nm, allowed, updates } = setup();
  const wait = nm.onDNSResponse(10, 'www.example.com', ['203.0.113.21'], 30);
  assert.ok(wait, 'a new IP: the proxy must wait');
  await wait;
  assert.equal(updates.length, 1);
  assert.equal(updates[0]!.ipcacheUpserts[0]!.prefix, '203.0.113.21/32');
  assert.deepEqual(updates[0]!.ipcacheUpserts[0]!.labels.toStrings().filter((l) => l.startsWith('fqdn:')), ['fqdn:*.example.com']);
  assert.equal(allowed('203.0.113.21'), 'forward');
  assert.equal(nm.onDNSResponse(10, 'www.example.com', ['203.0.113.21'], 30), null, 'nothing new: release at once');
  await nm.onDNSResponse(10, 'a.b.example.com', ['203.0.113.23'], 30);
  assert.equal(nm.identityForIP('203.0.113.23'), undefined, 'a.b.example.com does not match *.example.com');
  assert.equal(allowed('203.0.113.23'), 'drop');
  await nm.onDNSResponse(10, 'www.example.com', ['10.244.1.9'], 30);
  assert.equal(nm.identityForIP('10.244.1.9'), undefined, 'in-cluster IPs are never selected');
});

test('name manager over IPv6: a AAAA answer gets a /128 FQDN identity; an IPv4-mapped AAAA answer never names the IPv4 host', async () => {
  const { nm, allowed, updates } = setup();
  await nm.onDNSResponse(10, 'www.example.com', ['2001:db8::cb00:7115'], 30);
  assert.equal(updates.at(-1)!.ipcacheUpserts[0]!.prefix, '2001:db8::cb00:7115/128');
  assert.equal(allowed('2001:db8::cb00:7115'), 'forward');
  assert.equal(allowed('2001:db8::cb00:7116'), 'drop', 'another IPv6 address stays world');
  // the attacker's answer: www.example.com AAAA ::ffff:198.51.100.10 (an IPv4 host it may not reach)
  for (const mapped of ['::ffff:198.51.100.10', '::ffff:c633:640a']) {
    const n = updates.length;
    await nm.onDNSResponse(10, 'www.example.com', [mapped], 30);
    assert.equal(nm.identityForIP(mapped), undefined, `${mapped}: no identity`);
    assert.equal(updates.length, n, `${mapped}: nothing written to the ipcache`);
  }
  assert.equal(nm.identityForIP('198.51.100.10'), undefined, 'the IPv4 host is not learned either');
  assert.equal(allowed('198.51.100.10'), 'drop');
});

test('name manager: GC after expiry removes the identity and the allow', async () => {
  let now = 0;
  const engine = new PolicyEngine();
  const nm = createNameManager({ allocator: engine.allocator, onUpdate: async () => {}, cache: { now: () => now } });
  await nm.setSelectors([{ matchName: 'api.openai.com' }]);
  await nm.onDNSResponse(1, 'api.openai.com.', ['198.51.100.20'], 5);
  const id = nm.identityForIP('198.51.100.20');
  assert.ok(id && id >= 1 << 24, 'a node-local identity');
  now = 6_000;
  await nm.gc();
  assert.equal(nm.identityForIP('198.51.100.20'), undefined);
  assert.equal(engine.allocator.lookupById(id!), undefined, 'identity released');
});
