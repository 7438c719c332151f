/**
 * `membrane connectivity test` on a 3-node lab (`membrane up --nodes 3`): the battery adds
 * echo-other-node on node2, so every pod-to-pod action from node1's clients crosses nodes, and
 * every pod-to-service action includes a Service whose only backend runs on another node. The
 * whole battery passes, and the report shows the cross-node actions with their expected
 * outcomes: allowed ones succeed, denied ones are dropped (an all-success datapath fails here).
 * The battery's own clean-up leaves no test namespace and no test pod on any node.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab } from '../support/lab.ts';

const lab = new TestLab(`conn3${process.pid}`);
// Each action the battery expects dropped waits out its probe (the CLI's default, 4 s, is
// cilium-cli's). 2 s still spans the SYN's first retransmission (1 s): a policy that let a
// retried SYN through would read as success and fail the action; an allowed action answers in
// milliseconds.
const PROBE = ['--probe-timeout', '2000'];

describe('membrane connectivity test on three nodes', { timeout: 600_000 }, () => {
  before(async () => { await lab.ok(['up', '--nodes', '3', '-q'], { timeoutMs: 300_000 }); });
  after(async () => { await lab.down(); });

  it('passes, with pod-to-pod and pod-to-service actions reaching echo-other-node on node2', async () => {
    const r = await lab.run(['connectivity', 'test', ...PROBE, '-v'], { timeoutMs: 420_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /Lab conn3\d+: 3 node\(s\)/);
    // 7 tests; with echo-other-node each pod-to-pod/pod-to-service scenario has two actions
    assert.match(r.stdout, /✅ All 7 tests \(\d+ actions\) successful/);
    const actions = Number(/\((\d+) actions\)/.exec(r.stdout)![1]);
    assert.ok(actions > 19, `the 1-node battery has 19 actions; 3 nodes add echo-other-node's (${actions})`);
    // cross-node pod-to-pod: allowed with no policy, dropped by ingress and egress deny, the
    // CNP lets client through and drops client2, L7 answers 403 on /private
    const other = (test: string, from: string, expect: string, what = 'pod-to-pod') =>
      assert.match(r.stdout, new RegExp(`\\[\\.\\] Action \\[${test}/${what}/\\d+: membrane-test/${from} -> (service )?membrane-test/echo-other-node[^\\]]*\\]: expected ${expect}, got ${expect}\\n`), `${test}: ${from} -> echo-other-node ${expect}`);
    other('no-policies', 'client', 'success');
    other('all-ingress-deny', 'client', 'drop');
    other('all-egress-deny', 'client', 'drop');
    other('echo-ingress-from-client', 'client', 'success');
    other('echo-ingress-from-client', 'client2', 'drop');
    // the Service whose backend is on node2, dialled by name from node1
    other('no-policies', 'client', 'success', 'pod-to-service');
    other('echo-ingress-from-client', 'client', 'success', 'pod-to-service');
    other('echo-ingress-l7', 'client', 'http-403', 'pod-to-pod-private');
    const ns = JSON.parse(await lab.ok(['get', 'namespaces', '-o', 'json'])) as { items: { metadata: { name: string } }[] };
    assert.equal(ns.items.some((n) => n.metadata.name === 'membrane-test'), false);
    const pods = JSON.parse(await lab.ok(['get', 'pods', '-A', '-o', 'json'])) as { items: { metadata: { namespace: string } }[] };
    assert.equal(pods.items.filter((p) => p.metadata.namespace === 'membrane-test').length, 0);
  });
});
