/**
 * TLS SNI enforcement in a lab (serverNames without L7 rules), the way Cilium's connectivity
 * test `client-egress-tls-sni` exercises it: the allowed name passes end to end (the pod verifies
 * the real server's certificate: nothing is decrypted), another name is reset even when it
 * resolves to the same address, wildcards follow the FQDN pattern rules, and hand-made bad
 * ClientHellos are refused (or passed when their name is allowed) without breaking the proxy.
 * The TLS proxy runs in its own supervised process (issue 14): an established TLS session through
 * it survives a kill -9 of the agent, and the restarted agent enforces the same names.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { caCertPath } from '../../../src/lab/ca.ts';

const lab = new TestLab(`tsni${process.pid % 10000}`);
const NS = 'tsni';
const OPENAI = '198.51.100.20';
let CA = '';

const cnp = (name: string, spec: object) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace: NS }, spec });
const dnsAllow = {
  toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }],
  toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }],
};

before(async () => {
  await lab.up();
  CA = caCertPath(lab.paths.stateDir);
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: NS, labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'other', namespace: NS, labels: { app: 'other' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
  ]);
});
after(async () => { await lab.down(); });

async function withPolicies(policies: object[], fn: () => Promise<void>): Promise<void> {
  await lab.apply(policies);
  try { await fn(); } finally { await lab.delete(policies); }
}

/** curl https://NAME/ from a pod; `resolve` pins the name to an address (both names on one IP). */
async function curl(pod: string, name: string, opts: { resolve?: string; path?: string } = {}): Promise<{ code: number; body: string; err: string }> {
  const args = ['curl', '-sS', '-m', '8', '--cacert', CA];
  if (opts.resolve) args.push('--resolve', `${name}:443:${opts.resolve}`);
  args.push(`https://${name}${opts.path ?? '/'}`);
  const r = await lab.exec(NS, pod, args, 30_000);
  return { code: r.code, body: r.stdout, err: r.stderr };
}

const helloFlows = (fs: Flow[]) => fs.filter((f) => String(f.Summary ?? '').startsWith('TLS ClientHello'));
async function tlsFlows(since: string, pred: (fs: Flow[]) => boolean): Promise<Flow[]> {
  return helloFlows(await lab.waitFlows(['--type', 'l7', '--since', since], (fs) => pred(helloFlows(fs))));
}

const sniPolicy = cnp('tls-sni', {
  endpointSelector: { matchLabels: { app: 'client' } },
  egress: [dnsAllow, { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: ['api.openai.com'] }] }],
});

test('tls-sni: api.openai.com passes end to end (verified by the pod, nothing decrypted); evil.example on the same address is reset', async () => {
  await withPolicies([sniPolicy], async () => {
    const since = new Date().toISOString();
    const ok = await curl('client', 'api.openai.com', { path: '/v1/models' });
    assert.equal(ok.code, 0, ok.err);
    const echoed = JSON.parse(ok.body) as { sni: string; path: string; client: { address: string } };
    assert.equal(echoed.sni, 'api.openai.com');
    assert.equal(echoed.path, '/v1/models');
    const ips = await lab.podIPs();
    assert.equal(echoed.client.address, ips[`${NS}/client`], 'the server sees the pod (transparent upstream)');
    const evil = await curl('client', 'evil.example', { resolve: OPENAI });
    assert.equal(evil.code, 35, `curl: ${evil.err}`);
    assert.match(evil.err, /Connection reset by peer/);
    const ipOnly = await curl('client', OPENAI);
    assert.notEqual(ipOnly.code, 0, 'no SNI (an IP address) is refused');
    const fs = await tlsFlows(since, (x) => x.length >= 3);
    const fwd = fs.find((f) => f.verdict === 'FORWARDED');
    assert.ok(fwd, JSON.stringify(fs));
    assert.deepEqual(fwd.destination_names, ['api.openai.com']);
    assert.equal(fwd.traffic_direction, 'EGRESS');
    assert.equal(fwd.source?.pod_name, 'client');
    const drop = fs.find((f) => f.verdict === 'DROPPED' && (f.destination_names as string[] | undefined)?.[0] === 'evil.example');
    assert.ok(drop, JSON.stringify(fs));
    assert.equal(drop.drop_reason_desc, 'POLICY_DENIED');
    assert.match(String(drop.Summary), /TLS ClientHello SNI evil\.example refused: policy: server name not allowed/);
    assert.ok(fs.some((f) => f.verdict === 'DROPPED' && /no SNI/.test(String(f.Summary))), 'the IP-only attempt is recorded');
    // observe prints it in the compact form
    const text = await lab.ok(['observe', '--type', 'l7', '--since', since]);
    assert.match(text, /l7-request DROPPED \(TLS ClientHello SNI evil\.example refused/);
  });
});

test('serverNames wildcards follow the FQDN pattern rules (*.example.com: one label; **.example.com: any depth)', async () => {
  const pol = (names: string[]) => cnp('tls-wild', {
    endpointSelector: { matchLabels: { app: 'client' } },
    egress: [dnsAllow, { toCIDR: ['203.0.113.0/24'], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: names }] }],
  });
  // Each reset must be the policy's: a DROPPED POLICY_DENIED flow naming the refused SNI.
  const refused = async (since: string, names: string[]) => {
    const drops = (fs: Flow[]) => fs.filter((f) => f.verdict === 'DROPPED');
    const fs = drops(await tlsFlows(since, (x) => names.every((n) => drops(x).some((f) => String(f.Summary).includes(`SNI ${n} refused`)))));
    for (const n of names) {
      const d = fs.find((f) => String(f.Summary).includes(`SNI ${n} refused`));
      assert.ok(d, `a refused flow for ${n}: ${fs.map((f) => f.Summary).join(' | ')}`);
      assert.equal(d.drop_reason_desc, 'POLICY_DENIED');
    }
  };
  await withPolicies([pol(['*.example.com'])], async () => {
    const since = new Date().toISOString();
    assert.equal((await curl('client', 'www.example.com')).code, 0);
    assert.equal((await curl('client', 'a.example.com')).code, 0);
    assert.equal((await curl('client', 'example.com')).code, 35, '*.x needs one label');
    assert.equal((await curl('client', 'a.b.example.com')).code, 35, '*.x is one label only');
    await refused(since, ['example.com', 'a.b.example.com']);
  });
  await withPolicies([pol(['**.example.com'])], async () => {
    const since = new Date().toISOString();
    assert.equal((await curl('client', 'a.b.example.com')).code, 0);
    assert.equal((await curl('client', 'example.com')).code, 35);
    await refused(since, ['example.com']);
  });
});

test('bad ClientHellos from a pod: refused (reset) or passed per policy, never a crash; the proxy keeps serving', async () => {
  await withPolicies([sniPolicy], async () => {
    const since = new Date().toISOString();
    const cases = ['ok', 'tls10', 'ssl3', 'nosni', 'truncated', 'badlen', 'notls', 'sslv2', 'giant', 'big', 'illegal', 'split', 'rec3', 'half', 'ok:evil.example', 'tls10:evil.example'];
    const out = await lab.ok(['exec', '-n', NS, 'client', '--', join(REPO, 'bin/node'), join(REPO, 'test/integration/e2e/tls-probe.ts'), OPENAI, '443', cases.join(',')], { timeoutMs: 120_000 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, { result: string; first?: string }>;
    // allowed name: the hello reaches the server unchanged (it answers with a TLS record: an alert for these test ciphers)
    for (const c of ['ok', 'tls10', 'big', 'split', 'rec3']) {
      assert.equal(r[c]!.result, 'reply', `${c}: ${JSON.stringify(r[c])}`);
      assert.match(r[c]!.first!, /^1[56]03/, `${c}: a TLS record from the server`);
    }
    for (const c of ['ssl3', 'nosni', 'badlen', 'notls', 'sslv2', 'giant', 'illegal', 'ok:evil.example', 'tls10:evil.example']) {
      assert.equal(r[c]!.result, 'reset', `${c}: ${JSON.stringify(r[c])}`);
    }
    for (const c of ['truncated', 'half']) assert.notEqual(r[c]!.result, 'reply', `${c}: nothing reached the server`);
    const fs = await tlsFlows(since, (x) => x.length >= cases.length);
    const reasons = fs.filter((f) => f.verdict === 'DROPPED').map((f) => String(f.Summary));
    for (const re of [/NOT_TLS/, /SSLV2/, /TOO_LARGE/, /BAD_SNI/, /TRUNCATED/, /no SNI/, /SNI evil\.example refused/]) {
      assert.ok(reasons.some((s) => re.test(s)), `a flow matching ${re}: ${reasons.join('\n')}`);
    }
    assert.equal((await curl('client', 'api.openai.com')).code, 0, 'still serving');
  });
});

test('pods the policy does not select are not redirected; without the policy any name passes', async () => {
  await withPolicies([sniPolicy], async () => {
    assert.equal((await curl('other', 'evil.example', { resolve: OPENAI })).code, 0);
  });
  assert.equal((await curl('client', 'evil.example', { resolve: OPENAI })).code, 0);
});

test('an established TLS session through the SNI proxy survives kill -9 of the agent (the proxy runs in its own process); the restarted agent enforces the same names', async () => {
  await withPolicies([sniPolicy], async () => {
    const first = await curl('client', 'api.openai.com', { path: '/v1/models' }); // the name resolved once: its address allowed
    assert.equal(first.code, 0, first.err);
    const lastOk = (out: string) => Math.max(0, ...[...out.matchAll(/ok (\d+)/g)].map((m) => Number(m[1])));
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // one TLS session (the pod verifies api.openai.com's certificate), a request every 200 ms
    const hold = lab.spawnIn(NS, 'client', [join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), OPENAI, '443'],
      { HOLD_DURATION_MS: '60000', HOLD_TLS_NAME: 'api.openai.com', HOLD_TLS_CA: CA });
    let out = '';
    hold.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    hold.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    try {
      for (let i = 0; i < 300 && !/ok 3\b/.test(out); i++) await sleep(100);
      assert.match(out, /ok 3\b/, `the TLS session carries requests before the kill: ${out.slice(-300)}`);
      const proxyPid = (await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.pid'), 'utf8')).trim();
      const pidFile = lab.paths.agentPidFile('node1');
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      process.kill(pid, 'SIGKILL');
      const alive = (p: number) => { try { process.kill(p, 0); return true; } catch { return false; } };
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
      let back = 0;
      for (let i = 0; i < 300 && !back; i++) {
        const p = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
        if (p && p !== pid && alive(p)) back = p;
        else await sleep(100);
      }
      assert.ok(back, 'the supervisor restarted the agent');
      await lab.settle();
      const atBack = lastOk(out);
      for (let i = 0; i < 100 && lastOk(out) < atBack + 5; i++) await sleep(100);
      assert.doesNotMatch(out, /fail/, `the TLS session was never cut: ${out.slice(-300)}`);
      assert.ok(lastOk(out) >= atBack + 5, `the session carries requests after the restart (${atBack} -> ${lastOk(out)})`);
      assert.equal((await readFile(join(lab.paths.nodeDir('node1'), 'l7proxy.pid'), 'utf8')).trim(), proxyPid, 'the proxy process ran on across the agent kill');
      // the restarted agent enforces the same names: the other name on the same address is reset, the allowed one passes
      const evil = await curl('client', 'evil.example', { resolve: OPENAI });
      assert.equal(evil.code, 35, `curl: ${evil.err}`);
      const again = await curl('client', 'api.openai.com', { path: '/v1/models' });
      assert.equal(again.code, 0, again.err);
    } finally {
      hold.kill('SIGKILL');
    }
  });
});
