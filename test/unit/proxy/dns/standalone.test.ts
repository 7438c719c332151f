/**
 * The standalone DNS proxy's "already allowed" test (src/proxy/dns/standalone.ts): with the agent
 * away, an answer is forwarded only when the endpoint's egress policy lets its IPs' identities
 * through; anything else is held (and SERVFAIL after the bound, proxy.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { egressAllowsIdentity } from '../../../../src/proxy/dns/standalone.ts';
import { mapStateKeyString, type MapState, type MapStateEntry, type MapStateKey } from '../../../../src/policy/types.ts';

function ms(rows: [Partial<MapStateKey>, 'allow' | 'deny'][], defaultDenyEgress = true): MapState {
  const entries: MapState['entries'] = new Map();
  for (const [k, verdict] of rows) {
    const key: MapStateKey = { direction: 'egress', identity: 0, proto: 0, port: 0, portPrefixLen: 0, ...k };
    entries.set(mapStateKeyString(key), { key, entry: { verdict, l7: null, matchType: 0, authType: 0 } as unknown as MapStateEntry });
  }
  return { entries, defaultDeny: { ingress: true, egress: defaultDenyEgress } };
}

test('an identity is allowed by an egress allow entry for it or for every identity, or by no default deny', () => {
  const m = ms([[{ identity: 16777217, proto: 6, port: 443, portPrefixLen: 16 }, 'allow'], [{ identity: 300, proto: 17, port: 53, portPrefixLen: 16 }, 'allow']]);
  assert.equal(egressAllowsIdentity(m, 16777217), true);
  assert.equal(egressAllowsIdentity(m, 300), true);
  assert.equal(egressAllowsIdentity(ms([[{ identity: 0, proto: 6, port: 443, portPrefixLen: 16 }, 'allow']]), 2), true, 'an allow of every identity');
  assert.equal(egressAllowsIdentity(ms([], false), 2), true, 'egress not default-deny');
});

test('attacker: an IP whose identity the policy does not allow (world, another FQDN identity, an ingress-only or denied one) is not "already allowed"', () => {
  const m = ms([[{ identity: 16777217, proto: 6, port: 443, portPrefixLen: 16 }, 'allow'], [{ direction: 'ingress', identity: 2 }, 'allow'], [{ identity: 16777218 }, 'deny'], [{ identity: 16777218, proto: 6, port: 80, portPrefixLen: 16 }, 'allow']]);
  assert.equal(egressAllowsIdentity(m, 2), false, 'world: no egress entry');
  assert.equal(egressAllowsIdentity(m, 16777219), false, 'another FQDN identity');
  assert.equal(egressAllowsIdentity(m, 16777218), false, 'a deny of every port wins over an allow');
  assert.equal(egressAllowsIdentity(ms([[{ identity: 0 }, 'deny']], false), 5), false, 'a deny of everything');
});
