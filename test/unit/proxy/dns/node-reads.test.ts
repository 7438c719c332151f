/**
 * The slower path is never silent: a DNS proxy whose sockets cannot be watched by uv_poll (here:
 * made in a worker thread) keeps answering through Node's reads, counts each such socket in
 * stats().nodeReads and says so once per socket with the stable code DNS_PROXY_NODE_READS and the
 * reason; on the main thread nothing is counted or logged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { createDNSProxy } from '../../../../src/proxy/dns/proxy.ts';

type Code = { code?: string; socket?: string; reason?: string };

test('a proxy whose sockets Node reads (no uv_poll watch: a worker thread) still answers, and counts and logs each such socket once', async () => {
  const w = new Worker(new URL('./node-reads-worker.ts', import.meta.url));
  try {
    const got = await new Promise<{ id: number | null; ips: string[]; nodeReads: number; warnings: Code[] }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    assert.equal(got.id, 4242, 'answered with the client id');
    assert.deepEqual(got.ips, ['198.51.100.20']);
    const said = got.warnings.filter((x) => x.code === 'DNS_PROXY_NODE_READS');
    assert.deepEqual(said.map((x) => x.socket).sort(), ['listener IPv4', 'upstream 127.0.0.1'], 'once per socket Node reads');
    for (const x of said) assert.match(x.reason ?? '', /main thread/);
    assert.equal(got.nodeReads, 2);
  } finally {
    await w.terminate();
  }
});

test('on the main thread every socket is watched: nodeReads 0, no DNS_PROXY_NODE_READS', async () => {
  const up = createSocket('udp4');
  up.on('message', (m, r) => {
    const q = dnsPacket.decode(m);
    up.send(dnsPacket.encode({ type: 'response', id: q.id, flags: 0, questions: q.questions, answers: [] }), r.port, r.address);
  });
  await new Promise<void>((res) => up.bind(0, '127.0.0.1', res));
  const warnings: Code[] = [];
  const proxy = createDNSProxy({
    nodeName: 'n1', port: 0, host: '127.0.0.1', dnsPort: up.address().port,
    endpointByIp: () => ({ id: 7, identity: 300, namespace: 'default', pod: 'client', labels: [] }),
    originalDestination: () => '127.0.0.3', upstreamFor: () => '127.0.0.1', peerOf: () => ({ identity: 256 }),
    decide: () => true, onAnswer: () => null, emit: () => {}, log: { warn: (o) => { warnings.push(o as Code); } },
  });
  const client = createSocket('udp4');
  try {
    await proxy.start();
    const answered = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 3000);
      client.once('message', () => { clearTimeout(t); resolve(true); });
      client.send(dnsPacket.encode({ id: 7, type: 'query', questions: [{ name: 'x.example', type: 'A' }] }), proxy.boundPort(), '127.0.0.1');
    });
    assert.ok(answered);
    assert.equal(proxy.stats().nodeReads, 0);
    assert.deepEqual(warnings.filter((x) => x.code === 'DNS_PROXY_NODE_READS'), []);
  } finally {
    await proxy.stop();
    client.close();
    up.close();
  }
});
