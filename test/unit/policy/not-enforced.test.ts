/**
 * No policy that validates and does nothing (issue 14): every rule the datapath or the proxies
 * cannot enforce is rejected at validation with a coded error at its line:col and a hint, and
 * everything else of the input is still checked (all problems of all rules at once). Beside each
 * rejection stands its positive control: the nearest rule that is enforced validates and
 * translates to entries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadText } from '../../../src/api/load.ts';
import { policyCheck } from '../../../src/policy/check.ts';
import { translatePolicy } from '../../../src/policy/translate.ts';
import { formatIssue, type Issue } from '../../../src/common/errors.ts';
import type { PolicyResource } from '../../../src/api/types.ts';

const load = (text: string) => loadText(text, 'p.yaml', { policyCheck });
const codes = (text: string) => load(text).issues.map((i) => i.code);

const cnp = (spec: string) => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
  namespace: shop
spec:
  endpointSelector: {matchLabels: {app: db}}
${spec}`;
const ccnp = (spec: string) => `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: p
spec:
${spec}`;
const knp = (spec: string) => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: shop
spec:
  podSelector: {}
${spec}`;
const port = (p: string, proto = 'TCP', extra = '') => `  ingress:
  - toPorts:
    - ports: [{port: "${p}", protocol: ${proto}}]
${extra}`;

// [name, input, the codes it must produce (in file order), where the first one is (line:col)]
const REJECTED: [string, string, string[], string?][] = [
  ['kafka rules', cnp(port('9092', 'TCP', '      rules:\n        kafka: [{role: produce, topic: orders}]')), ['POLICY_KAFKA_UNSUPPORTED'], '12:9'],
  ['kafka with a bogus apiKey', cnp(port('9092', 'TCP', '      rules:\n        kafka: [{apiKey: bogus}]')), ['POLICY_KAFKA_UNSUPPORTED'], '12:9'],
  ['l7proto', cnp(port('7000', 'TCP', '      rules:\n        l7proto: r2d2\n        l7: [{cmd: READ}]')), ['POLICY_L7PROTO_UNSUPPORTED'], '12:18'],
  ['l7 without l7proto', cnp(port('7000', 'TCP', '      rules:\n        l7: [{cmd: READ}]')), ['POLICY_L7_INVALID']],
  ['host policy (nodeSelector)', ccnp('  nodeSelector: {matchLabels: {role: worker}}\n  ingress:\n  - fromEntities: [cluster]'), ['POLICY_HOST_FIREWALL_UNSUPPORTED'], '6:3'],
  ['authentication required', cnp('  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    authentication:\n      mode: required'), ['POLICY_AUTH_UNSUPPORTED'], '11:13'],
  ['cidrGroupRef (no CiliumCIDRGroup)', cnp('  egressDeny:\n  - toCIDRSet: [{cidrGroupRef: corp}]'), ['POLICY_CIDR_GROUP_UNSUPPORTED']],
  ['cidrGroupSelector', cnp('  egress:\n  - toCIDRSet: [{cidrGroupSelector: {matchLabels: {team: a}}}]'), ['POLICY_CIDR_GROUP_UNSUPPORTED']],
  ['SCTP port (the datapath reads no SCTP ports)', cnp(port('9999', 'SCTP')), ['POLICY_PROTOCOL_UNSUPPORTED'], '10:22'],
  ['NetworkPolicy SCTP port', knp('  ingress:\n  - ports: [{protocol: SCTP, port: 9999}]'), ['POLICY_PROTOCOL_UNSUPPORTED']],
  ['originatingTLS without terminatingTLS', cnp(port('443', 'TCP', '      originatingTLS: {secret: {name: ca}}\n      rules:\n        http: [{}]')), ['POLICY_TLS_UNSUPPORTED']],
  ['TLS context on DNS rules', cnp('  egress:\n  - toPorts:\n    - ports: [{port: "53", protocol: TCP}]\n      terminatingTLS: {secret: {name: s}}\n      rules:\n        dns: [{matchPattern: "*"}]'), ['POLICY_TLS_UNSUPPORTED']],
  // Every problem of a rule, not the first one only.
  ['L3 combination and a bad port in one element', cnp('  ingress:\n  - fromEndpoints: [{}]\n    fromCIDR: [10.0.0.0/8]\n    toPorts:\n    - ports: [{port: "99999", protocol: TCP}]'), ['POLICY_L3_COMBINATION', 'POLICY_PORT_INVALID']],
  ['icmps beside toPorts and a bad ICMP type', cnp('  ingress:\n  - toPorts:\n    - ports: [{port: "80", protocol: TCP}]\n    icmps: [{fields: [{type: 999}]}]'), ['POLICY_ICMP_WITH_PORTS', 'POLICY_ICMP_INVALID']],
  ['a bad port and a bad regex in one toPorts entry', cnp(port('99999', 'TCP', '      rules:\n        http: [{path: "/a(b"}]')), ['POLICY_PORT_INVALID', 'POLICY_L7_REGEX_INVALID']],
  ['a bad port beside DNS rules (no false "port 53 must be specified")', cnp('  egress:\n  - toPorts:\n    - ports: [{port: "x y", protocol: UDP}]\n      rules:\n        dns: [{matchPattern: "*"}]'), ['POLICY_PORT_INVALID']],
  ['kafka, auth and a bad CIDR in three elements', cnp('  ingress:\n  - toPorts:\n    - ports: [{port: "9092", protocol: TCP}]\n      rules: {kafka: [{}]}\n  - fromEntities: [all]\n    authentication: {mode: required}\n  - fromCIDR: [300.0.0.0/8]'), ['POLICY_KAFKA_UNSUPPORTED', 'POLICY_AUTH_UNSUPPORTED', 'POLICY_CIDR_INVALID']],
  ['shape and semantic problems together', cnp('  ingress:\n  - fromEndpoints: "x"\n  - toPorts:\n    - ports: [{port: "9092", protocol: TCP}]\n      rules: {kafka: [{}]}'), ['API_FIELD_TYPE', 'POLICY_KAFKA_UNSUPPORTED']],
  // The attacker's case of `egress:` as absent: an empty label value never widens a selector.
  ['an empty label value (null) in a selector', cnp('  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        role:'), ['API_FIELD_TYPE'], '11:14'],
  ['a bare list of Cilium rules (cilium-dbg policy import)', '[{"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]}]', ['API_CILIUM_RULE_LIST'], '1:1'],
  ['one bare Cilium rule', 'endpointSelector: {}\ningress: [{}]\n', ['API_CILIUM_RULE_LIST'], '1:1'],
];

// The enforced neighbour of each rejection: valid, and it translates to entries.
const ACCEPTED: [string, string][] = [
  ['L4 on the Kafka port', cnp(port('9092'))],
  ['HTTP rules', cnp(port('80', 'TCP', '      rules:\n        http: [{method: GET}]'))],
  ['authentication disabled', cnp('  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    authentication: {mode: disabled}')],
  ['authentication test-always-fail (enforced: every packet dropped with 189)', cnp('  ingress:\n  - fromEndpoints: [{}]\n    authentication: {mode: test-always-fail}')],
  ['CIDR set', cnp('  egressDeny:\n  - toCIDRSet: [{cidr: 10.0.0.0/8}]')],
  ['SCTP on every port', cnp(port('0', 'SCTP'))],
  ['NetworkPolicy SCTP without a port', knp('  ingress:\n  - ports: [{protocol: SCTP}]')],
  ['terminatingTLS with originatingTLS and HTTP rules', cnp('  egress:\n  - toEntities: [world]\n    toPorts:\n    - ports: [{port: "443", protocol: TCP}]\n      terminatingTLS: {secret: {name: s}}\n      originatingTLS: {secret: {name: ca}}\n      rules:\n        http: [{}]')],
  ['toServices: [{}] (valid in Cilium: selects nothing)', cnp('  ingress:\n  - fromEntities: [world]\n  egress:\n  - toServices: [{}]')],
  ['an empty YAML value is absent (`egress:`)', cnp('  egress:\n  ingressDeny:\n  ingress:\n  - fromEntities: [world]')],
];

for (const [name, text, want, at] of REJECTED) {
  test(`rejected: ${name}`, () => {
    const r = load(text);
    assert.deepEqual(r.issues.map((i) => i.code), want);
    assert.equal(r.resources.length, 0, 'nothing of a rejected file is kept');
    if (at) assert.equal(`${r.issues[0]!.line}:${r.issues[0]!.col}`, at);
    for (const i of r.issues) {
      assert.ok(i.message.length > 0 && i.line >= 1 && i.col >= 1, formatIssue(i));
      if (/UNSUPPORTED|RULE_LIST/.test(i.code)) assert.ok(i.hint, `${i.code} says what to do instead`);
    }
  });
}

for (const [name, text] of ACCEPTED) {
  test(`accepted and enforced: ${name}`, () => {
    const r = load(text);
    assert.deepEqual(r.issues, []);
    assert.equal(r.resources.length, 1);
    const t = translatePolicy(r.resources[0] as PolicyResource);
    assert.deepEqual(t.issues, []);
    assert.equal(t.rules.length, 1);
  });
}

test('toServices: [{}] selects no peer; the rule still puts the pod in egress default deny', () => {
  const r = load(cnp('  egress:\n  - toServices: [{}]'));
  const t = translatePolicy(r.resources[0] as PolicyResource);
  assert.deepEqual(t.issues, []);
  assert.deepEqual(t.rules[0]!.entries, []);
  assert.deepEqual(t.rules[0]!.defaultDeny, { ingress: false, egress: true });
});

test('an empty YAML value is absent: `egress:` adds no egress default deny; a required field left empty is still required', () => {
  const t = translatePolicy(load(cnp('  egress:\n  ingress:\n  - fromEntities: [world]')).resources[0] as PolicyResource);
  assert.deepEqual(t.rules[0]!.defaultDeny, { ingress: true, egress: false });
  const missing = load('apiVersion: v1\nkind: Namespace\nmetadata:\n  name:\n');
  assert.deepEqual(missing.issues.map((i) => [i.code, i.path.join('.')]), [['API_FIELD_REQUIRED', 'metadata.name']]);
});

test('messages never print the path twice', () => {
  const r = load(cnp('  ingress: {a: 1}\n  egress:\n  - toEndpoints: "x"\n    toPorts: [{ports: [{port: "1", protocol: TCP}]}]\n  - toCIDR: 7'));
  assert.ok(r.issues.length >= 2);
  for (const i of r.issues) {
    const dotted = i.path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('').replace(/^\./, '');
    assert.ok(!i.message.includes(dotted), `message repeats its path: ${formatIssue(i)}`);
    assert.equal(formatIssue(i).split(dotted).length - 1, 1, formatIssue(i));
  }
});

test('envelope problems are reported once, without the path in the message', () => {
  const r = load('apiversion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec: {endpointSelector: {}, ingress: [{}]}\n');
  assert.deepEqual(r.issues.map((i) => [i.code, i.path.join('.'), i.message]), [
    ['API_VERSION_MISSING', 'apiVersion', 'required field is missing'],
    ['API_FIELD_UNKNOWN', 'apiversion', 'unknown field "apiversion"'],
  ]);
});

test('every code reported here is listed in ERRORS.md', () => {
  const listed = readFileSync(join(import.meta.dirname, '../../../ERRORS.md'), 'utf8');
  for (const [, , want] of REJECTED) for (const c of want) assert.ok(listed.includes(`\`${c}\``), c);
});

// Property: whatever mix of faults a rule holds, each one is reported (with its code) and nothing
// of the policy is translated; without faults the same rule translates.
const FAULTS: Record<string, { element: string; code: string }> = {
  kafka: { element: '  - toPorts:\n    - ports: [{port: "9092", protocol: TCP}]\n      rules: {kafka: [{topic: t}]}', code: 'POLICY_KAFKA_UNSUPPORTED' },
  l7proto: { element: '  - toPorts:\n    - ports: [{port: "7000", protocol: TCP}]\n      rules: {l7proto: r2d2}', code: 'POLICY_L7PROTO_UNSUPPORTED' },
  auth: { element: '  - fromEntities: [cluster]\n    authentication: {mode: required}', code: 'POLICY_AUTH_UNSUPPORTED' },
  sctp: { element: '  - toPorts:\n    - ports: [{port: "36412", protocol: SCTP}]', code: 'POLICY_PROTOCOL_UNSUPPORTED' },
  group: { element: '  - fromCIDRSet: [{cidrGroupRef: g}]', code: 'POLICY_CIDR_GROUP_UNSUPPORTED' },
  port: { element: '  - toPorts:\n    - ports: [{port: "99999", protocol: TCP}]', code: 'POLICY_PORT_INVALID' },
  combo: { element: '  - fromEndpoints: [{}]\n    fromEntities: [world]', code: 'POLICY_L3_COMBINATION' },
};
const GOOD = ['  - fromEndpoints: [{matchLabels: {app: web}}]', '  - toPorts:\n    - ports: [{port: "80", protocol: TCP}]', '  - fromEntities: [world]', '  - fromCIDR: [192.0.2.0/24]'];

test('property: every fault of a rule is reported with its code; a rule without faults translates', () => {
  fc.assert(fc.property(
    fc.array(fc.oneof(fc.constantFrom(...Object.keys(FAULTS)), fc.constantFrom(...GOOD.map((_, i) => `good${i}`))), { minLength: 1, maxLength: 8 }),
    (parts) => {
      const elements = parts.map((p) => (p.startsWith('good') ? GOOD[Number(p.slice(4))]! : FAULTS[p]!.element));
      const r = load(cnp(`  ingress:\n${elements.join('\n')}`));
      const faults = parts.filter((p) => !p.startsWith('good'));
      const got: Issue[] = r.issues;
      assert.equal(got.length, faults.length, got.map(formatIssue).join('\n'));
      assert.deepEqual(got.map((i) => i.code), faults.map((f) => FAULTS[f]!.code));
      assert.equal(r.resources.length, faults.length ? 0 : 1);
      for (const i of got) assert.ok(i.line > 8, 'each issue points into the rule, not at the document start');
    },
  ), { numRuns: 150 });
});
