/**
 * The agent's side of the proxy feed with a real policy engine and a real proxy-side client over
 * a unix socket: a snapshot's DNS names follow the ipcache's winning FQDN entries as they change
 * (kept as they change, not found by a walk of the whole ipcache per snapshot).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgentProxyFeed } from '../../../src/agent/proxy-feed.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { createFeedClient } from '../../../src/proxy/feed/client.ts';
import type { ProxySnapshot } from '../../../src/proxy/feed/snapshot.ts';

test('proxy feed: a snapshot names the IPs whose winning ipcache entry is an FQDN one, before and after the feed started, and no other', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'agent-feed-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const policy = createAgentPolicyEngine();
  const ipc = policy.engine.ipcache;
  const names = new Map([['198.51.100.1', ['a.example']], ['198.51.100.2', ['b.example']], ['198.51.100.3', ['c.example']], ['10.244.1.9', ['pod.example']]]);
  ipc.upsert('198.51.100.1/32', 16777217, 'fqdn'); // before the feed starts
  const feed = createAgentProxyFeed({
    socketPath: join(dir, 'l7proxy.sock'), agent: () => undefined, policy, nodeAddrs: [],
    resolved: () => { throw new Error('no endpoints here'); },
    namesForIp: (ip) => names.get(ip) ?? [], emitRecord: () => {},
    logger: { info: () => {}, warn: () => {} },
  });
  await feed.start();
  t.after(() => feed.stop());
  let snap: ProxySnapshot | undefined;
  const client = createFeedClient({ socketPath: join(dir, 'l7proxy.sock'), retryMs: 10, onSnapshot: (s) => { snap = s; }, onIpcache: () => {}, handle: async () => ({}), statusRows: () => [] });
  client.start();
  t.after(() => client.stop());
  for (let i = 0; !snap; i++) { assert.ok(i < 500, 'no first snapshot'); await new Promise((r) => setTimeout(r, 10)); }
  const named = async () => { await feed.settled(); return Object.fromEntries(snap!.names); };
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'] });
  ipc.upsert('198.51.100.2/32', 16777218, 'fqdn');
  ipc.upsert('198.51.100.3/32', 16777219, 'fqdn');
  ipc.upsert('10.244.1.8/32', 300, 'endpoint');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'], '198.51.100.2': ['b.example'], '198.51.100.3': ['c.example'] });
  // an endpoint claim wins over the FQDN one: the address is the pod's, its DNS names are not sent
  ipc.upsert('198.51.100.2/32', 301, 'endpoint');
  ipc.delete('198.51.100.3/32', 'fqdn');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'] });
  // the endpoint goes: the FQDN claim under it wins again
  ipc.delete('198.51.100.2/32', 'endpoint');
  assert.deepEqual(await named(), { '198.51.100.1': ['a.example'], '198.51.100.2': ['b.example'] });
  // an FQDN claim under an endpoint's is not the winner: no names
  ipc.upsert('10.244.1.9/32', 302, 'endpoint');
  ipc.upsert('10.244.1.9/32', 16777220, 'fqdn');
  assert.deepEqual(Object.keys(await named()).sort(), ['198.51.100.1', '198.51.100.2']);
});
