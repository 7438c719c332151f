/**
 * The world's HTTPS echo: one process in the world namespace serving HTTPS on every given port
 * (all addresses), with a certificate from the lab CA for whatever name the client sends as SNI
 * (issued on first use, cached). Answers like the HTTP echo: JSON of what it received; the AI API
 * hosts (api.openai.com, api.anthropic.com) answer in their API's shape, streams included (../world-ai.ts).
 *
 *   bin/node src/lab/dns/tls-echo.ts --state-dir=DIR --ports=443 [--names=ip=name,...] [--ready=F]
 */
import { createServer } from 'node:https';
import { createSecureContext, type SecureContext } from 'node:tls';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ensureLabCA, issueServerCert } from '../ca.ts';
import { aiAnswer, writeSse } from '../world-ai.ts';

const { values } = parseArgs({
  options: {
    'state-dir': { type: 'string' },
    ports: { type: 'string', default: '443' },
    names: { type: 'string', default: '' },
    ready: { type: 'string' },
    id: { type: 'string', default: '' },
  },
});
const ca = await ensureLabCA(values['state-dir']!);
const names = new Map(values.names!.split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
const contexts = new Map<string, Promise<SecureContext>>();
function contextFor(name: string): Promise<SecureContext> {
  let c = contexts.get(name);
  if (!c) {
    c = issueServerCert(ca, [name]).then((k) => createSecureContext({ cert: k.cert, key: k.key }));
    contexts.set(name, c);
  }
  return c;
}
const fallback = await issueServerCert(ca, ['lab.invalid', ...new Set(names.values())]);
const ports = values.ports!.split(',').filter(Boolean).map(Number);
let pending = ports.length;
for (const port of ports) {
  const make = () => createServer({
    cert: fallback.cert, key: fallback.key,
    SNICallback: (sni, cb) => { contextFor(sni.toLowerCase()).then((c) => cb(null, c), (e: Error) => cb(e)); },
  }, (req, res) => {
    let size = 0;
    const kept: Buffer[] = [];
    req.on('data', (c: Buffer) => { if (size < 65536) kept.push(c); size += c.length; });
    req.on('end', () => {
      const local = (req.socket.localAddress ?? '').replace(/^::ffff:/, '');
      const sni = (req.socket as { servername?: string | false }).servername || '';
      const host = names.get(local) ?? local;
      const echo = {
        host, sni, method: req.method, path: req.url, headers: req.headers, bodySize: size, tls: true,
        client: { address: (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''), port: req.socket.remotePort },
        server: { address: local, port: req.socket.localPort },
      };
      // The AI API hosts answer in their API's shape; the echo fields ride along for tests.
      const persona = aiAnswer(sni || host, req.method ?? 'GET', req.url ?? '/', Buffer.concat(kept).toString('utf8'), req);
      if (persona?.kind === 'sse') {
        void writeSse(res, persona);
        return;
      }
      const body = JSON.stringify(persona ? { ...persona.body, ...echo } : echo);
      res.writeHead(persona?.status ?? 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) + 1 });
      res.end(body + '\n');
    });
  });
  const srv = make();
  srv.on('tlsClientError', () => {});
  srv.on('error', (e) => { process.stderr.write(`tls-echo ${port}: ${e.message}\n`); process.exit(1); });
  // dual stack (enable-ipv6: the world hosts have IPv6 addresses too): the same server on IPv6;
  // without IPv6 in the namespace it gets no connection, and a failure to listen is not fatal
  const srv6 = make();
  srv6.on('tlsClientError', () => {});
  srv6.on('error', () => {});
  srv6.listen({ port, host: '::', ipv6Only: true });
  srv.listen({ port, host: '0.0.0.0' }, () => {
    if (--pending === 0 && values.ready) writeFileSync(values.ready, String(process.pid));
  });
}
process.on('SIGTERM', () => process.exit(0));
