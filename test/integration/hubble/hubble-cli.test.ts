/**
 * The upstream hubble CLI (v1.17.0) against a real lab node: `status`, `observe --last N -o json`
 * and `list nodes`, over the root-only unix socket and over TCP 4244 with mutual TLS (the flags
 * `membrane lab hubble --flags` prints), compared with `membrane observe` over both for the same
 * window of flows (a fixed --since/--until, so flows arriving meanwhile change nothing).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { TestLab, REPO } from '../support/lab.ts';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { hubbleCli } from '../support/hubble-cli.ts';

const lab = new TestLab(`hcl${process.pid % 10000}`);
const HUBBLE = hubbleCli();
let sock = '';
let tlsFlags: string[] = [];
let window: string[] = [];
const N = 40;

function inNode(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile('ip', ['netns', 'exec', `${lab.name}-node1`, cmd, ...args], { env: lab.env, timeout: 30_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
}

interface JsonFlow { uuid: string; verdict: string; time: string; source?: { pod_name?: string }; destination?: { pod_name?: string }; [k: string]: unknown }
const flowsOf = (stdout: string): JsonFlow[] =>
  stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { flow?: JsonFlow }).filter((x) => x.flow).map((x) => x.flow!);

before(async () => {
  await lab.up();
  sock = lab.paths.hubbleSocket('node1');
  tlsFlags = (await lab.ok(['lab', 'hubble', '--flags'])).trim().split('\n');
  await lab.apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'cli' } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'cli', labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080 }] }] } },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'cli', labels: { app: 'client' } }, spec: { containers: [{ name: 'c', image: 'curlimages/curl' }] } },
  ]);
  const ip = (await lab.podIPs())['cli/web']!;
  const since = new Date(Date.now() - 1000).toISOString();
  const r = await lab.exec('cli', 'client', ['bash', '-c', `for i in $(seq 1 12); do curl -s -o /dev/null -m 3 http://${ip}:8080/$i; done`]);
  assert.equal(r.code, 0, r.stderr);
  await new Promise((r) => setTimeout(r, 1500));
  const until = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 1100)); // the window is closed: later flows fall outside it
  window = ['--since', since, '--until', until, '--namespace', 'cli'];
});
after(async () => { await lab.down(); });

test('membrane lab hubble --flags: the hubble CLI\'s TLS flags for node1', () => {
  const st = lab.paths.stateDir;
  assert.deepEqual(tlsFlags, [
    '--server', '192.0.2.1:4244', '--tls', '--tls-ca-cert-files', `${st}/hubble-tls/ca.crt`,
    '--tls-client-cert-file', `${st}/hubble-tls/client.crt`, '--tls-client-key-file', `${st}/hubble-tls/client.key`,
    '--tls-server-name', 'node1.default.hubble-grpc.cilium.io',
  ]);
});

test('hubble status: healthy over the unix socket and over mutual TLS', async () => {
  const unix = await inNode(HUBBLE, ['status', '--server', `unix://${sock}`]);
  assert.equal(unix.code, 0, unix.stderr);
  assert.match(unix.stdout, new RegExp(`^Healthcheck \\(via unix://${sock.replaceAll('/', '\\/')}\\): Ok$`, 'm'));
  assert.match(unix.stdout, /^Current\/Max Flows: [\d,]+\/4,095 /m);
  const tls = await inNode(HUBBLE, ['status', ...tlsFlags]);
  assert.equal(tls.code, 0, tls.stderr);
  assert.match(tls.stdout, /^Healthcheck \(via 192\.0\.2\.1:4244\): Ok$/m);
  assert.match(tls.stdout, /^Current\/Max Flows: [\d,]+\/4,095 /m);
});

test('hubble list nodes: node1 connected, TLS enabled, the node address', async () => {
  for (const flags of [['--server', `unix://${sock}`], tlsFlags]) {
    const r = await inNode(HUBBLE, ['list', 'nodes', ...flags, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const nodes = JSON.parse(r.stdout) as { name: string; state: string; address: string; tls?: { enabled?: boolean; server_name?: string } }[];
    assert.equal(nodes.length, 1);
    assert.equal(nodes[0]!.name, 'node1');
    assert.equal(nodes[0]!.state, 'NODE_CONNECTED');
    assert.equal(nodes[0]!.address, '192.0.2.1:4244');
    assert.deepEqual(nodes[0]!.tls, { enabled: true, server_name: 'node1.default.hubble-grpc.cilium.io' });
    const wide = await inNode(HUBBLE, ['list', 'nodes', ...flags, '-o', 'wide']);
    assert.match(wide.stdout, /^node1\s+Connected\s+.*192\.0\.2\.1:4244\s+Enabled$/m);
  }
});

test('hubble observe --last N -o json over both transports = membrane observe over both: the same flows', async () => {
  const args = [...window, '--last', String(N), '-o', 'json'];
  const reads = {
    hubbleUnix: await inNode(HUBBLE, ['observe', '--server', `unix://${sock}`, ...args]),
    hubbleTls: await inNode(HUBBLE, ['observe', ...tlsFlags, ...args]),
    membraneUnix: await inNode(join(REPO, 'bin/membrane'), ['observe', '--server', `unix://${sock}`, ...args]),
    membraneTls: await inNode(join(REPO, 'bin/membrane'), ['observe', ...tlsFlags, ...args]),
  };
  for (const [k, r] of Object.entries(reads)) assert.equal(r.code, 0, `${k}: ${r.stderr}`);
  const flows = Object.fromEntries(Object.entries(reads).map(([k, r]) => [k, flowsOf(r.stdout)])) as Record<keyof typeof reads, JsonFlow[]>;
  const ref = flows.hubbleUnix;
  assert.equal(ref.length, N, 'the window holds at least N flows of the namespace');
  assert.ok(ref.every((f) => f.source?.pod_name === 'client' || f.destination?.pod_name === 'client' || f.source?.pod_name === 'web' || f.destination?.pod_name === 'web'));
  for (const k of ['hubbleTls', 'membraneUnix', 'membraneTls'] as const) {
    assert.deepEqual(flows[k].map((f) => f.uuid), ref.map((f) => f.uuid), `${k}: same flow IDs in the same order`);
  }
  // The JSON itself, field for field. Flow.emitter (field 41, Cilium 1.18+) is unknown to the 1.17
  // CLI, which drops it; membrane prints it.
  const strip = ({ emitter, ...rest }: JsonFlow) => { assert.deepEqual(emitter, { name: 'Hubble', version: '1.19.4' }); return rest; };
  assert.ok(ref.every((f) => !('emitter' in f)));
  assert.deepEqual(flows.membraneUnix.map(strip), ref);
  assert.deepEqual(flows.membraneTls.map(strip), ref);
  assert.deepEqual(flows.hubbleTls, ref);
});

/** Stops node1's agent and starts it again through `membrane up` with this environment. */
async function restartAgent(env: NodeJS.ProcessEnv): Promise<void> {
  const pid = Number(readFileSync(lab.paths.agentPidFile('node1'), 'utf8'));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 50));
  }
  await lab.ok(['up'], { env, timeoutMs: 180_000 });
}

test('MEMBRANE_HUBBLE_DISABLE_TLS=true serves plain text (and says so); without it, mutual TLS again', async () => {
  const plainObserve = () => inNode(HUBBLE, ['observe', '--server', '192.0.2.1:4244', '--timeout', '3s', '--last', '1', '-o', 'json']);
  assert.notEqual((await plainObserve()).code, 0, 'default: plain text refused');
  await restartAgent({ MEMBRANE_HUBBLE_DISABLE_TLS: 'true' });
  try {
    const ip = (await lab.podIPs())['cli/web']!;
    await lab.exec('cli', 'client', ['curl', '-s', '-o', '/dev/null', '-m', '3', `http://${ip}:8080/`]); // a flow in the new agent's ring
    const r = await plainObserve();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(flowsOf(r.stdout).length, 1);
    assert.match(await lab.ok(['status']), /:4244 PLAIN TEXT/);
    assert.deepEqual((await lab.ok(['lab', 'hubble', '--flags'])).trim().split('\n'), ['--server', '192.0.2.1:4244']);
    assert.match(await lab.ok(['lab', 'hubble']), /PLAIN TEXT \(MEMBRANE_HUBBLE_DISABLE_TLS=true\)/);
    const nodes = JSON.parse((await inNode(HUBBLE, ['list', 'nodes', '--server', `unix://${sock}`, '-o', 'json'])).stdout) as { tls?: { enabled?: boolean } }[];
    assert.equal(nodes[0]!.tls?.enabled ?? false, false);
  } finally {
    await restartAgent({ MEMBRANE_HUBBLE_DISABLE_TLS: '' });
  }
  assert.notEqual((await plainObserve()).code, 0, 'plain text refused again');
  assert.match(await lab.ok(['status']), /:4244 mutual TLS \(node1\.default\.hubble-grpc\.cilium\.io/);
  const tls = await inNode(HUBBLE, ['observe', ...tlsFlags, '--last', '1', '-o', 'json']);
  assert.equal(tls.code, 0, tls.stderr);
});

test('bad setting: MEMBRANE_HUBBLE_DISABLE_TLS=yes stops `membrane up` with a clear error before any agent starts', async () => {
  const pid = Number(readFileSync(lab.paths.agentPidFile('node1'), 'utf8'));
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200; i++) {
    try { process.kill(pid, 0); } catch { break; }
    await new Promise((r) => setTimeout(r, 50));
  }
  const bad = await lab.run(['up'], { env: { MEMBRANE_HUBBLE_DISABLE_TLS: 'yes' }, timeoutMs: 180_000 });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /error: CONFIG_INVALID: hubbleDisableTls \(--hubble-disable-tls \/ MEMBRANE_HUBBLE_DISABLE_TLS\): "yes" is not true or false/);
  assert.ok(!existsSync(lab.paths.agentPidFile('node1')), 'no agent was started');
  // control: the same lab comes up with the setting unset, serving mutual TLS
  await lab.ok(['up'], { env: { MEMBRANE_HUBBLE_DISABLE_TLS: '' }, timeoutMs: 180_000 });
  assert.match(await lab.ok(['status']), /:4244 mutual TLS/);
});
