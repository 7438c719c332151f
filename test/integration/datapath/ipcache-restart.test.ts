// The pinned ipcache after an agent restart: a new agent's writes are compared with what the
// previous agent left (read once in batches) and only the difference reaches the kernel; the map
// ends up holding exactly what was written, whatever was skipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { skipUnless } from '../../support/requirements.ts';
import { Loader } from '../../../src/datapath/linux/loader.ts';
import { IPCacheMap } from '../../../src/datapath/linux/ipcache.ts';
import type { IPCacheEntry } from '../../../src/datapath/types.ts';

const OBJ = fileURLToPath(new URL('../../../dist/bpf/endpoint.bpf.o', import.meta.url));

test('ipcache after a restart: unchanged entries are not written again, changed ones are, the map holds every entry', { skip: skipUnless('root') }, () => {
  const pinRoot = mkdtempSync('/sys/fs/bpf/mb-ipcache-restart-');
  const loaders: Loader[] = [];
  const open = () => { const l = new Loader(); l.load(OBJ, pinRoot); loaders.push(l); return new IPCacheMap(l); };
  try {
    const first = open();
    const remote = (i: number, identity: number, tunnel = '192.0.2.2'): IPCacheEntry => ({ prefix: `10.9.${i >> 8}.${i & 255}/32`, identity, endpointId: 0, tunnelEndpoint: tunnel });
    const before = [...Array.from({ length: 5000 }, (_, i) => remote(i, 70000 + (i % 7))), { prefix: '10.244.1.5/32', identity: 4242, endpointId: 12 }, { prefix: '203.0.113.0/24', identity: 16777217, endpointId: 0 }];
    assert.equal(first.upsert(before), before.length);
    loaders[0]!.close(); // the agent is gone; the pins stay

    const second = open();
    const after = before.map((e, i) => (i === 3 ? { ...e, identity: 99 } : i === 4 ? { ...e, tunnelEndpoint: '192.0.2.3' } : i === 5000 ? { ...e, endpointId: 0 } : e));
    // a /24 is never compared (written as it comes); entries 3, 4 and 5000 changed
    assert.equal(second.upsert(after), 4);
    // written a second time: nothing is compared any more for those addresses, all go in again
    assert.equal(second.upsert(after.slice(0, 10)), 10);
    second.delete(['10.9.0.7/32']);
    const got = new Map(second.dump().map((e) => [e.prefix, e]));
    assert.equal(got.size, after.length - 1);
    for (const e of after) {
      if (e.prefix === '10.9.0.7/32') { assert.equal(got.has(e.prefix), false); continue; }
      const k = got.get(e.prefix);
      assert.ok(k, e.prefix);
      assert.equal(k.identity, e.identity, e.prefix);
      assert.equal(k.endpointId ?? 0, e.endpointId ?? 0, e.prefix);
      assert.equal(k.tunnelEndpoint, e.tunnelEndpoint, e.prefix);
    }
    // the prune's read ends the comparison: the next write goes to the kernel
    assert.equal(second.prefixes().length, after.length - 1);
    assert.equal(second.upsert([after[100]!]), 1);
  } finally {
    for (const l of loaders) l.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
});
