// Runs inside a pod (via `membrane exec`/spawnIn): L7 load for DURATION ms, one JSON line per result:
//   {k:'dns', name, allowed, rcode, ips, ms}   UDP query to the pod's resolver (allowed / denied name)
//   {k:'keep', status|err}                     a request on ONE keep-alive HTTP connection (reset: err)
//   {k:'new', path, method, status|err}        a request on a new connection each time
// Every line has t (ms since start) and at (wall clock, ms: the test compares it with its own times). Ends with {k:'end'}.
//   env: NAME_OK, NAME_DENIED, HOST (HTTP name), OK_PATH, DENIED_PATH, DURATION_MS (at most), STOP_FILE
//   (stops once it exists), DNS_TIMEOUT_MS
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';

const env = process.env;
const server = /nameserver\s+(\S+)/.exec(readFileSync('/etc/resolv.conf', 'utf8'))?.[1] ?? '10.96.0.10';
const duration = Number(env.DURATION_MS ?? 20_000);
const dnsTimeout = Number(env.DNS_TIMEOUT_MS ?? 5000);
const t0 = Date.now();
const going = () => Date.now() - t0 < duration && !(env.STOP_FILE && existsSync(env.STOP_FILE));
const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ t: Date.now() - t0, at: Date.now(), ...o }) + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** One lookup as a stub resolver does it: the query, and the same query again after a silent second (glibc: timeout 5 s, attempts 2; ours shorter). */
async function lookup(name: string): Promise<{ rcode: string; ips: string[] }> {
  const s = createSocket('udp4');
  const id = (Math.random() * 65535) | 0;
  const msg = dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] });
  try {
    return await new Promise((resolve) => {
      // the resend stops with the lookup (the socket closes after it)
      const t = setTimeout(() => { clearInterval(resend); resolve({ rcode: 'TIMEOUT', ips: [] }); }, dnsTimeout);
      const resend = setInterval(() => s.send(msg, 53, server), 1000);
      s.on('message', (m) => {
        if (m.readUInt16BE(0) !== id) return;
        clearTimeout(t); clearInterval(resend);
        const p = dnsPacket.decode(m);
        resolve({ rcode: RCODES[m[3]! & 15] ?? 'UNKNOWN', ips: (p.answers ?? []).filter((a) => a.type === 'A').map((a) => String((a as { data?: unknown }).data)) });
      });
      s.on('error', () => {});
      s.send(msg, 53, server);
    });
  } finally {
    s.close();
  }
}

async function dnsLoop(name: string, allowed: boolean, every: number): Promise<void> {
  while (going()) {
    const a = Date.now();
    const r = await lookup(name);
    out({ k: 'dns', name, allowed, ...r, ms: Date.now() - a });
    await sleep(every);
  }
}

/** Reads one HTTP/1.1 response (content-length bodies) from a socket; its status. */
function response(s: Socket, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (f: () => void) => { clearTimeout(t); s.off('data', on); s.off('close', onClose); s.off('error', onErr); f(); };
    const t = setTimeout(() => done(() => reject(new Error('timeout'))), timeoutMs);
    const on = (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      done(() => resolve(Number(buf.slice(9, 12))));
    };
    const onClose = () => done(() => reject(new Error('closed')));
    const onErr = (e: Error) => done(() => reject(e));
    s.on('data', on); s.once('close', onClose); s.once('error', onErr);
  });
}

function open(ip: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port: 80 });
    const t = setTimeout(() => { s.destroy(); reject(new Error('connect timeout')); }, 3000);
    s.once('connect', () => { clearTimeout(t); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}
const req = (method: string, path: string, host: string, close: boolean) => `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nConnection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`;

async function keepLoop(ip: string, host: string, path: string): Promise<void> {
  let s: Socket | undefined;
  while (going()) {
    try {
      s ??= await open(ip);
      s.write(req('GET', path, host, false));
      out({ k: 'keep', status: await response(s, 5000) });
    } catch (e) {
      out({ k: 'keep', err: (e as Error).message });
      s?.destroy();
      s = undefined;
    }
    await sleep(200);
  }
  s?.destroy();
}

async function newLoop(ip: string, host: string, method: string, path: string): Promise<void> {
  while (going()) {
    let s: Socket | undefined;
    try {
      s = await open(ip);
      s.write(req(method, path, host, true));
      out({ k: 'new', method, path, status: await response(s, 5000) });
    } catch (e) {
      out({ k: 'new', method, path, err: (e as Error).message });
    } finally {
      s?.destroy();
    }
    await sleep(300);
  }
}

const first = await lookup(env.NAME_OK!);
const ip = first.ips[0];
if (!ip) { out({ k: 'fatal', why: `no address for ${env.NAME_OK}: ${first.rcode}` }); process.exit(1); }
const host = env.HOST ?? env.NAME_OK!;
await Promise.all([
  dnsLoop(env.NAME_OK!, true, 100),
  dnsLoop(env.NAME_DENIED!, false, 400),
  keepLoop(ip, host, env.OK_PATH!),
  newLoop(ip, host, 'GET', env.OK_PATH!),
  newLoop(ip, host, 'POST', env.DENIED_PATH!),
]);
out({ k: 'end' });
