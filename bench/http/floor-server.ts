/**
 * Node's own floor for the HTTP proxy's path: a forwarder with no HTTP parsing, no policy, no
 * records, nothing per connection but the two sockets' listeners. A client read goes to an
 * upstream connection (one per client connection, taken from a pool of idle ones and given back
 * when the client closes, as the proxy's pool does with `Connection: close`), an upstream read
 * goes to the client; with `Connection: close` in the request (wrk -H, as the bench sends it) the
 * field is cut out on its way up (the origin keeps the connection for the next client) and the
 * client is ended after the first response read. Not a proxy: it trusts each read to be one whole
 * request or response, which holds for the bench's small messages only.
 *
 * With `--own-read` the accepted sockets read into a pooled 4 KiB buffer of their own (Node's
 * `onread`, the socket made over the accepted handle in the listener's `onconnection`), as the
 * proxy's ownReadSocket does: beside raw-floor-server.ts, what the net.Socket itself costs.
 *
 *   bin/node bench/http/floor-server.ts --port 18081 --origin 18080 [--own-read]   (bench/http/ab.ts --a-server)
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { withClose, writeWithoutClose } from './close-field.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18081' }, origin: { type: 'string', default: '18080' }, rules: { type: 'string', default: '0' }, 'own-read': { type: 'boolean', default: false } } });
const ORIGIN = Number(values.origin);
/** --own-read, or MEMBRANE_BENCH_OWN_READ=1 (bench/http/ab.ts --a-env) */
const ownRead = values['own-read'] || process.env.MEMBRANE_BENCH_OWN_READ === '1';
const idle: net.Socket[] = [];

const buffers: Buffer[] = [];
const kOwn = Symbol('ownRead');
type Client = net.Socket & { [kOwn]?: (c: Buffer) => void };

function serve(client: Client): void {
  let up: net.Socket | null = null;
  let closing = false;
  const onData = (c: Buffer) => {
    if (!up) {
      up = idle.pop() ?? net.connect({ port: ORIGIN, host: '127.0.0.1', noDelay: true });
      up.removeAllListeners('data');
      up.on('data', (r: Buffer) => {
        if (closing) client.end(withClose(r));
        else client.write(r);
      });
    }
    if (writeWithoutClose(up, c)) closing = true;
  };
  if (ownRead) client[kOwn] = onData;
  else client.on('data', onData);
  client.on('error', () => {});
  client.on('close', () => {
    if (up && !up.destroyed) {
      up.removeAllListeners('data');
      up.on('data', () => {});
      idle.push(up);
    }
    up = null;
  });
}

const srv = net.createServer({ noDelay: true }, serve);
srv.listen(Number(values.port), '127.0.0.1', () => {
  if (ownRead) {
    const lh = (srv as unknown as { _handle: { onconnection: (err: number, h: unknown) => void } })._handle;
    lh.onconnection = (err, handle) => {
      if (err) return;
      const buf = buffers.pop() ?? Buffer.allocUnsafeSlow(4096);
      const opts = { handle, onread: { buffer: buf, callback(this: Client, n: number, b: Buffer) { this[kOwn]!(Buffer.from(b.subarray(0, n))); return true; } } };
      const s = new net.Socket(opts as unknown as net.SocketConstructorOpts) as Client;
      s.on('close', () => buffers.push(buf));
      serve(s);
    };
  }
  console.log('ready');
});
process.on('SIGTERM', () => process.exit(0));
