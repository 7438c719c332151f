/**
 * The Star Wars demo's deathstar (cilium/starwars), as Cilium's getting-started guide uses it:
 *
 *   GET  /v1                              the station's description (JSON, with its API list)
 *   GET  /v1/healthz                      `OK`
 *   POST /v1/request-landing              `Ship landed`
 *   PUT  /v1/cargobay                     `Cargo loaded`
 *   GET  /v1/hyper-matter-reactor/status  `Reactor nominal`
 *   PUT  /v1/exhaust-port                 503 with the panic the demo shows
 *
 *   bin/node src/lab/workloads/starwars.ts --id=ID --pod=NAME [--port=80] [--ready=FILE]
 */
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    id: { type: 'string', default: '' },
    pod: { type: 'string', default: 'deathstar' },
    port: { type: 'string', default: '80' },
    ready: { type: 'string' },
  },
});

const DESCRIPTION = (hostname: string) => JSON.stringify({
  name: 'Death Star',
  hostname,
  model: 'DS-1 Orbital Battle Station',
  manufacturer: 'Imperial Department of Military Research, Sienar Fleet Systems',
  cost_in_credits: '1000000000000',
  length: '120000',
  crew: '342953',
  passengers: '843342',
  cargo_capacity: '1000000000000',
  hyperdrive_rating: '4.0',
  starship_class: 'Deep Space Mobile Battlestation',
  api: ['GET   /v1', 'GET   /v1/healthz', 'POST  /v1/request-landing', 'PUT   /v1/cargobay', 'GET   /v1/hyper-matter-reactor/status', 'PUT   /v1/exhaust-port'],
}, null, '\t') + '\n';

export const PANIC = 'Panic: deathstar exploded\n\ngoroutine 1 [running]:\nmain.HandleGarbage(0x2080c3f50, 0x2, 0x4, 0x425c0, 0x5, 0xa)\n' +
  '        /code/src/github.com/empire/deathstar/\n        temp.go:9 +0x64\nmain.main()\n' +
  '        /code/src/github.com/empire/deathstar/\n        temp.go:5 +0x85\n';

const routes: Record<string, [number, string, string]> = {
  'GET /v1': [200, 'application/json', DESCRIPTION(values.pod!)],
  'GET /v1/': [200, 'application/json', DESCRIPTION(values.pod!)],
  'GET /v1/healthz': [200, 'text/plain', 'OK\n'],
  'POST /v1/request-landing': [200, 'text/plain', 'Ship landed\n'],
  'PUT /v1/cargobay': [200, 'text/plain', 'Cargo loaded\n'],
  'GET /v1/hyper-matter-reactor/status': [200, 'text/plain', 'Reactor nominal\n'],
  'PUT /v1/exhaust-port': [503, 'text/plain', PANIC],
};

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const path = (req.url ?? '/').split('?')[0];
    const r = routes[`${req.method} ${path}`];
    if (!r) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('404 page not found\n');
      return;
    }
    res.writeHead(r[0], { 'content-type': r[1], 'content-length': Buffer.byteLength(r[2]) });
    res.end(r[2]);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(values.port), () => {
  if (values.ready) writeFileSync(values.ready, String(process.pid));
});
process.on('SIGTERM', () => process.exit(0));
