/** IPv6 in the policy engine: CIDR v6 (toCIDR, toCIDRSet with except, fromCIDR) become local
 * identities whose ipcache prefixes are IPv6; ICMPv6 types are a protocol of their own; the world
 * entity selects those CIDR identities (and identity 2, which the datapath gives an IPv6 address
 * no prefix covers). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import { cnp, ns, pod } from './helpers.ts';

test('IPv6 CIDR rules: local identities with IPv6 prefixes, enforced like IPv4 ones; except carves out', async () => {
  const pe = createAgentPolicyEngine();
  const x = ns('x');
  const db = pod('x', 'db', { app: 'db' });
  const id = await pe.allocateIdentity({ pod: db, namespace: x });
  pe.setPolicies([cnp('db', 'x', {
    endpointSelector: { matchLabels: { app: 'db' } },
    egress: [
      { toCIDR: ['2001:db8:9::/48'], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
      { toCIDRSet: [{ cidr: 'fd00:10::/32', except: ['fd00:10:1::/48'] }] },
    ],
    ingress: [{ fromCIDR: ['2001:db8:7::1'] }],
  })]);
  const ms = pe.addEndpoint({ id: 7, identity: id.id, pod: db, namespace: x });
  const byPrefix = new Map(pe.ipcacheEntries().map((e) => [e.prefix, e.identity]));
  assert.deepEqual([...byPrefix.keys()].sort(), ['2001:db8:7::1/128', '2001:db8:9::/48', 'fd00:10:1::/48', 'fd00:10::/32']);
  const web = byPrefix.get('2001:db8:9::/48')!;
  assert.equal(lookupMapState(ms, 'egress', web, 6, 80).verdict, 'forward');
  assert.equal(lookupMapState(ms, 'egress', web, 6, 81).dropReason, 133);
  assert.equal(lookupMapState(ms, 'egress', byPrefix.get('fd00:10::/32')!, 17, 53).verdict, 'forward');
  assert.equal(lookupMapState(ms, 'egress', byPrefix.get('fd00:10:1::/48')!, 17, 53).dropReason, 133, 'the except prefix is not allowed');
  assert.equal(lookupMapState(ms, 'ingress', byPrefix.get('2001:db8:7::1/128')!, 6, 22).verdict, 'forward');
  assert.equal(lookupMapState(ms, 'egress', 2, 6, 80).dropReason, 133, 'world outside the prefixes is denied');
  assert.deepEqual(pe.identityLabels(web), ['cidr:2001-db8-9--0/48', 'reserved:world'], 'Cilium\'s label form (a trailing colon gets a 0)');
});

test('IPv6 entities and ICMPv6: world selects IPv6 CIDR identities; ICMPv6 echo is its own protocol (58), not ICMP', async () => {
  const pe = createAgentPolicyEngine();
  const x = ns('x');
  const a = pod('x', 'a', { app: 'a' });
  const id = await pe.allocateIdentity({ pod: a, namespace: x });
  pe.setPolicies([cnp('a', 'x', {
    endpointSelector: { matchLabels: { app: 'a' } },
    egress: [
      { toEntities: ['world'], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] },
      { toCIDR: ['2001:db8:9::/48'], icmps: [{ fields: [{ type: 'EchoRequest', family: 'IPv6' }] }] },
    ],
  })]);
  const ms = pe.addEndpoint({ id: 9, identity: id.id, pod: a, namespace: x });
  const cidr = pe.ipcacheEntries().find((e) => e.prefix === '2001:db8:9::/48')!.identity;
  assert.equal(lookupMapState(ms, 'egress', 2, 6, 443).verdict, 'forward', 'world (an IPv6 address no prefix covers is 2 in the datapath)');
  assert.equal(lookupMapState(ms, 'egress', cidr, 6, 443).verdict, 'forward', 'world selects the IPv6 CIDR identity');
  assert.equal(lookupMapState(ms, 'egress', cidr, 58, 128).verdict, 'forward', 'ICMPv6 echo request');
  assert.equal(lookupMapState(ms, 'egress', cidr, 58, 129).dropReason, 133, 'ICMPv6 echo reply is another type');
  assert.equal(lookupMapState(ms, 'egress', cidr, 1, 128).dropReason, 133, 'ICMP (IPv4) type 128 is not ICMPv6');
});
