/**
 * Policy audit mode (issue 14), as Cilium's: with --policy-audit-mode (MEMBRANE_POLICY_AUDIT_MODE)
 * or an endpoint's PolicyAuditMode option, a connection the policy denies — by default deny
 * (POLICY_DENIED) or by a deny rule (POLICY_DENY) — passes, and its policy verdict flow says
 * AUDIT. Turning audit off drops it again, established connections included. Audit is a
 * property of the endpoint whose policy decides: a client in audit mode never opens a server
 * that enforces, and one server in audit mode never opens another. Hubble's metrics count the
 * AUDIT verdicts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { TestLab, REPO, type Flow } from '../support/lab.ts';
import { FORBIDDEN, cnp, egressTo, ns, pod } from '../support/attack.ts';

const lab = new TestLab(`aud${process.pid % 10000}`);
let ip = { a: '', b: '', client: '' };

const policy = cnp('aud', 'web-ingress', {
  endpointSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web-a', 'web-b'] }] },
  ingress: [{ fromEndpoints: [{ matchLabels: { app: 'friend' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }, { port: '9090', protocol: 'TCP' }] }] }],
  ingressDeny: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '9090', protocol: 'TCP' }] }] }],
});

before(async () => {
  lab.env.MEMBRANE_POLICY_AUDIT_MODE = 'true';
  await lab.up();
  await lab.apply([
    ns('aud'),
    pod('aud', 'client', { app: 'client' }), pod('aud', 'friend', { app: 'friend' }),
    pod('aud', 'web-a', { app: 'web-a' }, { ports: [8080, 9090] }), pod('aud', 'web-b', { app: 'web-b' }, { ports: [8080, 9090] }),
    policy,
  ]);
  const all = await lab.podIPs();
  ip = { a: all['aud/web-a']!, b: all['aud/web-b']!, client: all['aud/client']! };
  assert.ok(ip.a && ip.b && ip.client);
});
after(async () => { await lab.down(); });

async function curl(from: string, url: string): Promise<string> {
  const r = await lab.exec('aud', from, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', url]);
  return r.stdout.trim();
}

interface EndpointRow { id: number; pod: string; policyAuditMode: boolean; options: { PolicyAuditMode: string }; policyEnforcement: { ingress: boolean } }
const endpoints = async () => (JSON.parse(await lab.ok(['get', 'endpoints', '-n', 'aud', '-o', 'json'])) as { items: EndpointRow[] }).items;
const idOf = async (p: string) => (await endpoints()).find((e) => e.pod === p)!.id;

/** Policy verdict flows of client -> ip:port since `since` with the verdict. */
async function verdicts(since: Date, verdict: string, dstIp: string, port: number): Promise<Flow[]> {
  const match = (f: Flow) => f.IP?.source === ip.client && f.IP?.destination === dstIp && f.l4?.TCP?.destination_port === port;
  const fs = await lab.waitFlows(['--from-pod', 'aud/client', '--verdict', verdict, '--since', since.toISOString(), '--last', '2000'], (xs) => xs.some(match));
  return fs.filter(match);
}

/** A keep-alive HTTP connection from the client with a request every 200 ms. */
function holdConnection(dst: string, port: number) {
  const p = lab.spawnIn('aud', 'client', [join(REPO, 'bin/node'), join(REPO, 'test/integration/support/hold.ts'), dst, String(port)], { HOLD_DURATION_MS: '60000' });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return {
    async works(): Promise<boolean> {
      for (let i = 0; i < 50 && !/ok 3\b/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
      return /ok 3\b/.test(out) && !/fail/.test(out);
    },
    async fails(ms: number): Promise<boolean> {
      for (let i = 0; i < ms / 200 && !/fail/.test(out); i++) await new Promise((r) => setTimeout(r, 200));
      return /fail/.test(out);
    },
    out: () => out,
    kill: () => p.kill('SIGKILL'),
  };
}

test('global audit mode: denied connections pass as AUDIT, default deny and deny rule alike; status and endpoints say so', async () => {
  const since = new Date();
  assert.equal(await curl('friend', `http://${ip.a}:8080/`), '200', 'positive control: the allowed peer');
  assert.equal(await curl('client', `http://${ip.a}:8080/`), '200', 'default deny, audited');
  assert.equal(await curl('client', `http://${ip.a}:9090/`), '200', 'deny rule, audited (Cilium audits deny verdicts too)');
  for (const port of [8080, 9090]) {
    const fs = await verdicts(since, 'AUDIT', ip.a, port);
    const v = fs.find((f) => f.event_type?.type === 5);
    assert.ok(v, `an AUDIT policy verdict for ${port}: ${JSON.stringify(fs.slice(-2))}`);
    assert.deepEqual([v.verdict, v.traffic_direction, v.destination?.pod_name, v.drop_reason_desc ?? 'DROP_REASON_UNKNOWN'], ['AUDIT', 'INGRESS', 'web-a', 'DROP_REASON_UNKNOWN']);
  }
  const drops = await lab.flows(['--from-pod', 'aud/client', '--verdict', 'DROPPED', '--since', since.toISOString()]);
  assert.deepEqual(drops.filter((f) => f.IP?.destination === ip.a), [], 'nothing to web-a was dropped');
  // every endpoint of the node is in audit mode (the four pods and the lab's DNS pod)
  const st = JSON.parse(await lab.ok(['status', '-o', 'json'])) as { endpoints: { total: number }; policy: { auditMode: { global: boolean; endpoints: number } } };
  assert.deepEqual(st.policy.auditMode, { global: true, endpoints: st.endpoints.total });
  assert.ok(st.endpoints.total >= 4);
  assert.match(await lab.ok(['status']), new RegExp(`audit mode Enabled \\(${st.endpoints.total} endpoints in audit mode\\)`));
  const eps = await endpoints();
  assert.deepEqual(eps.map((e) => [e.pod, e.policyAuditMode, e.options.PolicyAuditMode]).sort(), [['client', true, 'default'], ['friend', true, 'default'], ['web-a', true, 'default'], ['web-b', true, 'default']]);
  const table = await lab.ok(['get', 'endpoints', '-n', 'aud']);
  assert.match(table.split('\n').find((l) => /\bweb-a\b/.test(l))!, /Disabled \(Audit\)/, `enforced ingress in audit mode reads as cilium endpoint list shows it:\n${table}`);
  // metrics count it (Hubble's flow and policy metrics, as Cilium's): AUDIT verdicts, no drops to web-a
  const metrics = execFileSync('ip', ['netns', 'exec', `${lab.name}-node1`, 'curl', '-s', 'http://127.0.0.1:9965/metrics'], { encoding: 'utf8' });
  assert.match(metrics, /hubble_flows_processed_total\{[^}]*verdict="AUDIT"[^}]*\} [1-9]/, 'hubble_flows_processed_total counts AUDIT flows');
  assert.match(metrics, /hubble_policy_verdicts_total\{direction="ingress",match="[^"]*",action="audit"[^}]*destination="aud\/web-a"[^}]*\} [1-9]/, 'hubble_policy_verdicts_total counts audited ingress verdicts at web-a');
  assert.doesNotMatch(metrics, /hubble_drop_total\{[^}]*destination="aud\/web-a"[^}]*\}/, 'and no drop toward web-a');
});

test('global audit off (agent restarted without it): the same connections are dropped with POLICY_DENIED and POLICY_DENY', async () => {
  const pid = Number((await readFile(lab.paths.agentPidFile('node1'), 'utf8')).trim());
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 50; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 50));
  }
  delete lab.env.MEMBRANE_POLICY_AUDIT_MODE;
  await lab.up();
  await lab.settle();
  const since = new Date();
  assert.equal(await curl('friend', `http://${ip.a}:8080/`), '200', 'positive control: the allowed peer');
  assert.equal(await curl('client', `http://${ip.a}:8080/`), '000', 'default deny enforced');
  assert.equal(await curl('client', `http://${ip.a}:9090/`), '000', 'deny rule enforced');
  const d8080 = (await verdicts(since, 'DROPPED', ip.a, 8080)).find((f) => f.event_type?.type === 1);
  const d9090 = (await verdicts(since, 'DROPPED', ip.a, 9090)).find((f) => f.event_type?.type === 1);
  assert.deepEqual([d8080?.drop_reason_desc, d8080?.traffic_direction], ['POLICY_DENIED', 'INGRESS']);
  assert.deepEqual([d9090?.drop_reason_desc, d9090?.traffic_direction], ['POLICY_DENY', 'INGRESS']);
  const st = JSON.parse(await lab.ok(['status', '-o', 'json'])) as { policy: { auditMode: { global: boolean; endpoints: number } } };
  assert.deepEqual(st.policy.auditMode, { global: false, endpoints: 0 });
});

test('per-endpoint audit: web-a audited while web-b stays enforced; a client in audit mode opens nothing; turning it off cuts the audited connection', async () => {
  const a = await idOf('web-a'), client = await idOf('client');
  const out = await lab.ok(['endpoint', 'config', String(a), 'PolicyAuditMode=Enabled']);
  assert.match(out, /PolicyAuditMode\s+Enabled\s+Enabled/);
  // attacker angle: the client puts ITSELF in audit mode; the servers' ingress is theirs to decide
  await lab.ok(['endpoint', 'config', String(client), 'PolicyAuditMode=Enabled']);
  const since = new Date();
  assert.equal(await curl('client', `http://${ip.a}:8080/`), '200', 'web-a in audit mode: passes');
  assert.equal(await curl('client', `http://${ip.b}:8080/`), '000', 'web-b enforces: audit on web-a and on the client opens nothing there');
  assert.equal(await curl('friend', `http://${ip.b}:8080/`), '200', 'positive control: web-b serves the allowed peer');
  const audit = (await verdicts(since, 'AUDIT', ip.a, 8080)).find((f) => f.event_type?.type === 5);
  assert.deepEqual([audit?.verdict, audit?.destination?.pod_name], ['AUDIT', 'web-a']);
  const drop = (await verdicts(since, 'DROPPED', ip.b, 8080)).find((f) => f.event_type?.type === 1);
  assert.deepEqual([drop?.drop_reason_desc, drop?.destination?.pod_name], ['POLICY_DENIED', 'web-b']);
  const auditedToB = await lab.flows(['--from-pod', 'aud/client', '--verdict', 'AUDIT', '--since', since.toISOString()]);
  assert.deepEqual(auditedToB.filter((f) => f.IP?.destination === ip.b), [], 'no AUDIT verdict for web-b');
  const eps = await endpoints();
  assert.deepEqual(eps.map((e) => [e.pod, e.policyAuditMode, e.options.PolicyAuditMode]).sort(), [['client', true, 'Enabled'], ['friend', false, 'default'], ['web-a', true, 'Enabled'], ['web-b', false, 'default']]);

  // an audited connection stays up while audit is on, and is cut on its next packet when it goes off
  const hold = holdConnection(ip.a, 8080);
  try {
    assert.equal(await hold.works(), true, `an audited connection carries requests: ${hold.out()}`);
    const off = new Date();
    await lab.ok(['endpoint', 'config', String(a), 'PolicyAuditMode=Disabled']);
    assert.equal(await hold.fails(6000), true, `the audited connection is cut: ${hold.out()}`);
    assert.equal(await curl('client', `http://${ip.a}:8080/`), '000', 'audit off: dropped');
    const d = (await verdicts(off, 'DROPPED', ip.a, 8080)).find((f) => f.event_type?.type === 1);
    assert.deepEqual([d?.drop_reason_desc, d?.traffic_direction], ['POLICY_DENIED', 'INGRESS']);
    assert.equal(await curl('friend', `http://${ip.a}:8080/`), '200', 'positive control after');
  } finally {
    hold.kill();
  }
  // back to the agent's setting (off): still enforced
  await lab.ok(['endpoint', 'config', String(a), 'PolicyAuditMode=default']);
  assert.equal(await curl('client', `http://${ip.a}:8080/`), '000');
  const bad = await lab.run(['endpoint', 'config', String(a), 'PolicyVerdictNotification=Enabled']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /CLI_ENDPOINT_OPTION/);
  const missing = await lab.run(['endpoint', 'config', '65000', 'PolicyAuditMode=Enabled']);
  assert.match(missing.stderr, /API_ENDPOINT_NOT_FOUND/);
});

test('egress audit: the client\'s own egress drops pass as AUDIT while it is in audit mode, and drop again after', async () => {
  const client = await idOf('client');
  const egress = cnp('aud', 'client-egress', { endpointSelector: { matchLabels: { app: 'client' } }, egress: [egressTo(`${FORBIDDEN}/32`, [80])] });
  await lab.apply([egress]);
  try {
    await lab.ok(['endpoint', 'config', String(client), 'PolicyAuditMode=Enabled']);
    const since = new Date();
    assert.equal(await curl('client', `http://${FORBIDDEN}:80/`), '200', 'positive control: the allowed port');
    assert.equal(await curl('client', `http://${FORBIDDEN}:8080/`), '200', 'egress default deny, audited');
    const v = (await verdicts(since, 'AUDIT', FORBIDDEN, 8080)).find((f) => f.event_type?.type === 5);
    assert.deepEqual([v?.verdict, v?.traffic_direction, v?.source?.pod_name], ['AUDIT', 'EGRESS', 'client']);
    await lab.ok(['endpoint', 'config', String(client), 'PolicyAuditMode=Disabled']);
    const off = new Date();
    assert.equal(await curl('client', `http://${FORBIDDEN}:8080/`), '000', 'audit off: dropped');
    assert.equal(await curl('client', `http://${FORBIDDEN}:80/`), '200', 'positive control after');
    const d = (await verdicts(off, 'DROPPED', FORBIDDEN, 8080)).find((f) => f.event_type?.type === 1);
    assert.deepEqual([d?.drop_reason_desc, d?.traffic_direction], ['POLICY_DENIED', 'EGRESS']);
  } finally {
    await lab.delete([egress]);
  }
});

test('L7 under audit: as in Cilium, audit covers L3/L4 only; the HTTP proxy still answers 403 to what its rules deny', async () => {
  const a = await idOf('web-a');
  const l7 = cnp('aud', 'web-a-l7', {
    endpointSelector: { matchLabels: { app: 'web-a' } },
    ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public' }] } }] }],
  });
  await lab.apply([l7]);
  try {
    await lab.ok(['endpoint', 'config', String(a), 'PolicyAuditMode=Enabled']);
    const since = new Date();
    assert.equal(await curl('client', `http://${ip.a}:8080/public`), '200', 'positive control: the allowed request');
    assert.equal(await curl('client', `http://${ip.a}:8080/private`), '403', 'the proxy enforces its rules in audit mode');
    const redirected = (await verdicts(since, 'REDIRECTED', ip.a, 8080)).find((f) => f.event_type?.type === 5);
    assert.equal(redirected?.verdict, 'REDIRECTED', 'the connection was redirected, not audited');
  } finally {
    await lab.ok(['endpoint', 'config', String(a), 'PolicyAuditMode=default']);
    await lab.delete([l7]);
  }
});
