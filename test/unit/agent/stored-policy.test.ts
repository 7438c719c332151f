/**
 * A stored policy that no longer validates (stored by an older version: Kafka rules, now rejected
 * at apply) must not stop the agent: the reconcile still makes the endpoints and enforces every
 * other policy; `status` errors and the log name the policy and its code. Real agent, real policy
 * engine, in-memory kvstore and datapath.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { createFakeDatapath } from '../../../src/datapath/fake.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { createAgent } from '../../../src/agent/agent.ts';
import pino from 'pino';
import { lookupMapState } from '../../../src/policy/lookup.ts';

const SRC = { file: 'old.yaml', line: 1, col: 1 };
const res = (r: Record<string, unknown>) => ({ ...r, source: SRC });
const pod = (name: string, app: string) => res({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels: { app } }, spec: { containers: [{ name: 'c' }] } });
const cnp = (name: string, port: string, rules?: unknown) => res({
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: 'shop' },
  spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port, protocol: 'TCP' }], ...(rules ? { rules } : {}) }] }] },
});

test('a stored Kafka policy (no longer valid) is reported with its code; endpoints and the other policies are enforced', async () => {
  const kv = await openMemoryStore();
  // Written as an older version stored them: straight into the store, no validation.
  const put = (r: { kind: string; metadata: { name: string; namespace?: string } }) => kv.put(`membrane/resources/${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`, JSON.stringify(r));
  await put(res({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }) as never);
  await put(pod('server', 'server') as never);
  await put(pod('client', 'client') as never);
  await put(cnp('kafka-old', '9092', { kafka: [{ apiKey: 'produce', topic: 'orders' }] }) as never);
  await put(cnp('web', '8080') as never);

  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => { lines.push(l); } });
  let n = 0;
  const policy = createAgentPolicyEngine();
  const agent = await createAgent({
    config: { node: 'node1', hostIp: '192.0.2.1', lab: 't' }, kv, datapath: createFakeDatapath(), policy, logger,
    networks: { ensure: async () => { n++; return { ip: `10.244.1.${10 + n}`, mac: '02:00:00:00:00:0' + n, netns: `ns${n}`, hostIfname: `lxc${n}`, hostIfindex: 100 + n }; }, remove: async () => {} },
    workloads: { ensure: async () => ({ ready: 1, total: 1 }), stop: async () => {} },
  });
  try {
    await agent.start();
    await agent.settled();
    const eps = agent.endpoints();
    assert.deepEqual(eps.map((e) => [e.pod, e.state]).sort(), [['client', 'ready'], ['server', 'ready']]);
    const errs = agent.lastErrors();
    assert.equal(errs.length, 1, errs.join('\n'));
    assert.match(errs[0]!, /^stored policy CiliumNetworkPolicy\/shop\/kafka-old not enforced: POLICY_KAFKA_UNSUPPORTED old\.yaml:/);
    assert.ok(!errs.some((e) => e.includes('reconcile failed')), 'the reconcile did not fail');

    // The valid policy is enforced: client → server:8080 allowed (positive), :9092 denied (the
    // Kafka policy left out), another identity denied on 8080.
    const server = eps.find((e) => e.pod === 'server')!;
    const client = eps.find((e) => e.pod === 'client')!;
    const ms = policy.mapState(server.id)!;
    assert.equal(lookupMapState(ms, 'ingress', client.identity, 6, 8080).verdict, 'forward');
    assert.equal(lookupMapState(ms, 'ingress', client.identity, 6, 9092).verdict, 'drop');
    assert.equal(lookupMapState(ms, 'ingress', server.identity, 6, 8080).verdict, 'drop');

    // The same report goes to the log, with the code.
    const logged = lines.find((l) => l.includes('stored policy no longer validates'));
    assert.ok(logged && logged.includes('POLICY_KAFKA_UNSUPPORTED') && logged.includes('shop/kafka-old'), lines.join('\n'));

    // Deleting the bad policy clears the report; the agent goes on as before.
    await agent.remove([cnp('kafka-old', '9092') as never]);
    await agent.settled();
    assert.deepEqual(agent.lastErrors(), []);
    assert.equal(lookupMapState(policy.mapState(server.id)!, 'ingress', client.identity, 6, 8080).verdict, 'forward');
  } finally {
    await agent.stop();
  }
});
