/**
 * AIPolicy: validation (every problem with its code and line:col through the loader), model
 * patterns, operations by path, selection and the per-request decision.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadText } from '../../../src/api/load.ts';
import { policyCheck } from '../../../src/policy/check.ts';
import type { AIPolicy } from '../../../src/api/types.ts';
import { AIPolicySet, decideAIRequest, mayBeOperation, modelPattern, queryNamesModel, normalizeHost, parseWindow, recognizeOperation, translateAIPolicy } from '../../../src/policy/ai.ts';

const GOOD = `apiVersion: membrane.dev/v1alpha1
kind: AIPolicy
metadata: {name: chatbot, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: chatbot}}
  providers:
  - {api: openai, hosts: [api.openai.com]}
  - {api: anthropic, hosts: [api.anthropic.com]}
  models: {allow: ["gpt-4o-mini", "claude-*"], deny: ["claude-opus-*"]}
  maxTokensPerRequest: 1024
  streaming: Allow
  budgets: [{window: 1d, tokens: 100000}, {window: 1m, tokens: 5000}]
  rateLimits: [{window: 1m, requests: 60}]
`;

function compiled(text = GOOD) {
  const r = loadText(text, 'p.yaml', { policyCheck });
  assert.deepEqual(r.issues, []);
  const t = translateAIPolicy(r.resources[0] as AIPolicy);
  assert.ok(t.policy);
  return t.policy;
}

test('a valid AIPolicy loads and compiles; defaults: every model, streaming allowed, other requests denied, /v1', () => {
  const p = compiled();
  assert.equal(p.key, 'shop/chatbot');
  assert.deepEqual(p.providers.map((x) => [x.api, x.hosts, x.pathPrefix]), [['openai', ['api.openai.com'], '/v1'], ['anthropic', ['api.anthropic.com'], '/v1']]);
  assert.deepEqual(p.budgets.map((b) => [b.window.ms, b.tokens]), [[86_400_000, 100000], [60_000, 5000]]);
  const min = compiled(`apiVersion: membrane.dev/v1alpha1\nkind: AIPolicy\nmetadata: {name: m}\nspec:\n  endpointSelector: {}\n  providers: [{api: openai, hosts: [models.internal], pathPrefix: /openai/v1}]\n`);
  assert.deepEqual([min.namespace, min.allow, min.streaming, min.otherRequests, min.providers[0]!.pathPrefix], ['default', null, true, false, '/openai/v1']);
});

test('every problem at once, each with its code, YAML path and line:col', () => {
  const bad = `apiVersion: membrane.dev/v1alpha1
kind: AIPolicy
metadata: {name: bad, namespace: shop}
spec:
  endpointSelector: {matchLabels: {"bad key!": x}}
  providers:
  - api: openai
    hosts: [https://api.openai.com, api.openai.com, api.openai.com]
    pathPrefix: /v1/
  - {api: gemini, hosts: [x.example]}
  models: {allow: ["gpt 4o"], deny: [""]}
  maxTokensPerRequest: 0
  streaming: maybe
  budgets: [{window: 1 day, tokens: 10}, {window: 40d, tokens: 1}, {window: 60s, tokens: 1}, {window: 1m, tokens: 2}]
  rateLimits: [{window: 1h}]
  extra: true
`;
  const r = loadText(bad, 'bad.yaml', { policyCheck });
  assert.equal(r.resources.length, 0);
  const got = r.issues.map((i) => `${i.line}:${i.col} ${i.code} ${i.path.join('.')}`);
  // shape problems (zod) first pass; value problems need the shape to be right
  assert.deepEqual(got, [
    '10:11 API_FIELD_VALUE spec.providers.1.api',
    '12:24 API_FIELD_VALUE spec.maxTokensPerRequest',
    '13:14 API_FIELD_VALUE spec.streaming',
    '15:16 API_FIELD_REQUIRED spec.rateLimits.0.requests',
    '16:10 API_FIELD_UNKNOWN spec.extra',
  ]);
  const values = bad.replace('  - {api: gemini, hosts: [x.example]}\n', '').replace('maxTokensPerRequest: 0', 'maxTokensPerRequest: 5')
    .replace('streaming: maybe', 'streaming: Deny').replace('[{window: 1h}]', '[{window: 1h, requests: 1}]').replace('  extra: true\n', '');
  const r2 = loadText(values, 'bad.yaml', { policyCheck });
  assert.deepEqual(r2.issues.map((i) => `${i.line}:${i.col} ${i.code} ${i.path.join('.')}`), [
    '5:48 AI_SELECTOR_INVALID spec.endpointSelector.matchLabels.bad key!',
    '8:13 AI_HOST_INVALID spec.providers.0.hosts.0',
    '8:53 AI_HOST_DUPLICATE spec.providers.0.hosts.2',
    '9:17 AI_PATH_PREFIX_INVALID spec.providers.0.pathPrefix',
    '10:20 AI_MODEL_PATTERN_INVALID spec.models.allow.0',
    '10:38 AI_MODEL_PATTERN_INVALID spec.models.deny.0',
    '13:22 AI_WINDOW_INVALID spec.budgets.0.window',
    '13:51 AI_WINDOW_INVALID spec.budgets.1.window',
    '13:103 AI_WINDOW_DUPLICATE spec.budgets.3.window',
  ]);
  assert.ok(r2.issues.every((i) => i.hint), 'each value problem has a hint');
});

test('model patterns: * globs without regard to case; property: agrees with an anchored regex', () => {
  const m = (p: string, x: string) => modelPattern(p).matches(x);
  assert.equal(m('gpt-4o-mini', 'gpt-4o-mini'), true);
  assert.equal(m('gpt-4o-mini', 'GPT-4O-MINI'), true);
  assert.equal(m('gpt-4o-mini', 'gpt-4o-mini-2024'), false);
  assert.equal(m('gpt-4o*', 'gpt-4o-2024-08-06'), true);
  assert.equal(m('*-mini', 'gpt-4o-mini'), true);
  assert.equal(m('claude-*-4-*', 'claude-sonnet-4-5'), true);
  assert.equal(m('claude-*-4-*', 'claude-sonnet-3-5'), false);
  assert.equal(m('a*a', 'a'), false);
  assert.equal(m('*', ''), true);
  fc.assert(fc.property(fc.stringMatching(/^[ab*]{0,6}$/), fc.stringMatching(/^[abAB]{0,8}$/), (pat, s) => {
    const re = new RegExp(`^${pat.split('*').map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
    assert.equal(modelPattern(pat).matches(s), re.test(s), `${pat} ${s}`);
  }), { numRuns: 2000 });
});

test('windows, hosts, operations by path (POST only, exact path under the prefix, query ignored)', () => {
  assert.deepEqual([parseWindow('1m')?.ms, parseWindow('24h')?.ms, parseWindow('1d')?.ms, parseWindow('31d')?.ms], [60_000, 86_400_000, 86_400_000, 31 * 86_400_000]);
  for (const w of ['0m', '1', 'm', '1.5h', '32d', ' 1m', '1M', '01m']) assert.equal(parseWindow(w), undefined, w);
  assert.deepEqual(['API.OpenAI.com:443', 'api.openai.com.', '[::1]:80', 'x'].map(normalizeHost), ['api.openai.com', 'api.openai.com', '[::1]', 'x']);
  const p = compiled();
  const openai = p.providers[0]!, anthropic = p.providers[1]!;
  assert.equal(recognizeOperation(openai, 'POST', '/v1/chat/completions'), 'chat.completions');
  assert.equal(recognizeOperation(openai, 'POST', '/v1/chat/completions?x=1'), 'chat.completions');
  assert.equal(recognizeOperation(openai, 'POST', '/v1/responses'), 'responses');
  assert.equal(recognizeOperation(openai, 'POST', '/v1/embeddings'), 'embeddings');
  assert.equal(recognizeOperation(openai, 'POST', '/v1/completions'), 'completions');
  assert.equal(recognizeOperation(anthropic, 'POST', '/v1/messages'), 'messages');
  for (const [method, path] of [['GET', '/v1/chat/completions'], ['POST', '/v1/chat/completions/'], ['POST', '//v1/chat/completions'], ['POST', '/v1/chat/../chat/completions'],
    ['POST', '/v1/chat%2Fcompletions'], ['POST', '/V1/chat/completions'], ['POST', '/v1/messages'], ['POST', '/v1/files'], ['POST', '/v1/toString'], ['POST', '/v1/__proto__']]) {
    assert.equal(recognizeOperation(openai, method!, path!), 'other', `${method} ${path}`);
  }
  assert.equal(recognizeOperation(anthropic, 'POST', '/v1/messages/count_tokens'), 'other');
});

test('mayBeOperation: a call in a form a path-normalising server would run is seen; other paths and methods are not', () => {
  const p = compiled();
  const openai = p.providers[0]!, anthropic = p.providers[1]!;
  for (const path of ['/v1/chat/completions/', '//v1/chat/completions', '/v1/chat/../chat/completions', '/v1/chat%2Fcompletions', '/V1/CHAT/completions', '/v1/chat%252fcompletions',
    '/v1/chat/completions;a', '/v1\\embeddings', '/v1/%zz', '/v1/./responses?x']) {
    assert.equal(mayBeOperation(openai, 'POST', path), true, path);
  }
  assert.equal(mayBeOperation(openai, 'post', '/v1/chat/completions'), true);
  assert.equal(mayBeOperation(anthropic, 'POST', '/v1/messages/'), true);
  for (const [method, path] of [['GET', '/v1/chat/completions/'], ['POST', '/v1/models'], ['POST', '/v1/files'], ['POST', '/v1/batches'], ['POST', '/v2/chat/completions'], ['POST', '/v1/chat/completions/x'], ['POST', '/v1/chat/completions/..']]) {
    assert.equal(mayBeOperation(openai, method!, path!), false, `${method} ${path}`);
  }
  assert.equal(mayBeOperation(anthropic, 'POST', '/v1/messages/batches'), false);
  assert.equal(queryNamesModel('/v1/chat/completions?model=x'), true);
  assert.equal(queryNamesModel('/v1/chat/completions?a=1&%4DODEL=x'), true);
  assert.equal(queryNamesModel('/v1/chat/completions?models=1&a=model'), false);
  assert.equal(queryNamesModel('/v1/chat/completions'), false);
});

test('property: every percent-encoding, slash doubling and case of a route is seen as a possible call', () => {
  const p = compiled();
  const openai = p.providers[0]!;
  const route = '/v1/chat/completions';
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: route.length, maxLength: route.length }), (ops) => {
    let out = '';
    for (let i = 0; i < route.length; i++) {
      const c = route[i]!;
      const k = ops[i]!;
      out += k === 1 ? `%${c.charCodeAt(0).toString(16)}` : k === 2 ? c.toUpperCase() : k === 3 && c === '/' ? '//' : k === 4 && c === '/' ? '/./' : c;
    }
    return recognizeOperation(openai, 'POST', out) === 'chat.completions' || mayBeOperation(openai, 'POST', out);
  }));
});

test('decision: deny wins over allow, allow-list, streaming, max tokens (required when limited, not for embeddings)', () => {
  const p = compiled();
  const d = (model: string, o: { stream?: boolean; maxTokens?: number; op?: 'chat.completions' | 'embeddings' } = {}) =>
    decideAIRequest(p, { operation: o.op ?? 'chat.completions', model, stream: o.stream ?? false, maxTokens: 'maxTokens' in o ? o.maxTokens : 100 });
  assert.deepEqual(d('gpt-4o-mini'), { allowed: true });
  assert.deepEqual(d('Claude-Sonnet-4-5'), { allowed: true });
  assert.equal(d('claude-opus-4-1').code, 'model_denied');
  assert.deepEqual(d('claude-opus-4-1').path, ['spec', 'models', 'deny', 0]);
  assert.equal(d('gpt-4o').code, 'model_not_allowed');
  assert.match(d('gpt-4o').message!, /model "gpt-4o" is not allowed by AIPolicy shop\/chatbot/);
  assert.equal(d('gpt-4o-mini', { maxTokens: 1025 }).code, 'max_tokens_exceeded');
  assert.equal(d('gpt-4o-mini', { maxTokens: 1024 }).allowed, true);
  assert.equal(d('gpt-4o-mini', { maxTokens: undefined }).code, 'max_tokens_required');
  assert.equal(d('gpt-4o-mini', { maxTokens: undefined, op: 'embeddings' }).allowed, true);
  const noStream = compiled(GOOD.replace('streaming: Allow', 'streaming: Deny'));
  assert.equal(decideAIRequest(noStream, { operation: 'chat.completions', model: 'gpt-4o-mini', stream: true, maxTokens: 10 }).code, 'streaming_denied');
  assert.equal(decideAIRequest(noStream, { operation: 'chat.completions', model: 'gpt-4o-mini', stream: false, maxTokens: 10 }).allowed, true);
});

test('selection: by labels in the policy\'s own namespace (a namespace label in the selector cannot reach another); hosts', () => {
  const p = compiled(GOOD.replace('{matchLabels: {app: chatbot}}', '{matchLabels: {app: chatbot, "k8s:io.kubernetes.pod.namespace": other}}'));
  const set = new AIPolicySet([p]);
  const labels = ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'];
  assert.deepEqual(set.forEndpoint('shop', labels).map((x) => x.key), ['shop/chatbot']);
  assert.deepEqual(set.forEndpoint('other', ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=other']), []);
  assert.deepEqual(set.forEndpoint('shop', ['k8s:app=web']), []);
  assert.equal(set.hasHost('api.openai.com'), true);
  assert.equal(set.hasHost('example.com'), false);
  assert.equal(AIPolicySet.provider(p, ['example.com', 'api.anthropic.com'])?.api, 'anthropic');
});
