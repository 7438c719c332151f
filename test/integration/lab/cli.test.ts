/**
 * `membrane up` / `exec` / `down` through the CLI with real agents. Own lab name and state dir;
 * `down` in after().
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from '../../support/requirements.ts';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const REPO = join(import.meta.dirname, '../../..');
const BIN = join(REPO, 'bin/membrane');
const LAB = `lc${Math.floor(Math.random() * 1e6).toString(36)}`;
const STATE = `/tmp/membrane-test-${LAB}`;
const env = { ...process.env, MEMBRANE_LAB: LAB, MEMBRANE_STATE_DIR: STATE };
const skip = skipUnless('root');
const dir = mkdtempSync(join(tmpdir(), 'lab-cli-'));

function membrane(args: string[], timeout = 120_000): { code: number; out: string; err: string } {
  const r = spawnSync(BIN, args, { encoding: 'utf8', env, timeout });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: r.stderr ?? '' };
}
const labNetns = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`${LAB}-`));

const manifest = `
apiVersion: v1
kind: Namespace
metadata: { name: lc }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: lc, labels: { app: server } }
spec:
  containers:
    - name: agnhost
      image: registry.k8s.io/e2e-test-images/agnhost:2.47
      args: [netexec, --http-port=80, --udp-port=80]
      ports:
        - { containerPort: 80, protocol: TCP }
        - { containerPort: 80, protocol: UDP }
        - { containerPort: 81, protocol: TCP }
        - { containerPort: 81, protocol: UDP }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: lc, labels: { app: client } }
spec:
  containers:
    - { name: curl, image: curlimages/curl }
`;

before(() => {
  writeFileSync(join(dir, 'lab.yaml'), manifest);
});

after(() => {
  if (!skip) membrane(['down']);
  rmSync(dir, { recursive: true, force: true });
});

function podIP(name: string): string {
  const r = membrane(['get', 'pods', '-n', 'lc', '-o', 'json']);
  assert.equal(r.code, 0, r.err);
  const items = (JSON.parse(r.out) as { items: { metadata: { name: string }; status?: { podIP?: string } }[] }).items;
  const ip = items.find((p) => p.metadata.name === name)?.status?.podIP;
  assert.ok(ip, `${name} has an IP: ${r.out}`);
  return ip!;
}

function workloadPids(): number[] {
  const pods = join(STATE, 'nodes/node1/pods');
  return readdirSync(pods).flatMap((d) => readdirSync(join(pods, d)).filter((f) => f.endsWith('.pid')).map((f) => Number(readFileSync(join(pods, d, f), 'utf8')))).sort();
}

test('up -f, exec, agent restart adopts workloads, down removes everything', { skip }, () => {
  const up = membrane(['up', '-f', join(dir, 'lab.yaml')]);
  assert.equal(up.code, 0, up.err + up.out);
  assert.match(up.out, /pod\/server created/);
  assert.ok(labNetns().includes(`${LAB}-node1`) && labNetns().includes(`${LAB}-world`));

  const ip = podIP('server');
  const curl = membrane(['exec', '-n', 'lc', 'client', '--', 'curl', '-sS', '-m', '3', `http://${ip}:81/x`]);
  assert.equal(curl.code, 0, curl.err);
  assert.equal((JSON.parse(curl.out) as { pod: string }).pod, 'server');
  const world = membrane(['exec', '-n', 'lc', 'client', '--', 'curl', '-sS', '-m', '3', 'http://198.51.100.10/']);
  assert.equal(world.code, 0, world.err);
  assert.equal(membrane(['exec', '-n', 'lc', 'client', '--', 'sh', '-c', 'exit 3']).code, 3);
  const resolv = membrane(['exec', '-n', 'lc', 'client', '--', 'cat', '/etc/resolv.conf']);
  assert.match(resolv.out, /search lc\.svc\.cluster\.local/);
  assert.equal(membrane(['exec', '-n', 'lc', 'nope', '--', 'true']).code, 1);

  // Agent restart: `up` again starts a new agent that adopts the running workloads.
  const pids = workloadPids();
  const agentPid = Number(readFileSync(join(STATE, 'nodes/node1/agent.pid'), 'utf8'));
  process.kill(agentPid, 'SIGTERM');
  for (let i = 0; i < 100 && existsSync(`/proc/${agentPid}`) && !readFileSync(`/proc/${agentPid}/stat`, 'utf8').includes(') Z'); i++) execFileSync('sleep', ['0.1']);
  const again = membrane(['up']);
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /agent started/);
  assert.deepEqual(workloadPids(), pids, 'same workload processes after the agent restart');
  assert.equal(podIP('server'), ip);
  const st = membrane(['lab', 'status', '-o', 'json']);
  assert.equal((JSON.parse(st.out) as { nodes: { agentAlive: boolean }[] }).nodes[0]!.agentAlive, true);

  const down = membrane(['down']);
  assert.equal(down.code, 0, down.err);
  assert.deepEqual(labNetns(), []);
  assert.ok(!existsSync(STATE));
  for (const p of [...pids, agentPid]) assert.ok(!existsSync(`/proc/${p}`) || readFileSync(`/proc/${p}/stat`, 'utf8').includes(') Z'), `pid ${p} gone`);
});
