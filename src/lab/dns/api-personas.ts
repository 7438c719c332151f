/**
 * What the lab's outside AI APIs answer, so that clients written for them work offline against
 * the lab: api.openai.com speaks a small part of OpenAI's REST API, api.anthropic.com of
 * Anthropic's. The answers are shaped like the real ones (ids, object types, usage) and carry no
 * real model output. Anything else gets the plain echo.
 */

export interface PersonaAnswer {
  status: number;
  body: Record<string, unknown>;
}

let seq = 0;
const id = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq++).toString(36).padStart(4, '0')}`;
const words = (s: string) => Math.max(1, Math.ceil(s.length / 4));

function modelOf(body: string, fallback: string): string {
  try {
    const m = (JSON.parse(body) as { model?: unknown }).model;
    return typeof m === 'string' && m.length < 100 ? m : fallback;
  } catch {
    return fallback;
  }
}

const REPLY = 'Hello from the membrane lab. This is not a model; the request reached the lab host.';

export function personaAnswer(host: string, method: string, path: string, body: string): PersonaAnswer | undefined {
  const p = path.split('?')[0]!;
  if (host === 'api.openai.com') {
    if (method === 'POST' && p === '/v1/chat/completions') {
      const prompt = words(body);
      const completion = words(REPLY);
      return {
        status: 200,
        body: {
          id: id('chatcmpl-lab'), object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: modelOf(body, 'gpt-4o-mini'),
          choices: [{ index: 0, message: { role: 'assistant', content: REPLY }, finish_reason: 'stop' }],
          usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
        },
      };
    }
    if (method === 'GET' && p === '/v1/models') {
      return { status: 200, body: { object: 'list', data: ['gpt-4o-mini', 'gpt-4o'].map((m) => ({ id: m, object: 'model', created: 1700000000, owned_by: 'membrane-lab' })) } };
    }
    if (method === 'GET' && p === '/v1/files') return { status: 200, body: { object: 'list', data: [] } };
    if (p.startsWith('/v1/')) return { status: 404, body: { error: { message: `Unknown request URL: ${method} ${p}.`, type: 'invalid_request_error', code: 'unknown_url' } } };
  }
  if (host === 'api.anthropic.com') {
    if (method === 'POST' && p === '/v1/messages') {
      return {
        status: 200,
        body: {
          id: id('msg_lab'), type: 'message', role: 'assistant', model: modelOf(body, 'claude-sonnet-4-5'),
          content: [{ type: 'text', text: REPLY }], stop_reason: 'end_turn', stop_sequence: null,
          usage: { input_tokens: words(body), output_tokens: words(REPLY) },
        },
      };
    }
    if (method === 'GET' && p === '/v1/models') {
      return { status: 200, body: { data: [{ type: 'model', id: 'claude-sonnet-4-5', display_name: 'Claude (lab)' }], has_more: false } };
    }
    if (p.startsWith('/v1/')) return { status: 404, body: { type: 'error', error: { type: 'not_found_error', message: `${method} ${p} not found` } } };
  }
  return undefined;
}
