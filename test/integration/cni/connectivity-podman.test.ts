/**
 * `membrane connectivity test --podman` on real containers: a host-mode agent in a stand-in host
 * namespace, rootful podman (CNI backend, membrane-cni as its network; support/podman.ts) with the
 * offline busybox image. The CLI runs inside the stand-in host, as a user runs it on a host: the
 * battery starts client, client2 and echo-same-node as containers, applies each test's policies
 * and probes; the allowed actions must pass and the denied ones must be dropped (exact per-action
 * expectations live in the battery). Host mode has no ClusterIP DNS names or world hosts: those
 * two tests are reported skipped. Its clean-up leaves no container, endpoint or namespace.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { HostModeLab } from '../support/host-mode.ts';
import { createPodman, IMAGE, type Podman } from '../support/podman.ts';
import { REPO, type RunResult } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import type { EndpointView } from '../../../src/agent/views.ts';

const lab = new HostModeLab(`cnic${process.pid}`, '10.244.216.0/24');
let pm: Podman;
// Each action the battery expects dropped waits out its probe (the CLI's default, 4 s, is
// cilium-cli's). 2 s still spans the SYN's first retransmission (1 s): a policy that let a
// retried SYN through would read as success and fail the action; an allowed action answers in
// milliseconds.
const PROBE = ['--probe-timeout', '2000'];

function connectivity(args: string[]): Promise<RunResult> {
  return new Promise((res) => {
    execFile('nsenter', [`--net=/run/netns/${lab.hostNetns}`, join(REPO, 'bin/membrane'), 'connectivity', 'test', '--podman', '--image', IMAGE, '--agent-socket', lab.socket, ...PROBE, ...args], {
      env: { ...pm.env, NO_COLOR: '1' }, timeout: 600_000, maxBuffer: 16 << 20,
    }, (err, stdout, stderr) => res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr }));
  });
}

describe('membrane connectivity test on podman containers', { timeout: 1_200_000 }, () => {
  before(async () => {
    await lab.startAgent();
    pm = createPodman({ dir: await lab.dir, hostNetns: lab.hostNetns, agentSocket: lab.socket });
    await pm.setup();
  });
  after(async () => {
    await pm?.teardown().catch(() => {});
    await lab.cleanup();
  });

  it('passes: pod-to-pod, L3/L4 allow and deny, ingress/egress deny, L7 HTTP; skips what host mode lacks; cleans up', async () => {
    const r = await connectivity([]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /podman containers/);
    for (const t of ['no-policies', 'all-ingress-deny', 'all-egress-deny', 'echo-ingress-from-client', 'echo-ingress-l7']) assert.match(r.stdout, new RegExp(`\\[=\\] Test \\[${t}\\]`));
    for (const t of ['client-egress-to-entities-world', 'to-fqdns']) assert.match(r.stdout, new RegExp(`\\[-\\] Skipping test \\[${t}\\]`));
    assert.match(r.stdout, /✅ All 5 tests \(10 actions\) successful, 2 tests skipped\./);
    // clean-up: no test container, endpoint or namespace left; the agent's own state is intact
    const ps = await pm.ok(['ps', '-a', '--format', '{{.Names}}']);
    assert.equal(ps.split('\n').filter((n) => n.startsWith('membrane-test-')).length, 0, ps);
    const eps = (await callAgent<{ items: EndpointView[] }>(lab.socket, 'GET', '/v1/endpoints')).items;
    assert.equal(eps.filter((e) => e.namespace === 'membrane-test').length, 0, JSON.stringify(eps));
    const ns = await callAgent<{ items: { metadata: { name: string } }[] }>(lab.socket, 'GET', '/v1/resources?kind=Namespace');
    assert.equal(ns.items.some((n) => n.metadata.name === 'membrane-test'), false);
  });

  it('a policy the battery does not expect makes it fail and name the test and action', async () => {
    // negative control: a standing deny-all ingress on the echo makes the allowed client → echo fail
    const deny = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-echo', namespace: 'membrane-test' }, spec: { podSelector: { matchLabels: { app: 'echo-same-node' } }, policyTypes: ['Ingress'] } };
    await lab.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'membrane-test' } }, deny]);
    try {
      const r = await connectivity(['--test', 'no-policies', '--probe-timeout', '2000']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /❌ 1\/1 tests failed/);
      assert.match(r.stdout, /no-policies\/pod-to-pod\/0: membrane-test\/client -> membrane-test\/echo-same-node .*expected success, got drop/);
    } finally {
      await lab.delete([deny]).catch(() => {});
    }
  });
});
