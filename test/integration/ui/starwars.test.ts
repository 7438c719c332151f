/**
 * The web UI on Cilium's Star Wars demo, in Debian's chromium: a real lab (rule1 with its L7
 * part), real traffic, the real UI server over the node's hubble socket and agent. The map shows
 * tiefighter → deathstar (HTTP, forwarded, with the denied PUT) and xwing → deathstar (dropped);
 * the xwing edge's "why" names rule1's default deny with file:line and a suggested rule that the
 * trace engine checks; the flows table filters by verdict and updates live; a workload shows its
 * policy; the map updates in place (counts grow, cards stay put); axe-core finds nothing at
 * 1366x768 with the why panel and a flow open; the suggested rules, applied in the lab, let
 * exactly that traffic pass (and nothing beside it). Screenshots go to dist/test-artifacts/ui
 * (and to docs/ui with MEMBRANE_UI_SCREENSHOTS=docs).
 * Beside it, the attacker's view of the UI server: other Hosts, other origins, write routes,
 * smuggled `with` resources and paths outside the bundle are all refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { create, toBinary } from '@bufbuild/protobuf';
import { GetFlowsRequestSchema } from '../../../src/hubble/gen/observer/observer_pb.js';
import { FlowFilterSchema } from '../../../src/hubble/gen/flow/flow_pb.js';
import { TestLab, REPO } from '../support/lab.ts';
import { createUiServer, type UiServer } from '../../../src/ui/server.ts';
import { launchChromium, type LaunchedBrowser } from './browser.ts';

const lab = new TestLab(`uisw${process.pid % 10000}`);
const EX = join(REPO, 'examples/starwars');
const URL_BASE = 'http://deathstar.default.svc.cluster.local';
const ARTIFACTS = join(REPO, 'dist/test-artifacts/ui');
const DOCS = join(REPO, 'docs/ui');
let ui: UiServer;
let b: LaunchedBrowser;
let page: Page;
const pageErrors: string[] = [];

async function curl(ship: string, method: string, path: string, maxTime = 5): Promise<string> {
  const r = await lab.exec('default', ship, ['curl', '-s', '-m', String(maxTime), '-o', '/dev/null', '-X', method, '-w', '%{http_code}', `${URL_BASE}${path}`], 30_000);
  return r.stdout.trim();
}

async function shot(name: string, docsName?: string, clip?: { x: number; y: number; width: number; height: number }): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), ...(clip ? { clip } : {}) });
  if (docsName && process.env.MEMBRANE_UI_SCREENSHOTS === 'docs') {
    await mkdir(DOCS, { recursive: true });
    await page.screenshot({ path: join(DOCS, `${docsName}.png`), ...(clip ? { clip } : {}) });
  }
}

before(async () => {
  await lab.up();
  await lab.ok(['apply', '-f', join(EX, 'http-sw-app.yaml'), join(EX, 'sw_l3_l4_l7_policy.yaml')]);
  await lab.settle();
  assert.equal(await curl('tiefighter', 'POST', '/v1/request-landing'), '200');
  assert.equal(await curl('tiefighter', 'PUT', '/v1/exhaust-port'), '403');
  assert.equal(await curl('xwing', 'POST', '/v1/request-landing', 2), '000');
  const paths = lab.paths;
  ui = createUiServer({
    port: 0, observer: { kind: 'unix', path: paths.hubbleSocket('node1') }, agentSocket: paths.agentSocket('node1'),
    assetsDir: join(REPO, 'dist/ui'), labels: { lab: lab.name, node: 'node1' },
  });
  await ui.start();
  b = await launchChromium({ width: 1440, height: 900 });
  page = await b.context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await b?.close();
  await ui?.stop();
  await lab.down();
});

const edge = (from: string, to: string) => `g.edge[aria-label^="${from} to ${to}, 80/TCP"]`;

test('the map shows tiefighter → deathstar (HTTP, forwarded, the denied PUT) and xwing → deathstar (dropped)', async () => {
  await page.goto(ui.url());
  await page.waitForSelector('body[data-loaded]', { timeout: 20_000 });
  const tie = page.locator(edge('tiefighter', 'deathstar'));
  await tie.waitFor({ timeout: 10_000 });
  const tieLabel = (await tie.getAttribute('aria-label'))!;
  assert.match(tieLabel, /80\/TCP, HTTP, forwarded, [1-9]\d* forwarded, [1-9]\d* dropped/);
  assert.match(tieLabel, /denied PUT \/v1\/exhaust-port/);
  assert.equal(await tie.getAttribute('data-verdict'), 'forwarded');
  assert.match((await tie.textContent())!, /✗ PUT \/v1\/exhaust-port 403/);
  const xw = page.locator(edge('xwing', 'deathstar'));
  assert.equal(await xw.getAttribute('data-verdict'), 'dropped');
  assert.match((await xw.getAttribute('aria-label'))!, /, dropped, 0 forwarded, [1-9]\d* dropped/);
  // the deathstar is one card for its Deployment's two pods
  assert.equal(await page.locator('g.card[aria-label^="deathstar, default · Deployment"]').count(), 1);
  await shot('map', 'map', { x: 0, y: 0, width: 1440, height: 560 });
});

test('the map updates live in place: the xwing edge\'s drops grow, no card moves', async () => {
  const where = () => page.$$eval('g.card', (els) => els.map((e) => `${e.getAttribute('data-node')}@${e.getAttribute('transform')}`).sort());
  const drops = async () => Number(/, (\d+) dropped/.exec((await page.locator(edge('xwing', 'deathstar')).getAttribute('aria-label'))!)![1]);
  const before = await where();
  const n = await drops();
  assert.equal(await curl('xwing', 'POST', '/v1/request-landing', 2), '000');
  for (let i = 0; i < 60 && (await drops()) <= n; i++) await page.waitForTimeout(250);
  assert.ok((await drops()) > n, 'the new drop is counted without a reload');
  assert.deepEqual(await where(), before, 'cards keep their places');
});

test('clicking the xwing edge: default deny by rule1 with file:line, and a checked suggested rule', async () => {
  await page.locator(edge('xwing', 'deathstar')).locator('.edge-label').click();
  const why = page.locator('[data-testid="edge-detail"] [data-testid="why"]').first();
  await why.waitFor({ timeout: 10_000 });
  assert.equal(await why.locator('[data-testid="why-verdict"]').textContent(), 'DROPPED');
  const dd = (await why.locator('[data-testid="default-deny-by"]').textContent())!;
  assert.match(dd, /default deny from CiliumNetworkPolicy default\/rule1/);
  assert.match(dd, /examples\/starwars\/sw_l3_l4_l7_policy\.yaml:\d+/);
  const yaml = (await why.locator('[data-testid="suggestion-yaml"]').textContent())!;
  assert.match(yaml, /kind: CiliumNetworkPolicy/);
  assert.match(yaml, /fromEndpoints:[\s\S]*class: xwing[\s\S]*port: "80"[\s\S]*protocol: TCP/);
  assert.match((await why.locator('[data-testid="suggestion-check"]').textContent())!, /trace says (FORWARDED|REDIRECTED)/);
  // the README's picture: a taller window, the panel scrolled to the answer
  await page.setViewportSize({ width: 1440, height: 1160 });
  await page.locator('[data-testid="panel"] h3').first().evaluate((h) => h.scrollIntoView({ block: 'start' }));
  await page.waitForTimeout(300);
  await shot('why', 'why', { x: 0, y: 0, width: 1440, height: 760 });
  await page.setViewportSize({ width: 1440, height: 900 });
});

test('the tiefighter edge: the PUT denied by the HTTP rules (403), the POST allowed by rule1', async () => {
  await page.locator(edge('tiefighter', 'deathstar')).locator('.edge-label').click();
  const panel = page.locator('[data-testid="edge-detail"]');
  await panel.locator('[data-testid="why-l7"]', { hasText: 'DENIED' }).first().waitFor({ timeout: 10_000 });
  await panel.locator('[data-testid="why-l7"]', { hasText: 'request-landing' }).first().waitFor({ state: 'attached', timeout: 10_000 });
  const l7 = await panel.locator('[data-testid="why-l7"]').allTextContents();
  assert.ok(l7.some((t) => /DENIED \(HTTP 403\)/.test(t)), l7.join(' | '));
  assert.ok(l7.some((t) => /allowed by .*POST.*request-landing.*rule1/.test(t)), l7.join(' | '));
});

test('keyboard: Tab reaches the map, Enter opens a card; the workload\'s policy lists rule1', async () => {
  // from the last card, Shift+Tab goes back through the map's buttons: they are in the tab order
  await page.locator('g.card').last().focus();
  assert.equal(await page.evaluate('document.activeElement?.classList.contains(\'card\')'), true, 'cards take focus');
  await page.locator('g.card[aria-label^="deathstar"]').focus();
  await page.keyboard.press('Shift+Tab');
  assert.equal(await page.evaluate('document.activeElement?.getAttribute(\'role\')'), 'button', 'Shift+Tab moves to the previous map button');
  await page.locator('g.card[aria-label^="deathstar"]').focus();
  await page.keyboard.press('Enter');
  const pv = page.locator('[data-testid="policy-view"]');
  await pv.waitFor({ timeout: 10_000 });
  assert.match((await pv.locator('[data-testid="selecting-policy"]').allTextContents()).join('\n'), /CiliumNetworkPolicy default\/rule1 .*sw_l3_l4_l7_policy\.yaml:\d+/);
  assert.match((await pv.locator('[data-testid="effective-ingress"]').textContent())!, /default deny[\s\S]*allow[\s\S]*80\/TCP[\s\S]*org=empire[\s\S]*HTTP: POST \/v1\/request-landing/);
  await page.keyboard.press('Escape');
});

test('the flows table filters by verdict and updates live', async () => {
  await page.selectOption('[data-testid="verdict"]', 'DROPPED');
  const verdicts = async () => page.$$eval('[data-testid="flows-body"] .row .c-verdict', (els) => els.map((e) => e.textContent));
  // the filter restarts the stream: the old rows and body[data-loaded] go only after the next render,
  // so wait for the table itself to hold the filtered rows
  let first: (string | null)[] = [];
  for (let i = 0; i < 80; i++) {
    first = await verdicts();
    if (first.length > 0 && first.every((v) => v === 'DROPPED' || v === 'DENIED')) break;
    await page.waitForTimeout(250);
  }
  assert.ok(first.length > 0, 'dropped flows are listed');
  assert.ok(first.every((v) => v === 'DROPPED' || v === 'DENIED'), first.join(','));
  const count = async () => Number((await page.locator('[data-testid="flow-count"]').textContent())!.replace(/\D/g, ''));
  const before = await count();
  // a new allowed request must not show; a new xwing attempt must, without a reload
  assert.equal(await curl('tiefighter', 'POST', '/v1/request-landing'), '200');
  assert.equal(await curl('xwing', 'POST', '/v1/request-landing', 2), '000');
  for (let i = 0; i < 60 && (await count()) <= before; i++) await page.waitForTimeout(250);
  assert.ok((await count()) > before, 'the new drop appeared without a reload');
  const now = await verdicts();
  assert.ok(now.every((v) => v === 'DROPPED' || v === 'DENIED'), now.join(','));
  await shot('flows-dropped');
  // a flow's detail: the dict fields and its why
  await page.locator('[data-testid="flows-body"] .row').first().click();
  const dict = (await page.locator('[data-testid="flow-dict"]').textContent({ timeout: 10_000 }))!;
  assert.match(dict, /SOURCE: default\/xwing:\d+[\s\S]*DESTINATION: default\/deathstar-[a-z0-9-]+:80[\s\S]*VERDICT: (DROPPED|DENIED)/);
  await page.selectOption('[data-testid="verdict"]', '');
  assert.deepEqual(pageErrors, [], 'no script errors in the page');
});

test('accessible and readable at 1366x768: axe-core finds no WCAG 2.1 AA violation with the why panel and a flow open', async () => {
  await page.setViewportSize({ width: 1366, height: 768 });
  const axe = await readFile(join(REPO, 'node_modules/axe-core/axe.min.js'), 'utf8');
  // DevTools' evaluate is not the page's script: the UI's CSP (script-src 'self') stays as it is
  await page.evaluate(axe);
  const check = async (what: string) => {
    // a string, run in the page (this file is compiled without the DOM's types)
    const v = await page.evaluate<string[]>(`axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })
      .then((r) => r.violations.map((x) => x.id + ' (' + x.help + '): ' + x.nodes.slice(0, 3).map((n) => n.target.join(' ') + ' ' + (n.failureSummary || '')).join(' | ')))`);
    assert.deepEqual(v, [], `${what}: ${v.join('\n')}`);
  };
  await page.locator(edge('xwing', 'deathstar')).locator('.edge-label').click();
  await page.locator('[data-testid="edge-detail"] [data-testid="suggestion-yaml"]').waitFor({ timeout: 10_000 });
  await check('the map and the why panel');
  await page.locator('[data-testid="flows-body"] .row').first().click();
  await page.locator('[data-testid="flow-dict"]').waitFor({ timeout: 10_000 });
  await check('a flow\'s detail');
  // readable on a laptop: no sideways scrolling, the map, the panel and the table all in view
  assert.ok(await page.evaluate('document.documentElement.scrollWidth <= 1366'), 'no horizontal scroll');
  for (const sel of ['[data-testid="map"]', '[data-testid="panel"]', '[data-testid="flows-body"] .row']) {
    const box = (await page.locator(sel).first().boundingBox())!;
    assert.ok(box.x >= 0 && box.x + Math.min(box.width, 200) <= 1366 && box.y < 768 && box.height > 0, `${sel} in view: ${JSON.stringify(box)}`);
  }
  await shot('laptop-1366x768');
  await page.setViewportSize({ width: 1440, height: 900 });
});

function raw(method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  const u = new URL(ui.url());
  return new Promise((res, rej) => {
    const req = request({ host: u.hostname, port: Number(u.port), method, path, headers }, (r) => {
      let text = '';
      r.on('data', (c: Buffer) => (text += c));
      r.on('end', () => res({ status: r.statusCode ?? 0, text }));
    });
    req.on('error', rej);
    req.end(body);
  });
}

test('attacker: other Hosts, other origins, write routes, smuggled resources and stray paths are refused', async () => {
  const host = new URL(ui.url()).host;
  const why = JSON.stringify({ from: 'default/xwing', to: 'default/deathstar', port: 80, protocol: 'TCP' });
  // positive control
  const ok = await raw('POST', '/api/v1/why', { host, 'content-type': 'application/json', origin: `http://${host}` }, why);
  assert.equal(ok.status, 200);
  assert.equal((JSON.parse(ok.text) as { trace: { verdict: string } }).trace.verdict, 'DROPPED');
  assert.equal((await raw('GET', '/', { host: `evil.example:${new URL(ui.url()).port}` })).status, 421, 'DNS rebinding: a foreign Host');
  assert.equal((await raw('POST', '/api/v1/why', { host, 'content-type': 'application/json', origin: 'http://evil.example' }, why)).status, 403);
  assert.equal((await raw('POST', '/api/v1/why', { host, 'content-type': 'text/plain' }, why)).status, 415, 'a form-able content type');
  const smuggled = await raw('POST', '/api/v1/why', { host, 'content-type': 'application/json' }, JSON.stringify({ ...JSON.parse(why), with: [{ kind: 'CiliumNetworkPolicy' }] }));
  assert.equal(smuggled.status, 400);
  assert.match(smuggled.text, /UI_BAD_REQUEST/);
  for (const p of ['/api/v1/apply', '/api/v1/delete', '/v1/apply']) assert.equal((await raw('POST', p, { host, 'content-type': 'application/json' }, '{"resources":[]}')).status, 404, p);
  for (const p of ['/../package.json', '/%2e%2e/package.json', '/assets/../../package.json', '/src/main.tsx']) assert.equal((await raw('GET', p, { host })).status, 404, p);
  const big = await raw('POST', '/api/v1/why', { host, 'content-type': 'application/json' }, `{"from":"${'a'.repeat(70_000)}"}`);
  assert.equal(big.status, 413);
  // the Observer relay: gRPC-web in, the upstream's answer (and its validation) out; nothing else
  const grpcWeb = { host, 'content-type': 'application/grpc-web+proto' };
  const status = await rawBytes('/observer.Observer/ServerStatus', grpcWeb, frame(new Uint8Array()));
  assert.equal(status.status, 200);
  assert.match(status.body.toString('latin1'), /grpc-status: 0\r\n/);
  const flows = await rawBytes('/observer.Observer/GetFlows', grpcWeb, frame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 5n, whitelist: [create(FlowFilterSchema, { sourcePod: ['default/xwing'] })] }))));
  assert.match(flows.body.toString('latin1'), /grpc-status: 0\r\n/);
  assert.match(flows.body.toString('latin1'), /xwing/);
  const badFilter = await rawBytes('/observer.Observer/GetFlows', grpcWeb, frame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 5n, whitelist: [create(FlowFilterSchema, { sourcePod: [''] })] }))));
  assert.match(badFilter.body.toString('latin1') + JSON.stringify(badFilter.headers), /grpc-status(": "|: )3/, 'InvalidArgument from the upstream filter');
  assert.equal((await rawBytes('/observer.Observer/GetAgentEvents', grpcWeb, frame(new Uint8Array()))).status, 404);
  assert.equal((await rawBytes('/observer.Observer/ServerStatus', { host, 'content-type': 'application/json' }, Buffer.from('{}'))).status, 415);
});

function frame(msg: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

function rawBytes(path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const u = new URL(ui.url());
  return new Promise((res, rej) => {
    const req = request({ host: u.hostname, port: Number(u.port), method: 'POST', path, headers }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', rej);
    req.end(body);
  });
}

test('the suggested rules, applied in the lab, let exactly that traffic pass', async () => {
  const host = new URL(ui.url()).host;
  const why = async (q: object) => JSON.parse((await raw('POST', '/api/v1/why', { host, 'content-type': 'application/json' }, JSON.stringify(q))).text) as { trace: { verdict: string }; suggestion?: { yaml: string } };
  const l4 = await why({ from: 'default/xwing', to: 'default/deathstar', port: 80, protocol: 'TCP' });
  const l7 = await why({ from: 'default/tiefighter', to: 'default/deathstar', port: 80, protocol: 'TCP', http: { method: 'PUT', path: '/v1/exhaust-port', host: 'deathstar.default.svc.cluster.local' } });
  assert.equal(l7.trace.verdict, 'DROPPED');
  const file = join(await lab.dir, 'suggested.yaml');
  await writeFile(file, `${l4.suggestion!.yaml}---\n${l7.suggestion!.yaml}`);
  await lab.ok(['apply', '-f', file]);
  await lab.settle();
  assert.equal(await curl('xwing', 'POST', '/v1/request-landing'), '200', 'the dropped connection now passes');
  // the proxy lets it through to the deathstar, whose own answer to it is 503 (it explodes)
  assert.equal(await curl('tiefighter', 'PUT', '/v1/exhaust-port'), '503', 'the denied request now reaches the deathstar');
  // and nothing beside them: another path for the tiefighter, another port for the xwing
  assert.equal(await curl('tiefighter', 'PUT', '/v1/other-port'), '403');
  assert.equal((await why({ from: 'default/xwing', to: 'default/deathstar', port: 8080, protocol: 'TCP' })).trace.verdict, 'DROPPED');
  assert.equal((await why({ from: 'default/tiefighter', to: 'default/deathstar', port: 80, protocol: 'TCP', http: { method: 'DELETE', path: '/v1/exhaust-port', host: 'deathstar.default.svc.cluster.local' } })).trace.verdict, 'DROPPED');
});
