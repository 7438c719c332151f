/**
 * The lab DNS server (the `coredns` pod in kube-system, labels `k8s-app: kube-dns`): an
 * authoritative server for the zone of zone.ts on UDP and TCP port 53. It forwards nothing.
 *
 *   bin/node src/lab/dns/server.ts --agent-socket=PATH [--port=53] [--ip-file=F --pod-ip=IP] [--ready=F] [--ipv6]
 *
 * Records come from the node1 agent's API (GET /v1/resources over its unix socket, reachable
 * from any network namespace): polled every second, and re-read at once (at most every 100 ms)
 * before answering NXDOMAIN, so a name applied a moment ago resolves. `--ip-file` receives this
 * pod's IP (POD_IP) so the lab can point resolv.conf at it.
 */
import { createSocket } from 'node:dgram';
import { createServer, type Socket } from 'node:net';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';
import { callAgent } from '../../agent/api-client.ts';
import type { Resource } from '../../api/types.ts';
import { buildZone, resolve, type Zone } from './zone.ts';

const { values } = parseArgs({
  options: {
    'agent-socket': { type: 'string' },
    'pod-ip': { type: 'string' },
    port: { type: 'string', default: '53' },
    'ip-file': { type: 'string' },
    ready: { type: 'string' },
    id: { type: 'string', default: '' },
    ipv6: { type: 'boolean', default: false },
  },
});
const zoneOpts = { ipv6: values.ipv6 ?? false };
const port = Number(values.port);
const socketPath = values['agent-socket'];
let zone: Zone = buildZone([], zoneOpts);
let lastLoad = 0;
let loading: Promise<void> | undefined;

async function load(): Promise<void> {
  if (!socketPath) return;
  loading ??= (async () => {
    try {
      const r = await callAgent<{ items: Resource[] }>(socketPath, 'GET', '/v1/resources', undefined, 5000);
      zone = buildZone(r.items, zoneOpts);
      lastLoad = Date.now();
    } catch (e) {
      process.stderr.write(`lab-dns: reading resources: ${(e as Error).message}\n`);
    } finally {
      loading = undefined;
    }
  })();
  return loading;
}

type Question = { name: string; type: string; class?: string };

/** The reply to one query packet, or null to drop it (unparseable header). */
async function answer(msg: Buffer): Promise<Buffer | null> {
  let q: dnsPacket.Packet;
  try {
    q = dnsPacket.decode(msg);
  } catch {
    if (msg.length < 12) return null;
    // FORMERR with the query's id, no question.
    return dnsPacket.encode({ id: msg.readUInt16BE(0), type: 'response', flags: dnsPacket.RECURSION_DESIRED | (1 & 0xf), questions: [] } as dnsPacket.Packet);
  }
  const question = (q.questions ?? [])[0] as Question | undefined;
  const base = { id: q.id ?? 0, type: 'response' as const, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | ((q.flags ?? 0) & dnsPacket.RECURSION_DESIRED), questions: q.questions ?? [] };
  if (!question || q.type === 'response') return dnsPacket.encode({ ...base, flags: base.flags | 1, questions: [] });
  let a = resolve(zone, question.name, question.type);
  if (a.rcode === 'NXDOMAIN' && Date.now() - lastLoad > 100) {
    await load();
    a = resolve(zone, question.name, question.type);
  }
  const answers: dnsPacket.Answer[] = [];
  for (const c of a.cnames) answers.push({ name: c.name, type: 'CNAME', class: 'IN', ttl: c.ttl, data: c.target });
  for (const r of a.records) answers.push({ name: r.name, type: r.type, class: 'IN', ttl: r.ttl, data: r.ip });
  const rcode = a.rcode === 'NXDOMAIN' ? 3 : 0;
  return dnsPacket.encode({ ...base, flags: base.flags | rcode, answers } as dnsPacket.Packet);
}

let pending = 2;
function listening(): void {
  if (--pending > 0) return;
  if (values['ip-file'] && values['pod-ip']) {
    mkdirSync(dirname(values['ip-file']), { recursive: true });
    writeFileSync(values['ip-file'], values['pod-ip']);
  }
  if (values.ready) writeFileSync(values.ready, String(process.pid));
}

await load();
setInterval(() => void load(), 1000).unref();

/** Answers one UDP socket's queries (IPv4, and with --ipv6 the IPv6 one beside it). */
function serveUdp(udp: Socket4or6): void {
udp.on('message', (msg, rinfo) => {
  answer(msg).then((r) => {
    if (!r) return;
    // Over UDP an answer that does not fit 512 bytes (no EDNS here) is truncated: TC set, no records.
    if (r.length > 512) {
      const t = Buffer.from(r.subarray(0, 12));
      t.writeUInt16BE(t.readUInt16BE(2) | 0x0200, 2);
      t.writeUInt16BE(0, 6); t.writeUInt16BE(0, 8); t.writeUInt16BE(0, 10);
      const qd = r.readUInt16BE(4) ? r.subarray(12, 12 + questionLength(r)) : Buffer.alloc(0);
      udp.send(Buffer.concat([t, qd]), rinfo.port, rinfo.address);
      return;
    }
    udp.send(r, rinfo.port, rinfo.address);
  }, () => {});
});
}
type Socket4or6 = ReturnType<typeof createSocket>;
const udp = createSocket('udp4');
udp.on('error', (e) => { process.stderr.write(`lab-dns udp: ${e.message}\n`); process.exit(1); });
serveUdp(udp);
udp.bind(port, '0.0.0.0', listening);
// dual stack (enable-ipv6): the same server on the pod's IPv6 address, so a query to an IPv6
// DNS server address is served (and steered through the DNS proxy) as an IPv4 one is
if (values.ipv6) {
  const udp6 = createSocket({ type: 'udp6', ipv6Only: true });
  udp6.on('error', (e) => { process.stderr.write(`lab-dns udp6: ${e.message}\n`); process.exit(1); });
  serveUdp(udp6);
  pending++;
  udp6.bind(port, '::', listening);
}

function questionLength(b: Buffer): number {
  let o = 12;
  while (o < b.length && b[o]! !== 0) o += b[o]! + 1;
  return Math.min(b.length, o + 5) - 12;
}

const serveTcp = (s: Socket) => {
  let buf = Buffer.alloc(0);
  s.setTimeout(10_000, () => s.destroy());
  s.on('error', () => {});
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2) {
      const n = buf.readUInt16BE(0);
      if (buf.length < 2 + n) break;
      const m = buf.subarray(2, 2 + n);
      buf = buf.subarray(2 + n);
      answer(Buffer.from(m)).then((r) => {
        if (!r || s.destroyed) return;
        const len = Buffer.alloc(2);
        len.writeUInt16BE(r.length);
        s.write(Buffer.concat([len, r]));
      }, () => {});
    }
  });
};
const tcp = createServer(serveTcp);
tcp.on('error', (e) => { process.stderr.write(`lab-dns tcp: ${e.message}\n`); process.exit(1); });
tcp.listen({ port, host: '0.0.0.0' }, listening);
if (values.ipv6) {
  const tcp6 = createServer(serveTcp);
  tcp6.on('error', (e) => { process.stderr.write(`lab-dns tcp6: ${e.message}\n`); process.exit(1); });
  pending++;
  tcp6.listen({ port, host: '::', ipv6Only: true }, listening);
}
process.on('SIGTERM', () => process.exit(0));
process.stdout.write(`lab-dns ${values.id}: port ${port}, ${zone.size} names\n`);
