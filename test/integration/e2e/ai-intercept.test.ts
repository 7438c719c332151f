/**
 * AIPolicy end to end over HTTPS with TLS interception, in a lab: pods call the lab's
 * api.openai.com (the world's HTTPS host, lab CA) through the HTTP proxy, which terminates TLS
 * with the interception CA the pods trust and reads each call:
 *
 *   - an allowed model passes; a denied one gets 403 in OpenAI's error shape and a DROPPED flow
 *     naming the model (hubble JSON with the AI extension)
 *   - a per-day token budget is exhausted after exactly its tokens; the next call gets 429 with
 *     Retry-After
 *   - a streamed response is counted from its usage chunk and reaches the client event by event:
 *     the first event's delivery time with the AIPolicy equals (within 1 ms, median) that of a
 *     pod under the same network policy without one
 *   - bodies split across TLS records, oversized bodies, invalid JSON, duplicate and nested
 *     `model` keys, a megabyte of nesting, a call behind an encoded path, a model in the query:
 *     handled without a bypass (the upstream never sees a refused call)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, TestLab, type Flow } from '../support/lab.ts';

const lab = new TestLab(`aint${process.pid % 10000}`);
const NS = 'aint';
let ICA = '';
let DIR = '';
const HOST = 'api.openai.com';
const CHAT = '/v1/chat/completions';

const dnsAllow = {
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }],
};
const cnp = {
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'ai-egress', namespace: NS },
  spec: {
    endpointSelector: { matchLabels: { role: 'ai-client' } },
    egress: [dnsAllow, {
      toFQDNs: [{ matchName: HOST }],
      toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], terminatingTLS: { secret: { name: 'ai-intercept' } }, originatingTLS: { secret: { name: 'ai-intercept' } }, rules: { http: [{}] } }],
    }],
  },
};
const aiPolicy = (name: string, app: string, spec: object) => ({
  apiVersion: 'membrane.dev/v1alpha1', kind: 'AIPolicy', metadata: { name, namespace: NS },
  spec: { endpointSelector: { matchLabels: { app } }, providers: [{ api: 'openai', hosts: [HOST] }], ...spec },
});
const pod = (name: string, app: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app, role: 'ai-client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } });

before(async () => {
  await lab.up();
  DIR = await lab.dir;
  ICA = join(DIR, 'ica.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(DIR, 'ica.key'), '-out', ICA,
    '-days', '2', '-subj', '/CN=membrane test interception CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], { stdio: 'ignore' });
  const secret = await lab.ok(['lab', 'ca', '--secret', 'ai-intercept', '-n', NS, '--cert', ICA, '--key', join(DIR, 'ica.key')]);
  await lab.ok(['apply', '-f', '-'], { input: `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n---\n${secret}` });
  await lab.apply([
    pod('chatbot', 'chatbot'), pod('plain', 'plain'), pod('budgeted', 'budgeted'), cnp,
    aiPolicy('chatbot', 'chatbot', { models: { allow: ['gpt-4o-mini'] }, maxTokensPerRequest: 64 }),
  ]);
});
after(async () => { await lab.down(); });

interface Result { name: string; status: number; headers: Record<string, string>; body: string; arrivals: { at: number; stamps: number[] }[]; closed: boolean; error?: string }
interface Case { name: string; raw: Buffer | string; pieces?: number; gapMs?: number }

function request(body: string | object, extra = '', path = CHAT): string {
  const b = typeof body === 'string' ? body : JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n${extra}\r\n${b}`;
}

let planSeq = 0;
async function probe(from: string, cases: Case[]): Promise<Result[]> {
  const file = join(DIR, `plan-${planSeq++}.json`);
  writeFileSync(file, JSON.stringify(cases.map((c) => ({ name: c.name, host: HOST, port: 443, tls: true, ca: ICA, raw: Buffer.from(c.raw).toString('base64'), pieces: c.pieces, gapMs: c.gapMs }))));
  const out = await lab.ok(['exec', '-n', NS, from, '--', join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/ai-probe.ts'), file], { timeoutMs: 180_000 });
  const rs = JSON.parse(out.trim().split('\n').pop()!) as Result[];
  // on a failure, the flows of the namespace say where the exchange stopped
  if (rs.some((r) => r.error)) console.log((await lab.run(['observe', '--since', '2m', '-n', NS, '--type', 'l7'])).stdout.slice(-4000));
  for (const r of rs) assert.equal(r.error, undefined, `${from} ${r.name}: ${r.error} ${JSON.stringify(r).slice(0, 2000)}`);
  return rs;
}

async function flowsSince(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 30; i++) {
    fs = await lab.flows(['--type', 'l7', '--since', since]);
    if (pred(fs)) return fs;
    await new Promise((r) => setTimeout(r, 300));
  }
  return fs;
}
type AIExt = { provider: string; model: string; prompt_tokens?: number; completion_tokens?: number; usage?: string; policy?: string; stream: boolean };
const ext = (f: Flow) => (f.extensions as { value?: { ai?: AIExt } } | undefined)?.value?.ai;
const l7type = (f: Flow) => (f.l7 as { type?: string } | undefined)?.type;
const msgs = [{ role: 'user', content: 'What is the capital of France?' }];

test('allowed model passes (200, OpenAI\'s shape); a denied model gets 403 in OpenAI\'s error shape and a DROPPED flow naming the model', async () => {
  const since = new Date().toISOString();
  const [ok, denied] = await probe('chatbot', [
    { name: 'ok', raw: request({ model: 'gpt-4o-mini', max_tokens: 20, messages: msgs }) },
    { name: 'denied', raw: request({ model: 'gpt-4o', max_tokens: 20, messages: msgs }) },
  ]);
  assert.equal(ok!.status, 200);
  const body = JSON.parse(ok!.body) as { object: string; usage: { completion_tokens: number }; tls: boolean; sni: string };
  assert.deepEqual([body.object, body.usage.completion_tokens, body.tls, body.sni], ['chat.completion', 20, true, HOST], 'the real (lab) api.openai.com answered over TLS');
  assert.equal(denied!.status, 403);
  assert.deepEqual(JSON.parse(denied!.body), { error: { message: 'model "gpt-4o" is not allowed by AIPolicy aint/chatbot', type: 'invalid_request_error', param: 'model', code: 'model_not_allowed' } });
  const fs = await flowsSince(since, (x) => x.some((f) => f.verdict === 'DROPPED' && ext(f)) && x.some((f) => l7type(f) === 'RESPONSE' && ext(f)?.usage));
  const drop = fs.find((f) => f.verdict === 'DROPPED' && l7type(f) === 'REQUEST' && ext(f));
  assert.ok(drop, JSON.stringify(fs.map((f) => f.Summary)));
  assert.deepEqual([ext(drop)!.model, ext(drop)!.policy], ['gpt-4o', 'aint/chatbot']);
  assert.match(String(drop.Summary), /\[ai openai gpt-4o\] \[ai: model "gpt-4o" is not allowed by AIPolicy aint\/chatbot\] \[TLS intercepted, SNI api\.openai\.com\]$/);
  const res = fs.find((f) => f.verdict === 'FORWARDED' && l7type(f) === 'RESPONSE' && ext(f)?.model === 'gpt-4o-mini')!;
  assert.deepEqual([ext(res)!.completion_tokens, ext(res)!.usage], [20, 'reported']);
  assert.match(String(res.Summary), /\[ai openai gpt-4o-mini, tokens \d+\+20\]/);
});

test('bodies split across TLS records, oversized bodies, invalid JSON, duplicate and nested model keys: no bypass, positive controls pass', async () => {
  const good = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 5, messages: msgs });
  const bad = JSON.stringify({ model: 'gpt-4o', max_tokens: 5, messages: msgs });
  const rs = await probe('chatbot', [
    { name: 'split-ok', raw: request(good), pieces: 40, gapMs: 5 },
    { name: 'split-denied', raw: request(bad), pieces: 40, gapMs: 5 },
    { name: 'oversized', raw: request(JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'x'.repeat(1_100_000) }] })) },
    { name: 'invalid', raw: request('{"model":"gpt-4o-mini","messages":[') },
    { name: 'duplicate', raw: request('{"model":"gpt-4o-mini","max_tokens":5,"model":"gpt-4o"}') },
    { name: 'escaped-duplicate', raw: request('{"model":"gpt-4o","max_tokens":5,"mod\\u0065l":"gpt-4o-mini"}') },
    { name: 'nested-only', raw: request('{"max_tokens":5,"messages":[{"role":"user","content":"x","model":"gpt-4o-mini"}]}') },
    { name: 'nested-beside', raw: request('{"max_tokens":5,"messages":[{"role":"user","content":"x","model":"gpt-4o"}],"model":"gpt-4o-mini"}') },
    { name: 'too-deep', raw: request('['.repeat(500_000)) },
    { name: 'encoded-path', raw: request(bad, '', '/v1/chat%2Fcompletions') },
    { name: 'model-in-query', raw: request(good, '', `${CHAT}?model=gpt-4o`) },
  ]);
  const by = Object.fromEntries(rs.map((r) => [r.name, r]));
  assert.deepEqual(rs.map((r) => [r.name, r.status]), [
    ['split-ok', 200], ['split-denied', 403], ['oversized', 413], ['invalid', 400], ['duplicate', 400], ['escaped-duplicate', 400], ['nested-only', 400], ['nested-beside', 200],
    ['too-deep', 400], ['encoded-path', 403], ['model-in-query', 400],
  ]);
  assert.deepEqual(['too-deep', 'encoded-path', 'model-in-query'].map((n) => (JSON.parse(by[n]!.body) as { error: { code: string } }).error.code), ['too_complex', 'request_not_allowed', 'invalid_field']);
  assert.equal((JSON.parse(by.oversized!.body) as { error: { code: string } }).error.code, 'request_too_large');
  assert.deepEqual(['invalid', 'duplicate', 'escaped-duplicate', 'nested-only'].map((n) => (JSON.parse(by[n]!.body) as { error: { code: string } }).error.code), ['invalid_json', 'duplicate_key', 'duplicate_key', 'invalid_field']);
  // the server ran the model the proxy judged
  assert.equal((JSON.parse(by['nested-beside']!.body) as { model: string }).model, 'gpt-4o-mini');
  assert.equal((JSON.parse(by['split-ok']!.body) as { model: string }).model, 'gpt-4o-mini');
});

test('a per-day token budget: exhausted after exactly its tokens, the next call gets 429 with Retry-After; the positive control under budget passes', async () => {
  const body = { model: 'gpt-4o-mini', max_tokens: 10, messages: msgs };
  const perCall = Math.ceil(JSON.stringify(body).length / 4) + 10;
  await lab.apply([aiPolicy('budgeted', 'budgeted', { budgets: [{ window: '1d', tokens: perCall * 2 }] })]);
  const since = new Date().toISOString();
  const rs = await probe('budgeted', [1, 2, 3].map((i) => ({ name: `call${i}`, raw: request(body) })));
  assert.deepEqual(rs.map((r) => r.status), [200, 200, 429]);
  const r = rs[2]!;
  const toMidnight = ((Math.floor(Date.now() / 86_400_000) + 1) * 86_400_000 - Date.now()) / 1000;
  assert.ok(Math.abs(Number(r.headers['retry-after']) - toMidnight) < 30, `Retry-After ${r.headers['retry-after']} vs ${toMidnight}`);
  assert.equal(r.headers['x-ratelimit-limit-tokens'], String(perCall * 2));
  const err = JSON.parse(r.body) as { error: { type: string; code: string; message: string } };
  assert.deepEqual([err.error.type, err.error.code], ['tokens', 'rate_limit_exceeded']);
  assert.match(err.error.message, new RegExp(`limit ${perCall * 2} tokens per 1d, used ${perCall * 2}\\.`));
  const fs = await flowsSince(since, (x) => x.some((f) => f.verdict === 'DROPPED' && ext(f)));
  assert.ok(fs.some((f) => f.verdict === 'DROPPED' && /token budget \d+\/1d of AIPolicy aint\/budgeted exhausted/.test(String(f.Summary))), JSON.stringify(fs.map((f) => f.Summary)));
  // another workload is not charged for it
  assert.equal((await probe('chatbot', [{ name: 'other', raw: request({ ...body, max_tokens: 5 }) }]))[0]!.status, 200);
});

test('streamed: counted from the usage chunk, delivered event by event; first event delivery within 1 ms (median) of a pod without an AIPolicy', async (t) => {
  const stream = (n: number) => request({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, max_tokens: n, messages: msgs }, 'x-lab-timestamps: 1\r\nx-lab-first-token-ms: 30\r\nx-lab-interval-ms: 40\r\n');
  const since = new Date().toISOString();
  const firstLatency = (r: Result) => { const a = r.arrivals.find((x) => x.stamps.length)!; return a.at - a.stamps[0]!; };
  const ai: number[] = [];
  const plain: number[] = [];
  // round 0 warms both paths up (JIT, pooled upstream connections) and is not measured
  for (let round = 0; round < 4; round++) {
    for (const [from, into] of [['chatbot', round ? ai : []], ['plain', round ? plain : []]] as const) {
      const rs = await probe(from, Array.from({ length: 5 }, (_, i) => ({ name: `s${i}`, raw: stream(8) })));
      for (const r of rs) {
        assert.equal(r.status, 200, r.body);
        assert.equal(r.headers['content-type'], 'text/event-stream; charset=utf-8');
        const stamped = r.arrivals.filter((a) => a.stamps.length);
        // role + 8 words + finish + usage: 11 events, 40 ms apart at the server, each its own read at the client
        assert.equal(stamped.reduce((n, a) => n + a.stamps.length, 0), 11);
        assert.ok(stamped.length >= 9, `events arrive one by one (${stamped.length} reads)`);
        assert.ok(stamped[0]!.at < stamped[stamped.length - 1]!.stamps[0]!, 'the first event arrived before the server sent the last');
        into.push(firstLatency(r));
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const diff = median(ai) - median(plain);
  t.diagnostic(`first event delivery (server write → client read), median of ${ai.length}: AIPolicy ${median(ai).toFixed(3)} ms, none ${median(plain).toFixed(3)} ms`);
  assert.ok(Math.abs(diff) < 1, `first event delivery: AIPolicy ${median(ai).toFixed(3)} ms vs none ${median(plain).toFixed(3)} ms (median of ${ai.length})`);
  const fs = await flowsSince(since, (x) => x.filter((f) => l7type(f) === 'RESPONSE' && ext(f)?.stream).length >= 20);
  const counted = fs.filter((f) => l7type(f) === 'RESPONSE' && ext(f)?.stream);
  assert.equal(counted.length, 20, 'every stream of the AIPolicy pod is counted (and none of the other pod)');
  for (const f of counted) assert.deepEqual([ext(f)!.completion_tokens, ext(f)!.usage], [8, 'reported']);
});
