/**
 * LocalIdentityAllocator.hold: local numbers a restarted agent finds in the pinned ipcache and not
 * in its store (test/integration/datapath/identity-restart.test.ts kills an agent for them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalIdentityAllocator } from '../../../src/identity/allocator.ts';
import { cidrIdentityLabels, fqdnIdentityLabels } from '../../../src/identity/labels.ts';

const sels = [{ matchPattern: '*.lab' }];

test('hold: a held number goes to no other labels, comes back to its prefix (IPv4, IPv6, CIDR labels), and only local numbers are held', () => {
  const a = new LocalIdentityAllocator();
  const ids = ['198.51.100.1', '2001:db8::1', '203.0.113.0/24'].map((p, i) => {
    const id = a.allocateSync(i === 2 ? cidrIdentityLabels(p) : fqdnIdentityLabels(p, sels)).identity.id;
    a.releaseSync(id); // as if lost: allocated, in the maps, not restored
    return id;
  });
  const entries = [{ prefix: '198.51.100.1/32', identity: ids[0]! }, { prefix: '2001:db8::1/128', identity: ids[1]! }, { prefix: '203.0.113.0/24', identity: ids[2]! }];
  // a pod's (cluster-scoped) number and a number a restored identity has are not held
  const restored = a.restore(16777300, cidrIdentityLabels('192.0.2.0/24'));
  assert.equal(a.hold([...entries, { prefix: '10.244.1.5/32', identity: 300 }, { prefix: '192.0.2.0/24', identity: restored.id }]), 3);
  for (let i = 0; i < 20; i++) {
    const id = a.allocateSync(fqdnIdentityLabels(`192.0.2.${100 + i}`, sels)).identity.id;
    assert.ok(!ids.includes(id), `new labels took held ${id}`);
  }
  assert.equal(a.allocateSync(fqdnIdentityLabels('2001:db8::1', [{ matchName: 'api.lab' }])).identity.id, ids[1]);
  assert.equal(a.allocateSync(cidrIdentityLabels('203.0.113.0/24')).identity.id, ids[2]);
  assert.equal(a.releaseHeld(), 1, 'the unclaimed one was held until the end');
  assert.equal(a.lookupById(ids[0]!), undefined);
});
