/**
 * The real gRPC server on a temp unix socket, queried by the connect client and by
 * `bin/membrane observe` as a subprocess. No root needed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import http2 from 'node:http2';
import { connect as netConnect } from 'node:net';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { createConnectTransport } from '@connectrpc/connect-node';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createHubble, type Hubble } from '../../../src/hubble/index.ts';
import { observerClient, hubbleTransport } from '../../../src/hubble/client.ts';
import { FlowFilterSchema, LostEventSource, Verdict } from '../../../src/hubble/gen/flow/flow_pb.js';
import { GetFlowsRequestSchema, GetFlowsResponseSchema, Observer, type GetFlowsResponse } from '../../../src/hubble/gen/observer/observer_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../../src/hubble/gen/grpc/health/v1/health_pb.js';
import { Peer, ChangeNotificationType } from '../../../src/hubble/gen/peer/peer_pb.js';
import { ev, resolver } from '../../unit/hubble/fixtures.ts';
import { hubbleCli as hubbleCliPath } from '../support/hubble-cli.ts';

const HUBBLE = hubbleCliPath();

const root = new URL('../../../', import.meta.url).pathname;
let dir: string;
let sock: string;
let hubble: Hubble;
const nowNs = () => BigInt(Date.now()) * 1_000_000n;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'membrane-hubble-'));
  sock = join(dir, 'hubble.sock');
  hubble = createHubble({ nodeName: 'node1', resolver, socketPath: sock, capacity: 63, version: 'membrane v0.1.0-test' });
  await hubble.start();
  // 3 forwarded (client → api), 2 drops from xwing, 1 reply
  for (let i = 0; i < 3; i++) hubble.ingest(ev({ timeNs: nowNs(), srcPort: 40000 + i }));
  for (let i = 0; i < 2; i++) hubble.ingest(ev({ timeNs: nowNs(), type: 1, subType: 133, endpointId: 103, srcIp: '10.244.1.7', srcIdentity: 34567, dstIp: '198.51.100.10', dstIdentity: 2, dstPort: 443, srcPort: 50000 + i, ctReason: 0 }));
  hubble.ingest(ev({ timeNs: nowNs(), srcIp: '10.244.1.6', dstIp: '10.244.1.5', srcPort: 8080, dstPort: 40000, srcIdentity: 23456, dstIdentity: 12345, tcpFlags: 18, ctReason: 3, endpointId: 101 }));
});

after(async () => {
  await hubble.stop();
  assert.equal(existsSync(sock), false);
  rmSync(dir, { recursive: true, force: true });
});

async function collect(req: Parameters<ReturnType<typeof observerClient>['getFlows']>[0]): Promise<GetFlowsResponse[]> {
  const out: GetFlowsResponse[] = [];
  for await (const r of observerClient({ kind: 'unix', path: sock }).getFlows(req)) out.push(r);
  return out;
}

function membrane(args: string[], opts: { onLine?: (line: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(root, 'bin/membrane'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      pending += d;
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        opts.onLine?.(line, child);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('health: hubble.server.Observer is SERVING', async () => {
  const h = createClient(Health, hubbleTransport({ kind: 'unix', path: sock }));
  assert.equal((await h.check({ service: 'hubble.server.Observer' })).status, HealthCheckResponse_ServingStatus.SERVING);
  await assert.rejects(h.check({ service: 'nope' }), (e) => e instanceof ConnectError && e.code === Code.NotFound);
});

test('ServerStatus counts flows, capacity, seen flows', async () => {
  const s = await observerClient({ kind: 'unix', path: sock }).serverStatus({});
  assert.equal(s.numFlows, BigInt(hubble.ring.length));
  assert.ok(s.numFlows >= 6n);
  assert.equal(s.maxFlows, 63n);
  assert.equal(s.seenFlows, BigInt(hubble.stats().seenFlows));
  assert.equal(s.version, 'membrane v0.1.0-test');
  assert.ok(s.uptimeNs > 0n);
  assert.ok(s.flowsRate > 0);
});

test('GetNodes and GetNamespaces describe this node', async () => {
  const c = observerClient({ kind: 'unix', path: sock });
  const n = await c.getNodes({});
  assert.equal(n.nodes.length, 1);
  assert.equal(n.nodes[0]!.name, 'node1');
  const ns = await c.getNamespaces({});
  assert.deepEqual(ns.namespaces.map((x) => x.namespace), ['default', 'shop']);
});

test('Peer.Notify announces this node', async () => {
  const ac = new AbortController();
  const peer = createClient(Peer, hubbleTransport({ kind: 'unix', path: sock }));
  let seen = 0;
  try {
    for await (const cn of peer.notify({}, { signal: ac.signal })) {
      assert.equal(cn.name, 'node1');
      assert.equal(cn.type, ChangeNotificationType.PEER_ADDED);
      seen++;
      ac.abort();
    }
  } catch (e) {
    if (!(e instanceof ConnectError && e.code === Code.Canceled)) throw e;
  }
  assert.equal(seen, 1);
});

test('Peer.Notify held open (as a Relay holds it) keeps one abort listener, not one more per second', async () => {
  // a node with a cluster view re-reads its peers every second while the stream is open; each
  // tick used to add an abort listener to the request's signal that stayed there until the stream
  // ended (a Relay holds it for the agent's life): counted here on every AbortSignal of the process
  const s2 = join(dir, 'peers.sock');
  const h2 = createHubble({ nodeName: 'node1', resolver, socketPath: s2, capacity: 7, peers: () => [{ name: 'node1', address: '192.0.2.1:4244' }, { name: 'node2', address: '192.0.2.2:4244' }] });
  await h2.start();
  const live = new Map<EventTarget, number>();
  const proto = EventTarget.prototype;
  const add = proto.addEventListener, remove = proto.removeEventListener;
  proto.addEventListener = function (this: EventTarget, type: string, ...rest: unknown[]) {
    if (type === 'abort' && this instanceof AbortSignal) live.set(this, (live.get(this) ?? 0) + 1);
    return (add as (...a: unknown[]) => void).call(this, type, ...rest);
  } as typeof proto.addEventListener;
  proto.removeEventListener = function (this: EventTarget, type: string, ...rest: unknown[]) {
    if (type === 'abort' && this instanceof AbortSignal) live.set(this, (live.get(this) ?? 0) - 1);
    return (remove as (...a: unknown[]) => void).call(this, type, ...rest);
  } as typeof proto.removeEventListener;
  const ac = new AbortController();
  try {
    const peer = createClient(Peer, hubbleTransport({ kind: 'unix', path: s2 }));
    const names: string[] = [];
    const held = (async () => {
      try {
        for await (const cn of peer.notify({}, { signal: ac.signal })) names.push(cn.name);
      } catch (e) {
        if (!(e instanceof ConnectError && e.code === Code.Canceled)) throw e;
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    const early = Math.max(0, ...live.values());
    await new Promise((r) => setTimeout(r, 3000));
    const late = Math.max(0, ...live.values());
    ac.abort();
    await held;
    assert.deepEqual(names.sort(), ['node1', 'node2']);
    assert.ok(early >= 1, 'the stream listens for its end');
    assert.equal(late, early, `abort listeners on one signal after 1.5 s: ${early}, after 4.5 s: ${late}`);
  } finally {
    proto.addEventListener = add;
    proto.removeEventListener = remove;
    ac.abort();
    await h2.stop();
  }
});

test('GetFlows: last N matching in chronological order, whitelist/blacklist, first, since/until', async () => {
  const last2 = await collect({ number: 2n });
  assert.equal(last2.length, 2);
  assert.ok(last2.every((r) => r.responseTypes.case === 'flow'));
  const flows = (rs: GetFlowsResponse[]) => rs.flatMap((r) => (r.responseTypes.case === 'flow' ? [r.responseTypes.value] : []));
  assert.equal(flows(last2)[1]!.isReply, true); // newest last
  const drops = flows(await collect({ number: 20n, whitelist: [create(FlowFilterSchema, { verdict: [Verdict.DROPPED] })] }));
  assert.equal(drops.length, 2);
  assert.deepEqual(drops.map((f) => f.l4?.protocol.case === 'TCP' && f.l4.protocol.value.sourcePort), [50000, 50001]);
  const noDrops = flows(await collect({ number: 100n, blacklist: [create(FlowFilterSchema, { verdict: [Verdict.DROPPED] })] }));
  assert.ok(noDrops.length >= 4 && noDrops.every((f) => f.verdict !== Verdict.DROPPED));
  const first1 = flows(await collect({ number: 1n, first: true }));
  assert.equal(first1[0]!.l4?.protocol.case === 'TCP' && first1[0]!.l4.protocol.value.sourcePort, 40000);
  const future = await collect({ number: 0n, since: timestampFromMs(Date.now() + 60_000) });
  assert.equal(future.length, 0);
  const past = await collect({ number: 100n, until: timestampFromMs(Date.now() - 60_000) });
  assert.equal(past.length, 0);
  await assert.rejects(collect({ first: true, follow: true }), (e) => e instanceof ConnectError && e.code === Code.InvalidArgument && /first cannot be specified with follow/.test(e.rawMessage));
  await assert.rejects(collect({ number: 1n, whitelist: [create(FlowFilterSchema, { protocol: ['quic'] })] }), /unknown protocol/);
});

test('GetFlows follow: receives a flow ingested after subscribing; field mask', async () => {
  const ac = new AbortController();
  const c = observerClient({ kind: 'unix', path: sock });
  const stream = c.getFlows(create(GetFlowsRequestSchema, { follow: true, fieldMask: { paths: ['source.pod_name', 'verdict'] } }), { signal: ac.signal });
  // ingested until one arrives: on a busy machine the server may open the follow after a single
  // early flow was stored (it then starts after it and would wait forever)
  const feed = setInterval(() => hubble.ingest(ev({ timeNs: nowNs(), srcPort: 41111 })), 100);
  let got: GetFlowsResponse | undefined;
  try {
    for await (const r of stream) {
      got = r;
      ac.abort();
    }
  } catch (e) {
    if (!(e instanceof ConnectError && e.code === Code.Canceled)) throw e;
  } finally {
    clearInterval(feed);
  }
  assert.equal(got?.responseTypes.case, 'flow');
  const f = got!.responseTypes.value as import('../../../src/hubble/gen/flow/flow_pb.js').Flow;
  assert.equal(f.source?.podName, 'client');
  assert.equal(f.source?.identity, 0); // masked out
  assert.equal(f.l4, undefined);
  assert.equal(f.verdict, Verdict.FORWARDED);
});

test('GetFlows: readers with a field mask, without one and over the JSON codec each get their own flow, the same every time', async () => {
  const masked = create(GetFlowsRequestSchema, { number: 6n, fieldMask: { paths: ['source.pod_name', 'verdict'] } });
  const whole = create(GetFlowsRequestSchema, { number: 6n });
  const flows = (rs: GetFlowsResponse[]) => rs.filter((r) => r.responseTypes.case === 'flow').map((r) => r.responseTypes.value as import('../../../src/hubble/gen/flow/flow_pb.js').Flow);
  const bytes = (rs: GetFlowsResponse[]) => rs.map((r) => Buffer.from(toBinary(GetFlowsResponseSchema, r)).toString('hex'));
  const a = await collect(masked);
  const b = await collect(masked);
  assert.equal(flows(a).length, 6);
  assert.deepEqual(bytes(b), bytes(a), 'the same bytes the second time');
  for (const f of flows(b)) {
    assert.equal(f.l4, undefined, 'masked out');
    assert.equal(f.source?.identity, 0, 'masked out');
    assert.ok(f.source?.podName, 'kept');
    assert.ok(f.verdict, 'kept');
  }
  // no mask after a masked read: the whole flow
  const w = flows(await collect(whole));
  assert.equal(w.length, 6);
  for (const f of w) {
    assert.ok(f.l4 && f.source?.identity && f.uuid && f.time, 'the whole flow');
    assert.equal(f.nodeName, 'node1');
  }
  assert.deepEqual(flows(await collect(masked)).map((f) => f.verdict), flows(a).map((f) => f.verdict));
  // the JSON codec (Connect protocol): the flows travel as JSON, masked
  const json = createClient(Observer, createConnectTransport({ baseUrl: 'http://localhost', httpVersion: '2', useBinaryFormat: false, nodeOptions: { createConnection: () => netConnect(sock) } }));
  const j: GetFlowsResponse[] = [];
  for await (const r of json.getFlows(masked)) j.push(r);
  assert.equal(flows(j).length, 6);
  assert.deepEqual(flows(j).map((f) => [f.source?.podName, f.verdict, f.l4]), flows(a).map((f) => [f.source?.podName, f.verdict, undefined]));
  // the response's own fields beside the flow
  assert.deepEqual(a.map((r) => [r.nodeName, r.time?.seconds]), w.map((f) => ['node1', f.time?.seconds]));
});

/** GetFlows over gRPC by hand: the response's frames, its headers and trailers */
async function rawGetFlows(body: Buffer, headers: Record<string, string> = {}): Promise<{ headers: Record<string, unknown>; headersEnd: boolean; trailers: Record<string, unknown>; frames: Buffer[] }> {
  const s = http2.connect('http://localhost', { createConnection: () => netConnect(sock) });
  try {
    const st = s.request({ ':method': 'POST', ':path': '/observer.Observer/GetFlows', 'content-type': 'application/grpc', te: 'trailers', ...headers });
    st.end(body);
    const out = { headers: {} as Record<string, unknown>, headersEnd: false, trailers: {} as Record<string, unknown>, frames: [] as Buffer[] };
    const chunks: Buffer[] = [];
    await new Promise<void>((res, rej) => {
      st.on('response', (h, flags: number) => {
        out.headers = h;
        out.headersEnd = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      });
      st.on('trailers', (t) => (out.trailers = t));
      st.on('data', (c: Buffer) => chunks.push(c));
      st.on('end', res);
      st.on('error', rej);
    });
    const all = Buffer.concat(chunks);
    for (let at = 0; at < all.length;) {
      const n = all.readUInt32BE(at + 1);
      out.frames.push(all.subarray(at + 5, at + 5 + n));
      at += 5 + n;
    }
    // gRPC over HTTP/2: the status ends the stream, in the response's one HEADERS frame
    // (trailers-only) or in trailers. A stream ended by an empty DATA frame after headers that
    // carry it is what grpc-go refuses ("server closed the stream without sending trailers").
    if (out.headers['grpc-status'] !== undefined) assert.ok(out.headersEnd, 'a trailers-only response ends the stream on its HEADERS frame');
    else assert.notEqual(out.trailers['grpc-status'], undefined, 'the status in trailers');
    return out;
  } finally {
    s.close();
  }
}
const grpcFrame = (msg: Uint8Array) => {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
};

test('GetFlows over gRPC: a torn or oversized request is refused with a status, a deadline ends a follow', async () => {
  const torn = await rawGetFlows(grpcFrame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 2n }))).subarray(0, 6));
  assert.equal(torn.headers['grpc-status'], String(Code.InvalidArgument), 'trailers-only');
  assert.match(decodeURIComponent(String(torn.headers['grpc-message'])), /not one whole gRPC message/);
  assert.equal(torn.frames.length, 0);
  const big = await rawGetFlows(Buffer.alloc(2 << 20));
  assert.equal(big.headers['grpc-status'], String(Code.ResourceExhausted));
  const bad = await rawGetFlows(grpcFrame(Uint8Array.of(0xff, 0xff, 0xff)));
  assert.equal(bad.headers['grpc-status'], String(Code.InvalidArgument));
  const filter = await rawGetFlows(grpcFrame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 1n, whitelist: [create(FlowFilterSchema, { protocol: ['quic'] })] }))));
  assert.match(decodeURIComponent(String(filter.headers['grpc-message'])), /unknown protocol/);
  // the last 2, then nothing more arrives: the client's grpc-timeout ends the follow on the server
  const t = Date.now();
  const follow = await rawGetFlows(grpcFrame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 2n, follow: true }))), { 'grpc-timeout': '300m' });
  assert.ok(Date.now() - t >= 250);
  assert.equal(follow.trailers['grpc-status'], String(Code.DeadlineExceeded));
  assert.equal(follow.frames.length, 2);
  for (const f of follow.frames) assert.equal(fromBinary(GetFlowsResponseSchema, f).responseTypes.case, 'flow');
  // a compressed request goes to connect-node, which refuses an encoding it does not know (Internal)
  const compressed = grpcFrame(Uint8Array.of(1));
  compressed[0] = 1;
  const gz = await rawGetFlows(compressed, { 'grpc-encoding': 'br' });
  assert.equal(gz.headers['grpc-status'] ?? gz.trailers['grpc-status'], String(Code.Internal));
  assert.equal(gz.frames.length, 0);
});

test('GetFlows over gRPC: no flow matches, the status OK alone ends the stream (trailers-only), and the upstream hubble CLI reads it', async () => {
  const none = await rawGetFlows(grpcFrame(toBinary(GetFlowsRequestSchema, create(GetFlowsRequestSchema, { number: 5n, whitelist: [create(FlowFilterSchema, { sourcePod: ['nowhere/'] })] }))));
  assert.equal(none.headers['grpc-status'], '0');
  assert.equal(none.frames.length, 0);
  // grpc-go, the client Hubble's CLI and Relay use: it refused the stream the fast path first
  // ended (HEADERS with the status, then an empty DATA frame with END_STREAM) as Internal
  const hubbleCli = (args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(HUBBLE, ['observe', '--server', `unix://${sock}`, '-o', 'json', ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
  const empty = await hubbleCli(['--last', '5', '--namespace', 'nowhere']);
  assert.equal(empty.code, 0, empty.stderr);
  assert.equal(empty.stdout, '');
  const two = await hubbleCli(['--last', '2']);
  assert.equal(two.code, 0, two.stderr);
  assert.equal(two.stdout.trim().split('\n').filter((l) => (JSON.parse(l) as { flow?: unknown }).flow).length, 2);
  const dropped = await hubbleCli(['--last', '10', '--verdict', 'DROPPED', '--experimental-field-mask', 'verdict,source.pod_name']);
  assert.equal(dropped.code, 0, dropped.stderr);
  const flows = dropped.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { flow: { verdict: string; source?: { pod_name?: string }; destination?: unknown } }).flow);
  assert.deepEqual(flows.map((f) => [f.verdict, f.source?.pod_name, f.destination]), [['DROPPED', 'xwing', undefined], ['DROPPED', 'xwing', undefined]]);
});

test('lost events pass unfiltered and uncounted', async () => {
  hubble.reportLost(LostEventSource.PERF_EVENT_RING_BUFFER, 7, 2);
  const rs = await collect({ number: 1n, whitelist: [create(FlowFilterSchema, { verdict: [Verdict.DROPPED] })] });
  const kinds = rs.map((r) => r.responseTypes.case);
  assert.deepEqual(kinds, ['flow', 'lostEvents']);
  const l = rs[1]!.responseTypes.value as import('../../../src/hubble/gen/flow/flow_pb.js').LostEvent;
  assert.equal(l.numEventsLost, 7n);
  assert.equal(l.cpu, 2);
  hubble.reportKernelLost(10n);
  hubble.reportKernelLost(15n);
  assert.equal(hubble.stats().lost.PERF_EVENT_RING_BUFFER, 7 + 10 + 5);
});

test('CLI: observe --last 2 -o json prints GetFlowsResponse lines', async () => {
  const r = await membrane(['observe', '--server', `unix://${sock}`, '-o', 'json', '--last', '2', '--not', '--type', 'trace:from-endpoint']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const flowLines = lines.filter((l) => l.flow);
  assert.equal(flowLines.length, 2);
  assert.equal(flowLines[0].node_name, 'node1');
  assert.ok(flowLines[0].flow.uuid);
  assert.ok(lines.some((l) => l.lost_events)); // the lost event reported above is among the newest entries
});

test('CLI: --verdict DROPPED and --pod filters', async () => {
  const d = await membrane(['observe', '--server', `unix://${sock}`, '-o', 'json', '--verdict', 'DROPPED']);
  assert.equal(d.code, 0, d.stderr);
  const drops = d.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.flow);
  assert.equal(drops.length, 2);
  assert.ok(drops.every((l) => l.flow.verdict === 'DROPPED' && l.flow.drop_reason_desc === 'POLICY_DENIED'));
  const p = await membrane(['observe', '--server', sock, '--pod', 'default/xwing']);
  assert.equal(p.code, 0, p.stderr);
  const lines = p.stdout.trim().split('\n').filter((l) => !l.includes('EVENTS LOST'));
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /^\w{3} [ \d]\d \d\d:\d\d:\d\d\.\d{3}: default\/xwing:50000 \(ID:34567\) <> api\.openai\.com:443 \(world\) Policy denied DROPPED \(TCP Flags: SYN\)$/);
  const none = await membrane(['observe', '--server', sock, '--pod', 'nosuch/pod']);
  assert.equal(none.stdout.replace(/.*EVENTS LOST.*\n/g, ''), '');
});

test('CLI: --follow prints flows ingested after subscribing and exits 0 on SIGINT', async () => {
  let n = 0;
  const r = await membrane(['observe', '--server', `unix://${sock}`, '--follow', '--last', '1', '--from-pod', 'shop/client', '-o', 'json'], {
    onLine: (line, child) => {
      const j = JSON.parse(line);
      if (!j.flow) return;
      n++;
      if (n === 1) hubble.ingest(ev({ timeNs: nowNs(), srcPort: 42424 }));
      else if (j.flow.l4?.TCP?.source_port === 42424) child.kill('SIGINT');
    },
  });
  assert.equal(n, 2);
  assert.equal(r.code, 0, r.stderr);
});

test('CLI: a missing socket is a MembraneError with a hint', async () => {
  const r = await membrane(['observe', '--server', `unix://${join(dir, 'nope.sock')}`]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /HUBBLE_UNAVAILABLE/);
  assert.match(r.stderr, /membrane up/);
});

test('CLI: filter flags build hubble\'s allowlist/denylist (--print-raw-filters)', async () => {
  const r = await membrane(['observe', '--pod', 'shop/client', '--not', '--verdict', 'FORWARDED', '-t', 'trace:to-endpoint', '--from-label', 'app=x', '--print-raw-filters']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, [
    'allowlist:',
    // fields in flow.proto's declaration order, as Go's protojson prints them (hubble-golden.test.ts checks it against hubble)
    `    - '{"source_pod":["shop/client"],"source_label":["app=x"],"event_type":[{"type":4,"match_sub_type":true}]}'`,
    `    - '{"source_label":["app=x"],"destination_pod":["shop/client"],"event_type":[{"type":4,"match_sub_type":true}]}'`,
    'denylist:',
    `    - '{"verdict":["FORWARDED"]}'`,
    '',
  ].join('\n'));
  const ns = await membrane(['observe', '-n', 'shop', '--print-raw-filters']);
  assert.match(ns.stdout, /"source_pod":\["shop\/"\]/);
  assert.match(ns.stdout, /"destination_pod":\["shop\/"\]/);
  const conflict = await membrane(['observe', '--pod', 'a', '--from-pod', 'b']);
  assert.equal(conflict.code, 1);
  assert.match(conflict.stderr, /cannot be combined/);
});

test('stop() ends open follow streams and removes the socket; a stale socket file is replaced on start', async () => {
  const s2 = join(dir, 'second.sock');
  const h2 = createHubble({ nodeName: 'node2', resolver, socketPath: s2, capacity: 7 });
  await h2.start();
  await h2.stop();
  // a leftover file from a crashed agent
  writeFileSync(s2, '');
  await h2.start();
  h2.ingest(ev({ timeNs: nowNs() }));
  const ac = new AbortController();
  const got: string[] = [];
  const reading = (async () => {
    try {
      for await (const r of observerClient({ kind: 'unix', path: s2 }).getFlows({ follow: true, number: 1n }, { signal: ac.signal })) got.push(r.responseTypes.case ?? '');
    } catch { /* ended by the server */ }
  })();
  while (got.length === 0) await new Promise((r) => setTimeout(r, 10));
  const t = Date.now();
  await h2.stop();
  await Promise.race([reading, new Promise((r) => setTimeout(r, 3000))]);
  ac.abort();
  assert.ok(Date.now() - t < 3000);
  assert.equal(existsSync(s2), false);
});
