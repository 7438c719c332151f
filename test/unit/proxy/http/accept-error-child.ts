/**
 * A forwarding proxy in a process of its own, for accept-error.test.ts (started under a low
 * RLIMIT_NOFILE with prlimit). Prints `port <proxy>` once it listens; then, per stdin line:
 *   fill        takes every file descriptor the limit leaves; prints `filled <n>`
 *   free        gives them back; prints `freed`
 *   fail <n>    the listening handles report `n` failed accepts (UV_EMFILE), as libuv's connection
 *               callback does when its own remedy fails; prints `failed`
 *   stats       prints `stats <json>`: the proxy's stats and its warnings
 */
import net from 'node:net';
import { openSync, closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { forwardingProxy } from './harness.ts';

const UV_EMFILE = -24;
const origin = net.createServer((c) => { c.on('error', () => {}); c.on('data', () => c.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')); });
await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
const warnings: { o: unknown; m?: string }[] = [];
const proxy = forwardingProxy((origin.address() as net.AddressInfo).port, { logger: { info() {}, debug() {}, warn: (o: unknown, m?: string) => { warnings.push({ o, m }); } } });
const l = await proxy.start();
process.stdout.write(`port ${l.egress!.port}\n`);
const held: number[] = [];
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ');
  if (cmd === 'fill') {
    for (;;) {
      try { held.push(openSync('/proc/self/stat', 'r')); } catch { break; }
    }
    process.stdout.write(`filled ${held.length}\n`);
  } else if (cmd === 'free') {
    for (const fd of held.splice(0)) closeSync(fd);
    process.stdout.write('freed\n');
  } else if (cmd === 'fail') {
    // the listening handles of the proxy's servers (what libuv's connection callback reaches)
    for (const srv of (proxy as unknown as { servers: net.Server[] }).servers) {
      const h = (srv as unknown as { _handle: { onconnection(err: number, client?: unknown): void } })._handle;
      for (let i = 0; i < Number(arg); i++) h.onconnection(UV_EMFILE);
    }
    process.stdout.write('failed\n');
  } else if (cmd === 'stats') {
    process.stdout.write(`stats ${JSON.stringify({ ...proxy.stats(), warnings })}\n`);
  }
});
