/**
 * Hubble Relay on a two-node lab, read with the upstream hubble CLI (v1.17.0) as Cilium users read
 * theirs: TCP 4245 on the lab host with mutual TLS (the Hubble CA, the lab's client certificate),
 * flows of both nodes merged (`observe --last`, `--node-name`), `list nodes`, `status`; refused
 * without a client certificate; a dead agent shows as unavailable while the other node's flows keep
 * coming. The Relay port is any free one (MEMBRANE_HUBBLE_RELAY_PORT=0) so labs can run side by side.
 */
import { skipUnless } from '../../support/requirements.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab } from '../support/lab.ts';
import { hubbleCli } from '../support/hubble-cli.ts';
import { hubbleTlsPaths } from '../../../src/lab/hubble-certs.ts';
import { pidsByCmdline, readPidFile } from '../../../src/sys/proc.ts';
import { supervisorFiles } from '../../../src/sys/supervise.ts';
import { rmSync } from 'node:fs';
import { until } from '../../support/until.ts';

const HUBBLE = hubbleCli();
const lab = new TestLab(`rl${process.pid % 10000}`);
Object.assign(lab.env, { MEMBRANE_HUBBLE_RELAY_PORT: '0' });
const skip = skipUnless('root', 'etcd');
const paths = lab.paths;
let relay = '';
let tlsFlags: string[] = [];

const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'rl' } };
const pod = (name: string, labels: Record<string, string>, nodeName: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'rl', labels },
  spec: { nodeName, containers: [{ name: 'c', image: 'ealen/echo-server', ports: [{ containerPort: 8080, protocol: 'TCP' }] }] },
});

function hubble(args: string[], timeout = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(HUBBLE, args, { timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
}

interface JFlow { flow?: { node_name?: string; time?: string; source?: { pod_name?: string }; destination?: { pod_name?: string } } }
async function observe(extra: string[]): Promise<JFlow[]> {
  const r = await hubble(['observe', '--server', relay, ...tlsFlags, '-o', 'jsonpb', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as JFlow).filter((f) => f.flow);
}

before(async () => {
  if (skip) return;
  await lab.ok(['up', '--nodes', '2'], { timeoutMs: 240_000 });
  relay = readFileSync(join(paths.stateDir, 'relay', 'address'), 'utf8').trim();
  const t = hubbleTlsPaths(paths.stateDir);
  tlsFlags = ['--tls', '--tls-ca-cert-files', t.caCert, '--tls-client-cert-file', t.clientCert, '--tls-client-key-file', t.clientKey, '--tls-server-name', 'relay.hubble-relay.cilium.io'];
  await lab.apply([ns]);
  await lab.apply([pod('client', { app: 'client' }, 'node1'), pod('server', { app: 'server' }, 'node2')]);
  await until('pods running', async () => {
    const ps = (JSON.parse(await lab.ok(['get', 'pods', '-n', 'rl', '-o', 'json'])) as { items: { status?: { phase?: string; podIP?: string } }[] }).items;
    return ps.length === 2 && ps.every((p) => p.status?.phase === 'Running' && p.status.podIP);
  }, 90_000);
});
after(async () => { await lab.down(); });

test('relay serves 127.0.0.1 with mutual TLS; membrane status names it', { skip }, async () => {
  assert.match(relay, /^127\.0\.0\.1:\d+$/);
  const st = await lab.ok(['status']);
  assert.match(st, new RegExp(`Hubble Relay:\\s+Ok\\s+${relay.replace(/\./g, '\\.')} mutual TLS, 2/2 nodes connected`));
});

test('hubble status and list nodes through the relay: both nodes connected', { skip }, async () => {
  const st = await until('2/2 connected', async () => {
    const r = await hubble(['status', '--server', relay, ...tlsFlags]);
    return r.code === 0 && /Connected Nodes: 2\/2/.test(r.stdout) ? r.stdout : undefined;
  });
  assert.match(st, /Healthcheck \(via .*\): Ok/);
  const ln = await hubble(['list', 'nodes', '--server', relay, ...tlsFlags]);
  assert.equal(ln.code, 0, ln.stderr);
  assert.match(ln.stdout, /node1\s+Connected/);
  assert.match(ln.stdout, /node2\s+Connected/);
  const js = await hubble(['list', 'nodes', '--server', relay, ...tlsFlags, '-o', 'json']);
  assert.equal(js.code, 0, js.stderr);
  const nodes = jsonValues(js.stdout) as { name: string; address: string; state: string; tls?: { enabled?: boolean; server_name?: string } }[];
  assert.deepEqual(nodes.map((n) => [n.name, n.address, n.state]).sort(), [['node1', '192.0.2.1:4244', 'NODE_CONNECTED'], ['node2', '192.0.2.2:4244', 'NODE_CONNECTED']]);
  assert.deepEqual(nodes.map((n) => n.tls?.server_name).sort(), ['node1.default.hubble-grpc.cilium.io', 'node2.default.hubble-grpc.cilium.io']);
});

/** hubble prints a JSON array or one value per line, depending on the command */
function jsonValues(text: string): unknown[] {
  const t = text.trim();
  if (t.startsWith('[')) return JSON.parse(t) as unknown[];
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inStr = false;
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    if (inStr) { if (c === '\\') i++; else if (c === '"') inStr = false; continue; }
    if (c === '"') inStr = true;
    else if (c === '{' || c === '[') { if (depth++ === 0) start = i; }
    else if (c === '}' || c === ']') { if (--depth === 0) out.push(JSON.parse(t.slice(start, i + 1))); }
  }
  return out;
}

test('observe --last merges both nodes in time order; --node-name filters; membrane observe uses the relay', { skip }, async () => {
  const ips = await lab.podIPs();
  const probe = await lab.probe('rl', 'client', [`${ips['rl/server'] ?? Object.values(ips).find((v) => v.startsWith('10.244.2.'))}:8080/tcp`]);
  assert.deepEqual(Object.values(probe), [true]);
  const flows = await until('flows of both nodes', async () => {
    const fs = await observe(['--last', '200']);
    const nodes = new Set(fs.map((f) => f.flow!.node_name));
    return nodes.has('node1') && nodes.has('node2') ? fs : undefined;
  });
  const times = flows.map((f) => Date.parse(f.flow!.time!));
  assert.deepEqual(times, [...times].sort((a, b) => a - b), 'flows in time order');
  assert.ok(flows.every((f) => f.flow!.node_name === 'node1' || f.flow!.node_name === 'node2'));
  const only2 = await observe(['--last', '50', '--node-name', 'node2']);
  assert.ok(only2.length > 0);
  assert.ok(only2.every((f) => f.flow!.node_name === 'node2'));
  // membrane observe: the relay (both nodes) unless --node says which
  const mine = await lab.ok(['observe', '--last', '200', '-o', 'json']);
  const mineNodes = new Set(mine.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { flow?: { node_name?: string } }).flow?.node_name).filter(Boolean));
  assert.deepEqual([...mineNodes].sort(), ['node1', 'node2']);
  const mine2 = await lab.ok(['observe', '--last', '50', '--node', 'node2', '-o', 'json']);
  const mine2Nodes = new Set(mine2.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { flow?: { node_name?: string } }).flow?.node_name).filter(Boolean));
  assert.deepEqual([...mine2Nodes], ['node2']);
});

test('observe --follow through the relay: new flows of both nodes as they happen (bounded)', { skip }, async () => {
  const child = spawn(HUBBLE, ['observe', '--server', relay, ...tlsFlags, '--follow', '-o', 'jsonpb', '--namespace', 'rl'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const seen = new Set<string>();
  let buf = '';
  const got = new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        const n = (JSON.parse(l) as JFlow).flow?.node_name;
        if (n) seen.add(n);
      }
      if (seen.has('node1') && seen.has('node2')) resolve();
    });
  });
  try {
    await new Promise((r) => setTimeout(r, 1500));
    const ips = await lab.podIPs();
    const target = `${Object.entries(ips).find(([k]) => k.endsWith('/server'))![1]}:8080/tcp`;
    assert.deepEqual(Object.values(await lab.probe('rl', 'client', [target])), [true]);
    await Promise.race([got, new Promise((_, rej) => setTimeout(() => rej(new Error(`follow saw only ${[...seen].join(',') || 'nothing'}`)), 20_000))]);
  } finally {
    child.kill('SIGTERM');
  }
  assert.deepEqual([...seen].sort(), ['node1', 'node2']);
});

test('membrane lab hubble prints the relay flags', { skip }, async () => {
  const out = await lab.ok(['lab', 'hubble']);
  assert.ok(out.includes(`hubble observe --server ${relay} --tls`), out);
});

test('the relay refuses a client without a certificate (and plain text)', { skip }, async () => {
  const t = hubbleTlsPaths(paths.stateDir);
  const noCert = await hubble(['observe', '--server', relay, '--tls', '--tls-ca-cert-files', t.caCert, '--tls-server-name', 'relay.hubble-relay.cilium.io', '--last', '1'], 15_000);
  assert.notEqual(noCert.code, 0);
  assert.doesNotMatch(noCert.stdout, /node_name|->/);
  const plain = await hubble(['observe', '--server', relay, '--last', '1'], 15_000);
  assert.notEqual(plain.code, 0);
  // positive control: the same call with the client certificate answers
  assert.equal((await hubble(['observe', '--server', relay, ...tlsFlags, '--last', '1'])).code, 0);
});

test('a dead agent shows as unavailable; the other node\'s flows keep coming', { skip }, async () => {
  // the node's supervisor first (it would restart the agent within a second), then the agent
  const sup = readPidFile(supervisorFiles(paths.nodeDir('node2')).pid)!;
  process.kill(sup, 'SIGKILL');
  const pid = readPidFile(paths.agentPidFile('node2'))!;
  process.kill(pid, 'SIGKILL');
  const st = await until('node2 unavailable', async () => {
    const r = await hubble(['status', '--server', relay, ...tlsFlags]);
    return /Connected Nodes: 1\/2/.test(r.stdout) ? r.stdout : undefined;
  }, 20_000);
  assert.match(st, /Unavailable Nodes: 1\s+- node2/);
  const ln = await hubble(['list', 'nodes', '--server', relay, ...tlsFlags]);
  assert.match(ln.stdout, /node2\s+Unavailable/);
  assert.match(ln.stdout, /node1\s+Connected/);
  const before = Date.now();
  const ips = await lab.podIPs();
  // node1's datapath and agent keep working: a new flow from the client, seen through the relay
  await lab.probe('rl', 'client', [`${Object.entries(ips).find(([k]) => k.endsWith('/server'))![1]}:8080/tcp`]);
  const fresh = await until('a new node1 flow', async () => {
    const fs = await observe(['--last', '50', '--node-name', 'node1']);
    return fs.filter((f) => Date.parse(f.flow!.time!) >= before - 1000).length ? fs : undefined;
  });
  assert.ok(fresh.every((f) => f.flow!.node_name === 'node1'));
});

test('membrane up restarts a dead relay and agent; the relay sees both nodes again', { skip }, async () => {
  const pid = readPidFile(join(paths.stateDir, 'relay', 'relay.pid'))!;
  process.kill(pid, 'SIGKILL');
  await lab.ok(['up', '--nodes', '2'], { timeoutMs: 240_000 });
  const again = readPidFile(join(paths.stateDir, 'relay', 'relay.pid'))!;
  assert.notEqual(again, pid);
  relay = readFileSync(join(paths.stateDir, 'relay', 'address'), 'utf8').trim();
  await until('2/2 connected again', async () => {
    const r = await hubble(['status', '--server', relay, ...tlsFlags]);
    return /Connected Nodes: 2\/2/.test(r.stdout) ? true : undefined;
  }, 30_000);
});

test('membrane down stops the relay even when its pid file is gone', { skip }, async () => {
  const marker = [`--id=hubble-relay`, `--state-dir=${paths.stateDir} `];
  assert.equal(pidsByCmdline(marker).length, 1);
  rmSync(join(paths.stateDir, 'relay', 'relay.pid'));
  await lab.ok(['down'], { timeoutMs: 120_000 });
  assert.deepEqual(pidsByCmdline(marker), []);
});
