/**
 * TLS policy on ingress, in a lab: a pod serving HTTPS (the lab's TLS echo, certificates from the
 * lab CA) admits TLS only for the server names its ingress policy lists (SNI proxy on the ingress
 * slot), and with terminatingTLS/originatingTLS the ingress proxy terminates TLS toward the remote
 * client, applies HTTP rules inside and re-encrypts toward the pod.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { caCertPath } from '../../../src/lab/ca.ts';

const lab = new TestLab(`ting${process.pid % 10000}`);
const NS = 'ting';
let CA = '';
let server = '';

const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS }, spec });

before(async () => {
  await lab.up();
  const stateDir = lab.paths.stateDir;
  CA = caCertPath(stateDir);
  await lab.ok(['apply', '-f', '-'], { input: `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n---\n${await lab.ok(['lab', 'ca', '--secret', 'lab-ca', '-n', NS])}` });
  await lab.apply([
    {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'tls-server', namespace: NS, labels: { app: 'tls-server' } },
      spec: { containers: [{ name: 'c', image: 'local/tls-echo', command: [join(REPO, 'bin/node'), join(REPO, 'src/lab/dns/tls-echo.ts'), `--state-dir=${stateDir}`, '--ports=8443', '--id=pod-tls-echo'], ports: [{ containerPort: 8443, protocol: 'TCP' }] }] },
    },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
  ]);
  server = (await lab.podIPs())[`${NS}/tls-server`]!;
  assert.ok(server);
  // the TLS echo takes a moment to load the CA
  for (let i = 0; i < 40; i++) {
    if ((await curl('internal.api.example', '/')).code === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
});
after(async () => { await lab.down(); });

async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

async function curl(name: string, path: string, method = 'GET'): Promise<{ code: number; status: number; body: string; err: string }> {
  const r = await lab.exec(NS, 'client', ['curl', '-sS', '-m', '8', '-o', '-', '-w', '\n%{http_code}', '-X', method, '--cacert', CA, '--resolve', `${name}:8443:${server}`, `https://${name}:8443${path}`], 30_000);
  const i = r.stdout.lastIndexOf('\n');
  return { code: r.code, status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(0, i)), err: r.stderr };
}

function flowsSince(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--type', 'l7', '--since', since], pred);
}

test('ingress serverNames: the pod admits TLS for its own name only; the flow is INGRESS', async () => {
  const pol = cnp('ingress-sni', {
    endpointSelector: { matchLabels: { app: 'tls-server' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8443', protocol: 'TCP' }], serverNames: ['internal.api.example'] }] }],
  });
  await withPolicies([pol], async () => {
    const since = new Date().toISOString();
    const ok = await curl('internal.api.example', '/v1/x');
    assert.equal(ok.code, 0, ok.err);
    const echoed = JSON.parse(ok.body) as { sni: string; client: { address: string } };
    assert.equal(echoed.sni, 'internal.api.example');
    assert.equal(echoed.client.address, (await lab.podIPs())[`${NS}/client`]);
    const other = await curl('other.api.example', '/');
    assert.equal(other.code, 35, other.err);
    const fs = await flowsSince(since, (x) => x.filter((f) => String(f.Summary).startsWith('TLS ClientHello')).length >= 2);
    const tlsFlows = fs.filter((f) => String(f.Summary).startsWith('TLS ClientHello'));
    assert.ok(tlsFlows.some((f) => f.verdict === 'FORWARDED' && f.traffic_direction === 'INGRESS' && f.destination?.pod_name === 'tls-server'), JSON.stringify(tlsFlows));
    assert.ok(tlsFlows.some((f) => f.verdict === 'DROPPED' && f.traffic_direction === 'INGRESS' && /other\.api\.example refused/.test(String(f.Summary))));
  });
});

test('ingress interception: the ingress proxy terminates TLS toward the client, enforces HTTP rules, re-encrypts to the pod', async () => {
  const pol = cnp('ingress-l7-tls', {
    endpointSelector: { matchLabels: { app: 'tls-server' } },
    ingress: [{
      fromEndpoints: [{ matchLabels: { app: 'client' } }],
      toPorts: [{
        ports: [{ port: '8443', protocol: 'TCP' }],
        terminatingTLS: { secret: { name: 'lab-ca' } }, originatingTLS: { secret: { name: 'lab-ca' } },
        rules: { http: [{ method: 'GET', path: '/public' }] },
      }],
    }],
  });
  await withPolicies([pol], async () => {
    const since = new Date().toISOString();
    const ok = await curl('internal.api.example', '/public');
    assert.equal(ok.status, 200, ok.err);
    assert.equal((JSON.parse(ok.body) as { sni: string }).sni, 'internal.api.example', 'the proxy originated TLS with the SNI');
    const denied = await curl('internal.api.example', '/private');
    assert.equal(denied.status, 403);
    const fs = await flowsSince(since, (x) => x.some((f) => f.verdict === 'DROPPED' && (f.l7 as { http?: unknown } | undefined)?.http));
    const drop = fs.find((f) => f.verdict === 'DROPPED' && (f.l7 as { type?: string; http?: { url?: string } } | undefined)?.http?.url === 'https://internal.api.example:8443/private');
    assert.ok(drop, JSON.stringify(fs.map((f) => f.Summary)));
    assert.equal(drop.traffic_direction, 'INGRESS');
    assert.match(String(drop.Summary), /\[TLS intercepted, SNI internal\.api\.example\]/);
  });
});
