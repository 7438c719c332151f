import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabelSet, labelString, makeLabel, parseLabel, parseSourceKey } from '../../../src/labels/labels.ts';
import { LabelFilter, defaultLabelFilter } from '../../../src/labels/filter.ts';
import { compileSelector, validateSelector } from '../../../src/labels/selector.ts';

test('parseLabel: source:key=value, $reserved, missing source', () => {
  const cases: [string, string, string, string][] = [
    ['k8s:app=web', 'k8s', 'app', 'web'],
    ['app=web', 'any', 'app', 'web'],
    ['$host', 'reserved', 'host', ''],
    ['reserved:world', 'reserved', 'world', ''],
    ['k8s:app.kubernetes.io/name=api', 'k8s', 'app.kubernetes.io/name', 'api'],
    ['app=a:b', 'any', 'app', 'a:b'], // a colon after '=' belongs to the value
    ['cidr:2001-db8--0/32', 'cidr', '2001-db8--0/32', ''],
  ];
  for (const [text, source, key, value] of cases) {
    assert.deepEqual({ ...parseLabel(text) }, { source, key, value }, text);
  }
  assert.deepEqual(parseSourceKey('io.kubernetes.pod.namespace'), { source: 'any', key: 'io.kubernetes.pod.namespace' });
  assert.equal(parseLabel('app=web', 'k8s').source, 'k8s');
  assert.equal(labelString(makeLabel('reserved', 'host')), 'reserved:host');
  assert.equal(labelString(makeLabel('k8s', 'app', 'x')), 'k8s:app=x');
});

test('LabelSet: sorted, deduplicated per source:key, canonical string independent of order', () => {
  const a = LabelSet.parse(['k8s:b=2', 'k8s:a=1', 'reserved:host']);
  const b = LabelSet.parse(['reserved:host', 'k8s:a=1', 'k8s:b=2']);
  assert.equal(a.canonical, b.canonical);
  assert.ok(a.equals(b));
  assert.deepEqual(a.toStrings(), ['k8s:a=1', 'k8s:b=2', 'reserved:host']);
  const dup = LabelSet.parse(['k8s:a=1', 'k8s:a=2']);
  assert.deepEqual(dup.toStrings(), ['k8s:a=2']);
  const multi = LabelSet.parse(['k8s:app=x', 'container:app=y']);
  assert.equal(multi.size, 2);
  assert.equal(multi.byKey('app').length, 2);
  assert.equal(multi.get('k8s', 'app')?.value, 'x');
  assert.equal(multi.get('any', 'app') !== undefined, true);
  assert.ok(Object.isFrozen(a.labels));
});

test('default label filter (spec §5.3)', () => {
  const keep = (key: string, source = 'k8s') => defaultLabelFilter.keep(makeLabel(source, key, 'v'));
  const table: [string, boolean][] = [
    ['app', true],
    ['io.kubernetes.pod.namespace', true], // include beats the shorter ignore io.kubernetes
    ['io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name', true],
    ['app.kubernetes.io/name', true],
    ['io.kubernetes.container.name', false],
    ['kubernetes.io/hostname', false],
    ['pod-template-hash', false],
    ['pod-template-generation', false],
    ['controller-revision-hash', false],
    ['statefulset.kubernetes.io/pod-name', false],
    ['batch.kubernetes.io/controller-uid', false],
    ['controller-uid', false],
    ['beta.kubernetes.io/arch', false],
    ['failure-domain.beta.kubernetes.io/zone', false],
    ['k8s.io/x', false],
    ['annotation.foo', false],
    ['etcd_node', false],
    ['io.cilium.k8s.policy.serviceaccount', true],
    ['io.cilium.k8s.policy.cluster', true],
  ];
  for (const [k, want] of table) assert.equal(keep(k), want, k);
  assert.equal(keep('host', 'reserved'), true);
  // User include rules switch to allow-list mode.
  const f = LabelFilter.fromArgs(['k8s:app', '!k8s:app.internal']);
  assert.equal(f.keep(makeLabel('k8s', 'app', 'x')), true);
  assert.equal(f.keep(makeLabel('k8s', 'tier', 'x')), false);
  assert.equal(f.keep(makeLabel('k8s', 'io.kubernetes.pod.namespace', 'x')), true);
});

test('selectors: Kubernetes operator semantics, absent keys, any-source matching', () => {
  const ls = LabelSet.parse(['k8s:app=web', 'k8s:tier=fe', 'k8s:io.kubernetes.pod.namespace=prod']);
  const m = (sel: Parameters<typeof compileSelector>[0]) => compileSelector(sel).matches(ls);
  const table: [Parameters<typeof compileSelector>[0], boolean][] = [
    [{}, true],
    [{ matchLabels: { app: 'web' } }, true],
    [{ matchLabels: { 'k8s:app': 'web' } }, true],
    [{ matchLabels: { 'any:app': 'web' } }, true],
    [{ matchLabels: { 'container:app': 'web' } }, false],
    [{ matchLabels: { app: 'db' } }, false],
    [{ matchLabels: { app: 'web', tier: 'be' } }, false],
    [{ matchExpressions: [{ key: 'app', operator: 'In', values: ['db', 'web'] }] }, true],
    [{ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['db'] }] }, true],
    [{ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, false],
    [{ matchExpressions: [{ key: 'missing', operator: 'NotIn', values: ['x'] }] }, true], // absent key matches NotIn
    [{ matchExpressions: [{ key: 'missing', operator: 'DoesNotExist' }] }, true],
    [{ matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, false],
    [{ matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, true],
    [{ matchExpressions: [{ key: 'missing', operator: 'Exists' }] }, false],
    [{ matchExpressions: [{ key: 'missing', operator: 'In', values: ['x'] }] }, false],
    [{ matchLabels: { 'io.kubernetes.pod.namespace': 'prod' } }, true],
  ];
  for (const [sel, want] of table) assert.equal(m(sel), want, JSON.stringify(sel));
  assert.ok(compileSelector({ matchLabels: { $host: '' } }).matches(LabelSet.parse(['reserved:host'])));
});

test('selectors: canonical key ignores ordering and matchLabels vs In', () => {
  const a = compileSelector({ matchLabels: { app: 'web', tier: 'fe' } });
  const b = compileSelector({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['fe'] }, { key: 'app', operator: 'In', values: ['web'] }] });
  assert.equal(a.key, b.key);
  assert.notEqual(a.key, compileSelector({ matchLabels: { 'k8s:app': 'web', tier: 'fe' } }).key);
  assert.equal(compileSelector({}).key, '{}');
  assert.equal(compileSelector({}).isEmpty, true);
  const c = compileSelector({ matchExpressions: [{ key: 'a', operator: 'In', values: ['y', 'x', 'x'] }] });
  assert.deepEqual(c.requirements[0]!.values, ['x', 'y']);
});

test('validateSelector: operator/value rules and label syntax', () => {
  const bad: [Parameters<typeof validateSelector>[0], RegExp][] = [
    [{ matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }, /Required value/],
    [{ matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] }, /Forbidden/],
    [{ matchExpressions: [{ key: 'a', operator: 'Like' as 'In', values: ['x'] }] }, /not a valid label selector operator/],
    [{ matchLabels: { app: 'has space' } }, /invalid label value/],
    [{ matchLabels: { app: 'x'.repeat(64) } }, /invalid label value/],
    [{ matchLabels: { '-bad': 'x' } }, /invalid label key/],
  ];
  for (const [sel, re] of bad) {
    const problems = validateSelector(sel);
    assert.ok(problems.some((p) => re.test(p.message)), `${JSON.stringify(sel)}: ${JSON.stringify(problems)}`);
  }
  assert.deepEqual(validateSelector({ matchLabels: { 'k8s:app.kubernetes.io/name': 'api', 'reserved:host': '' } }), []);
});
