/**
 * TTL expiry (spec policy.md §6.3): once a name's TTL has passed and the FQDN GC ran, new
 * connections to its IPs are dropped, while a connection established before the expiry keeps
 * working (GC never removes an IP a tracked connection uses). A new lookup allows the IPs again.
 * And the DNS cache survives an agent restart: learned IPs stay allowed without a new lookup.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { TestLab, REPO } from '../support/lab.ts';
import { until } from '../../support/until.ts';
import { BpfMap } from '../../../src/sys/bpf.ts';
import { decodeIpcacheVal, encodeIpcacheKey } from '../../../src/datapath/linux/codec.ts';

const lab = new TestLab(`dnst${process.pid % 10000}`);
const NS = 'ttl';
const PROBE = join(REPO, 'test/integration/e2e/dns-probe.ts');
const IP1 = '198.51.100.50';
const IP2 = '198.51.100.51';
// The restart test's name: a TTL far longer than a slow restart on a loaded machine (the world's
// 30 s default could run out between the lookup and the probe after the restart, and the
// restarted agent would then rightly deny).
const KEPT = '198.51.100.52';
// The kill test's: a name whose identity the kill loses, one learnt after the restart, and a short-TTL
// name that leaves a free identity number below the lost one
const LOST = '198.51.100.53';
const LATER = '198.51.100.54';
const GAP = '198.51.100.55';

before(async () => {
  await lab.up();
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'short-ttl' }, spec: { names: ['ttl.example.net'], addresses: [IP1, IP2], ttl: 2 } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'kept' }, spec: { names: ['kept.example.net'], addresses: [KEPT], ttl: 600 } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'lost' }, spec: { names: ['lost.example.net'], addresses: [LOST], ttl: 600 } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'later' }, spec: { names: ['later.example.net'], addresses: [LATER], ttl: 600 } },
    { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'gap' }, spec: { names: ['gap.example.net'], addresses: [GAP], ttl: 2 } },
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'ttl', namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: 'client' } },
        egress: [
          { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
          {
            toFQDNs: [{ matchName: 'ttl.example.net' }, { matchName: 'kept.example.net' }, { matchName: 'lost.example.net' }, { matchName: 'later.example.net' }, { matchName: 'gap.example.net' }],
            toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }],
          },
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

test('killed (SIGKILL) with an FQDN identity in the maps but not in its store: the restart gives the address its number back, and no other name takes it', async () => {
  const probe = async (ops: object[]) => {
    const r = await lab.exec(NS, 'client', [join(REPO, 'bin/node'), PROBE, JSON.stringify(ops)], 60_000);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>[];
  };
  /** the node-local (FQDN) identity the pinned ipcache gives `ip` (0: none; a world entry's is not one) */
  const pinnedIdentity = (ip: string) => {
    const m = BpfMap.fromPin(join(lab.paths.pinRoot('node1'), 'mb_ipcache'));
    try {
      const id = decodeIpcacheVal(m.lookup(encodeIpcacheKey(`${ip}/32`)) ?? Buffer.alloc(16)).identity;
      return id >>> 24 === 1 ? id : 0;
    } finally { m.close(); }
  };
  // a number freed below the next one: gap.example.net's identity goes with its 2 s TTL
  const gapId = await until('gap.example.net in the ipcache', async () => ((await probe([{ op: 'query', name: 'gap.example.net' }]))[0] as { ips: string[] }).ips.includes(GAP) && pinnedIdentity(GAP), 30_000);
  await until('gap.example.net\'s identity released after its TTL', () => pinnedIdentity(GAP) !== gapId, 30_000);
  assert.equal((await probe([{ op: 'lookupConnect', name: 'lost.example.net', port: 80 }]))[0]!.connected, true);
  const lost = pinnedIdentity(LOST);
  assert.ok(lost > gapId, `lost.example.net's identity ${lost} is above the freed ${gapId}`);
  // both written (the DNS cache every 2 s, the identity within 50 ms); then the identity's record
  // is taken out of the store of a stopped agent, which is killed: what a kill inside the store's
  // window leaves (the maps have the number, the store not)
  const cacheFile = join(lab.paths.nodeDir('node1'), 'fqdn-cache.json');
  await until('lost.example.net in the saved DNS cache', () => (JSON.parse(readFileSync(cacheFile, 'utf8')) as [number, string, string][]).some(([, , ip]) => ip === LOST), 30_000);
  const storeFile = lab.paths.storeFile('node1');
  const key = `cilium/state/identities/v1/id/${lost}`;
  await until(`${key} in the store`, () => readFileSync(storeFile, 'utf8').includes(JSON.stringify(key)), 10_000);
  const pid = Number(readFileSync(lab.paths.agentPidFile('node1'), 'utf8'));
  process.kill(pid, 'SIGSTOP');
  const store = JSON.parse(readFileSync(storeFile, 'utf8')) as { revision: number; pairs: { key: string }[] };
  store.pairs = store.pairs.filter((p) => p.key !== key);
  writeFileSync(`${storeFile}.test`, JSON.stringify(store));
  renameSync(`${storeFile}.test`, storeFile);
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 50));
  }
  await lab.up();
  await lab.settle();
  // without the hold the restored DNS cache gave the address the lowest free number (the gap's)
  assert.equal(pinnedIdentity(LOST), lost, 'the address keeps the number the pinned maps carried');
  const r = await probe([{ op: 'connect', ip: LOST, port: 80 }, { op: 'lookupConnect', name: 'later.example.net', port: 80 }]);
  assert.equal(r[0]!.connected, true, 'restored: still allowed without a new lookup');
  assert.equal(r[1]!.connected, true);
  const later = pinnedIdentity(LATER);
  assert.ok(later !== 0 && later !== lost, `later.example.net got ${later}, not the restored ${lost}`);
});
