// Runs inside a pod's network namespace (via `membrane exec`): probes many targets at once and
// prints one JSON line: {"<ip>:<port>/<proto>": true|false, ...} (an IPv6 <ip> is written bare: fd00::5:80/tcp).
// TCP: connected within the timeout. UDP: an echo came back within the timeout (the lab's echo
// workload answers every datagram), so a dropped request or a dropped reply both read as false.
import { connect, isIPv6 } from 'node:net';
import { createSocket } from 'node:dgram';

const timeoutMs = Number(process.env.PROBE_TIMEOUT_MS ?? 700);
const targets = process.argv.slice(2); // ip:port/tcp|udp

function tcp(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: ip, port });
    const t = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

function udp(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket(isIPv6(ip) ? 'udp6' : 'udp4');
    const done = (ok: boolean) => { clearTimeout(t); s.close(); resolve(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('message', () => done(true));
    s.once('error', () => done(false));
    s.send(Buffer.from('probe'), port, ip);
  });
}

const results = await Promise.all(targets.map(async (t) => {
  const m = /^(.+):(\d+)\/(tcp|udp)$/i.exec(t);
  if (!m) return [t, false] as const;
  const ok = m[3]!.toLowerCase() === 'tcp' ? await tcp(m[1]!, Number(m[2])) : await udp(m[1]!, Number(m[2]));
  return [t, ok] as const;
}));
process.stdout.write(JSON.stringify(Object.fromEntries(results)) + '\n');
