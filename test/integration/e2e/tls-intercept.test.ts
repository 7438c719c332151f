/**
 * TLS interception in a lab (terminatingTLS + originatingTLS with HTTP rules), the way Cilium's
 * connectivity test `client-egress-l7-tls` exercises it: the pod trusts only the interception CA
 * (a Secret applied with `membrane apply`), `POST /v1/chat/completions` passes and `GET /v1/files`
 * gets 403 over real HTTPS verified by curl, the proxy verifies api.openai.com against the lab CA
 * (ca.crt of the originatingTLS Secret), and origination trusting the wrong CA fails the request
 * with 502 and a flow that says why.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, type Flow } from '../support/lab.ts';
import { caCertPath } from '../../../src/lab/ca.ts';

const lab = new TestLab(`tint${process.pid % 10000}`);
const NS = 'tint';
const OPENAI = '198.51.100.20';
let ICA = '';
let LABCA = '';

const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS }, spec });
const dnsAllow = {
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }],
};
const l7tls = (originSecret: string, serverNames?: string[]) => cnp('client-egress-l7-tls', {
  endpointSelector: { matchLabels: { app: 'client' } },
  egress: [dnsAllow, {
    toFQDNs: [{ matchName: 'api.openai.com' }],
    toPorts: [{
      ports: [{ port: '443', protocol: 'TCP' }],
      ...(serverNames ? { serverNames } : {}),
      terminatingTLS: { secret: { name: 'tls-intercept' } },
      originatingTLS: { secret: { name: originSecret } },
      rules: { http: [{ method: 'POST', path: '/v1/chat/completions' }, { method: 'GET', path: '/v1/models' }] },
    }],
  }],
});

before(async () => {
  await lab.up();
  const dir = await lab.dir;
  LABCA = caCertPath(lab.paths.stateDir);
  ICA = join(dir, 'ica.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ica.key'), '-out', ICA,
    '-days', '2', '-subj', '/CN=membrane test interception CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], { stdio: 'ignore' });
  // the interception Secret as `membrane lab ca --secret` prints it (tls.crt/tls.key: our CA; ca.crt: the lab CA)
  const secret = await lab.ok(['lab', 'ca', '--secret', 'tls-intercept', '-n', NS, '--cert', ICA, '--key', join(dir, 'ica.key')]);
  assert.match(secret, /kind: Secret/);
  await lab.ok(['apply', '-f', '-'], { input: `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n---\n${secret}` });
  await lab.apply([
    // an originatingTLS Secret that trusts the wrong CA (our interception CA did not sign the world hosts)
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'wrong-trust', namespace: NS }, stringData: { 'ca.crt': readFileSync(ICA, 'utf8') } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
  ]);
});
after(async () => { await lab.down(); });

async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

async function curl(path: string, opts: { method?: string; ca?: string; name?: string; resolve?: boolean } = {}): Promise<{ code: number; status: number; body: string; err: string }> {
  const name = opts.name ?? 'api.openai.com';
  const args = ['curl', '-sS', '-m', '8', '-o', '-', '-w', '\n%{http_code}', '--cacert', opts.ca ?? ICA, '-X', opts.method ?? 'GET'];
  if (opts.method === 'POST') args.push('-H', 'content-type: application/json', '-d', '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}');
  if (opts.resolve) args.push('--resolve', `${name}:443:${OPENAI}`);
  args.push(`https://${name}${path}`);
  const r = await lab.exec(NS, 'client', args, 30_000);
  const i = r.stdout.lastIndexOf('\n');
  return { code: r.code, status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, Math.max(0, i)), err: r.stderr };
}

function flowsSince(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return lab.waitFlows(['--type', 'l7', '--since', since], pred);
}
type L7 = { type?: string; http?: { method?: string; url?: string; code?: number } };
const l7 = (f: Flow) => f.l7 as L7 | undefined;

test('client-egress-l7-tls: POST /v1/chat/completions passes, GET /v1/files gets 403, over HTTPS verified by curl against the interception CA', async () => {
  await withPolicies([l7tls('tls-intercept')], async () => {
    const since = new Date().toISOString();
    const ok = await curl('/v1/chat/completions', { method: 'POST' });
    assert.equal(ok.code, 0, ok.err);
    assert.equal(ok.status, 200);
    const echoed = JSON.parse(ok.body) as { sni: string; method: string; path: string; tls: boolean; client: { address: string }; object?: string; choices?: unknown[] };
    assert.equal(echoed.object, 'chat.completion', 'the lab api.openai.com answers in OpenAI\'s shape');
    assert.equal(echoed.choices?.length, 1);
    assert.deepEqual([echoed.sni, echoed.method, echoed.path, echoed.tls], ['api.openai.com', 'POST', '/v1/chat/completions', true], 'the server got TLS with the SNI');
    assert.equal(echoed.client.address, (await lab.podIPs())[`${NS}/client`], 'the server sees the pod (transparent upstream)');
    const denied = await curl('/v1/files');
    assert.equal(denied.code, 0, denied.err);
    assert.equal(denied.status, 403);
    assert.equal(denied.body, 'Access denied\r\n');
    assert.equal((await curl('/v1/models')).status, 200);
    // the pod sees the interception leaf: trusting only the lab CA (which signed the real server) fails verification
    const labOnly = await curl('/v1/models', { ca: LABCA });
    assert.equal(labOnly.code, 60, `curl verifies against the lab CA only: ${labOnly.err}`);

    const fs = await flowsSince(since, (x) => x.filter((f) => l7(f)?.type === 'RESPONSE' && l7(f)?.http).length >= 3);
    const req = fs.find((f) => f.verdict === 'FORWARDED' && l7(f)?.type === 'REQUEST' && l7(f)?.http?.method === 'POST');
    assert.ok(req, JSON.stringify(fs.slice(-4)));
    assert.equal(l7(req)!.http!.url, 'https://api.openai.com/v1/chat/completions');
    assert.match(String(req.Summary), /\[TLS intercepted, SNI api\.openai\.com\]$/);
    const drop = fs.find((f) => f.verdict === 'DROPPED' && l7(f)?.type === 'REQUEST' && l7(f)?.http?.url === 'https://api.openai.com/v1/files');
    assert.ok(drop, 'the 403 request flow');
    const hello = fs.find((f) => /^TLS ClientHello SNI api\.openai\.com .*intercepted/.test(String(f.Summary)) && f.verdict === 'FORWARDED');
    assert.ok(hello, 'a TLS flow for the intercepted handshake');
    const filtered = await lab.flows(['--type', 'l7', '--since', since, '--http-status', '403']);
    assert.ok(filtered.some((f) => l7(f)?.http?.url === 'https://api.openai.com/v1/files'), 'hubble filters see intercepted HTTP');
  });
});

test('upstream certificate error (originatingTLS trusts the wrong CA): 502 and a DROPPED flow that says why', async () => {
  await withPolicies([l7tls('wrong-trust')], async () => {
    const since = new Date().toISOString();
    const r = await curl('/v1/chat/completions', { method: 'POST' });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.status, 502);
    const fs = await flowsSince(since, (x) => x.some((f) => l7(f)?.type === 'RESPONSE' && l7(f)?.http));
    const res = fs.find((f) => l7(f)?.type === 'RESPONSE' && l7(f)?.http);
    assert.ok(res, JSON.stringify(fs));
    assert.equal(res.verdict, 'DROPPED', JSON.stringify(res));
    assert.equal(l7(res)!.http!.code, 502);
    assert.match(String(res.Summary), /upstream_tls_error: .*(verify|certificate|issuer).*server name api\.openai\.com/i);
  });
});

test('serverNames with interception: another name on the same address is reset during the handshake', async () => {
  await withPolicies([l7tls('tls-intercept', ['api.openai.com'])], async () => {
    const since = new Date().toISOString();
    const evil = await curl('/v1/models', { name: 'evil.example', resolve: true });
    assert.equal(evil.code, 35, evil.err);
    assert.match(evil.err, /reset by peer/);
    assert.equal((await curl('/v1/models')).status, 200);
    const fs = await flowsSince(since, (x) => x.some((f) => f.verdict === 'DROPPED'));
    assert.ok(fs.some((f) => f.verdict === 'DROPPED' && /SNI evil\.example refused: policy: server name not allowed/.test(String(f.Summary))), JSON.stringify(fs.map((f) => f.Summary)));
  });
});

test('the interception Secret removed: connections are reset with a flow naming the Secret (fail closed)', async () => {
  const p = l7tls('tls-intercept');
  (p.spec as { egress: { toPorts: { terminatingTLS: { secret: { name: string } } }[] }[] }).egress[1]!.toPorts[0]!.terminatingTLS.secret.name = 'absent';
  await withPolicies([p], async () => {
    const since = new Date().toISOString();
    const r = await curl('/v1/models');
    assert.notEqual(r.code, 0);
    const fs = await flowsSince(since, (x) => x.some((f) => f.verdict === 'DROPPED'));
    assert.ok(fs.some((f) => /terminatingTLS: secret tint\/absent not found/.test(String(f.Summary))), JSON.stringify(fs.map((f) => f.Summary)));
  });
});
