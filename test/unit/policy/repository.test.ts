import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyImportError, Repository } from '../../../src/policy/repository.ts';
import { SelectorCache } from '../../../src/policy/selectorcache.ts';
import { labelPeer, cidrPeer, WILDCARD_PEER } from '../../../src/policy/selectors.ts';
import { EndpointPolicy } from '../../../src/policy/endpoint-policy.ts';
import { resolve } from '../../../src/policy/distillery.ts';
import { mapStatesEqual, diffMapStates } from '../../../src/policy/mapstate-compare.ts';
import { compileSelector } from '../../../src/labels/selector.ts';
import { LabelSet } from '../../../src/labels/labels.ts';
import { parsePrefix } from '../../../src/ipcache/prefix.ts';
import { cidrIdentityLabels } from '../../../src/identity/labels.ts';
import type { MapState, MapStateDelta } from '../../../src/policy/types.ts';
import { cnp, ns, pod, World } from './helpers.ts';

test('repository: revisions, replace, delete, all-or-nothing imports', () => {
  const repo = new Repository();
  assert.equal(repo.revision, 1);
  const p1 = cnp('p1', 'x', { endpointSelector: {}, ingress: [{ fromEntities: ['world'] }] });
  const c1 = repo.upsert(p1);
  assert.deepEqual(c1, { revision: 2, keys: ['CiliumNetworkPolicy/x/p1'] });
  assert.equal(repo.upsert({ ...p1 }).revision, 2, 're-applying the same resource changes nothing');
  assert.equal(repo.rules().length, 1);
  const bad = cnp('p2', 'x', { endpointSelector: {}, ingress: [{ fromCIDR: ['nope'] }] });
  const good = cnp('p3', 'x', { endpointSelector: {}, egress: [{ toEntities: ['world'] }] });
  assert.throws(() => repo.apply([good, bad]), (e: unknown) => e instanceof PolicyImportError && e.code === 'POLICY_INVALID' && e.issues.length === 1 && /unable to parse CIDR/.test(e.issues[0]!.message));
  assert.equal(repo.revision, 2);
  assert.deepEqual(repo.keys(), ['CiliumNetworkPolicy/x/p1']);
  repo.upsert(cnp('p1', 'x', { endpointSelector: {}, ingress: [{ fromEntities: ['host'] }] }));
  assert.equal(repo.revision, 3);
  assert.equal(repo.rules()[0]!.entries[0]!.peers[0]!.key, 'ls:{reserved:host}');
  assert.equal(repo.delete('CiliumNetworkPolicy/x/p1')?.revision, 4);
  assert.equal(repo.delete('CiliumNetworkPolicy/x/p1'), undefined);
  repo.apply([good, cnp('p4', 'x', { endpointSelector: {}, egress: [{ toCIDR: ['10.0.0.0/8'] }] })], true);
  repo.apply([good], true);
  assert.deepEqual(repo.keys(), ['CiliumNetworkPolicy/x/p3']);
  assert.deepEqual(repo.referencedCIDRs(), []);
});

test('repository: registers peer selectors in the selector cache and releases them', () => {
  const repo = new Repository();
  const cache = repo.selectorCache;
  repo.upsert(cnp('a', 'x', { endpointSelector: {}, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'a' } }] }] }));
  repo.upsert(cnp('b', 'x', { endpointSelector: {}, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'a' } }] }, { fromCIDR: ['10.0.0.0/8'] }] }));
  assert.ok(cache.get('ls:{any:app=a,k8s:io.kubernetes.pod.namespace=x}'));
  assert.ok(cache.get('cidr:10.0.0.0/8'));
  assert.deepEqual(repo.referencedCIDRs().map((p) => p.text), ['10.0.0.0/8']);
  repo.delete('CiliumNetworkPolicy/x/b');
  assert.ok(cache.get('ls:{any:app=a,k8s:io.kubernetes.pod.namespace=x}'), 'still used by a');
  assert.equal(cache.get('cidr:10.0.0.0/8'), undefined);
  repo.delete('CiliumNetworkPolicy/x/a');
  assert.deepEqual([...cache.all()].map((s) => s.key), ['ls:{reserved:host}'], 'only the permanent allow-localhost selector');
});

test('repository: services changes re-translate toServices policies', () => {
  const repo = new Repository();
  const svc = (selector: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Service' as const, metadata: { name: 'api', namespace: 'x' }, source: { file: 's', line: 1, col: 1 }, spec: { selector } });
  repo.upsert(cnp('s', 'x', { endpointSelector: {}, egress: [{ toServices: [{ k8sService: { serviceName: 'api', namespace: 'x' } }] }] }));
  assert.equal(repo.rules()[0]!.entries.length, 0, 'unknown service selects nothing');
  const r = repo.revision;
  assert.ok(repo.setServices([svc({ app: 'api' })]));
  assert.equal(repo.revision, r + 1);
  assert.equal(repo.rules()[0]!.entries[0]!.peers[0]!.key, 'ls:{k8s:app=api,k8s:io.kubernetes.pod.namespace=x}');
  assert.equal(repo.setServices([svc({ app: 'api' })]), undefined, 'same services: no change');
});

test('selector cache: selections, incremental updates, exact change notifications', () => {
  const cache = new SelectorCache();
  const a = LabelSet.parse(['k8s:app=a']);
  const b = LabelSet.parse(['k8s:app=b']);
  cache.updateIdentities([{ id: 300, labels: a }, { id: 0, labels: a }]);
  const selA = cache.add(labelPeer(compileSelector({ matchLabels: { app: 'a' } })));
  const selW = cache.add(WILDCARD_PEER);
  const selC = cache.add(cidrPeer(parsePrefix('10.0.0.0/8')!));
  assert.deepEqual([...selA.selections], [300]);
  assert.deepEqual([...selW.selections], [], 'wildcard selectors resolve to identity 0, not a list');
  const seen: string[] = [];
  cache.subscribe(selA.key, { selectionsChanged: (cs) => seen.push(cs.map((c) => `${c.selector.key} +${c.added} -${c.removed}`).join(';')) });
  cache.updateIdentities([{ id: 301, labels: a }, { id: 302, labels: b }]);
  cache.updateIdentities([{ id: 300, labels: b }]); // labels changed: leaves selector a
  cache.updateIdentities([], [301]);
  cache.updateIdentities([{ id: 16777217, labels: cidrIdentityLabels('10.1.0.0/16') }]);
  assert.deepEqual(seen, ['ls:{any:app=a} +301 -', 'ls:{any:app=a} + -300', 'ls:{any:app=a} + -301']);
  assert.deepEqual([...selC.selections], [16777217]);
  assert.deepEqual(cache.selectorsOf(16777217).map((s) => s.key), ['cidr:10.0.0.0/8']);
  cache.add(labelPeer(compileSelector({ matchLabels: { app: 'a' } })));
  cache.release(selA.key);
  assert.ok(cache.get(selA.key));
  cache.release(selA.key);
  assert.equal(cache.get(selA.key), undefined);
});

function applyDelta(ms: MapState, d: MapStateDelta): void {
  for (const k of d.deletes) ms.entries.delete(`${k.direction === 'ingress' ? 'i' : 'e'}/${k.identity}/${k.proto}/${k.port}/${k.portPrefixLen}`);
  for (const u of d.upserts) ms.entries.set(`${u.key.direction === 'ingress' ? 'i' : 'e'}/${u.key.identity}/${u.key.proto}/${u.key.port}/${u.key.portPrefixLen}`, u);
  if (d.defaultDenyChanged) ms.defaultDeny = { ...d.defaultDeny! };
}

test('EndpointPolicy: identity changes touch only that identity’s lane; rule changes give diffs', () => {
  const w = new World();
  w.addNamespace(ns('x'));
  const db = w.addPod(pod('x', 'db', { app: 'db' }));
  w.addPod(pod('x', 'web1', { app: 'web', v: '1' }));
  w.apply(cnp('p', 'x', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }, { toPorts: [{ ports: [{ port: '9100', protocol: 'TCP' }] }] }] }));
  const deltas: MapStateDelta[] = [];
  const ep = w.engine.addEndpoint(db.info, (d) => deltas.push(d));
  const shadow: MapState = { entries: new Map(ep.mapState.entries), defaultDeny: { ...ep.mapState.defaultDeny } };
  const before = ep.mapState.entries.size;
  const web2 = w.addPod(pod('x', 'web2', { app: 'web', v: '2' }));
  assert.equal(deltas.length, 1);
  assert.deepEqual(deltas[0]!.upserts.map((u) => u.key), [{ direction: 'ingress', identity: web2.identity, proto: 6, port: 5432, portPrefixLen: 16 }]);
  assert.deepEqual(deltas[0]!.deletes, []);
  assert.equal(ep.mapState.entries.size, before + 1);
  w.addPod(pod('x', 'other', { app: 'other' }));
  assert.equal(deltas.length, 1, 'an identity no selector of this endpoint selects: no delta');
  w.engine.allocator.releaseSync(web2.identity);
  assert.equal(deltas.length, 2);
  assert.deepEqual(deltas[1]!.deletes.map((k) => k.identity), [web2.identity]);
  w.apply(cnp('p2', 'x', { endpointSelector: { matchLabels: { app: 'db' } }, egress: [{ toEntities: ['world'] }] }));
  assert.equal(w.engine.regenerate().size, 0, 'with onDelta, deltas go to the callback');
  const d = deltas.at(-1)!;
  assert.equal(deltas.length, 3);
  assert.equal(d.defaultDenyChanged, true);
  assert.deepEqual(d.defaultDeny, { ingress: true, egress: true });
  assert.deepEqual(d.upserts.map((u) => u.key.identity).sort((a, b) => a - b), [2, 9, 10]);
  for (const x of deltas) applyDelta(shadow, x);
  const fresh = resolve({ repository: w.engine.repository, options: w.engine.resolveOptions }, db.info);
  assert.deepEqual(diffMapStates(shadow, fresh), []);
  assert.ok(mapStatesEqual(ep.mapState, fresh));
  assert.equal(w.engine.regenerate().size, 0, 'nothing pending');
  ep.close();
});

test('EndpointPolicy: policy-map overflow is reported, never silent', () => {
  const w = new World({ maxEntries: 3 });
  w.addNamespace(ns('x'));
  const db = w.addPod(pod('x', 'db', { app: 'db' }));
  for (let i = 0; i < 5; i++) w.addPod(pod('x', `c${i}`, { app: 'client', i: String(i) }));
  w.apply(cnp('p', 'x', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }] }] }));
  const ep = new EndpointPolicy({ repository: w.engine.repository, options: w.engine.resolveOptions }, db.info);
  assert.equal(ep.overflow, true);
  assert.match(ep.issues.find((i) => i.code === 'POLICY_MAP_OVERFLOW')!.message, /needs 6 map entries, more than the policy map holds \(3\)/);
});
