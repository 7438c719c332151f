// A single-node agent killed (SIGKILL) inside the identity store's 50 ms window: FQDN identities
// already in the pinned ipcache (and the policy maps and the proxies' state by their number) but not
// in the store. The restarted agent holds the numbers the pinned ipcache carries (daemon.ts, as
// Cilium restores local identities from the pinned ipcache): the same prefix gets its number back,
// other labels never get it while the maps may still mean the old labels by it. Needs root (bpffs).
// Removes its pins and files in finally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { skipUnless } from '../../support/requirements.ts';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { openPersistentAllocator } from '../../../src/agent/identity-store.ts';
import { fqdnIdentityLabels } from '../../../src/identity/labels.ts';
import { Loader } from '../../../src/datapath/linux/loader.ts';
import { IPCacheMap } from '../../../src/datapath/linux/ipcache.ts';

const OBJ = fileURLToPath(new URL('../../../dist/bpf/endpoint.bpf.o', import.meta.url));
const AGENT = fileURLToPath(new URL('./support/fqdn-identity-agent.ts', import.meta.url));
const NODE = fileURLToPath(new URL('../../../bin/node', import.meta.url));
const sels = [{ matchPattern: '*.lab' }];

test('agent killed inside the identity store\'s window: the restart keeps the FQDN identities the pinned ipcache carries', { skip: skipUnless('root') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-restart-'));
  const pinRoot = mkdtempSync('/sys/fs/bpf/mb-identity-restart-');
  const storeFile = join(dir, 'store.json');
  let loader: Loader | undefined;
  let kv: Awaited<ReturnType<typeof openMemoryStore>> | undefined;
  try {
    const run = spawnSync(NODE, [AGENT, storeFile, pinRoot, OBJ], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(run.signal, 'SIGKILL', `the agent died by SIGKILL: ${run.stderr}`);
    const { kept, lost } = JSON.parse(run.stdout) as { kept: number; lost: [number, number] };

    // the restart, as the daemon does it: the store, then the datapath over the pins, then the hold
    kv = await openMemoryStore({ file: storeFile });
    const { allocator } = await openPersistentAllocator(kv);
    assert.equal(allocator.lookupById(kept), allocator.lookupByLabels(fqdnIdentityLabels('198.51.100.10', sels)), 'written before the kill: restored (positive control)');
    for (const id of lost) assert.equal(allocator.lookupById(id), undefined, `identity ${id} was lost to the kill (inside the window)`);
    loader = new Loader();
    loader.load(OBJ, pinRoot);
    const ipcache = new IPCacheMap(loader);
    const local = ipcache.localEntries();
    assert.deepEqual(local.map((e) => e.identity).sort(), [kept, ...lost].sort(), 'the pinned ipcache carries all three');
    assert.equal(allocator.hold(local), 2, 'the two numbers the store did not restore are held');

    // new labels (another name's address, a policy's CIDR) never take a held number
    const others = ['203.0.113.99', '203.0.113.100', '198.51.100.77'].map((ip) => allocator.allocateSync(fqdnIdentityLabels(ip, sels)).identity.id);
    for (const id of others) assert.ok(![kept, ...lost].includes(id), `new labels got ${id}, a number the maps still carry (${[kept, ...lost].join(', ')})`);
    // the address learnt again (the restored DNS cache, a new answer) gets its number back, by its
    // cidr label, whatever its other labels now are
    assert.equal(allocator.allocateSync(fqdnIdentityLabels('203.0.113.20', sels)).identity.id, lost[0]);
    assert.equal(allocator.allocateSync(fqdnIdentityLabels('203.0.113.21', [...sels, { matchName: 'api.lab' }])).identity.id, lost[1]);
    assert.equal(allocator.releaseHeld(), 0, 'both claimed: nothing left held');
  } finally {
    loader?.close();
    await kv?.close({ keepLeases: true });
    rmSync(pinRoot, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});
