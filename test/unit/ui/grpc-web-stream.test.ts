/**
 * The flow worker's gRPC-web reader (ui/src/grpc-web-stream.ts) against the real path: a real
 * Hubble Observer (src/hubble/observer.ts) on a unix socket, relayed by the real UI server's
 * gRPC-web proxy. Thousands of flows arrive in network chunks that split frames anywhere.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { FlowRing } from '../../../src/hubble/ring.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { createHubbleServer, type HubbleServer } from '../../../src/hubble/observer.ts';
import { createUiServer, type UiServer } from '../../../src/ui/server.ts';
import { GetFlowsRequestSchema, GetFlowsResponseSchema, type GetFlowsResponse } from '../../../src/hubble/gen/observer/observer_pb.js';
import type { Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { getFlows } from '../../../ui/src/grpc-web-stream.ts';
import { ev, resolver, T0 } from '../hubble/fixtures.ts';

const N = 3000;
const dir = mkdtempSync(join(tmpdir(), 'membrane-grpcweb-'));
const ring = new FlowRing(4095);
let hubble: HubbleServer;
let ui: UiServer;
let origin: string;

before(async () => {
  const build = createFlowBuilder({ nodeName: 'node1', resolver });
  for (let i = 0; i < N; i++) {
    const t = T0 + BigInt(i) * 1_000_000n;
    ring.pushFlow(build(ev({ timeNs: t, srcPort: 10_000 + i }))!, Number(t / 1_000_000n));
  }
  hubble = createHubbleServer({ socketPath: join(dir, 'hubble.sock'), ring, nodeName: 'node1', version: 'membrane test', startedAt: Date.now(), seenFlows: () => N });
  await hubble.start();
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>t</title>');
  ui = createUiServer({ port: 0, observer: { kind: 'unix', path: join(dir, 'hubble.sock') }, agentSocket: join(dir, 'no-agent.sock'), assetsDir: dir });
  await ui.start();
  origin = ui.url().replace(/\/$/, '');
});

after(async () => {
  await ui?.stop();
  await hubble?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const ports = (fs: Flow[]) => fs.map((f) => (f.l4?.protocol.case === 'TCP' ? f.l4.protocol.value.sourcePort : -1));

test('gRPC-web reader: every flow of a replay, in order, decoded with the field mask applied', async () => {
  const got: Flow[] = [];
  // the message's bytes as the worker keeps them for the table (a copy: the view is the reader's buffer)
  const kept: Uint8Array[] = [];
  await getFlows(origin, create(GetFlowsRequestSchema, { number: BigInt(N), fieldMask: { paths: ['uuid', 'l4', 'time'] } }), (r: GetFlowsResponse, bytes: Uint8Array) => {
    if (r.responseTypes.case === 'flow') got.push(r.responseTypes.value);
    kept.push(bytes.slice());
  }, new AbortController().signal);
  assert.equal(got.length, N);
  assert.equal(kept.length, N);
  for (const i of [0, 1, N >> 1, N - 1]) assert.deepEqual(fromBinary(GetFlowsResponseSchema, kept[i]!).responseTypes.value, got[i]);
  assert.deepEqual(ports(got), Array.from({ length: N }, (_, i) => 10_000 + i));
  assert.equal(new Set(got.map((f) => f.uuid)).size, N);
  // the mask: asked-for fields present, the rest absent
  assert.equal(got[0]!.source, undefined);
  assert.equal(got[0]!.nodeName, '');
  // a smaller replay: the newest ones
  const last: Flow[] = [];
  await getFlows(origin, create(GetFlowsRequestSchema, { number: 5n }), (r) => { if (r.responseTypes.case === 'flow') last.push(r.responseTypes.value); }, new AbortController().signal);
  assert.deepEqual(ports(last), [10_000 + N - 5, 10_000 + N - 4, 10_000 + N - 3, 10_000 + N - 2, 10_000 + N - 1]);
  assert.equal(last[0]!.source?.podName !== undefined, true);
});

test('gRPC-web reader: the Observer\'s error arrives as a ConnectError with its code and message, nothing delivered', async () => {
  let n = 0;
  await assert.rejects(
    getFlows(origin, create(GetFlowsRequestSchema, { number: 10n, fieldMask: { paths: ['source.nope'] } }), () => n++, new AbortController().signal),
    (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && /invalid field mask path "source.nope"/.test(e.rawMessage),
  );
  assert.equal(n, 0);
});

test('gRPC-web reader: a follow ends when aborted, after the flows that were there', async () => {
  const ctl = new AbortController();
  let n = 0;
  const done = getFlows(origin, create(GetFlowsRequestSchema, { number: 3n, follow: true }), (r) => {
    if (r.responseTypes.case === 'flow' && ++n === 3) setTimeout(() => ctl.abort(), 50);
  }, ctl.signal);
  await assert.rejects(done, (e: unknown) => (e as Error).name === 'AbortError');
  assert.equal(n, 3);
});
