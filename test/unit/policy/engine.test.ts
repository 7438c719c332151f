/** The agent's view of the policy engine (AgentPolicy, src/policy/agent-engine.ts) as the agent's reconcile loop drives it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { PolicyImportError } from '../../../src/policy/repository.ts';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import { cnp, ns, pod } from './helpers.ts';

test('agent engine: identities, policies, endpoints, regenerate deltas, CIDR ipcache entries', () => {
  const pe = createAgentPolicyEngine();
  const x = ns('x', { team: 'blue' });
  const web = pod('x', 'web', { app: 'web' }, [{ name: 'http', port: 8080 }]);
  const db = pod('x', 'db', { app: 'db' });
  const iw = pe.allocateIdentity({ pod: web, namespace: x });
  const id = pe.allocateIdentity({ pod: db, namespace: x });
  assert.equal(iw.isNew, true);
  assert.ok(iw.labels.includes('k8s:io.cilium.k8s.namespace.labels.team=blue'));
  assert.equal(pe.allocateIdentity({ pod: web, namespace: x }).isNew, false);
  assert.equal(pe.releaseIdentity(iw.id), false);

  pe.setPolicies([cnp('db', 'x', { endpointSelector: { matchLabels: { app: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }], egress: [{ toCIDR: ['198.51.100.0/24'] }] })]);
  const ms = pe.addEndpoint({ id: 7, identity: id.id, pod: db, namespace: x });
  assert.equal(lookupMapState(ms, 'ingress', iw.id, 6, 5432).verdict, 'forward');
  assert.equal(lookupMapState(ms, 'ingress', iw.id, 6, 5433).dropReason, 133);
  const cidr = pe.ipcacheEntries();
  assert.equal(cidr.length, 1);
  assert.equal(cidr[0]!.prefix, '198.51.100.0/24');
  assert.equal(lookupMapState(ms, 'egress', cidr[0]!.identity, 6, 443).verdict, 'forward');
  assert.deepEqual(pe.identityLabels(cidr[0]!.identity), ['cidr:198.51.100.0/24', 'reserved:world']);
  assert.equal(pe.identities().find((i) => i.id === cidr[0]!.identity)?.scope, 'local');
  assert.equal(pe.identities().find((i) => i.id === 1)?.scope, 'reserved');
  assert.equal(pe.identities().find((i) => i.id === iw.id)?.references, 1);
  assert.equal(pe.regenerate().size, 0);

  // A new web pod (new identity) updates the db endpoint's map through the next regenerate.
  const web2 = pod('x', 'web2', { app: 'web', v: '2' });
  const iw2 = pe.allocateIdentity({ pod: web2, namespace: x });
  const d = pe.regenerate().get(7)!;
  assert.deepEqual(d.upserts.map((u) => u.key.identity), [iw2.id]);
  assert.equal(pe.mapState(7)!.entries.size, ms.entries.size);

  // Policies are all-or-nothing; a failing check changes nothing.
  const rev = pe.revision();
  assert.throws(() => pe.checkPolicies([cnp('bad', 'x', { endpointSelector: {}, ingress: [{ fromCIDR: ['nope'] }] })]), PolicyImportError);
  assert.throws(() => pe.setPolicies([cnp('bad', 'x', { endpointSelector: {}, ingress: [{ fromCIDR: ['nope'] }] })]), (e: unknown) => e instanceof PolicyImportError && e.issues.length === 1);
  assert.equal(pe.revision(), rev);

  // Replacing the set of policies: the CIDR identity is released, the map regenerated.
  pe.setPolicies([]);
  assert.deepEqual(pe.ipcacheEntries(), []);
  const d2 = pe.regenerate().get(7)!;
  assert.equal(d2.defaultDenyChanged, true);
  assert.deepEqual(d2.defaultDeny, { ingress: false, egress: false });
  assert.deepEqual([...pe.mapState(7)!.entries.keys()], ['i/1/0/0/0'], 'only the implicit allow-localhost entry');
  pe.removeEndpoint(7);
  assert.equal(pe.mapState(7), undefined);
});

test('agent engine: egress named ports follow the pods the agent knows', () => {
  const pe = createAgentPolicyEngine();
  const x = ns('x');
  const client = pod('x', 'client', { app: 'client' });
  const srv = pod('x', 'srv', { app: 'srv' }, [{ name: 'api', port: 7000 }]);
  const ic = pe.allocateIdentity({ pod: client, namespace: x });
  const is = pe.allocateIdentity({ pod: srv, namespace: x });
  pe.setPolicies([cnp('c', 'x', { endpointSelector: { matchLabels: { app: 'client' } }, egress: [{ toEndpoints: [{ matchLabels: { app: 'srv' } }], toPorts: [{ ports: [{ port: 'api', protocol: 'TCP' }] }] }] })]);
  pe.addEndpoint({ id: 1, identity: ic.id, pod: client, namespace: x });
  assert.equal(lookupMapState(pe.mapState(1)!, 'egress', is.id, 6, 7000).dropReason, 133, 'srv not known yet: its named port does not resolve');
  pe.addEndpoint({ id: 2, identity: is.id, pod: srv, namespace: x });
  const d = pe.regenerate();
  assert.ok(d.get(1)?.upserts.some((u) => u.key.identity === is.id && u.key.port === 7000));
  assert.equal(lookupMapState(pe.mapState(1)!, 'egress', is.id, 6, 7000).verdict, 'forward');
});
