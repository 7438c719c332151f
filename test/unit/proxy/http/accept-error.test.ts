/**
 * The proxy's listeners under file-descriptor exhaustion (a flood): the process lives on, the
 * listeners keep accepting once descriptors are free again. A failed accept the listening handle
 * reports (libuv passes one on when its own EMFILE remedy fails) is counted and logged once per
 * interval, never Node's unhandled 'error' that ends the process. The proxy runs in a child
 * process under a low RLIMIT_NOFILE (prlimit), so exhaustion stays there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const NODE = fileURLToPath(new URL('../../../../bin/node', import.meta.url));
const CHILD = fileURLToPath(new URL('./accept-error-child.ts', import.meta.url));

interface Child { cp: ChildProcess; port: number; ask(line: string): Promise<string>; exited: Promise<number | string> }

async function startChild(nofile: number): Promise<Child> {
  const cp = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, NODE, CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | string>((r) => cp.on('exit', (c, s) => r(c ?? s ?? 'gone')));
  const lines = createInterface({ input: cp.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await Promise.race([lines.next(), exited.then((c) => ({ value: `exited ${c}`, done: true }))]);
    return String(r.value);
  };
  const first = await next();
  assert.match(first, /^port \d+$/, `the child proxy started: ${first}`);
  return { cp, port: Number(first.split(' ')[1]), exited, ask: async (line) => { cp.stdin!.write(`${line}\n`); return next(); } };
}

/** One request through the proxy; the status line, or the error. */
function request(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const t = setTimeout(() => { s.destroy(); resolve(`timeout: ${got}`); }, 5000);
    s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: origin\r\n\r\n'));
    s.on('data', (d) => { got += d.toString('latin1'); if (got.includes('\r\n\r\nok')) { clearTimeout(t); s.destroy(); resolve(got.split('\r\n')[0]!); } });
    s.on('error', (e) => { clearTimeout(t); resolve(`error: ${e.message}`); });
  });
}

test('failed accepts reported by the listening handle: counted, logged once per interval, the proxy serves on', async () => {
  const c = await startChild(256);
  try {
    assert.equal(await request(c.port), 'HTTP/1.1 200 OK', 'a request passes (positive control)');
    assert.equal(await c.ask('fail 1000'), 'failed', 'the proxy process lives through 1000 failed accepts');
    const stats = JSON.parse((await c.ask('stats')).slice('stats '.length)) as { acceptErrors: number; warnings: { o: { error: string; failed: number } }[] };
    assert.equal(stats.acceptErrors, 1000);
    assert.equal(stats.warnings.length, 1, 'one log line for the burst');
    assert.equal(stats.warnings[0]!.o.error, 'EMFILE');
    assert.equal(await request(c.port), 'HTTP/1.1 200 OK', 'the listener still accepts');
  } finally {
    c.cp.kill('SIGKILL');
    await c.exited;
  }
});

test('a connection flood past RLIMIT_NOFILE: the proxy lives, and accepts again once descriptors are free', async () => {
  const c = await startChild(64);
  const socks: net.Socket[] = [];
  try {
    assert.match(await c.ask('fill'), /^filled \d+$/);
    let closed = 0;
    for (let i = 0; i < 300; i++) {
      const s = net.connect(c.port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => closed++);
      socks.push(s);
    }
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(c.cp.exitCode, null, 'the proxy process lives');
    assert.match(await c.ask('free'), /^freed$/);
    for (const s of socks) s.destroy();
    assert.equal(await request(c.port), 'HTTP/1.1 200 OK', `the listener accepts again (${closed} of the flood's connections were closed while descriptors were out)`);
  } finally {
    for (const s of socks) s.destroy();
    c.cp.kill('SIGKILL');
    await c.exited;
  }
});
