// Sends hand-made VXLAN datagrams (what an attacker, or a node, could put on UDP 8472), from
// whatever namespace it runs in:
//   bin/node vxlan-send.ts '{"to":"192.0.2.2","vni":300,"innerSrc":"10.244.1.250","innerDst":"10.244.2.5","dport":8080}'
// optional: "bind" (source address), "count" (default 3). Inner packet: Ethernet + IPv4 + TCP SYN
// (IPv4 header checksum computed; the TCP checksum is not: the datapath under test does not read it),
// or Ethernet + IPv6 + TCP SYN when innerSrc is an IPv6 address (enable-ipv6).
import { createSocket } from 'node:dgram';
import { ip6 } from '../support/frames6.ts';

const o = JSON.parse(process.argv[2] ?? '{}') as { to: string; vni: number; innerSrc: string; innerDst: string; dport: number; bind?: string; count?: number };
const ip4 = (s: string) => Buffer.from(s.split('.').map(Number));

function ipChecksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const vxlan = Buffer.alloc(8);
vxlan[0] = 0x08; // I flag: the VNI is valid
vxlan.writeUIntBE(o.vni >>> 0 & 0xffffff, 4, 3);
const v6 = o.innerSrc.includes(':');
const eth = Buffer.concat([Buffer.from([0x0a, 0x58, 0, 0, 0, 2]), Buffer.from([0x0a, 0x58, 0, 0, 0, 1]), Buffer.from(v6 ? [0x86, 0xdd] : [0x08, 0x00])]);
const tcp = Buffer.alloc(20);
tcp.writeUInt16BE(40000 + Math.floor(Math.random() * 20000), 0);
tcp.writeUInt16BE(o.dport, 2);
tcp.writeUInt32BE(1, 4);
tcp[12] = 5 << 4;
tcp[13] = 0x02; // SYN
tcp.writeUInt16BE(64240, 14);
function ipHeader(): Buffer {
  if (v6) {
    const h = Buffer.alloc(40);
    h.writeUInt32BE(0x60000000, 0);
    h.writeUInt16BE(tcp.length, 4);
    h[6] = 6;
    h[7] = 64;
    ip6(o.innerSrc).copy(h, 8);
    ip6(o.innerDst).copy(h, 24);
    return h;
  }
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + tcp.length, 2);
  h.writeUInt16BE(Math.floor(Math.random() * 65535), 4);
  h[8] = 64;
  h[9] = 6;
  ip4(o.innerSrc).copy(h, 12);
  ip4(o.innerDst).copy(h, 16);
  h.writeUInt16BE(ipChecksum(h), 10);
  return h;
}
const iph = ipHeader();
const msg = Buffer.concat([vxlan, eth, iph, tcp]);

const s = createSocket('udp4');
s.bind({ port: 0, ...(o.bind ? { address: o.bind } : {}) }, async () => {
  for (let i = 0; i < (o.count ?? 3); i++) {
    await new Promise<void>((resolve, reject) => s.send(msg, 8472, o.to, (e) => (e ? reject(e) : resolve())));
    await new Promise((r) => setTimeout(r, 50));
  }
  s.close();
  console.log(JSON.stringify({ sent: o.count ?? 3, bytes: msg.length }));
});
