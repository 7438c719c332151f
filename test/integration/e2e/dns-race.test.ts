/**
 * The race the DNS proxy's answer hold exists for: many pods resolve fresh names and connect at
 * once to the IPs they just learned, in rounds until a time bound. The answer is released only
 * when the ipcache and every policy map have the IPs, so no first SYN may be dropped: every
 * connect succeeds without a SYN retransmission (< 900 ms; Linux retransmits after 1 s) and the
 * datapath reports no policy drop from those pods.
 *
 * Control: `MEMBRANE_DNS_PROXY_HOLD=0 bin/node --test test/integration/e2e/dns-race.test.ts`
 * releases answers before the datapath has the IPs; then this test fails (measured 2026-12-01:
 * 11 of 150 first SYNs dropped), which shows it detects the race.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';

const lab = new TestLab(`dnsr${process.pid % 10000}`);
const NS = 'race';
const PROBE = join(REPO, 'test/integration/e2e/dns-probe.ts');
const PODS = 6;
const NAMES = 25;
const PER_ROUND = 5;
const TIME_BOUND_MS = 60_000;

const addr = (i: number) => (i < 100 ? `203.0.113.${100 + i}` : `198.51.100.${i}`);
const name = (p: number, k: number) => `r${p}-${k}.race.lab`;

before(async () => {
  await lab.up();
  const hosts = [];
  for (let p = 0; p < PODS; p++) {
    for (let k = 0; k < NAMES; k++) hosts.push({ apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: `r${p}-${k}` }, spec: { names: [name(p, k)], addresses: [addr(p * NAMES + k)] } });
  }
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    ...Array.from({ length: PODS }, (_, p) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `p${p}`, namespace: NS, labels: { app: 'race' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } })),
    ...hosts,
    {
      apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'race', namespace: NS },
      spec: {
        endpointSelector: { matchLabels: { app: 'race' } },
        egress: [
          { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
          { toFQDNs: [{ matchPattern: '*.race.lab' }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] },
        ],
      },
    },
  ]);
});
after(async () => { await lab.down(); });

test(`${PODS} pods resolve fresh names and connect at once: no first SYN dropped`, async () => {
  const since = new Date();
  const deadline = Date.now() + TIME_BOUND_MS;
  const results: { pod: number; name: string; rcode: string; connected: boolean; ms: number }[] = [];
  for (let k0 = 0; k0 < NAMES && Date.now() < deadline; k0 += PER_ROUND) {
    await Promise.all(Array.from({ length: PODS }, async (_, p) => {
      const ops = [];
      for (let k = k0; k < Math.min(NAMES, k0 + PER_ROUND); k++) ops.push({ op: 'lookupConnect', name: name(p, k), port: 80 });
      const r = await lab.exec(NS, `p${p}`, [join(REPO, 'bin/node'), PROBE, JSON.stringify(ops)], 90_000);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rcode: string; connected: boolean; ms: number }[];
      out.forEach((x, i) => results.push({ pod: p, name: name(p, k0 + i), rcode: x.rcode, connected: x.connected, ms: x.ms ?? 0 }));
    }));
  }
  assert.ok(results.length >= PODS * PER_ROUND * 2, `at least two rounds ran (${results.length} connects)`);
  const bad = results.filter((r) => r.rcode !== 'NOERROR' || !r.connected || r.ms >= 900);
  assert.deepEqual(bad, [], `${bad.length} of ${results.length} lookups+connects failed or retransmitted a SYN`);
  const drops: Flow[] = (await lab.flows(['--namespace', NS, '--verdict', 'DROPPED', '--since', since.toISOString(), '--last', '10000']))
    .filter((f) => f.l4?.TCP?.destination_port === 80);
  assert.deepEqual(drops.map((f) => `${f.source?.pod_name} -> ${f.IP?.destination}`), [], 'no policy drop of a first SYN');
  const worst = Math.max(...results.map((r) => r.ms));
  console.log(`race: ${results.length} lookups+connects from ${PODS} pods, slowest connect ${worst.toFixed(1)} ms`);
});
