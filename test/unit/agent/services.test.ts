import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { assignClusterIPs, diffFrontends, inServiceRange, serviceFamilies, serviceFrontends, KUBE_DNS_IP, KUBE_DNS_IP6 } from '../../../src/agent/controllers/services.ts';
import type { Pod, Service } from '../../../src/api/types.ts';

const SRC = { file: 't', line: 1, col: 1 };
const svc = (name: string, spec: Service['spec'], ns = 'default'): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec, source: SRC });
const pod = (name: string, labels: Record<string, string>, ip: string | undefined, ports: { name?: string; containerPort: number; protocol?: 'TCP' | 'UDP' }[] = [], ns = 'default'): Pod => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels }, spec: { containers: [{ name: 'c', ports }] },
  ...(ip ? { status: { podIP: ip } } : {}), source: SRC,
});

test('clusterIPs: kube-dns gets 10.96.0.10, others distinct addresses in range, user-given kept', () => {
  const list = [svc('kube-dns', { ports: [{ port: 53 }] }, 'kube-system'), svc('a', {}), svc('b', { clusterIP: '10.96.0.50' })];
  assignClusterIPs(list);
  assert.equal(list[0]!.spec.clusterIP, KUBE_DNS_IP);
  assert.equal(list[2]!.spec.clusterIP, '10.96.0.50');
  assert.match(list[1]!.spec.clusterIP!, /^10\.96\./);
  assert.equal(new Set(list.map((s) => s.spec.clusterIP)).size, 3);
});

test('frontends: selector in the service namespace, numeric and named target ports per protocol, pods without IP skipped', () => {
  const s = svc('web', { clusterIP: '10.96.0.20', selector: { app: 'web' }, ports: [
    { name: 'http', port: 80, targetPort: 'http' }, { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }, { name: 'same', port: 9000 },
  ] });
  const pods = [
    pod('w2', { app: 'web' }, '10.244.1.7', [{ name: 'http', containerPort: 8081 }]),
    pod('w1', { app: 'web' }, '10.244.1.3', [{ name: 'http', containerPort: 8080 }]),
    pod('pending', { app: 'web' }, undefined, [{ name: 'http', containerPort: 8080 }]),
    pod('other-ns', { app: 'web' }, '10.244.1.9', [{ name: 'http', containerPort: 8080 }], 'x'),
    pod('nolabel', { app: 'db' }, '10.244.1.10'),
  ];
  const fe = serviceFrontends([s], pods);
  assert.deepEqual(fe.map((f) => [f.port, f.proto, f.backends.map((b) => `${b.ip}:${b.port}`)]), [
    [80, 'TCP', ['10.244.1.3:8080', '10.244.1.7:8081']],
    [53, 'UDP', ['10.244.1.3:5353', '10.244.1.7:5353']],
    [9000, 'TCP', ['10.244.1.3:9000', '10.244.1.7:9000']],
  ]);
  // A named port that exists only for UDP does not match a TCP service port.
  const udpOnly = serviceFrontends([svc('u', { clusterIP: '10.96.0.21', selector: { app: 'u' }, ports: [{ port: 1, targetPort: 'p' }] })],
    [pod('u1', { app: 'u' }, '10.244.1.4', [{ name: 'p', containerPort: 7, protocol: 'UDP' }])]);
  assert.deepEqual(udpOnly[0]!.backends, []);
});

test('property: applying diffs in sequence always ends at the latest frontend set (frontends keyed by IP, port and protocol)', () => {
  const backendSet = fc.uniqueArray(fc.integer({ min: 2, max: 20 }), { maxLength: 4 });
  // Frontends share addresses on purpose: the same ClusterIP on several ports and both protocols
  // must stay distinct frontends (a key of the IP alone, or of IP and port, would merge them).
  const frontend = fc.tuple(fc.constantFrom('a', 'b'), fc.constantFrom(53, 80, 8080), fc.constantFrom('TCP' as const, 'UDP' as const));
  const state = fc.uniqueArray(fc.tuple(frontend, backendSet), { selector: ([[n, port, proto]]) => `${n}/${port}/${proto}`, maxLength: 6 });
  const key = (f: { ip: string; port: number; proto: string }) => `${f.ip}:${f.port}/${f.proto}`;
  fc.assert(fc.property(fc.array(state, { minLength: 1, maxLength: 6 }), (states) => {
    let prev = new Map();
    const mirror = new Map<string, string>();
    for (const st of states) {
      const next = st.map(([[name, port, proto], bs]) => ({
        ip: `10.96.0.${100 + name.charCodeAt(0)}`, port, proto,
        backends: [...bs].sort((x, y) => x - y).map((b) => ({ ip: `10.244.1.${b}`, port: 8080 })), service: { namespace: 'd', name },
      }));
      const d = diffFrontends(prev, next);
      for (const f of d.deletes) mirror.delete(key(f));
      for (const f of d.upserts) mirror.set(key(f), JSON.stringify(f.backends));
      prev = d.next;
      assert.deepEqual(mirror, new Map(next.map((f) => [key(f), JSON.stringify(f.backends)])));
    }
  }), { numRuns: 300 });
});

test('diff: one ClusterIP on TCP and UDP of the same port is two frontends; removing one keeps the other', () => {
  const f = (proto: 'TCP' | 'UDP', b: number) => ({ ip: '10.96.0.10', port: 53, proto, backends: [{ ip: `10.244.1.${b}`, port: 53 }], service: { namespace: 'kube-system', name: 'kube-dns' } });
  const first = diffFrontends(new Map(), [f('TCP', 2), f('UDP', 2)]);
  assert.equal(first.upserts.length, 2);
  const second = diffFrontends(first.next, [f('UDP', 2)]);
  assert.deepEqual(second.deletes.map((x) => x.proto), ['TCP']);
  assert.deepEqual(second.upserts, []);
});

test('dual stack: ipFamilyPolicy / ipFamilies / clusterIPs as Kubernetes fills them in, with enable-ipv6', () => {
  const list = [
    svc('kube-dns', { ipFamilyPolicy: 'PreferDualStack' }, 'kube-system'),
    svc('plain', {}),
    svc('both', { ipFamilyPolicy: 'PreferDualStack' }),
    svc('v6first', { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv6', 'IPv4'] }),
    svc('only6', { ipFamilies: ['IPv6'] }),
    svc('given', { ipFamilyPolicy: 'RequireDualStack', clusterIPs: ['10.96.0.77', 'FD00:10:96::0077'] }),
    svc('headless', { clusterIP: 'None' }),
  ];
  const changed = assignClusterIPs(list, { ipv6: true });
  const by = Object.fromEntries(list.map((s) => [s.metadata.name, s.spec]));
  assert.deepEqual([by['kube-dns']!.clusterIPs, by['kube-dns']!.ipFamilies], [[KUBE_DNS_IP, KUBE_DNS_IP6], ['IPv4', 'IPv6']]);
  assert.deepEqual([by.plain!.ipFamilyPolicy, by.plain!.ipFamilies, by.plain!.clusterIPs?.length], ['SingleStack', ['IPv4'], 1], 'SingleStack IPv4 by default');
  assert.match(by.both!.clusterIPs![1]!, /^fd00:10:96::[0-9a-f]+$/);
  assert.deepEqual(by.v6first!.ipFamilies, ['IPv6', 'IPv4']);
  assert.equal(by.v6first!.clusterIP, by.v6first!.clusterIPs![0], 'clusterIP is the primary, IPv6 here');
  assert.match(by.v6first!.clusterIP!, /:/);
  assert.deepEqual([by.only6!.clusterIPs!.length, by.only6!.ipFamilies], [1, ['IPv6']]);
  assert.deepEqual(by.given!.clusterIPs, ['10.96.0.77', 'fd00:10:96::77'], 'user-given kept (canonical form)');
  assert.equal(by.headless!.clusterIPs, undefined);
  const all = list.flatMap((s) => s.spec.clusterIPs ?? []);
  assert.equal(new Set(all).size, all.length, 'every address distinct');
  for (const ip of all) assert.ok(inServiceRange(ip), ip);
  assert.ok(!changed.includes(list[6]!));
  // a second pass changes nothing (the controller writes back only what changed)
  assert.deepEqual(assignClusterIPs(list, { ipv6: true }), []);
});

test('dual stack refused with a code when the cluster cannot give it; PreferDualStack falls back to IPv4 without enable-ipv6', () => {
  const code = (spec: Service['spec'], ipv6 = false) => {
    try { serviceFamilies(svc('s', spec), { ipv6 }); return 'ok'; } catch (e) { return (e as { code: string }).code; }
  };
  assert.equal(code({ ipFamilyPolicy: 'RequireDualStack' }), 'SERVICE_IPV6_DISABLED');
  assert.equal(code({ ipFamilies: ['IPv6'] }), 'SERVICE_IPV6_DISABLED');
  assert.equal(code({ clusterIP: 'fd00:10:96::20' }), 'SERVICE_IPV6_DISABLED');
  assert.equal(code({ ipFamilyPolicy: 'PreferDualStack', ipFamilies: ['IPv6', 'IPv4'] }), 'SERVICE_IPV6_DISABLED');
  assert.deepEqual(serviceFamilies(svc('s', { ipFamilyPolicy: 'PreferDualStack' }), { ipv6: false }).families, ['IPv4']);
  assert.equal(code({ ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv4', 'IPv6'] }, true), 'SERVICE_IP_FAMILIES');
  assert.equal(code({ ipFamilies: ['IPv6'], clusterIP: '10.96.0.30' }, true), 'SERVICE_IP_FAMILIES');
  assert.equal(code({ ipFamilyPolicy: 'RequireDualStack', clusterIPs: ['10.96.0.30', '10.96.0.31'] }, true), 'SERVICE_CLUSTER_IPS');
  assert.equal(code({ clusterIP: '10.96.0.30', clusterIPs: ['10.96.0.31'] }, true), 'SERVICE_CLUSTER_IPS');
  assert.equal(code({ ipFamilies: ['IPv6'], clusterIP: 'fd00:10:97::1' }, true), 'SERVICE_IP_OUT_OF_RANGE');
  // the attacker's address: an IPv4-mapped IPv6 cluster IP (of the IPv4 range) is no service address
  assert.equal(code({ ipFamilies: ['IPv6'], clusterIP: '::ffff:10.96.0.30' }, true), 'SERVICE_IP_INVALID');
  // assignment skips a bad service and reports it; the others are still allocated
  const bad: string[] = [];
  const list = [svc('bad', { ipFamilyPolicy: 'RequireDualStack' }), svc('good', {})];
  assignClusterIPs(list, { ipv6: false, onError: (s) => bad.push(s.metadata.name) });
  assert.deepEqual(bad, ['bad']);
  assert.equal(list[0]!.spec.clusterIP, undefined);
  assert.match(list[1]!.spec.clusterIP!, /^10\.96\./);
});

test('frontends per family: an IPv6 frontend takes the pods\' IPv6 addresses (podIPs), a pod without one is no backend of it', () => {
  const s = svc('web', { clusterIPs: ['10.96.0.20', 'fd00:10:96::14'], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] });
  const dual = (name: string, v4: string, v6: string): Pod => ({ ...pod(name, { app: 'web' }, v4), status: { podIP: v4, podIPs: [{ ip: v4 }, { ip: v6 }] } });
  const pods = [dual('w2', '10.244.1.10', 'fd00:10:244:1::a'), dual('w1', '10.244.1.9', 'fd00:10:244:1::9'), pod('v4only', { app: 'web' }, '10.244.1.11')];
  const fe = serviceFrontends([s], pods);
  assert.deepEqual(fe.map((f) => [f.ip, f.backends.map((b) => `${b.ip}/${b.port}`)]), [
    ['10.96.0.20', ['10.244.1.9/8080', '10.244.1.10/8080', '10.244.1.11/8080']],
    ['fd00:10:96::14', ['fd00:10:244:1::9/8080', 'fd00:10:244:1::a/8080']],
  ]);
});
