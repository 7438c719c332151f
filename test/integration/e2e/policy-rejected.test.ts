/**
 * No policy that validates and does nothing, in a running lab: `membrane apply` of rules the
 * datapath and proxies cannot enforce (Kafka rules, l7proto, a host policy, mutual
 * authentication) fails with every problem's code and file:line:col, and changes nothing: the
 * port those rules name is not silently redirected to a missing proxy or dropped. The positive
 * control is the same rule without the unenforceable part: it applies and is enforced.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { TestLab } from '../support/lab.ts';

const lab = new TestLab(`prj${process.pid % 10000}`);
const NS = 'prj';
let ip: Record<string, string> = {};
let dir = '';

const pod = (name: string, labels: Record<string, string>) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels },
  spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
});
const cnp = (name: string, ingress: object[]) => ({
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS },
  spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress },
});
const fromClient8080 = (extra: object = {}) => ({ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], ...extra }] });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prj-'));
  await lab.up();
  await lab.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }, pod('server', { app: 'server' }), pod('client', { app: 'client' }), pod('intruder', { app: 'intruder' })]);
  const all = await lab.podIPs();
  ip = { server: all[`${NS}/server`]!, client: all[`${NS}/client`]!, intruder: all[`${NS}/intruder`]! };
  for (const [k, v] of Object.entries(ip)) assert.ok(v, `${k} has an IP`);
});
after(async () => {
  await lab.down();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function file(name: string, objects: object[]): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, objects.map((o) => stringify(o)).join('---\n'));
  return f;
}

const reach = async (from: string) => (await lab.probe(NS, from, [`${ip.server}:8080/tcp`]))[`${ip.server}:8080/tcp`];

test('unenforceable rules are refused with every code and line; nothing changes in the lab', async () => {
  assert.equal(await reach('client'), true, 'positive control: no policy, the client reaches the server');
  assert.equal(await reach('intruder'), true);
  const f = await file('rejected.yaml', [
    cnp('kafka', [fromClient8080({ rules: { kafka: [{ apiKey: 'bogus', topic: 'orders' }] } })]),
    cnp('r2d2', [fromClient8080({ rules: { l7proto: 'r2d2' } })]),
    cnp('auth', [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], authentication: { mode: 'required' } }]),
    { apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'host' }, spec: { nodeSelector: {}, ingress: [{ fromEntities: ['cluster'] }] } },
  ]);
  const r = await lab.run(['apply', '-f', f]);
  assert.notEqual(r.code, 0, 'apply fails');
  for (const code of ['POLICY_KAFKA_UNSUPPORTED', 'POLICY_L7PROTO_UNSUPPORTED', 'POLICY_AUTH_UNSUPPORTED', 'POLICY_HOST_FIREWALL_UNSUPPORTED']) {
    assert.match(r.stderr, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: ${code}: `), `${code} with file:line:col in:\n${r.stderr}`);
  }
  const v = await lab.run(['policy', 'validate', f]);
  assert.equal(v.code, 1);
  assert.match(v.stderr, /4 problem\(s\) found/);
  await lab.settle();
  const policies = JSON.parse(await lab.ok(['get', 'cnp', '-n', NS, '-o', 'json'])) as { items: unknown[] };
  assert.equal(policies.items.length, 0, 'no policy was applied');
  assert.equal(await reach('client'), true, 'the Kafka port is not silently redirected or dropped');
  assert.equal(await reach('intruder'), true, 'nothing was applied');
});

test('positive control: the same rule without the Kafka part is applied and enforced at L4', async () => {
  const l4 = cnp('kafka-l4', [fromClient8080()]);
  await lab.apply([l4]);
  try {
    assert.equal(await reach('client'), true);
    assert.equal(await reach('intruder'), false, 'the intruder is dropped by the L4 rule');
  } finally {
    await lab.delete([l4]);
  }
});
