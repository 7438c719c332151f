/**
 * The cost of taking an accepted connection off Node (ProxyConnection.handOff: a dup of the fd,
 * Node's socket closed with its listeners removed, its read buffer recycled), per connection:
 * the synchronous part timed around the call, and the proxy process's whole CPU per connection
 * with the hand-off against without it (the connection closed by Node at once instead).
 *
 *   bin/node bench/tls/handoff.ts [--conns 3000]
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { createHttpProxy } from '../../src/proxy/http/proxy.ts';
import { closeTcpFd } from '../../src/sys/tcp-fd.ts';

const { values } = parseArgs({ options: { conns: { type: 'string', default: '3000' } } });
const N = Number(values.conns);

async function run(handOff: boolean): Promise<{ syncUs: number; cpuUs: number }> {
  let sync = 0;
  const proxy = createHttpProxy({
    policy: { endpointByIp: () => ({ id: 1, identity: 1, namespace: '', pod: '', labels: [] }), identityOf: () => 2, lookup: () => ({ verdict: 'forward', l7: null }), revision: () => 0 },
    listen: { egress: { host: '127.0.0.1', port: 0 } },
    configure: (chain) => chain.addNetwork({
      name: 'handoff',
      onNewConnection(conn) {
        if (handOff) {
          const t0 = performance.now();
          const fd = conn.handOff();
          sync += performance.now() - t0;
          closeTcpFd(fd);
          proxy.conns.delete(conn);
        } else conn.destroy();
        return 'stop';
      },
    }),
  });
  const port = (await proxy.start()).egress!.port;
  const c0 = process.cpuUsage();
  for (let i = 0; i < N; i++) {
    await new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('close', () => resolve());
      c.on('error', () => {});
      c.resume();
    });
  }
  const c1 = process.cpuUsage(c0);
  await proxy.stop();
  return { syncUs: (sync * 1000) / N, cpuUs: (c1.user + c1.system) / N };
}

const rows: string[] = [];
for (let round = 0; round < 3; round++) {
  for (const h of [true, false]) {
    const r = await run(h);
    rows.push(`round ${round} ${h ? 'hand-off' : 'destroy '}: ${r.cpuUs.toFixed(1)} µs CPU/conn (client and proxy in this process)${h ? `, handOff() itself ${r.syncUs.toFixed(1)} µs` : ''}`);
  }
}
console.log(rows.join('\n'));
