/**
 * Three nodes sharing one etcd (`membrane up --nodes 3`, native routing on the lab underlay):
 * nodes registered, pods placed by spec.nodeName or spread, the same identity number for the same
 * labels on every node, pod-to-pod across nodes allowed and then denied by an L3/L4 policy applied
 * through another node, flows on both ends with the right identities, an agent killed and
 * restarted (enforcement meanwhile, same identities after), and a deleted pod's ipcache key gone
 * from etcd.
 */
import { skipUnless } from '../../support/requirements.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { execFileSync } from 'node:child_process';
import { TestLab, type Flow } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';

const lab = new TestLab(`cl${process.pid % 10000}`);
const skip = skipUnless('root', 'etcd');
const paths = lab.paths;
let ip: Record<string, string> = {};

const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'cl' } };
const pod = (name: string, labels: Record<string, string>, nodeName?: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'cl', labels },
  spec: { ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
});
const policy = {
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'server-from-client', namespace: 'cl' },
  spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
};

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface PodJson { metadata: { name: string; namespace: string }; spec: { nodeName?: string }; status?: { podIP?: string; phase?: string; identity?: number } }
async function pods(): Promise<PodJson[]> {
  return (JSON.parse(await lab.ok(['get', 'pods', '-n', 'cl', '-o', 'json'])) as { items: PodJson[] }).items;
}

async function flowsOn(node: string, args: string[], pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  let fs: Flow[] = [];
  for (let i = 0; i < 30; i++) {
    fs = await lab.flows(['--node', node, ...args]);
    if (pred(fs)) return fs;
    await new Promise((r) => setTimeout(r, 250));
  }
  return fs;
}

before(async () => {
  if (skip) return;
  await lab.ok(['up', '--nodes', '3'], { timeoutMs: 240_000 });
  await lab.apply([ns]);
  await lab.apply([pod('client', { app: 'client' }, 'node1'), pod('server', { app: 'server' }, 'node2'), pod('intruder', { app: 'intruder' }, 'node3'), pod('spread', { app: 'spread' })]);
  const ready = await until('four pods running with addresses', async () => {
    const ps = await pods();
    return ps.length === 4 && ps.every((p) => p.status?.phase === 'Running' && p.status.podIP) ? ps : undefined;
  }, 90_000);
  ip = Object.fromEntries(ready.map((p) => [p.metadata.name, p.status!.podIP!]));
});
after(async () => { await lab.down(); });

test('get nodes: three registered nodes with their addresses and pod CIDRs', { skip }, async () => {
  const out = await lab.ok(['get', 'nodes']);
  for (let k = 1; k <= 3; k++) assert.match(out, new RegExp(`node${k}\\s+Ready\\s+192\\.0\\.2\\.${k}\\s+10\\.244\\.${k}\\.0/24`));
  const st = await lab.ok(['status']);
  assert.match(st, /KVStore:\s+Ok\s+etcd: 1\/1 connected, leases=1.*3\.4\.\d+ \(Leader\)/);
  assert.match(st, /Cluster:\s+Ok\s+3 node\(s\) registered: node1 \(192\.0\.2\.1\), node2 \(192\.0\.2\.2\), node3 \(192\.0\.2\.3\)/);
});

test('pods honour spec.nodeName, the others are spread; -o wide shows the node', { skip }, async () => {
  const ps = await pods();
  const node = Object.fromEntries(ps.map((p) => [p.metadata.name, p.spec.nodeName]));
  assert.deepEqual({ client: node.client, server: node.server, intruder: node.intruder }, { client: 'node1', server: 'node2', intruder: 'node3' });
  // node1 already runs the lab DNS pod: the fewest pods are on node2/node3 → the lower one
  assert.equal(node.spread, 'node2');
  assert.match(ip.server!, /^10\.244\.2\./);
  assert.match(ip.intruder!, /^10\.244\.3\./);
  const wide = await lab.ok(['get', 'pods', '-n', 'cl', '-o', 'wide']);
  assert.match(wide, /intruder\s+1\/1\s+Running\s+10\.244\.3\.\d+\s+node3/);
});

test('the same labels have the same identity number on every node', { skip }, async () => {
  const byNode = await Promise.all([1, 2, 3].map(async (k) => {
    const { items } = await callAgent<{ items: { id: number; labels: string[]; scope: string }[] }>(paths.agentSocket(`node${k}`), 'GET', '/v1/identities');
    return new Map(items.filter((i: { scope: string }) => i.scope === 'cluster').map((i: { labels: string[]; id: number }) => [i.labels.join(','), i.id]));
  }));
  const ps = await pods();
  for (const p of ps) {
    const id = p.status!.identity!;
    assert.ok(id >= 256 && id <= 65535, `${p.metadata.name}: ${id}`);
    const key = [...byNode[0]!].find(([, v]) => v === id)?.[0];
    assert.ok(key, `node1 knows identity ${id} of ${p.metadata.name}`);
    for (const m of byNode) assert.equal(m.get(key), id, `${p.metadata.name} has ${id} everywhere`);
  }
  // and in etcd, in Cilium's layout
  const etcd = execFileSync('etcdctl', ['--endpoints', `unix://etcd.sock:0`, 'get', `cilium/state/identities/v1/id/${ps.find((p) => p.metadata.name === 'client')!.status!.identity}`, '--print-value-only'],
    { cwd: `${paths.stateDir}/etcd`, env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
  assert.match(etcd, /^k8s:app=client;.*k8s:io\.kubernetes\.pod\.namespace=cl;$/m);
});

test('pod to pod across nodes: allowed without policy, then only the selected peer after a policy applied on node3', { skip }, async () => {
  const target = `${ip.server}:8080/tcp`;
  // positive control before any policy: both reach the server on node2 from node1 and node3
  assert.deepEqual(await lab.probe('cl', 'client', [target]), { [target]: true });
  assert.deepEqual(await lab.probe('cl', 'intruder', [target]), { [target]: true });
  const since = new Date();
  const file = join(await lab.dir, 'policy.yaml');
  await writeFile(file, stringify(policy));
  await lab.ok(['apply', '--node', 'node3', '-f', file]);
  await until('node2 enforces the policy applied on node3', async () => {
    const [c, i] = await Promise.all([lab.probe('cl', 'client', [target]), lab.probe('cl', 'intruder', [target])]);
    return c[target] === true && i[target] === false;
  });
  const ids = Object.fromEntries((await pods()).map((p) => [p.metadata.name, p.status!.identity!]));
  // the receiving node (node2): the allowed SYN's verdict and the denied SYN, each with the sender's identity
  const onServer = await flowsOn('node2', ['--to-pod', 'cl/server', '--since', since.toISOString(), '--last', '1000'],
    (fs) => fs.some((f) => f.verdict === 'DROPPED' && f.source?.pod_name === 'intruder') && fs.some((f) => f.verdict === 'FORWARDED' && f.source?.pod_name === 'client'));
  const denied = onServer.find((f) => f.verdict === 'DROPPED' && f.source?.pod_name === 'intruder');
  assert.ok(denied, JSON.stringify(onServer.slice(-5)));
  assert.equal(denied.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(denied.source?.identity, ids.intruder);
  assert.equal(denied.destination?.identity, ids.server);
  const allowed = onServer.find((f) => f.verdict === 'FORWARDED' && f.source?.pod_name === 'client');
  assert.equal(allowed!.source?.identity, ids.client);
  assert.equal(allowed!.source?.namespace, 'cl');
  // the sending node (node1): the client's flow to the server, the server named from the kvstore
  const onClient = await flowsOn('node1', ['--from-pod', 'cl/client', '--since', since.toISOString(), '--last', '1000'],
    (fs) => fs.some((f) => f.destination?.pod_name === 'server'));
  const out = onClient.find((f) => f.destination?.pod_name === 'server');
  assert.ok(out, JSON.stringify(onClient.slice(-5)));
  assert.equal(out.source?.identity, ids.client);
  assert.equal(out.destination?.identity, ids.server);
  assert.equal(out.node_name, 'node1');
});

test('an agent killed on node2: its datapath keeps enforcing, and after `up` it is back with the same identities', { skip }, async () => {
  const target = `${ip.server}:8080/tcp`;
  const before = Object.fromEntries((await pods()).map((p) => [p.metadata.name, p.status!.identity!]));
  const pid = Number(readFileSync(paths.agentPidFile('node2'), 'utf8'));
  process.kill(pid, 'SIGKILL');
  await until('the node2 agent is gone', async () => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'), 10_000);
  // no agent on node2: the pinned datapath still allows the client and denies the intruder
  const [c, i] = await Promise.all([lab.probe('cl', 'client', [target]), lab.probe('cl', 'intruder', [target])]);
  assert.deepEqual([c[target], i[target]], [true, false]);
  await lab.ok(['up'], { timeoutMs: 240_000 });
  assert.notEqual(Number(readFileSync(paths.agentPidFile('node2'), 'utf8')), pid);
  const after = Object.fromEntries((await pods()).map((p) => [p.metadata.name, p.status!.identity!]));
  assert.deepEqual(after, before);
  const { items } = await callAgent<{ items: { pod: string; identity: number }[] }>(paths.agentSocket('node2'), 'GET', '/v1/endpoints?namespace=cl');
  assert.equal(items.find((e) => e.pod === 'server')?.identity, before.server);
  await until('node2 enforces the same policy after the restart', async () => {
    const [c2, i2] = await Promise.all([lab.probe('cl', 'client', [target]), lab.probe('cl', 'intruder', [target])]);
    return c2[target] === true && i2[target] === false;
  });
});

test("a deleted pod's ipcache key (Cilium's IPIdentityPair JSON) leaves etcd", { skip }, async () => {
  const gone = ip.spread!;
  const key = `cilium/state/ip/v1/default/${gone}`;
  const get = () => execFileSync('etcdctl', ['--endpoints', 'unix://etcd.sock:0', 'get', key, '--print-value-only'], { cwd: `${paths.stateDir}/etcd`, env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }).trim();
  const v = JSON.parse(get()) as { IP: string; HostIP: string; ID: number; Metadata: string; K8sNamespace: string; K8sPodName: string; Mask: null };
  assert.deepEqual({ IP: v.IP, HostIP: v.HostIP, Mask: v.Mask, ns: v.K8sNamespace, pod: v.K8sPodName }, { IP: gone, HostIP: '192.0.2.2', Mask: null, ns: 'cl', pod: 'spread' });
  assert.match(v.Metadata, /^cilium-global:default:node2:\d+$/);
  await lab.delete([pod('spread', { app: 'spread' })]);
  await until('the ipcache key is deleted', async () => get() === '', 20_000);
});
