/**
 * The agent API over its real unix socket, with a real agent (in-memory kvstore, the in-memory
 * datapath, the real policy engine): every request body and query is checked with the zod
 * schemas; bad input is a 400 with a code, a message, a hint and every issue, and changes nothing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { createFakeDatapath } from '../../../src/datapath/fake.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { createAgent, type Agent } from '../../../src/agent/agent.ts';
import { createApiServer } from '../../../src/agent/api-server.ts';
import { agentRoutes } from '../../../src/agent/routes.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import { createLogger } from '../../../src/common/logger.ts';
import type { StatusView } from '../../../src/agent/views.ts';

const dir = mkdtempSync(join(tmpdir(), 'mbr-api-'));
const socket = join(dir, 'agent.sock');
let agent: Agent;
let api: { start(): Promise<void>; stop(): Promise<void> };

before(async () => {
  const kv = await openMemoryStore();
  const noPods = { ensure: () => Promise.reject(new Error('no pods in this test')), remove: async () => {} };
  agent = await createAgent({
    config: { node: 'node1', hostIp: '192.0.2.1', lab: 't' }, kv, datapath: createFakeDatapath(), policy: createAgentPolicyEngine(),
    networks: noPods, workloads: { ensure: () => Promise.reject(new Error('no pods')), stop: async () => {} }, logger: createLogger({ level: 'silent' }),
  });
  await agent.start();
  api = createApiServer({ socketPath: socket, routes: agentRoutes(agent, async () => ({}) as StatusView) });
  await api.start();
});

after(async () => {
  await api.stop();
  await agent.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A raw request: status code and parsed JSON. */
function raw(method: string, path: string, body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const cnp = (spec: unknown) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'p', namespace: 'shop' }, spec });

test('positive control: a well-formed apply is applied (and what the CLI sends, source included, passes)', async () => {
  const r = await raw('POST', '/v1/apply', JSON.stringify({ resources: [{ ...ns('shop'), source: { file: 'a.yaml', line: 1, col: 1 } }, cnp({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: 80 }] }] }] })], dryRun: false }));
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.deepEqual((r.json.results as { action: string }[]).map((x) => x.action), ['created', 'created']);
  const listed = await callAgent<{ items: { kind: string; source: { file: string } }[] }>(socket, 'GET', '/v1/resources?kind=CiliumNetworkPolicy');
  assert.equal(listed.items.length, 1);
  const pol = await callAgent<{ items: { file: string }[] }>(socket, 'GET', '/v1/policies?namespace=shop');
  assert.equal(pol.items[0]!.file, '<api>', 'a resource without source is attributed to the API');
});

// Each: body, the code and a path that must be among the issues.
const BAD: [string, string, string, (string | number)[]][] = [
  ['not JSON', '{"resources": [', 'API_BAD_REQUEST', []],
  ['resources missing', '{}', 'API_FIELD_REQUIRED', ['resources']],
  ['resources not a list', '{"resources": {"kind": "Namespace"}}', 'API_FIELD_TYPE', ['resources']],
  ['unknown body field', JSON.stringify({ resources: [], dryrun: true }), 'API_FIELD_UNKNOWN', ['dryrun']],
  ['dryRun not a boolean', JSON.stringify({ resources: [], dryRun: 'yes' }), 'API_FIELD_TYPE', ['dryRun']],
  ['a resource that is not an object', JSON.stringify({ resources: [42] }), 'API_DOCUMENT_INVALID', ['resources', 0]],
  ['unknown kind', JSON.stringify({ resources: [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }] }), 'API_KIND_UNKNOWN', ['resources', 0, 'kind']],
  ['wrong apiVersion', JSON.stringify({ resources: [{ ...ns('x'), apiVersion: 'v2' }] }), 'API_VERSION_UNSUPPORTED', ['resources', 0, 'apiVersion']],
  ['unknown field in a spec', JSON.stringify({ resources: [cnp({ endpointSelector: {}, ingres: [] })] }), 'API_FIELD_UNKNOWN', ['resources', 0, 'spec', 'ingres']],
  ['bad name', JSON.stringify({ resources: [ns('Bad_Name')] }), 'API_NAME_INVALID', ['resources', 0, 'metadata', 'name']],
  ['bad source', JSON.stringify({ resources: [{ ...ns('x'), source: { file: 1 } }] }), 'API_FIELD_TYPE', ['resources', 0, 'source', 'file']],
];

for (const [name, body, code, path] of BAD) {
  test(`apply rejects ${name}: 400 ${code}, nothing changes`, async () => {
    const before = await callAgent<{ items: unknown[] }>(socket, 'GET', '/v1/resources');
    const r = await raw('POST', '/v1/apply', body);
    assert.equal(r.status, 400);
    assert.equal(r.json.code, 'API_BAD_REQUEST');
    assert.equal(typeof r.json.message, 'string');
    assert.equal(typeof r.json.hint, 'string');
    if (code !== 'API_BAD_REQUEST') {
      const issues = r.json.issues as { code: string; path: (string | number)[] }[];
      assert.ok(issues.some((i) => i.code === code && JSON.stringify(i.path) === JSON.stringify(path)), JSON.stringify(issues));
    }
    const after = await callAgent<{ items: unknown[] }>(socket, 'GET', '/v1/resources');
    assert.equal(after.items.length, before.items.length);
  });
}

test('one bad resource among good ones: nothing of the batch is applied', async () => {
  const r = await raw('POST', '/v1/apply', JSON.stringify({ resources: [ns('good'), { ...ns('alsogood'), metadata: { name: 'x', labels: { 'a b': 'c' } } }] }));
  assert.equal(r.status, 400);
  const listed = await callAgent<{ items: { metadata: { name: string } }[] }>(socket, 'GET', '/v1/resources?kind=Namespace');
  assert.ok(!listed.items.some((n) => n.metadata.name === 'good'));
});

test('delete, settle and queries are checked too; the positive control passes', async () => {
  assert.equal((await raw('POST', '/v1/delete', JSON.stringify({ resources: 'all' }))).status, 400);
  assert.equal((await raw('POST', '/v1/settle', JSON.stringify({ now: true }))).status, 400);
  assert.equal((await raw('POST', '/v1/settle', '{}')).status, 200);
  assert.equal((await raw('POST', '/v1/settle')).status, 200);
  const q = await raw('GET', '/v1/resources?kind=Widget');
  assert.equal(q.status, 400);
  assert.match(String(q.json.message), /kind/);
  assert.equal((await raw('GET', '/v1/resources?kind=Namespace')).status, 200);
  assert.equal((await raw('GET', '/v1/endpoints?namespace=')).status, 400);
  assert.equal((await raw('GET', '/v1/policies?colour=red')).status, 400);
  assert.equal((await raw('GET', '/v1/identities')).status, 200);
  const del = await raw('POST', '/v1/delete', JSON.stringify({ resources: [cnp({ endpointSelector: {}, ingress: [{}] })] }));
  assert.equal(del.status, 200, JSON.stringify(del.json));
  assert.deepEqual((del.json.results as { action: string }[]).map((x) => x.action), ['deleted']);
});

test('an unknown route is a 404 API_NOT_FOUND', async () => {
  const r = await raw('GET', '/v1/nope');
  assert.equal(r.status, 404);
  assert.equal(r.json.code, 'API_NOT_FOUND');
});

test('POST /v1/endpoint/config: bad bodies are 400 with the issue; an unknown endpoint is API_ENDPOINT_NOT_FOUND; nothing changes', async () => {
  const bad: [string, string][] = [
    [JSON.stringify({ id: 1, options: { PolicyAuditMode: 'Enabled' } }), 'PolicyAuditMode'],
    [JSON.stringify({ id: 0, options: {} }), 'id'],
    [JSON.stringify({ id: 1, options: { Debug: true } }), 'Debug'],
    [JSON.stringify({ options: {} }), 'id'],
  ];
  for (const [body, path] of bad) {
    const r = await raw('POST', '/v1/endpoint/config', body);
    assert.equal(r.status, 400, body);
    assert.ok((r.json.issues as { path: (string | number)[] }[]).some((i) => i.path.includes(path)), `${body}: ${JSON.stringify(r.json.issues)}`);
  }
  const missing = await raw('POST', '/v1/endpoint/config', JSON.stringify({ id: 4242, options: { PolicyAuditMode: true } }));
  assert.equal(missing.status, 400, JSON.stringify(missing.json)); // the API answers every refused request with 400 and a code
  assert.equal(missing.json.code, 'API_ENDPOINT_NOT_FOUND');
  assert.deepEqual(agent.endpoints(), []);
});
