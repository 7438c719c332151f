import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Deployment, PolicyResource, Resource } from '../../../src/api/types.ts';
import { checkImport, formatTrace, tracePolicy } from '../../../src/policy/trace.ts';
import { ccnp, cnp, knp, ns, pod } from './helpers.ts';

const deathstar: Deployment = {
  apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'deathstar', namespace: 'default' }, source: { file: 'sw.yaml', line: 1, col: 1 },
  spec: { replicas: 2, selector: { matchLabels: { org: 'empire', class: 'deathstar' } }, template: { metadata: { labels: { org: 'empire', class: 'deathstar' } }, spec: { containers: [{ name: 'ds', image: 'docker.io/cilium/starwars', ports: [{ name: 'http', containerPort: 80 }] }] } } },
};
const rule1 = cnp('rule1', 'default', {
  endpointSelector: { matchLabels: { org: 'empire', class: 'deathstar' } },
  ingress: [{ fromEndpoints: [{ matchLabels: { org: 'empire' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'POST', path: '/v1/request-landing' }] } }] }],
}, 'sw_l3_l4_l7_policy.yaml');
const base: Resource[] = [
  ns('default'), deathstar,
  pod('default', 'tiefighter', { org: 'empire', class: 'tiefighter' }),
  pod('default', 'xwing', { org: 'alliance', class: 'xwing' }),
  rule1,
];

test('trace: Star Wars demo, L7 allowed ⇒ REDIRECTED with the rule; denied ⇒ DROPPED with 403', () => {
  const ok = tracePolicy({ resources: base, from: 'default/tiefighter', to: 'default/deathstar', port: 80, protocol: 'TCP', http: { method: 'POST', path: '/v1/request-landing', host: 'deathstar.default.svc.cluster.local' } });
  assert.equal(ok.verdict, 'REDIRECTED');
  assert.equal(ok.egress.evaluated, true);
  assert.equal(ok.egress.verdict, 'FORWARDED');
  assert.equal(ok.egress.defaultDeny, false);
  assert.equal(ok.ingress.verdict, 'REDIRECTED');
  assert.equal(ok.ingress.matchType, 'L3-L4');
  assert.deepEqual(ok.ingress.rules, [{ file: 'sw_l3_l4_l7_policy.yaml', line: rule1.source.line, policy: 'default/rule1', kind: 'CiliumNetworkPolicy' }]);
  assert.equal(ok.l7?.allowed, true);
  assert.deepEqual(ok.l7?.rule?.rule, { method: 'POST', path: '/v1/request-landing' });
  assert.match(ok.destination.name!, /^deathstar-[a-z0-9]+-[a-z0-9]+$/);
  assert.ok(['10.244.1.2', '10.244.1.3'].includes(ok.destination.ip!), 'replicas get addresses in file order');
  const denied = tracePolicy({ resources: base, from: 'tiefighter', to: 'deathstar', port: 80, protocol: 'TCP', http: { method: 'PUT', path: '/v1/exhaust-port', host: 'x' } });
  assert.equal(denied.verdict, 'DROPPED');
  assert.equal(denied.dropReason, undefined);
  assert.equal(denied.l7?.status, 403);
  assert.equal(denied.l7?.allowed, false);
  assert.equal(denied.l7?.steps.length, 1);
  const noHttp = tracePolicy({ resources: base, from: 'tiefighter', to: 'deathstar', port: 80, protocol: 'TCP' });
  assert.equal(noHttp.verdict, 'REDIRECTED');
  assert.equal(noHttp.l7?.evaluated, false);
});

test('trace: default deny drop names the policy that caused it; world and IP peers', () => {
  const x = tracePolicy({ resources: base, from: 'xwing', to: 'deathstar', port: 80, protocol: 'TCP' });
  assert.equal(x.verdict, 'DROPPED');
  assert.equal(x.dropReason, 'POLICY_DENIED');
  assert.equal(x.ingress.dropReason, 'POLICY_DENIED');
  assert.equal(x.ingress.matchType, 'none');
  assert.deepEqual(x.ingress.defaultDenyBy?.map((r) => r.policy), ['default/rule1']);
  const w = tracePolicy({ resources: base, from: 'world', to: 'default/deathstar', port: 80, protocol: 'TCP' });
  assert.equal(w.source.identity, 2);
  assert.equal(w.egress.evaluated, false);
  assert.equal(w.verdict, 'DROPPED');
  const out = tracePolicy({ resources: base, from: 'tiefighter', to: '198.51.100.7', port: 443, protocol: 'TCP' });
  assert.equal(out.verdict, 'FORWARDED');
  assert.equal(out.destination.kind, 'ip');
  assert.equal(out.ingress.evaluated, false);
  const byIP = tracePolicy({ resources: base, from: '10.244.1.4', to: 'deathstar', port: 80, protocol: 'TCP' });
  assert.equal(byIP.source.name, 'tiefighter');
  assert.match(formatTrace(x), /default deny from CiliumNetworkPolicy default\/rule1 \(sw_l3_l4_l7_policy.yaml:\d+\)/);
  assert.match(formatTrace(x), /Verdict: DROPPED \(POLICY_DENIED\)/);
});

test('trace: deny rules (POLICY_DENY), egress at the source, CIDR to an outside address, auth', () => {
  const rs: Resource[] = [
    ...base,
    cnp('no-world', 'default', { endpointSelector: { matchLabels: { class: 'tiefighter' } }, egressDeny: [{ toCIDR: ['198.51.100.0/24'] }], egress: [{ toEntities: ['all'] }] }),
    cnp('auth', 'default', { endpointSelector: { matchLabels: { class: 'xwing' } }, egress: [{ toEntities: ['world'], authentication: { mode: 'test-always-fail' } }] }),
  ];
  const d = tracePolicy({ resources: rs, from: 'tiefighter', to: '198.51.100.7', port: 443, protocol: 'TCP' });
  assert.equal(d.verdict, 'DROPPED');
  assert.equal(d.dropReason, 'POLICY_DENY');
  assert.equal(d.egress.rules[0]?.policy, 'default/no-world');
  const ok = tracePolicy({ resources: rs, from: 'tiefighter', to: '203.0.113.1', port: 443, protocol: 'TCP' });
  assert.equal(ok.verdict, 'FORWARDED');
  assert.equal(ok.egress.matchType, 'all');
  const a = tracePolicy({ resources: rs, from: 'xwing', to: '203.0.113.1', port: 443, protocol: 'TCP' });
  assert.equal(a.dropReason, 'AUTH_REQUIRED');
  // test-always-fail: authentication never succeeds, whatever the peers did.
  assert.equal(tracePolicy({ resources: rs, from: 'xwing', to: '203.0.113.1', port: 443, protocol: 'TCP', authenticated: true }).dropReason, 'AUTH_REQUIRED');
});

test('trace never explains a policy import rejects: kafka, l7proto, host policies, auth required', () => {
  const deathstar = { matchLabels: { class: 'deathstar' } };
  const rejected: [string, PolicyResource, string][] = [
    ['kafka', cnp('kafka', 'default', { endpointSelector: deathstar, ingress: [{ toPorts: [{ ports: [{ port: '9092', protocol: 'TCP' }], rules: { kafka: [{ apiKey: 'bogus' }] } }] }] }), 'POLICY_KAFKA_UNSUPPORTED'],
    ['l7proto', cnp('r2d2', 'default', { endpointSelector: deathstar, ingress: [{ toPorts: [{ ports: [{ port: '9092', protocol: 'TCP' }], rules: { l7proto: 'r2d2' } }] }] }), 'POLICY_L7PROTO_UNSUPPORTED'],
    ['host', ccnp('host', { nodeSelector: {}, ingress: [{ fromEntities: ['cluster'] }] }), 'POLICY_HOST_FIREWALL_UNSUPPORTED'],
    ['auth', cnp('auth', 'default', { endpointSelector: deathstar, ingress: [{ fromEntities: ['all'], authentication: { mode: 'required' } }] }), 'POLICY_AUTH_UNSUPPORTED'],
  ];
  // Positive control: the same files without the rejected policy trace normally.
  assert.equal(tracePolicy({ resources: base, from: 'tiefighter', to: 'deathstar', port: 9092, protocol: 'TCP' }).verdict, 'DROPPED');
  for (const [what, policy, code] of rejected) {
    assert.deepEqual(checkImport([...base, policy]).map((i) => i.code), [code], what);
    assert.throws(() => tracePolicy({ resources: [...base, policy], from: 'tiefighter', to: 'deathstar', port: 9092, protocol: 'TCP' }), (e: Error & { code?: string }) => e.code === 'POLICY_INVALID', what);
  }
});

test('trace: NetworkPolicy, ICMP, errors for unknown peers', () => {
  const rs: Resource[] = [ns('x'), pod('x', 'a', { pod: 'a' }), pod('x', 'b', { pod: 'b' }), knp('only-b', 'x', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] })];
  assert.equal(tracePolicy({ resources: rs, from: 'x/b', to: 'x/a', port: 80, protocol: 'TCP' }).verdict, 'FORWARDED');
  assert.equal(tracePolicy({ resources: rs, from: 'x/b', to: 'x/a', port: 8, protocol: 'ICMP' }).verdict, 'DROPPED');
  assert.equal(tracePolicy({ resources: rs, from: 'x/a', to: 'x/b', port: 8, protocol: 'ICMP' }).verdict, 'FORWARDED');
  assert.throws(() => tracePolicy({ resources: rs, from: 'x/nope', to: 'x/a', port: 80, protocol: 'TCP' }), (e: Error & { code?: string; hint?: string }) => e.code === 'TRACE_PEER_NOT_FOUND' && /pods in x: a, b/.test(e.hint!));
  assert.throws(() => tracePolicy({ resources: rs, from: 'x/a', to: 'x/b', port: 80, protocol: 'GRE' }), /unknown protocol/);
});

test('checkImport: per-policy problems and cross-policy L7 conflicts', () => {
  const bad = cnp('bad', 'default', { endpointSelector: {}, ingress: [{ fromCIDR: ['x'] }] });
  assert.match(checkImport([...base, bad])[0]!.message, /unable to parse CIDR/);
  const egress = (name: string, rules: { http?: object[]; dns?: object[] }) => cnp(name, 'default', { endpointSelector: { matchLabels: { class: 'tiefighter' } }, egress: [{ toPorts: [{ ports: [{ port: '53', protocol: 'TCP' }], rules }] }] });
  const issues = checkImport([...base, egress('h', { http: [{}] }), egress('d', { dns: [{ matchPattern: '*' }] })]);
  assert.equal(issues.length, 1);
  assert.match(issues[0]!.message, /cannot merge conflicting L7 parsers/);
  assert.deepEqual(checkImport(base), []);
});

test('trace: a toFQDNs peer is allowed by its rule only when the live agent says the IP was learnt for that name', async () => {
  const { fqdnIPLabels } = await import('../../../src/fqdn/name-manager.ts');
  const egress = cnp('to-openai', 'default', {
    endpointSelector: { matchLabels: { class: 'xwing' } },
    egress: [{ toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }],
  }, 'fqdn.yaml');
  const resources = [...base, egress];
  const learnt = '203.0.113.7';
  const learnedIPLabels = (ip: string) => (ip === learnt ? fqdnIPLabels(ip, ['api.openai.com']).toStrings() : undefined);
  const ok = tracePolicy({ resources, from: 'default/xwing', to: learnt, port: 443, protocol: 'TCP', learnedIPLabels });
  assert.equal(ok.verdict, 'FORWARDED', formatTrace(ok));
  assert.deepEqual(ok.egress.rules.map((r) => [r.policy, r.file]), [['default/to-openai', 'fqdn.yaml']]);
  assert.ok(ok.destination.labels.includes('fqdn:api.openai.com'), ok.destination.labels.join(' '));
  // the same name's rule, another port: still default deny
  assert.equal(tracePolicy({ resources, from: 'default/xwing', to: learnt, port: 80, protocol: 'TCP', learnedIPLabels }).verdict, 'DROPPED');
  // an address the agent never learnt for the name is the world: default deny by to-openai
  const other = tracePolicy({ resources, from: 'default/xwing', to: '203.0.113.8', port: 443, protocol: 'TCP', learnedIPLabels });
  assert.equal(other.verdict, 'DROPPED');
  assert.deepEqual(other.egress.defaultDenyBy?.map((r) => r.policy), ['default/to-openai']);
  // files alone (policy trace offline): no learnt addresses, so the world
  assert.equal(tracePolicy({ resources, from: 'default/xwing', to: learnt, port: 443, protocol: 'TCP' }).verdict, 'DROPPED');
});

test('trace: a live agent\'s identities (cluster-wide numbers, real labels) name and select the pods, whichever node traces', async () => {
  const { podIdentityLabels } = await import('../../../src/identity/labels.ts');
  const at = (p: Resource, ip: string) => ({ ...p, status: { podIP: ip } }) as Resource;
  const tie = at(pod('default', 'tiefighter', { org: 'empire', class: 'tiefighter' }), '10.244.1.5');
  const ds = at(pod('default', 'deathstar-0', { org: 'empire', class: 'deathstar' }), '10.244.2.9');
  const xw = at(pod('default', 'xwing', { org: 'alliance', class: 'xwing' }), '10.244.3.4');
  const resources: Resource[] = [ns('default'), tie, ds, xw, rule1];
  const labelsOf = (p: Resource) => podIdentityLabels({ pod: p as never, namespace: ns('default') as never }).toStrings();
  // the cluster's numbers; the first is the one the trace would take for itself (257) for another pod
  const cluster = new Map([['10.244.1.5', { id: 40001, labels: labelsOf(tie) }], ['10.244.2.9', { id: 257, labels: labelsOf(ds) }]]);
  const podIdentity = (ip: string) => cluster.get(ip);
  const http = { method: 'POST', path: '/v1/request-landing', host: 'deathstar' };
  const live = tracePolicy({ resources, from: 'default/tiefighter', to: 'default/deathstar-0', port: 80, protocol: 'TCP', http, podIdentity });
  assert.equal(live.verdict, 'REDIRECTED', formatTrace(live));
  assert.deepEqual([live.source.identity, live.destination.identity], [40001, 257]);
  assert.equal(live.ingress.key, 'i/40001/6/80/16', 'the policy key names the cluster number');
  assert.match(formatTrace(live), /tiefighter \(10\.244\.1\.5\) identity 40001 -> default\/deathstar-0 \(10\.244\.2\.9\) identity 257/);
  // a pod the agent does not know keeps a number of the trace's own, never one of the cluster's
  const x = tracePolicy({ resources, from: 'default/xwing', to: 'default/deathstar-0', port: 80, protocol: 'TCP', podIdentity });
  assert.equal(x.verdict, 'DROPPED');
  assert.ok(![40001, 257].includes(x.source.identity), String(x.source.identity));
  // the agent's labels decide, not the file's: the cluster's tiefighter is an alliance pod now
  const relabelled = new Map(cluster).set('10.244.1.5', { id: 40002, labels: labelsOf(at(pod('default', 'tiefighter', { org: 'alliance', class: 'tiefighter' }), '10.244.1.5')) });
  const r = tracePolicy({ resources, from: 'default/tiefighter', to: 'default/deathstar-0', port: 80, protocol: 'TCP', http, podIdentity: (ip) => relabelled.get(ip) });
  assert.equal(r.verdict, 'DROPPED', formatTrace(r));
  assert.ok(r.source.labels.includes('k8s:org=alliance'), r.source.labels.join(' '));
  // offline (no agent): the trace's own numbers, as before
  const off = tracePolicy({ resources, from: 'default/tiefighter', to: 'default/deathstar-0', port: 80, protocol: 'TCP', http });
  assert.equal(off.verdict, 'REDIRECTED');
  assert.ok(off.source.identity < 1000 && off.destination.identity < 1000);
});
