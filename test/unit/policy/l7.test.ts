import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { L7Policy } from '../../../src/policy/types.ts';
import { decideDNS, decideHTTP, decideSNI, httpRuleMatches } from '../../../src/policy/l7.ts';
import { matchesSelector as dnsNameMatches, matchNameToRegex, matchPatternToRegex } from '../../../src/fqdn/matchpattern.ts';

const req = (method: string, path: string, host = 'api.local', headers: Record<string, string | string[]> = {}) => ({ method, path, host, headers });

test('HTTP rules: RE2 full-string match on method, path (query included), host', () => {
  const table: [Parameters<typeof httpRuleMatches>[0], ReturnType<typeof req>, boolean][] = [
    [{}, req('GET', '/'), true],
    [{ method: 'GET' }, req('GET', '/'), true],
    [{ method: 'GET' }, req('HEAD', '/'), false],
    [{ method: 'GET|HEAD' }, req('HEAD', '/'), true],
    [{ method: 'G' }, req('GET', '/'), false],
    [{ path: '/public' }, req('GET', '/public'), true],
    [{ path: '/public' }, req('GET', '/public/'), false],
    [{ path: '/public' }, req('GET', '/public?x=1'), false],
    [{ path: '/public(\\?.*)?' }, req('GET', '/public?x=1'), true],
    [{ path: '/v1/.*' }, req('POST', '/v1/chat/completions'), true],
    [{ host: 'foo.bar.com' }, req('GET', '/', 'fooXbar.com'), true], // dots are regex dots
    [{ host: 'foo\\.bar\\.com' }, req('GET', '/', 'fooXbar.com'), false],
    [{ host: 'api.local' }, req('GET', '/', 'api.local:8080'), false], // host includes the port
    [{ method: 'POST', path: '/v1/chat/completions' }, req('POST', '/v1/chat/completions'), true],
    [{ method: 'POST', path: '/v1/chat/completions' }, req('POST', '/v1/embeddings'), false],
  ];
  for (const [rule, r, want] of table) assert.equal(httpRuleMatches(rule, r), want, `${JSON.stringify(rule)} ${r.method} ${r.path} ${r.host}`);
});

test('HTTP headers: presence, exact value (split at first space, trailing colon stripped), case-insensitive names', () => {
  const rule = { headers: ['X-Token: secret value', 'X-Present'] };
  assert.equal(httpRuleMatches(rule, req('GET', '/', 'h', { 'x-token': 'secret value', 'X-PRESENT': '' })), true);
  assert.equal(httpRuleMatches(rule, req('GET', '/', 'h', { 'x-token': 'secret', 'x-present': '1' })), false);
  assert.equal(httpRuleMatches(rule, req('GET', '/', 'h', { 'x-token': 'secret value' })), false);
  assert.equal(httpRuleMatches(rule, req('GET', '/', 'h', { 'x-token': ['other', 'secret value'], 'x-present': '1' })), true);
});

test('HTTP headerMatches: value, secret, mismatch actions', () => {
  const secret = (name: string) => (name === 'tok' ? 's3cret' : undefined);
  const must = { headerMatches: [{ name: 'Authorization', value: 'Bearer a' }] };
  assert.equal(httpRuleMatches(must, req('GET', '/', 'h', { authorization: 'Bearer a' })), true);
  assert.equal(httpRuleMatches(must, req('GET', '/', 'h', { authorization: 'Bearer b' })), false);
  const fromSecret = { headerMatches: [{ name: 'x-key', secret: { name: 'tok' } }] };
  assert.equal(httpRuleMatches(fromSecret, req('GET', '/', 'h', { 'x-key': 's3cret' }), { secret }), true);
  assert.equal(httpRuleMatches(fromSecret, req('GET', '/', 'h', { 'x-key': 'nope' }), { secret }), false);
  const missingSecret = { headerMatches: [{ name: 'x-key', secret: { name: 'gone' } }] };
  assert.equal(httpRuleMatches(missingSecret, req('GET', '/', 'h', { 'x-key': '' }), { secret }), false);
  const presence = { headerMatches: [{ name: 'x-id' }] };
  assert.equal(httpRuleMatches(presence, req('GET', '/', 'h', { 'x-id': 'any' })), true);
  assert.equal(httpRuleMatches(presence, req('GET', '/', 'h', {})), false);
  for (const mismatch of ['LOG', 'ADD', 'DELETE', 'REPLACE'] as const) {
    const actions: unknown[] = [];
    const rule = { headerMatches: [{ name: 'x-team', value: 'blue', mismatch }] };
    assert.equal(httpRuleMatches(rule, req('GET', '/', 'h', { 'x-team': 'red' }), {}, actions as never), true, mismatch);
    assert.deepEqual(actions, [{ action: mismatch, name: 'x-team', value: 'blue' }]);
  }
});

const policy = (perSelector: L7Policy['perSelector'], parser: L7Policy['parser'] = 'http'): L7Policy => ({ parser, perSelector });
const origins = [{ kind: 'CiliumNetworkPolicy', name: 'p', namespace: 'x', file: 'f', line: 3 }];

test('decideHTTP: per-selector entries, wildcard (null) entries, first matching rule reported', () => {
  const p = policy([
    { selector: 'a', identities: new Set([10]), http: [{ method: 'GET', path: '/a' }, { method: 'POST', path: '/a' }], origins },
    { selector: 'b', identities: new Set([11]), http: null, origins },
    { selector: 'all', identities: 'all', http: [{ path: '/health' }], origins },
  ]);
  assert.deepEqual(decideHTTP(p, 10, req('POST', '/a')), { allowed: true, selector: 'a', ruleIndex: 1, rule: { method: 'POST', path: '/a' }, origins });
  assert.equal(decideHTTP(p, 10, req('DELETE', '/a')).allowed, false);
  assert.equal(decideHTTP(p, 10, req('GET', '/health')).selector, 'all');
  assert.deepEqual(decideHTTP(p, 11, req('DELETE', '/anything')), { allowed: true, selector: 'b', ruleIndex: -1, rule: null, origins });
  assert.equal(decideHTTP(p, 12, req('GET', '/a')).allowed, false);
  assert.equal(decideHTTP(p, 12, req('GET', '/health')).allowed, true);
});

test('DNS patterns → anchored regex (spec §6.4 table)', () => {
  const table: [string, string[], string[]][] = [
    ['*.cilium.io', ['www.cilium.io', 'blog.cilium.io', 'WWW.Cilium.IO.'], ['cilium.io', 'a.b.cilium.io']],
    ['*cilium.io', ['cilium.io', 'subcilium.io', 'sub-cilium.io'], ['www.cilium.io']],
    ['sub*.cilium.io', ['sub.cilium.io', 'subdomain.cilium.io'], ['www.cilium.io', 'cilium.io']],
    ['part*ial.com', ['partial.com', 'part-extra-ial.com'], ['part.ial.com']],
    ['**.cilium.io', ['app.cilium.io', 'test.app.cilium.io'], ['cilium.io']],
    ['*', ['.', 'a.b.c', 'x'], []],
    ['**.', ['anything.at.all'], []],
    ['*.*.svc.cluster.local', ['svc.ns.svc.cluster.local.'], ['svc.cluster.local.']],
    ['a**b.com', ['ab.com', 'axxb.com'], ['a.b.com']],
  ];
  for (const [pattern, yes, no] of table) {
    for (const n of yes) assert.equal(dnsNameMatches({ matchPattern: pattern }, n), true, `${pattern} ~ ${n}`);
    for (const n of no) assert.equal(dnsNameMatches({ matchPattern: pattern }, n), false, `${pattern} !~ ${n}`);
  }
  assert.equal(matchPatternToRegex('*'), '(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)');
  assert.equal(matchPatternToRegex('*.cilium.io'), '^[-a-zA-Z0-9_]*[.]cilium[.]io[.]$');
  assert.equal(matchPatternToRegex('**.cilium.io'), '^([-a-zA-Z0-9_]+([.][-a-zA-Z0-9_]+){0,})[.]cilium[.]io[.]$');
  assert.equal(matchNameToRegex('API.openai.com'), '^api[.]openai[.]com[.]$');
  assert.equal(dnsNameMatches({ matchName: 'api.openai.com.' }, 'API.OpenAI.com'), true);
  assert.equal(dnsNameMatches({ matchName: 'api.openai.com' }, 'apixopenai.com'), false);
});

test('decideDNS and decideSNI', () => {
  const d = policy([{ selector: 'dns', identities: new Set([20]), dns: [{ matchName: 'api.openai.com' }, { matchPattern: '*.svc.cluster.local' }], origins }], 'dns');
  assert.equal(decideDNS(d, 20, 'api.openai.com.').ruleIndex, 0);
  assert.equal(decideDNS(d, 20, 'kube-dns.svc.cluster.local').allowed, true);
  assert.equal(decideDNS(d, 20, 'evil.com').allowed, false);
  assert.equal(decideDNS(d, 21, 'api.openai.com').allowed, false);
  const s = policy([{ selector: 'w', identities: 'all', serverNames: ['api.openai.com', '*.github.com'], origins }], 'tls');
  assert.equal(decideSNI(s, 2, 'api.openai.com').allowed, true);
  assert.equal(decideSNI(s, 2, 'raw.github.com').allowed, true);
  assert.equal(decideSNI(s, 2, 'a.b.github.com').allowed, false);
  assert.equal(decideSNI(s, 2, undefined).allowed, false);
  const open = policy([{ selector: 'w', identities: 'all', origins }], 'tls');
  assert.equal(decideSNI(open, 2, 'anything').allowed, true);
});
