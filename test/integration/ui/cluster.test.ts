/**
 * The web UI on a cluster, as a user starts it: `membrane up --nodes 3`, then `membrane ui`
 * (the real command) reads every node's flows through the lab's Hubble Relay (mutual TLS). A
 * client on node1 reaches a server on node2; an intruder on node3 is dropped by the server's
 * policy. The map shows both edges with the destination's verdict (node3 forwarded the SYN out,
 * node2 dropped it: the edge reads dropped), one card per workload whichever node reported it;
 * the intruder edge's why names the policy's default deny with file:line; the server's policy
 * view comes from node2's agent; the node filter keeps one node's flows; the why of a toFQDNs
 * connection on node3 comes from node3's agent, which learnt the address. `membrane up` prints the
 * UI's address, 127.0.0.1:12000, which `membrane ui` takes by default.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { skipUnless } from '../../support/requirements.ts';
import { until } from '../../support/until.ts';
import { TestLab, REPO } from '../support/lab.ts';
import { callAgent } from '../../../src/agent/api-client.ts';
import { launchChromium, type LaunchedBrowser } from './browser.ts';

const lab = new TestLab(`uicl${process.pid % 10000}`);
// any free Relay port: labs run side by side
Object.assign(lab.env, { MEMBRANE_HUBBLE_RELAY_PORT: '0' });
const skip = skipUnless('root', 'etcd');
let ui: ChildProcess | undefined;
let url = '';
let b: LaunchedBrowser | undefined;
let page: Page;
const pageErrors: string[] = [];

const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'uc' } };
const pod = (name: string, nodeName: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'uc', labels: { app: name } },
  spec: { nodeName, containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
});
const policy = {
  apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'server-from-client', namespace: 'uc' },
  spec: { endpointSelector: { matchLabels: { app: 'server' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'client' } }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }] },
};

async function curl(from: string, ip: string, maxTime = 3): Promise<string> {
  return (await lab.exec('uc', from, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', String(maxTime), `http://${ip}:8080/`])).stdout.trim();
}

before(async () => {
  if (skip) return;
  const up = await lab.run(['up', '--nodes', '3'], { timeoutMs: 300_000 });
  assert.equal(up.code, 0, up.stderr);
  // `membrane up` tells where the UI is: Hubble UI's address, which `membrane ui` takes by default
  assert.match(up.stderr, /UI: `membrane ui` serves it at http:\/\/127\.0\.0\.1:12000/);
  const help = await lab.ok(['ui', '--help']);
  assert.match(help, /--address <ip>[\s\S]*default: "127\.0\.0\.1"[\s\S]*--port <n>[\s\S]*default: "12000"/);
  await lab.apply([ns]);
  await lab.apply([pod('client', 'node1'), pod('server', 'node2'), pod('intruder', 'node3'), policy]);
  let ip = '';
  await until('pods running', async () => {
    const ps = (JSON.parse(await lab.ok(['get', 'pods', '-n', 'uc', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { phase?: string; podIP?: string } }[] }).items;
    ip = ps.find((p) => p.metadata.name === 'server')?.status?.podIP ?? '';
    return ps.length === 3 && ps.every((p) => p.status?.phase === 'Running' && p.status.podIP);
  }, 120_000);
  await until('the client reaches the server across nodes, the intruder does not', async () => (await curl('client', ip)) === '200' && (await curl('intruder', ip, 2)) === '000', 60_000);
  // the real command, as a user runs it: it finds the Relay by itself
  ui = spawn(join(REPO, 'bin/membrane'), ['ui', '--port', '0'], { env: lab.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  ui.stdout!.on('data', (c: Buffer) => (out += c));
  ui.stderr!.on('data', (c: Buffer) => (out += c));
  url = await until('membrane ui serves', async () => /membrane ui: (http:\/\/\S+)/.exec(out)?.[1], 60_000);
  assert.match(out, /flows of every node through the Relay 127\.0\.0\.1:\d+/);
  b = await launchChromium({ width: 1440, height: 900 });
  page = await b.context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await b?.close();
  if (ui?.pid && ui.exitCode === null) {
    ui.kill('SIGTERM');
    await new Promise((r) => ui!.once('exit', r));
  }
  await lab.down();
});

const edge = (from: string, to: string) => page.locator(`g.edge[aria-label^="${from} to ${to}, 8080/TCP"]`);

test('through the Relay: every node\'s flows on one map, the intruder\'s edge dropped by the server\'s node', { skip }, async () => {
  await page.goto(url);
  await page.waitForSelector('body[data-loaded]', { timeout: 30_000 });
  assert.match((await page.locator('.brand .where').textContent())!, /Relay \(3 nodes\)/);
  await edge('client', 'server').waitFor({ timeout: 20_000 });
  await edge('intruder', 'server').waitFor({ timeout: 20_000 });
  assert.equal(await edge('client', 'server').getAttribute('data-verdict'), 'forwarded');
  assert.equal(await edge('intruder', 'server').getAttribute('data-verdict'), 'dropped', 'node3 forwarded the SYN out; node2 dropped it');
  for (const name of ['client', 'server', 'intruder']) assert.equal(await page.locator(`g.card[aria-label^="${name}, uc · Pod"]`).count(), 1, `one ${name} card`);
  assert.equal(await page.locator('g.card[aria-label^="identity "]').count(), 0, 'no card for a pod known by its identity alone');
  await page.screenshot({ path: join(REPO, 'dist/test-artifacts/ui/cluster-map.png') });
});

test('why on a cluster: the intruder edge names the default deny with file:line; the server\'s policy comes from node2', { skip }, async () => {
  await edge('intruder', 'server').locator('.edge-label').click();
  const why = page.locator('[data-testid="edge-detail"] [data-testid="why"]').first();
  await why.waitFor({ timeout: 20_000 });
  assert.equal(await why.locator('[data-testid="why-verdict"]').textContent(), 'DROPPED');
  assert.match((await why.locator('[data-testid="default-deny-by"]').textContent())!, /default deny from CiliumNetworkPolicy uc\/server-from-client .*\.yaml:\d+/);
  assert.match((await why.locator('[data-testid="suggestion-yaml"]').textContent())!, /fromEndpoints:[\s\S]*app: intruder[\s\S]*port: "8080"/);
  await page.locator('g.card[aria-label^="server, uc"]').click();
  const pv = page.locator('[data-testid="policy-view"]');
  await pv.waitFor({ timeout: 20_000 });
  assert.match((await pv.locator('[data-testid="selecting-policy"]').allTextContents()).join('\n'), /uc\/server-from-client/);
  assert.match((await pv.locator('[data-testid="effective-ingress"]').textContent())!, /default deny[\s\S]*8080\/TCP[\s\S]*app=client/);
});

test('the node filter keeps one node\'s flows', { skip }, async () => {
  await page.fill('[data-testid="filter-node"]', 'node3');
  await page.click('.filters button[type="submit"]');
  await until('node3 flows listed', async () => (await page.locator('[data-testid="flows-body"] .row').count()) > 0 || undefined, 30_000);
  await page.locator('[data-testid="flows-body"] .row').first().click();
  assert.match((await page.locator('[data-testid="flow-dict"]').textContent({ timeout: 10_000 }))!, /NODE: node3/);
  // node3 holds the intruder only: the client↔server connection is not on its map
  await page.waitForSelector('body[data-loaded]', { timeout: 30_000 });
  assert.equal(await edge('client', 'server').count(), 0);
  assert.deepEqual(pageErrors, []);
});

test('why asks the node that made the verdict: a toFQDNs allow on node3 is explained by node3, which learnt the address', { skip }, async () => {
  const fq = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'fq', namespace: 'uc', labels: { app: 'fq' } },
    spec: { nodeName: 'node3', containers: [{ name: 'c', image: 'curlimages/curl' }] },
  };
  const cnp = {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'fq-openai', namespace: 'uc' },
    spec: {
      endpointSelector: { matchLabels: { app: 'fq' } },
      egress: [
        { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
        { toFQDNs: [{ matchName: 'api.openai.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] },
      ],
    },
  };
  await lab.apply([fq, cnp]);
  try {
    // the pod resolves the name through node3's DNS proxy and connects: node3 learnt the address
    const ip = await until('fq reaches api.openai.com', async () => {
      const [code, addr] = (await lab.exec('uc', 'fq', ['curl', '-sk', '-o', '/dev/null', '-w', '%{http_code} %{remote_ip}', '-m', '5', 'https://api.openai.com/'])).stdout.trim().split(' ');
      return code === '200' ? addr : undefined;
    }, 60_000);
    const q = { from: 'uc/fq', to: ip, port: 443, protocol: 'TCP' };
    const why = await fetch(new URL('/api/v1/why', url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(q) });
    assert.equal(why.status, 200);
    const res = (await why.json()) as { trace: { verdict: string; egress: { rules: { policy: string }[] } }; text: string };
    assert.equal(res.trace.verdict, 'FORWARDED', res.text);
    assert.deepEqual(res.trace.egress.rules.map((r) => r.policy), ['uc/fq-openai']);
    // node1, the UI's first agent, never resolved the name: asked instead, it would have said default deny
    const node1 = await callAgent<{ trace: { verdict: string } }>(lab.paths.agentSocket('node1'), 'POST', '/v1/policy/trace', q);
    assert.equal(node1.trace.verdict, 'DROPPED');
  } finally {
    await lab.delete([cnp, fq]);
  }
});
