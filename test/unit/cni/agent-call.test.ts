/**
 * The plugin's own HTTP/1.0 client (src/cni/agent-call.ts) against a real node:http server on a
 * unix socket, as the agent's API server is: answers, error answers with their codes, chunked
 * bodies, an agent that is not there and one that never answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentCall, parseReply } from '../../../src/cni/agent-call.ts';

async function serve(h: Parameters<typeof createServer>[1]): Promise<{ sock: string; server: Server; done(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'cni-call-'));
  const sock = join(dir, 'agent.sock');
  const server = createServer(h);
  await new Promise<void>((r) => server.listen(sock, r));
  return { sock, server, done: async () => { server.closeAllConnections(); await new Promise((r) => server.close(r)); rmSync(dir, { recursive: true, force: true }); } };
}

test('answers: the JSON body of a 200, the request body reaches the server intact', async () => {
  const s = await serve((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ path: req.url, method: req.method, got: JSON.parse(Buffer.concat(chunks).toString()) })); });
  });
  try {
    const body = { name: 'wéb', labels: { app: 'x'.repeat(70_000) } };
    const r = await agentCall<{ path: string; method: string; got: unknown }>(s.sock, '/v1/cni/add', body, 5000);
    assert.deepEqual(r, { path: '/v1/cni/add', method: 'POST', got: body });
  } finally { await s.done(); }
});

test('error answers keep the agent\'s code, message and hint', async () => {
  const s = await serve((_req, res) => { res.statusCode = 400; res.end(JSON.stringify({ code: 'CNI_UNKNOWN_CONTAINER', message: 'no such', hint: 'ADD it first' })); });
  try {
    await assert.rejects(agentCall(s.sock, '/v1/cni/check', {}, 5000), (e: Error & { code?: string; hint?: string }) => e.code === 'CNI_UNKNOWN_CONTAINER' && e.message === 'no such' && e.hint === 'ADD it first');
  } finally { await s.done(); }
});

test('chunked bodies are decoded; a head without its end is a bad response', () => {
  const raw = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n');
  assert.deepEqual(parseReply(raw), { status: 200, body: '{"a":1}' });
  assert.deepEqual(parseReply(Buffer.from('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}')), { status: 404, body: '{}' });
  assert.throws(() => parseReply(Buffer.from('HTTP/1.1 200 OK\r\nContent-Le')), /AGENT_BAD_RESPONSE|complete answer/);
  assert.throws(() => parseReply(Buffer.from('SSH-2.0-x\r\n\r\n')), /not an HTTP answer/);
});

test('no agent: AGENT_UNREACHABLE; an agent that never answers: AGENT_TIMEOUT', async () => {
  await assert.rejects(agentCall('/nonexistent/agent.sock', '/v1/cni/status', {}, 5000), (e: Error & { code?: string }) => e.code === 'AGENT_UNREACHABLE');
  const s = await serve(() => { /* never answers */ });
  try {
    const t0 = Date.now();
    await assert.rejects(agentCall(s.sock, '/v1/cni/add', {}, 300), (e: Error & { code?: string }) => e.code === 'AGENT_TIMEOUT');
    assert.ok(Date.now() - t0 < 5000);
  } finally { await s.done(); }
});
