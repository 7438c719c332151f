/** The NetworkPolicy truth tables (np-truth-tables.ts) evaluated on the policy engine. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NP_CASES, NP_PODS, Reachability, npNamespaces, npPods, type NPCase, type NPProbe } from './np-truth-tables.ts';
import { World } from './helpers.ts';

function model(c: NPCase, p: NPProbe): Reachability {
  const w = new World();
  for (const n of npNamespaces()) w.addNamespace(n);
  const ips: Record<string, string> = {};
  npPods().forEach((pod, i) => {
    const wp = w.addPod(pod);
    ips[`${pod.metadata.namespace}/${pod.metadata.name}`] = `10.244.1.${10 + i}`;
    w.engine.ipcache.upsert(`10.244.1.${10 + i}`, wp.identity, 'endpoint');
  });
  w.apply(...c.policies(ips));
  const got = new Reachability();
  for (const from of NP_PODS) for (const to of NP_PODS) {
    // A pod reaching itself never leaves its network namespace: no policy applies.
    got.set(from, to, from === to || w.allowed(from, to, p.protocol, p.port));
  }
  return got;
}

test('truth tables: at least 15 upstream cases, every probe a full 9x9 matrix', () => {
  assert.ok(NP_CASES.length >= 15);
  assert.equal(NP_PODS.length, 9);
  assert.equal(new Set(NP_CASES.map((c) => c.name)).size, NP_CASES.length);
});

for (const c of NP_CASES) {
  test(`NetworkPolicy truth table: ${c.name}`, () => {
    for (const p of c.probes) {
      const got = model(c, p);
      const diff = p.expect.diff(got);
      assert.deepEqual(diff, [], `${c.name} ${p.port}/${p.protocol}\nexpected:\n${p.expect}\ngot:\n${got}`);
    }
  });
}
