import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadText as loadShapes, loadPath as loadPathShapes, locate, type LoadOptions } from '../../../src/api/load.ts';
import { policyCheck } from '../../../src/policy/check.ts';

// The loader as the CLI runs it: shapes, then the policy layer's semantic check.
const loadText = (text: string, file: string) => loadShapes(text, file, { policyCheck });
const loadPath = (path: string, opts: LoadOptions = {}) => loadPathShapes(path, { policyCheck, ...opts });

const cnp = (body: string, meta = 'name: p\n  namespace: shop') => `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  ${meta}
${body}`;

// Each case: input, expected codes (in order), and the line:col of the first issue.
const REJECTED: { name: string; text: string; codes: string[]; at?: string }[] = [
  { name: 'empty policy (neither spec nor specs)', text: cnp(''), codes: ['POLICY_EMPTY'] },
  { name: 'rule without selector', text: cnp('spec:\n  ingress: [{}]'), codes: ['POLICY_SELECTOR_MISSING'] },
  { name: 'both selectors', text: cnp('spec:\n  endpointSelector: {}\n  nodeSelector: {}\n  ingress: [{}]'), codes: ['POLICY_SELECTOR_BOTH', 'POLICY_NODE_SELECTOR_IN_CNP'] },
  { name: 'unknown field, with its line', text: cnp('spec:\n  endpointSelector: {}\n  ingres: []'), codes: ['API_FIELD_UNKNOWN'], at: '8:3' },
  { name: 'port out of range', text: cnp('spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: "70000"'), codes: ['POLICY_PORT_INVALID'], at: '11:15' },
  { name: 'bad entity', text: cnp('spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [wrold]'), codes: ['POLICY_ENTITY_INVALID'] },
  { name: 'except outside cidr', text: cnp('spec:\n  endpointSelector: {}\n  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]'), codes: ['POLICY_CIDR_INVALID'] },
  { name: 'invalid RE2 in http path', text: cnp('spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: "80", protocol: TCP}]\n      rules:\n        http: [{path: "/a(b"}]'), codes: ['POLICY_L7_REGEX_INVALID'] },
  { name: 'DNS rules on ingress', text: cnp('spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: "53", protocol: UDP}]\n      rules:\n        dns: [{matchPattern: "*"}]'), codes: ['POLICY_L7_DNS_INGRESS'] },
  { name: 'toFQDNs in deny', text: cnp('spec:\n  endpointSelector: {}\n  egressDeny:\n  - toFQDNs: [{matchName: a.com}]'), codes: ['API_FIELD_UNKNOWN'] },
  { name: 'name required', text: cnp('spec:\n  endpointSelector: {}\n  ingress: [{}]', 'namespace: shop'), codes: ['API_FIELD_REQUIRED'] },
  { name: 'bad name', text: cnp('spec:\n  endpointSelector: {}\n  ingress: [{}]', 'name: Bad_Name'), codes: ['API_NAME_INVALID'], at: '4:9' },
  { name: 'wrong apiVersion', text: 'apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}, ingress: [{}]}', codes: ['API_VERSION_UNSUPPORTED'], at: '1:13' },
  { name: 'unknown kind', text: 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}', codes: ['API_KIND_UNKNOWN'], at: '2:7' },
  { name: 'missing kind', text: 'apiVersion: v1\nmetadata: {name: a}', codes: ['API_KIND_MISSING'] },
  { name: 'not a mapping', text: '- a\n- b', codes: ['API_DOCUMENT_INVALID'] },
  { name: 'YAML syntax', text: 'a: [1, 2\n', codes: ['API_YAML_SYNTAX'] },
  { name: 'duplicate key', text: 'apiVersion: v1\nkind: Namespace\nkind: Namespace\nmetadata: {name: a}', codes: ['API_YAML_SYNTAX'], at: '3:1' },
  { name: 'NP bad protocol', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{protocol: ICMP, port: 80}]', codes: ['API_FIELD_VALUE'], at: '7:24' },
  { name: 'NP missing podSelector', text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {}', codes: ['API_FIELD_REQUIRED'] },
  { name: 'pod without containers', text: 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}', codes: ['API_FIELD_VALUE'] },
  { name: 'pod port out of range', text: 'apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}', codes: ['API_FIELD_VALUE'] },
  { name: 'deployment selector mismatch', text: 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c}]}', codes: ['API_DEPLOYMENT_SELECTOR'] },
  { name: 'secret bad base64', text: 'apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {tls.crt: "###"}', codes: ['API_SECRET_DATA_INVALID'] },
  { name: 'label value too long', text: `apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {x: ${'a'.repeat(64)}}}`, codes: ['API_LABEL_INVALID'] },
  { name: 'billion laughs', text: 'a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n', codes: ['API_YAML_SYNTAX'] },
];

for (const c of REJECTED) {
  test(`rejects: ${c.name}`, () => {
    const r = loadText(c.text, 'f.yaml');
    assert.deepEqual(r.issues.map((i) => i.code), c.codes, JSON.stringify(r.issues, null, 1));
    assert.equal(r.resources.length, 0);
    if (c.at) assert.equal(`${r.issues[0]!.line}:${r.issues[0]!.col}`, c.at);
    for (const i of r.issues) assert.ok(i.line >= 1 && i.col >= 1 && i.file === 'f.yaml');
  });
}

test('all errors of a file at once, across documents, in line order', () => {
  const text = [
    cnp('spec:\n  endpointSelector: {}\n  ingres: []'),
    'apiVersion: v1\nkind: Widget\nmetadata: {name: w}',
    cnp('spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [wrold]', 'name: q'),
  ].join('\n---\n');
  const r = loadText(text, 'f.yaml');
  assert.deepEqual(r.issues.map((i) => i.code), ['API_FIELD_UNKNOWN', 'API_KIND_UNKNOWN', 'POLICY_ENTITY_INVALID']);
  const lines = r.issues.map((i) => i.line);
  assert.deepEqual(lines, [...lines].sort((a, b) => a - b));
});

test('accepts the quickstart and defaults namespaces; ports become strings; cluster-scoped kinds have none', async () => {
  const r = await loadPath('examples/quickstart');
  assert.deepEqual(r.issues, []);
  const ns = r.resources.find((x) => x.kind === 'Namespace')!;
  assert.equal(ns.metadata.namespace, undefined);
  const pod = loadText('apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x, resources: {limits: {cpu: 1}}}]}', 'p.yaml');
  assert.deepEqual(pod.issues, []);
  assert.equal(pod.resources[0]!.metadata.namespace, 'default');
  const p = loadText(cnp('spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: 80}]'), 'c.yaml');
  assert.deepEqual(p.issues, []);
  const spec = (p.resources[0] as { spec: { ingress: { toPorts: { ports: { port: unknown }[] }[] }[] } }).spec;
  assert.equal(spec.ingress[0]!.toPorts[0]!.ports[0]!.port, '80');
});

test('locate: line:col of any path inside a loaded resource', () => {
  const r = loadText(cnp('spec:\n  endpointSelector: {}\n  egress:\n  - toEndpoints:\n    - matchLabels: {app: x}\n    toPorts:\n    - ports: [{port: "80"}]'), 'l.yaml');
  assert.deepEqual(r.issues, []);
  const res = r.resources[0]!;
  assert.deepEqual(res.source, { file: 'l.yaml', line: 1, col: 1 });
  assert.deepEqual(locate(res, ['spec', 'egress', 0]), { line: 9, col: 5 });
  assert.deepEqual(locate(res, ['spec', 'egress', 0, 'toPorts']), { line: 11, col: 5 });
  // A missing field points at its nearest present parent.
  assert.deepEqual(locate(res, ['spec', 'egress', 0, 'nope', 3]), { line: 9, col: 5 });
});

test('List kind expands to its items; duplicates across files are reported', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mbr-load-'));
  try {
    await mkdir(join(dir, 'sub'));
    await writeFile(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n');
    await writeFile(join(dir, 'sub', 'b.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } }));
    await writeFile(join(dir, 'README.md'), '# not yaml');
    const r = await loadPath(dir);
    assert.deepEqual(r.resources.map((x) => x.metadata.name), ['a', 'b']);
    assert.deepEqual(r.issues.map((i) => i.code), ['API_DUPLICATE']);
    assert.match(r.issues[0]!.message, /a\.yaml:4/);
    const missing = await loadPath(join(dir, 'nope.yaml'));
    assert.deepEqual(missing.issues.map((i) => i.code), ['API_FILE_NOT_FOUND']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Property: whatever the generator makes, the loader returns (never throws), and every failure
// is a coded issue pointing into the file.
const scalar = fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.boolean(), fc.constant(null), fc.constantFrom('80', 'TCP', 'world', '10.0.0.0/8', '*', '{', ':', '- x'));
const key = fc.constantFrom('apiVersion', 'kind', 'metadata', 'name', 'namespace', 'spec', 'specs', 'endpointSelector', 'matchLabels',
  'ingress', 'egress', 'ingressDeny', 'toPorts', 'ports', 'port', 'protocol', 'rules', 'http', 'dns', 'toFQDNs', 'matchPattern',
  'fromEndpoints', 'toEntities', 'toCIDRSet', 'cidr', 'except', 'icmps', 'fields', 'type', 'podSelector', 'containers', 'x');
const tree = fc.letrec((tie) => ({
  node: fc.oneof({ maxDepth: 6 }, scalar, fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(key, tie('node'), { maxKeys: 5 })),
})).node;
const envelope = fc.record({
  apiVersion: fc.constantFrom('cilium.io/v2', 'networking.k8s.io/v1', 'v1', 'apps/v1', 'x'),
  kind: fc.constantFrom('CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'NetworkPolicy', 'Pod', 'Deployment', 'Service', 'Secret', 'Namespace', 'List', 'Nope'),
  metadata: fc.oneof(fc.record({ name: fc.constantFrom('a', 'b-1', 'Bad', ''), namespace: fc.constantFrom('default', 'x', 'Y') }), tree),
  spec: tree,
}, { requiredKeys: [] });

test('property: any generated YAML loads or fails with coded issues, never crashes', () => {
  fc.assert(fc.property(fc.array(fc.oneof(envelope, tree), { minLength: 1, maxLength: 3 }), fc.boolean(), (docs, asJson) => {
    const text = asJson ? docs.map((d) => JSON.stringify(d)).join('\n---\n') : docs.map((d) => toYaml(d)).join('\n---\n');
    const r = loadText(text, 'gen.yaml');
    for (const i of r.issues) {
      assert.match(i.code, /^(API|POLICY)_[A-Z0-9_]+$/);
      assert.ok(i.line >= 1 && i.col >= 1, JSON.stringify(i));
      assert.equal(i.file, 'gen.yaml');
    }
  }), { numRuns: 400 });
});

test('property: arbitrary text never crashes the loader', () => {
  fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => {
    const r = loadText(s, 't.yaml');
    assert.ok(Array.isArray(r.issues) && Array.isArray(r.resources));
  }), { numRuns: 500 });
});

function toYaml(v: unknown, indent = ''): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return v.length === 0 ? '[]' : v.map((x) => `\n${indent}- ${toYaml(x, indent + '  ')}`).join('');
  const e = Object.entries(v);
  return e.length === 0 ? '{}' : e.map(([k, x]) => `\n${indent}${k}: ${toYaml(x, indent + '  ')}`).join('');
}

test('without a policy check the loader checks shapes only (api sits below policy)', () => {
  const text = cnp('spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [wrold]');
  assert.deepEqual(loadShapes(text, 'f.yaml').issues, []);
  assert.deepEqual(loadText(text, 'f.yaml').issues.map((i) => i.code), ['POLICY_ENTITY_INVALID']);
});

test('a field of the wrong type is API_FIELD_TYPE, a missing one API_FIELD_REQUIRED', () => {
  const wrong = loadShapes('apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: [1]}\n', 'f.yaml').issues;
  assert.deepEqual(wrong.map((i) => [i.code, i.message]), [['API_FIELD_TYPE', 'must be a mapping, not a list']]);
  const missing = loadShapes('apiVersion: v1\nkind: Namespace\nmetadata: {labels: {a: b}}\n', 'f.yaml').issues;
  assert.deepEqual(missing.map((i) => i.code), ['API_FIELD_REQUIRED']);
});
