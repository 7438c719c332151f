/**
 * The lab's echo workload: one process per pod (or per world namespace) serving an HTTP echo on
 * every TCP port and a UDP echo on every UDP port it is given.
 *
 *   bin/node src/lab/workloads/echo.ts --id=ID --pod=NAME --namespace=NS --tcp=80,81 --udp=80,81
 *        [--names=198.51.100.10=echo-a.world.lab,...] [--ready=FILE]
 *
 * HTTP: any path answers 200 with JSON {pod, namespace, host, method, path, headers, bodySize,
 * client, server}; `/hostname` answers the pod name as text (agnhost netexec); `/status/NNN`
 * answers that status. The world's AI API hosts (api.openai.com, api.anthropic.com) answer in
 * their API's shape, streams included (../world-ai.ts). UDP: `hostname` → pod name, `echo X` → X, anything else is echoed back.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { aiAnswer, writeSse } from '../world-ai.ts';

const { values } = parseArgs({
  options: {
    id: { type: 'string', default: '' },
    pod: { type: 'string', default: 'echo' },
    namespace: { type: 'string', default: '' },
    tcp: { type: 'string', default: '' },
    udp: { type: 'string', default: '' },
    names: { type: 'string', default: '' },
    ready: { type: 'string' },
  },
});
const ports = (s: string) => s.split(',').filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0 && n < 65536);
const tcp = ports(values.tcp!);
const udp = ports(values.udp!);
const names = new Map(values.names!.split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
const pod = values.pod!;
const namespace = values.namespace!;
const hostFor = (local: string | undefined) => names.get((local ?? '').replace(/^::ffff:/, '')) ?? pod;

function handle(req: IncomingMessage, res: ServerResponse): void {
  let size = 0;
  const kept: Buffer[] = [];
  req.on('data', (c: Buffer) => { if (size < 65536) kept.push(c); size += c.length; });
  req.on('end', () => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    const local = req.socket.localAddress;
    const host = hostFor(local);
    const persona = names.size ? aiAnswer(host, req.method ?? 'GET', url, Buffer.concat(kept).toString('utf8'), req) : undefined;
    if (persona?.kind === 'sse') {
      void writeSse(res, persona);
      return;
    }
    const echo = {
      pod: host, namespace, host, method: req.method, path: url, headers: req.headers, bodySize: size,
      client: { address: (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''), port: req.socket.remotePort },
      server: { address: (local ?? '').replace(/^::ffff:/, ''), port: req.socket.localPort },
    };
    if (persona) {
      // the AI API hosts answer in their API's shape; the echo fields ride along for tests (as over TLS)
      const body = JSON.stringify({ ...persona.body, ...echo });
      res.writeHead(persona.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) + 1 });
      res.end(body + '\n');
      return;
    }
    if (path === '/hostname') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(host);
      return;
    }
    const m = /^\/status\/(\d{3})$/.exec(path);
    const status = m ? Number(m[1]) : 200;
    const body = JSON.stringify(echo);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) + 1 });
    res.end(body + '\n');
  });
  req.on('error', () => {});
}

let pending = tcp.length + udp.length;
function listening(): void {
  if (--pending === 0 && values.ready) writeFileSync(values.ready, String(process.pid));
}
function fail(what: string, e: Error): never {
  process.stderr.write(`echo ${values.id}: ${what}: ${e.message}\n`);
  process.exit(1);
}

for (const port of tcp) {
  const srv = createServer(handle);
  srv.keepAliveTimeout = 5000;
  srv.on('error', (e) => fail(`tcp ${port}`, e));
  srv.on('clientError', (_e, sock) => sock.destroy());
  srv.listen({ port, host: '0.0.0.0' }, listening);
  // dual stack (enable-ipv6): the same server on IPv6 too; a pod without IPv6 just never gets a
  // connection on it (and a failure to listen there is not the pod's failure)
  const srv6 = createServer(handle);
  srv6.keepAliveTimeout = 5000;
  srv6.on('error', () => {});
  srv6.on('clientError', (_e, sock) => sock.destroy());
  srv6.listen({ port, host: '::', ipv6Only: true });
}
function udpEcho(port: number, family: 'udp4' | 'udp6'): void {
  const s = createSocket(family === 'udp6' ? { type: family, ipv6Only: true } : { type: family });
  // as for TCP: IPv6 is the pod's only when enable-ipv6 gave it an address
  s.on('error', (e) => { if (family === 'udp4') fail(`udp ${port}`, e); });
  s.on('message', (msg, rinfo) => {
    const text = msg.toString('utf8').trim();
    const reply = text === 'hostname' ? Buffer.from(pod) : text.startsWith('echo ') ? Buffer.from(text.slice(5)) : msg;
    s.send(reply, rinfo.port, rinfo.address);
  });
  if (family === 'udp4') s.bind(port, '0.0.0.0', listening);
  else s.bind(port, '::');
}
for (const port of udp) {
  udpEcho(port, 'udp4');
  udpEcho(port, 'udp6');
}
if (pending === 0 && values.ready) writeFileSync(values.ready, String(process.pid));
if (tcp.length + udp.length === 0) setInterval(() => {}, 1 << 30);
process.on('SIGTERM', () => process.exit(0));
process.stdout.write(`echo ${values.id}: pod ${namespace}/${pod} tcp [${tcp.join(',')}] udp [${udp.join(',')}]\n`);
