/**
 * `membrane connectivity test` on a 1-node lab: the whole battery passes; with the datapath
 * deliberately broken (every entry of the node's pinned policy map deleted while the test runs,
 * as a corrupted or flushed map would leave it) it fails, exits non-zero and names the test and
 * the action that failed. The battery's own clean-up leaves no test namespace behind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { TestLab } from '../support/lab.ts';

const lab = new TestLab(`conn${process.pid}`);
// Each action the battery expects dropped waits out its probe (the CLI's default, 4 s, is
// cilium-cli's). 2 s still spans the SYN's first retransmission (1 s): a policy that let a
// retried SYN through would read as success and fail the action; an allowed action answers in
// milliseconds.
const PROBE = ['--probe-timeout', '2000'];

function sh(cmd: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((res) => execFile(cmd, args, { maxBuffer: 16 << 20 }, (err, stdout) => res({ code: err ? 1 : 0, stdout })));
}

/** Deletes every entry of the node's policy map, again and again until stopped (bounded: 3 min). */
function breakPolicyMap(pin: string): { stop(): Promise<number> } {
  let running = true;
  let deleted = 0;
  const deadline = Date.now() + 180_000;
  const loop = (async () => {
    while (running && Date.now() < deadline) {
      const d = await sh('bpftool', ['-j', 'map', 'dump', 'pinned', pin]);
      const entries = d.code === 0 ? (JSON.parse(d.stdout || '[]') as { key: string[] }[]) : [];
      for (const e of entries) {
        if ((await sh('bpftool', ['map', 'delete', 'pinned', pin, 'key', 'hex', ...e.key.map((b) => b.replace(/^0x/, ''))])).code === 0) deleted++;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return { async stop() { running = false; await loop; return deleted; } };
}

describe('membrane connectivity test', { timeout: 900_000 }, () => {
  before(async () => { await lab.up(); });
  after(async () => { await lab.down(); });

  it('passes on a healthy 1-node lab and removes its namespace', async () => {
    const r = await lab.run(['connectivity', 'test', ...PROBE], { timeoutMs: 600_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /✅ All 7 tests \(19 actions\) successful/);
    for (const t of ['no-policies', 'all-ingress-deny', 'all-egress-deny', 'echo-ingress-from-client', 'client-egress-to-entities-world', 'to-fqdns', 'echo-ingress-l7']) {
      assert.match(r.stdout, new RegExp(`\\[=\\] Test \\[${t}\\]`));
    }
    const ns = JSON.parse(await lab.ok(['get', 'namespaces', '-o', 'json'])) as { items: { metadata: { name: string } }[] };
    assert.equal(ns.items.some((n) => n.metadata.name === 'membrane-test'), false);
  });

  it('--test selects tests; an unknown name is an error listing them', async () => {
    const r = await lab.run(['connectivity', 'test', '--test', 'no-such-test'], { timeoutMs: 300_000 });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /CONNECTIVITY_NO_TESTS/);
    assert.match(r.stderr, /echo-ingress-l7/);
  });

  it('fails, naming the test and action, when the datapath\'s policy map is cleared', async () => {
    const pin = `${lab.paths.pinRoot('node1')}/mb_policy`;
    const breaker = breakPolicyMap(pin);
    let r;
    try {
      r = await lab.run(['connectivity', 'test', ...PROBE, '--test', 'echo-ingress-from-client'], { timeoutMs: 600_000 });
    } finally {
      const n = await breaker.stop();
      assert.ok(n > 0, 'the breaker deleted policy entries');
    }
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /❌ 1\/1 tests failed/);
    assert.match(r.stdout, /Test \[echo-ingress-from-client\]:/);
    // an allowed client → echo connection is what breaks (expected success, got drop): the pod
    // or the service action, whichever ran while the breaker had the map empty (the agent writes
    // the entries again as the battery applies its policy, so a window may let one through)
    assert.match(r.stdout, /echo-ingress-from-client\/pod-to-(pod\/0: membrane-test\/client -> membrane-test\/echo-same-node|service\/0: membrane-test\/client -> service membrane-test\/echo-same-node:8080)[ :].*expected success, got drop/);
    assert.doesNotMatch(r.stdout, /client2 -> .*expected drop, got success/);
    // positive control: with the map intact again (the agent rewrites it on the next change), the same test passes
    const again = await lab.run(['connectivity', 'test', ...PROBE, '--test', 'echo-ingress-from-client'], { timeoutMs: 600_000 });
    assert.equal(again.code, 0, again.stdout);
  });
});
