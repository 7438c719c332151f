/**
 * `membrane lab metrics`: the loopback forwarder a host-side Prometheus scrapes, in front of the
 * real expositions (Hubble's and the agent's, served on their root-only unix sockets as an agent
 * does), in a temporary state directory.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { createHubbleMetrics } from '../../../src/hubble/metrics/index.ts';
import { createAgentMetrics, metricsSocketPaths } from '../../../src/agent/metrics.ts';

const BIN = join(import.meta.dirname, '../../../bin/membrane');
const state = mkdtempSync(join(tmpdir(), 'lab-metrics-'));
const env = { ...process.env, MEMBRANE_LAB: `lm${process.pid % 10000}`, MEMBRANE_STATE_DIR: state };
const PORT = 21965 + (process.pid % 1000);
const servers: Server[] = [];
let fwd: ChildProcess | undefined;

function get(path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // http.request sends the path as written (fetch would normalise ../)
    const req = http.request({ host: '127.0.0.1', port: PORT, path, method, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  const dir = join(state, 'nodes', 'node1');
  mkdirSync(dir, { recursive: true });
  const socks = metricsSocketPaths(dir);
  const hubble = createHubbleMetrics('flow drop');
  const agent = createAgentMetrics({ policies: async () => 2, policyRevision: () => 5, endpoints: () => [{ id: 1, state: 'ready' }], identities: () => [], mapState: () => undefined, pinRoot: '/nonexistent' });
  servers.push(await hubble.serveUnix(socks.hubble), await agent.serveUnix(socks.agent));
  fwd = spawn(BIN, ['lab', 'metrics', '--serve', `127.0.0.1:${PORT}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    fwd!.stdout!.once('data', () => resolve());
    fwd!.once('exit', (c) => reject(new Error(`forwarder exited ${c}`)));
  });
});
after(() => {
  if (fwd?.pid && fwd.exitCode === null) fwd.kill('SIGTERM');
  for (const s of servers) s.close();
  rmSync(state, { recursive: true, force: true });
});

test('the expositions sit on root-only sockets', () => {
  const socks = metricsSocketPaths(join(state, 'nodes', 'node1'));
  for (const p of [socks.hubble, socks.agent]) assert.equal(statSync(p).mode & 0o777, 0o600, p);
});

test('the forwarder serves each node\'s Hubble and agent metrics on loopback', async () => {
  const h = await get('/metrics');
  assert.equal(h.status, 200);
  assert.match(h.body, /^# TYPE hubble_flows_processed_total counter$/m);
  const a = await get('/agent/metrics');
  assert.equal(a.status, 200);
  assert.match(a.body, /^cilium_policy 2$/m);
  assert.match((await get('/nodes/node1/agent/metrics')).body, /^cilium_endpoint 1$/m);
  const down = await get('/nodes/node2/metrics');
  assert.equal(down.status, 502);
  assert.match(down.body, /node node2: no metrics .*is the lab up\?/);
});

test('the attacker\'s requests: other paths, methods and node names that climb out are not forwarded', async () => {
  for (const path of ['/', '/metricsx', '/nodes/../metrics', '/nodes/..%2F..%2Fx/metrics', '/nodes/./agent/metrics', '/nodes/node1/../../agent/metrics', '/nodes//metrics']) {
    const r = await get(path);
    assert.equal(r.status, 404, path);
    assert.doesNotMatch(r.body, /hubble_|cilium_/, path);
  }
  assert.equal((await get('/metrics', 'POST')).status, 404);
});

test('--serve takes loopback addresses only; without --serve it prints the sockets and a scrape config', () => {
  for (const addr of ['0.0.0.0:9965', '192.0.2.1:9965', '127.0.0.1:70000']) {
    const r = spawnSync(BIN, ['lab', 'metrics', '--serve', addr], { env, encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(r.status, 0, addr);
    assert.match(r.stderr, /LAB_METRICS_LISTEN/, addr);
  }
  const r = spawnSync(BIN, ['lab', 'metrics'], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.includes(metricsSocketPaths(join(state, 'nodes', 'node1')).hubble), r.stdout);
  assert.match(r.stdout, /job_name: cilium-agent\n {4}metrics_path: \/agent\/metrics/);
});
