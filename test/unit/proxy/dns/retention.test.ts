/**
 * What the DNS proxy keeps of a query once it is answered: nothing that was made for it. The
 * attacker's workload (queries from hundreds of source ports at once, random ids, a new name
 * each) runs through the real proxy on loopback against a real UDP upstream; every record's
 * client and server peer (objects made per query when the sink does not borrow records: the
 * agent's own proxy) is watched through a WeakRef, and after a full GC none may be alive while
 * the proxy still runs. The proxy's pool of Pendings used to keep each one's last peers: V8
 * promoted them while they waited and they were old-generation garbage once reused (the DNS
 * soak's slow rise).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { randomBytes } from 'node:crypto';
import dnsPacket from 'dns-packet';
import { createDNSProxy } from '../../../../src/proxy/dns/proxy.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
const CLIENTS = 256;
const WAVES = 4;

/** WeakRefs are cleared by a GC only after the job that made or read them: a macrotask between GCs. */
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
}

test('attacker: queries from every source port, random ids, a new name each: once answered, nothing made for a query stays (no peer held by the pooled Pendings)', async () => {
  const up = createSocket('udp4');
  up.on('message', (m, r) => {
    const q = dnsPacket.decode(m);
    up.send(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED, questions: q.questions, answers: [{ name: q.questions![0]!.name, type: 'A', ttl: 30, data: '198.51.100.7' }] }), r.port, r.address);
  });
  await new Promise<void>((res) => up.bind(0, '127.0.0.1', res));
  const peers: WeakRef<object>[] = [];
  let records = 0;
  const proxy = createDNSProxy({
    nodeName: 'n1', port: 0, host: '127.0.0.1', dnsPort: up.address().port,
    endpointByIp: (ip) => (ip === '127.0.0.1' ? EP : undefined),
    originalDestination: () => '127.0.0.3',
    upstreamFor: () => '127.0.0.1',
    peerOf: () => ({ identity: 256 }),
    decide: (_ep, _id, _p, _port, qname) => qname.endsWith('.attack.example.'),
    onAnswer: () => null,
    // the sink reads the record and keeps nothing of it (as the agent's flows keep shared messages)
    emit: (r) => { records++; peers.push(new WeakRef(r.client), new WeakRef(r.server)); },
  });
  await proxy.start();
  const clients: Socket[] = [];
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const s = createSocket('udp4');
      await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
      clients.push(s);
    }
    const ports = new Set(clients.map((s) => s.address().port));
    assert.equal(ports.size, CLIENTS, 'a source port per client');
    let answered = 0;
    for (let w = 0; w < WAVES; w++) {
      // every client at once: the proxy has hundreds of queries outstanding, so its pool grows to hundreds
      await Promise.all(clients.map((s, i) => new Promise<void>((resolve, reject) => {
        const id = randomBytes(2).readUInt16BE(0);
        const name = `${randomBytes(6).toString('hex')}-${w}-${i}.attack.example`;
        const t = setTimeout(() => reject(new Error(`no answer to ${name}`)), 5000);
        s.once('message', (m) => {
          clearTimeout(t);
          const a = dnsPacket.decode(m);
          // each client gets its own answer (reused Pendings mix nothing up)
          assert.equal(a.id, id);
          assert.equal(a.questions?.[0]?.name, name);
          answered++;
          resolve();
        });
        s.send(dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] }), proxy.boundPort(), '127.0.0.1');
      })));
    }
    assert.equal(answered, CLIENTS * WAVES);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(records, 2 * CLIENTS * WAVES, 'a request and a response record per query');
    assert.equal(proxy.stats().allowed, CLIENTS * WAVES);
    // positive control: an object still referenced survives the same GCs
    const kept = { still: 'here' };
    const keptRef = new WeakRef(kept);
    await collect();
    assert.equal(keptRef.deref(), kept, 'the GC keeps what is referenced');
    const alive = peers.filter((r) => r.deref() !== undefined).length;
    assert.equal(alive, 0, `${alive} of ${peers.length} peers made for answered queries are still held by the running proxy`);
  } finally {
    for (const s of clients) s.close();
    await proxy.stop();
    up.close();
  }
});
