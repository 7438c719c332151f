/**
 * The crash-prone checks of leg-attacks.test.ts, in a process of their own (a use-after-free in
 * a leg's native memory kills this process, not the test runner): argv[2] is the check; prints
 * one JSON line of what it saw, the proxy and origin closed after.
 *
 * churn: 300 intercepted connections at once, every second destroyed mid-handshake (once the
 * ServerHello arrived: the client's first key is logged), the others one request each.
 * reset-held: a client that stops reading a large response (the leg holds writes), then resets.
 */
import tls from 'node:tls';
import { readdirSync } from 'node:fs';
import { liveLegs } from '../../../../src/sys/tls-leg.ts';
import { liveFdWatches } from '../../../../src/sys/fd-watch.ts';
import { ServerLegTransport } from '../../../../src/proxy/tls/server-leg.ts';
import { connectTls, legSetup, until, NAME } from './leg-setup.ts';

const fds = (): number => readdirSync('/proc/self/fd').length;
const s = await legSetup();
const out: Record<string, unknown> = { check: process.argv[2] };
try {
  // the leaf and its context exist before the count starts (made once per name, kept)
  const w = await connectTls(s);
  w.resume();
  w.end('GET /get HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n');
  await new Promise((r) => w.on('close', r));
  await until(() => s.proxy.conns.size === 0 && liveLegs() === 0);
  const fd0 = fds();
  out.fdStart = fd0;
  if (process.argv[2] === 'churn') {
    let ok = 0, aborted = 0;
    await Promise.all(Array.from({ length: Number(process.env.N ?? 300) }, (_, i) => new Promise<void>((resolve) => {
      const c = tls.connect({ host: '127.0.0.1', port: s.port, servername: NAME, ca: s.ca });
      let text = '';
      c.on('data', (d: Buffer) => { text += d.toString(); });
      c.on('error', () => {});
      c.on('close', () => { if (/^HTTP\/1\.1 200 /.test(text)) ok++; resolve(); });
      if (i % 2) c.once('keylog', () => { aborted++; c.destroy(); });
      else c.once('secureConnect', () => c.end('GET /get HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n'));
    })));
    out.ok = ok;
    out.aborted = aborted;
  } else if (process.argv[2] === 'reset-held') {
    const c = await connectTls(s);
    c.pause();
    c.write('GET /get HTTP/1.1\r\nHost: x\r\nx-size: 16000000\r\n\r\n');
    // the proxy's leg holds writes the client's kernel did not take
    const held = await until(() => [...s.proxy.conns].some((x) => x.sock instanceof ServerLegTransport && x.sock.writableLength > 0), 5000);
    out.held = held;
    (c as unknown as { _parent?: import('node:net').Socket })._parent?.resetAndDestroy();
    c.destroy();
  }
  const settled = await until(() => s.proxy.conns.size === 0 && liveLegs() === 0 && liveFdWatches() === 0 && fds() <= fd0, 5000);
  Object.assign(out, { settled, conns: s.proxy.conns.size, liveLegs: liveLegs(), liveFdWatches: liveFdWatches(), fdEnd: fds() });
} finally {
  await s.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
