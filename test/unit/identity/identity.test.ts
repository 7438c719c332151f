import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalIdentityAllocator } from '../../../src/identity/allocator.ts';
import {
  RESERVED_IDENTITIES, ReservedIdentity, identityScope, requiresLocalScope, reservedIdentity, worldIdentity, LOCAL_IDENTITY_FLAG,
} from '../../../src/identity/identity.ts';
import {
  cidrIdentityLabels, cidrLabelKey, fqdnIdentityLabels, fqdnSelectorLabel, parseCidrLabelKey, podIdentityLabels,
} from '../../../src/identity/labels.ts';
import { parsePrefix } from '../../../src/ipcache/prefix.ts';
import { LabelSet } from '../../../src/labels/labels.ts';
import type { Pod } from '../../../src/api/types.ts';

test('reserved identities 0-10: Cilium numbers and labels', () => {
  const want: [number, string[]][] = [
    [0, ['reserved:unknown']], [1, ['reserved:host']], [2, ['reserved:world']], [3, ['reserved:unmanaged']],
    [4, ['reserved:health']], [5, ['reserved:init']], [6, ['reserved:remote-node']],
    [7, ['reserved:kube-apiserver', 'reserved:remote-node']], [8, ['reserved:ingress']],
    [9, ['reserved:world-ipv4']], [10, ['reserved:world-ipv6']],
  ];
  assert.equal(RESERVED_IDENTITIES.length, 11);
  for (const [id, labels] of want) assert.deepEqual(reservedIdentity(id)!.labels.toStrings(), labels, String(id));
  assert.equal(ReservedIdentity.kubeApiserver, 7);
  assert.equal(worldIdentity(4, false), 2);
  assert.equal(worldIdentity(6, false), 2);
  assert.equal(worldIdentity(4, true), 9);
  assert.equal(worldIdentity(6, true), 10);
  assert.equal(identityScope(5), 'reserved');
  assert.equal(identityScope(256), 'cluster');
  assert.equal(identityScope(LOCAL_IDENTITY_FLAG + 1), 'local');
  assert.equal(identityScope((2 << 24) + 1), 'remote-node');
});

test('allocator: same labels same identity, refcounted release, reserved labels map to reserved ids', () => {
  const a = new LocalIdentityAllocator();
  const events: string[] = [];
  a.watch((ev) => events.push(`${ev.type}:${ev.identity.id}`));
  const l1 = LabelSet.parse(['k8s:app=a', 'k8s:io.kubernetes.pod.namespace=x']);
  const l1b = LabelSet.parse(['k8s:io.kubernetes.pod.namespace=x', 'k8s:app=a']);
  const r1 = a.allocateSync(l1);
  const r2 = a.allocateSync(l1b);
  assert.equal(r1.identity.id, 256);
  assert.equal(r1.isNew, true);
  assert.equal(r2.identity.id, 256);
  assert.equal(r2.isNew, false);
  assert.equal(a.references(256), 2);
  const other = a.allocateSync(LabelSet.parse(['k8s:app=b']));
  assert.equal(other.identity.id, 257);
  assert.equal(a.releaseSync(256), false);
  assert.equal(a.lookupById(256)?.labels.canonical, l1.canonical);
  assert.equal(a.releaseSync(256), true);
  assert.equal(a.lookupById(256), undefined);
  assert.equal(a.lookupByLabels(l1), undefined);
  assert.deepEqual(events, ['add:256', 'add:257', 'delete:256']);
  const host = a.allocateSync(LabelSet.parse(['reserved:host']));
  assert.equal(host.identity.id, 1);
  assert.equal(a.releaseSync(1), false);
  assert.equal(a.lookupById(2)?.labels.toStrings()[0], 'reserved:world');
});

test('allocator: CIDR and FQDN identities are node-local (1<<24 + n)', async () => {
  const a = new LocalIdentityAllocator();
  const c = await a.allocate(cidrIdentityLabels('10.0.0.0/8'));
  assert.equal(c.identity.id, LOCAL_IDENTITY_FLAG + 1);
  assert.deepEqual(c.identity.labels.toStrings(), ['cidr:10.0.0.0/8', 'reserved:world']);
  const f = await a.allocate(fqdnIdentityLabels('203.0.113.7', [{ matchName: 'API.openai.com.' }]));
  assert.equal(f.identity.id, LOCAL_IDENTITY_FLAG + 2);
  assert.deepEqual(f.identity.labels.toStrings(), ['cidr:203.0.113.7/32', 'fqdn:api.openai.com', 'reserved:world']);
  assert.equal(requiresLocalScope(LabelSet.parse(['k8s:app=a'])), false);
  assert.equal(requiresLocalScope(LabelSet.parse(['reserved:world'])), false);
  assert.equal(await a.release(c.identity.id), true);
  // Exhaustion is a clear error, not a silent reuse.
  const small = new LocalIdentityAllocator({ minClusterIdentity: 256, maxClusterIdentity: 257 });
  small.allocateSync(LabelSet.parse(['k8s:a=1']));
  small.allocateSync(LabelSet.parse(['k8s:a=2']));
  assert.throws(() => small.allocateSync(LabelSet.parse(['k8s:a=3'])), /no free cluster identity/);
});

test('allocator: restore keeps numbers across restarts; gc frees the unclaimed', () => {
  const l = LabelSet.parse(['k8s:app=a']);
  const a = new LocalIdentityAllocator({ restore: [{ id: 300, labels: l }, { id: 301, labels: LabelSet.parse(['k8s:app=b']) }] });
  assert.equal(a.allocateSync(l).identity.id, 300);
  assert.equal(a.allocateSync(LabelSet.parse(['k8s:app=c'])).identity.id, 256);
  assert.deepEqual(a.gcUnreferenced().map((i) => i.id), [301]);
});

test('cidr labels: IPv6 colons as dashes, leading/trailing colon as 0- / -0, round trip', () => {
  const table: [string, string][] = [
    ['10.1.2.3/32', '10.1.2.3/32'],
    ['2001:db8::/32', '2001-db8--0/32'],
    ['::/0', '0--0/0'],
    ['::1/128', '0--1/128'],
    ['fe80::1:2/64', 'fe80--0/64'],
    ['2001:db8:1:2:3:4:5:6/128', '2001-db8-1-2-3-4-5-6/128'],
  ];
  for (const [prefix, key] of table) {
    const p = parsePrefix(prefix)!;
    assert.equal(cidrLabelKey(p), key, prefix);
    assert.equal(parseCidrLabelKey(key)?.text, p.text, key);
  }
  assert.deepEqual(cidrIdentityLabels('0.0.0.0/0').toStrings(), ['reserved:world']);
  assert.deepEqual(cidrIdentityLabels('2001:db8::/32', true).toStrings(), ['cidr:2001-db8--0/32', 'reserved:world-ipv6']);
  assert.deepEqual(cidrIdentityLabels('192.0.2.0/24', true).toStrings(), ['cidr:192.0.2.0/24', 'reserved:world-ipv4']);
  assert.equal(fqdnSelectorLabel({ matchPattern: '*.Example.com.' }).key, '*.example.com');
});

test('pod identity labels (spec §5.3)', () => {
  const p: Pod = {
    apiVersion: 'v1', kind: 'Pod', source: { file: 'f', line: 1, col: 1 },
    metadata: { name: 'web-1', namespace: 'prod', labels: { app: 'web', 'pod-template-hash': 'abc', 'io.cilium.k8s.policy.name': 'evil', 'app.kubernetes.io/name': 'web' } },
    spec: { containers: [], serviceAccountName: 'websa' },
  };
  const ls = podIdentityLabels({ pod: p, namespace: { metadata: { name: 'prod', labels: { team: 'a' } } }, clusterName: 'lab' });
  assert.deepEqual(ls.toStrings(), [
    'k8s:app=web',
    'k8s:app.kubernetes.io/name=web',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod',
    'k8s:io.cilium.k8s.namespace.labels.team=a',
    'k8s:io.cilium.k8s.policy.cluster=lab',
    'k8s:io.cilium.k8s.policy.serviceaccount=websa',
    'k8s:io.kubernetes.pod.namespace=prod',
  ]);
  // Two pods differing only in filtered labels share an identity.
  const q = { ...p, metadata: { ...p.metadata, name: 'web-2', labels: { ...p.metadata.labels, 'pod-template-hash': 'def' } } };
  assert.equal(podIdentityLabels({ pod: q, namespace: { metadata: { name: 'prod', labels: { team: 'a' } } }, clusterName: 'lab' }).canonical, ls.canonical);
  const d = podIdentityLabels({ pod: { metadata: { name: 'x', namespace: 'default' } } });
  assert.ok(d.toStrings().includes('k8s:io.cilium.k8s.policy.serviceaccount=default'));
  assert.ok(d.toStrings().includes('k8s:io.cilium.k8s.policy.cluster=default'));
});
