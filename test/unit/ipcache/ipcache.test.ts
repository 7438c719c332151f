import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IPCache, SOURCE_PRECEDENCE } from '../../../src/ipcache/ipcache.ts';
import { formatIPv6, parseIP, parsePrefix, prefixContains } from '../../../src/ipcache/prefix.ts';

test('prefix parsing and canonical text', () => {
  const table: [string, string | undefined][] = [
    ['10.1.2.3/8', '10.0.0.0/8'], ['10.1.2.3', '10.1.2.3/32'], ['0.0.0.0/0', '0.0.0.0/0'],
    ['2001:DB8::1/32', '2001:db8::/32'], ['::ffff:1.2.3.4', '::ffff:102:304/128'], ['::/0', '::/0'],
    ['1.2.3.4/33', undefined], ['1.2.3', undefined], ['256.1.1.1', undefined], ['1::2::3', undefined], ['', undefined],
    ['01.2.3.4', undefined],
  ];
  for (const [t, want] of table) assert.equal(parsePrefix(t)?.text, want, t);
  assert.equal(parsePrefix('10.0.0.1', false), undefined);
  assert.equal(formatIPv6(parseIP('1:0:0:1:0:0:0:1')!.addr as bigint), '1:0:0:1::1');
  assert.ok(prefixContains(parsePrefix('10.0.0.0/8')!, parsePrefix('10.1.0.0/16')!));
  assert.ok(!prefixContains(parsePrefix('10.1.0.0/16')!, parsePrefix('10.0.0.0/8')!));
  assert.ok(!prefixContains(parsePrefix('::/0')!, parsePrefix('10.0.0.0/8')!));
});

test('longest-prefix lookup, IPv4 and IPv6, world fallback', () => {
  const c = new IPCache();
  c.upsert('10.0.0.0/8', 100, 'cidr');
  c.upsert('10.1.0.0/16', 101, 'cidr');
  c.upsert('10.1.2.3', 102, 'cidr');
  c.upsert('2001:db8::/32', 200, 'cidr');
  c.upsert('2001:db8:1::/48', 201, 'cidr');
  assert.equal(c.lookup('10.1.2.3')?.identity, 102);
  assert.equal(c.lookup('10.1.2.4')?.identity, 101);
  assert.equal(c.lookup('10.2.0.1')?.identity, 100);
  assert.equal(c.lookup('11.0.0.1'), undefined);
  assert.equal(c.lookupIdentity('11.0.0.1'), 2);
  assert.equal(c.lookupIdentity('11.0.0.1', true), 9);
  assert.equal(c.lookupIdentity('2001:db9::1', true), 10);
  assert.equal(c.lookup('2001:db8:1::5')?.identity, 201);
  assert.equal(c.lookup('2001:db8:2::5')?.identity, 200);
  assert.equal(c.lookup('2001:db8:1::5')?.prefix, '2001:db8:1::/48');
  assert.equal(c.size, 5);
  assert.equal(c.delete('10.1.0.0/16'), true);
  assert.equal(c.lookup('10.1.2.4')?.identity, 100);
  assert.throws(() => c.upsert('nope', 1, 'cidr'), /invalid prefix/);
});

test('pod and node IPs beat CIDR identities for the same prefix', () => {
  const c = new IPCache();
  const events: string[] = [];
  c.onChange((e) => events.push(`${e.type} ${e.entry.prefix} ${e.entry.identity}`));
  c.upsert('10.244.1.5/32', 16777217, 'cidr');
  c.upsert('10.244.1.5', 300, 'endpoint', 12);
  assert.deepEqual(c.lookup('10.244.1.5'), { identity: 300, prefix: '10.244.1.5/32', source: 'endpoint', endpointId: 12 });
  c.upsert('10.244.1.5/32', 16777218, 'cidr'); // re-claim by a lower source: winner unchanged, no event
  assert.equal(c.lookup('10.244.1.5')?.identity, 300);
  c.delete('10.244.1.5/32', 'endpoint');
  assert.equal(c.lookup('10.244.1.5')?.identity, 16777218);
  c.upsert('192.0.2.11', 6, 'node');
  c.upsert('192.0.2.0/24', 16777219, 'cidr');
  assert.equal(c.lookup('192.0.2.11')?.identity, 6);
  assert.equal(c.lookup('192.0.2.12')?.identity, 16777219);
  assert.deepEqual(events.slice(0, 3), ['upsert 10.244.1.5/32 16777217', 'upsert 10.244.1.5/32 300', 'upsert 10.244.1.5/32 16777218']);
  assert.deepEqual([...c.entries()].map((e) => e.prefix).sort(), ['10.244.1.5/32', '192.0.2.0/24', '192.0.2.11/32']);
});

test('claims by several sources: the winner, its events and deletes match a model of all claims (fast-check)', async () => {
  // identities past the packed form (2^27) and local endpoint ids take the object form of a claim:
  // both forms, and the change between them, give the same entries
  const fc = (await import('fast-check')).default;
  const sources = ['endpoint', 'node', 'cidr', 'fqdn'] as const;
  const op = fc.record({
    del: fc.boolean(), all: fc.boolean(), prefix: fc.constantFrom('10.0.0.1/32', '10.0.0.2/32', '10.0.0.0/24', '2001:db8::1/128'),
    source: fc.constantFrom(...sources), identity: fc.constantFrom(1, 2, 3, 16777218, (1 << 27) + 5), endpointId: fc.constantFrom(0, 0, 7),
  });
  fc.assert(fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
    const c = new IPCache();
    // the model: every claim per prefix; the winner is the highest-precedence source's claim
    const model = new Map<string, Map<string, string>>();
    const winner = (p: string) => {
      const m = model.get(p);
      if (!m?.size) return undefined;
      const best = [...m.keys()].sort((a, b) => SOURCE_PRECEDENCE[b as 'node'] - SOURCE_PRECEDENCE[a as 'node'])[0]!;
      return `${best} ${m.get(best)}`;
    };
    for (const o of ops) {
      const before = winner(o.prefix);
      const events: string[] = [];
      const off = c.onChange((e) => { assert.equal(e.entry.prefix, o.prefix); events.push(`${e.type} ${e.entry.source} ${e.entry.identity} ${e.entry.endpointId}`); });
      if (o.del) {
        const m = model.get(o.prefix);
        const expect = o.all ? !!m?.size : !!m?.has(o.source);
        assert.equal(c.delete(o.prefix, o.all ? undefined : o.source), expect);
        if (o.all) model.delete(o.prefix); else m?.delete(o.source);
      } else {
        const w = c.upsert(o.prefix, o.identity, o.source, o.endpointId);
        let m = model.get(o.prefix);
        if (!m) model.set(o.prefix, m = new Map());
        m.set(o.source, `${o.identity} ${o.endpointId}`);
        assert.equal(`${w.source} ${w.identity} ${w.endpointId}`, winner(o.prefix));
        assert.equal(w.prefix, o.prefix);
      }
      off();
      const after = winner(o.prefix);
      const g = c.get(o.prefix);
      assert.equal(g ? `${g.source} ${g.identity} ${g.endpointId}` : undefined, after);
      const l = c.lookup(o.prefix.split('/')[0]!);
      // the address's longest match: its own prefix while claimed, else the /24 for 10.0.0.x
      if (after !== undefined) assert.deepEqual(l && `${l.prefix} ${l.source} ${l.identity} ${l.endpointId}`, `${o.prefix} ${after}`);
      // an event exactly when the winner changed (or was re-claimed by its own source)
      if (after === undefined) assert.deepEqual(events, before === undefined ? [] : [`delete ${before}`]);
      else if (after !== before) assert.deepEqual(events, [`upsert ${after}`]);
      else if (!o.del && after.startsWith(`${o.source} `)) assert.deepEqual(events, [`upsert ${after}`]);
      else assert.deepEqual(events, []);
    }
    const want = [...model.keys()].filter((p) => winner(p)).sort();
    assert.deepEqual([...c.entries()].map((e) => `${e.prefix} ${e.source} ${e.identity} ${e.endpointId}`).sort(), want.map((p) => `${p} ${winner(p)}`).sort());
    assert.equal(c.size, want.length);
  }), { numRuns: 300 });
});
