/**
 * The single-node agent's identities mirrored in its file-backed memory store (identity-store.ts)
 * with a real store on disk: a burst of FQDN identities is one store write, not one per identity;
 * a store opened again restores every identity with its number; what a stop flushes is on disk
 * once the store closes; an identity released before its write is never restored.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openMemoryStore } from '../../../src/kvstore/memory.ts';
import { openPersistentAllocator } from '../../../src/agent/identity-store.ts';
import { fqdnIdentityLabels } from '../../../src/identity/labels.ts';

const sels = [{ matchPattern: '*.fresh.lab' }];

test('identity store: a burst of FQDN identities is one store write, restored with the same numbers; a stop\'s flush is on disk when the store closes; one released before its write is not restored', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'identity-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'store.json');
  const kv = await openMemoryStore({ file });
  const rev0 = await kv.put('membrane/probe', '0');
  const { allocator, flush } = await openPersistentAllocator(kv, { batchMs: 30 });
  const ids = new Map<string, number>();
  for (let i = 1; i <= 200; i++) ids.set(`203.0.113.${i}`, allocator.allocateSync(fqdnIdentityLabels(`203.0.113.${i}`, sels)).identity.id);
  const gone = allocator.allocateSync(fqdnIdentityLabels('198.51.100.1', sels)).identity.id;
  allocator.releaseSync(gone);
  await new Promise((r) => setTimeout(r, 80));
  // the probe's put, then one transaction for the burst (each store write bumps the revision once)
  assert.equal(await kv.put('membrane/probe', '1'), rev0 + 2, 'one store write for 201 allocations and a release');
  // allocated after the batch, flushed by the stop: on disk once the store is closed
  const late = allocator.allocateSync(fqdnIdentityLabels('203.0.113.250', sels)).identity.id;
  flush();
  await kv.close({ keepLeases: true });

  const again = await openMemoryStore({ file });
  t.after(() => again.close({ keepLeases: true }));
  const restored = (await openPersistentAllocator(again)).allocator;
  for (const [ip, id] of ids) assert.equal(restored.lookupByLabels(fqdnIdentityLabels(ip, sels))?.id, id, ip);
  assert.equal(restored.lookupByLabels(fqdnIdentityLabels('203.0.113.250', sels))?.id, late, 'flushed at stop');
  assert.equal(restored.lookupById(gone), undefined, 'released before its write: not restored');
  // the same labels get the same number after the restart; new labels never take a restored number
  assert.equal(restored.allocateSync(fqdnIdentityLabels('203.0.113.7', sels)).identity.id, ids.get('203.0.113.7'));
  const fresh = restored.allocateSync(fqdnIdentityLabels('203.0.113.251', sels)).identity.id;
  assert.ok(![...ids.values(), late].includes(fresh), `${fresh} reused`);
});
