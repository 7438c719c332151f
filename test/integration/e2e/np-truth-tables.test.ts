/**
 * The Kubernetes NetworkPolicy truth tables, probed for real: 9 pods (x/y/z × a/b/c) in a lab,
 * each serving TCP and UDP on 80 and 81; every case's policies applied, every pod probing every
 * pod with real connections, and the observed matrix compared with the expectation that the
 * policy engine's unit tests check (test/unit/policy/np-truth-tables.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab } from '../support/lab.ts';
import { NP_CASES, NP_PODS, Reachability, npNamespaces, npPods } from '../../unit/policy/np-truth-tables.ts';

const lab = new TestLab(`np${process.pid % 10000}`);
let ips: Record<string, string> = {};

before(async () => {
  await lab.up();
  await lab.apply([...npNamespaces(), ...npPods()]);
  ips = await lab.podIPs();
  for (const p of NP_PODS) assert.ok(ips[p], `pod ${p} has an IP`);
});
after(async () => { await lab.down(); });

async function observe(port: number, protocol: 'TCP' | 'UDP'): Promise<Reachability> {
  const got = new Reachability();
  const proto = protocol.toLowerCase();
  await Promise.all(NP_PODS.map(async (from) => {
    const [ns, pod] = from.split('/') as [string, string];
    const targets = NP_PODS.map((to) => `${ips[to]}:${port}/${proto}`);
    const r = await lab.probe(ns, pod, targets);
    for (const to of NP_PODS) got.set(from, to, r[`${ips[to]}:${port}/${proto}`] === true);
  }));
  return got;
}

test('baseline: with no policy every pod reaches every pod on TCP and UDP', async () => {
  for (const [port, proto] of [[80, 'TCP'], [81, 'UDP']] as const) {
    const got = await observe(port, proto);
    assert.deepEqual(new Reachability().diff(got), [], `${port}/${proto}\n${got}`);
  }
});

for (const c of NP_CASES) {
  test(`NetworkPolicy truth table in the kernel: ${c.name}`, async () => {
    const policies = c.policies(ips);
    await lab.apply(policies);
    try {
      for (const p of c.probes) {
        const got = await observe(p.port, p.protocol);
        assert.deepEqual(p.expect.diff(got), [], `${c.name} ${p.port}/${p.protocol}\nexpected:\n${p.expect}\ngot:\n${got}`);
      }
    } finally {
      await lab.delete(policies);
    }
  });
}
