// Runs inside a pod (via `membrane exec`): sends hand-made HTTP requests to an AI API host over
// TLS (verified against a given CA, SNI = the host) or plain TCP, each optionally split into
// segments with gaps, and reports per case the status, headers, body and when each piece of the
// response arrived (epoch ms) with the lab server's `lab_sent_at` stamps found in it.
//   bin/node ai-probe.ts PLAN.json     → one JSON line: the results, in plan order
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

interface Case { name: string; host: string; port: number; tls: boolean; ca?: string; raw: string; pieces?: number; gapMs?: number; timeoutMs?: number }
interface Result { name: string; status: number; headers: Record<string, string>; body: string; arrivals: { at: number; stamps: number[] }[]; closed: boolean; error?: string }

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Case[];
const now = () => performance.timeOrigin + performance.now();

function parse(buf: Buffer): { status: number; headers: Record<string, string>; body: string } {
  const text = buf.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: '' };
  const lines = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) { const c = l.indexOf(':'); headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim(); }
  let body = buf.subarray(Buffer.byteLength(text.slice(0, end + 4), 'latin1'));
  if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    let i = 0;
    for (;;) {
      const le = body.indexOf('\r\n', i);
      if (le < 0) break;
      const n = parseInt(body.toString('latin1', i, le), 16);
      if (!(n > 0)) break;
      parts.push(body.subarray(le + 2, le + 2 + n));
      i = le + 2 + n + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(lines[0]!.split(' ')[1]), headers, body: body.subarray(0, 1 << 16).toString('utf8') };
}

async function run(c: Case): Promise<Result> {
  const ip = net.isIP(c.host) ? c.host : (await lookup(c.host, { family: 4 })).address;
  const raw = Buffer.from(c.raw, 'base64');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const arrivals: Result['arrivals'] = [];
    let closed = false;
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ name: c.name, ...parse(Buffer.concat(chunks)), arrivals, closed, ...(error ? { error } : {}) });
    };
    const sock: net.Socket = c.tls
      ? tls.connect({ host: ip, port: c.port, servername: c.host, ...(c.ca ? { ca: readFileSync(c.ca) } : {}) })
      : net.connect({ host: ip, port: c.port });
    sock.setNoDelay(true);
    const timer = setTimeout(() => finish('timeout'), c.timeoutMs ?? 15000);
    sock.on('data', (d: Buffer) => {
      const at = now();
      chunks.push(d);
      arrivals.push({ at, stamps: [...d.toString('utf8').matchAll(/"lab_sent_at":([0-9.]+)/g)].map((m) => Number(m[1])) });
    });
    sock.on('end', () => { closed = true; finish(); });
    sock.on('error', (e) => finish(e.message));
    sock.once(c.tls ? 'secureConnect' : 'connect', async () => {
      const n = Math.max(1, c.pieces ?? 1);
      const size = Math.ceil(raw.length / n);
      for (let i = 0; i < raw.length; i += size) {
        sock.write(raw.subarray(i, i + size));
        if (c.gapMs && i + size < raw.length) await new Promise((r) => setTimeout(r, c.gapMs));
      }
    });
  });
}

const out: Result[] = [];
for (const c of plan) out.push(await run(c));
process.stdout.write(JSON.stringify(out) + '\n');
