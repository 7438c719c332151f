/**
 * Dual stack in the lab (issue 14, enable-ipv6): with MEMBRANE_ENABLE_IPV6=true every pod gets an
 * IPv6 address from its node's ULA pod CIDR (fd00:10:244:1::/64 on node1) beside IPv4, the agent
 * puts it in the endpoint and the ipcache with the pod's identity, and one policy enforces both
 * families: the labelled client reaches TCP 8080 and may ping over IPv6 (neighbour discovery
 * working under default deny), another client is dropped (POLICY_DENIED) with a flow that names
 * the IPv6 addresses and the pods. A dual-stack ClusterIP Service (PreferDualStack) gets an IPv4 and
 * an IPv6 cluster IP; curl reaches it over IPv6 by address and by its AAAA record, the datapath's
 * lb6 translates to the backend before policy, so the denied client is dropped at the backend.
 * L7 over IPv6: HTTP rules at egress and ingress (200 / 403 with a DROPPED L7 flow naming the
 * IPv6 ends) and TLS serverNames, through the proxies' IPv6 listeners; the attacker's side: an
 * IPv4-mapped destination is judged as IPv4, the proxy ports are not reachable from a pod.
 * DNS to an IPv6 server address: the query (UDP and TCP) is steered to the DNS proxy's IPv6
 * listeners, judged against the server's identity, answered from the server's IPv6 address; the
 * answer's A and AAAA IPs become reachable through toFQDNs; a denied name gets REFUSED and a
 * DROPPED DNS flow naming the IPv6 ends. The attacker's side: a query to a pod that is no DNS
 * server, a spoofed source (an unrestricted pod's address) and an IPv4-mapped server address
 * never get past the proxy.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { cnp, ns, pod } from '../support/attack.ts';
import { nodeIp6, podNetnsName, worldIp6 } from '../../../src/lab/names.ts';
import { execFileSync } from 'node:child_process';
import { caCertPath } from '../../../src/lab/ca.ts';
import { DEFAULT_PROXY_PORTS } from '../../../src/common/proxy-ports.ts';

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

// L7 over IPv6: the datapath steers an IPv6 connection to the proxies' IPv6 listeners (::1, their
// own sockmap slots), the proxy reads the original destination from the accepted socket and
// connects upstream from the client's own IPv6 address (transparent), flows name both IPv6 ends.
type L7 = { type?: string; http?: { method?: string; url?: string; code?: number } };
const l7Of = (f: Flow) => f.l7 as L7 | undefined;
async function http(from: string, url: string): Promise<{ status: number; body: string }> {
  const r = await lab.exec(NS, from, ['curl', '-s', '-g', '-i', '-m', '5', url], 30_000);
  const m = /^HTTP\/1\.1 (\d{3})/.exec(r.stdout);
  const split = r.stdout.indexOf('\r\n\r\n');
  return { status: m ? Number(m[1]) : 0, body: split > 0 ? r.stdout.slice(split + 4) : '' };
}
async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

test('HTTP rules over IPv6 (egress): GET /public reaches web from the client\'s own IPv6 address, /private gets 403 and a DROPPED L7 flow naming the IPv6 ends; an IPv4-mapped destination is proxied as IPv4', async () => {
  const pol = cnp(NS, 'friend-egress-l7', {
    endpointSelector: { matchLabels: { app: 'friend' } },
    egress: [{ toEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
  });
  await withPolicies([pol], async () => {
    const since = new Date().toISOString();
    const ok = await http('friend', `http://[${v6.web}]:8080/public`);
    assert.equal(ok.status, 200, 'GET /public over IPv6 through the egress proxy');
    const echoed = JSON.parse(ok.body) as { path: string; client: { address: string } };
    assert.equal(echoed.path, '/public');
    assert.equal(echoed.client.address, v6.friend, 'the server sees the client pod\'s IPv6 address (transparent upstream), not the node');
    const denied = await http('friend', `http://[${v6.web}]:8080/private`);
    assert.equal(denied.status, 403, 'a denied path over IPv6: 403 from the proxy');
    assert.equal(denied.body, 'Access denied\r\n');
    const fs = await lab.waitFlows(['--type', 'l7', '--pod', `${NS}/friend`, '--since', since], (x) => x.some((f) => f.verdict === 'DROPPED' && l7Of(f)?.type === 'REQUEST'));
    const drop = fs.find((f) => f.verdict === 'DROPPED' && l7Of(f)?.type === 'REQUEST')!;
    assert.deepEqual([drop.IP?.source, drop.IP?.destination], [v6.friend, v6.web]);
    assert.deepEqual([drop.source?.pod_name, drop.destination?.pod_name, drop.traffic_direction], ['friend', 'web', 'EGRESS']);
    assert.equal(l7Of(drop)!.http!.url, `http://[${v6.web}]:8080/private`);
    const fwd = fs.find((f) => f.verdict === 'FORWARDED' && l7Of(f)?.type === 'REQUEST');
    assert.ok(fwd && fwd.IP?.source === v6.friend && fwd.destination?.pod_name === 'web', 'a FORWARDED L7 flow for /public');
    // the attacker: the IPv4-mapped form of web's address is IPv4 on the wire, and the proxy judges it as such
    assert.equal((await http('friend', `http://[::ffff:${v4.web}]:8080/private`)).status, 403, '[::ffff:web]:8080/private: the IPv4 proxy, 403');
    assert.equal((await http('friend', `http://${v4.web}:8080/private`)).status, 403, 'and over IPv4');
  });
  assert.equal((await http('friend', `http://[${v6.web}]:8080/private`)).status, 200, 'policy deleted: no proxy');
});

test('HTTP rules over IPv6 (ingress, decided at the source): the ingress proxy answers 403 for a denied path, lets /public through; the proxy\'s listeners are not reachable from a pod', async () => {
  const pol = cnp(NS, 'web-ingress-l7', {
    endpointSelector: { matchLabels: { app: 'web' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
  });
  await withPolicies([pol], async () => {
    const since = new Date().toISOString();
    const ok = await http('client', `http://[${v6.web}]:8080/public`);
    assert.equal(ok.status, 200, 'client -> [web]:8080/public through the ingress proxy');
    assert.equal((JSON.parse(ok.body) as { client: { address: string } }).client.address, v6.client);
    assert.equal((await http('client', `http://[${v6.web}]:8080/private`)).status, 403);
    const fs = await lab.waitFlows(['--type', 'l7', '--pod', `${NS}/web`, '--since', since], (x) => x.some((f) => f.verdict === 'DROPPED' && l7Of(f)?.type === 'REQUEST'));
    const drop = fs.find((f) => f.verdict === 'DROPPED' && l7Of(f)?.type === 'REQUEST')!;
    assert.deepEqual([drop.IP?.source, drop.IP?.destination, drop.traffic_direction, drop.source?.pod_name], [v6.client, v6.web, 'INGRESS', 'client']);
    // a pod connecting to the proxy ports at the node's IPv6 address: the listeners are on ::1 only
    for (const port of [DEFAULT_PROXY_PORTS.http, DEFAULT_PROXY_PORTS.http + 1, DEFAULT_PROXY_PORTS.tls]) {
      const r = await http('client', `http://[${nodeIp6(1)}]:${port}/public`);
      assert.equal(r.status, 0, `[node]:${port} from a pod: no proxy answers`);
    }
  });
});

test('TLS SNI over IPv6: serverNames api.openai.com passes to its IPv6 address (verified by the pod), another name on the same address is reset', async () => {
  const ai6 = worldIp6('198.51.100.20');
  const pol = cnp(NS, 'client-sni', {
    endpointSelector: { matchLabels: { app: 'client' } },
    egress: [{ toCIDR: [`${ai6}/128`], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: ['api.openai.com'] }] }],
  });
  const CA = caCertPath(lab.paths.stateDir);
  const curlTls = async (name: string) => {
    const r = await lab.exec(NS, 'client', ['curl', '-sS', '-m', '8', '--cacert', CA, '--resolve', `${name}:443:[${ai6}]`, `https://${name}/v1/models`], 30_000);
    return { code: r.code, body: r.stdout, err: r.stderr };
  };
  await withPolicies([pol], async () => {
    const since = new Date().toISOString();
    const ok = await curlTls('api.openai.com');
    assert.equal(ok.code, 0, ok.err);
    const echoed = JSON.parse(ok.body) as { sni: string; client: { address: string } };
    assert.deepEqual([echoed.sni, echoed.client.address], ['api.openai.com', v6.client], 'passed end to end from the pod\'s IPv6 address');
    const evil = await curlTls('evil.example');
    assert.notEqual(evil.code, 0, 'another name on the allowed IPv6 address');
    assert.match(evil.err, /reset|SSL/i);
    const hellos = (fs: Flow[]) => fs.filter((f) => String(f.Summary ?? '').startsWith('TLS ClientHello') && f.IP?.destination === ai6);
    const fs = hellos(await lab.waitFlows(['--type', 'l7', '--since', since], (x) => hellos(x).some((f) => f.verdict === 'DROPPED')));
    assert.ok(fs.some((f) => f.verdict === 'FORWARDED' && f.IP?.source === v6.client), 'a FORWARDED ClientHello flow over IPv6');
    assert.ok(fs.some((f) => f.verdict === 'DROPPED' && f.source?.pod_name === 'client'), 'a DROPPED ClientHello flow over IPv6');
  });
});

// DNS to the DNS server's IPv6 address (the coredns pod's): the same DNS proxy, its IPv6 listeners.
const dnsRule = (names: string[]) => ({
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: names.map((matchName) => ({ matchName })) } }],
});
type DnsL7 = { dns?: { query?: string; rcode?: number; ips?: string[] } };
const dnsOf = (f: Flow) => (f.l7 as DnsL7 | undefined)?.dns;
async function coredns(): Promise<{ v4: string; v6: string }> {
  const eps = (JSON.parse(await lab.ok(['get', 'endpoints', '-n', 'kube-system', '-o', 'json'])) as { items: { pod: string; ipv4: string; ipv6?: string }[] }).items;
  const c = eps.find((e) => e.pod === 'coredns')!;
  assert.match(c.ipv6 ?? '', /^fd00:10:244:1::/, 'the lab DNS pod has an IPv6 address');
  return { v4: c.ipv4, v6: c.ipv6! };
}
const digAt = async (server: string, type: string, name: string, extra: string[] = []) =>
  (await lab.exec(NS, 'fqdn', ['dig', '+time=2', '+tries=1', ...extra, `@${server}`, type, name], 30_000)).stdout;

test('DNS to an IPv6 server address: UDP and TCP through the DNS proxy, AAAA and A answers allowed through toFQDNs, a denied name REFUSED with a DROPPED DNS flow naming the IPv6 ends', async () => {
  const dns = await coredns();
  const echoB6 = worldIp6('203.0.113.10');
  const pol = [cnp(NS, 'fqdn-egress6', {
    endpointSelector: { matchLabels: { app: 'fqdn' } },
    egress: [dnsRule(['echo-b.world.lab']), { toFQDNs: [{ matchName: 'echo-b.world.lab' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }],
  })];
  await lab.apply(pol);
  try {
    const since = new Date().toISOString();
    assert.notEqual(await curl('fqdn', `[${echoB6}]`, 80), '200', 'before any lookup the IPv6 address is world: denied');
    assert.match(await digAt(dns.v6, 'AAAA', 'echo-b.world.lab'), new RegExp(`IN\\s+AAAA\\s+${echoB6}`), 'AAAA over IPv6 UDP: answered through the proxy');
    assert.match(await digAt(dns.v6, 'A', 'echo-b.world.lab', ['+tcp']), /IN\s+A\s+203\.0\.113\.10/, 'A over IPv6 TCP: answered through the proxy');
    assert.equal(await curl('fqdn', `[${echoB6}]`, 80), '200', 'the AAAA answer\'s address is reachable');
    assert.equal(await curl('fqdn', '203.0.113.10', 80), '200', 'and the A answer\'s (learned over an IPv6 transport)');
    assert.match(await digAt(dns.v6, 'AAAA', 'api.openai.com'), /status: REFUSED/, 'a denied name over IPv6 UDP: REFUSED by the proxy');
    assert.match(await digAt(dns.v6, 'A', 'api.openai.com', ['+tcp']), /status: REFUSED/, 'and over IPv6 TCP');
    const want = (fs: Flow[]) => fs.some((f) => f.verdict === 'DROPPED' && dnsOf(f)?.query === 'api.openai.com.') && fs.some((f) => f.verdict === 'FORWARDED' && dnsOf(f)?.query === 'echo-b.world.lab.' && f.is_reply === true);
    const fs = await lab.waitFlows(['--pod', `${NS}/fqdn`, '--protocol', 'dns', '--since', since, '--last', '2000'], want);
    const drop = fs.find((f) => f.verdict === 'DROPPED' && dnsOf(f)?.query === 'api.openai.com.');
    assert.ok(drop, 'a DROPPED DNS flow for the refused name');
    assert.deepEqual([drop.IP?.source, drop.IP?.destination, drop.source?.pod_name, drop.destination?.pod_name, drop.traffic_direction],
      [v6.fqdn, dns.v6, 'fqdn', 'coredns', 'EGRESS'], 'the IPv6 ends, the pods and their identities');
    const answer = fs.find((f) => f.verdict === 'FORWARDED' && dnsOf(f)?.query === 'echo-b.world.lab.' && f.is_reply === true && (dnsOf(f)?.ips ?? []).includes(echoB6));
    assert.ok(answer, 'a FORWARDED DNS response flow with the AAAA IP');
    assert.deepEqual([answer.IP?.source, answer.IP?.destination], [dns.v6, v6.fqdn], 'the response goes from the IPv6 server to the pod');
    assert.ok(fs.some((f) => dnsOf(f)?.query === 'echo-b.world.lab.' && f.l4?.TCP), 'the TCP query has its flow too');
  } finally {
    await lab.delete(pol);
  }
});

test('attacker (DNS over IPv6): a query to a pod that is no DNS server, a spoofed source (an unrestricted pod\'s IPv6 address) and an IPv4-mapped server address never get past the DNS proxy', async () => {
  const dns = await coredns();
  const pol = [cnp(NS, 'fqdn-dns-only', { endpointSelector: { matchLabels: { app: 'fqdn' } }, egress: [dnsRule(['echo-b.world.lab'])] })];
  await lab.apply(pol);
  const podNs = podNetnsName('node1', NS, 'fqdn', lab.name);
  try {
    const since = new Date().toISOString();
    assert.match(await digAt(dns.v6, 'A', 'api.openai.com'), /status: REFUSED/, 'positive control: the denied name is refused at the IPv6 server address');
    // 1. a DNS query to web's IPv6 address (no DNS server, no rule): dropped by policy, never proxied or forwarded
    assert.doesNotMatch(await digAt(v6.web!, 'A', 'api.openai.com'), /status:/, 'no answer from [web]:53');
    // 2. the friend's IPv6 address as the source (the friend has no egress policy): dropped as a spoofed source
    execFileSync('ip', ['-n', podNs, 'addr', 'add', `${v6.friend}/128`, 'dev', 'eth0', 'nodad']);
    try {
      assert.doesNotMatch(await digAt(dns.v6, 'A', 'api.openai.com', ['-b', v6.friend!]), /status:/, 'a spoofed source gets no answer (neither REFUSED on its own account nor the real one)');
    } finally {
      execFileSync('ip', ['-n', podNs, 'addr', 'del', `${v6.friend}/128`, 'dev', 'eth0']);
    }
    // 3. the server's IPv4 address as an IPv4-mapped IPv6 address: IPv4 on the wire, judged by the same proxy as IPv4
    // (dig skips mapped addresses: the probe sends from an IPv6 socket to ::ffff:<server>:53)
    const mappedAsk = JSON.parse((await lab.ok(['exec', '-n', NS, 'fqdn', '--', 'env', `DNS_PROBE_SERVER=::ffff:${dns.v4}`, join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/dns-probe.ts'),
      JSON.stringify([{ op: 'query', name: 'api.openai.com' }, { op: 'query', name: 'echo-b.world.lab' }])])).trim().split('\n').pop()!) as { rcode: string; ips: string[] }[];
    assert.equal(mappedAsk[0]?.rcode, 'REFUSED', 'an IPv4-mapped server address: still REFUSED');
    assert.deepEqual([mappedAsk[1]?.rcode, mappedAsk[1]?.ips], ['NOERROR', ['203.0.113.10']], 'and the allowed name still answered');
    const toWeb = (f: Flow) => f.IP?.destination === v6.web && f.l4?.UDP?.destination_port === 53;
    const spoofed = (f: Flow) => f.IP?.source === v6.friend && f.IP?.destination === dns.v6;
    const fs = await lab.waitFlows(['--since', since, '--last', '5000'], (x) => x.some((f) => toWeb(f) && f.verdict === 'DROPPED') && x.some((f) => spoofed(f) && f.verdict === 'DROPPED'));
    const webDrop = fs.find((f) => toWeb(f) && f.verdict === 'DROPPED');
    assert.deepEqual([webDrop?.drop_reason_desc, webDrop?.source?.pod_name], ['POLICY_DENIED', 'fqdn'], 'the query to web: a POLICY_DENIED drop at the pod');
    assert.ok(!fs.some((f) => toWeb(f) && (f.verdict === 'FORWARDED' || dnsOf(f))), 'never forwarded, never seen by the DNS proxy');
    assert.equal(fs.find((f) => spoofed(f) && f.verdict === 'DROPPED')?.drop_reason_desc, 'INVALID_SOURCE_IP', 'the spoofed source: dropped by source validation');
    assert.ok(!fs.some((f) => spoofed(f) && (f.verdict === 'FORWARDED' || dnsOf(f))), 'the spoofed query never reached the proxy or the server');
    const mapped = fs.filter((f) => dnsOf(f)?.query === 'api.openai.com.' && f.verdict === 'DROPPED' && f.IP?.destination === dns.v4);
    assert.equal(mapped[0]?.IP?.source, v4.fqdn, 'the IPv4-mapped query is a DROPPED DNS flow between the IPv4 addresses');
  } finally {
    await lab.delete(pol);
  }
});
