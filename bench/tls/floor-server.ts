/**
 * Node's own floor for TLS interception: what Node costs to terminate the same TLS and re-encrypt
 * to the same origin, with none of membrane's work (no ClientHello read in JS, no policy, no HTTP
 * parsing, no records). An accepted socket gets a server TLSSocket at once over the leaf context
 * membrane would use for the name (the same issuer, suites and renewing session tickets: the same
 * handshake and tickets as membrane and HAProxy); a client read goes to a verified TLS upstream
 * (one per client connection, from a pool of idle ones, as membrane's pool); an upstream read
 * goes back to the client. With `Connection: close` in the request (wrk -H) the field is cut on
 * its way up (the origin keeps the connection for the next client), `connection: close` is added
 * to the response head, and the client is ended after it (close_notify and FIN, then the client's
 * close, as membrane and HAProxy). Not a proxy: it trusts each read to be one whole request or
 * response, which holds for the bench's small messages only.
 *
 *   [MEMBRANE_FLOOR_HELLO=1] bin/node bench/tls/floor-server.ts --mode intercept --port P --origin O --dir D [--name N]
 * The arguments are bench/tls/proxy-server.ts's (bench/tls/ab.ts --a-server); D holds ica.crt/ica.key
 * (interception CA) and ca.crt (the origin's CA). Prints `ready` when listening.
 */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeWithoutClose } from '../http/close-field.ts';
import { CertificateIssuer } from '../../src/proxy/tls/issuer.ts';
import { ClientHelloReader } from '../../src/proxy/tls/clienthello.ts';

const { values } = parseArgs({ options: { mode: { type: 'string', default: 'intercept' }, port: { type: 'string' }, origin: { type: 'string' }, dir: { type: 'string' }, name: { type: 'string', default: 'api.bench.test' } } });
if (values.mode !== 'intercept') throw new Error('floor-server: only --mode intercept');
const dir = values.dir!;
const NAME = values.name!;
const ORIGIN = Number(values.origin);
const issuer = await CertificateIssuer.fromPem(readFileSync(join(dir, 'ica.crt'), 'utf8'), readFileSync(join(dir, 'ica.key'), 'utf8'));
const leaf = await issuer.certFor(NAME);
const trust = tls.createSecureContext({ ca: readFileSync(join(dir, 'ca.crt'), 'utf8') });
const ALPN = Buffer.from([8, ...Buffer.from('http/1.1')]);
const CLOSE_FIELD = Buffer.from('connection: close\r\n');
const idle: tls.TLSSocket[] = [];
let session: Buffer | undefined;
/** client handshakes, full and resumed: written to D/handshakes-PORT.json on SIGUSR2 (bench/tls/ab.ts), as proxy-server.ts */
const hs = { full: 0, resumed: 0 };
process.on('SIGUSR2', () => writeFileSync(join(dir, `handshakes-${values.port}.json`), JSON.stringify(hs)));
function onSecure(this: tls.TLSSocket): void { if (this.isSessionReused()) hs.resumed++; else hs.full++; }

function upstream(): tls.TLSSocket {
  const up = idle.pop();
  if (up && !up.destroyed) return up;
  const s = tls.connect({ host: '127.0.0.1', port: ORIGIN, servername: NAME, secureContext: trust, rejectUnauthorized: true, ALPNProtocols: ALPN, ...(session ? { session } : {}) });
  s.on('session', (b: Buffer) => { session = b; });
  s.on('error', () => s.destroy());
  s.setNoDelay(true);
  return s;
}

/**
 * MEMBRANE_FLOOR_HELLO=1: the ClientHello is read in JS first (ClientHelloReader, as intercept.ts:
 * the raw socket read, paused, the bytes put back) and the TLSSocket made after it: what reading
 * the name before TLS costs Node, without membrane's decision.
 */
const JS_HELLO = process.env.MEMBRANE_FLOOR_HELLO === '1';

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (raw) => {
  if (!JS_HELLO) { serve(raw); return; }
  const reader = new ClientHelloReader();
  const chunks: Buffer[] = [];
  const onHello = (c: Buffer) => {
    chunks.push(c);
    const r = reader.push(c);
    if (r.state === 'need-more') return;
    raw.removeListener('data', onHello);
    raw.pause();
    if (r.state === 'error') { raw.destroy(); return; }
    for (let i = chunks.length - 1; i >= 0; i--) raw.unshift(chunks[i]!);
    serve(raw);
  };
  raw.on('data', onHello);
});

function serve(raw: net.Socket): void {
  const client = new tls.TLSSocket(raw, { isServer: true, secureContext: leaf.context, ALPNProtocols: ALPN });
  client.on('secure', onSecure);
  let up: tls.TLSSocket | null = null;
  let closing = false;
  // an upstream that fails or closes while it serves this client ends the client too
  const onUpGone = () => { if (up) { up = null; client.destroy(); } };
  const release = (): tls.TLSSocket => {
    const u = up!;
    up = null;
    u.removeListener('data', onResponse);
    u.removeListener('close', onUpGone);
    return u;
  };
  function onResponse(r: Buffer): void {
    if (!closing) { client.write(r); return; }
    const i = r.indexOf('\r\n\r\n');
    client.write(i < 0 ? r : Buffer.concat([r.subarray(0, i + 2), CLOSE_FIELD, r.subarray(i + 2)]));
    client.end();
    // the exchange is complete: the upstream goes back for the next client
    idle.push(release());
  }
  client.on('data', (c: Buffer) => {
    if (!up) {
      up = upstream();
      up.on('data', onResponse);
      up.on('close', onUpGone);
    }
    if (writeWithoutClose(up, c)) closing = true;
  });
  client.on('error', () => client.destroy());
  client.on('close', () => { if (up) release().destroy(); });
}
process.on('uncaughtException', (e) => { console.error('floor-server:', e); process.exit(1); });
server.listen(Number(values.port), '127.0.0.1', () => console.log('ready'));
// exits on the bench's SIGTERM (a --cpu-prof profile is written only on a normal exit)
process.on('SIGTERM', () => process.exit(0));
