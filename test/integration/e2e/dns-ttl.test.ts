/**
 * TTL expiry (spec policy.md §6.3): once a name's TTL has passed and the FQDN GC ran, new
 * connections to its IPs are dropped, while a connection established before the expiry keeps
 * working (GC never removes an IP a tracked connection uses). A new lookup allows the IPs again.
 * And the DNS cache survives an agent restart: learned IPs stay allowed without a new lookup.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { TestLab, REPO } from '../support/lab.ts';
import { until } from '../../support/until.ts';

const lab = new TestLab(`dnst${process.pid % 10000}`);
const NS = 'ttl';
const PROBE = join(REPO, 'test/integration/e2e/dns-probe.ts');
const IP1 = '198.51.100.50';
const IP2 = '198.51.100.51';
// The restart test's name: a TTL far longer than a slow restart on a loaded machine (the world's
// 30 s default could run out between the lookup and the probe after the restart, and the
// restarted agent would then rightly deny).
const KEPT = '198.51.100.52';

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'short-ttl' }, spec: { names: ['ttl.example.net'], addresses: [IP1, IP2], ttl: 2 } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'kept' }, spec: { names: ['kept.example.net'], addresses: [KEPT], ttl: 600 } },
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'ttl', namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: 'client' } },
        egress: [
          { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
          { toFQDNs: [{ matchName: 'ttl.example.net' }, { matchName: 'kept.example.net' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
        ],
      },
    },
  ]);
});
after(async () => { await lab.down(); });

test('TTL expiry closes new connections, not established ones; a new lookup reopens', async () => {
  const ops = [
    { op: 'query', name: 'ttl.example.net' },
    { op: 'open', id: 'a', ip: IP1, port: 80 },
    { op: 'sleep', ms: 1200 }, { op: 'get', id: 'a' },
    { op: 'sleep', ms: 1200 }, { op: 'get', id: 'a' },
    { op: 'sleep', ms: 1500 }, // TTL 2 s + GC (1 s period) are behind us
    { op: 'connect', ip: IP2, port: 80 },
    { op: 'get', id: 'a' },
    { op: 'query', name: 'ttl.example.net' },
    { op: 'connect', ip: IP2, port: 80 },
  ];
  const r = await lab.exec(NS, 'client', [join(REPO, 'bin/node'), PROBE, JSON.stringify(ops)], 60_000);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>[];
  assert.deepEqual((out[0] as { ips: string[] }).ips.sort(), [IP1, IP2]);
  assert.equal(out[1]!.ok, true, 'connection established while the name is valid');
  assert.equal(out[3]!.ok, true);
  assert.equal(out[5]!.ok, true);
  assert.equal(out[7]!.connected, false, 'after expiry a new connection is dropped');
  assert.equal(out[8]!.ok, true, 'the established connection still works');
  assert.equal(out[10]!.connected, true, 'a new lookup allows the IP again');
});

test('the DNS cache survives an agent restart: a learned IP stays allowed without a new lookup', async () => {
  const probe = async (ops: object[]) => {
    const r = await lab.exec(NS, 'client', [join(REPO, 'bin/node'), PROBE, JSON.stringify(ops)], 60_000);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>[];
  };
  assert.equal((await probe([{ op: 'lookupConnect', name: 'kept.example.net', port: 80 }]))[0]!.connected, true);
  // the agent saves its DNS cache every 2 s: until the learned name is in the file
  const cacheFile = join(lab.paths.nodeDir('node1'), 'fqdn-cache.json');
  const saved = () => (JSON.parse(readFileSync(cacheFile, 'utf8')) as [number, string, string, number][]).some(([, name, ip]) => name.startsWith('kept.example.net') && ip === KEPT);
  await until('kept.example.net in the saved DNS cache', saved, 30_000);
  const pid = Number(readFileSync(lab.paths.agentPidFile('node1'), 'utf8'));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 100));
  }
  await lab.up();
  await lab.settle();
  const r = await probe([{ op: 'connect', ip: KEPT, port: 80 }, { op: 'connect', ip: '198.51.100.21', port: 80 }]);
  assert.equal(r[0]!.connected, true, 'restored: still allowed');
  assert.equal(r[1]!.connected, false, 'never learned: still denied');
});
