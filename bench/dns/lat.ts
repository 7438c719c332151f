// Runs in a pod (membrane exec): sequential UDP DNS queries to SERVER, one outstanding at a time,
// cycling through NAMES; prints JSON {n, p50Us, p99Us, errors}.
//   bin/node bench/dns/lat.ts SERVER COUNT name1,name2,...
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';

const [server, countS, namesS] = process.argv.slice(2);
const count = Number(countS);
const names = namesS!.split(',');
const s = createSocket('udp4');
await new Promise<void>((r) => s.bind(0, r));
const lat: number[] = [];
let errors = 0;
const packets = names.map((name, i) => dnsPacket.encode({ id: i & 0xffff, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] }));
for (let i = 0; i < count; i++) {
  const msg = packets[i % packets.length]!;
  const t0 = process.hrtime.bigint();
  const ok = await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => { s.off('message', on); resolve(false); }, 2000);
    const on = (m: Buffer) => { if (m.readUInt16BE(0) !== msg.readUInt16BE(0)) return; clearTimeout(t); s.off('message', on); resolve((m[3]! & 15) === 0); };
    s.on('message', on);
    s.send(msg, 53, server);
  });
  if (!ok) errors++;
  else lat.push(Number(process.hrtime.bigint() - t0) / 1000);
}
s.close();
lat.sort((a, b) => a - b);
const pct = (p: number) => lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)] ?? 0;
process.stdout.write(JSON.stringify({ n: lat.length, p50Us: pct(50), p99Us: pct(99), errors }) + '\n');
