/**
 * node-reads.test.ts's worker: a DNS proxy made in a worker thread (whose sockets cannot be
 * watched: uv_poll is the main loop's), asked one query; posts what it answered, its stats and
 * the warnings it logged.
 */
import { parentPort } from 'node:worker_threads';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { createDNSProxy } from '../../../../src/proxy/dns/proxy.ts';

const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
const up = createSocket('udp4');
up.on('message', (m, r) => {
  const q = dnsPacket.decode(m);
  up.send(dnsPacket.encode({ type: 'response', id: q.id, flags: 0, questions: q.questions, answers: [{ name: q.questions![0]!.name, type: 'A', ttl: 30, data: '198.51.100.20' }] }), r.port, r.address);
});
await new Promise<void>((res) => up.bind(0, '127.0.0.1', res));
const warnings: unknown[] = [];
const proxy = createDNSProxy({
  nodeName: 'n1', port: 0, host: '127.0.0.1', dnsPort: up.address().port,
  endpointByIp: (ip) => (ip === '127.0.0.1' ? EP : undefined),
  originalDestination: () => '127.0.0.3',
  upstreamFor: () => '127.0.0.1',
  peerOf: () => ({ identity: 256 }),
  decide: () => true,
  onAnswer: () => null,
  emit: () => {},
  log: { warn: (o) => { warnings.push(o); } },
});
await proxy.start();
const client = createSocket('udp4');
const answer = await new Promise<Buffer | null>((resolve) => {
  const t = setTimeout(() => resolve(null), 3000);
  client.once('message', (m) => { clearTimeout(t); resolve(m); });
  client.send(dnsPacket.encode({ id: 4242, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: 'api.example.com', type: 'A' }] }), proxy.boundPort(), '127.0.0.1');
});
const d = answer ? dnsPacket.decode(answer) : null;
const stats = proxy.stats();
await proxy.stop();
client.close();
up.close();
parentPort!.postMessage({ id: d?.id ?? null, ips: d?.answers?.map((a) => String((a as { data?: unknown }).data)) ?? [], nodeReads: stats.nodeReads, warnings: JSON.parse(JSON.stringify(warnings)) });
