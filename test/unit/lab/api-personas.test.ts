import { test } from 'node:test';
import assert from 'node:assert/strict';
import { personaAnswer } from '../../../src/lab/dns/api-personas.ts';

test('api.openai.com answers chat completions, models and files in OpenAI\'s shape', () => {
  const c = personaAnswer('api.openai.com', 'POST', '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }))!;
  assert.equal(c.status, 200);
  assert.equal(c.body.object, 'chat.completion');
  assert.equal(c.body.model, 'gpt-4o');
  assert.match(String(c.body.id), /^chatcmpl-lab/);
  const choice = (c.body.choices as { message: { role: string; content: string }; finish_reason: string }[])[0]!;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.finish_reason, 'stop');
  const u = c.body.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  assert.equal(personaAnswer('api.openai.com', 'GET', '/v1/models', '')!.body.object, 'list');
  assert.deepEqual(personaAnswer('api.openai.com', 'GET', '/v1/files?purpose=x', '')!.body, { object: 'list', data: [] });
  assert.equal(personaAnswer('api.openai.com', 'DELETE', '/v1/files', '')!.status, 404);
  // Not JSON, or no model: the default model.
  assert.equal(personaAnswer('api.openai.com', 'POST', '/v1/chat/completions', '{oops')!.body.model, 'gpt-4o-mini');
});

test('api.anthropic.com answers messages in Anthropic\'s shape; other hosts and paths get the echo', () => {
  const m = personaAnswer('api.anthropic.com', 'POST', '/v1/messages', '{"model":"claude-x"}')!;
  assert.equal(m.body.type, 'message');
  assert.equal(m.body.model, 'claude-x');
  assert.equal((m.body.content as { type: string }[])[0]!.type, 'text');
  assert.equal(personaAnswer('example.com', 'POST', '/v1/chat/completions', ''), undefined);
  assert.equal(personaAnswer('api.openai.com', 'GET', '/', ''), undefined);
});
