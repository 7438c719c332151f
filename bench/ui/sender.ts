/**
 * Runs inside a lab pod (`membrane exec POD -- bin/node bench/ui/sender.ts ...`): sends small UDP
 * datagrams to one lab address at a fixed rate, for a bounded count. Each datagram that policy
 * drops becomes real flows in the node's Hubble ring (a policy verdict and a drop).
 *   --to IP:PORT  --rate PACKETS_PER_S  --count N
 */
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { to: { type: 'string' }, rate: { type: 'string', default: '1000' }, count: { type: 'string', default: '1000' } } });
const [host, port] = (values.to ?? '').split(':') as [string, string];
if (!/^10\.244\.\d+\.\d+$/.test(host) || !Number(port)) throw new Error('--to must be a lab pod address 10.244.x.y:PORT');
const rate = Math.min(Number(values.rate), 20_000);
const count = Math.min(Number(values.count), 200_000);
const sock = createSocket('udp4');
const payload = Buffer.from('membrane-ui-bench');
const TICK_MS = 10;
const t0 = performance.now();
let sent = 0;
await new Promise<void>((done) => {
  const timer = setInterval(() => {
    const due = Math.min(count, Math.floor(((performance.now() - t0) / 1000) * rate));
    while (sent < due) {
      sock.send(payload, Number(port), host);
      sent++;
    }
    if (sent >= count) {
      clearInterval(timer);
      done();
    }
  }, TICK_MS);
});
await new Promise((r) => setTimeout(r, 50));
sock.close();
console.log(JSON.stringify({ sent, seconds: (performance.now() - t0) / 1000 }));
