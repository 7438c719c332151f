/**
 * The AI filter in the real HTTP proxy on loopback, in front of the lab's AI API server: each
 * feature beside the attacker's attempt to get around it, with exact statuses, error shapes,
 * records and what the upstream did (or did not) receive.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { toJson, createRegistry } from '@bufbuild/protobuf';
import { StructSchema } from '@bufbuild/protobuf/wkt';
import { FlowSchema } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { rawExchange } from '../http/harness.ts';
import { aiPolicy, parseResponses, post, startAIHarness, type AIHarness } from './harness.ts';

let h: AIHarness;
before(async () => { h = await startAIHarness({ maxBodyBytes: 4096 }); });
after(async () => { await h.close(); });

const CHAT = '/v1/chat/completions';
const msgs = [{ role: 'user', content: 'hello there' }];
const base = { providers: [{ api: 'openai', hosts: ['api.openai.com'] }, { api: 'anthropic', hosts: ['api.anthropic.com'] }], models: { allow: ['gpt-4o-mini', 'claude-sonnet-*'], deny: ['gpt-4o-mini-realtime*'] } };

beforeEach(async () => {
  await h.apply(aiPolicy('chat', base));
  h.records.length = 0;
  h.flows.length = 0;
  h.upstream.length = 0;
  h.dstNames = [];
});

async function exchange(payload: string | Buffer | (string | Buffer)[], opts: { gapMs?: number; idleMs?: number } = {}) {
  const r = await rawExchange(h.port, payload, { idleMs: 300, ...opts });
  return { replies: parseResponses(r.text), closed: r.closed, text: r.text };
}

test('allowed model passes: the upstream gets the same body, Accept-Encoding identity; flows carry provider, model and reported tokens', async () => {
  const body = { model: 'gpt-4o-mini', messages: msgs };
  const { replies } = await exchange(post(CHAT, body));
  assert.equal(replies[0]!.status, 200);
  assert.equal((JSON.parse(replies[0]!.body) as { object: string }).object, 'chat.completion');
  assert.equal(h.upstream.length, 1);
  assert.equal(h.upstream[0]!.body, JSON.stringify(body));
  assert.equal(h.upstream[0]!.headers['accept-encoding'], 'identity');
  const prompt = Math.ceil(JSON.stringify(body).length / 4);
  const [req, res] = h.records;
  assert.deepEqual([req!.type, req!.verdict, req!.ai], ['request', 'forwarded', { provider: 'openai', operation: 'chat.completions', model: 'gpt-4o-mini', stream: false }]);
  assert.deepEqual({ ...res!.ai, firstByteNs: 0 }, { provider: 'openai', operation: 'chat.completions', model: 'gpt-4o-mini', stream: false, promptTokens: prompt, completionTokens: 22, usage: 'reported', firstByteNs: 0 });
  assert.match(h.flows[1]!.Summary, /^HTTP\/1\.1 200 \d+ms \(POST http:\/\/api\.openai\.com\/v1\/chat\/completions\) \[ai openai gpt-4o-mini, tokens \d+\+22\]$/);
  const json = toJson(FlowSchema, h.flows[1]!, { useProtoFieldName: true, registry: createRegistry(StructSchema) }) as { extensions: { '@type': string; value: { ai: Record<string, unknown> } } };
  assert.equal(json.extensions['@type'], 'type.googleapis.com/google.protobuf.Struct');
  assert.deepEqual({ ...json.extensions.value.ai, time_to_first_byte_ns: 0 }, {
    provider: 'openai', operation: 'chat.completions', model: 'gpt-4o-mini', stream: false, prompt_tokens: prompt, completion_tokens: 22, total_tokens: prompt + 22, usage: 'reported', time_to_first_byte_ns: 0,
  });
  const metrics = await h.registry.metrics();
  assert.match(metrics, /membrane_ai_requests_total\{provider="openai",model="gpt-4o-mini",source_namespace="shop",source_workload="chatbot",outcome="forwarded"\} \d+/);
  assert.match(metrics, /membrane_ai_tokens_total\{provider="openai",model="gpt-4o-mini",source_namespace="shop",source_workload="chatbot",direction="completion"\} \d+/);
  assert.match(metrics, /membrane_ai_time_to_first_token_seconds_count\{provider="openai",model="gpt-4o-mini"/);
});

test('denied models get 403 in the provider\'s shape, nothing reaches the upstream, the DROPPED flow names the model', async () => {
  const { replies, closed } = await exchange([post(CHAT, { model: 'gpt-4o', messages: msgs }), post(CHAT, { model: 'gpt-4o-mini-realtime-preview', messages: msgs }),
    post('/v1/messages', { model: 'claude-opus-4-1', max_tokens: 10, messages: msgs }, '', 'api.anthropic.com')]);
  assert.deepEqual(replies.map((r) => r.status), [403, 403, 403]);
  assert.equal(closed, false, 'the connection goes on after a policy 403');
  assert.deepEqual(JSON.parse(replies[0]!.body), { error: { message: 'model "gpt-4o" is not allowed by AIPolicy shop/chat', type: 'invalid_request_error', param: 'model', code: 'model_not_allowed' } });
  assert.equal(replies[0]!.headers['content-type'], 'application/json');
  assert.deepEqual((JSON.parse(replies[1]!.body) as { error: { code: string } }).error.code, 'model_denied');
  assert.deepEqual(JSON.parse(replies[2]!.body), { type: 'error', error: { type: 'permission_error', message: 'model "claude-opus-4-1" is not allowed by AIPolicy shop/chat' } });
  assert.equal(h.upstream.length, 0);
  const denied = h.flows.filter((f) => f.verdict === 2 /* DROPPED */ && f.l7?.type === 1 /* REQUEST */);
  assert.equal(denied.length, 3);
  assert.match(denied[0]!.Summary, /\[ai openai gpt-4o\] \[ai: model "gpt-4o" is not allowed by AIPolicy shop\/chat\]$/);
  assert.equal(h.records[0]!.ai?.policy, 'shop/chat');
});

test('positive control beside each evasion: the same allowed request passes split into 1-byte segments and chunked', async () => {
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: msgs });
  const bytes = Buffer.from(post(CHAT, body));
  const pieces = [...bytes].map((b) => Buffer.from([b]));
  const split = await exchange(pieces, { gapMs: 0 });
  assert.equal(split.replies[0]!.status, 200);
  const chunked = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n\r\n${[body.slice(0, 10), body.slice(10, 11), body.slice(11)].map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('')}0\r\n\r\n`;
  const c = await exchange(chunked);
  assert.equal(c.replies[0]!.status, 200);
  assert.deepEqual(h.upstream.map((u) => u.body), [body, body], 'the upstream read the body the filter judged');
  // the denied model split into segments and chunks is still denied
  const bad = JSON.stringify({ model: 'gpt-4o', messages: msgs });
  const badChunked = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n\r\n${[bad.slice(0, 5), bad.slice(5)].map((x) => `${x.length.toString(16)}\r\n${x}\r\n`).join('')}0\r\n\r\n`;
  const d = await exchange([...Buffer.from(badChunked)].map((b) => Buffer.from([b])), { gapMs: 0 });
  assert.equal(d.replies[0]!.status, 403);
  assert.equal(h.upstream.length, 2);
});

test('oversized bodies: 413 in the provider shape, the connection closes, no byte went upstream (sized and chunked)', async () => {
  const big = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
  const sized = await exchange(post(CHAT, big));
  assert.equal(sized.replies[0]!.status, 413);
  assert.equal(sized.closed, true);
  assert.equal(sized.replies[0]!.headers.connection, 'close');
  assert.equal((JSON.parse(sized.replies[0]!.body) as { error: { code: string } }).error.code, 'request_too_large');
  const chunks = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\n\r\n${'400\r\n' + 'y'.repeat(1024) + '\r\n'}`.repeat(1);
  const chunked = await exchange([chunks, ...Array.from({ length: 6 }, () => '400\r\n' + 'y'.repeat(1024) + '\r\n')], { gapMs: 5 });
  assert.equal(chunked.replies[0]!.status, 413);
  assert.equal(chunked.closed, true);
  assert.equal(h.upstream.length, 0);
  const small = await exchange(post('/v1/messages', { model: 'claude-sonnet-4-5', max_tokens: 5, messages: msgs }, '', 'api.anthropic.com'));
  assert.equal(small.replies[0]!.status, 200, 'a body under the bound passes');
});

test('unreadable bodies are refused with 400 (fail closed): invalid JSON, duplicate or escaped-duplicate model, model only nested, compressed', async () => {
  const cases: [string, string][] = [
    ['{"model":"gpt-4o-mini",', 'invalid_json'],
    ['{"model":"gpt-4o-mini","model":"gpt-4o"}', 'duplicate_key'],
    ['{"model":"gpt-4o","mod\\u0065l":"gpt-4o-mini"}', 'duplicate_key'],
    ['{"messages":[{"role":"user","content":"x","model":"gpt-4o-mini"}]}', 'invalid_field'],
  ];
  const { replies } = await exchange(cases.map(([b]) => post(CHAT, b)));
  assert.deepEqual(replies.map((r) => r.status), [400, 400, 400, 400]);
  assert.deepEqual(replies.map((r) => (JSON.parse(r.body) as { error: { code: string } }).error.code), cases.map(([, c]) => c));
  const gz = await exchange(post(CHAT, '\x1f\x8b\x08\x00', 'Content-Encoding: gzip\r\n'));
  assert.equal(gz.replies[0]!.status, 400);
  // an allowed call asking to upgrade: after it the client's bytes would no longer be judged as calls
  const up = await exchange(post(CHAT, { model: 'gpt-4o-mini', messages: msgs }, 'Connection: Upgrade\r\nUpgrade: websocket\r\n') + post(CHAT, { model: 'gpt-4o', messages: msgs }));
  assert.equal(up.replies[0]!.status, 400);
  assert.equal((JSON.parse(up.replies[0]!.body) as { error: { code: string } }).error.code, 'upgrade_not_allowed');
  assert.ok(up.replies.length < 2 || up.replies[1]!.status === 403, 'the call after it is judged, never passed raw');
  assert.equal(h.upstream.length, 0);
  assert.ok(h.flows.filter((f) => f.l7?.type === 1).every((f) => f.verdict === 2), 'each refusal has a DROPPED flow');
  // nested model keys beside an allowed top-level one: the server reads the top-level one too
  const nested = await exchange(post(CHAT, '{"messages":[{"role":"user","content":"x","model":"gpt-4o"}],"metadata":{"model":"gpt-4o"},"model":"gpt-4o-mini"}'));
  assert.equal(nested.replies[0]!.status, 200);
  assert.equal((JSON.parse(h.upstream[0]!.body) as { model: string }).model, 'gpt-4o-mini');
});

test('other requests to a provider host are refused unless the policy allows them; paths that only look like a call are other requests', async () => {
  const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: api.openai.com\r\n\r\n`;
  const { replies } = await exchange([get('/v1/models'), post('/v1/chat/completions/', { model: 'gpt-4o' }), post('//v1/chat/completions', { model: 'gpt-4o' }), post('/v1/files', '{}')]);
  assert.deepEqual(replies.map((r) => r.status), [403, 403, 403, 403]);
  assert.equal((JSON.parse(replies[0]!.body) as { error: { code: string } }).error.code, 'request_not_allowed');
  await h.apply(aiPolicy('chat', { ...base, otherRequests: 'Allow' }));
  const ok = await exchange(get('/v1/models'));
  assert.equal(ok.replies[0]!.status, 200);
  assert.equal(h.upstream.length, 1);
  // a host no policy names is not the filter's business
  const other = await exchange(post(CHAT, { model: 'gpt-4o' }, '', 'example.com'));
  assert.equal(other.replies[0]!.status, 200);
});

test('an AI call in another form is refused even where other requests are allowed: encoded, doubled or dotted slashes, trailing slash, case, ;params, lower-case method; batch and file endpoints are other requests', async () => {
  await h.apply(aiPolicy('chat', { ...base, otherRequests: 'Allow' }));
  const denied = { model: 'gpt-4o', messages: msgs };
  const disguised = ['/v1/chat%2Fcompletions', '/v1/chat%252Fcompletions', '/v1/%63hat/completions', '//v1/chat/completions', '/v1//chat/completions', '/v1/chat/completions/',
    '/v1/./chat/completions', '/v1/x/../chat/completions', '/V1/Chat/Completions', '/v1/chat/completions;x=1', '/v1\\chat\\completions', '/v1/chat/%zz/../completions'];
  const { replies } = await exchange(disguised.map((p) => post(p, denied)));
  assert.deepEqual(replies.map((r) => r.status), disguised.map(() => 403));
  assert.ok(replies.every((r) => (JSON.parse(r.body) as { error: { code: string } }).error.code === 'request_not_allowed'));
  const lower = await exchange(post(CHAT, denied).replace(/^POST/, 'post'));
  assert.ok(lower.replies.length === 0 || lower.replies[0]!.status >= 400, 'a lower-case method never passes unjudged');
  // the model named in the query beside the body's: ambiguous, refused
  const q = await exchange(post(`${CHAT}?model=gpt-4o`, { model: 'gpt-4o-mini', messages: msgs }) + post(`${CHAT}?%6dodel=x`, { model: 'gpt-4o-mini', messages: msgs }));
  assert.deepEqual(q.replies.map((r) => [r.status, (JSON.parse(r.body) as { error: { code: string; param: string } }).error.param]), [[400, 'model'], [400, 'model']]);
  assert.equal(h.upstream.length, 0, 'no disguised call reached the upstream');
  assert.ok(h.flows.filter((f) => f.l7?.type === 1).every((f) => f.verdict === 2), 'each refusal has a DROPPED flow');
  // positive controls: the plain call, a query without a model, and other requests (batches, files) pass where allowed
  const ok = await exchange(post(`${CHAT}?trace=1`, { model: 'gpt-4o-mini', messages: msgs }) + post('/v1/batches', { input_file_id: 'f', endpoint: CHAT, completion_window: '24h' }) + post('/v1/files', '{}'));
  assert.deepEqual(ok.replies.map((r) => r.status).slice(0, 1), [200]);
  assert.equal(h.upstream.length, 3);
  // under the default (otherRequests: Deny) batches and files are refused: their models are not in the request
  await h.apply(aiPolicy('chat', base));
  const batch = await exchange(post('/v1/batches', { input_file_id: 'f', endpoint: CHAT, completion_window: '24h' }) + post('/v1/files', '{}'));
  assert.deepEqual(batch.replies.map((r) => r.status), [403, 403]);
  assert.equal(h.upstream.length, 3);
});

test('a lying Host header does not avoid the policy: the destination\'s DNS names and the SNI count too', async () => {
  h.dstNames = ['api.openai.com'];
  const lie = await exchange(post(CHAT, { model: 'gpt-4o', messages: msgs }, '', 'innocent.example'));
  assert.equal(lie.replies[0]!.status, 403);
  const ok = await exchange(post(CHAT, { model: 'gpt-4o-mini', messages: msgs }, '', 'innocent.example'));
  assert.equal(ok.replies[0]!.status, 200);
  assert.equal(h.upstream.length, 1);
});

test('Expect: 100-continue: the proxy answers 100 itself, judges the body, the upstream never sees Expect', async () => {
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: msgs });
  const head = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`;
  const got = await new Promise<string>((resolve) => {
    const s = net.connect(h.port, '127.0.0.1');
    let text = '';
    s.on('data', (c) => {
      text += c.toString('latin1');
      if (text === 'HTTP/1.1 100 Continue\r\n\r\n') s.write(body);
      if (/\r\n\r\n[^]*"object"/.test(text.slice(25))) { s.destroy(); resolve(text); }
    });
    s.on('connect', () => s.write(head));
    setTimeout(() => { s.destroy(); resolve(text); }, 2000);
  });
  assert.match(got, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  assert.equal(h.upstream[0]!.headers.expect, undefined);
});

test('pipelined allowed, denied, allowed: answers in order on one connection', async () => {
  const { replies } = await exchange([post(CHAT, { model: 'gpt-4o-mini', messages: msgs }) + post(CHAT, { model: 'gpt-4o', messages: msgs }) + post(CHAT, { model: 'gpt-4o-mini', messages: msgs })]);
  assert.deepEqual(replies.map((r) => r.status), [200, 403, 200]);
  assert.equal(h.upstream.length, 2);
});

test('streaming: events pass one by one as the server sends them (never held), usage counted from the final chunk; Deny refuses stream:true', async () => {
  const body = JSON.stringify({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, max_tokens: 6, messages: msgs });
  const req = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: ${body.length}\r\nx-lab-interval-ms: 60\r\nx-lab-timestamps: 1\r\n\r\n${body}`;
  const arrivals: { at: number; sent: number }[] = [];
  await new Promise<void>((resolve) => {
    const s = net.connect(h.port, '127.0.0.1');
    let text = '';
    s.on('data', (c) => {
      const at = performance.timeOrigin + performance.now();
      text += c.toString('utf8');
      for (const m of c.toString('utf8').matchAll(/"lab_sent_at":([0-9.]+)/g)) arrivals.push({ at, sent: Number(m[1]) });
      if (text.includes('[DONE]')) { s.destroy(); resolve(); }
    });
    s.on('connect', () => s.write(req));
    setTimeout(() => { s.destroy(); resolve(); }, 5000);
  });
  // role chunk + 6 words + finish + usage = 9 timed events, 60 ms apart at the server
  assert.equal(arrivals.length, 9);
  for (const a of arrivals) assert.ok(a.at - a.sent < 40, `each event reaches the client as it is sent (${(a.at - a.sent).toFixed(1)} ms)`);
  assert.ok(arrivals[arrivals.length - 1]!.at - arrivals[0]!.at > 400, 'the first event arrived long before the last was sent');
  await new Promise((r) => setTimeout(r, 50));
  const res = h.records.find((r) => r.type === 'response')!;
  assert.deepEqual([res.ai?.stream, res.ai?.promptTokens, res.ai?.completionTokens, res.ai?.usage], [true, Math.ceil(body.length / 4), 6, 'reported']);
  await h.apply(aiPolicy('chat', { ...base, streaming: 'Deny' }));
  const denied = await exchange(post(CHAT, body));
  assert.equal(denied.replies[0]!.status, 403);
  assert.equal((JSON.parse(denied.replies[0]!.body) as { error: { code: string; param: string } }).error.param, 'stream');
  const plain = await exchange(post(CHAT, { model: 'gpt-4o-mini', messages: msgs }));
  assert.equal(plain.replies[0]!.status, 200, 'positive control: a non-streamed call still passes');
});

test('max tokens per request: over the limit, or missing, is 403; n multiplies; embeddings are exempt', async () => {
  await h.apply(aiPolicy('chat', { ...base, models: { allow: ['gpt-4o-mini', 'text-embedding-*'] }, maxTokensPerRequest: 100 }));
  const { replies } = await exchange([
    post(CHAT, { model: 'gpt-4o-mini', max_tokens: 100, messages: msgs }),
    post(CHAT, { model: 'gpt-4o-mini', max_tokens: 101, messages: msgs }),
    post(CHAT, { model: 'gpt-4o-mini', max_completion_tokens: 60, n: 2, messages: msgs }),
    post(CHAT, { model: 'gpt-4o-mini', messages: msgs }),
    post('/v1/embeddings', { model: 'text-embedding-3-small', input: 'x' }),
  ]);
  assert.deepEqual(replies.map((r) => r.status), [200, 403, 403, 403, 200]);
  assert.deepEqual(replies.slice(1, 4).map((r) => (JSON.parse(r.body) as { error: { code: string } }).error.code), ['max_tokens_exceeded', 'max_tokens_exceeded', 'max_tokens_required']);
});

test('background responses are refused where a token budget applies (their usage is read by a later request), allowed where none does', async () => {
  await h.apply(aiPolicy('chat', { ...base, budgets: [{ window: '1d', tokens: 100000 }] }));
  const { replies } = await exchange([post('/v1/responses', { model: 'gpt-4o-mini', input: 'hi', background: true }), post('/v1/responses', { model: 'gpt-4o-mini', input: 'hi' })]);
  assert.deepEqual(replies.map((r) => r.status), [403, 200]);
  assert.deepEqual((JSON.parse(replies[0]!.body) as { error: { code: string; param: string } }).error, { message: 'background responses are not allowed under AIPolicy shop/chat: their tokens could not be charged to its budget', type: 'invalid_request_error', param: 'background', code: 'background_not_metered' });
  assert.equal(h.upstream.length, 1);
  await h.apply(aiPolicy('chat', base));
  const ok = await exchange(post('/v1/responses', { model: 'gpt-4o-mini', input: 'hi', background: true }));
  assert.equal(ok.replies[0]!.status, 200);
});

test('request rate: the third call in the minute gets 429 with Retry-After and the provider\'s rate-limit headers', async () => {
  await h.apply(aiPolicy('chat', { ...base, rateLimits: [{ window: '1m', requests: 2 }] }));
  const { replies } = await exchange([1, 2, 3].map(() => post(CHAT, { model: 'gpt-4o-mini', messages: msgs })));
  assert.deepEqual(replies.map((r) => r.status), [200, 200, 429]);
  const r = replies[2]!;
  assert.ok(Number(r.headers['retry-after']) >= 1 && Number(r.headers['retry-after']) <= 60, r.headers['retry-after']);
  assert.equal(r.headers['x-ratelimit-limit-requests'], '2');
  assert.equal(r.headers['x-ratelimit-remaining-requests'], '0');
  assert.deepEqual((JSON.parse(r.body) as { error: { type: string; code: string } }).error.type, 'requests');
  await h.remove('AIPolicy', 'shop', 'chat');
  await h.apply(aiPolicy('chat2', base));
  const after = await exchange(post(CHAT, { model: 'gpt-4o-mini', messages: msgs }));
  assert.equal(after.replies[0]!.status, 200, 'a policy without the rate limit lets it through');
  await h.remove('AIPolicy', 'shop', 'chat2');
});

test('Connection: close with a body, on the AI path (held) and beside it (streamed through): the body reaches the upstream, the stream the client', async () => {
  const body = JSON.stringify({ model: 'gpt-4o-mini', stream: true, max_tokens: 3, messages: msgs });
  const req = `POST ${CHAT} HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
  const ai = await exchange(req, { idleMs: 1000 });
  assert.equal(ai.replies[0]!.status, 200);
  assert.equal(ai.closed, true);
  // an endpoint no AIPolicy selects: the request is not held, its body streams upstream as read
  h.endpoint = { ...h.endpoint, labels: ['k8s:app=plain', 'k8s:io.kubernetes.pod.namespace=shop'] };
  try {
    const plain = await exchange(req, { idleMs: 1000 });
    assert.equal(plain.replies[0]!.status, 200);
    assert.match(plain.replies[0]!.body, /data: \[DONE\]/);
    assert.equal(plain.closed, true);
    assert.deepEqual(h.upstream.map((u) => u.body), [body, body]);
  } finally {
    h.endpoint = { ...h.endpoint, labels: ['k8s:app=chatbot', 'k8s:io.kubernetes.pod.namespace=shop'] };
  }
});
