import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFakeDatapath } from '../../../src/datapath/fake.ts';
import { mapStateKeyString, type MapStateKey, type MapStateEntry } from '../../../src/policy/types.ts';

const entry = (verdict: 'allow' | 'deny'): MapStateEntry => ({ verdict, l7: null, authType: 0, matchType: 2, origins: [] });

test('fake datapath applies full and delta policy like the maps, and decides with the lookup contract', async () => {
  const dp = createFakeDatapath();
  await dp.start();
  await dp.upsertEndpoint({ id: 1, identity: 300, ipv4: '10.244.1.5', ifname: 'lxc1', ifindex: 9 });
  const k80: MapStateKey = { direction: 'ingress', identity: 400, proto: 6, port: 80, portPrefixLen: 16 };
  const kAll: MapStateKey = { direction: 'ingress', identity: 0, proto: 6, port: 443, portPrefixLen: 16 };
  await dp.applyPolicy(1, { upserts: [], deletes: [], defaultDenyChanged: true, defaultDeny: { ingress: true, egress: false } }, {
    entries: new Map([[mapStateKeyString(k80), { key: k80, entry: entry('allow') }]]), defaultDeny: { ingress: true, egress: false },
  });
  assert.equal(dp.decide(1, 'ingress', 400, 6, 80).verdict, 'forward');
  assert.equal(dp.decide(1, 'ingress', 401, 6, 80).dropReason, 133);
  await dp.applyPolicy(1, { upserts: [{ key: kAll, entry: entry('deny') }], deletes: [k80], defaultDenyChanged: false });
  assert.equal(dp.decide(1, 'ingress', 400, 6, 80).dropReason, 133);
  assert.equal(dp.decide(1, 'ingress', 400, 6, 443).dropReason, 181);
  assert.equal((await dp.stats()).policyEntries, 1);

  await dp.upsertIPCache([{ prefix: '10.244.0.0/16', identity: 7 }, { prefix: '10.244.1.5/32', identity: 300, endpointId: 1 }]);
  assert.equal(dp.identityOf('10.244.1.5'), 300);
  assert.equal(dp.identityOf('10.244.9.9'), 7);
  assert.equal(dp.identityOf('8.8.8.8'), 2);

  const seen: number[] = [];
  const off = dp.onEvent((e) => seen.push(e.subType));
  dp.inject({ type: 1, subType: 133 });
  off();
  dp.inject({ type: 1, subType: 181 });
  assert.deepEqual(seen, [133]);
  await dp.removeEndpoint(1);
  assert.equal(dp.endpoints.size, 0);
  assert.ok(dp.calls.some((c) => c.method === 'removeEndpoint'));
});
