/**
 * The lab's outside AI APIs: api.openai.com speaks the part of OpenAI's REST API that membrane's
 * AI filter reads (chat completions, completions, responses, embeddings, models) and
 * api.anthropic.com the Messages API, with the real shapes (ids, object types, usage fields,
 * `stream: true` as server-sent events with the provider's own event sequence). The text is a
 * fixed sentence, not a model.
 *
 * Counts are deterministic so tests can predict them: prompt tokens = ceil(request body bytes /
 * 4); output tokens = the words of the reply, at most max_tokens (default 24). Streams send one
 * word per event, `x-lab-interval-ms` apart (default 10) after `x-lab-first-token-ms` (default 0);
 * with `x-lab-timestamps: 1` each event carries `lab_sent_at` (epoch ms, fractional).
 * OpenAI streams end with a usage chunk only when stream_options.include_usage is true, as the
 * real API does.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export const AI_HOSTS: Readonly<Record<string, 'openai' | 'anthropic'>> = Object.freeze({ 'api.openai.com': 'openai', 'api.anthropic.com': 'anthropic' });

const REPLY = 'Hello from the membrane lab. This is not a model; the request reached the lab host and every word is one token.'.split(' ');
const DEFAULT_MAX = 24;

let seq = 0;
const id = (prefix: string) => `${prefix}${Date.now().toString(36)}${(seq++).toString(36).padStart(4, '0')}`;

/** A JSON answer (the caller may add fields) or a stream this module writes. */
export type AIAnswer =
  | { kind: 'json'; status: number; body: Record<string, unknown> }
  | { kind: 'sse'; events: { event?: string; data: Record<string, unknown> | string }[]; first: number; interval: number; stamps: boolean };

interface Req {
  model?: unknown;
  stream?: unknown;
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  max_output_tokens?: unknown;
  stream_options?: { include_usage?: unknown } | null;
  input?: unknown;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

function header(req: Pick<IncomingMessage, 'headers'>, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function aiAnswer(host: string, method: string, path: string, body: string, headers: Pick<IncomingMessage, 'headers'> = { headers: {} }): AIAnswer | undefined {
  const api = AI_HOSTS[host];
  if (!api) return undefined;
  const p = path.split('?')[0]!;
  const bad = (message: string): AIAnswer => api === 'openai'
    ? { kind: 'json', status: 400, body: { error: { message, type: 'invalid_request_error', param: null, code: null } } }
    : { kind: 'json', status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message } } };
  let req: Req = {};
  if (method === 'POST') {
    try {
      req = JSON.parse(body) as Req;
      if (typeof req !== 'object' || req === null) return bad('We could not parse the JSON body of your request.');
    } catch {
      return bad('We could not parse the JSON body of your request.');
    }
  }
  const prompt = Math.max(1, Math.ceil(Buffer.byteLength(body) / 4));
  const model = typeof req.model === 'string' ? req.model : '';
  const stream = req.stream === true;
  const timing = {
    first: Number(header(headers, 'x-lab-first-token-ms') ?? 0) || 0,
    interval: Number(header(headers, 'x-lab-interval-ms') ?? 10) || 0,
    stamps: header(headers, 'x-lab-timestamps') === '1',
  };
  const created = Math.floor(Date.now() / 1000);
  if (api === 'openai') {
    if (method === 'GET' && p === '/v1/models') {
      return { kind: 'json', status: 200, body: { object: 'list', data: ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'].map((m) => ({ id: m, object: 'model', created: 1700000000, owned_by: 'membrane-lab' })) } };
    }
    if (method === 'GET' && p === '/v1/files') return { kind: 'json', status: 200, body: { object: 'list', data: [] } };
    if (method === 'POST' && (p === '/v1/chat/completions' || p === '/v1/completions' || p === '/v1/responses' || p === '/v1/embeddings')) {
      if (!model) return bad('you must provide a model parameter');
      if (p === '/v1/embeddings') {
        const inputs = Array.isArray(req.input) ? req.input.length : 1;
        return {
          kind: 'json', status: 200,
          body: { object: 'list', data: Array.from({ length: inputs }, (_, i) => ({ object: 'embedding', index: i, embedding: [0.0023, -0.0091, 0.0154, -0.0042, 0.0077, 0.0011, -0.0128, 0.0065] })), model, usage: { prompt_tokens: prompt, total_tokens: prompt } },
        };
      }
      const max = num(p === '/v1/responses' ? req.max_output_tokens : req.max_completion_tokens ?? req.max_tokens) ?? DEFAULT_MAX;
      const words = REPLY.slice(0, Math.min(max, REPLY.length));
      const text = words.join(' ');
      if (p === '/v1/responses') return responses(model, prompt, words, text, stream, created, timing);
      const chat = p === '/v1/chat/completions';
      const cid = id(chat ? 'chatcmpl-lab' : 'cmpl-lab');
      const usage = { prompt_tokens: prompt, completion_tokens: words.length, total_tokens: prompt + words.length };
      if (!stream) {
        return {
          kind: 'json', status: 200,
          body: chat
            ? { id: cid, object: 'chat.completion', created, model, system_fingerprint: 'fp_lab',
              choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: words.length < REPLY.length ? 'length' : 'stop' }], usage }
            : { id: cid, object: 'text_completion', created, model, choices: [{ text, index: 0, logprobs: null, finish_reason: words.length < REPLY.length ? 'length' : 'stop' }], usage },
        };
      }
      const withUsage = req.stream_options?.include_usage === true;
      const base = { id: cid, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model, ...(chat ? { system_fingerprint: 'fp_lab' } : {}) };
      const u = withUsage ? { usage: null } : {};
      const events: { data: Record<string, unknown> | string }[] = [];
      if (chat) events.push({ data: { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...u } });
      words.forEach((w, i) => {
        const piece = i === 0 ? w : ` ${w}`;
        events.push({ data: { ...base, choices: [chat ? { index: 0, delta: { content: piece }, logprobs: null, finish_reason: null } : { text: piece, index: 0, logprobs: null, finish_reason: null }], ...u } });
      });
      const finish = words.length < REPLY.length ? 'length' : 'stop';
      events.push({ data: { ...base, choices: [chat ? { index: 0, delta: {}, logprobs: null, finish_reason: finish } : { text: '', index: 0, logprobs: null, finish_reason: finish }], ...u } });
      if (withUsage) events.push({ data: { ...base, choices: [], usage } });
      events.push({ data: '[DONE]' });
      return { kind: 'sse', events, ...timing };
    }
    if (p.startsWith('/v1/')) return { kind: 'json', status: 404, body: { error: { message: `Unknown request URL: ${method} ${p}. Please check the URL for typos.`, type: 'invalid_request_error', param: null, code: 'unknown_url' } } };
    return undefined;
  }
  // Anthropic
  if (method === 'GET' && p === '/v1/models') {
    return { kind: 'json', status: 200, body: { data: [{ type: 'model', id: 'claude-sonnet-4-5', display_name: 'Claude (lab)', created_at: '2025-09-29T00:00:00Z' }], has_more: false, first_id: 'claude-sonnet-4-5', last_id: 'claude-sonnet-4-5' } };
  }
  if (method === 'POST' && p === '/v1/messages') {
    if (!model) return bad('model: Field required');
    const max = num(req.max_tokens);
    if (!max) return bad('max_tokens: Field required');
    const words = REPLY.slice(0, Math.min(max, REPLY.length));
    const text = words.join(' ');
    const mid = id('msg_lab');
    const stop = words.length < REPLY.length ? 'max_tokens' : 'end_turn';
    const usage0 = { input_tokens: prompt, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
    if (!stream) {
      return {
        kind: 'json', status: 200,
        body: { id: mid, type: 'message', role: 'assistant', model, content: [{ type: 'text', text }], stop_reason: stop, stop_sequence: null, usage: { ...usage0, output_tokens: words.length } },
      };
    }
    const events: { event: string; data: Record<string, unknown> }[] = [
      { event: 'message_start', data: { type: 'message_start', message: { id: mid, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage0, output_tokens: 1 } } } },
      { event: 'content_block_start', data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } },
      { event: 'ping', data: { type: 'ping' } },
    ];
    words.forEach((w, i) => events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: i === 0 ? w : ` ${w}` } } }));
    events.push(
      { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
      { event: 'message_delta', data: { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: words.length } } },
      { event: 'message_stop', data: { type: 'message_stop' } },
    );
    return { kind: 'sse', events, ...timing };
  }
  if (p.startsWith('/v1/')) return { kind: 'json', status: 404, body: { type: 'error', error: { type: 'not_found_error', message: `${method} ${p} not found` } } };
  return undefined;
}

function responses(model: string, prompt: number, words: string[], text: string, stream: boolean, created: number, timing: { first: number; interval: number; stamps: boolean }): AIAnswer {
  const rid = id('resp_lab');
  const mid = id('msg_lab');
  const usage = { input_tokens: prompt, input_tokens_details: { cached_tokens: 0 }, output_tokens: words.length, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: prompt + words.length };
  const message = { type: 'message', id: mid, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] };
  const done = { id: rid, object: 'response', created_at: created, status: 'completed', model, output: [message], usage };
  if (!stream) return { kind: 'json', status: 200, body: done };
  let n = 0;
  const events: { event: string; data: Record<string, unknown> }[] = [
    { event: 'response.created', data: { type: 'response.created', sequence_number: n++, response: { ...done, status: 'in_progress', output: [], usage: null } } },
    { event: 'response.output_item.added', data: { type: 'response.output_item.added', sequence_number: n++, output_index: 0, item: { ...message, status: 'in_progress', content: [] } } },
  ];
  for (const [i, w] of words.entries()) {
    events.push({ event: 'response.output_text.delta', data: { type: 'response.output_text.delta', sequence_number: n++, item_id: mid, output_index: 0, content_index: 0, delta: i === 0 ? w : ` ${w}` } });
  }
  events.push(
    { event: 'response.output_text.done', data: { type: 'response.output_text.done', sequence_number: n++, item_id: mid, output_index: 0, content_index: 0, text } },
    { event: 'response.completed', data: { type: 'response.completed', sequence_number: n++, response: done } },
  );
  return { kind: 'sse', events, ...timing };
}

/** Writes a stream answer: one event per write, paced as asked; resolves when done or the client left. */
export async function writeSse(res: ServerResponse, a: Extract<AIAnswer, { kind: 'sse' }>): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.flushHeaders();
  const sleep = (ms: number) => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());
  await sleep(a.first);
  for (let i = 0; i < a.events.length; i++) {
    if (res.destroyed) return;
    if (i > 0) await sleep(a.interval);
    const e = a.events[i]!;
    const data = typeof e.data === 'string' ? e.data : JSON.stringify(a.stamps ? { ...e.data, lab_sent_at: performance.timeOrigin + performance.now() } : e.data);
    res.write(`${e.event ? `event: ${e.event}\n` : ''}data: ${data}\n\n`);
  }
  res.end();
}
