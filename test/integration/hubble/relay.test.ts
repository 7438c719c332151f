/**
 * Hubble Relay against two real Observer servers (src/hubble, mutual TLS on loopback): discovery
 * through Peer.Notify of one of them, flows of both merged in time order (non-follow and follow),
 * node_name on every flow, filters passed through, ServerStatus/GetNodes counting connected and
 * unavailable nodes, a stopped node reported as unavailable while the other keeps serving, and the
 * Relay's own port refusing clients without a certificate signed by the Hubble CA.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHubble, type Hubble } from '../../../src/hubble/index.ts';
import { createRelay, type Relay } from '../../../src/hubble/relay/relay.ts';
import { hubbleServerName } from '../../../src/hubble/tls.ts';
import { observerClient } from '../../../src/hubble/client.ts';
import { ensureHubbleCerts, type HubbleTlsPaths } from '../../../src/lab/hubble-certs.ts';
import { NodeState } from '../../../src/hubble/gen/relay/relay_pb.js';
import type { GetFlowsResponse } from '../../../src/hubble/gen/observer/observer_pb.js';
import { ev, resolver } from '../../unit/hubble/fixtures.ts';
import { until } from '../../support/until.ts';

let dir: string;
let pki: HubbleTlsPaths;
const nodes: Record<string, Hubble> = {};
let relay: Relay;
/** the cluster as the agents know it (their kvstore nodes): Peer.Notify serves it */
const ports: Record<string, number> = {};
let port: number;
const RELAY_NAME = 'relay.hubble-relay.cilium.io';

const client = (withCert = true) => observerClient({ kind: 'tcp', host: '127.0.0.1', port }, {
  caFiles: [pki.caCert], serverName: RELAY_NAME, ...(withCert ? { certFile: pki.clientCert, keyFile: pki.clientKey } : {}),
});
const flowsOf = (rs: GetFlowsResponse[]) => rs.flatMap((r) => (r.responseTypes.case === 'flow' ? [r.responseTypes.value] : []));
const ms = (t: { seconds: bigint; nanos: number } | undefined) => Number(t!.seconds) * 1000 + t!.nanos / 1e6;

async function collect(req: Parameters<ReturnType<typeof client>['getFlows']>[0]): Promise<GetFlowsResponse[]> {
  const out: GetFlowsResponse[] = [];
  for await (const r of client().getFlows(req, { timeoutMs: 10_000 })) out.push(r);
  return out;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'membrane-relay-'));
  pki = await ensureHubbleCerts(dir, ['node1', 'node2']);
  for (const name of ['node1', 'node2']) {
    const h = createHubble({
      nodeName: name, resolver, socketPath: join(dir, name, 'hubble.sock'), capacity: 63,
      tcpPort: 0, tcpHost: '127.0.0.1', tcpSecurity: { tls: pki.server(name) }, tcpForwardSocket: join(dir, name, 'hubble-peer.sock'),
      // the cluster as each agent knows it (kvstore nodes)
      peers: () => Object.entries(ports).map(([n, p]) => ({ name: n, address: `127.0.0.1:${p}` })),
    });
    await h.start();
    ports[name] = h.server.tcpAddress()!.port;
    nodes[name] = h;
  }
  // interleaved in time: node1 at even ms, node2 at odd ms
  const base = BigInt(Date.now() - 10_000) * 1_000_000n;
  for (let i = 0; i < 10; i++) {
    const node = i % 2 === 0 ? 'node1' : 'node2';
    nodes[node]!.ingest(ev({ timeNs: base + BigInt(i) * 1_000_000n, srcPort: 40000 + i }));
  }
  relay = createRelay({
    listenHost: '127.0.0.1', listenPort: 0,
    security: { tls: { ...pki.relayServer, clientCaFiles: [pki.caCert] } },
    clientTls: { caFiles: [pki.caCert], certFile: pki.clientCert, keyFile: pki.clientKey },
    // only node1 is named: node2 is learnt from its Peer.Notify
    peerService: () => [{ name: 'node1', address: `127.0.0.1:${ports.node1}`, serverName: hubbleServerName('node1') }],
    version: 'test-relay',
  });
  await relay.start();
  port = relay.address()!.port;
  await until('both peers connected', async () => (relay.peers().filter((p) => p.available).length === 2 ? true : undefined), 10_000);
});

after(async () => {
  await relay?.stop();
  for (const h of Object.values(nodes)) await h.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('GetFlows --last: both nodes, merged in time order, node_name on every flow', async () => {
  const rs = await collect({ number: 10n });
  const status = rs.filter((r) => r.responseTypes.case === 'nodeStatus').map((r) => r.responseTypes.value as { stateChange: NodeState; nodeNames: string[] });
  assert.deepEqual(status.map((s) => [s.stateChange, [...s.nodeNames].sort()]), [[NodeState.NODE_CONNECTED, ['node1', 'node2']]]);
  const fs = flowsOf(rs);
  assert.equal(fs.length, 10);
  assert.deepEqual(fs.map((f) => f.l4?.protocol.case === 'TCP' ? f.l4.protocol.value.sourcePort : -1), Array.from({ length: 10 }, (_, i) => 40000 + i));
  assert.deepEqual(fs.map((f) => f.nodeName), Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? 'node1' : 'node2')));
  const times = fs.map((f) => ms(f.time));
  assert.deepEqual(times, [...times].sort((a, b) => a - b));
  // --last 2 asks each node for its last 2 (Cilium's relay does the same)
  assert.deepEqual(flowsOf(await collect({ number: 2n })).map((f) => f.nodeName), ['node1', 'node2', 'node1', 'node2']);
});

test('filters reach every node: node_name and source port', async () => {
  const fs = flowsOf(await collect({ number: 100n, whitelist: [{ nodeName: ['node2'] }] }));
  assert.equal(fs.length, 5);
  assert.ok(fs.every((f) => f.nodeName === 'node2'));
  const one = flowsOf(await collect({ number: 100n, whitelist: [{ sourcePort: ['40003'] }] }));
  assert.deepEqual(one.map((f) => f.nodeName), ['node2']);
});

test('follow: new flows of both nodes arrive in time order', async () => {
  const ac = new AbortController();
  const got: GetFlowsResponse[] = [];
  const reading = (async () => {
    try {
      for await (const r of client().getFlows({ follow: true }, { signal: ac.signal })) {
        got.push(r);
        if (flowsOf(got).length >= 4) break;
      }
    } catch { /* aborted */ }
  })();
  await new Promise((r) => setTimeout(r, 300));
  const now = BigInt(Date.now()) * 1_000_000n;
  nodes.node2!.ingest(ev({ timeNs: now + 1_000_000n, srcPort: 41001 }));
  nodes.node1!.ingest(ev({ timeNs: now, srcPort: 41000 }));
  nodes.node1!.ingest(ev({ timeNs: now + 3_000_000n, srcPort: 41003 }));
  nodes.node2!.ingest(ev({ timeNs: now + 2_000_000n, srcPort: 41002 }));
  const timer = setTimeout(() => ac.abort(), 8000);
  await reading;
  clearTimeout(timer);
  ac.abort();
  const ports = flowsOf(got).map((f) => (f.l4?.protocol.case === 'TCP' ? f.l4.protocol.value.sourcePort : -1));
  assert.deepEqual(ports, [41000, 41001, 41002, 41003]);
});

test('ServerStatus and GetNodes count connected nodes', async () => {
  const s = await client().serverStatus({});
  assert.equal(s.numConnectedNodes, 2);
  assert.equal(s.numUnavailableNodes, 0);
  assert.equal(s.version, 'test-relay');
  assert.equal(s.maxFlows, 126n);
  const n = await client().getNodes({});
  assert.deepEqual(n.nodes.map((x) => [x.name, x.state, x.tls?.serverName]), [
    ['node1', NodeState.NODE_CONNECTED, hubbleServerName('node1')], ['node2', NodeState.NODE_CONNECTED, hubbleServerName('node2')],
  ]);
});

test('the relay port refuses a client without a certificate', async () => {
  await assert.rejects(client(false).serverStatus({}, { timeoutMs: 5000 }));
  assert.equal((await client(true).serverStatus({}, { timeoutMs: 5000 })).numConnectedNodes, 2); // positive control
});

test('a stopped node is unavailable; the other node still serves its flows', async () => {
  await nodes.node2!.stop();
  const s = await client().serverStatus({});
  assert.equal(s.numConnectedNodes, 1);
  assert.equal(s.numUnavailableNodes, 1);
  assert.deepEqual(s.unavailableNodes, ['node2']);
  const n = await client().getNodes({});
  assert.deepEqual(n.nodes.map((x) => [x.name, x.state]), [['node1', NodeState.NODE_CONNECTED], ['node2', NodeState.NODE_UNAVAILABLE]]);
  const rs = await collect({ number: 100n });
  const unav = rs.find((r) => r.responseTypes.case === 'nodeStatus' && r.responseTypes.value.stateChange === NodeState.NODE_UNAVAILABLE);
  assert.deepEqual(unav && unav.responseTypes.case === 'nodeStatus' ? unav.responseTypes.value.nodeNames : [], ['node2']);
  const fs = flowsOf(rs);
  assert.ok(fs.length >= 5);
  assert.ok(fs.every((f) => f.nodeName === 'node1'));
});

test('a node leaving the cluster (its kvstore key gone) is PEER_DELETED: the relay forgets it', async () => {
  delete ports.node2;
  await until('node2 forgotten', async () => (relay.peers().some((p) => p.name === 'node2') ? undefined : true), 5000);
  const s = await client().serverStatus({});
  assert.equal(s.numConnectedNodes, 1);
  assert.equal(s.numUnavailableNodes, 0);
  assert.deepEqual((await client().getNodes({})).nodes.map((n) => n.name), ['node1']);
});

test('the port-forward socket is root-only and judges nothing itself: TLS with a client certificate is still required', async () => {
  const sock = join(dir, 'node1', 'hubble-peer.sock');
  assert.equal(statSync(sock).mode & 0o777, 0o600);
  const handshake = (withCert: boolean) => new Promise<string>((resolve) => {
    const s = tls.connect({
      socket: connect(sock), servername: hubbleServerName('node1'), ca: readFileSync(pki.caCert), ALPNProtocols: ['h2'],
      ...(withCert ? { cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) } : {}),
    });
    // TLS 1.3: the server judges the client certificate after the client's Finished; read to see its verdict
    s.on('secureConnect', () => { s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'); });
    s.once('data', () => { resolve('served'); s.destroy(); });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.on('close', () => resolve('closed'));
  });
  assert.equal(await handshake(true), 'served');
  assert.notEqual(await handshake(false), 'served');
});
