import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createFlowResolver } from '../../../src/agent/flow-resolver.ts';
import { RemoteStore } from '../../../src/agent/remote-store.ts';
import type { EndpointRecord } from '../../../src/agent/endpoints.ts';

const local: EndpointRecord = {
  id: 101, identity: 50001, namespace: 'bench', pod: 'cli', labels: ['k8s:app=cli'], ip: '10.244.1.10', mac: '', netns: '', hostIfname: '', hostIfindex: 0, createdAt: '',
  workload: { kind: 'Deployment', name: 'cli' },
};

function setup() {
  const remote = new RemoteStore();
  remote.set({ ip: '10.244.2.10', identity: 50002, hostIp: '192.0.2.2', node: 'node2', namespace: 'bench', pod: 'srv' });
  let labelCalls = 0;
  const r = createFlowResolver({
    localByIp: (ip) => (ip === local.ip ? local : undefined),
    remoteEndpoint: (ip) => remote.get(ip),
    identityLabels: (id) => { labelCalls++; return id === 50002 ? ['k8s:app=srv'] : id === 50003 ? ['k8s:app=srv2'] : undefined; },
    mapState: () => undefined,
    revision: () => 1,
  });
  return { r, remote, labelCalls: () => labelCalls };
}

test('flow resolver: local endpoints by the table, one view per record', () => {
  const { r } = setup();
  const v = r.byIp('10.244.1.10')!;
  assert.deepEqual(v, { id: 101, identity: 50001, namespace: 'bench', pod: 'cli', labels: ['k8s:app=cli'], workloads: [{ kind: 'Deployment', name: 'cli' }] });
  assert.equal(r.byIp('10.244.1.10'), v);
  assert.equal(r.local(local), v);
});

test('flow resolver: a remote pod is named, its view kept while it stays and made again when it changes', () => {
  const { r, remote, labelCalls } = setup();
  const v = r.byIp('10.244.2.10')!;
  assert.deepEqual(v, { id: 0, identity: 50002, namespace: 'bench', pod: 'srv', labels: ['k8s:app=srv'] });
  assert.equal(r.byIp('10.244.2.10'), v);
  assert.equal(labelCalls(), 1);
  remote.set({ ip: '10.244.2.10', identity: 50003, hostIp: '192.0.2.2', node: 'node2', namespace: 'bench', pod: 'srv' });
  assert.deepEqual(r.byIp('10.244.2.10')!.labels, ['k8s:app=srv2']);
  // an address that is no pod
  assert.equal(r.byIp('10.244.9.9'), undefined);
});

test('flow resolver: DNS names only for addresses the FQDN cache knows; no lookup of names for the others', () => {
  const { r } = setup();
  assert.equal(r.namesForIp, undefined);
  let namesCalls = 0;
  r.setNames({ has: (ip) => ip === '198.51.100.10', names: (ip) => { namesCalls++; return ip === '198.51.100.10' ? ['api.example.com'] : []; } });
  assert.deepEqual(r.namesForIp!('198.51.100.10'), ['api.example.com']);
  assert.equal(r.namesForIp!('10.244.2.10'), undefined);
  assert.equal(namesCalls, 1);
});
