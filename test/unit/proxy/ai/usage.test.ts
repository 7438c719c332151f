/**
 * Usage read from responses as they pass: JSON bodies and SSE streams of both providers, split
 * at every byte, never held; estimates (and saying so) when the response has no usage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { JsonCapture } from '../../../../src/proxy/ai/json-scan.ts';
import { SseReader } from '../../../../src/proxy/ai/sse.ts';
import { DocReader, UsageReader, type UsageResult } from '../../../../src/proxy/ai/usage.ts';
import { aiAnswer, type AIAnswer } from '../../../../src/lab/world-ai.ts';
import type { AIApi, AIOperation } from '../../../../src/policy/ai.ts';

/** Feeds `bytes` in pieces of `step` bytes. */
function feedAll(f: (b: Buffer, s: number, e: number) => void, bytes: Buffer, step: number): void {
  for (let i = 0; i < bytes.length; i += step) f(bytes, i, Math.min(bytes.length, i + step));
}

test('JsonCapture: values at object paths only, whatever the split; arrays, strings and escapes do not confuse it', () => {
  const doc = Buffer.from('{"id":"x","model":"gpt-4o","choices":[{"usage":{"a":1},"t":"}, \\"usage\\": {"}],"response":{"usage":{"input_tokens":5,"d":[1,{"q":2}]},"z":1},"usage":{"prompt_tokens":12,"completion_tokens":30}}');
  for (let step = 1; step <= doc.length; step++) {
    const c = new JsonCapture([['usage'], ['response', 'usage'], ['model'], ['message', 'usage']]);
    feedAll((b, s, e) => c.feed(b, s, e), doc, step);
    assert.deepEqual([c.value(0), c.value(1), c.value(2), c.value(3)], [{ prompt_tokens: 12, completion_tokens: 30 }, { input_tokens: 5, d: [1, { q: 2 }] }, 'gpt-4o', undefined], `step ${step}`);
  }
});

test('property: a usage object anywhere among other top-level fields is captured under random splits', () => {
  const filler = fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }).filter((k) => k !== 'usage'), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 });
  fc.assert(fc.property(filler, filler, fc.nat(1000), fc.nat(1000), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), (a, z, p, q, steps) => {
    const text = `{${[JSON.stringify(a).slice(1, -1), `"usage":{"prompt_tokens":${p},"completion_tokens":${q}}`, JSON.stringify(z).slice(1, -1)].filter(Boolean).join(',')}}`;
    const bytes = Buffer.from(text);
    const c = new JsonCapture([['usage']]);
    let i = 0, k = 0;
    while (i < bytes.length) { const e = Math.min(bytes.length, i + steps[k++ % steps.length]!); c.feed(bytes, i, e); i = e; }
    assert.deepEqual(c.value(0), { prompt_tokens: p, completion_tokens: q }, text);
  }), { numRuns: 300 });
});

test('SseReader: LF, CRLF and CR line ends, several data lines, comments and other fields, at every split', () => {
  const text = ': comment\r\nevent: x\r\ndata: {"usage":\r\ndata: {"a":1}}\r\n\r\nid: 7\ndata:{"usage":{"a":2}}\n\ndata: [DONE]\r\rretry: 5\ndata\n\ndata:  {"usage":{"a":3}}';
  const bytes = Buffer.from(text);
  for (let step = 1; step <= bytes.length; step++) {
    const docs: string[] = [];
    let cur = '';
    const r = new SseReader({ data: (b, s, e) => { cur += b.toString('utf8', s, e); }, event: () => { docs.push(cur); cur = ''; } });
    feedAll((b, s, e) => r.feed(b, s, e), bytes, step);
    r.finish();
    assert.deepEqual(docs, ['{"usage":\n{"a":1}}', '{"usage":{"a":2}}', '[DONE]', ' {"usage":{"a":3}}'], `step ${step}`);
    assert.equal(r.events, 4);
  }
});

test('DocReader: small documents parsed when they end, large ones read incrementally; both find the usage objects', () => {
  for (const pad of [10, 300_000]) {
    const doc = Buffer.from(JSON.stringify({ data: 'x'.repeat(pad), response: { usage: { input_tokens: 3 } }, usage: { prompt_tokens: 5 } }));
    for (const step of [1000, 65536]) {
      const got: unknown[] = [];
      const d = new DocReader((u) => got.push(u));
      feedAll((b, s, e) => d.data(b, s, e), doc, step);
      d.event();
      assert.deepEqual(got.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [{ input_tokens: 3 }, { prompt_tokens: 5 }], `pad ${pad} step ${step}`);
    }
  }
});

/** The lab's own answer (the same server the e2e tests use) as response bytes, read by a UsageReader. */
function read(api: AIApi, op: AIOperation, host: string, path: string, req: object, step: number, opts: { cut?: number } = {}): UsageResult {
  const body = JSON.stringify(req);
  const a = aiAnswer(host, 'POST', path, body) as AIAnswer;
  let bytes: Buffer;
  let ct: string;
  if (a.kind === 'json') { bytes = Buffer.from(JSON.stringify(a.body)); ct = 'application/json'; } else {
    bytes = Buffer.from(a.events.map((e) => `${e.event ? `event: ${e.event}\n` : ''}data: ${typeof e.data === 'string' ? e.data : JSON.stringify(e.data)}\n\n`).join(''));
    ct = 'text/event-stream; charset=utf-8';
  }
  if (opts.cut !== undefined) bytes = bytes.subarray(0, opts.cut);
  let out: UsageResult | undefined;
  const r = new UsageReader({ api, operation: op, startNs: process.hrtime.bigint(), requestBytes: Buffer.byteLength(body), maxTokens: (req as { max_tokens?: number }).max_tokens, onEnd: (u) => (out = u) });
  r.head(200, ct, undefined);
  feedAll((b, s, e) => r.data(b, s, e), bytes, step);
  r.end(opts.cut === undefined);
  return out!;
}

test('usage of the lab providers, JSON and streamed, at several splits: exactly what the server reported', () => {
  const msgs = { messages: [{ role: 'user', content: 'count my tokens please' }] };
  for (const step of [1, 7, 64, 100000]) {
    const chat = { model: 'gpt-4o-mini', ...msgs };
    const prompt = Math.ceil(Buffer.byteLength(JSON.stringify(chat)) / 4);
    assert.deepEqual(pick(read('openai', 'chat.completions', 'api.openai.com', '/v1/chat/completions', chat, step)), [prompt, 22, true]);
    const streamed = { ...chat, stream: true, stream_options: { include_usage: true }, max_tokens: 5 };
    assert.deepEqual(pick(read('openai', 'chat.completions', 'api.openai.com', '/v1/chat/completions', streamed, step)), [Math.ceil(Buffer.byteLength(JSON.stringify(streamed)) / 4), 5, true]);
    const resp = { model: 'gpt-4o', input: 'hi', stream: true, max_output_tokens: 9 };
    assert.deepEqual(pick(read('openai', 'responses', 'api.openai.com', '/v1/responses', resp, step)), [Math.ceil(Buffer.byteLength(JSON.stringify(resp)) / 4), 9, true]);
    const emb = { model: 'text-embedding-3-small', input: ['a', 'b'] };
    assert.deepEqual(pick(read('openai', 'embeddings', 'api.openai.com', '/v1/embeddings', emb, step)), [Math.ceil(Buffer.byteLength(JSON.stringify(emb)) / 4), 0, true]);
    const claude = { model: 'claude-sonnet-4-5', max_tokens: 12, stream: true, ...msgs };
    assert.deepEqual(pick(read('anthropic', 'messages', 'api.anthropic.com', '/v1/messages', claude, step)), [Math.ceil(Buffer.byteLength(JSON.stringify(claude)) / 4), 12, true]);
    const claudeJson = { model: 'claude-sonnet-4-5', max_tokens: 3, ...msgs };
    assert.deepEqual(pick(read('anthropic', 'messages', 'api.anthropic.com', '/v1/messages', claudeJson, step)), [Math.ceil(Buffer.byteLength(JSON.stringify(claudeJson)) / 4), 3, true]);
  }
});

function pick(u: UsageResult): [number, number, boolean] {
  return [u.promptTokens, u.completionTokens, u.reported];
}

test('no usage in the response: estimated and marked so (stream without include_usage, stream cut off, compressed body); errors count nothing', () => {
  const req = { model: 'gpt-4o-mini', stream: true, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
  const noUsage = read('openai', 'chat.completions', 'api.openai.com', '/v1/chat/completions', req, 13);
  assert.equal(noUsage.reported, false);
  // one token per event: role chunk + 10 words + finish chunk + [DONE]
  assert.equal(noUsage.completionTokens, 10, 'capped at max_tokens');
  assert.equal(noUsage.promptTokens, Math.ceil(Buffer.byteLength(JSON.stringify(req)) / 4));
  const claude = { model: 'claude-sonnet-4-5', max_tokens: 20, stream: true, messages: [] };
  const cut = read('anthropic', 'messages', 'api.anthropic.com', '/v1/messages', claude, 50, { cut: 900 });
  assert.equal(cut.reported, false, 'a cut-off Anthropic stream has only the provisional output count');
  assert.equal(cut.promptTokens, Math.ceil(Buffer.byteLength(JSON.stringify(claude)) / 4), 'the input count of message_start is kept');
  assert.ok(cut.completionTokens >= 1 && cut.completionTokens <= 20, String(cut.completionTokens));
  let out: UsageResult | undefined;
  const gz = new UsageReader({ api: 'openai', operation: 'chat.completions', startNs: 0n, requestBytes: 400, maxTokens: undefined, onEnd: (u) => (out = u) });
  gz.head(200, 'application/json', 'gzip');
  gz.data(Buffer.alloc(800, 1), 0, 800);
  gz.end(true);
  assert.deepEqual(pick(out!), [100, 200, false]);
  const err = new UsageReader({ api: 'openai', operation: 'chat.completions', startNs: 0n, requestBytes: 400, maxTokens: undefined, onEnd: (u) => (out = u) });
  err.head(429, 'application/json', undefined);
  const body = Buffer.from('{"error":{"message":"slow down","type":"requests"}}');
  err.data(body, 0, body.length);
  err.end(true);
  assert.deepEqual(pick(out!), [0, 0, false]);
});
