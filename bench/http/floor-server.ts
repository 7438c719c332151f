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
 *   bin/node bench/http/floor-server.ts --port 18081 --origin 18080   (bench/http/ab.ts --a-server)
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { writeWithoutClose } from './close-field.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18081' }, origin: { type: 'string', default: '18080' }, rules: { type: 'string', default: '0' } } });
const ORIGIN = Number(values.origin);
const idle: net.Socket[] = [];

net.createServer({ noDelay: true }, (client) => {
  let up: net.Socket | null = null;
  let closing = false;
  client.on('data', (c: Buffer) => {
    if (!up) {
      up = idle.pop() ?? net.connect({ port: ORIGIN, host: '127.0.0.1', noDelay: true });
      up.removeAllListeners('data');
      up.on('data', (r: Buffer) => {
        client.write(r);
        if (closing) client.end();
      });
    }
    if (writeWithoutClose(up, c)) closing = true;
  });
  client.on('error', () => {});
  client.on('close', () => {
    if (up && !up.destroyed) {
      up.removeAllListeners('data');
      up.on('data', () => {});
      idle.push(up);
    }
    up = null;
  });
}).listen(Number(values.port), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
