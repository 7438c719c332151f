/**
 * Token budgets through the real proxy: exhausted after exactly the tokens the responses
 * reported, shared by every replica of the identity, kept across a proxy restart (state file).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAIUsage } from '../../../../src/cli/commands/ai.ts';
import { rawExchange } from '../http/harness.ts';
import { aiPolicy, CHATBOT, parseResponses, post, startAIHarness } from './harness.ts';

const CHAT = '/v1/chat/completions';
const body = { model: 'gpt-4o-mini', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
const perCall = Math.ceil(JSON.stringify(body).length / 4) + 10;
const policy = aiPolicy('budget', { providers: [{ api: 'openai', hosts: ['api.openai.com'] }], budgets: [{ window: '1d', tokens: perCall * 3 }] });

async function call(port: number): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  const r = await rawExchange(port, post(CHAT, body), { idleMs: 200 });
  return parseResponses(r.text)[0]!;
}

test('a per-day budget of 3 calls\' tokens: three pass (charged from reported usage), the fourth gets 429 with Retry-After; replicas share it; it survives a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ai-budget-'));
  const stateFile = join(dir, 'ai-budgets.json');
  try {
    const h = await startAIHarness({ stateFile, identityLabels: () => ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'] });
    try {
      await h.apply(policy);
      assert.equal((await call(h.port)).status, 200);
      // another replica: another pod, another identity number, the same labels
      h.endpoint = { ...CHATBOT, id: 8, pod: 'chatbot-7d9f-fghij', identity: 1001 };
      assert.equal((await call(h.port)).status, 200);
      assert.equal((await call(h.port)).status, 200);
      const used = h.ai.ledger.snapshot();
      assert.equal(used.length, 1, 'one count for the identity');
      assert.equal(used[0]!.used, perCall * 3, 'charged exactly what the responses reported');
      const r = await call(h.port);
      assert.equal(r.status, 429);
      const retry = Number(r.headers['retry-after']);
      const toMidnight = (Math.floor(Date.now() / 86_400_000) + 1) * 86_400_000 - Date.now();
      assert.ok(Math.abs(retry - toMidnight / 1000) < 5, `Retry-After ${retry}s is the time to the day window's end`);
      assert.equal(r.headers['x-ratelimit-remaining-tokens'], '0');
      const err = JSON.parse(r.body) as { error: { type: string; code: string; message: string } };
      assert.deepEqual([err.error.type, err.error.code], ['tokens', 'rate_limit_exceeded']);
      assert.match(err.error.message, /Token budget reached for gpt-4o-mini under AIPolicy shop\/budget: limit \d+ tokens per 1d/);
      const dropped = h.flows.filter((f) => f.verdict === 2 && f.l7?.type === 1);
      assert.equal(dropped.length, 1);
      assert.match(dropped[0]!.Summary, /token budget \d+\/1d of AIPolicy shop\/budget exhausted/);
      // the usage view (`membrane ai usage`): the workload's calls and tokens, the identity's budget in its window
      const u = await h.ai.usage();
      assert.deepEqual(u.workloads, [{ provider: 'openai', model: 'gpt-4o-mini', namespace: 'shop', workload: 'chatbot', requests: { forwarded: 3, budget_exhausted: 1 }, promptTokens: (perCall - 10) * 3, completionTokens: 30 }]);
      assert.deepEqual(u.budgets.map((b) => ({ ...b, windowEnd: 0 })), [{ policy: 'shop/budget', unit: 'tokens', window: '1d', identity: 'k8s:app=chatbot,k8s:io.kubernetes.pod.namespace=shop', used: perCall * 3, reserved: 0, limit: perCall * 3, windowEnd: 0 }]);
      const text = formatAIUsage([{ ...u, node: 'node1' }], { now: u.budgets[0]!.windowEnd - 3_600_000 - 60_000 });
      assert.match(text, new RegExp(`^node1 +shop +chatbot +openai +gpt-4o-mini +3 +1 +${(perCall - 10) * 3} +30 +${perCall * 3}$`, 'm'));
      assert.match(text, new RegExp(`^node1 +shop/budget +app=chatbot +1d +${perCall * 3} tokens +${perCall * 3} +0 +1h1m$`, 'm'));
      assert.match(formatAIUsage([{ ...u, node: 'node1' }], { namespace: 'other' }), /^No AI API calls seen since the agents started\.\n\nNo token budget/);
    } finally {
      await h.close();
    }
    // a new proxy (the agent restarted) reads the state file
    const h2 = await startAIHarness({ stateFile, identityLabels: () => ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'] });
    try {
      await h2.apply(policy);
      assert.equal((await call(h2.port)).status, 429, 'the spent budget survived the restart');
      assert.equal(h2.upstream.length, 0);
    } finally {
      await h2.close();
    }
    const h3 = await startAIHarness({ stateFile, identityLabels: (id) => (id === 1000 ? ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'] : ['k8s:app=other']) });
    try {
      await h3.apply(policy);
      h3.endpoint = { ...CHATBOT, identity: 2000 };
      assert.equal((await call(h3.port)).status, 200, 'positive control: another identity is not charged for it');
    } finally {
      await h3.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('parallel burst: in-flight reservations stop a burst from spending far past the budget', async () => {
  const h = await startAIHarness();
  try {
    await h.apply(aiPolicy('burst', { providers: [{ api: 'openai', hosts: ['api.openai.com'] }], budgets: [{ window: '1h', tokens: perCall * 2 }] }));
    // eight calls at once on separate connections; each reserves its prompt estimate + max_tokens (= perCall)
    const results = await Promise.all(Array.from({ length: 8 }, () => rawExchange(h.port, post(CHAT, body), { idleMs: 600 })));
    const statuses = results.map((r) => parseResponses(r.text)[0]?.status).sort();
    assert.deepEqual(statuses, [200, 200, 429, 429, 429, 429, 429, 429], 'exactly the budget\'s worth passes');
    assert.equal(h.ai.ledger.snapshot()[0]!.used, perCall * 2);
  } finally {
    await h.close();
  }
});
