// The pinned ipcache after an agent restart: a new agent's writes are compared with what the
// previous agent left (read once in batches) and only the difference reaches the kernel; the map
// ends up holding exactly what was written, whatever was skipped; the exact-address hash beside the
// trie (mb_ipcache_host) holds the trie's host entries and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { skipUnless } from '../../support/requirements.ts';
import { Loader } from '../../../src/datapath/linux/loader.ts';
import { IPCacheMap } from '../../../src/datapath/linux/ipcache.ts';
import type { IPCacheEntry } from '../../../src/datapath/types.ts';
import { IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE, decodeIpcacheKey, decodeIpcacheVal, encodeIpcacheKey, encodeIpcacheVal } from '../../../src/datapath/linux/codec.ts';

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

test('mb_ipcache_host holds exactly the trie\'s host entries: after upserts, deletes and a restart that finds a stale one', { skip: skipUnless('root') }, () => {
  const pinRoot = mkdtempSync('/sys/fs/bpf/mb-ipcache-host-');
  const loaders: Loader[] = [];
  const open = () => { const l = new Loader(); l.load(OBJ, pinRoot); loaders.push(l); return new IPCacheMap(l); };
  /** prefix -> identity/endpoint/tunnel of one map */
  const read = (name: 'mb_ipcache' | 'mb_ipcache_host') => {
    const out = new Map<string, string>();
    loaders.at(-1)!.map(name).forEachBatch(64, (keys, vals, count) => {
      for (let i = 0; i < count; i++) {
        const v = decodeIpcacheVal(vals.subarray(i * IPCACHE_VAL_SIZE, (i + 1) * IPCACHE_VAL_SIZE));
        out.set(decodeIpcacheKey(keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE)), `${v.identity}/${v.endpointId}/${v.tunnelEndpoint ?? ''}`);
      }
    });
    return out;
  };
  const hostOfTrie = () => new Map([...read('mb_ipcache')].filter(([p]) => p.endsWith('/32') || p.endsWith('/128')));
  try {
    const first = open();
    first.upsert([
      { prefix: '10.244.1.5/32', identity: 4242, endpointId: 12 },
      { prefix: '10.244.2.7/32', identity: 4343, endpointId: 0, tunnelEndpoint: '192.0.2.2' },
      { prefix: '10.244.2.8/32', identity: 4344, endpointId: 0, tunnelEndpoint: '192.0.2.2' },
      { prefix: 'fd00::5/128', identity: 4242, endpointId: 12 },
      { prefix: '203.0.113.0/24', identity: 16777217, endpointId: 0 },
      { prefix: '0.0.0.0/0', identity: 2, endpointId: 0 },
    ]);
    first.delete(['10.244.2.8/32']);
    first.upsert([{ prefix: '10.244.2.7/32', identity: 4345, endpointId: 0, tunnelEndpoint: '192.0.2.3' }]);
    assert.deepEqual(read('mb_ipcache_host'), hostOfTrie(), 'host entries only (no CIDR), with the trie\'s values');
    assert.equal(read('mb_ipcache_host').size, 3);
    // what an agent stopped between a changed entry's trie write and its hash write leaves behind
    const host = loaders[0]!.map('mb_ipcache_host');
    host.update(encodeIpcacheKey('10.244.1.5/32'), encodeIpcacheVal(7777, 0, undefined));
    host.update(encodeIpcacheKey('10.244.9.9/32'), encodeIpcacheVal(7778, 0, undefined));
    loaders[0]!.close();

    const second = open();
    // the same entries again: the trie's are unchanged (not written), the stale hash ones are gone
    second.upsert([{ prefix: '10.244.1.5/32', identity: 4242, endpointId: 12 }]);
    assert.deepEqual(read('mb_ipcache_host'), new Map([...hostOfTrie()].filter(([p]) => p !== '10.244.1.5/32')), 'the stale entries were removed, none invented');
    assert.equal(read('mb_ipcache_host').has('10.244.9.9/32'), false, 'an address the trie does not hold has no hash entry');
    second.prefixes();
    second.upsert([{ prefix: '10.244.1.5/32', identity: 4242, endpointId: 12 }]);
    assert.deepEqual(read('mb_ipcache_host'), hostOfTrie(), 'written again once compared no more');
  } finally {
    for (const l of loaders) l.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
});
