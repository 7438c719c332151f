/** The lab DNS zone (src/lab/dns/zone.ts): services, pods, world hosts, ExternalHosts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildZone, resolve } from '../../../../src/lab/dns/zone.ts';
import type { Resource } from '../../../../src/api/types.ts';

const src = { file: 't', line: 1, col: 1 };
const zone = buildZone([
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.20' }, source: src },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'headless', namespace: 'shop' }, spec: { clusterIP: 'None' }, source: src },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'api-0', namespace: 'shop' }, spec: { containers: [] }, status: { podIP: '10.244.1.7' }, source: src },
  { apiVersion: 'membrane.dev/v1alpha1', kind: 'ExternalHost', metadata: { name: 'm' }, spec: { names: ['Models.Example.NET', 'alias.example.net'], addresses: ['198.51.100.60', '2001:db8::60'], ttl: 7 }, source: src },
] as unknown as Resource[]);

test('services and pods', () => {
  assert.deepEqual(resolve(zone, 'web.shop.svc.cluster.local.', 'A').records.map((r) => r.ip), ['10.96.0.20']);
  assert.equal(resolve(zone, 'headless.shop.svc.cluster.local', 'A').rcode, 'NXDOMAIN');
  assert.deepEqual(resolve(zone, '10-244-1-7.shop.pod.cluster.local', 'A').records.map((r) => r.ip), ['10.244.1.7']);
  assert.deepEqual(resolve(zone, 'api-0.shop.pod.cluster.local', 'A').records.map((r) => r.ip), ['10.244.1.7']);
});

test('world hosts, ExternalHost A/AAAA, TTL, CNAME chain, NODATA, NXDOMAIN', () => {
  assert.deepEqual(resolve(zone, 'API.OPENAI.COM', 'A').records, [{ name: 'api.openai.com', type: 'A', ip: '198.51.100.20', ttl: 30 }]);
  assert.deepEqual(resolve(zone, 'models.example.net', 'AAAA').records.map((r) => [r.ip, r.ttl]), [['2001:db8::60', 7]]);
  const a = resolve(zone, 'alias.example.net', 'A');
  assert.deepEqual(a.cnames, [{ name: 'alias.example.net', target: 'models.example.net', ttl: 7 }]);
  assert.deepEqual(a.records.map((r) => r.ip), ['198.51.100.60']);
  assert.deepEqual(resolve(zone, 'cdn.example.com', 'A').records.map((r) => r.ip), ['203.0.113.21']);
  const nodata = resolve(zone, 'api.openai.com', 'AAAA');
  assert.equal(nodata.rcode, 'NOERROR');
  assert.equal(nodata.records.length, 0);
  assert.equal(resolve(zone, 'nope.example.org', 'A').rcode, 'NXDOMAIN');
});

test('dual stack: world hosts answer AAAA with their IPv6 address (CNAMEs too), a dual-stack Service both families', () => {
  const dual = buildZone([
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20', 'fd00:10:96::14'] }, source: src },
  ] as unknown as Resource[], { ipv6: true });
  assert.deepEqual(resolve(dual, 'api.openai.com', 'AAAA').records.map((r) => r.ip), ['2001:db8::c633:6414']);
  assert.deepEqual(resolve(dual, 'api.openai.com', 'A').records.map((r) => r.ip), ['198.51.100.20']);
  assert.deepEqual(resolve(dual, 'cdn.example.com', 'AAAA').records.map((r) => r.ip), ['2001:db8::cb00:7115']);
  assert.deepEqual(resolve(dual, 'web.shop.svc.cluster.local', 'AAAA').records.map((r) => r.ip), ['fd00:10:96::14']);
  assert.deepEqual(resolve(dual, 'web.shop.svc.cluster.local', 'A').records.map((r) => r.ip), ['10.96.0.20']);
  // single stack (the default) keeps world hosts IPv4-only
  assert.equal(resolve(zone, 'api.openai.com', 'AAAA').records.length, 0);
});
