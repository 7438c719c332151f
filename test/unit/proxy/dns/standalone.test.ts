/**
 * The standalone DNS proxy's "already allowed" test (src/proxy/dns/standalone.ts): with the agent
 * away, an answer is forwarded only when the endpoint's egress policy lets its IPs' identities
 * through; anything else is held (and SERVFAIL after the bound, proxy.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { egressAllowsIdentity, fqdnSelected } from '../../../../src/proxy/dns/standalone.ts';
import type { StandaloneDNSInfo } from '../../../../src/proxy/feed/snapshot.ts';
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

const info = (fqdnSelectors?: StandaloneDNSInfo['fqdnSelectors']): StandaloneDNSInfo => ({ serviceIp: '10.96.0.10', rejectResponseCode: 'refused', hold: true, ...(fqdnSelectors ? { fqdnSelectors } : {}) });

test('an answer is held only for a name a toFQDNs selector of the node selects (by the snapshot\'s list)', () => {
  const sels = info([{ matchPattern: '*.bench.lab' }, { matchName: 'api.openai.com' }]);
  assert.equal(fqdnSelected(sels, 'q1.bench.lab.'), true);
  assert.equal(fqdnSelected(sels, 'api.openai.com.'), true);
  assert.equal(fqdnSelected(sels, 'api.anthropic.com.'), false, 'no selector: nothing will be written for its IPs');
  assert.equal(fqdnSelected(info([]), 'q1.bench.lab.'), false, 'a node without toFQDNs');
  assert.equal(fqdnSelected(info(), 'anything.example.'), true, 'no list (an older agent): held as before');
});

test('attacker: a selected name is held however it is spelt, a near miss is not taken for it, and a new list is judged anew', () => {
  const sels = info([{ matchPattern: '*.bench.lab' }, { matchName: 'api.openai.com' }]);
  assert.equal(fqdnSelected(sels, 'Q1.BENCH.LAB.'), true, 'case');
  assert.equal(fqdnSelected(sels, 'q1.bench.lab'), true, 'no trailing dot');
  assert.equal(fqdnSelected(sels, 'API.OpenAI.com'), true);
  assert.equal(fqdnSelected(sels, 'bench.lab.'), false, '*. needs a label');
  assert.equal(fqdnSelected(sels, 'q1.bench.lab.evil.example.'), false);
  assert.equal(fqdnSelected(sels, 'api.openai.com.evil.example.'), false);
  // a policy change brings a new list (a new snapshot): the verdict kept for the old list is not reused
  assert.equal(fqdnSelected(sels, 'api.anthropic.com.'), false);
  assert.equal(fqdnSelected(info([{ matchPattern: '*.bench.lab' }, { matchPattern: '*.anthropic.com' }]), 'api.anthropic.com.'), true);
  // a selector this process cannot compile: held (never released on a guess)
  assert.equal(fqdnSelected(info([{ matchPattern: '*.bench.lab' }, { matchName: 'both.example', matchPattern: '*.example' }]), 'api.anthropic.com.'), true);
});
