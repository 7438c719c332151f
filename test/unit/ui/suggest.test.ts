/**
 * Suggested policies, checked by the real trace engine: each suggestion turns exactly the traced
 * connection (or request) to allowed, and nothing next to it (another port, another pod with
 * other labels, another path or method).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadPaths, loadText, locate } from '../../../src/api/load.ts';
import type { Resource } from '../../../src/api/types.ts';
import { tracePolicy, type TraceInput } from '../../../src/policy/trace.ts';
import { suggestPolicy, regexEscape, podMatchLabels } from '../../../src/ui/suggest.ts';
import { stringify } from 'yaml';

const EX = join(import.meta.dirname, '../../../examples/starwars');

async function starwars(policy: string): Promise<Resource[]> {
  const { resources, issues } = await loadPaths([join(EX, 'http-sw-app.yaml'), join(EX, policy)]);
  assert.deepEqual(issues, []);
  const ywing = loadText(stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'ywing', namespace: 'default', labels: { org: 'alliance', class: 'ywing' } }, spec: { containers: [{ name: 'c', image: 'quay.io/cilium/json-mock:v1.3.8' }] } }), 'ywing.yaml');
  return [...resources, ...ywing.resources];
}

/** The suggestion's YAML as a user would apply it: through the loader, so it must validate. */
function withSuggestion(resources: Resource[], yaml: string): Resource[] {
  const r = loadText(yaml, 'suggested.yaml');
  assert.deepEqual(r.issues, [], 'the suggested YAML validates');
  return [...resources, ...r.resources];
}

const trace = (resources: Resource[], over: Partial<TraceInput>) => tracePolicy({ resources, locate, from: 'default/xwing', to: 'default/deathstar', port: 80, protocol: 'TCP', ...over });

test('L3/L4 default deny: the suggestion allows exactly the xwing on 80/TCP', async () => {
  const rs = await starwars('sw_l3_l4_policy.yaml');
  const before = trace(rs, {});
  assert.equal(before.verdict, 'DROPPED');
  assert.equal(before.dropReason, 'POLICY_DENIED');
  assert.deepEqual(before.ingress.defaultDenyBy?.map((r) => r.policy), ['default/rule1']);
  const s = suggestPolicy(before);
  assert.equal(s.policies.length, 1);
  const p = s.policies[0]!;
  assert.equal(p.metadata.namespace, 'default');
  assert.equal(p.metadata.name, 'allow-xwing-to-deathstar-80-tcp');
  assert.deepEqual(p.spec.endpointSelector, { matchLabels: { 'app.kubernetes.io/name': 'deathstar', class: 'deathstar', org: 'empire' } });
  const after = withSuggestion(rs, stringify(p));
  assert.equal(trace(after, {}).verdict, 'FORWARDED', 'positive control: the traced connection is allowed');
  assert.equal(trace(after, { port: 81 }).verdict, 'DROPPED', 'another port stays dropped');
  assert.equal(trace(after, { from: 'default/ywing' }).verdict, 'DROPPED', 'another alliance ship stays dropped');
  assert.equal(trace(after, { protocol: 'UDP' }).verdict, 'DROPPED', 'another protocol stays dropped');
  assert.equal(trace(after, { from: 'default/tiefighter' }).verdict, 'FORWARDED', 'what rule1 allowed still is');
});

test('L7 denial: the suggestion adds exactly PUT /v1/exhaust-port for the tiefighter', async () => {
  const rs = await starwars('sw_l3_l4_l7_policy.yaml');
  const http = { method: 'PUT', path: '/v1/exhaust-port', host: 'deathstar.default.svc.cluster.local' };
  const before = trace(rs, { from: 'default/tiefighter', http });
  assert.equal(before.verdict, 'DROPPED');
  assert.equal(before.l7?.allowed, false);
  assert.equal(before.l7?.status, 403);
  const s = suggestPolicy(before, { method: 'PUT', path: '/v1/exhaust-port' });
  assert.equal(s.policies.length, 1);
  const yaml = stringify(s.policies[0]);
  assert.match(yaml, /method: PUT/);
  const after = withSuggestion(rs, yaml);
  const ok = trace(after, { from: 'default/tiefighter', http });
  assert.equal(ok.verdict, 'REDIRECTED');
  assert.equal(ok.l7?.allowed, true, 'the request is allowed by an L7 rule');
  assert.equal(trace(after, { from: 'default/tiefighter', http: { ...http, path: '/v1/exhaust-portX' } }).l7?.allowed, false, 'a longer path stays denied');
  assert.equal(trace(after, { from: 'default/tiefighter', http: { ...http, method: 'DELETE' } }).l7?.allowed, false, 'another method stays denied');
  assert.equal(trace(after, { from: 'default/xwing', http }).verdict, 'DROPPED', 'the xwing is still dropped at L3/L4');
});

test('no suggestion where an allow cannot help: explicit deny, or nothing dropped', async () => {
  const rs = await starwars('sw_l3_l4_policy.yaml');
  const deny = loadText(stringify({
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'no-empire', namespace: 'default' },
    spec: { endpointSelector: { matchLabels: { class: 'deathstar' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { class: 'tiefighter' } }] }] },
  }), 'deny.yaml');
  assert.deepEqual(deny.issues, []);
  const r = trace([...rs, ...deny.resources], { from: 'default/tiefighter' });
  assert.equal(r.dropReason, 'POLICY_DENY');
  const s = suggestPolicy(r);
  assert.deepEqual(s.policies, []);
  assert.match(s.note, /explicit deny rule .*no-empire/);
  assert.deepEqual(suggestPolicy(trace(rs, { from: 'default/tiefighter' })).policies, []);
});

test('entities and outside addresses become toEntities / toCIDR, cross-namespace peers carry their namespace', async () => {
  const rs = await starwars('sw_l3_l4_policy.yaml');
  const world = suggestPolicy(trace(rs, { from: 'world', to: 'default/deathstar' }));
  assert.deepEqual((world.policies[0]!.spec.ingress as { fromEntities?: string[] }[])[0]!.fromEntities, ['world']);
  const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'rebels' } };
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'awing', namespace: 'rebels', labels: { class: 'awing' } }, spec: { containers: [{ name: 'c', image: 'x' }] } };
  const extra = loadText(`${stringify(ns)}---\n${stringify(pod)}`, 'rebels.yaml');
  assert.deepEqual(extra.issues, []);
  const all = [...rs, ...extra.resources];
  const s = suggestPolicy(trace(all, { from: 'rebels/awing' }));
  const from = (s.policies[0]!.spec.ingress as { fromEndpoints: { matchLabels: Record<string, string> }[] }[])[0]!.fromEndpoints[0]!.matchLabels;
  assert.deepEqual(from, { class: 'awing', 'k8s:io.kubernetes.pod.namespace': 'rebels' });
  const after = withSuggestion(all, stringify(s.policies[0]));
  assert.equal(trace(after, { from: 'rebels/awing' }).verdict, 'FORWARDED');
});

test('podMatchLabels keeps the pod\'s own labels only', () => {
  assert.deepEqual(podMatchLabels(['k8s:org=empire', 'k8s:io.kubernetes.pod.namespace=default', 'k8s:io.cilium.k8s.policy.cluster=default', 'reserved:host', 'k8s:flag']), { org: 'empire', flag: '' });
});

test('regexEscape: the escaped path matches exactly itself (property)', () => {
  fc.assert(fc.property(fc.string({ maxLength: 30 }), fc.string({ maxLength: 5 }), (s, extra) => {
    const re = new RegExp(`^(?:${regexEscape(s)})$`, 'u');
    assert.ok(re.test(s));
    if (extra) assert.equal(re.test(s + extra), false);
  }), { numRuns: 300 });
});
