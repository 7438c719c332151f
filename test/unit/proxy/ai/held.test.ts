/**
 * Held request bodies are bounded for the whole proxy, not only per request: many slow senders
 * cannot make the proxy hold unbounded memory. Over the bound a request gets 503 and its
 * connection closes; what was held is released when requests are judged or connections go.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rawExchange } from '../http/harness.ts';
import { aiPolicy, parseResponses, post, startAIHarness } from './harness.ts';

test('over the proxy-wide bound of held bodies: 503 and close; released bytes make room again', async () => {
  const h = await startAIHarness({ maxBodyBytes: 4096, maxHeldBytes: 3000 });
  try {
    await h.apply(aiPolicy('chat', { providers: [{ api: 'openai', hosts: ['api.openai.com'] }] }));
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(1900) }] });
    const req = post('/v1/chat/completions', body);
    const headEnd = req.indexOf('\r\n\r\n') + 4;
    // a slow sender holds 2000 bytes and waits
    const slow = net.connect(h.port, '127.0.0.1');
    await new Promise((r) => slow.on('connect', r));
    slow.write(req.slice(0, headEnd + 1500));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.proxy.heldBytes, 1500);
    const second = await rawExchange(h.port, req, { idleMs: 300 });
    const r2 = parseResponses(second.text)[0]!;
    assert.equal(r2.status, 503);
    assert.equal(second.closed, true);
    assert.equal(h.upstream.length, 0);
    // the slow sender finishes: judged and forwarded, its bytes released
    const got = new Promise<string>((resolve) => { let t = ''; slow.on('data', (c) => { t += c.toString(); if (t.includes('"object"')) resolve(t); }); });
    slow.write(req.slice(headEnd + 1500));
    assert.match(await got, /^HTTP\/1\.1 200 /);
    slow.destroy();
    assert.equal(h.proxy.heldBytes, 0);
    const third = parseResponses((await rawExchange(h.port, req, { idleMs: 300 })).text)[0]!;
    assert.equal(third.status, 200, 'room again once the held bytes are released');
    // a sender that goes away mid-body releases what it held
    const gone = net.connect(h.port, '127.0.0.1');
    await new Promise((r) => gone.on('connect', r));
    gone.write(req.slice(0, headEnd + 1000));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.proxy.heldBytes, 1000);
    gone.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.proxy.heldBytes, 0);
  } finally {
    await h.close();
  }
});
