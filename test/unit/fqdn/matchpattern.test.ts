/** matchName / matchPattern (spec policy.md §6.4): table tests, then properties (fast-check). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RE2JS } from 're2js';
import {
  compileMatchName, compileMatchPattern, compileSelector, queryMatcher, selectorProblem, nameOrPatternMatcher, matchPatternProblem, matchPatternToRegex, matchesSelector, normalizeName, selectorKey,
} from '../../../src/fqdn/matchpattern.ts';

const TABLE: [string, string[], string[]][] = [
  ['*.cilium.io', ['www.cilium.io', 'blog.cilium.io', 'WWW.Cilium.IO.', 'a-b_c.cilium.io'], ['cilium.io', 'a.b.cilium.io', 'www.cilium.io.evil']],
  ['*cilium.io', ['cilium.io', 'subcilium.io', 'sub-cilium.io'], ['www.cilium.io']],
  ['sub*.cilium.io', ['sub.cilium.io', 'subdomain.cilium.io'], ['www.cilium.io', 'cilium.io']],
  ['part*ial.com', ['partial.com', 'part-extra-ial.com'], ['part.ial.com']],
  ['**.cilium.io', ['app.cilium.io', 'test.app.cilium.io', 'a.b.c.d.cilium.io'], ['cilium.io', 'xcilium.io']],
  ['*', ['.', 'a.', 'www.example.com', 'x'], []],
  ['**.', ['.', 'a.b.'], []],
  ['*.*.svc.cluster.local', ['svc.ns.svc.cluster.local.'], ['svc.cluster.local.', 'a.b.c.svc.cluster.local']],
  ['example.com.', ['example.com', 'EXAMPLE.COM.'], ['www.example.com', 'example.co']],
  ['*.example.com', ['a.example.com', 'www.example.com'], ['a.b.example.com', 'example.com']],
  ['**.example.com', ['a.example.com', 'a.b.example.com'], ['example.com']],
  ['a**b.com', ['ab.com', 'axxb.com'], ['a.b.com']],
];

for (const [pattern, yes, no] of TABLE) {
  test(`matchPattern ${pattern}`, () => {
    const m = compileMatchPattern(pattern);
    const policyM = queryMatcher({ matchPattern: pattern });
    for (const n of yes) {
      assert.equal(m(normalizeName(n)), true, `${pattern} should match ${n}`);
      assert.equal(policyM(n), true, `the decision matcher agrees on ${n}`);
    }
    for (const n of no) {
      assert.equal(m(normalizeName(n)), false, `${pattern} must not match ${n}`);
      assert.equal(policyM(n), false, `the decision matcher agrees on ${n}`);
    }
  });
}

test('matchName: exact, case-insensitive, trailing dot optional; no wildcard meaning', () => {
  const m = compileMatchName('API.OpenAI.com');
  assert.equal(m(normalizeName('api.openai.com')), true);
  assert.equal(m(normalizeName('api.openai.com.')), true);
  assert.equal(m(normalizeName('xapi.openai.com')), false);
  assert.equal(m(normalizeName('api.openai.com.evil.com')), false);
  assert.equal(matchesSelector({ matchName: 'apiXopenai.com' }, 'api.openai.com'), false, 'dots are literal');
});

test('validation: Cilium wording, length limit, both keys', () => {
  assert.match(matchPatternProblem('bad/char')!, /Invalid characters in MatchPattern/);
  assert.match(matchPatternProblem('a'.repeat(256))!, /Must be <= 255 characters long/);
  assert.equal(matchPatternProblem('*.ok-name_1.com'), undefined);
  assert.throws(() => compileSelector({ matchName: 'a.com', matchPattern: '*.com' }), /only one of MatchName or MatchPattern/);
  assert.throws(() => compileMatchPattern('a(b).com'), /Invalid characters/);
});

test('selectorKey is the fqdn: identity label key (lower case, no trailing dot)', () => {
  assert.equal(selectorKey({ matchName: 'API.openai.com.' }), 'api.openai.com');
  assert.equal(selectorKey({ matchPattern: '*.Example.com' }), '*.example.com');
  assert.equal(selectorKey({ matchPattern: '.' }), '.');
});

test('regex shape of a leading **.', () => {
  assert.equal(matchPatternToRegex('**.cilium.io'), '^([-a-zA-Z0-9_]+([.][-a-zA-Z0-9_]+){0,})[.]cilium[.]io[.]$');
});

// ---- properties ---------------------------------------------------------------------------

const label = fc.stringMatching(/^[a-z0-9][-a-z0-9_]{0,6}$/);
const name = fc.array(label, { minLength: 1, maxLength: 5 }).map((ls) => ls.join('.'));

test('property: a name matches itself as matchName and as a literal matchPattern, in any case, with or without the dot', () => {
  fc.assert(fc.property(name, fc.boolean(), fc.boolean(), (n, upper, dot) => {
    const q = normalizeName((upper ? n.toUpperCase() : n) + (dot ? '.' : ''));
    assert.equal(compileMatchName(n)(q), true);
    assert.equal(compileMatchPattern(n)(q), true);
  }), { numRuns: 300 });
});

test('property: *.<suffix> matches exactly one extra label; **.<suffix> one or more', () => {
  fc.assert(fc.property(name, fc.array(label, { minLength: 0, maxLength: 4 }), (suffix, prefix) => {
    const q = normalizeName([...prefix, suffix].join('.'));
    assert.equal(compileMatchPattern(`*.${suffix}`)(q), prefix.length === 1);
    assert.equal(compileMatchPattern(`**.${suffix}`)(q), prefix.length >= 1);
  }), { numRuns: 300 });
});

test('property: a * never crosses a dot', () => {
  fc.assert(fc.property(label, label, label, (a, b, c) => {
    const q = normalizeName(`${a}${b}.${c}.com`);
    assert.equal(compileMatchPattern(`${a}*.com`)(q), false);
    assert.equal(compileMatchPattern(`${a}*.${c}.com`)(q), true);
  }), { numRuns: 300 });
});

test('property: the compiled matcher (V8 fast path where linear) agrees with RE2 on the same regex', () => {
  const pat = fc.array(fc.oneof(label, fc.constant('*'), fc.constantFrom('a*', '*b', 'x*y')), { minLength: 1, maxLength: 4 })
    .chain((ls) => fc.boolean().map((lead) => (lead ? `**.${ls.join('.')}` : ls.join('.'))));
  fc.assert(fc.property(pat, name, (p, n) => {
    const re2 = RE2JS.compile(matchPatternToRegex(p));
    assert.equal(compileMatchPattern(p)(normalizeName(n)), re2.test(normalizeName(n)), `${p} vs ${n}`);
    assert.equal(queryMatcher({ matchPattern: p })(n), re2.test(normalizeName(n)), `decision matcher: ${p} vs ${n}`);
  }), { numRuns: 500 });
});

test('selectorProblem: exactly one of matchName/matchPattern, each valid, with the field it is about', () => {
  assert.equal(selectorProblem({ matchName: 'api.openai.com' }), undefined);
  assert.equal(selectorProblem({ matchPattern: '*.example.com' }), undefined);
  assert.deepEqual(selectorProblem({ matchName: 'a.com', matchPattern: '*.a.com' }), { message: 'only one of MatchName or MatchPattern is allowed in an FQDNSelector' });
  assert.deepEqual(selectorProblem({}), { message: 'one of matchName or matchPattern is required' });
  assert.equal(selectorProblem({ matchName: 'a..com' })!.field, 'matchName');
  assert.equal(selectorProblem({ matchPattern: 'a$.com' })!.field, 'matchPattern');
  // A long invalid name is rejected in linear time (a nested-quantifier regex would backtrack).
  const t = Date.now();
  assert.ok(selectorProblem({ matchName: `${'a'.repeat(250)}!` }));
  assert.ok(Date.now() - t < 50);
});

test('queryMatcher never throws: an invalid selector matches nothing; nameOrPatternMatcher takes SNI names', () => {
  assert.equal(queryMatcher({ matchPattern: 'a(b).com' })('ab.com'), false);
  assert.equal(nameOrPatternMatcher('*.example.com')('www.example.com'), true);
  assert.equal(nameOrPatternMatcher('*.example.com')('example.com'), false);
  assert.equal(nameOrPatternMatcher('api.openai.com')('API.openai.com.'), true);
});
