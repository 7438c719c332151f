/**
 * ClusterIP services load-balanced in the datapath (socket-less lb4 at the client's veth), end to
 * end through the CLI: a Service with two backends reached from a pod over several connections,
 * UDP through the same VIP (a connected UDP socket only accepts replies from the VIP), policy
 * decided on the BACKEND's identity and port, and a Service without backends.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type Flow } from '../support/lab.ts';

const lab = new TestLab(`svc${process.pid % 10000}`);
let ip: Record<string, string> = {};
let vip = '';
let emptyVip = '';

const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const pod = (name: string, labels: Record<string, string>) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'svc', labels },
  spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }, { name: 'echo-udp', containerPort: 8080, protocol: 'UDP' }] }] },
});
const service = (name: string, selector: Record<string, string>) => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'svc' },
  spec: { selector, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }, { name: 'udp', port: 53, targetPort: 8080, protocol: 'UDP' }] },
});
const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: 'svc' }, spec });

async function clusterIP(name: string): Promise<string> {
  const list = JSON.parse(await lab.ok(['get', 'services', '-n', 'svc', '-o', 'json'])) as { items: { metadata: { name: string }; spec: { clusterIP?: string } }[] };
  return list.items.find((s) => s.metadata.name === name)?.spec.clusterIP ?? '';
}

/** n HTTP requests to the VIP from the client pod, one connection each: the pod names that answered ('' = failed). */
async function curlMany(n: number): Promise<string[]> {
  const script = `for i in $(seq 1 ${n}); do r=$(curl -s --connect-timeout 2 -m 4 http://${vip}:80/hostname); echo "got=$r"; done`;
  const r = await lab.exec('svc', 'client', ['bash', '-c', script], 120_000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.startsWith('got=')).map((l) => l.slice(4).trim());
}

before(async () => {
  await lab.up();
  await lab.apply([
    ns('svc'),
    pod('web-a', { app: 'web', which: 'a' }),
    pod('web-b', { app: 'web', which: 'b' }),
    pod('client', { app: 'client' }),
    service('web', { app: 'web' }),
    service('nobody', { app: 'nobody' }),
  ]);
  const all = await lab.podIPs();
  ip = { a: all['svc/web-a']!, b: all['svc/web-b']!, client: all['svc/client']! };
  for (const [k, v] of Object.entries(ip)) assert.ok(v, `${k} has an IP`);
  vip = await clusterIP('web');
  emptyVip = await clusterIP('nobody');
  assert.match(vip, /^10\.96\./);
  assert.match(emptyVip, /^10\.96\./);
  await lab.settle();
});
after(async () => { await lab.down(); });

test('TCP to the ClusterIP reaches both backends over several connections', async () => {
  const got = await curlMany(16);
  assert.equal(got.filter((g) => g === '').length, 0, `every request answered: ${got}`);
  assert.deepEqual([...new Set(got)].sort(), ['web-a', 'web-b'], `both backends answered: ${got}`);
});

test('UDP through the ClusterIP: replies come from the VIP (connected socket)', async () => {
  const script = `for i in 1 2 3 4 5 6; do r=$(echo -n hostname | timeout 3 nc -u -w1 ${vip} 53); echo "got=$r"; done`;
  const r = await lab.exec('svc', 'client', ['bash', '-c', script], 60_000);
  const got = r.stdout.split('\n').filter((l) => l.startsWith('got=')).map((l) => l.slice(4).trim());
  assert.equal(got.length, 6);
  for (const g of got) assert.ok(g === 'web-a' || g === 'web-b', `UDP answer from a backend through the VIP: ${JSON.stringify(got)}`);
});

test('policy sees the backend: connections that land on a denied backend are dropped with POLICY_DENIED', async () => {
  const pol = [cnp('client-to-a', {
    endpointSelector: { matchLabels: { app: 'client' } },
    egress: [{ toEndpoints: [{ matchLabels: { which: 'a' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
  })];
  await lab.apply(pol);
  try {
    const since = new Date();
    const got = await curlMany(12);
    assert.ok(got.includes('web-a'), `some connections land on web-a (allowed): ${got}`);
    assert.ok(got.includes(''), `some land on web-b (denied): ${got}`);
    assert.ok(!got.includes('web-b'), `web-b never answers: ${got}`);
    const toB = (fs: Flow[]) => fs.filter((f) => f.IP?.destination === ip.b);
    const drops = toB(await lab.waitFlows(['--from-pod', 'svc/client', '--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '1000'], (fs) => toB(fs).length > 0));
    assert.ok(drops.length > 0, 'a DROPPED flow client -> web-b (the backend, not the VIP)');
    assert.equal(drops[0]!.drop_reason_desc, 'POLICY_DENIED');
    assert.equal(drops[0]!.traffic_direction, 'EGRESS');
    assert.equal(drops[0]!.destination?.pod_name, 'web-b');
    assert.equal(drops[0]!.l4?.TCP?.destination_port, 8080, 'the backend port');
  } finally {
    await lab.delete(pol);
  }
});

test('a Service without backends drops with SERVICE_BACKEND_NOT_FOUND', async () => {
  const since = new Date();
  const r = await lab.exec('svc', 'client', ['bash', '-c', `curl -s --connect-timeout 1 -m 2 http://${emptyVip}:80/; echo rc=$?`]);
  assert.doesNotMatch(r.stdout, /rc=0/);
  const toVip = (fs: Flow[]) => fs.filter((f) => f.IP?.destination === emptyVip);
  const drops = toVip(await lab.waitFlows(['--from-pod', 'svc/client', '--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '1000'], (fs) => toVip(fs).length > 0));
  assert.ok(drops.length > 0, 'a DROPPED flow to the empty service');
  assert.equal(drops[0]!.drop_reason_desc, 'SERVICE_BACKEND_NOT_FOUND');
});

test('backends follow the pods: a deleted backend pod stops receiving connections', async () => {
  await lab.delete([pod('web-b', { app: 'web', which: 'b' })]);
  const got = await curlMany(8);
  assert.deepEqual([...new Set(got)], ['web-a'], `only web-a is left: ${got}`);
});
