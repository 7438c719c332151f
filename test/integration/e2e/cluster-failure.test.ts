/**
 * A running cluster changes and fails (issue 11, "Failure"): `membrane node add` brings a third
 * node whose pods reach the others through the tunnel; etcd stopped → every node keeps enforcing
 * the last state and `status` says the kvstore is down, and after etcd returns a pod created then
 * is reachable with its policy everywhere; `membrane node delete` (the node dies) → its endpoints
 * leave the other nodes within one lease TTL (the lab's: 30 s).
 */
import { skipUnless } from '../../support/requirements.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TestLab } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import { until } from '../../support/until.ts';

// the whole pid: a sweeper of another test process (pid % 10000 names) never takes this lab for an orphan
const lab = new TestLab(`cf${process.pid}`);
const skip = skipUnless('root', 'etcd');
const paths = lab.paths;

const pod = (name: string, app: string, nodeName: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'cf', labels: { app } },
  spec: { nodeName, containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
});
const policy = {
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'server-from-client', namespace: 'cf' },
  spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
};

async function podIPs(): Promise<Record<string, string>> {
  const { items } = JSON.parse(await lab.ok(['get', 'pods', '-n', 'cf', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string; phase?: string } }[] };
  return Object.fromEntries(items.filter((p) => p.status?.phase === 'Running' && p.status.podIP).map((p) => [p.metadata.name, p.status!.podIP!]));
}
const reach = async (from: string, ip: string) => (await lab.probe('cf', from, [`${ip}:8080/tcp`]))[`${ip}:8080/tcp`];
const etcdKey = (key: string) => execFileSync('etcdctl', ['--endpoints', 'unix://etcd.sock:0', 'get', key, '--print-value-only'], { cwd: `${paths.stateDir}/etcd`, env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }).trim();

before(async () => {
  if (skip) return;
  await lab.ok(['up', '--nodes', '2'], { timeoutMs: 300_000 });
  await lab.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'cf' } }, pod('client', 'client', 'node1'), pod('server', 'server', 'node2'), policy]);
  await until('pods running', async () => Object.keys(await podIPs()).length === 2, 120_000);
});
after(async () => { await lab.down(); });

test('node add: node3 joins the running lab; its pods reach and are judged across the tunnel', { skip }, async () => {
  await lab.ok(['node', 'add'], { timeoutMs: 300_000 });
  assert.match(await lab.ok(['get', 'nodes']), /node3\s+Ready\s+192\.0\.2\.3\s+10\.244\.3\.0\/24/);
  await lab.apply([pod('client3', 'client', 'node3'), pod('intruder3', 'intruder', 'node3')]);
  const ip = await until('node3 pods running', async () => { const x = await podIPs(); return x.client3 && x.intruder3 ? x : undefined; }, 120_000);
  await until('client3 reaches the server on node2, intruder3 does not', async () =>
    (await reach('client3', ip.server!)) === true && (await reach('intruder3', ip.server!)) === false, 60_000);
});

test('etcd stopped: every node keeps enforcing, status says so; after it returns a new pod is known everywhere', { skip }, async () => {
  const ip = await podIPs();
  const etcdPid = Number(readFileSync(`${paths.stateDir}/etcd/etcd.pid`, 'utf8'));
  process.kill(etcdPid, 'SIGKILL');
  try {
    await until('status reports the kvstore down', async () => !/KVStore:\s+Ok/.test((await lab.run(['status'])).stdout), 30_000);
    // enforcement from the last state: allowed still allowed, denied still denied, across nodes
    assert.equal(await reach('client', ip.server!), true);
    assert.equal(await reach('client3', ip.server!), true);
    assert.equal(await reach('intruder3', ip.server!), false);
  } finally {
    await lab.ok(['up'], { timeoutMs: 300_000 }); // restarts the lab etcd (and nothing else that runs)
  }
  await until('status reports the kvstore back', async () => /KVStore:\s+Ok/.test((await lab.run(['status'])).stdout), 90_000);
  await lab.apply([pod('late', 'client', 'node3')]);
  const ip2 = await until('the pod made after the outage runs', async () => { const x = await podIPs(); return x.late ? x : undefined; }, 120_000);
  await until('it reaches the server on node2 (node2 learned its identity from etcd)', async () => (await reach('late', ip2.server!)) === true, 60_000);
});

test("node delete: node3 dies; its endpoints leave the others' view and etcd within one lease TTL", { skip }, async () => {
  const ip = await podIPs();
  const key = `cilium/state/ip/v1/default/${ip.client3}`;
  assert.match(etcdKey(key), /"HostIP":"192\.0\.2\.3"/);
  await lab.ok(['node', 'delete', 'node3'], { timeoutMs: 120_000 });
  // lease TTL 30 s in the lab: gone from etcd, and from node2's remote endpoints, within it (slack for a loaded machine)
  await until('the ipcache key of a node3 pod expires with its lease', async () => etcdKey(key) === '', 75_000);
  await until('node2 no longer lists node3', async () => {
    const { items } = await callAgent<{ items: { name: string }[] }>(paths.agentSocket('node2'), 'GET', '/v1/nodes');
    return !items.some((n) => n.name === 'node3');
  }, 30_000);
  assert.doesNotMatch(await lab.ok(['get', 'nodes']), /node3/);
  // positive control: the rest still works
  assert.equal(await reach('client', ip.server!), true);
  const r = await lab.run(['node', 'delete', 'node1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /LAB_NODE_REQUIRED/);
});
