/**
 * The spike's forwarding checked byte for byte where OpenSSL's writes would block (WANT_WRITE both
 * ways, the copy retried as is, the other side held and resumed): a Node HTTPS origin (the bench's
 * CA) answering a 16 MiB download and hashing a 16 MiB upload, through the spike, with a client that
 * reads the download slowly (paused between chunks) and an origin that reads the upload slowly;
 * and a request after each on the same connection (the legs resumed, nothing left behind).
 * Exits non-zero on any mismatch.
 *
 *   bin/node bench/tls/native-spike/check.ts [--port 19743]
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { benchCa } from '../../support.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '19743' } } });
const ORIGIN = Number(values.port), PROXY = ORIGIN + 1;
const NAME = 'api.bench.test';
const dir = mkdtempSync(join(tmpdir(), 'native-spike-check-'));
const SIZE = 16 << 20;
const body = randomBytes(SIZE);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const slow = () => new Promise((r) => setTimeout(r, 1));
let failed = 0;
const ok = (cond: boolean, what: string) => { console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`); if (!cond) failed++; };
let proxy: ReturnType<typeof spawn> | undefined;
// whatever ends this process, the spike and the files go with it
process.on('exit', () => { proxy?.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); });
process.on('uncaughtException', (e) => { console.log(`FAIL ${e}`); process.exit(1); });
const origin = await (async () => {
  benchCa(dir, 'ca', NAME);
  benchCa(dir, 'ica', NAME);
  const s = https.createServer({ cert: readFileSync(join(dir, 'leaf-ca.crt')), key: readFileSync(join(dir, 'leaf-ca.key')) }, async (req, res) => {
    if (req.url === '/down') { res.writeHead(200, { 'content-length': SIZE }); res.end(body); return; }
    const h = createHash('sha256');
    let n = 0;
    // the origin reads the upload slowly: the spike's writes upstream block
    req.on('error', () => {});
    for await (const c of req) { h.update(c as Buffer); n += (c as Buffer).length; if (n % (1 << 20) < (c as Buffer).length) await slow(); }
    const out = `${n} ${h.digest('hex')}`;
    res.writeHead(200, { 'content-length': Buffer.byteLength(out) });
    res.end(out);
  });
  await new Promise<void>((r) => s.listen(ORIGIN, '127.0.0.1', r));
  return s;
})();
// a forwarder that loses bytes leaves the client waiting for the rest: that is a failure, not a hang
const deadline = setTimeout(() => { console.log('FAIL no answer within 20 s'); proxy?.kill('SIGTERM'); origin.closeAllConnections(); rmSync(dir, { recursive: true, force: true }); process.exit(1); }, 20_000);
try {
  proxy = spawn(process.execPath, [join(import.meta.dirname, 'server.ts'), '--mode', 'intercept', '--port', String(PROXY), '--origin', String(ORIGIN), '--dir', dir, '--name', NAME], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, MEMBRANE_NATIVE_DEBUG: '1' } });
  await new Promise<void>((res, rej) => { proxy!.stdout!.on('data', (d: Buffer) => { if (String(d).includes('ready')) res(); }); proxy!.once('exit', (c) => rej(new Error(`spike exited ${c}`))); });
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: readFileSync(join(dir, 'ica.crt')), servername: NAME });
  const call = (method: string, path: string, send?: Buffer, slowRead = false) => new Promise<{ status: number; body: Buffer; socket: unknown }>((res, rej) => {
    const req = https.request({ host: '127.0.0.1', port: PROXY, method, path, agent, servername: NAME, headers: { host: NAME, ...(send ? { 'content-length': send.length } : {}) } }, async (r) => {
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of r) { chunks.push(c as Buffer); n += (c as Buffer).length; if (slowRead && n % (1 << 20) < (c as Buffer).length) await slow(); }
      res({ status: r.statusCode!, body: Buffer.concat(chunks), socket: req.socket });
    });
    req.on('error', rej);
    req.end(send);
  });
  const d = await call('GET', '/down', undefined, true);
  ok(d.status === 200 && d.body.length === SIZE && sha(d.body) === sha(body), `16 MiB download read slowly: ${d.body.length} bytes, same hash`);
  const u = await call('POST', '/up', body);
  ok(u.status === 200 && String(u.body) === `${SIZE} ${sha(body)}`, `16 MiB upload read slowly by the origin: origin got ${String(u.body).slice(0, 20)}…`);
  ok(u.socket === d.socket, 'the same client connection for both (keep-alive through the spike)');
  const small = await call('GET', '/down', undefined, false);
  ok(small.status === 200 && sha(small.body) === sha(body), 'a third request on the same connection');
  agent.destroy();
  // the spike's counts (stderr): the blocked writes this check is for
  proxy.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 300));
} finally {
  proxy?.kill('SIGTERM');
  origin.close();
  origin.closeAllConnections();
  rmSync(dir, { recursive: true, force: true });
  clearTimeout(deadline);
}
process.exit(failed ? 1 : 0);
