/**
 * Attack: read another namespace's flows through Hubble. A pod in `attacker` without any egress
 * policy reaches its node's addresses (10.244.<k>.1, 192.0.2.<k>) as Cilium's pods do, so it can
 * open TCP 4244. With the upstream hubble CLI it tries plain text, TLS without a client
 * certificate, and a client certificate from its own CA: all fail. The lab's client certificate
 * works (from the node and, as a positive control for the network path, from the same pod), and
 * shows the victim's HTTP URL. Host ports (4244, 9965) are subject to the pod's egress policy
 * (reserved:host): a restricted pod reaches neither, a pod allowed `toEntities: [host]` reaches both.
 * The unix socket is root-only and no key is ever written to the agent's log.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, type Flow } from '../support/lab.ts';
import { hubbleCli } from '../support/hubble-cli.ts';
import { hubbleTlsPaths } from '../../../src/lab/hubble-certs.ts';
import { ensureCA, issueCert } from '../../../src/lab/ca.ts';
import { runCommand } from '../../support/run.ts';

const lab = new TestLab(`ahb${process.pid % 10000}`);
const HUBBLE = hubbleCli();
const NODE_IP = '192.0.2.1';
const ROUTER_IP = '10.244.1.1';
const SERVER_NAME = 'node1.default.hubble-grpc.cilium.io';
const SECRET = '/secret-token-4f2a';
let pki: ReturnType<typeof hubbleTlsPaths>;
let webIp = '';
const rogue = { ca: '', cert: '', key: '' };

const pod = (ns: string, name: string, labels: Record<string, string>, image = 'curlimages/curl') => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels },
  spec: { containers: [{ name: 'c', image, ...(image.includes('echo') ? { ports: [{ containerPort: 8080 }] } : {}) }] },
});
const cnp = (ns: string, name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: ns }, spec });

const run = (cmd: string, args: string[], timeout = 30_000) => runCommand(cmd, args, { timeout, env: lab.env });

/** hubble observe from the spy pod; flow lines parsed */
async function spyObserve(flags: string[]) {
  const r = await lab.exec('attacker', 'spy', [HUBBLE, 'observe', '--server', `${NODE_IP}:4244`, '--timeout', '3s', ...flags, '--last', '1000', '-o', 'json'], 40_000);
  return { ...r, flows: r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { flow?: Flow }).filter((x) => x.flow) };
}

const tlsFlags = () => ['--tls', '--tls-ca-cert-files', pki.caCert, '--tls-server-name', SERVER_NAME];
const labCert = () => ['--tls-client-cert-file', pki.clientCert, '--tls-client-key-file', pki.clientKey];

before(async () => {
  await lab.up();
  pki = hubbleTlsPaths(lab.paths.stateDir);
  const dir = await lab.dir;
  const other = await ensureCA(join(dir, 'attacker-ca'), 'CN=attacker CA');
  const c = await issueCert(other, { commonName: '*.hubble-relay.cilium.io', names: ['*.hubble-relay.cilium.io'], usage: 'client' });
  rogue.ca = other.certPath;
  rogue.cert = join(dir, 'attacker.crt');
  rogue.key = join(dir, 'attacker.key');
  writeFileSync(rogue.cert, c.cert);
  writeFileSync(rogue.key, c.key, { mode: 0o600 });
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'attacker' } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'victim' } },
    pod('victim', 'web', { app: 'web' }, 'ealen/echo-server'),
    pod('victim', 'client', { app: 'client' }),
    pod('attacker', 'spy', { app: 'spy' }),
    pod('attacker', 'locked', { app: 'locked' }),
    pod('attacker', 'hostok', { app: 'hostok' }),
    // the victim's traffic goes through the HTTP proxy, so its flows carry the URL
    cnp('victim', 'client-l7', {
      endpointSelector: { matchLabels: { app: 'client' } },
      egress: [{ toEndpoints: [{ matchLabels: { app: 'web' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/secret-.*' }] } }] }],
    }),
    cnp('attacker', 'locked', { endpointSelector: { matchLabels: { app: 'locked' } }, egress: [{ toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'victim', app: 'web' } }] }] }),
    cnp('attacker', 'hostok', { endpointSelector: { matchLabels: { app: 'hostok' } }, egress: [{ toEntities: ['host'] }] }),
  ]);
  webIp = (await lab.podIPs())['victim/web']!;
  assert.ok(webIp);
  const r = await lab.exec('victim', 'client', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', `http://${webIp}:8080${SECRET}`]);
  assert.equal(r.stdout, '200', r.stderr);
});
after(async () => { await lab.down(); });

test('the spy pod (no egress policy) reaches the node\'s 4244 and 9965: only TLS stands in the way', async () => {
  const p = await lab.probe('attacker', 'spy', [`${NODE_IP}:4244/tcp`, `${ROUTER_IP}:4244/tcp`, `${NODE_IP}:9965/tcp`, `${ROUTER_IP}:9965/tcp`]);
  assert.deepEqual(p, { [`${NODE_IP}:4244/tcp`]: true, [`${ROUTER_IP}:4244/tcp`]: true, [`${NODE_IP}:9965/tcp`]: true, [`${ROUTER_IP}:9965/tcp`]: true });
});

test('attack 1: plain-text hubble observe from the pod reads nothing', async () => {
  const r = await spyObserve([]);
  assert.notEqual(r.code, 0);
  assert.equal(r.flows.length, 0);
  assert.match(r.stderr, /Unavailable/);
  assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRET));
});

test('attack 2: TLS without a client certificate is refused (certificate required)', async () => {
  const insecure = await spyObserve(['--tls', '--tls-allow-insecure']);
  assert.notEqual(insecure.code, 0);
  assert.equal(insecure.flows.length, 0);
  // the server's certificate_required alert, or the reset that follows it when the client writes first
  assert.match(insecure.stderr, /certificate required|broken pipe|connection reset/);
  const verified = await spyObserve(tlsFlags());
  assert.notEqual(verified.code, 0);
  assert.equal(verified.flows.length, 0);
});

test('attack 3: a client certificate from another CA is refused', async () => {
  const r = await spyObserve([...tlsFlags(), '--tls-client-cert-file', rogue.cert, '--tls-client-key-file', rogue.key]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Unavailable/);
  assert.equal(r.flows.length, 0);
  assert.doesNotMatch(r.stdout, new RegExp(SECRET));
});

test('the lab\'s client certificate reads the flows: from the node (host side) and, same network path, from the pod', async () => {
  const host = await run('ip', ['netns', 'exec', `${lab.name}-node1`, HUBBLE, 'observe', '--server', `${NODE_IP}:4244`, ...tlsFlags(), ...labCert(), '--last', '1000', '-o', 'json']);
  assert.equal(host.code, 0, host.stderr);
  const flows = host.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { flow?: Flow & { l7?: { http?: { url?: string } } } }).filter((x) => x.flow).map((x) => x.flow!);
  assert.ok(flows.some((f) => f.l7?.http?.url?.endsWith(SECRET) && f.source?.namespace === 'victim'), 'the victim\'s URL is in the flows');
  const fromPod = await spyObserve([...tlsFlags(), ...labCert()]);
  assert.equal(fromPod.code, 0, fromPod.stderr);
  assert.ok(fromPod.flows.length > 0);
});

test('host ports follow the pod\'s egress policy: a restricted pod reaches neither 4244 nor 9965; toEntities host reaches both', async () => {
  const targets = [`${NODE_IP}:4244/tcp`, `${ROUTER_IP}:4244/tcp`, `${NODE_IP}:9965/tcp`, `${ROUTER_IP}:9965/tcp`, `${webIp}:8080/tcp`];
  const locked = await lab.probe('attacker', 'locked', targets);
  assert.deepEqual(locked, Object.fromEntries(targets.map((t) => [t, t.startsWith(webIp)])), 'only the allowed pod');
  const hostok = await lab.probe('attacker', 'hostok', targets);
  assert.deepEqual(hostok, Object.fromEntries(targets.map((t) => [t, !t.startsWith(webIp)])), 'only the host');
  const drops = await lab.flows(['--from-pod', 'attacker/locked', '--verdict', 'DROPPED', '--last', '100']);
  for (const port of [4244, 9965]) {
    const d = drops.find((f) => f.l4?.TCP?.destination_port === port);
    assert.ok(d, `a drop to ${port}`);
    assert.equal(d.drop_reason_desc, 'POLICY_DENIED');
    assert.equal(d.destination?.identity, 1); // reserved:host
    assert.equal(d.traffic_direction, 'EGRESS');
  }
});

test('the unix socket is root-only in the lab: nobody is refused, root reads', async () => {
  const sock = lab.paths.hubbleSocket('node1');
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  assert.equal(statSync(sock).uid, 0);
  assert.ok(statSync(sock).isSocket());
  const nobody = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', HUBBLE, 'status', '--server', `unix://${sock}`, '--timeout', '3s']);
  assert.notEqual(nobody.code, 0);
  assert.match(nobody.stderr, /permission denied/);
  const root = await run(HUBBLE, ['status', '--server', `unix://${sock}`]);
  assert.equal(root.code, 0, root.stderr);
});

test('keys are 0600 and never in the agent log', async () => {
  const paths = lab.paths;
  const log = readFileSync(paths.agentLog('node1'), 'utf8');
  assert.ok(log.length > 0);
  assert.doesNotMatch(log, /PRIVATE KEY/);
  const keys = [join(pki.dir, 'ca.key'), pki.clientKey, pki.server('node1').keyFile, join(pki.dir, 'relay', 'server.key')];
  for (const k of keys) {
    assert.equal(statSync(k).mode & 0o777, 0o600, k);
    const body = readFileSync(k, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----'));
    for (const line of body) assert.ok(!log.includes(line.slice(0, 32)), `no part of ${k} in the log`);
  }
  assert.deepEqual(readdirSync(pki.dir).sort(), ['ca.crt', 'ca.key', 'client.crt', 'client.key', 'node1', 'relay']);
});
