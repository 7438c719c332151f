/**
 * The agent ↔ L7 proxy feed over a real unix socket: snapshots arrive whole and are acked (settle
 * waits for it), a MapState survives the trip with the same lookups, the proxy keeps its last
 * snapshot while the agent is gone and buffers its access records (bounded) until one is back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { createFeedServer } from '../../../../src/proxy/feed/server.ts';
import { createFeedClient } from '../../../../src/proxy/feed/client.ts';
import { applyIpcacheDelta, decodeMapState, encodeMapState, viewOf, type IpcacheDelta, type ProxySnapshot } from '../../../../src/proxy/feed/snapshot.ts';
import { IPCache } from '../../../../src/ipcache/ipcache.ts';
import { lookupMapState } from '../../../../src/policy/lookup.ts';
import { mapStateKeyString, type MapState, type MapStateKey } from '../../../../src/policy/types.ts';
import type { AccessLogRecord, HttpAccessRecord } from '../../../../src/common/access-log.ts';
import { decodeRecord, decodeRecords, encodeRecord, recordsMessage, type DnsAnswerReport } from '../../../../src/proxy/feed/wire.ts';

const until = async (f: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A feed client on `socketPath` (stopped after the test) and the revisions of the snapshots it got. */
function snapshotRevisions(t: { after(fn: () => unknown): void }, socketPath: string, retryMs: number) {
  const snaps: number[] = [];
  const client = createFeedClient({ socketPath, retryMs, onSnapshot: (s) => { snaps.push(s.revision); }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  return { snaps, client };
}

/** An HTTP request's record with every field its tag has (the agent refuses a record missing one, as a frame's). */
function httpRequest(timeMs: number, over: Partial<HttpAccessRecord> = {}): AccessLogRecord {
  return {
    l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs, client: { ip: '10.244.1.2', port: 1, identity: 1 }, server: { ip: '10.244.1.3', port: 80, identity: 2 },
    endpointId: 0, method: 'GET', url: 'http://a/', host: 'a', path: '/', protocol: 'HTTP/1.1', headers: [], code: 0, latencyNs: 0, ...over,
  };
}

function mapState(): MapState {
  const entries: MapState['entries'] = new Map();
  const put = (key: MapStateKey, l7: boolean, verdict: 'allow' | 'deny' = 'allow') => entries.set(mapStateKeyString(key), {
    key, entry: {
      verdict, authType: 0, matchType: 2, origins: [],
      l7: l7 ? { parser: 'http', perSelector: [{ selector: 'app=a', identities: new Set([1001, 1002]), http: [{ method: 'GET', path: '/ok' }], origins: [] }] } : null,
    },
  });
  put({ direction: 'egress', identity: 1001, proto: 6, port: 80, portPrefixLen: 16 }, true);
  put({ direction: 'egress', identity: 0, proto: 6, port: 8080, portPrefixLen: 16 }, false);
  put({ direction: 'egress', identity: 1003, proto: 0, port: 0, portPrefixLen: 0 }, false, 'deny');
  return { entries, defaultDeny: { ingress: true, egress: true } };
}

function snapshot(revision: number): ProxySnapshot {
  return {
    revision, agentPid: process.pid, nodeAddrs: ['192.0.2.1'],
    endpoints: [{ ip: '10.244.1.5', ep: { id: 7, identity: 1002, namespace: 'ns', pod: 'client', labels: ['k8s:app=client'] } }],
    ipcache: [{ prefix: '198.51.100.0/24', identity: 1001, source: 'fqdn' }, { prefix: '10.244.1.5/32', identity: 1002, source: 'endpoint' }],
    identities: [[1001, ['fqdn:api.example']]], mapStates: [[7, encodeMapState(mapState())]],
    resources: { Secret: [], AIPolicy: [] }, names: [['198.51.100.20', ['api.example']]],
  };
}

test('a MapState crosses the wire with the same lookups for every key (property)', () => {
  const ms = mapState();
  const back = decodeMapState(JSON.parse(JSON.stringify(encodeMapState(ms))));
  const perSel = back.entries.get('e/1001/6/80/16')!.entry.l7!.perSelector[0]!;
  assert.ok(perSel.identities instanceof Set && perSel.identities.has(1002), 'identity sets come back as sets');
  fc.assert(fc.property(fc.constantFrom('ingress' as const, 'egress' as const), fc.constantFrom(0, 1001, 1002, 1003, 2), fc.constantFrom(0, 6, 17), fc.integer({ min: 0, max: 65535 }), (dir, id, proto, port) => {
    const a = lookupMapState(ms, dir, id, proto, port);
    const b = lookupMapState(back, dir, id, proto, port);
    assert.equal(b.verdict, a.verdict);
    assert.equal(b.dropReason, a.dropReason);
    assert.deepEqual(b.key, a.key);
  }), { numRuns: 2000 });
});

test('the view looks up endpoints, identities (node, ipcache, world) and names', () => {
  const v = viewOf(snapshot(3));
  assert.equal(v.endpointByIp('10.244.1.5')?.pod, 'client');
  assert.equal(v.endpointByIp('10.244.1.6'), undefined);
  assert.equal(v.identityOfOther('192.0.2.1'), 1, 'a node address is host');
  assert.equal(v.identityOfOther('198.51.100.20'), 1001);
  assert.equal(v.identityOfOther('203.0.113.9'), 2, 'anything else is world');
  assert.equal(v.mapState(8), undefined, 'no MapState for an unknown endpoint (the proxy denies)');
  assert.deepEqual(v.namesForIp('198.51.100.20'), ['api.example']);
});

test('feed: snapshot, ack and settle; the proxy keeps the last snapshot and buffers records while the agent is away', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  let revision = 1;
  const got: AccessLogRecord[] = [];
  let lostSeen = 0;
  const mkServer = () => createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => String(revision), snapshot: async () => snapshot(revision),
    onRecords: (items, lost) => { got.push(...items.map((w) => decodeRecord(w, () => undefined)!)); lostSeen += lost; },
  });
  let server = mkServer();
  await server.start();
  const snaps: number[] = [];
  const client = createFeedClient({
    socketPath, retryMs: 20, bufferRecords: 3,
    onSnapshot: (s) => { snaps.push(s.revision); },
    onIpcache: () => {},
    handle: async (what) => ({ what }),
    statusRows: () => [{ name: 'http (egress, TCP)', port: 15001, state: 'listening' }],
  });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps.length === 1);
  assert.deepEqual(snaps, [1]);
  // a change reaches the proxy before settle answers
  revision = 2;
  await server.settled();
  assert.equal(snaps.at(-1), 2);
  await until(() => server.clients()[0]?.rows.length === 1);
  assert.deepEqual(await server.request('ai-usage'), { what: 'ai-usage' });
  const peer = (ip: string) => ({ ip, port: 80, identity: 1000 });
  const rec = (n: number) => httpRequest(n, { client: peer('10.244.1.2'), server: peer('10.244.1.3') });
  client.record(rec(1));
  await until(() => got.length === 1);

  // the agent goes: the proxy keeps its snapshot (no new one, none cleared) and buffers, oldest dropped past the bound
  await server.stop();
  await until(() => !client.connected());
  for (let i = 2; i <= 6; i++) client.record(rec(i));
  assert.deepEqual(snaps, [1, 2]);
  // the agent is back: the proxy reconnects, gets the current snapshot, hands over what it kept
  revision = 3;
  server = mkServer();
  await server.start();
  t.after(() => server.stop());
  await until(() => snaps.at(-1) === 3 && got.length === 4);
  assert.deepEqual(got.map((r) => r.timeMs), [1, 4, 5, 6]);
  assert.equal(lostSeen, 2, 'the records past the bound are counted as lost');
});

test('feed: with watch, a change is sent when a source kicks, not found by a poll; a change no source tells of by the backstop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  let revision = 1;
  let prints = 0;
  let kick: (() => void) | undefined;
  let unwatched = false;
  const server = createFeedServer({
    socketPath, pollMs: 10, backstopMs: 400,
    fingerprint: () => { prints++; return String(revision); }, snapshot: async () => snapshot(revision), onRecords: () => {},
    watch: (k) => { kick = k; return () => { unwatched = true; }; },
  });
  await server.start();
  t.after(() => server.stop());
  const { snaps } = snapshotRevisions(t, socketPath, 20);
  await until(() => snaps.length === 1);
  // idle: no poll every pollMs (10 ms) compares the fingerprint, only the backstop (400 ms)
  const before = prints;
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(prints - before <= 1, `idle fingerprint reads in 300 ms: ${prints - before}`);
  // a kicked change goes out within pollMs, long before the backstop; kicks in a burst make one refresh
  revision = 2;
  const t0 = Date.now();
  const p0 = prints;
  for (let i = 0; i < 20; i++) kick!();
  await until(() => snaps.at(-1) === 2, 2000);
  assert.ok(Date.now() - t0 < 300, `a kicked change took ${Date.now() - t0} ms`);
  assert.ok(prints - p0 <= 2, `a burst of kicks read the fingerprint ${prints - p0} times`);
  // a change nothing kicks for (the DNS server's address file) reaches the proxy by the backstop
  revision = 3;
  await until(() => snaps.at(-1) === 3, 2000);
  await server.stop();
  assert.ok(unwatched, 'stop unsubscribes from the sources');
});

test('feed: a watch that cannot watch (undefined) leaves the server polling every pollMs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  let revision = 1;
  const server = createFeedServer({ socketPath, pollMs: 10, backstopMs: 60_000, fingerprint: () => String(revision), snapshot: async () => snapshot(revision), onRecords: () => {}, watch: () => undefined });
  await server.start();
  t.after(() => server.stop());
  const { snaps } = snapshotRevisions(t, socketPath, 20);
  await until(() => snaps.length === 1);
  revision = 2;
  await until(() => snaps.at(-1) === 2, 1000);
});

test('access records cross the wire as they were made: DNS and plain HTTP ones positional, any other as its object, peers without endpoints or labels (property)', () => {
  const peer = fc.record({ ip: fc.constantFrom('10.244.1.5', '10.96.0.10', 'fd00::5'), port: fc.integer({ min: 0, max: 65535 }), identity: fc.integer({ min: 0, max: 70000 }) });
  const str = fc.string({ maxLength: 30 });
  const http = fc.record({
    l7: fc.constant('http' as const), type: fc.constantFrom('request' as const, 'response' as const), verdict: fc.constantFrom('forwarded' as const, 'denied' as const, 'error' as const),
    direction: fc.constantFrom('egress' as const, 'ingress' as const), timeMs: fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true }), endpointId: fc.nat(),
    method: fc.constantFrom('GET', 'POST', ''), url: str, host: str, path: str, protocol: fc.constantFrom('HTTP/1.1', 'HTTP/1.0'),
    headers: fc.array(str, { maxLength: 6 }), code: fc.integer({ min: 0, max: 599 }), latencyNs: fc.nat(),
  }, { requiredKeys: ['l7', 'type', 'verdict', 'direction', 'timeMs', 'endpointId', 'method', 'url', 'host', 'path', 'protocol', 'headers', 'code', 'latencyNs'] });
  const optional = fc.record({ requestTimeMs: fc.double({ min: 1.7e12, max: 1.8e12, noNaN: true }), traceId: fc.stringMatching(/^[0-9a-f]{32}$/), reason: str, tls: fc.record({ sni: str, intercepted: fc.boolean() }), headerActions: fc.array(str, { maxLength: 2 }) }, { requiredKeys: [] });
  fc.assert(fc.property(fc.array(peer, { minLength: 1, maxLength: 4 }), fc.array(fc.tuple(http, optional, fc.nat(), fc.nat()), { maxLength: 20 }), (peers, specs) => {
    const recs = specs.map(([h, o, c, sv]) => ({ ...h, ...o, client: peers[c % peers.length]!, server: peers[sv % peers.length]! }) as AccessLogRecord);
    const dns = { l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 1.75e12, client: peers[0]!, server: peers[0]!, transport: 'UDP', query: 'a.example.', qtypes: ['A'] } as unknown as AccessLogRecord;
    const all = [...recs, dns];
    const m = recordsMessage(all.map(encodeRecord), 3);
    const wire = JSON.parse(JSON.stringify(m)) as typeof m;
    const back = wire.items.map((w) => decodeRecord(w, () => undefined));
    assert.deepEqual(JSON.parse(JSON.stringify(back)), JSON.parse(JSON.stringify(all)));
    assert.equal(m.lost, 3);
    // the plain ones (no optional field but the response's request time) go positional (tag 2)
    const plain = recs.filter((r) => r.l7 === 'http' && Object.keys(r).every((k) => k === 'requestTimeMs' || !['traceId', 'reason', 'tls', 'headerActions'].includes(k)));
    assert.equal(m.items.filter((w) => w[0] === 2).length, plain.length);
    // intercepted ones (tls with intercepted: true, no other optional field) too (tag 4, the server name last)
    const intercepted = recs.filter((r) => r.l7 === 'http' && r.tls?.intercepted === true && Object.keys(r).every((k) => k === 'requestTimeMs' || k === 'tls' || !['traceId', 'reason', 'headerActions'].includes(k)));
    assert.equal(m.items.filter((w) => w[0] === 4).length, intercepted.length);
  }), { numRuns: 300 });
  // a positional record of the wrong length is no record (the agent skips and counts it)
  assert.equal(decodeRecord([2, 0, 0, 0, 1, '10.0.0.1', 1, 1, 0] as never, () => undefined), undefined);
  // an intercepted one whose server name is not a string, or missing, is none either
  const w4 = [4, 0, 0, 0, 1, '10.0.0.1', 1, 1, 0, '10.0.0.2', 443, 2, 0, 0, 'GET', 'https://a/', 'a', '/', 'HTTP/1.1', [], 0, 0, -1];
  assert.equal(decodeRecord([...w4, { sni: 'a' }] as never, () => undefined), undefined);
  assert.equal(decodeRecord(w4 as never, () => undefined), undefined);
  assert.deepEqual((decodeRecord([...w4, 'a'] as never, () => undefined) as { tls?: unknown }).tls, { sni: 'a', intercepted: true });
});

test('feed: records go in messages of 128 at most, in order, the buffer of an agent\'s absence too; a few wait and go as one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const messages: number[][] = [];
  let server = createFeedServer({ socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: (items) => { messages.push(items.map((w) => decodeRecord(w, () => undefined)!.timeMs)); } });
  await server.start();
  t.after(() => server.stop());
  let snaps = 0;
  // by count and size only (quickMessageMs 0): on a busy machine 300 records in one turn can take over 1 ms, and an idle loop would close messages by time (tested below)
  const client = createFeedClient({ socketPath, retryMs: 20, quickMessageMs: 0, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  const rec = (n: number) => httpRequest(n);
  // 300 records in one turn: 128 + 128 + 44 (one 300-record line before)
  for (let i = 1; i <= 300; i++) client.record(rec(i));
  await until(() => messages.flat().length === 300);
  assert.deepEqual(messages.map((m) => m.length), [128, 128, 44]);
  assert.deepEqual(messages.flat(), Array.from({ length: 300 }, (_, i) => i + 1));
  // a few records wait for the timer and go as one message
  messages.length = 0;
  for (let i = 1; i <= 5; i++) client.record(rec(i));
  await until(() => messages.length === 1);
  assert.deepEqual(messages, [[1, 2, 3, 4, 5]]);
  // what was kept while the agent was away goes in messages of 128 too
  await server.stop();
  await until(() => !client.connected());
  for (let i = 1; i <= 200; i++) client.record(rec(i));
  messages.length = 0;
  server = createFeedServer({ socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: (items) => { messages.push(items.map((w) => decodeRecord(w, () => undefined)!.timeMs)); } });
  await server.start();
  await until(() => messages.flat().length === 200);
  assert.deepEqual(messages.map((m) => m.length), [128, 72]);
  assert.deepEqual(messages.flat(), Array.from({ length: 200 }, (_, i) => i + 1));
  // records with big headers: the count per message halves while a message is over 64 KB (128
  // records of 2 KB: 256 KB; 64: 128 KB; 32: just over 64 KB; 16: 32 KB)
  await until(() => client.connected());
  messages.length = 0;
  const big = (n: number) => httpRequest(n, { headers: ['cookie', 'c'.repeat(2000)] });
  for (let i = 1; i <= 300; i++) client.record(big(i));
  await until(() => messages.flat().length === 300);
  assert.deepEqual(messages.map((m) => m.length), [128, 64, 32, 16, 16, 16, 16, 12]);
  assert.deepEqual(messages.flat(), Array.from({ length: 300 }, (_, i) => i + 1));
  // and doubles back while messages are under 16 KB: 16 small records, 32, 64, then 128 again
  messages.length = 0;
  for (let i = 1; i <= 500; i++) client.record(rec(i));
  await until(() => messages.flat().length === 500);
  assert.deepEqual(messages.map((m) => m.length), [16, 32, 64, 128, 128, 128, 4]);
});

test('feed: the ipcache comes whole once per connection, then as deltas a view applies; a reconnect gets it whole again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const agentIpc = new IPCache();
  agentIpc.upsert('10.244.2.5/32', 3001, 'node');
  let pending: IpcacheDelta | undefined;
  const whole = () => [...agentIpc.entries()].map((e) => ({ prefix: e.prefix, identity: e.identity, source: e.source }));
  const mkServer = () => createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => { const s = snapshot(1); delete s.ipcache; return s; },
    ipcache: whole, drainIpcache: () => { const d = pending; pending = undefined; return d; }, onRecords: () => {},
  });
  let server = mkServer();
  await server.start();
  let view: ReturnType<typeof viewOf> | undefined;
  const kinds: string[] = [];
  const client = createFeedClient({
    socketPath, retryMs: 10,
    onSnapshot: (s) => { kinds.push(s.ipcache ? 'whole' : 'snapshot'); view = viewOf(s, view?.ipcache); },
    onIpcache: (d) => { kinds.push('delta'); applyIpcacheDelta(view!.ipcache, d); },
    handle: async () => ({}), statusRows: () => [],
  });
  client.start();
  t.after(() => client.stop());
  await until(() => view !== undefined);
  assert.equal(view!.identityOfOther('10.244.2.5'), 3001);
  // a remote pod comes, one changes identity and one goes: three entries, not the whole ipcache
  agentIpc.upsert('10.244.2.6/32', 3002, 'node');
  pending = { upserts: [['10.244.2.6/32', 3002, 'node'], ['10.244.2.5/32', 3003, 'endpoint']], deletes: [] };
  await server.settled();
  assert.equal(view!.identityOfOther('10.244.2.6'), 3002);
  assert.equal(view!.identityOfOther('10.244.2.5'), 3003, 'the new winner replaces the old one, whatever its source');
  pending = { upserts: [], deletes: ['10.244.2.6/32'] };
  await server.settled();
  assert.notEqual(view!.identityOfOther('10.244.2.6'), 3002, 'a deleted prefix is gone from the view');
  assert.deepEqual(kinds, ['whole', 'delta', 'delta']);
  // the agent restarts: the proxy gets the ipcache whole again (the deltas in between are not replayed)
  await server.stop();
  await until(() => !client.connected());
  agentIpc.delete('10.244.2.5/32');
  agentIpc.upsert('10.244.2.7/32', 3004, 'node');
  server = mkServer();
  await server.start();
  t.after(() => server.stop());
  await until(() => kinds.length === 4);
  assert.equal(kinds[3], 'whole');
  assert.equal(view!.identityOfOther('10.244.2.7'), 3004);
  assert.notEqual(view!.identityOfOther('10.244.2.5'), 3003, 'what went while the proxy was away is gone');
});

test('settle does not wait without a proxy, and a request without one fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const server = createFeedServer({ socketPath: join(dir, 's.sock'), fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: () => {} });
  await server.start();
  t.after(() => server.stop());
  const t0 = Date.now();
  await server.settled();
  assert.ok(Date.now() - t0 < 500);
  await assert.rejects(server.request('metrics'), /no proxy process is connected/);
});

test('attacker: the feed socket is root-only, a line that is not JSON ends the connection without a record, a records message without a list of records is refused whole', async (t) => {
  const { statSync } = await import('node:fs');
  const { connect } = await import('node:net');
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 's.sock');
  const got: AccessLogRecord[] = [];
  const server = createFeedServer({ socketPath, fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: (items) => { got.push(...items.map((w) => decodeRecord(w, () => undefined)!)); } });
  await server.start();
  t.after(() => server.stop());
  assert.equal(statSync(socketPath).mode & 0o777, 0o600);
  const s = connect(socketPath);
  const closed = new Promise<void>((r) => s.on('close', () => r()));
  s.on('error', () => {});
  const http = (timeMs: number) => JSON.stringify([2, 0, 0, 0, timeMs, '10.0.0.1', 1, 2, 0, '10.0.0.2', 80, 3, 0, 0, 'GET', 'u', 'h', '/', 'HTTP/1.1', [], 0, 0, -1]);
  s.write(`{"t":"records","items":[${http(0)}]\n`);
  await closed;
  assert.deepEqual(got, []);
  // positive control: a well-formed line is taken
  const ok = connect(socketPath);
  ok.on('error', () => {});
  ok.write(`{"t":"records","items":[${http(1)}]}\n`);
  await until(() => got.length === 1);
  // items that are not a list: the message is refused whole, the connection stays (the next message is taken)
  ok.write(`{"t":"records","items":{"0":${http(2)}}}\n`);
  ok.write(`{"t":"records","items":[${http(4)}]}\n`);
  await until(() => got.length === 2);
  assert.deepEqual((got as AccessLogRecord[]).map((r) => r.timeMs), [1, 4]);
  assert.equal(ok.destroyed, false);
  ok.destroy();
});

test('settle after a change made while a build is under way waits for a snapshot that holds the change', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 's.sock');
  let revision = 1;
  let slow: (() => void) | undefined;
  const server = createFeedServer({
    socketPath, pollMs: 5, fingerprint: () => String(revision),
    // a build reads its state at once, then takes a while (as a big snapshot under load)
    snapshot: async () => { const s = snapshot(revision); if (revision === 2) await new Promise<void>((r) => { slow = r; }); return s; },
    onRecords: () => {},
  });
  await server.start();
  t.after(() => server.stop());
  const { snaps } = snapshotRevisions(t, socketPath, 10);
  await until(() => snaps.length === 1);
  revision = 2;
  await until(() => slow !== undefined); // the poll started a build of revision 2
  revision = 3; // the change the caller waits for
  const settled = server.settled(5000);
  slow!();
  await settled;
  assert.equal(snaps.at(-1), 3);
});

test('DNS answers: a held one is reported and released by the agent\'s dns-done; while the agent is away it stays held and is reported again to the next agent; one sent already is reported once per batch', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const reports: DnsAnswerReport[] = [];
  const mkServer = () => createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: () => {},
    onDnsAnswers: (items, done) => { reports.push(...items); done(items.filter((i) => i.id).map((i) => i.id)); },
  });
  let server = mkServer();
  await server.start();
  const client = createFeedClient({ socketPath, retryMs: 20, onSnapshot: () => {}, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => client.connected());
  await client.reportAnswer({ ep: 7, name: 'api.example.', ips: ['198.51.100.20'], ttl: 30 }, true);
  assert.equal(reports.length, 1);
  // the agent has these IPs for this name for 30 s: the same answer again is not reported
  assert.equal(client.reportAnswer({ ep: 7, name: 'api.example.', ips: ['198.51.100.20'], ttl: 30 }, false), undefined);
  // other IPs, or a TTL reaching past what the agent holds: reported; three of the same in one batch are one report
  for (let i = 0; i < 3; i++) assert.equal(client.reportAnswer({ ep: 7, name: 'api.example.', ips: ['198.51.100.22'], ttl: 30 }, false), undefined);
  await until(() => reports.length === 2);
  assert.equal(client.reportAnswer({ ep: 7, name: 'api.example.', ips: ['198.51.100.20'], ttl: 60 }, false), undefined);
  await until(() => reports.length === 3);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(reports.length, 3);
  assert.deepEqual(reports.slice(1).map((r) => [r.id, r.ips[0], r.ttl]), [[0, '198.51.100.22', 30], [0, '198.51.100.20', 60]]);

  // the agent goes: a held answer waits (not released by anyone), the next agent hears of it and releases it
  await server.stop();
  await until(() => !client.connected());
  let released = false;
  const held = client.reportAnswer({ ep: 7, name: 'new.example.', ips: ['198.51.100.21'], ttl: 30 }, true)!.then(() => { released = true; });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(released, false);
  server = mkServer();
  await server.start();
  t.after(() => server.stop());
  await held;
  assert.equal(reports.at(-1)!.name, 'new.example.');
  // a new agent hears of a known answer again (it may not have kept it)
  const n = reports.length;
  client.reportAnswer({ ep: 7, name: 'api.example.', ips: ['198.51.100.22'], ttl: 30 }, false);
  await until(() => reports.length === n + 1);
});

test('DNS answers: the agent\'s dns-done after sent() reaches the proxy after the snapshot holding the answer\'s IPs (no poll, no ack awaited)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  let revision = 1;
  let server: ReturnType<typeof createFeedServer>;
  // no poll during the test: only sent() can carry the change
  server = createFeedServer({
    socketPath, pollMs: 60_000, fingerprint: () => String(revision), snapshot: async () => snapshot(revision), onRecords: () => {},
    onDnsAnswers: (items, done) => {
      // as the agent's name manager: the answer's IPs change what the proxy holds, then dns-done
      revision++;
      void server.sent().then(() => done(items.map((i) => i.id)));
    },
  });
  await server.start();
  t.after(() => server.stop());
  const { snaps, client } = snapshotRevisions(t, socketPath, 20);
  await until(() => snaps.length === 1);
  for (let i = 0; i < 20; i++) {
    let atRelease = -1;
    await client.reportAnswer({ ep: 7, name: `n${i}.example.`, ips: [`198.51.100.${i + 1}`], ttl: 30 }, true)!.then(() => { atRelease = snaps.at(-1)!; });
    assert.equal(atRelease, revision, `answer ${i} released before the proxy held the snapshot of its IPs`);
  }
});

test('access records cross the feed without endpoints or labels, and the agent makes the same L7 flow of them', async () => {
  const { encodeRecord } = await import('../../../../src/proxy/feed/wire.ts');
  const { createL7Parser } = await import('../../../../src/hubble/l7-parser.ts');
  const client = { id: 211, identity: 259, namespace: 'bench', pod: 'proxied', labels: ['k8s:app=proxied', 'k8s:io.kubernetes.pod.namespace=bench'] };
  const dnsServer = { id: 174, identity: 258, namespace: 'bench', pod: 'dnsmasq', labels: ['k8s:app=dnsmasq', 'k8s:io.kubernetes.pod.namespace=bench'] };
  const eps = new Map([[211, client], [174, dnsServer]]);
  const byIp = new Map([['10.244.1.5', client], ['10.244.1.4', dnsServer]]);
  const parse = createL7Parser({ nodeName: 'node1', resolver: { byIp: (ip) => byIp.get(ip), identityLabels: (id) => (id === 300 ? ['k8s:k8s-app=kube-dns'] : undefined) } });
  const records: AccessLogRecord[] = [
    { l7: 'dns', type: 'request', direction: 'egress', timeMs: 1764921600123.5, verdict: 'forwarded', transport: 'UDP', query: 'q1.bench.lab.', qtypes: ['A'],
      client: { ip: '10.244.1.5', port: 40000, identity: 259, endpoint: client }, server: { ip: '10.96.0.10', port: 53, identity: 258, endpoint: dnsServer } },
    { l7: 'dns', type: 'response', direction: 'egress', timeMs: 1764921600124, verdict: 'forwarded', transport: 'UDP', query: 'q1.bench.lab.', qtypes: ['A'], rcode: 0,
      ips: ['198.51.100.77'], ttl: 300, cnames: [], rrtypes: ['A'], latencyNs: 123456,
      client: { ip: '10.244.1.5', port: 40000, identity: 259, endpoint: client }, server: { ip: '10.244.2.9', port: 53, identity: 300, labels: ['k8s:k8s-app=kube-dns'] } },
    { l7: 'dns', type: 'request', direction: 'egress', timeMs: 1764921600125, verdict: 'denied', transport: 'UDP', query: 'x.lab.', qtypes: ['AAAA'], reason: 'ORIGINAL_DESTINATION_UNKNOWN: test',
      client: { ip: '10.244.1.5', port: 40001, identity: 259, endpoint: client }, server: { ip: '0.0.0.0', port: 53, identity: 2 } },
    { l7: 'http', type: 'request', direction: 'egress', timeMs: 1764921600126, verdict: 'forwarded', endpointId: 211, method: 'GET', url: 'http://a/b', host: 'a', path: '/b', protocol: 'HTTP/1.1', headers: ['Host', 'a'], code: 0, latencyNs: 0,
      client: { ip: '10.244.1.5', port: 40002, identity: 259, endpoint: client }, server: { ip: '10.244.1.4', port: 80, identity: 258, endpoint: dnsServer } } as AccessLogRecord,
  ];
  for (const r of records) {
    const line = JSON.stringify(encodeRecord(r));
    assert.doesNotMatch(line, /k8s:app=/, 'no labels on the wire');
    const back = decodeRecord(JSON.parse(line), (id) => eps.get(id))!;
    assert.ok(back);
    const a = parse(r), b = parse(back);
    assert.deepEqual(b, a, r.l7);
  }
  // the agent's own endpoint view is shared by the flows (no label sort per record)
  const f1 = parse(decodeRecord(JSON.parse(JSON.stringify(encodeRecord(records[0]!))), (id) => eps.get(id))!);
  const f2 = parse(decodeRecord(JSON.parse(JSON.stringify(encodeRecord(records[1]!))), (id) => eps.get(id))!);
  assert.equal(f1.source, f2.destination);
});

test('attacker: an item on the feed that is not a record of either shape is refused, never turned into a flow', () => {
  for (const w of [null, 7, 'x', {}, [], [0], [1, null, '1', 1, 1, 1, '2', 2, 2, 2], [1, {}, 'a'], [3, ...Array(22).fill(0)], [2, ...Array(21).fill(0)], Array(23).fill(0).map((_, i) => (i === 0 ? 0 : 0)).slice(0, 22)]) {
    assert.equal(decodeRecord(w as never, () => undefined), undefined, JSON.stringify(w));
  }
});

test('feed: a DNS response after its request in the same message travels as the answer alone (tag 3), whole when a split or the cap parts them; the agent gets both records as they were made', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const got: AccessLogRecord[] = [];
  const tags: number[] = [];
  let lostSeen = 0, badSeen = 0;
  const mkServer = () => createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1),
    onRecords: (items, lost) => {
      for (const w of items) tags.push(w[0]);
      const { records, bad } = decodeRecords(items, () => undefined);
      got.push(...records);
      lostSeen += lost;
      badSeen += bad;
    },
  });
  let server = mkServer();
  await server.start();
  let snaps = 0;
  const client = createFeedClient({ socketPath, retryMs: 20, bufferRecords: 700, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  // queries in flight as the proxy has them: requests of a drain, then their answers, each pair sharing its client peer
  const server53 = { ip: '10.244.1.3', port: 53, identity: 2000 };
  const pair = (n: number): [AccessLogRecord, AccessLogRecord] => {
    const client = { ip: '10.244.1.2', port: 30000 + n, identity: 1000 };
    const q = { l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: n, client, server: server53, transport: 'UDP', query: `q${n}.bench.lab.`, qtypes: ['A'] } as AccessLogRecord;
    const a = { l7: 'dns', type: 'response', verdict: 'forwarded', direction: 'egress', timeMs: n + 0.5, client, server: server53, transport: 'UDP', query: `q${n}.bench.lab.`, qtypes: ['A'], rcode: 0, ips: ['198.51.100.77'], ttl: 300, cnames: [], rrtypes: ['A'], latencyNs: 1234 } as AccessLogRecord;
    return [q, a];
  };
  const sent: AccessLogRecord[] = [];
  // 300 queries, 20 in flight: 600 records, split 128 by 128 (some pairs across a split)
  const pairs = Array.from({ length: 300 }, (_, i) => pair(i + 1));
  for (let i = 0; i < 300; i += 20) {
    for (let k = i; k < i + 20; k++) { client.record(pairs[k]![0]); sent.push(pairs[k]![0]); }
    for (let k = i; k < i + 20; k++) { client.record(pairs[k]![1]); sent.push(pairs[k]![1]); }
  }
  await until(() => got.length === 600).catch((e: Error) => { throw new Error(`${e.message}: got ${got.length}, bad ${badSeen}`); });
  const plain = (r: AccessLogRecord[]) => JSON.parse(JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))) as unknown;
  assert.deepEqual(plain(got), plain(sent));
  // 600 records in messages of 128: up to 20 pairs parted at each of the 4 splits
  const answersAlone = tags.filter((x) => x === 3).length;
  assert.ok(answersAlone >= 300 - 4 * 20, `most answers go as tag 3 (${answersAlone})`);
  assert.equal(tags.filter((x) => x === 0).length, 300 + (300 - answersAlone), 'the answers parted from their request by a split went whole');
  assert.equal(badSeen, 0);
  // the agent away: the cap (700) drops the oldest records, requests among them; their answers are lost too, the rest arrive whole and right
  await server.stop();
  await until(() => !client.connected());
  got.length = 0;
  const later = Array.from({ length: 400 }, (_, i) => pair(1000 + i));
  for (const [q] of later) client.record(q);
  for (const [, a] of later) client.record(a);
  server = mkServer();
  await server.start();
  t.after(() => server.stop());
  // 800 records, 700 kept: the first 100 requests shifted out (100 lost), so their answers are dropped (100 more)
  await until(() => lostSeen === 200 && got.length === 600).catch((e: Error) => { throw new Error(`${e.message}: lost ${lostSeen}, got ${got.length}, bad ${badSeen}`); });
  assert.deepEqual(plain(got), plain([...later.slice(100).map(([q]) => q), ...later.slice(100).map(([, a]) => a)]));
  assert.equal(badSeen, 0);
});

test('attacker: a tag-3 record pointing nowhere, at itself, past the message or at a non-request is no record', () => {
  const req = encodeRecord({ l7: 'dns', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 1, client: { ip: '10.0.0.1', port: 5, identity: 1 }, server: { ip: '10.0.0.2', port: 53, identity: 2 }, transport: 'UDP', query: 'a.', qtypes: ['A'] } as AccessLogRecord);
  const http = encodeRecord({ l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: 1, client: { ip: '10.0.0.1', port: 5, identity: 1 }, server: { ip: '10.0.0.2', port: 80, identity: 2 }, endpointId: 0, method: 'GET', url: '/', host: 'h', path: '/', protocol: 'HTTP/1.1', headers: [], code: 0, latencyNs: 0 } as AccessLogRecord);
  const ans = (back: unknown) => [3, back, 0, 2, 0, ['1.2.3.4'], 30, 0, 0, 5, ''] as never;
  for (const [items, bad] of [[[ans(1)], 1], [[req, ans(0)], 1], [[req, ans(2)], 1], [[req, ans(-1)], 1], [[http, ans(1)], 1], [[req, ans('1')], 1], [[req, ans(1.5)], 1], [[req, ans(1)], 0], [[req, [3, 1, 0]], 1]] as const) {
    const r = decodeRecords(items as never, () => undefined);
    assert.equal(r.bad, bad, JSON.stringify(items));
    assert.equal(r.records.length, items.length - bad);
  }
  assert.equal(decodeRecord(ans(1), () => undefined), undefined, 'no earlier records: no answer record');
});

test('an agent that stops reading does not grow the proxy: records past the unsent bound wait in the bounded buffer, the oldest counted as lost', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  // an "agent" that accepts and then reads nothing until told to
  let agent: Socket | undefined;
  const server = createServer((s) => { agent = s; s.pause(); });
  await new Promise<void>((r) => server.listen(socketPath, r));
  t.after(() => { agent?.destroy(); server.close(); });
  const cap = 2000;
  const client = createFeedClient({ socketPath, retryMs: 20, bufferRecords: cap, onSnapshot: () => {}, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => client.connected() && agent !== undefined);
  const peer = (ip: string) => ({ ip, port: 80, identity: 1000 });
  const path = `/${'x'.repeat(200)}`;
  const rec = (n: number) => ({ l7: 'http', type: 'request', timeMs: n, client: peer('10.244.1.2'), server: peer('10.244.1.3'), http: { method: 'GET', url: path, protocol: 'HTTP/1.1', headers: [] } } as unknown as AccessLogRecord);
  // ~300 bytes a record: 100,000 of them are ~30 MB the proxy would otherwise keep unsent
  const pushed = 100_000;
  for (let i = 0; i < pushed; i++) {
    client.record(rec(i));
    if (i % 500 === 499) await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 50));
  // the agent reads again: what arrives plus what was counted lost is every record, and what arrives is bounded
  let items = 0, lost = 0, bytes = 0, rest = '';
  agent!.on('data', (d: Buffer) => {
    bytes += d.length;
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop()!;
    for (const l of lines) {
      const m = JSON.parse(l) as { t: string; items?: unknown[]; lost?: number };
      if (m.t === 'records') { items += m.items!.length; lost += m.lost ?? 0; }
    }
  });
  agent!.resume();
  await until(() => items + lost === pushed, 10_000);
  assert.ok(lost > 0, 'records past the bound are counted as lost');
  assert.ok(bytes < 12 << 20, `the proxy kept at most its unsent bound (4 MiB), the kernel's buffer and ${cap} records, not ${bytes} bytes`);
});

test('feed: while the proxy\'s loop has time to spare a message closes at its first record past quickMessageMs; a busy loop keeps messageMs; records of a frame the agent never got are counted as lost', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  const arrived = new Map<number, number>();
  const inMessage = new Map<number, number>();
  let messages = 0;
  let lostSeen = 0;
  const mkServer = () => createFeedServer({
    socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1),
    onRecords: (items, lost) => {
      const at = performance.now();
      messages++;
      for (const w of items) { const n = decodeRecord(w, () => undefined)!.timeMs; arrived.set(n, at); inMessage.set(n, messages); }
      lostSeen += lost;
    },
  });
  let server = mkServer();
  await server.start();
  let snaps = 0;
  // three records a message at most: the third closes it, the next opens another (which looks at the loop since the last one began)
  const client = createFeedClient({ socketPath, retryMs: 20, recordsPerMessage: 3, messageMs: 2000, quickMessageMs: 1, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  // the agent's caps (binary frames) arrive with the snapshot's hello exchange
  await new Promise((r) => setTimeout(r, 50));
  const rec = (n: number) => httpRequest(n);
  // idle: the loop waits between messages
  client.record(rec(1));
  await new Promise((r) => setTimeout(r, 300));
  client.record(rec(2));
  client.record(rec(20));
  // (a flush sends the open message too: the next one begins after this one arrived)
  await until(() => arrived.has(2));
  let t0 = performance.now();
  client.record(rec(3));
  // the message closes at its first record past quickMessageMs
  await new Promise((r) => setTimeout(r, 20));
  client.record(rec(30));
  await until(() => arrived.has(3));
  assert.ok(arrived.get(3)! - t0 < 1500, `quick message after ${arrived.get(3)! - t0} ms`);
  // busy: the loop ran without a pause (most of the time) since the last message began
  const spin = performance.now() + 300;
  while (performance.now() < spin) { /* the proxy's loop busy */ }
  t0 = performance.now();
  client.record(rec(4));
  await new Promise((r) => setTimeout(r, 20));
  client.record(rec(40));
  await until(() => arrived.has(4), 5000);
  assert.ok(arrived.get(4)! - t0 >= 1999, `a busy loop's message waited ${arrived.get(4)! - t0} ms`);
  assert.equal(inMessage.get(40), inMessage.get(4), 'one message');
  // the agent goes with a message open: its records are not sent to the next one, they are counted as lost
  client.record(rec(7));
  await server.stop();
  await until(() => !client.connected());
  server = mkServer();
  await server.start();
  t.after(() => server.stop());
  client.record(rec(8));
  client.record(rec(9));
  await until(() => arrived.has(9) && lostSeen === 1);
  assert.equal(arrived.has(7), false);
});

test('feed: a frame sent before its timer (full) leaves the timer nothing to flush after a pause; a frame the timer closes is flushed once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-timer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'l7proxy.sock');
  let got = 0;
  const server = createFeedServer({ socketPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1), onRecords: (items) => { got += items.length; } });
  await server.start();
  t.after(() => server.stop());
  // flushes counted: each (the agent connected) reads its socket's writableLength once, for the unsent bound
  const { Socket: NetSocket } = await import('node:net');
  const { Writable } = await import('node:stream');
  const length = Object.getOwnPropertyDescriptor(Writable.prototype, 'writableLength')!;
  let flushes = 0;
  Object.defineProperty(NetSocket.prototype, 'writableLength', { configurable: true, get(this: Socket) { flushes++; return length.get!.call(this); } });
  t.after(() => { delete (NetSocket.prototype as { writableLength?: number }).writableLength; });
  let snaps = 0;
  const client = createFeedClient({ socketPath, retryMs: 20, recordsPerMessage: 4, messageMs: 40, quickMessageMs: 0, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  // the agent's caps: records go into frames from now on
  await new Promise((r) => setTimeout(r, 50));
  const rec = (n: number) => httpRequest(n);
  flushes = 0;
  // full at 4: the frame goes at the end of this turn, its timer (40 ms) armed all the same
  for (let i = 1; i <= 4; i++) client.record(rec(i));
  await until(() => got === 4);
  assert.equal(flushes, 1, 'the full frame: one flush');
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(flushes, 1, 'the pause after it: no flush for nothing');
  // the positive control: a frame that does not fill goes by its timer, one flush
  client.record(rec(5));
  client.record(rec(6));
  await until(() => got === 6);
  assert.equal(flushes, 2, 'the timer flushed the open frame');
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(flushes, 2);
});

test('attacker: an agent that dies with a message half read (cut mid-frame) and a new one in its place: no record of the cut frame, no record with another connection\'s peers or identity, the string tables start over on both ends', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'feed-cut-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const agentPath = join(dir, 'agent.sock');
  const relayPath = join(dir, 'l7proxy.sock');
  const { FRAME_HEADER, FRAME_MARK } = await import('../../../../src/proxy/feed/record-codec.ts');
  const got: AccessLogRecord[][] = [[], []];
  let bad = 0, lostSeen = 0, agent = 0;
  const mkServer = () => {
    const mine = agent;
    return createFeedServer({
      socketPath: agentPath, pollMs: 10, fingerprint: () => '1', snapshot: async () => snapshot(1),
      onRecords: (items, lost) => { const r = decodeRecords(items, () => undefined); got[mine]!.push(...r.records); bad += r.bad; lostSeen += lost; },
    });
  };
  let server = mkServer();
  await server.start();
  // between the proxy and the agent: forwards whole lines and frames, and once two frames went, half of the third, then both ends are cut (the agent dies mid-read)
  let frames = 0, cut = false, replaced = false;
  const links: Socket[] = [];
  const relay = createServer((down) => {
    // the dead agent's socket answers nobody until the new agent is up
    if (cut && !replaced) { down.destroy(); return; }
    const up = connect(agentPath);
    links.push(down, up);
    up.on('error', () => {});
    down.on('error', () => {});
    up.pipe(down);
    let pending = Buffer.alloc(0);
    down.on('data', (d: Buffer) => {
      if (cut && links.indexOf(down) < 2) return;
      pending = Buffer.concat([pending, d]);
      for (;;) {
        if (!pending.length) break;
        if (pending[0] !== FRAME_MARK) {
          const nl = pending.indexOf(10);
          if (nl < 0) break;
          up.write(pending.subarray(0, nl + 1));
          pending = pending.subarray(nl + 1);
          continue;
        }
        if (pending.length < FRAME_HEADER || pending.length < FRAME_HEADER + pending.readUInt32LE(1)) break;
        const n = FRAME_HEADER + pending.readUInt32LE(1);
        if (!cut && links.indexOf(down) === 0 && ++frames === 3) {
          cut = true;
          up.write(pending.subarray(0, n >> 1), () => { up.destroy(); down.destroy(); });
          return;
        }
        up.write(pending.subarray(0, n));
        pending = pending.subarray(n);
      }
    });
  });
  await new Promise<void>((r) => relay.listen(relayPath, r));
  t.after(() => { for (const s of links) s.destroy(); relay.close(); });
  let snaps = 0;
  const client = createFeedClient({ socketPath: relayPath, retryMs: 20, recordsPerMessage: 16, quickMessageMs: 0, messageMs: 5, onSnapshot: () => { snaps++; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  await until(() => snaps === 1);
  await new Promise((r) => setTimeout(r, 50));
  // every connection its own address, port and identity (n), the TLS record of its handshake and an HTTP request inside it
  const peerOf = (n: number) => ({ ip: `10.244.${n >> 8}.${n & 255}`, port: 20000 + n, identity: 100000 + n });
  const recs = (n: number): AccessLogRecord[] => [
    { l7: 'tls', verdict: 'forwarded', direction: 'egress', timeMs: n, client: peerOf(n), server: { ip: '10.96.0.1', port: 443, identity: 2 }, endpointId: 7, sni: `s${n}.example`, intercepted: true, version: 'TLS 1.3' },
    { l7: 'http', type: 'request', verdict: 'forwarded', direction: 'egress', timeMs: n, client: peerOf(n), server: { ip: '10.96.0.1', port: 443, identity: 2 }, endpointId: 7, method: 'GET', url: `https://s${n}.example/`, host: `s${n}.example`, path: '/', protocol: 'HTTP/1.1', headers: [], code: 0, latencyNs: 0, tls: { sni: `s${n}.example`, intercepted: true } },
  ];
  for (let n = 1; n <= 60; n++) for (const r of recs(n)) client.record(r);
  await until(() => cut && !client.connected());
  await server.stop();
  agent = 1;
  server = mkServer();
  await server.start();
  replaced = true;
  t.after(() => server.stop());
  await until(() => client.connected());
  await new Promise((r) => setTimeout(r, 50));
  for (let n = 61; n <= 120; n++) for (const r of recs(n)) client.record(r);
  await until(() => got[1]!.filter((r) => r.timeMs > 60).length === 120);
  // the first agent: the two whole frames (16 records each), nothing of the third
  assert.equal(got[0]!.length, 32);
  assert.equal(bad, 0, 'no record refused: the new agent\'s table and the proxy\'s started over together');
  for (const r of [...got[0]!, ...got[1]!]) {
    const p = peerOf(r.timeMs);
    assert.deepEqual([r.client.ip, r.client.port, r.client.identity], [p.ip, p.port, p.identity], `record of connection ${r.timeMs}`);
    if (r.l7 === 'tls') assert.equal(r.sni, `s${r.timeMs}.example`);
    else if (r.l7 === 'http') assert.equal(r.url, `https://s${r.timeMs}.example/`);
  }
  // what the proxy still held when the agent went is counted as lost, sent to the next agent; nothing arrives twice
  const all = [...got[0]!, ...got[1]!].map((r) => `${r.l7}${r.timeMs}`);
  assert.equal(new Set(all).size, all.length);
  assert.ok(got[0]!.length + got[1]!.length + lostSeen <= 240);
});
