/**
 * Two nodes joined by the underlay bridge (no agents): cross-node pod traffic, node 2 reaching
 * the world through node 1, labUp idempotent, the root namespace untouched, and labDown cleaning
 * up after a "crash" (state directory gone: everything is found by name).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from '../../support/requirements.ts';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod, Container } from '../../../src/api/types.ts';
import type { PodNetworkInfo } from '../../../src/agent/pod-network.ts';

const LAB = `lm${Math.floor(Math.random() * 1e6).toString(36)}`;
process.env.MEMBRANE_LAB = LAB;
process.env.MEMBRANE_STATE_DIR = `/tmp/membrane-test-${LAB}`;
process.env.MEMBRANE_BPFFS = `/tmp/membrane-test-${LAB}-bpffs`;

const { labPaths } = await import('../../../src/common/paths.ts');
const lab = await import('../../../src/lab/index.ts');

const needsRoot = skipUnless('root');
const { loadConfig } = await import('../../../src/common/config.ts');
// native routing: a network-only lab has no agent, so no eBPF puts pod traffic into the VXLAN tunnel
const config = { ...loadConfig(), routingMode: 'native' as const };
const paths = labPaths(config);
const REPO = lab.REPO_ROOT;
const PROBE = join(REPO, 'test/integration/support/probe.ts');
const rootState = () => ({
  links: execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }).split('\n').map((l) => l.split(':')[1]?.trim()).sort(),
  routes: execFileSync('ip', ['route', 'show', 'table', 'all'], { encoding: 'utf8' }).split('\n').filter((l) => !/\blinkdown\b/.test(l)).sort(),
});
let rootBefore: ReturnType<typeof rootState>;

const pod = (name: string, c: Container): Pod => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default' }, spec: { containers: [c] }, source: { file: 'test', line: 1, col: 1 },
});
const info: Record<string, PodNetworkInfo> = {};
const pods = {
  a: { node: 1, pod: pod('a', { name: 'web', image: 'nginx', ports: [{ containerPort: 80 }, { containerPort: 80, protocol: 'UDP' }] }) },
  b: { node: 2, pod: pod('b', { name: 'web', image: 'nginx', ports: [{ containerPort: 80 }, { containerPort: 80, protocol: 'UDP' }] }) },
};

function probe(netns: string, targets: string[]): Record<string, boolean> {
  const r = spawnSync('ip', ['netns', 'exec', netns, join(REPO, 'bin/node'), PROBE, ...targets], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as Record<string, boolean>;
}

before(async () => {
  if (needsRoot) return;
  rootBefore = rootState();
  await lab.labUp({ config, nodes: 2, networkOnly: true });
  await lab.labUp({ config, nodes: 2, networkOnly: true }); // idempotent
  for (const [k, v] of Object.entries(pods)) {
    const node = `node${v.node}`;
    const nets = lab.createPodNetworks({ lab: LAB, node, nodeIndex: v.node, paths });
    const wl = lab.createWorkloads({ lab: LAB, node, paths, repoRoot: REPO });
    info[k] = await nets.ensure(v.pod);
    assert.deepEqual(await wl.ensure(v.pod, info[k]!), { ready: 1, total: 1 });
  }
});

after(async () => {
  if (needsRoot) return;
  await lab.labDown({ config });
});

test('cross-node pod traffic and node 2 to the world', { skip: needsRoot }, () => {
  assert.match(info.b!.ip, /^10\.244\.2\./);
  assert.notEqual(info.a!.netns, info.b!.netns);
  const a = info.a!.ip;
  const b = info.b!.ip;
  assert.deepEqual(probe(info.b!.netns, [`${a}:80/tcp`, `${a}:80/udp`, '198.51.100.10:80/tcp', '203.0.113.10:7/udp']),
    { [`${a}:80/tcp`]: true, [`${a}:80/udp`]: true, '198.51.100.10:80/tcp': true, '203.0.113.10:7/udp': true });
  assert.deepEqual(probe(info.a!.netns, [`${b}:80/tcp`, `${b}:80/udp`]), { [`${b}:80/tcp`]: true, [`${b}:80/udp`]: true });
});

test('the root namespace gets no links or routes into the lab', { skip: needsRoot }, () => {
  const now = rootState();
  assert.deepEqual(now.links, rootBefore.links);
  // (this machine's own network may use the same documentation prefixes: compare, don't grep)
  assert.deepEqual(now.routes, rootBefore.routes);
  assert.ok(!now.routes.some((r) => /10\.244\.|198\.51\.100\.|203\.0\.113\./.test(r)), now.routes.join('\n'));
  // and the lab has no route to the machine's network: no default route in nodes or world
  for (const ns of [`${LAB}-node1`, `${LAB}-node2`, `${LAB}-world`]) {
    const routes = execFileSync('ip', ['-n', ns, 'route'], { encoding: 'utf8' });
    assert.ok(!/^default/m.test(routes), `${ns}: ${routes}`);
  }
});

test('labDown after a crash (state dir lost) still finds and removes everything', { skip: needsRoot }, async () => {
  const pid = Number(readFileSync(join(paths.nodeDir('node2'), 'pods', 'default_b', 'web.pid'), 'utf8'));
  rmSync(paths.stateDir, { recursive: true, force: true });
  const r = await lab.labDown({ config });
  assert.ok(r.processes >= 3, `stopped ${r.processes}`);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`${LAB}-`));
  assert.deepEqual(left, []);
  assert.ok(!existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'));
});
