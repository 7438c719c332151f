/** Lab naming contract, IPAM and image → workload mapping (no root needed). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { Container, Pod } from '../../../src/api/types.ts';
import { hostIfname, isLabNetns, macFromIp, podNetnsName } from '../../../src/lab/names.ts';
import { createPodIpam } from '../../../src/lab/ipam.ts';
import { echoPorts, planContainer, registerImageHandler, type PlanContext } from '../../../src/lab/workloads.ts';
import { podFiles } from '../../../src/lab/network.ts';
import { labPaths } from '../../../src/common/paths.ts';
import { buildConfig } from '../../../src/common/config.ts';

test('names are stable, short enough and distinct per node/namespace/pod', () => {
  assert.equal(podNetnsName('node1', 'default', 'a', 'mbr'), podNetnsName('node1', 'default', 'a', 'mbr'));
  assert.match(podNetnsName('node1', 'default', 'a', 'mbr'), /^mbr-p-[0-9a-f]{8}$/);
  assert.notEqual(podNetnsName('node1', 'default', 'a', 'mbr'), podNetnsName('node2', 'default', 'a', 'mbr'));
  assert.notEqual(podNetnsName('node1', 'x', 'a', 'mbr'), podNetnsName('node1', 'default', 'a', 'mbr'));
  const h = hostIfname('default', 'a-very-long-pod-name-that-goes-on-and-on');
  assert.match(h, /^lxc[0-9a-f]{11}$/);
  assert.ok(h.length <= 15);
  assert.equal(macFromIp('10.244.1.2'), '0a:58:0a:f4:01:02');
  for (const n of ['mbr-node1', 'mbr-node12', 'mbr-world', 'mbr-underlay', 'mbr-p-0123abcd']) assert.ok(isLabNetns(n, 'mbr'), n);
  for (const n of ['mbr', 'mbr-x-node1', 'mbrx-node1', 'other-node1', 'mbr-p-xyz', 'mbr-node']) assert.ok(!isLabNetns(n, 'mbr'), n);
});

test('IPAM: same pod same IP, survives a new allocator on the same file, frees and reuses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ipam-'));
  try {
    const f = join(dir, 'ipam.json');
    const a = createPodIpam(f, 3);
    const ips = await Promise.all(['a', 'b', 'c'].map((k) => a.allocate(`ns/${k}`)));
    assert.deepEqual(ips, ['10.244.3.2', '10.244.3.3', '10.244.3.4']);
    assert.equal(await a.allocate('ns/b'), '10.244.3.3');
    const b = createPodIpam(f, 3);
    assert.equal(await b.allocate('ns/c'), '10.244.3.4');
    await b.release('ns/a');
    assert.equal(await b.allocate('ns/d'), '10.244.3.2');
    for (let i = 0; i < 250; i++) await b.allocate(`x/${i}`).catch(() => {});
    await assert.rejects(b.allocate('ns/overflow'), /LAB_IPAM_EXHAUSTED|no free pod address/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const pod = (c: Container): Pod => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'n' }, spec: { containers: [c] }, source: { file: '', line: 0, col: 0 } });
const ctx = (c: Container): PlanContext => ({
  pod: pod(c), container: c, net: { netns: 'x', ip: '10.244.1.2', mac: '', hostIfname: 'lxc', hostIfindex: 1 },
  repoRoot: '/repo', paths: labPaths(buildConfig({ env: { MEMBRANE_LAB: 'lab', MEMBRANE_STATE_DIR: '/state' } })), dir: '/state/p', id: 'lab/node1/n/p/' + c.name, nodeArgv: ['/repo/bin/node'], program: (n) => `/repo/src/lab/workloads/${n}.ts`,
});

test('image mapping: echo images, commands, declared ports, clients, anything else', () => {
  const echo = planContainer(ctx({ name: 'e', image: 'ealen/echo-server:latest' }));
  assert.equal(echo.kind, 'echo');
  assert.ok(echo.argv.includes('--tcp=80'));
  const ag = planContainer(ctx({ name: 'a', image: 'registry.k8s.io/e2e-test-images/agnhost:2.47', args: ['netexec', '--http-port=81', '--udp-port=81'] }));
  assert.ok(ag.argv.includes('--tcp=81') && ag.argv.includes('--udp=81'), ag.argv.join(' '));
  assert.deepEqual(echoPorts({ name: 'h', image: 'hashicorp/http-echo', args: ['-listen=:5679'] }), { tcp: [5679], udp: [] });
  assert.deepEqual(echoPorts({ name: 'h', image: 'nginx', ports: [{ containerPort: 80 }, { containerPort: 81 }, { containerPort: 80, protocol: 'UDP' }] }), { tcp: [80, 81], udp: [80] });
  assert.deepEqual(planContainer(ctx({ name: 'c', image: 'busybox', command: ['sleep', '10'], args: ['x'] })).argv, ['sleep', '10', 'x']);
  assert.deepEqual(planContainer(ctx({ name: 'c', image: 'busybox', command: 'echo hi' as unknown as string[] })).argv, ['sh', '-c', 'echo hi']);
  assert.equal(planContainer(ctx({ name: 'c', image: 'myorg/app', ports: [{ containerPort: 9000 }] })).kind, 'echo');
  assert.deepEqual(planContainer(ctx({ name: 'c', image: 'curlimages/curl' })).argv, ['sleep', 'infinity']);
  assert.equal(planContainer(ctx({ name: 'c', image: 'something/else' })).kind, 'idle');
});

test('image handlers registered later win (extension point)', () => {
  registerImageHandler((c) => (c.container.image?.includes('cilium/starwars') ? { kind: 'custom', argv: ['deathstar'] } : undefined));
  assert.deepEqual(planContainer(ctx({ name: 'd', image: 'docker.io/cilium/starwars', ports: [{ containerPort: 80 }] })).argv, ['deathstar']);
  assert.equal(planContainer(ctx({ name: 'e', image: 'nginx' })).kind, 'echo');
});

test('pod files point at the lab DNS', () => {
  const f = podFiles('mbr-p-1', 'shop', 'client', '10.244.1.9');
  assert.match(f.resolv, /^nameserver 10\.96\.0\.10$/m);
  assert.match(f.resolv, /search shop\.svc\.cluster\.local svc\.cluster\.local cluster\.local/);
  assert.match(f.hosts, /^10\.244\.1\.9\t.* client$/m);
});

test('the CLI starts and knows up, down, lab status and exec', () => {
  const bin = join(import.meta.dirname, '../../../bin/membrane');
  for (const args of [['--help'], ['up', '--help'], ['down', '--help'], ['lab', 'status', '--help'], ['exec', '--help']]) {
    const r = spawnSync(bin, args, { encoding: 'utf8' });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  }
});
