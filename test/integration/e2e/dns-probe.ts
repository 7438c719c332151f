// Runs inside a pod (via `membrane exec`): a list of DNS/TCP operations, one JSON line of results.
// The resolver is the pod's own (/etc/resolv.conf: the lab DNS); queries are sent by hand over UDP
// so the rcode is visible (getaddrinfo hides REFUSED vs NXDOMAIN).
//   bin/node dns-probe.ts '<json array of ops>'
//   {op:'query', name, type?}               -> {rcode, ips, ms}
//   {op:'lookupConnect', name, port}        -> {rcode, ip, connected, ms}  (connect right after the answer)
//   {op:'connect', ip, port}                -> {connected, ms}
//   {op:'raw', hex}                         -> {reply: rcode | null}      (arbitrary bytes to the resolver)
//   {op:'open', id, ip, port} / {op:'get', id} -> {ok}                    (HTTP keep-alive connection)
//   {op:'sleep', ms}
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
// DNS_PROBE_SERVER: another server (an IPv6 address, or an IPv4-mapped one: sent from an IPv6 socket)
const server = process.env.DNS_PROBE_SERVER ?? /nameserver\s+(\S+)/.exec(readFileSync('/etc/resolv.conf', 'utf8'))?.[1] ?? '10.96.0.10';
const timeoutMs = Number(process.env.PROBE_TIMEOUT_MS ?? 1500);

function udp(msg: Buffer, wait = timeoutMs): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket(server.includes(':') ? 'udp6' : 'udp4');
    const t = setTimeout(() => { s.close(); resolve(null); }, wait);
    s.once('message', (m) => { clearTimeout(t); s.close(); resolve(m); });
    s.once('error', () => { clearTimeout(t); resolve(null); });
    s.send(msg, 53, server);
  });
}

async function query(name: string, type = 'A'): Promise<{ rcode: string; ips: string[]; ms: number }> {
  const t0 = performance.now();
  const r = await udp(dnsPacket.encode({ id: (Math.random() * 65535) | 0, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as 'A' }] }));
  const ms = performance.now() - t0;
  if (!r) return { rcode: 'TIMEOUT', ips: [], ms };
  const p = dnsPacket.decode(r) as dnsPacket.DecodedPacket & { rcode?: string };
  return { rcode: p.rcode ?? RCODES[r[3]! & 15] ?? 'UNKNOWN', ips: (p.answers ?? []).filter((a) => a.type === 'A' || a.type === 'AAAA').map((a) => String((a as { data?: unknown }).data)), ms };
}

function tcp(ip: string, port: number): Promise<{ connected: boolean; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = connect({ host: ip, port });
    const t = setTimeout(() => { s.destroy(); resolve({ connected: false, ms: performance.now() - t0 }); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve({ connected: true, ms: performance.now() - t0 }); });
    s.once('error', () => { clearTimeout(t); resolve({ connected: false, ms: performance.now() - t0 }); });
  });
}

const conns = new Map<string, Socket>();
function get(s: Socket): Promise<boolean> {
  return new Promise((resolve) => {
    let buf = '';
    const t = setTimeout(() => { s.off('data', on); resolve(false); }, timeoutMs);
    const on = (d: Buffer) => {
      buf += d.toString();
      if (/\r\n\r\n/.test(buf) && buf.endsWith('\n')) { clearTimeout(t); s.off('data', on); resolve(buf.startsWith('HTTP/1.1 200')); }
    };
    s.on('data', on);
    s.write('GET / HTTP/1.1\r\nHost: probe\r\nConnection: keep-alive\r\n\r\n');
  });
}

const ops = JSON.parse(process.argv[2] ?? '[]') as Record<string, unknown>[];
const out: unknown[] = [];
for (const o of ops) {
  try {
    switch (o.op) {
      case 'query': out.push(await query(String(o.name), o.type as string | undefined)); break;
      case 'lookupConnect': {
        const q = await query(String(o.name));
        const ip = q.ips[0];
        out.push(ip ? { rcode: q.rcode, ip, ...(await tcp(ip, Number(o.port))) } : { rcode: q.rcode, connected: false });
        break;
      }
      case 'connect': out.push(await tcp(String(o.ip), Number(o.port))); break;
      case 'raw': {
        const r = await udp(Buffer.from(String(o.hex), 'hex'), Number(o.waitMs ?? 700));
        out.push({ reply: r && r.length >= 4 ? RCODES[r[3]! & 15] ?? String(r[3]! & 15) : null });
        break;
      }
      case 'open': {
        const s = connect({ host: String(o.ip), port: Number(o.port) });
        s.on('error', () => {});
        const ok = await new Promise<boolean>((res) => {
          const t = setTimeout(() => res(false), timeoutMs);
          s.once('connect', () => { clearTimeout(t); res(true); });
        });
        conns.set(String(o.id), s);
        out.push({ ok: ok && (await get(s)) });
        break;
      }
      case 'get': {
        const s = conns.get(String(o.id));
        out.push({ ok: !!s && !s.destroyed && (await get(s)) });
        break;
      }
      case 'sleep': await new Promise((r) => setTimeout(r, Number(o.ms))); out.push(null); break;
      default: out.push({ error: `unknown op ${String(o.op)}` });
    }
  } catch (e) {
    out.push({ error: (e as Error).message });
  }
}
for (const s of conns.values()) s.destroy();
process.stdout.write(JSON.stringify(out) + '\n');
