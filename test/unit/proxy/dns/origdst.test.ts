/**
 * The original destination of a steered query (src/proxy/dns/origdst.ts) read from real BPF
 * conntrack tables: an ARRAY_OF_MAPS pinned as mb_ct_tables in a bpffs directory of the test's
 * own, the endpoint's own LRU table in it (the datapath's layout, bpf/lib/maps.h), entries
 * written as the datapath writes a UDP query's egress entry. Candidates by point lookup, others
 * by the scan; what is not the query's own entry (another client or port, not UDP, not port 53,
 * the other family, an endpoint without a table) never names its destination.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { BpfMap, MapType } from '../../../../src/sys/bpf.ts';
import { sockAddrOf } from '../../../../src/sys/sock-addr.ts';
import { CT_KEY_SIZE, CT_VAL_SIZE, ctOwnIndex } from '../../../../src/datapath/linux/codec.ts';
import { createOrigDstLookup, LAST_MAX } from '../../../../src/proxy/dns/origdst.ts';

const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

/** A UDP egress entry's key (struct ct_key): client → dst:dport, its family, endpoint `ep`. */
function ctKey(client: string, sport: number, dst: string, dport: number, ep: number, proto = 17): Buffer {
  const k = Buffer.alloc(CT_KEY_SIZE);
  const c = sockAddrOf(client)!, d = sockAddrOf(dst)!;
  c.bytes.copy(k, 0);
  d.bytes.copy(k, 16);
  k.writeUInt16BE(sport, 32);
  k.writeUInt16BE(dport, 34);
  k[36] = proto;
  k[37] = c.family;
  k[38] = 2; // DIR_EGRESS
  k.writeUInt16LE(ep, 40);
  return k;
}

function tables(t: { after(f: () => void): void }): { pinRoot: string; own: BpfMap } {
  const pinRoot = `/sys/fs/bpf/mbtest-origdst-${process.pid}-${Math.random().toString(36).slice(2)}`;
  mkdirSync(pinRoot);
  t.after(() => rmSync(pinRoot, { recursive: true, force: true }));
  const own = BpfMap.create(MapType.LRU_HASH, 'mbt_ct_own', CT_KEY_SIZE, CT_VAL_SIZE, 1024);
  t.after(() => own.close());
  const outer = BpfMap.create(MapType.ARRAY_OF_MAPS, 'mbt_ct_tables', 4, 4, 64, { innerMapFd: own.fd });
  t.after(() => outer.close());
  outer.update(u32(ctOwnIndex(7)), u32(own.fd));
  outer.pin(`${pinRoot}/mb_ct_tables`);
  return { pinRoot, own };
}

test('origdst: a candidate by point lookup, another destination by the scan, each query on its own port', (t) => {
  const { pinRoot, own } = tables(t);
  const val = Buffer.alloc(CT_VAL_SIZE);
  own.update(ctKey('10.244.1.5', 40000, '10.96.0.10', 53, 7), val);
  own.update(ctKey('10.244.1.5', 40001, '10.244.2.9', 53, 7), val);
  const lookup = createOrigDstLookup({ pinRoot, candidates: () => ['10.244.3.3', '10.96.0.10'] });
  const c = sockAddrOf('10.244.1.5')!;
  assert.equal(lookup(c, 40000, 7), '10.96.0.10');
  assert.equal(lookup(c, 40001, 7), '10.244.2.9', 'not a candidate: found by the scan');
  // many fresh source ports (a resolver's), each its own entry
  for (let p = 41000; p < 41300; p++) own.update(ctKey('10.244.1.5', p, '10.96.0.10', 53, 7), val);
  for (let p = 41000; p < 41300; p++) assert.equal(lookup(c, p, 7), '10.96.0.10');
});

test('attacker: an entry that is not the query\'s own egress UDP entry to port 53 never names its destination', (t) => {
  const { pinRoot, own } = tables(t);
  const val = Buffer.alloc(CT_VAL_SIZE);
  own.update(ctKey('10.244.1.5', 40000, '10.96.0.10', 5353, 7), val); // another port
  own.update(ctKey('10.244.1.5', 40001, '10.96.0.10', 53, 7, 6), val); // TCP
  own.update(ctKey('10.244.1.6', 40002, '10.96.0.10', 53, 7), val); // another client
  const lookup = createOrigDstLookup({ pinRoot, candidates: () => ['10.96.0.10'] });
  const c = sockAddrOf('10.244.1.5')!;
  for (const port of [40000, 40001, 40002, 40003]) {
    const got = lookup(c, port, 7);
    assert.equal(typeof got, 'object', `port ${port}: ${String(got)}`);
    assert.equal((got as { code: string }).code, 'ORIGINAL_DESTINATION_UNKNOWN');
  }
  // an IPv6 client never takes an IPv4 entry of the same port
  const got6 = lookup(sockAddrOf('fd00::5')!, 40000, 7);
  assert.equal(typeof got6, 'object');
  // an endpoint without a table
  assert.match((lookup(c, 40000, 9) as { reason: string }).reason, /no conntrack table/);
});

test('origdst: endpoints come and go: the last destination is remembered for LAST_MAX endpoints at most, the least recently found forgotten first; one whose table is gone at once; every query still answered', (t) => {
  const n = LAST_MAX + 100;
  const pinRoot = `/sys/fs/bpf/mbtest-origdst-${process.pid}-${Math.random().toString(36).slice(2)}`;
  mkdirSync(pinRoot);
  t.after(() => rmSync(pinRoot, { recursive: true, force: true }));
  const own = BpfMap.create(MapType.LRU_HASH, 'mbt_ct_own', CT_KEY_SIZE, CT_VAL_SIZE, 4 * n);
  t.after(() => own.close());
  // every endpoint's slot holds the one table (the entries name their endpoint)
  const outer = BpfMap.create(MapType.ARRAY_OF_MAPS, 'mbt_ct_tables', 4, 4, ctOwnIndex(n + 2), { innerMapFd: own.fd });
  t.after(() => outer.close());
  for (let ep = 1; ep <= n; ep++) outer.update(u32(ctOwnIndex(ep)), u32(own.fd));
  outer.pin(`${pinRoot}/mb_ct_tables`);
  const val = Buffer.alloc(CT_VAL_SIZE);
  // each endpoint's query on a port of its own (the recent (client, port) cache never answers for another)
  const port = (ep: number, k = 0) => 10000 + ep + k * (n + 1);
  for (let ep = 1; ep <= n; ep++) {
    own.update(ctKey('10.244.1.5', port(ep), '10.96.0.10', 53, ep), val);
    own.update(ctKey('10.244.1.5', port(ep, 1), '10.96.0.10', 53, ep), val);
  }
  const lookup = createOrigDstLookup({ pinRoot, candidates: () => ['10.96.0.10'] });
  const c = sockAddrOf('10.244.1.5')!;
  for (let ep = 1; ep <= n; ep++) {
    assert.equal(lookup(c, port(ep), ep), '10.96.0.10', `endpoint ${ep}`);
    assert.equal(lookup.remembered(), Math.min(ep, LAST_MAX));
  }
  // the first ones were forgotten: answered again (by the candidates), remembered again in place of the least recent
  assert.equal(lookup(c, port(1, 1), 1), '10.96.0.10');
  assert.equal(lookup.remembered(), LAST_MAX);
  // an endpoint gone (its table's slot emptied, its entries with it): forgotten by its next query
  outer.delete(u32(ctOwnIndex(n)));
  own.delete(ctKey('10.244.1.5', port(n, 1), '10.96.0.10', 53, n));
  const gone = lookup(c, port(n, 1), n);
  assert.equal((gone as { code: string }).code, 'ORIGINAL_DESTINATION_UNKNOWN');
  assert.equal(lookup.remembered(), LAST_MAX - 1);
});
