/**
 * Dual stack in the lab (issue 14, enable-ipv6): with MEMBRANE_ENABLE_IPV6=true every pod gets an
 * IPv6 address from its node's ULA pod CIDR (fd00:10:244:1::/64 on node1) beside IPv4, the agent
 * puts it in the endpoint and the ipcache with the pod's identity, and one policy enforces both
 * families: the labelled client reaches TCP 8080 and may ping over IPv6 (neighbour discovery
 * working under default deny), another client is dropped (POLICY_DENIED) with a flow that names
 * the IPv6 addresses and the pods. A dual-stack ClusterIP Service (PreferDualStack) gets an IPv4 and
 * an IPv6 cluster IP; curl reaches it over IPv6 by address and by its AAAA record, the datapath's
 * lb6 translates to the backend before policy, so the denied client is dropped at the backend.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type Flow } from '../support/lab.ts';
import { cnp, ns, pod } from '../support/attack.ts';
import { worldIp6 } from '../../../src/lab/names.ts';

const lab = new TestLab(`v6l${process.pid % 10000}`);
const svc = (name: string, spec: object) => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'dual' },
  spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...spec },
});
type SvcJson = { metadata: { name: string }; spec: { clusterIP?: string; clusterIPs?: string[]; ipFamilies?: string[]; ipFamilyPolicy?: string } };
const NS = 'dual';
let v6: Record<string, string> = {};
let v4: Record<string, string> = {};

before(async () => {
  lab.env.MEMBRANE_ENABLE_IPV6 = 'true';
  await lab.up();
  await lab.apply([
    ns(NS),
    pod(NS, 'client', { app: 'client' }), pod(NS, 'friend', { app: 'friend' }), pod(NS, 'web', { app: 'web' }, { ports: [8080] }),
    pod(NS, 'fqdn', { app: 'fqdn' }),
    cnp(NS, 'web-ingress', {
      endpointSelector: { matchLabels: { app: 'web' } },
      ingress: [
        { fromEndpoints: [{ matchLabels: { app: 'friend' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] },
        { fromEndpoints: [{ matchLabels: { app: 'friend' } }], icmps: [{ fields: [{ type: 'EchoRequest', family: 'IPv6' }] }] },
      ],
    }),
    // dual stack (Kubernetes' fields): PreferDualStack gets both families, ipFamilies [IPv6] one
    svc('web', { ipFamilyPolicy: 'PreferDualStack' }), svc('web6', { ipFamilies: ['IPv6'] }),
  ]);
  const eps = (JSON.parse(await lab.ok(['get', 'endpoints', '-n', NS, '-o', 'json'])) as { items: { pod: string; ipv4: string; ipv6?: string }[] }).items;
  v6 = Object.fromEntries(eps.map((e) => [e.pod, e.ipv6 ?? '']));
  v4 = Object.fromEntries(eps.map((e) => [e.pod, e.ipv4]));
});
after(async () => { await lab.down(); });

const curl = async (from: string, host: string, port = 8080): Promise<string> =>
  (await lab.exec(NS, from, ['curl', '-s', '-g', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', `http://${host}:${port}/`])).stdout.trim();
const ping6 = async (from: string, ip: string): Promise<boolean> => (await lab.exec(NS, from, ['ping', '-6', '-c', '1', '-W', '2', ip])).code === 0;

test('every pod has an IPv6 address in node1\'s ULA pod CIDR, derived from its IPv4 one', () => {
  for (const p of ['client', 'friend', 'web']) {
    assert.match(v6[p] ?? '', /^fd00:10:244:1::[0-9a-f]+$/, `${p}: ${v6[p]}`);
    assert.equal(v6[p], `fd00:10:244:1::${Number(v4[p]!.split('.')[3]).toString(16)}`);
  }
});

test('one policy, both families: the friend reaches [web]:8080, the client is dropped (POLICY_DENIED) with a flow naming the pods', async () => {
  const since = new Date();
  assert.equal(await curl('friend', `[${v6.web}]`), '200', 'positive control: friend -> [web]:8080 over IPv6');
  assert.equal(await curl('friend', v4.web!), '200', 'and over IPv4');
  assert.equal(await curl('client', `[${v6.web}]`), '000', 'client -> [web]:8080 denied over IPv6');
  assert.equal(await curl('client', v4.web!), '000', 'and over IPv4');
  const match = (f: Flow) => f.IP?.source === v6.client && f.IP?.destination === v6.web && f.l4?.TCP?.destination_port === 8080;
  const fs = (await lab.waitFlows(['--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '2000'], (xs) => xs.some(match))).filter(match);
  assert.ok(fs.length > 0, 'a DROPPED flow client -> [web]:8080');
  assert.equal(fs[0]!.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(fs[0]!.source?.pod_name, 'client');
  assert.equal(fs[0]!.destination?.pod_name, 'web');
  assert.equal(fs[0]!.traffic_direction, 'INGRESS');
});

test('ICMPv6 echo is policy (friend yes, client no); neighbour discovery works under default deny', async () => {
  assert.equal(await ping6('friend', v6.web!), true, 'friend may ping web over IPv6');
  assert.equal(await ping6('client', v6.web!), false, 'client may not');
  assert.equal(await ping6('web', v6.client!), true, 'web -> client: the client has no ingress policy');
});

test('a dual-stack Service: clusterIPs of both families (ipFamilies, ipFamilyPolicy as Kubernetes has them), an IPv6-only one, both in get services', async () => {
  const items = (JSON.parse(await lab.ok(['get', 'services', '-n', NS, '-o', 'json'])) as { items: SvcJson[] }).items;
  const web = items.find((i) => i.metadata.name === 'web')!.spec, web6 = items.find((i) => i.metadata.name === 'web6')!.spec;
  assert.equal(web.ipFamilyPolicy, 'PreferDualStack');
  assert.deepEqual(web.ipFamilies, ['IPv4', 'IPv6']);
  assert.match(web.clusterIPs?.[0] ?? '', /^10\.96\./);
  assert.match(web.clusterIPs?.[1] ?? '', /^fd00:10:96::[0-9a-f]+$/);
  assert.equal(web.clusterIP, web.clusterIPs![0], 'clusterIP is the primary (first) of clusterIPs');
  assert.deepEqual([web6.ipFamilyPolicy, web6.ipFamilies, web6.clusterIPs?.length], ['SingleStack', ['IPv6'], 1]);
  assert.match(web6.clusterIP ?? '', /^fd00:10:96::[0-9a-f]+$/);
  const table = await lab.ok(['get', 'services', '-n', NS]);
  assert.match(table, new RegExp(`web\\s+ClusterIP\\s+${web.clusterIPs![0]!.replace(/\./g, '\\.')},${web.clusterIPs![1]}\\s`), table);
});

test('ClusterIP over IPv6 with a real client: by address and by AAAA, translated to the backend before policy (the client is dropped at web with POLICY_DENIED)', async () => {
  const items = (JSON.parse(await lab.ok(['get', 'services', '-n', NS, '-o', 'json'])) as { items: SvcJson[] }).items;
  const [vip4, vip6] = items.find((i) => i.metadata.name === 'web')!.spec.clusterIPs!;
  const only6 = items.find((i) => i.metadata.name === 'web6')!.spec.clusterIP!;
  assert.equal(await curl('friend', `[${vip6}]`, 80), '200', 'friend -> [VIP]:80 over IPv6');
  assert.equal(await curl('friend', vip4!, 80), '200', 'and the same Service over IPv4');
  assert.equal(await curl('friend', `[${only6}]`, 80), '200', 'the IPv6-only Service');
  assert.equal((await lab.exec(NS, 'friend', ['curl', '-6', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', `http://web.${NS}.svc.cluster.local/`])).stdout.trim(), '200',
    'by name over IPv6 (the lab DNS answers AAAA with the IPv6 cluster IP)');
  const since = new Date();
  assert.equal(await curl('client', `[${vip6}]`, 80), '000', 'client -> [VIP]:80 denied at the backend');
  const match = (f: Flow) => f.IP?.source === v6.client && f.IP?.destination === v6.web && f.l4?.TCP?.destination_port === 8080;
  const fs = (await lab.waitFlows(['--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '2000'], (xs) => xs.some(match))).filter(match);
  assert.ok(fs.length > 0, 'a DROPPED flow client -> [web]:8080 (the backend, not the VIP)');
  assert.equal(fs[0]!.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(fs[0]!.destination?.pod_name, 'web');
});

test('toFQDNs over IPv6: the DNS proxy learns the AAAA answer (a /128 FQDN identity), the pod reaches that address and no other; a AAAA query for a denied name is REFUSED', async () => {
  const echoA6 = worldIp6('198.51.100.10'), echoB6 = worldIp6('203.0.113.10');
  const pol = [cnp(NS, 'fqdn-egress', {
    endpointSelector: { matchLabels: { app: 'fqdn' } },
    egress: [
      { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchName: 'echo-a.world.lab' }] } }] },
      { toFQDNs: [{ matchName: 'echo-a.world.lab' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
    ],
  })];
  await lab.apply(pol);
  try {
    const dig = async (type: string, name: string) => (await lab.exec(NS, 'fqdn', ['dig', '+time=3', '+tries=2', type, name])).stdout;
    assert.equal(await curl('fqdn', `[${echoA6}]`, 80), '000', 'before any lookup the IPv6 address is just world: denied');
    assert.match(await dig('AAAA', 'echo-a.world.lab'), new RegExp(`IN\\s+AAAA\\s+${echoA6}`), 'the allowed name\'s AAAA answer passes the DNS proxy');
    const ids = await lab.ok(['get', 'identities', '-o', 'json']);
    // Cilium's cidr label spells an IPv6 prefix with '-' for ':'
    assert.ok(ids.includes(`cidr:${echoA6.replace(/:/g, '-')}/128`), `an FQDN identity with ${echoA6}/128`);
    assert.equal((await lab.exec(NS, 'fqdn', ['curl', '-6', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', 'http://echo-a.world.lab/'])).stdout.trim(), '200', 'curl -6 by name reaches the learned IPv6 address');
    // the attacker's side: another IPv6 address, and the AAAA of a name outside the DNS rules
    const since = new Date();
    // not 200 (a loaded machine may kill the exec before curl prints 000); the flow below proves the drop
    assert.notEqual(await curl('fqdn', `[${echoB6}]`, 80), '200', 'another world IPv6 address stays denied');
    assert.match(await dig('AAAA', 'echo-b.world.lab'), /status: REFUSED/, 'a AAAA query for a denied name is refused');
    assert.notEqual(await curl('fqdn', `[${echoB6}]`, 80), '200', 'and its address is still not reachable');
    const match = (f: Flow) => f.IP?.destination === echoB6 && f.l4?.TCP?.destination_port === 80;
    const fs = (await lab.waitFlows(['--from-pod', `${NS}/fqdn`, '--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '2000'], (xs) => xs.some(match))).filter(match);
    assert.equal(fs[0]?.drop_reason_desc, 'POLICY_DENIED', 'a DROPPED flow to the other IPv6 address');
  } finally {
    await lab.delete(pol);
  }
});
