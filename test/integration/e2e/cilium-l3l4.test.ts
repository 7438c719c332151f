/**
 * Cilium L3/L4 policy in the kernel, end to end through the CLI, over IPv4 and over IPv6 (issue
 * 14: one dual-stack lab, enable-ipv6; CIDR rules of each family): each case applies its policy,
 * makes real connections from pods, and checks both the outcome and the flow that
 * `membrane observe -o json` reports (verdict, drop reason). Also: bad input leaves the running
 * lab untouched, and applying the same file twice is a no-op.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type Flow } from '../support/lab.ts';
import { nodeIp6, worldIp6 } from '../../../src/lab/names.ts';

type Family = 4 | 6;
const lab = new TestLab(`l34${process.pid % 10000}`);
const ips: Record<Family, Record<string, string>> = { 4: {}, 6: {} };
/** Per family: two world hosts (in different prefixes), the node's own address, the CIDR rule's prefixes. */
const NET = {
  4: { worldA: '198.51.100.10', worldB: '203.0.113.10', node: '192.0.2.1', all: '0.0.0.0/0', exceptB: '203.0.113.0/24', hostPrefix: 32 },
  6: { worldA: worldIp6('198.51.100.10'), worldB: worldIp6('203.0.113.10'), node: nodeIp6(1), all: '::/0', exceptB: `${worldIp6('203.0.113.0')}/120`, hostPrefix: 128 },
} as const;
/** `ip:port/proto` as the prober takes it (IPv6 bare: it splits at the last colon). */
const at = (addr: string, port: number, proto: 'tcp' | 'udp') => `${addr}:${port}/${proto}`;

const ns = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const pod = (name: string, labels: Record<string, string>, image = 'ealen/echo-server', ports = [8080]) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'l34', labels },
  spec: { containers: [{ name: 'c', image, ports: ports.flatMap((p) => [{ containerPort: p, protocol: 'TCP' }, { containerPort: p, protocol: 'UDP' }]) }] },
});
const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: 'l34' }, spec });

before(async () => {
  lab.env.MEMBRANE_ENABLE_IPV6 = 'true';
  await lab.up();
  await lab.apply([
    ns('l34'),
    pod('server', { app: 'server' }),
    pod('client', { app: 'client' }),
    pod('intruder', { app: 'intruder' }),
  ]);
  for (const f of [4, 6] as const) {
    const all = await lab.podIPs(f);
    // filled in place: each family's tests hold this object from load time
    Object.assign(ips[f], { server: all['l34/server']!, client: all['l34/client']!, intruder: all['l34/intruder']! });
    for (const [k, v] of Object.entries(ips[f])) assert.ok(v, `${k} has an IPv${f} address`);
  }
});
after(async () => { await lab.down(); });

async function reach(from: string, targets: string[]): Promise<Record<string, boolean>> {
  return lab.probe('l34', from, targets);
}

async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

/**
 * The drop of a denied connection: a DROPPED flow from `from` to `dst` since `since`, with the
 * exact reason and direction (the denial came from policy, not from a dead server).
 */
async function expectDrop(from: string, since: Date, dst: string, reason: string, direction: 'INGRESS' | 'EGRESS'): Promise<void> {
  const hit = (f: Flow) => f.verdict === 'DROPPED' && f.IP?.destination === dst;
  const fs = await flowsFrom(from, since, (x) => x.some(hit));
  const d = fs.find(hit);
  assert.ok(d, `a DROPPED flow ${from} -> ${dst}: ${JSON.stringify(fs.slice(-5).map((f) => [f.verdict, f.IP?.destination, f.drop_reason_desc]))}`);
  assert.equal(d.drop_reason_desc, reason);
  assert.equal(d.traffic_direction, direction);
}

/** Flows from one pod since a moment, polled until `pred` holds (the ring is read asynchronously). */
function flowsFrom(podName: string, since: Date, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--from-pod', `l34/${podName}`, '--since', since.toISOString(), '--last', '1000'], pred);
}

for (const fam of [4, 6] as const) {
  const ip = ips[fam];
  const { worldA: WORLD_A, worldB: WORLD_B, node: NODE_IP, all: ALL, exceptB: EXCEPT_B, hostPrefix: HOST_PREFIX } = NET[fam];
  test(`IPv${fam}: fromEndpoints: only the selected peer reaches the server; the other is dropped with POLICY_DENIED`, async () => {
    await withPolicies([cnp('server-from-client', {
      endpointSelector: { matchLabels: { app: 'server' } },
      ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
    })], async () => {
      const since = new Date();
      assert.deepEqual(await reach('client', [`${ip.server}:8080/tcp`, `${ip.server}:8080/udp`]), { [`${ip.server}:8080/tcp`]: true, [`${ip.server}:8080/udp`]: false });
      assert.deepEqual(await reach('intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false });
      const drops = await flowsFrom('intruder', since, (fs) => fs.some((f) => f.verdict === 'DROPPED'));
      const d = drops.find((f) => f.verdict === 'DROPPED' && f.IP?.destination === ip.server);
      assert.ok(d, `a DROPPED flow intruder -> server: ${JSON.stringify(drops.slice(-5))}`);
      assert.equal(d.drop_reason_desc, 'POLICY_DENIED');
      assert.equal(d.traffic_direction, 'INGRESS');
      assert.equal(d.destination?.pod_name, 'server');
      const ok = await flowsFrom('client', since, (fs) => fs.some((f) => f.verdict === 'FORWARDED' && f.IP?.destination === ip.server));
      assert.ok(ok.some((f) => f.verdict === 'FORWARDED' && f.l4?.TCP?.destination_port === 8080));
    });
  });

  test(`IPv${fam}: toEntities world / cluster / host, and CIDR with except`, async () => {
    // Positive control: without policy the client reaches both worlds and the server.
    assert.deepEqual(await reach('client', [`${WORLD_A}:80/tcp`, `${WORLD_B}:80/tcp`, `${ip.server}:8080/tcp`]),
      { [`${WORLD_A}:80/tcp`]: true, [`${WORLD_B}:80/tcp`]: true, [`${ip.server}:8080/tcp`]: true });
    await withPolicies([cnp('client-world', { endpointSelector: { matchLabels: { app: 'client' } }, egress: [{ toEntities: ['world'] }] })], async () => {
      const since = new Date();
      const r = await reach('client', [`${WORLD_A}:80/tcp`, `${ip.server}:8080/tcp`]);
      assert.deepEqual(r, { [`${WORLD_A}:80/tcp`]: true, [`${ip.server}:8080/tcp`]: false });
      await expectDrop('client', since, ip.server!, 'POLICY_DENIED', 'EGRESS');
    });
    await withPolicies([cnp('client-cluster', { endpointSelector: { matchLabels: { app: 'client' } }, egress: [{ toEntities: ['cluster'] }] })], async () => {
      const since = new Date();
      const r = await reach('client', [`${WORLD_A}:80/tcp`, `${ip.server}:8080/tcp`]);
      assert.deepEqual(r, { [`${WORLD_A}:80/tcp`]: false, [`${ip.server}:8080/tcp`]: true });
      await expectDrop('client', since, WORLD_A, 'POLICY_DENIED', 'EGRESS');
    });
    await withPolicies([cnp('client-host', { endpointSelector: { matchLabels: { app: 'client' } }, egress: [{ toEntities: ['host'] }] })], async () => {
      const since = new Date();
      const toHost = await lab.exec('l34', 'client', ['ping', '-c', '1', '-W', '1', NODE_IP]);
      assert.equal(toHost.code, 0, `ping host: ${toHost.stdout}${toHost.stderr}`);
      const toWorld = await lab.exec('l34', 'client', ['ping', '-c', '1', '-W', '1', WORLD_A]);
      assert.notEqual(toWorld.code, 0, 'ping world must be dropped');
      await expectDrop('client', since, WORLD_A, 'POLICY_DENIED', 'EGRESS');
    });
    await withPolicies([cnp('client-cidr', {
      endpointSelector: { matchLabels: { app: 'client' } },
      egress: [{ toCIDRSet: [{ cidr: ALL, except: [EXCEPT_B] }] }],
    })], async () => {
      const since = new Date();
      const r = await reach('client', [`${WORLD_A}:80/tcp`, `${WORLD_B}:80/tcp`, `${ip.server}:8080/tcp`]);
      // CIDR rules never select pods (Cilium): the server stays unreachable.
      assert.deepEqual(r, { [`${WORLD_A}:80/tcp`]: true, [`${WORLD_B}:80/tcp`]: false, [`${ip.server}:8080/tcp`]: false });
      await expectDrop('client', since, WORLD_B, 'POLICY_DENIED', 'EGRESS');
      await expectDrop('client', since, ip.server!, 'POLICY_DENIED', 'EGRESS');
    });
  });

  test(`IPv${fam}: deny beats allow (POLICY_DENY 181); a deny-only policy makes the endpoint default-deny`, async () => {
    await withPolicies([
      cnp('server-allow-all', { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEntities: ['cluster'] }] }),
      cnp('server-deny-intruder', { endpointSelector: { matchLabels: { app: 'server' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'intruder' } }] }] }),
    ], async () => {
      const since = new Date();
      assert.deepEqual(await reach('client', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: true });
      assert.deepEqual(await reach('intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false });
      const fs = await flowsFrom('intruder', since, (x) => x.some((f) => f.verdict === 'DROPPED'));
      assert.equal(fs.find((f) => f.verdict === 'DROPPED')?.drop_reason_desc, 'POLICY_DENY');
    });
    await withPolicies([
      cnp('server-deny-only', { endpointSelector: { matchLabels: { app: 'server' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'intruder' } }] }] }),
    ], async () => {
      const since = new Date();
      assert.deepEqual(await reach('client', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: false });
      const fs = await flowsFrom('client', since, (x) => x.some((f) => f.verdict === 'DROPPED'));
      assert.equal(fs.find((f) => f.verdict === 'DROPPED')?.drop_reason_desc, 'POLICY_DENIED');
    });
  });

  test(`IPv${fam}: replies pass through an ingress deny-all; new connections in do not`, async () => {
    await withPolicies([cnp('client-no-ingress', { endpointSelector: { matchLabels: { app: 'client' } }, ingress: [{}] })], async () => {
      const since = new Date();
      assert.deepEqual(await reach('client', [`${ip.server}:8080/tcp`, `${ip.server}:8080/udp`]), { [`${ip.server}:8080/tcp`]: true, [`${ip.server}:8080/udp`]: true });
      assert.deepEqual(await reach('server', [`${ip.client}:8080/tcp`]), { [`${ip.client}:8080/tcp`]: false });
      const fs = await flowsFrom('server', new Date(Date.now() - 5000), (x) => x.length > 0);
      assert.ok(fs.length > 0, 'server has flows (its replies to the client)');
      await expectDrop('server', since, ip.client!, 'POLICY_DENIED', 'INGRESS');
    });
  });

  test(`IPv${fam}: a pod cannot send with another pod's address`, async () => {
    // ping -I with a foreign source address needs the address on an interface: the kernel refuses,
    // so spoof with a raw UDP datagram through `nc -s` after adding the address inside the pod.
    // Positive control: with its own address the intruder reaches the server (no policy applies).
    assert.deepEqual(await reach('intruder', [`${ip.server}:8080/tcp`]), { [`${ip.server}:8080/tcp`]: true });
    const add = await lab.exec('l34', 'intruder', ['ip', 'addr', 'add', `${ip.client}/${HOST_PREFIX}`, 'dev', 'eth0']);
    assert.equal(add.code, 0, add.stderr);
    try {
      const r = await lab.exec('l34', 'intruder', ['bash', '-c', `timeout 2 nc -s ${ip.client} -w 1 ${ip.server} 8080 </dev/null; echo rc=$?`]);
      assert.doesNotMatch(r.stdout, /rc=0/, 'spoofed connection must not be established');
    } finally {
      await lab.exec('l34', 'intruder', ['ip', 'addr', 'del', `${ip.client}/${HOST_PREFIX}`, 'dev', 'eth0']);
    }
    const spoofed = (f: Flow) => f.drop_reason_desc === 'INVALID_SOURCE_IP' && f.IP?.source === ip.client && f.IP?.destination === ip.server;
    const fs = await lab.waitFlows(['--verdict', 'DROPPED', '--last', '200'], (x) => x.some(spoofed));
    assert.ok(fs.some(spoofed), `a drop with INVALID_SOURCE_IP from the spoofed ${ip.client}`);
  });
}

test('bad input is rejected with coded errors and changes nothing; the same file twice is a no-op', async () => {
  const good = [
    cnp('keep-me', { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEntities: ['cluster'] }] }),
    // A Service gets a clusterIP allocated: re-applying the manifest without it changes nothing.
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'server', namespace: 'l34' }, spec: { selector: { app: 'server' }, ports: [{ port: 80, targetPort: 8080 }] } },
  ];
  const first = await lab.apply(good);
  assert.match(first, /created/);
  const again = await lab.apply(good);
  assert.match(again, /unchanged/);
  assert.doesNotMatch(again, /created|configured/);
  const before = await lab.ok(['get', 'policies', '-n', 'l34', '-o', 'json']);
  const dir = await lab.dir;
  const { writeFile } = await import('node:fs/promises');
  await writeFile(`${dir}/bad.yaml`, [
    'apiVersion: cilium.io/v2', 'kind: CiliumNetworkPolicy', 'metadata: {name: keep-me, namespace: l34}', 'spec:',
    '  endpointSelector: {}', '  ingress:', '  - toPorts:', '    - ports: [{port: "99999"}]', '---',
    'apiVersion: v1', 'kind: Pod', 'metadata: {name: newpod, namespace: l34}', 'spec: {containers: []}', '',
  ].join('\n'));
  const r = await lab.run(['apply', '-f', `${dir}/bad.yaml`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /bad\.yaml:8:\d+: POLICY_PORT_INVALID/);
  assert.match(r.stderr, /API_FIELD_VALUE/);
  assert.equal(await lab.ok(['get', 'policies', '-n', 'l34', '-o', 'json']), before);
  const pods = await lab.podIPs();
  assert.equal(pods['l34/newpod'], undefined);
  assert.deepEqual(await reach('client', [`${ips[4].server}:8080/tcp`]), { [`${ips[4].server}:8080/tcp`]: true });
  await lab.delete(good);
});
