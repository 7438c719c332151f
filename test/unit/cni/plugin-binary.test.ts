/**
 * The native plugin (src/cni/membrane-cni.c, built by scripts/build-cni.sh) called as a runtime
 * calls it: CNI_* variables and stdin. Without an agent it must give the errors src/cni/spec.ts
 * gives (the same table, and random configurations: both sides must agree); against a real
 * node:http server on a unix socket (the agent's API server is one) it must forward the call
 * intact and print the answer; hostile input (random bytes, deep nesting, oversized stdin,
 * an answer that is not the agent's) must end in a CNI error, never a crash.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { checkVersion, CniCode, CniError, parseNetConf, SUPPORTED_VERSIONS } from '../../../src/cni/spec.ts';

const REPO = join(import.meta.dirname, '../../..');
const BIN = join(REPO, 'dist/cni/membrane-cni');
const NO_AGENT = '/nonexistent/membrane/agent.sock';

before(() => {
  const src = join(REPO, 'src/cni/membrane-cni.c');
  if (!existsSync(BIN) || statSync(BIN).mtimeMs < statSync(src).mtimeMs) execFileSync('bash', [join(REPO, 'scripts/build-cni.sh')], { stdio: 'inherit' });
});

interface Run { status: number; out: Record<string, unknown> | undefined; raw: string; stderr: string; stdinError?: string }

function run(env: Record<string, string>, stdin: string | Buffer, timeoutMs = 20_000): Promise<Run> {
  let stdinError: string | undefined;
  return new Promise((res) => {
    const c = execFile(BIN, [], { env: { PATH: '/usr/bin:/bin', ...env }, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      let out: Record<string, unknown> | undefined;
      try { out = stdout.trim() ? JSON.parse(stdout) as Record<string, unknown> : undefined; } catch { out = undefined; }
      res({ status, out, raw: stdout, stderr, ...(stdinError ? { stdinError } : {}) });
    });
    c.stdin!.on('error', (e: NodeJS.ErrnoException) => { stdinError = e.code ?? e.message; });
    c.stdin!.end(stdin);
  });
}

/** What spec.ts answers for this stdin: its code, or 11 (the agent is not there) when it accepts it. */
function tsCode(stdin: string): number {
  try {
    checkVersion(parseNetConf(stdin).cniVersion);
    return CniCode.TryAgainLater;
  } catch (e) {
    return e instanceof CniError ? e.code : -1;
  }
}

const ok = { cniVersion: '1.0.0', name: 'membrane', type: 'membrane-cni', agentSocket: NO_AGENT };

test('without an agent: the same codes as spec.ts for every kind of bad configuration', async () => {
  const table: string[] = [
    JSON.stringify(ok),
    JSON.stringify({ ...ok, runtimeConfig: { portMappings: [{ hostPort: 80 }] }, prevResult: { ips: [] }, args: { cni: {} } }),
    'not json', '', '   ', '[]', 'null', '"x"', '1', '{"a":1} x', '{"a":1,}', '{"a" 1}', '{"\\x": 1}', '{"a":"\u0001"}',
    JSON.stringify({ ...ok, name: undefined }), JSON.stringify({ ...ok, name: '-bad' }), JSON.stringify({ ...ok, name: 'a b' }), JSON.stringify({ ...ok, name: 7 }),
    JSON.stringify({ ...ok, type: '' }), JSON.stringify({ ...ok, type: null }),
    JSON.stringify({ ...ok, agentSocket: 'rel.sock' }), JSON.stringify({ ...ok, agentSocket: '/' }), JSON.stringify({ ...ok, agentSocket: '/\n' }), JSON.stringify({ ...ok, agentSocket: ['/x'] }),
    JSON.stringify({ ...ok, namespace: 'Not_DNS' }), JSON.stringify({ ...ok, namespace: 'shop' }), JSON.stringify({ ...ok, namespace: 'a'.repeat(64) }), JSON.stringify({ ...ok, namespace: 'a-' }),
    JSON.stringify({ ...ok, timeoutMs: 5 }), JSON.stringify({ ...ok, timeoutMs: 100 }), JSON.stringify({ ...ok, timeoutMs: 600001 }), JSON.stringify({ ...ok, timeoutMs: 150.5 }), JSON.stringify({ ...ok, timeoutMs: '200' }),
    '{"cniVersion":"1.0.0","name":"m","type":"t","agentSocket":"/nonexistent/a.sock","timeoutMs":1e3}',
    JSON.stringify({ ...ok, 'cni.dev/valid-attachments': [{ containerID: 1 }] }), JSON.stringify({ ...ok, 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }),
    JSON.stringify({ ...ok, 'cni.dev/valid-attachments': [[]] }), JSON.stringify({ ...ok, 'cni.dev/valid-attachments': {} }),
    JSON.stringify({ ...ok, cniVersion: '0.4.0' }), JSON.stringify({ ...ok, cniVersion: '' }), JSON.stringify({ ...ok, cniVersion: 2 }),
    // the last of a duplicated key counts, as JSON.parse keeps it
    '{"cniVersion":"1.0.0","name":"-bad","name":"good","type":"t","agentSocket":"/nonexistent/a.sock"}',
    '{"cniVersion":"1.0.0","name":"good","name":"-bad","type":"t","agentSocket":"/nonexistent/a.sock"}',
    '{"cniVersion":"1.0.0","na\\u006de":"good","type":"t","agentSocket":"/nonexistent/a.sock"}',
  ];
  for (const stdin of table) {
    const r = await run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' }, stdin);
    assert.equal(r.status, 1, `${stdin}: ${r.raw}`);
    assert.equal(r.out?.code, tsCode(stdin), `${stdin}: ${r.raw}`);
    assert.equal(typeof r.out?.msg, 'string');
  }
});

test('without an agent: random configurations get the same code from the plugin as from spec.ts (property)', async () => {
  const field = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('1.0.0', '1.1.0', 'membrane', 'shop', NO_AGENT, 'rel', '/', ''), fc.integer({ min: -5, max: 700_000 }), fc.constant(null), fc.boolean(), fc.array(fc.anything({ maxDepth: 2 }), { maxLength: 2 }));
  const conf = fc.record({
    cniVersion: field, name: field, type: field, agentSocket: fc.oneof(fc.constant(NO_AGENT), field), namespace: field, timeoutMs: field,
    'cni.dev/valid-attachments': fc.oneof(fc.array(fc.record({ containerID: field, ifname: field }, { requiredKeys: [] }), { maxLength: 2 }), field),
  }, { requiredKeys: [] });
  await fc.assert(fc.asyncProperty(conf, async (c) => {
    const stdin = JSON.stringify(c);
    const r = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }, stdin);
    return r.status === 1 && r.out?.code === tsCode(stdin);
  }), { numRuns: 80 });
});

test('VERSION answers without an agent, in the caller\'s version; a bad CNI_COMMAND is code 4', async () => {
  const v = await run({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  assert.equal(v.status, 0, v.raw);
  assert.deepEqual(v.out, { cniVersion: '1.0.0', supportedVersions: [...SUPPORTED_VERSIONS] });
  assert.deepEqual((await run({ CNI_COMMAND: 'VERSION' }, '')).out, { cniVersion: SUPPORTED_VERSIONS.at(-1), supportedVersions: [...SUPPORTED_VERSIONS] });
  // an early error still reads stdin to its end: the runtime writing it gets no EPIPE
  const early = await run({ CNI_COMMAND: 'FROB' }, JSON.stringify({ ...ok, pad: 'x'.repeat(512 << 10) }));
  assert.deepEqual([early.out?.code, early.stdinError], [CniCode.InvalidEnvironment, undefined]);
  for (const cmd of [undefined, 'FROB', 'add', 'ADD ']) {
    const r = await run(cmd === undefined ? {} : { CNI_COMMAND: cmd }, JSON.stringify(ok));
    assert.equal(r.status, 1);
    assert.equal(r.out?.code, CniCode.InvalidEnvironment, r.raw);
  }
});

test('agent down: ADD is 11 and STATUS is 50, naming the socket; errors answer in the caller\'s version', async () => {
  const add = await run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' }, JSON.stringify({ ...ok, cniVersion: '1.0.0' }));
  assert.deepEqual([add.status, add.out?.code, add.out?.cniVersion], [1, 11, '1.0.0']);
  assert.match(String(add.out?.msg), new RegExp(`membrane agent is not running: no API socket at ${NO_AGENT}`));
  const status = await run({ CNI_COMMAND: 'STATUS' }, JSON.stringify(ok));
  assert.equal(status.out?.code, CniCode.PluginNotAvailable, status.raw);
  const long = await run({ CNI_COMMAND: 'DEL' }, JSON.stringify({ ...ok, agentSocket: `/${'x'.repeat(200)}` }));
  assert.equal(long.out?.code, CniCode.InvalidNetworkConfig, long.raw);
});

async function agent(h: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void): Promise<{ sock: string; done(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'cni-bin-'));
  const sock = join(dir, 'agent.sock');
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => h(req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((r) => server.listen(sock, r));
  return { sock, done: async () => { server.closeAllConnections(); await new Promise((r) => server.close(r)); rmSync(dir, { recursive: true, force: true }); } };
}

test('with an agent: the variables and stdin reach POST /v1/cni/exec intact, its result is printed with its exit status', async () => {
  let seen: { url?: string; method?: string; body?: unknown } = {};
  let answer: unknown = { exit: 0, result: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/32' }], note: 'wé "q" \\ \u2028' } };
  const s = await agent((req, body, res) => {
    seen = { url: req.url!, method: req.method!, body: JSON.parse(body.toString('utf8')) };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(answer));
  });
  try {
    const stdin = JSON.stringify({ ...ok, agentSocket: s.sock, runtimeConfig: { aliases: ['wé\t"x"\\'] }, big: 'y'.repeat(300_000) });
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_NETNS: '/run/netns/c 1', CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=wéb;MEMBRANE_LABELS=app="x"\\', CNI_PATH: '/opt/cni/bin' };
    const r = await run(env, stdin);
    assert.equal(r.status, 0, r.raw);
    assert.deepEqual(r.out, (answer as { result: unknown }).result);
    assert.equal(seen.url, '/v1/cni/exec');
    assert.equal(seen.method, 'POST');
    assert.deepEqual(seen.body, { command: 'ADD', containerId: 'abc', netns: '/run/netns/c 1', ifname: 'eth0', args: env.CNI_ARGS, path: '/opt/cni/bin', stdin });

    answer = { exit: 1, result: { cniVersion: '1.0.0', code: 3, msg: 'unknown' } };
    const e = await run({ CNI_COMMAND: 'CHECK', CNI_CONTAINERID: 'abc', CNI_IFNAME: '' }, JSON.stringify({ ...ok, agentSocket: s.sock }));
    assert.equal(e.status, 1);
    assert.deepEqual(e.out, { cniVersion: '1.0.0', code: 3, msg: 'unknown' });
    assert.deepEqual(seen.body, { command: 'CHECK', containerId: 'abc', stdin: JSON.stringify({ ...ok, agentSocket: s.sock }) }, 'empty variables are left out');

    answer = { exit: 0 };
    const d = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' }, JSON.stringify({ ...ok, agentSocket: s.sock }));
    assert.deepEqual([d.status, d.raw], [0, '']);

    // answers that are not the agent's: a CNI error, not a crash or a forged status
    for (const bad of [{ exit: 7 }, { exit: '0' }, { result: {} }, { exit: 0, result: [1] }, [], 'x']) {
      answer = bad;
      const b = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' }, JSON.stringify({ ...ok, agentSocket: s.sock }));
      assert.equal(b.status, 1, JSON.stringify(bad));
      assert.equal(b.out?.code, CniCode.IoFailure, `${JSON.stringify(bad)}: ${b.raw}`);
    }
  } finally { await s.done(); }
});

test('an API error answer is code 5 with the agent\'s code, message and hint', async () => {
  const s = await agent((_req, _b, res) => { res.statusCode = 404; res.end(JSON.stringify({ code: 'API_NOT_FOUND', message: 'no route POST /v1/cni/exec', hint: 'upgrade the agent' })); });
  try {
    const r = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' }, JSON.stringify({ ...ok, agentSocket: s.sock }));
    assert.equal(r.out?.code, CniCode.IoFailure, r.raw);
    assert.match(String(r.out?.msg), /HTTP 404\): API_NOT_FOUND: no route POST \/v1\/cni\/exec/);
    assert.equal(r.out?.details, 'upgrade the agent');
  } finally { await s.done(); }
});

test('an agent that never answers: code 11 at timeoutMs; one that speaks no HTTP or sends too much: code 5', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cni-raw-'));
  const sock = join(dir, 'agent.sock');
  let mode = 'silent';
  const server = createNetServer((c) => {
    c.on('error', () => {});
    if (mode === 'garbage') c.end('SSH-2.0-x\r\n\r\n');
    else if (mode === 'flood') { const b = Buffer.alloc(1 << 20, 0x61); const w = () => { while (c.writable && c.write(b)); }; c.on('drain', w); w(); }
    else if (mode === 'chunked') c.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n');
    else if (mode === 'short') c.end('HTTP/1.1 200 OK\r\nContent-');
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const conf = JSON.stringify({ ...ok, agentSocket: sock, timeoutMs: 300 });
    const t0 = Date.now();
    const slow = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'a', CNI_IFNAME: 'eth0' }, conf);
    assert.equal(slow.out?.code, CniCode.TryAgainLater, slow.raw);
    assert.match(String(slow.out?.msg), /did not answer POST \/v1\/cni\/exec within 300 ms/);
    assert.ok(Date.now() - t0 < 10_000);
    for (const m of ['garbage', 'flood', 'chunked', 'short']) {
      mode = m;
      const r = await run({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'a', CNI_IFNAME: 'eth0' }, JSON.stringify({ ...ok, agentSocket: sock, timeoutMs: 20_000 }));
      assert.equal(r.status, 1, m);
      assert.equal(r.out?.code, CniCode.IoFailure, `${m}: ${r.raw}`);
    }
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hostile stdin: random bytes, deep nesting, invalid UTF-8, over 1 MiB: always one CNI error result', async () => {
  await fc.assert(fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.string({ maxLength: 100 }).map((s) => Buffer.from(s))), async (bytes) => {
    const r = await run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c' }, Buffer.from(bytes));
    return r.status === 1 && typeof r.out?.code === 'number' && r.raw.endsWith('}\n') && r.raw.indexOf('\n') === r.raw.length - 1;
  }), { numRuns: 60 });
  const deep = await run({ CNI_COMMAND: 'ADD' }, `${'['.repeat(100_000)}${']'.repeat(100_000)}`);
  assert.equal(deep.out?.code, CniCode.DecodeFailure, deep.raw);
  assert.match(String(deep.out?.details), /nested too deep/);
  const utf8 = await run({ CNI_COMMAND: 'ADD' }, Buffer.concat([Buffer.from('{"cniVersion":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]));
  assert.equal(utf8.out?.code, CniCode.DecodeFailure, utf8.raw);
  const big = await run({ CNI_COMMAND: 'ADD' }, JSON.stringify({ ...ok, pad: 'x'.repeat(1 << 20) }));
  assert.equal(big.out?.code, CniCode.InvalidNetworkConfig, big.raw);
  assert.match(String(big.out?.msg), /over 1048576 bytes/);
  const longVar = await run({ CNI_COMMAND: 'ADD', CNI_ARGS: 'a'.repeat(70_000) }, JSON.stringify(ok));
  assert.equal(longVar.out?.code, CniCode.InvalidEnvironment, longVar.raw);
});
