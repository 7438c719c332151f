/**
 * The proxy's cached DNS decision (decide.ts) gives decideDNS's verdict for every policy, peer
 * and name, also after the selector cache changes an entry's identities in place (the identity
 * part is never cached) and when a new policy object replaces the old one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decideDNS } from '../../../../src/policy/l7.ts';
import { mapStateKeyString, type L7Policy, type MapState, type MapStateEntry, type MapStateKey } from '../../../../src/policy/types.ts';
import { createDNSDecider, createDNSQueryJudge } from '../../../../src/proxy/dns/decide.ts';

type Entry = L7Policy['perSelector'][number];
const policy = (perSelector: Entry[]): L7Policy => Object.freeze({ parser: 'dns' as const, perSelector });
const entry = (identities: Set<number> | 'all', dns: Entry['dns']): Entry => ({ selector: 's', identities, dns, origins: [] });

test('table: allowed names, denied names, other peers, wildcard entries', () => {
  const decide = createDNSDecider();
  const p = policy([
    entry(new Set([300]), [{ matchPattern: '*.bench.lab' }]),
    entry(new Set([301]), [{ matchName: 'api.example.com' }]),
    entry('all', [{ matchPattern: 'open.lab' }]),
  ]);
  const rows: [number, string, boolean][] = [
    [300, 'q1.bench.lab.', true], // positive control
    [300, 'Q1.BENCH.LAB.', true],
    [300, 'bench.lab.', false], // `*` needs a label
    [300, 'api.example.com.', false], // another peer's rule
    [301, 'api.example.com.', true],
    [301, 'q1.bench.lab.', false],
    [999, 'open.lab.', true],
    [999, 'q1.bench.lab.', false],
  ];
  for (const [id, name, want] of rows) {
    assert.equal(decide(p, id, name), want, `${id} ${name}`);
    assert.equal(decide(p, id, name), decideDNS(p, id, name).allowed, `${id} ${name} (cached)`);
  }
  // an L4-only rule (dns null) for a peer allows every name
  assert.equal(decide(policy([entry(new Set([5]), null)]), 5, 'anything.at.all.'), true);
  assert.equal(decide(policy([entry(new Set([5]), null)]), 6, 'anything.at.all.'), false);
});

test('identity sets change in place: the next query sees it (allowed → denied → allowed)', () => {
  const decide = createDNSDecider();
  const ids = new Set([300]);
  const p = policy([entry(ids, [{ matchPattern: '*.bench.lab' }])]);
  assert.equal(decide(p, 300, 'a.bench.lab.'), true);
  ids.delete(300);
  assert.equal(decide(p, 300, 'a.bench.lab.'), false);
  ids.add(300);
  assert.equal(decide(p, 300, 'a.bench.lab.'), true);
  // a replaced policy (a rule changed) is judged on its own rules, not the old cache
  const p2 = policy([entry(ids, [{ matchPattern: '*.other.lab' }])]);
  assert.equal(decide(p2, 300, 'a.bench.lab.'), false);
  assert.equal(decide(p2, 300, 'a.other.lab.'), true);
});

test('property: same verdict as decideDNS for generated policies, peers and names, asked twice', () => {
  const label = fc.constantFrom('a', 'b', 'api', 'x-1', 'lab', 'com');
  const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => `${l.join('.')}.`);
  const rule = fc.oneof(
    fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => ({ matchName: l.join('.') })),
    fc.tuple(fc.constantFrom('*', '**', 'a*', '*.lab'), fc.array(label, { maxLength: 2 })).map(([h, l]) => ({ matchPattern: [h, ...l].join('.') })),
  );
  const ent = fc.record({
    identities: fc.oneof(fc.constant('all' as const), fc.uniqueArray(fc.integer({ min: 1, max: 5 }), { maxLength: 3 }).map((x) => new Set(x))),
    dns: fc.oneof(fc.constant(null), fc.array(rule, { maxLength: 3 })),
  }).map((e) => entry(e.identities, e.dns));
  fc.assert(fc.property(fc.array(ent, { maxLength: 4 }), fc.array(fc.tuple(fc.integer({ min: 1, max: 6 }), name), { minLength: 1, maxLength: 10 }), (es, qs) => {
    const decide = createDNSDecider();
    const p = policy(es);
    for (const [id, n] of qs) for (let k = 0; k < 2; k++) assert.equal(decide(p, id, n), decideDNS(p, id, n).allowed, `${id} ${n}`);
  }), { numRuns: 400 });
});

test('numbered MapStates (the proxy process): the judge keeps each MapState\'s verdict per peer, proto and port for one generation, and answers as the unkept judge for every key; a new MapState or a new generation is judged anew', () => {
  const gens = new WeakMap<MapState, number>();
  const kept = createDNSQueryJudge({ generation: (m) => gens.get(m) ?? 0 });
  const live = createDNSQueryJudge();
  const dns = policy([entry(new Set([300]), [{ matchPattern: '*.bench.lab' }])]);
  const ms = (l7ForDns: L7Policy | null, extra: [MapStateKey, Partial<MapStateEntry>][] = []): MapState => {
    const entries: MapState['entries'] = new Map();
    const put = (key: MapStateKey, e: Partial<MapStateEntry>) => entries.set(mapStateKeyString(key), { key, entry: { verdict: 'allow', matchType: 0, authType: 0, l7: null, ...e } as MapStateEntry });
    put({ direction: 'egress', identity: 300, proto: 17, port: 53, portPrefixLen: 16 }, { l7: l7ForDns });
    for (const [k, e] of extra) put(k, e);
    return { entries, defaultDeny: { ingress: true, egress: true } };
  };
  const a = ms(dns, [[{ direction: 'egress', identity: 0, proto: 6, port: 0, portPrefixLen: 0 }, {}], [{ direction: 'egress', identity: 301, proto: 0, port: 0, portPrefixLen: 0 }, { verdict: 'deny' }]]);
  const keys: [number, number, number, string][] = [];
  for (const id of [300, 301, 302, 0]) for (const proto of [17, 6]) for (const port of [53, 5353]) for (const name of ['q1.bench.lab.', 'other.lab.']) keys.push([id, proto, port, name]);
  for (let round = 0; round < 2; round++) {
    for (const [id, proto, port, name] of keys) assert.equal(kept(a, id, proto, port, name), live(a, id, proto, port, name), `${id}/${proto}/${port} ${name}`);
  }
  assert.equal(kept(a, 300, 17, 53, 'q1.bench.lab.'), true, 'positive control');
  assert.equal(kept(a, 301, 17, 53, 'q1.bench.lab.'), false, 'the deny of every port');
  // the next snapshot's MapState (no DNS rules any more: port 53 denied to 300) is its own
  const b = ms(null, []);
  b.entries.clear();
  assert.equal(kept(b, 300, 17, 53, 'q1.bench.lab.'), false);
  assert.equal(kept(a, 300, 17, 53, 'q1.bench.lab.'), true);
  // changed in place (as the feed's applyDelta does): its next generation is looked up again
  a.entries.delete(mapStateKeyString({ direction: 'egress', identity: 300, proto: 17, port: 53, portPrefixLen: 16 }));
  gens.set(a, 1);
  assert.equal(kept(a, 300, 17, 53, 'q1.bench.lab.'), false, 'the removed entry no longer allows');
  assert.equal(kept(a, 300, 17, 53, 'q1.bench.lab.'), live(a, 300, 17, 53, 'q1.bench.lab.'));
});
