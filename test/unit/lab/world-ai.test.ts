/**
 * The lab's AI API hosts: the providers' shapes (ids, objects, usage), streams with the
 * providers' event sequences, usage only when OpenAI is asked for it, errors as the APIs give them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aiAnswer, type AIAnswer } from '../../../src/lab/world-ai.ts';

type Json = Record<string, unknown>;
const json = (a: AIAnswer | undefined) => { assert.equal(a?.kind, 'json'); return a as Extract<AIAnswer, { kind: 'json' }>; };
const sse = (a: AIAnswer | undefined) => { assert.equal(a?.kind, 'sse'); return a as Extract<AIAnswer, { kind: 'sse' }>; };

test('api.openai.com: chat completions, completions, responses, embeddings, models and files in OpenAI\'s shape', () => {
  const body = JSON.stringify({ model: 'gpt-4o', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
  const c = json(aiAnswer('api.openai.com', 'POST', '/v1/chat/completions', body));
  assert.equal(c.status, 200);
  assert.equal(c.body.object, 'chat.completion');
  assert.equal(c.body.model, 'gpt-4o');
  assert.match(String(c.body.id), /^chatcmpl-lab/);
  const choice = (c.body.choices as { message: { role: string; content: string }; finish_reason: string }[])[0]!;
  assert.deepEqual([choice.message.role, choice.message.content.split(' ').length, choice.finish_reason], ['assistant', 5, 'length']);
  assert.deepEqual(c.body.usage, { prompt_tokens: Math.ceil(body.length / 4), completion_tokens: 5, total_tokens: Math.ceil(body.length / 4) + 5 });
  assert.equal(json(aiAnswer('api.openai.com', 'POST', '/v1/completions', '{"model":"m","prompt":"x"}')).body.object, 'text_completion');
  const r = json(aiAnswer('api.openai.com', 'POST', '/v1/responses', '{"model":"m","input":"x","max_output_tokens":3}'));
  assert.deepEqual([r.body.object, (r.body.usage as Json).output_tokens], ['response', 3]);
  const e = json(aiAnswer('api.openai.com', 'POST', '/v1/embeddings', '{"model":"text-embedding-3-small","input":["a","b"]}'));
  assert.deepEqual([(e.body.data as unknown[]).length, (e.body.usage as Json).total_tokens], [2, Math.ceil(52 / 4)]);
  assert.equal(json(aiAnswer('api.openai.com', 'GET', '/v1/models', '')).body.object, 'list');
  assert.deepEqual(json(aiAnswer('api.openai.com', 'GET', '/v1/files?purpose=x', '')).body, { object: 'list', data: [] });
  assert.equal(json(aiAnswer('api.openai.com', 'DELETE', '/v1/files', '')).status, 404);
  assert.equal(json(aiAnswer('api.openai.com', 'POST', '/v1/chat/completions', '{oops')).status, 400);
  assert.equal(json(aiAnswer('api.openai.com', 'POST', '/v1/chat/completions', '{"messages":[]}')).status, 400);
});

test('OpenAI streams: role chunk, one word per chunk, finish chunk, the usage chunk only with include_usage, [DONE]', () => {
  const plain = sse(aiAnswer('api.openai.com', 'POST', '/v1/chat/completions', '{"model":"m","stream":true,"max_tokens":3}'));
  assert.equal(plain.events.length, 1 + 3 + 1 + 1);
  assert.ok(plain.events.slice(0, -1).every((ev) => !('usage' in (ev.data as Json))));
  assert.equal(plain.events.at(-1)!.data, '[DONE]');
  const withUsage = sse(aiAnswer('api.openai.com', 'POST', '/v1/chat/completions', '{"model":"m","stream":true,"max_tokens":3,"stream_options":{"include_usage":true}}'));
  assert.equal(withUsage.events.length, 1 + 3 + 1 + 1 + 1);
  assert.deepEqual((withUsage.events.at(-2)!.data as Json).choices, []);
  assert.equal(((withUsage.events.at(-2)!.data as Json).usage as Json).completion_tokens, 3);
  assert.equal((withUsage.events[1]!.data as Json).usage, null);
  const resp = sse(aiAnswer('api.openai.com', 'POST', '/v1/responses', '{"model":"m","stream":true,"max_output_tokens":2}'));
  assert.deepEqual(resp.events.map((e) => e.event), ['response.created', 'response.output_item.added', 'response.output_text.delta', 'response.output_text.delta', 'response.output_text.done', 'response.completed']);
});

test('api.anthropic.com: messages (max_tokens required), the Messages stream event sequence; other hosts and paths get the echo', () => {
  const m = json(aiAnswer('api.anthropic.com', 'POST', '/v1/messages', '{"model":"claude-x","max_tokens":4}'));
  assert.deepEqual([m.body.type, m.body.model, (m.body.content as { type: string }[])[0]!.type, (m.body.usage as Json).output_tokens], ['message', 'claude-x', 'text', 4]);
  assert.equal(json(aiAnswer('api.anthropic.com', 'POST', '/v1/messages', '{"model":"claude-x"}')).status, 400);
  const s = sse(aiAnswer('api.anthropic.com', 'POST', '/v1/messages', '{"model":"claude-x","max_tokens":2,"stream":true}'));
  assert.deepEqual(s.events.map((e) => e.event), ['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
  assert.deepEqual((s.events[6]!.data as Json).usage, { output_tokens: 2 });
  assert.equal(aiAnswer('example.com', 'POST', '/v1/chat/completions', ''), undefined);
  assert.equal(aiAnswer('api.openai.com', 'GET', '/', ''), undefined);
});
