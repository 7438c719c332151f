import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { assignClusterIPs, diffFrontends, serviceFrontends, KUBE_DNS_IP } from '../../../src/agent/controllers/services.ts';
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
