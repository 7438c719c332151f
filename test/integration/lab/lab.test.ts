/**
 * The lab without an agent: real namespaces, veths and workload processes, driven through the
 * PodNetworks and Workloads ports directly. Needs root. Uses its own lab name and state dir and
 * removes everything (labDown) even on failure.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from '../../support/requirements.ts';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod, Container } from '../../../src/api/types.ts';
import type { PodNetworkInfo } from '../../../src/agent/pod-network.ts';

const LAB = `lt${Math.floor(Math.random() * 1e6).toString(36)}`;
process.env.MEMBRANE_LAB = LAB;
process.env.MEMBRANE_STATE_DIR = `/tmp/membrane-test-${LAB}`;
process.env.MEMBRANE_BPFFS = `/tmp/membrane-test-${LAB}-bpffs`;

const { labPaths } = await import('../../../src/common/paths.ts');
const lab = await import('../../../src/lab/index.ts');
const { createPodNetworks: rawNetworks } = await import('../../../src/lab/network.ts');
const { createWorkloads: rawWorkloads } = await import('../../../src/lab/workloads.ts');

const needsRoot = skipUnless('root');
const { loadConfig } = await import('../../../src/common/config.ts');
const config = loadConfig();
const paths = labPaths(config);
const REPO = lab.REPO_ROOT;
const PROBE = join(REPO, 'test/integration/support/probe.ts');

const pod = (name: string, containers: Container[], ns = 'default'): Pod => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels: { app: name } }, spec: { containers }, source: { file: 'test', line: 1, col: 1 },
});
const server = pod('server', [{
  name: 'web', image: 'registry.k8s.io/e2e-test-images/agnhost:2.47',
  args: ['netexec', '--http-port=80', '--udp-port=80'],
  ports: [80, 81].flatMap((p) => [{ containerPort: p, protocol: 'TCP' as const }, { containerPort: p, protocol: 'UDP' as const }]),
}]);
const client = pod('client', [{ name: 'curl', image: 'curlimages/curl' }], 'other');
const cmd = pod('cmd', [{ name: 'sh', image: 'whatever/unknown', command: ['sh', '-c', 'echo started; exec sleep 1000'] }]);

let nets: ReturnType<typeof rawNetworks>;
let wl: ReturnType<typeof rawWorkloads>;
const info: Record<string, PodNetworkInfo> = {};

function inPod(netns: string, argv: string[], timeout = 10_000): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', netns, ...argv], { encoding: 'utf8', timeout });
  return { code: r.status ?? -1, out: (r.stdout ?? '') + (r.stderr ?? '') };
}
function probe(netns: string, targets: string[]): Record<string, boolean> {
  const r = inPod(netns, [join(REPO, 'bin/node'), PROBE, ...targets]);
  assert.equal(r.code, 0, r.out);
  return JSON.parse(r.out.trim().split('\n').pop()!) as Record<string, boolean>;
}
function labNetns(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${LAB}-`));
}

before(async () => {
  if (needsRoot) return;
  await lab.labUp({ config, nodes: 1, networkOnly: true });
  nets = rawNetworks({ lab: LAB, node: 'node1', nodeIndex: 1, paths });
  wl = rawWorkloads({ lab: LAB, node: 'node1', paths, repoRoot: REPO });
  for (const p of [server, client, cmd]) {
    info[p.metadata.name] = await nets.ensure(p);
    const w = await wl.ensure(p, info[p.metadata.name]!);
    assert.deepEqual(w, { ready: 1, total: 1 }, `${p.metadata.name} ready`);
  }
});

after(async () => {
  if (needsRoot) return;
  await lab.labDown({ config });
});

test('names: pod netns, host veth, MAC follow the contract', { skip: needsRoot }, () => {
  const s = info.server!;
  assert.equal(s.netns, lab.podNetnsName('node1', 'default', 'server', LAB));
  assert.match(s.netns, new RegExp(`^${LAB}-p-[0-9a-f]{8}$`));
  assert.match(s.hostIfname, /^lxc[0-9a-f]{11}$/);
  assert.equal(s.mac, lab.macFromIp(s.ip));
  assert.match(s.ip, /^10\.244\.1\.(\d+)$/);
  assert.notEqual(info.client!.ip, s.ip);
});

test('pod to pod: TCP and UDP on 80 and 81 (agnhost-like server), closed port refused', { skip: needsRoot }, () => {
  const ip = info.server!.ip;
  const r = probe(info.client!.netns, [`${ip}:80/tcp`, `${ip}:81/tcp`, `${ip}:80/udp`, `${ip}:81/udp`, `${ip}:82/tcp`]);
  assert.deepEqual(r, { [`${ip}:80/tcp`]: true, [`${ip}:81/tcp`]: true, [`${ip}:80/udp`]: true, [`${ip}:81/udp`]: true, [`${ip}:82/tcp`]: false });
  const http = inPod(info.client!.netns, ['curl', '-sS', '-m', '3', '-d', 'hello', `http://${ip}:81/some/path?q=1`]);
  assert.equal(http.code, 0, http.out);
  const body = JSON.parse(http.out) as { pod: string; namespace: string; method: string; path: string; bodySize: number; client: { address: string } };
  assert.equal(body.pod, 'server');
  assert.equal(body.namespace, 'default');
  assert.equal(body.method, 'POST');
  assert.equal(body.path, '/some/path?q=1');
  assert.equal(body.bodySize, 5);
  assert.equal(body.client.address, info.client!.ip);
  const host = inPod(info.client!.netns, ['curl', '-sS', '-m', '3', `http://${ip}/hostname`]);
  assert.equal(host.out, 'server');
});

test('pod to world hosts: HTTP and UDP echo', { skip: needsRoot }, () => {
  for (const h of lab.worldHosts) {
    const r = inPod(info.client!.netns, ['curl', '-sS', '-m', '3', `http://${h.ip}:${h.tcp[0]}/w`]);
    assert.equal(r.code, 0, r.out);
    const body = JSON.parse(r.out) as { host: string; client: { address: string } };
    assert.equal(body.host, h.name);
    assert.equal(body.client.address, info.client!.ip, 'no NAT inside the lab');
    assert.deepEqual(probe(info.server!.netns, [`${h.ip}:${h.udp[0]}/udp`]), { [`${h.ip}:${h.udp[0]}/udp`]: true });
  }
});

test('pod files: resolv.conf and hosts through ip netns exec', { skip: needsRoot }, () => {
  const r = inPod(info.client!.netns, ['cat', '/etc/resolv.conf']);
  assert.match(r.out, /^nameserver 10\.96\.0\.10$/m);
  assert.match(r.out, /^search other\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m);
  const h = inPod(info.client!.netns, ['cat', '/etc/hosts']);
  assert.match(h.out, /localhost/);
  assert.ok(h.out.includes(`${info.client!.ip}\t`) && h.out.includes(' client'), h.out);
});

test('command containers run the host command in the pod namespace', { skip: needsRoot }, async () => {
  const pids = await wl.pids(cmd);
  const pid = pids.sh!;
  assert.ok(pid);
  assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '), /sleep 1000/);
  const a = execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' });
  const inNs = inPod(info.cmd!.netns, ['readlink', '/proc/self/ns/net']);
  assert.equal(a.trim(), inNs.out.trim());
});

test('echo workloads run a stripped .mjs (no TypeScript stripper per pod) and stay small', { skip: needsRoot }, async () => {
  const pid = (await wl.pids(server)).web!;
  assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /programs\/echo\.[0-9a-f]{12}\.mjs/);
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  assert.ok(rssKb < 80_000, `echo RSS ${rssKb} kB`);
});

test('restart: ensure again (new PodNetworks/Workloads objects) adopts: same IP, same pids', { skip: needsRoot }, async () => {
  const before = await wl.pids(server);
  const nets2 = rawNetworks({ lab: LAB, node: 'node1', nodeIndex: 1, paths });
  const wl2 = rawWorkloads({ lab: LAB, node: 'node1', paths, repoRoot: REPO });
  const n2 = await nets2.ensure(server);
  assert.deepEqual(n2, info.server);
  assert.deepEqual(await wl2.ensure(server, n2), { ready: 1, total: 1 });
  assert.deepEqual(await wl2.pids(server), before);
  assert.deepEqual(await wl2.ensure(client, info.client!), { ready: 1, total: 1 });
  // A killed workload is restarted (not adopted).
  process.kill(before.web!, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await wl2.ensure(server, n2), { ready: 1, total: 1 });
  assert.notEqual((await wl2.pids(server)).web, before.web);
  assert.equal(probe(info.client!.netns, [`${n2.ip}:80/tcp`])[`${n2.ip}:80/tcp`], true);
});

test('remove: stop + remove leaves no netns, veth, files or processes; the IP is reused', { skip: needsRoot }, async () => {
  const pids = await wl.pids(cmd);
  await wl.stop(cmd);
  await nets.remove(cmd);
  assert.ok(!existsSync(`/run/netns/${info.cmd!.netns}`));
  assert.ok(!existsSync(`/etc/netns/${info.cmd!.netns}`));
  assert.ok(!existsSync(`/proc/${pids.sh}`) || readFileSync(`/proc/${pids.sh}/stat`, 'utf8').includes(') Z'));
  const links = execFileSync('ip', ['-n', `${LAB}-node1`, '-o', 'link'], { encoding: 'utf8' });
  assert.ok(!links.includes(info.cmd!.hostIfname));
  const again = await nets.ensure(pod('cmd2', []));
  assert.equal(again.ip, info.cmd!.ip, 'freed address is handed out again');
  await nets.remove(pod('cmd2', []));
});

test('labDown removes everything and is idempotent', { skip: needsRoot }, async () => {
  const pids = [...Object.values(await wl.pids(server)), ...Object.values(await wl.pids(client))].filter((p): p is number => !!p);
  const worldPid = Number(readFileSync(join(paths.stateDir, 'world', 'echo.pid'), 'utf8'));
  const r = await lab.labDown({ config });
  assert.ok(r.namespaces.length >= 5);
  assert.deepEqual(labNetns(), []);
  assert.deepEqual((existsSync('/etc/netns') ? readdirSync('/etc/netns') : []).filter((n) => n.startsWith(`${LAB}-`)), []);
  assert.ok(!existsSync(paths.stateDir));
  for (const p of [...pids, worldPid]) {
    const alive = existsSync(`/proc/${p}`) && !readFileSync(`/proc/${p}/stat`, 'utf8').includes(') Z');
    assert.ok(!alive, `pid ${p} is gone`);
  }
  const again = await lab.labDown({ config });
  assert.deepEqual(again.namespaces, []);
});
