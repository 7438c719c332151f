/**
 * `membrane policy trace --model`: the AIPolicies of the files decide one AI call, each decision
 * with the file:line of what decided; whether the connection reaches the HTTP proxy is said.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join, resolve } from 'node:path';
import { loadPaths, locate } from '../../../src/api/load.ts';
import { tracePolicy } from '../../../src/policy/trace.ts';
import { traceAI } from '../../../src/policy/ai-trace.ts';

const REPO = resolve(import.meta.dirname, '../../..');
const EXAMPLE = join(REPO, 'examples/ai');

test('the example: gpt-4o-mini allowed with its run-time limits, gpt-4o denied at the allow-list line, max tokens and other requests judged', async () => {
  const { resources, issues } = await loadPaths([EXAMPLE]);
  assert.deepEqual(issues, []);
  const net = tracePolicy({ resources, locate, from: 'llm/chatbot', to: '198.51.100.21', port: 80, protocol: 'TCP', http: { method: 'POST', path: '/v1/messages', host: 'api.anthropic.com' } });
  const base = { resources, locate, source: net.source, network: net };
  const ok = traceAI({ ...base, host: 'api.openai.com', model: 'gpt-4o-mini', maxTokens: 100 });
  assert.equal(ok.verdict, 'ALLOWED');
  assert.equal(ok.path, '/v1/chat/completions');
  assert.deepEqual(ok.policies[0]!.budgets, ['20000 tokens per 1d']);
  assert.deepEqual(ok.policies[0]!.rateLimits, ['20 requests per 1m']);
  const denied = traceAI({ ...base, host: 'api.openai.com', model: 'gpt-4o', maxTokens: 100 });
  assert.equal(denied.verdict, 'DENIED');
  assert.equal(denied.policies[0]!.code, 'model_not_allowed');
  assert.match(`${denied.policies[0]!.rule!.file}:${denied.policies[0]!.rule!.line}`, /examples\/ai\/ai\.yaml:\d+$/);
  assert.equal(traceAI({ ...base, host: 'api.openai.com', model: 'gpt-4o-mini-realtime-preview', maxTokens: 1 }).policies[0]!.code, 'model_denied');
  assert.equal(traceAI({ ...base, host: 'api.openai.com', model: 'gpt-4o-mini', maxTokens: 513 }).policies[0]!.code, 'max_tokens_exceeded');
  assert.equal(traceAI({ ...base, host: 'api.openai.com', model: 'gpt-4o-mini', method: 'GET', path: '/v1/models' }).policies[0]!.code, 'request_not_allowed');
  const claude = traceAI({ ...base, host: 'api.anthropic.com', model: 'claude-sonnet-4-5', maxTokens: 100 });
  assert.deepEqual([claude.verdict, claude.path, claude.policies[0]!.api], ['ALLOWED', '/v1/messages', 'anthropic']);
  assert.equal(traceAI({ ...base, host: 'example.com', model: 'gpt-4o' }).verdict, 'NOT_SELECTED');
});

test('CLI: --model prints the network trace and the AI part; --model without --http-host is an error', async () => {
  const run = promisify(execFile);
  const { stdout } = await run(join(REPO, 'bin/membrane'), ['policy', 'trace', '-f', EXAMPLE, '--from', 'llm/chatbot', '--to', '198.51.100.20', '--port', '443/TCP', '--http-host', 'api.openai.com', '--model', 'gpt-4o', '--max-tokens', '50']);
  assert.match(stdout, /AI: POST api\.openai\.com\/v1\/chat\/completions model gpt-4o\n  AIPolicy llm\/chatbot \(.*examples\/ai\/ai\.yaml:\d+\): openai chat\.completions: DENIED \(model_not_allowed\)/);
  assert.match(stdout, /AI verdict: DENIED/);
  const json = JSON.parse((await run(join(REPO, 'bin/membrane'), ['policy', 'trace', '-f', EXAMPLE, '--from', 'llm/chatbot', '--to', '198.51.100.20', '--port', '443/TCP', '--http-host', 'api.openai.com', '--model', 'gpt-4o-mini', '--max-tokens', '50', '-o', 'json'])).stdout) as { ai: { verdict: string } };
  assert.equal(json.ai.verdict, 'ALLOWED');
  const bad = await run(join(REPO, 'bin/membrane'), ['policy', 'trace', '-f', EXAMPLE, '--from', 'llm/chatbot', '--to', '198.51.100.20', '--port', '443/TCP', '--model', 'gpt-4o']).catch((e: { stderr: string; code: number }) => e);
  assert.equal((bad as { code: number }).code, 1);
  assert.match((bad as { stderr: string }).stderr, /TRACE_AI_HOST/);
});
