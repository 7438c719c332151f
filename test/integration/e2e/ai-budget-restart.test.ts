/**
 * AIPolicy over plain HTTP in a lab (Anthropic's API on api.anthropic.com:80, OpenAI's on
 * api.openai.com:80): the Anthropic error shape and stream, a token budget shared by the two
 * replicas of one Deployment (one identity), kept across a crash (SIGKILL) of the agent and of the
 * L7 proxy process that holds the budgets, and the membrane_ai_* metrics on the agent's :9962 (the
 * agent serves the proxy process's series beside its own).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cp } from 'node:fs/promises';
import { REPO, TestLab } from '../support/lab.ts';
import { nodeNetnsName } from '../../../src/lab/names.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import type { StatusView } from '../../../src/agent/views.ts';

const lab = new TestLab(`aibr${process.pid % 10000}`);
const NS = 'aibr';
let DIR = '';
let replicas: string[] = [];

const dnsAllow = {
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }],
};
const claude = { model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'Name three rivers.' }] };
const perCall = Math.ceil(JSON.stringify(claude).length / 4) + 10;

before(async () => {
  await lab.up();
  DIR = await lab.dir;
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    {
      apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'chatbot', namespace: NS },
      spec: { replicas: 2, selector: { matchLabels: { app: 'chatbot' } }, template: { metadata: { labels: { app: 'chatbot' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } } },
    },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'other', namespace: NS, labels: { app: 'other' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'ai-http', namespace: NS },
      spec: {
        endpointSelector: {},
        egress: [dnsAllow, { toFQDNs: [{ matchName: 'api.anthropic.com' }, { matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{}] } }] }],
      },
    },
    {
      apiVersion: 'membrane.dev/v1alpha1', kind: 'AIPolicy', metadata: { name: 'chatbot', namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: 'chatbot' } },
        providers: [{ api: 'anthropic', hosts: ['api.anthropic.com'] }, { api: 'openai', hosts: ['api.openai.com'] }],
        models: { deny: ['claude-opus-*'] }, budgets: [{ window: '1d', tokens: perCall * 3 }],
      },
    },
    {
      apiVersion: 'membrane.dev/v1alpha1', kind: 'AIPolicy', metadata: { name: 'other', namespace: NS },
      spec: { endpointSelector: { matchLabels: { app: 'other' } }, providers: [{ api: 'anthropic', hosts: ['api.anthropic.com'] }], budgets: [{ window: '1d', tokens: perCall * 100 }] },
    },
  ]);
  replicas = Object.keys(await lab.podIPs()).filter((k) => k.startsWith(`${NS}/chatbot-`)).map((k) => k.split('/')[1]!).sort();
});
after(async () => {
  // AIBR_KEEP_LOGS=dir keeps the node's logs (agent, L7 proxy, supervisor) for a look after a failure
  if (process.env.AIBR_KEEP_LOGS) await cp(lab.paths.nodeDir('node1'), process.env.AIBR_KEEP_LOGS, { recursive: true, filter: (f) => !f.endsWith('.sock') }).catch(() => {});
  await lab.down();
});

interface Result { name: string; status: number; headers: Record<string, string>; body: string; arrivals: { at: number; stamps: number[] }[]; error?: string }

function request(host: string, path: string, body: object, extra = ''): string {
  const b = JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n${extra}\r\n${b}`;
}
let seq = 0;
async function probe(from: string, cases: { name: string; host?: string; raw: string }[]): Promise<Result[]> {
  const file = join(DIR, `plan-${seq++}.json`);
  writeFileSync(file, JSON.stringify(cases.map((c) => ({ name: c.name, host: c.host ?? 'api.anthropic.com', port: 80, tls: false, raw: Buffer.from(c.raw).toString('base64') }))));
  const out = await lab.ok(['exec', '-n', NS, from, '--', join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/ai-probe.ts'), file], { timeoutMs: 120_000 });
  const rs = JSON.parse(out.trim().split('\n').pop()!) as Result[];
  for (const r of rs) assert.equal(r.error, undefined, `${r.name}: ${r.error}`);
  return rs;
}
const call = (name: string) => ({ name, raw: request('api.anthropic.com', '/v1/messages', claude) });

test('Anthropic over HTTP: a denied model gets 403 in Anthropic\'s error shape; a stream passes and is counted; metrics on :9962', async () => {
  const [denied] = await probe('other', [{ name: 'opus', raw: request('api.anthropic.com', '/v1/messages', { ...claude, model: 'claude-opus-4-1' }) }]);
  assert.equal(denied!.status, 200, 'positive control: the other workload\'s policy allows opus');
  const rs = await probe(replicas[0]!, [
    { name: 'opus', raw: request('api.anthropic.com', '/v1/messages', { ...claude, model: 'claude-opus-4-1' }) },
    { name: 'other-request', raw: `GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nConnection: close\r\n\r\n` },
  ]);
  assert.deepEqual(rs.map((r) => r.status), [403, 403]);
  assert.deepEqual(JSON.parse(rs[0]!.body), { type: 'error', error: { type: 'permission_error', message: 'model "claude-opus-4-1" is denied by AIPolicy aibr/chatbot (claude-opus-*)' } });
  // a stream from the other workload (its own budget): event by event, counted from message_delta
  const [s] = await probe('other', [{ name: 'stream', raw: request('api.anthropic.com', '/v1/messages', { ...claude, stream: true }, 'x-lab-timestamps: 1\r\nx-lab-interval-ms: 30\r\n') }]);
  assert.equal(s!.status, 200);
  assert.match(s!.body, /^event: message_start\n/);
  assert.ok(s!.arrivals.filter((a) => a.stamps.length).length >= 10, 'events arrive as they are sent');
  const text = execFileSync('ip', ['netns', 'exec', nodeNetnsName('node1', lab.name), 'curl', '-s', 'http://127.0.0.1:9962/metrics']).toString();
  assert.match(text, /membrane_ai_requests_total\{provider="anthropic",model="claude-opus-4-1",source_namespace="aibr",source_workload="chatbot",outcome="denied"\} 1/);
  assert.match(text, /membrane_ai_requests_total\{provider="anthropic",model="claude-sonnet-4-5",source_namespace="aibr",source_workload="other",outcome="forwarded"\} 1/);
  assert.match(text, /membrane_ai_tokens_total\{provider="anthropic",model="claude-sonnet-4-5",source_namespace="aibr",source_workload="other",direction="completion"\} 10/);
  assert.match(text, /membrane_ai_time_to_first_token_seconds_count\{provider="anthropic",model="claude-sonnet-4-5",source_namespace="aibr",source_workload="other"\} 1/);
  assert.match(text, /membrane_ai_request_duration_seconds_count\{provider="anthropic",model="claude-sonnet-4-5",source_namespace="aibr",source_workload="other"\} 1/);
});

test('the budget is shared by both replicas and survives a crash (SIGKILL) of the agent and the L7 proxy, and their restart', async () => {
  assert.equal(replicas.length, 2);
  const [a, b] = replicas as [string, string];
  assert.deepEqual((await probe(a, [call('a1'), call('a2')])).map((r) => r.status), [200, 200]);
  assert.deepEqual((await probe(b, [call('b1'), call('b2')])).map((r) => r.status), [200, 429], 'replica b spends the third call, then the budget is gone');
  assert.equal((await probe(a, [call('a3')]))[0]!.status, 429, 'and replica a sees it too');
  const state = join(lab.paths.nodeDir('node1'), 'ai-budgets.json');
  // the state file is written shortly after each charge
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok(existsSync(state));
  const saved = JSON.parse(readFileSync(state, 'utf8')) as { entries: Record<string, { n: number }> };
  assert.ok(Object.entries(saved.entries).some(([k, v]) => k.startsWith('aibr/chatbot|tokens|86400000|') && v.n === perCall * 3), JSON.stringify(saved));

  const pid = Number(readFileSync(lab.paths.agentPidFile('node1'), 'utf8').trim());
  // the budgets live where the AI filter runs: the L7 proxy process (the lab's default), else the agent
  const proxyPidFile = join(lab.paths.nodeDir('node1'), 'l7proxy.pid');
  const proxyPid = existsSync(proxyPidFile) ? Number(readFileSync(proxyPidFile, 'utf8').trim()) : undefined;
  for (const p of [pid, proxyPid]) if (p) process.kill(p, 'SIGKILL');
  for (const p of [pid, proxyPid]) {
    for (let i = 0; p && i < 100; i++) {
      try { process.kill(p, 0); } catch { break; }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await lab.up();
  // the supervisor brings the proxy back too: a new pid that says it is ready, its rows in the agent's status
  for (let i = 0; proxyPid && i < 600; i++) {
    const np = Number(readFileSync(proxyPidFile, 'utf8').trim() || 0);
    const ready = np && np !== proxyPid && readFileSync(join(lab.paths.nodeDir('node1'), 'l7proxy.log'), 'utf8').includes(`"pid":${np},"msg":"L7 proxy ready"`);
    const st = ready ? await callAgent<StatusView>(lab.paths.agentSocket('node1'), 'GET', '/v1/status', undefined, 2000).catch(() => undefined) : undefined;
    if (st?.proxies.some((x) => x.name === 'http (egress, TCP)' && /listening/.test(x.state))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await lab.settle();
  const after = await probe(b, [call('b3')]);
  assert.equal(after[0]!.status, 429, 'the spent budget survived the restart');
  assert.match(JSON.parse(after[0]!.body).error.message as string, new RegExp(`limit ${perCall * 3} tokens per 1d, used ${perCall * 3}\\.`));
  assert.equal((await probe('other', [call('o1')]))[0]!.status, 200, 'positive control: the restarted proxy serves another identity');
  // OpenAI's API on the same policy, same budget: refused too
  const [o] = await probe(a, [{ name: 'openai', host: 'api.openai.com', raw: request('api.openai.com', '/v1/chat/completions', { model: 'gpt-4o-mini', messages: claude.messages }) }]);
  assert.equal(o!.status, 429);
  assert.equal((JSON.parse(o!.body) as { error: { type: string } }).error.type, 'tokens');
  // `membrane ai usage`: the calls since the restart per workload, and the budget kept across it
  const usage = await lab.ok(['ai', 'usage', '-n', NS]);
  assert.match(usage, /^node1 +aibr +chatbot +anthropic +claude-sonnet-4-5 +0 +1 +0 +0 +0$/m, usage);
  assert.match(usage, /^node1 +aibr +other +anthropic +claude-sonnet-4-5 +1 +0 +\d+ +10 +\d+$/m, usage);
  assert.match(usage, new RegExp(`^node1 +aibr/chatbot +app=chatbot +1d +${perCall * 3} tokens +${perCall * 3} +0 +\\S+$`, 'm'), usage);
  const json = JSON.parse(await lab.ok(['ai', 'usage', '-n', NS, '-o', 'json'])) as { items: { node: string; budgets: { policy: string; used: number }[] }[] };
  assert.equal(json.items[0]!.node, 'node1');
  assert.ok(json.items[0]!.budgets.some((b) => b.policy === 'aibr/chatbot' && b.used === perCall * 3));
});
