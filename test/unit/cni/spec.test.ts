import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkVersion, CniCode, CniError, endpointName, parseCniArgs, parseLabelList, parseNetConf, addResult } from '../../../src/cni/spec.ts';
import { parseCidr, inPool } from '../../../src/common/cidr-ipam.ts';
import { settingsFromDocument, buildConfig } from '../../../src/common/config.ts';
import { applicable, battery, selectTests } from '../../../src/cli/connectivity/battery.ts';
import { cniAddRequestSchema } from '../../../src/api/requests.ts';

const code = (f: () => unknown): number | undefined => { try { f(); return undefined; } catch (e) { return e instanceof CniError ? e.code : -1; } };

test('netconf: the spec\'s codes for each kind of bad input', () => {
  const ok = { cniVersion: '1.0.0', name: 'membrane', type: 'membrane-cni' };
  const table: [string, number | undefined][] = [
    [JSON.stringify(ok), undefined],
    [JSON.stringify({ ...ok, runtimeConfig: { portMappings: [] }, prevResult: {} }), undefined],
    ['not json', CniCode.DecodeFailure],
    ['[]', CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, name: undefined }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, name: '-bad' }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, type: '' }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, agentSocket: 'rel.sock' }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, namespace: 'Not_DNS' }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, timeoutMs: 5 }), CniCode.InvalidNetworkConfig],
    [JSON.stringify({ ...ok, 'cni.dev/valid-attachments': [{ containerID: 1 }] }), CniCode.InvalidNetworkConfig],
  ];
  for (const [stdin, want] of table) assert.equal(code(() => parseNetConf(stdin)), want, stdin);
  assert.equal(code(() => checkVersion('1.0.0')), undefined);
  assert.equal(code(() => checkVersion('1.1.0')), undefined);
  for (const v of ['0.4.0', '0.3.1', '2.0.0', '']) assert.equal(code(() => checkVersion(v)), CniCode.IncompatibleVersion, v);
});

test('CNI_ARGS and label lists: pairs parsed, malformed pairs are code 4', () => {
  assert.deepEqual([...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=web;MEMBRANE_LABELS=app=web,tier=a=b')], [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'web'], ['MEMBRANE_LABELS', 'app=web,tier=a=b']]);
  assert.equal(code(() => parseCniArgs('novalue')), CniCode.InvalidEnvironment);
  assert.deepEqual(parseLabelList('app=web,io.kubernetes.pod.namespace=shop'), { app: 'web', 'io.kubernetes.pod.namespace': 'shop' });
  assert.equal(code(() => parseLabelList('app')), CniCode.InvalidEnvironment);
  assert.deepEqual(parseLabelList(''), {});
});

test('endpoint names are always DNS labels the agent accepts (property)', () => {
  fc.assert(fc.property(fc.option(fc.string({ maxLength: 300 }), { nil: undefined }), fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$/), (podName, id) => {
    const n = endpointName(podName, id);
    const r = cniAddRequestSchema.safeParse({ containerId: id, ifname: 'eth0', netns: '/run/netns/x', name: n, namespace: 'default', labels: {} });
    return r.success;
  }), { numRuns: 300 });
  assert.equal(endpointName('Web_Server', 'abc'), 'web-server');
  assert.equal(endpointName(undefined, 'ABCDEF0123456789ffff'), 'c-abcdef012345');
});

test('ADD result: the container interface is the sandboxed one, a /32 via the gateway', () => {
  const r = addResult('1.0.0', 'eth0', '/run/netns/c1', { ip: '10.244.7.2', gateway: '10.244.7.1', mac: '0a:58:0a:f4:07:02', hostIfname: 'lxcabc', endpointId: 100, identity: 256 }) as {
    interfaces: { name: string; sandbox?: string }[]; ips: { address: string; gateway: string; interface: number }[];
  };
  assert.equal(r.interfaces[r.ips[0]!.interface]!.sandbox, '/run/netns/c1');
  assert.deepEqual(r.ips[0], { address: '10.244.7.2/32', gateway: '10.244.7.1', interface: 1 });
});

test('pod CIDR pools: network, gateway, membership', () => {
  const p = parseCidr('10.244.7.99/24');
  assert.equal(p.cidr, '10.244.7.0/24');
  assert.equal(p.gateway, '10.244.7.1');
  assert.equal(p.size, 256);
  assert.equal(inPool(p, '10.244.7.254'), true);
  assert.equal(inPool(p, '10.244.8.1'), false);
});

test('config files: setting names or flags; unknown keys, CLI settings and non-scalars refused; file < env < flags', () => {
  assert.deepEqual(settingsFromDocument({ 'pod-cidr': '10.244.7.0/24', devices: 'eth0', logLevel: 'debug' }, 'f.yaml'), { podCidr: '10.244.7.0/24', devices: 'eth0', logLevel: 'debug' });
  assert.throws(() => settingsFromDocument({ bogus: 1 }, 'f.yaml'), /f\.yaml: unknown setting "bogus"/);
  assert.throws(() => settingsFromDocument({ node: 'x' }, 'f.yaml'), /unknown setting/);
  assert.throws(() => settingsFromDocument({ devices: ['eth0'] }, 'f.yaml'), /not a string/);
  assert.throws(() => settingsFromDocument([1], 'f.yaml'), /not a mapping/);
  const file = { podCidr: '10.244.1.0/24', logLevel: 'debug', devices: 'eth9' };
  const c = buildConfig({ env: { MEMBRANE_LOG_LEVEL: 'warn' }, flags: { devices: 'eth0' }, file });
  assert.deepEqual([c.podCidr, c.logLevel, c.devices], ['10.244.1.0/24', 'warn', 'eth0']);
  assert.throws(() => buildConfig({ file: { podCidr: '10.244.1.0/8' } }), /CONFIG_INVALID|podCidr/);
  assert.throws(() => buildConfig({ flags: { devices: 'eth0,bad name' } }), /devices/);
});

test('connectivity --test filters: names or regexps, ! excludes', () => {
  const all = battery({ namespace: 't', echoIps: { 'echo-same-node': '10.244.1.5' }, multiNode: false });
  assert.equal(all.length, 7);
  assert.deepEqual(selectTests(all, ['to-fqdns']).map((t) => t.name), ['to-fqdns']);
  assert.deepEqual(selectTests(all, ['!l7', '!deny']).map((t) => t.name), ['no-policies', 'echo-ingress-from-client', 'client-egress-to-entities-world', 'to-fqdns']);
  for (const t of all) assert.ok(t.actions.length > 0, t.name);
});

test('connectivity on an environment without services or world: those actions left out, tests about them skipped', () => {
  const all = battery({ namespace: 't', echoIps: { 'echo-same-node': '10.244.1.5' }, multiNode: false });
  const full = applicable(all, { services: true, world: true });
  assert.equal(full.run.length, 7);
  assert.equal(full.skipped.length, 0);
  assert.equal(full.run.reduce((n, t) => n + t.actions.length, 0), all.reduce((n, t) => n + t.actions.length, 0));
  const host = applicable(all, { services: false, world: false });
  assert.deepEqual(host.skipped.map((t) => t.name), ['client-egress-to-entities-world', 'to-fqdns']);
  assert.deepEqual(host.run.map((t) => [t.name, t.actions.length]), [['no-policies', 2], ['all-ingress-deny', 2], ['all-egress-deny', 1], ['echo-ingress-from-client', 2], ['echo-ingress-l7', 3]]);
  for (const t of host.run) for (const a of t.actions) assert.ok(!a.needs && !/svc\.cluster\.local|example\.com|world\.lab/.test(a.url), a.url);
  // the drops stay: what is denied is still probed
  assert.ok(host.run.find((t) => t.name === 'echo-ingress-from-client')!.actions.some((a) => a.from === 'client2' && a.expect === 'drop'));
});
