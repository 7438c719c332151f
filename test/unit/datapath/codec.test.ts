// Key/value/event codecs of the eBPF datapath (pure, no root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as C from '../../../src/datapath/linux/codec.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { MapStateEntry } from '../../../src/policy/types.ts';

test('prefixes: IPv4, IPv6, masking, errors', () => {
  assert.deepEqual(C.parsePrefix('10.244.1.5/32').addr.subarray(0, 4), Buffer.from([10, 244, 1, 5]));
  assert.deepEqual(C.parsePrefix('10.244.1.255/24').addr.subarray(0, 4), Buffer.from([10, 244, 1, 0]));
  assert.equal(C.parsePrefix('0.0.0.0/0').len, 0);
  const v6 = C.parsePrefix('2001:db8::1/64');
  assert.equal(v6.family, 6);
  assert.equal(C.formatIp(v6.addr, 0, 6), '2001:db8::');
  assert.equal(C.formatIp(C.parseIPv6('::ffff:10.0.0.1')!, 0, 6), '::ffff:a00:1');
  assert.equal(C.formatIp(C.parseIPv6('::')!, 0, 6), '::');
  assert.throws(() => C.parsePrefix('10.0.0.300/8'), /DATAPATH_BAD_PREFIX|not an IP prefix/);
  assert.throws(() => C.parsePrefix('10.0.0.0/33'));
});

test('ipcache key/value round trip; prefixlen counts the family word', () => {
  const k = C.encodeIpcacheKey('198.51.100.0/24');
  assert.equal(k.length, C.IPCACHE_KEY_SIZE);
  assert.equal(k.readUInt32LE(0), 32 + 24);
  assert.equal(k[4], 4);
  assert.equal(C.decodeIpcacheKey(k), '198.51.100.0/24');
  assert.equal(C.decodeIpcacheKey(C.encodeIpcacheKey('::/0')), '::/0');
  assert.deepEqual(C.decodeIpcacheVal(C.encodeIpcacheVal(16777217, 42)), { identity: 16777217, endpointId: 42 });
  // the tunnel endpoint in network order at offset 8 (struct ipcache_val.tunnel_endpoint)
  const v = C.encodeIpcacheVal(300, 0, '192.0.2.3');
  assert.deepEqual([...v.subarray(8, 12)], [192, 0, 2, 3]);
  assert.deepEqual(C.decodeIpcacheVal(v), { identity: 300, endpointId: 0, tunnelEndpoint: '192.0.2.3' });
});

test('ipcache key and tunnel endpoint of a.b.c.d/32 (written without parsePrefix): the same bytes as the general path', () => {
  const general = (prefix: string) => {
    const p = C.parsePrefix(prefix);
    const b = Buffer.alloc(C.IPCACHE_KEY_SIZE);
    b.writeUInt32LE(32 + p.len, 0); b[4] = p.family; p.addr.copy(b, 8);
    return b;
  };
  const rnd = () => Math.floor(Math.random() * 256);
  const cases = ['0.0.0.0/32', '255.255.255.255/32', '100.96.0.33/32', '010.1.2.3/32', '10.1.2.3/24', '10.1.2.3', 'fd00::1/128', '1.2.3.4/3', '1.2.3.4/320'];
  for (let i = 0; i < 2000; i++) cases.push(`${rnd()}.${rnd()}.${rnd()}.${rnd()}/32`);
  for (const p of cases) {
    const b = Buffer.alloc(C.IPCACHE_KEY_SIZE * 2, 0xaa); // a batch buffer with old bytes in it
    let want: Buffer | Error;
    try { want = general(p); } catch (e) { want = e as Error; }
    if (want instanceof Error) { assert.throws(() => C.encodeIpcacheKeyInto(b, C.IPCACHE_KEY_SIZE, p), p); continue; }
    C.encodeIpcacheKeyInto(b, C.IPCACHE_KEY_SIZE, p);
    assert.deepEqual(b.subarray(C.IPCACHE_KEY_SIZE), want, p);
    assert.equal(C.decodeIpcacheKey(b.subarray(C.IPCACHE_KEY_SIZE)), C.decodeIpcacheKey(want), p);
  }
  for (const t of ['192.0.2.7', '255.255.255.255']) {
    assert.deepEqual(C.encodeIpcacheVal(5, 0, t).subarray(8), C.parsePrefix(`${t}/32`).addr.subarray(0, 4), t);
  }
  // a leading zero is not an address on either path (Go's netip, which Cilium's keys are written with, refuses it too)
  assert.throws(() => C.encodeIpcacheVal(5, 0, '010.0.2.7'), /not an IP prefix/);
});

test('policy key: prefixlen = 64 + (proto ? 8 : 0) + port bits, port big-endian and masked', () => {
  const k = C.encodePolicyKey(7, { direction: 'egress', identity: 256, proto: 6, port: 8080, portPrefixLen: 16 });
  assert.equal(k.length, 15);
  assert.equal(k.readUInt32LE(0), 64 + 8 + 16);
  assert.equal(k.readUInt16LE(4), 7);
  assert.equal(k[6], C.DIR_EGRESS);
  assert.equal(k.readUInt32LE(8), 256);
  assert.equal(k[12], 6);
  assert.equal(k.readUInt16BE(13), 8080);
  const r = C.encodePolicyKey(7, { direction: 'ingress', identity: 0, proto: 17, port: 8191, portPrefixLen: 10 });
  assert.equal(r.readUInt32LE(0), 64 + 8 + 10);
  assert.equal(r.readUInt16BE(13), 8191 & 0xffc0);
  const any = C.encodePolicyKey(7, { direction: 'ingress', identity: 2, proto: 0, port: 0, portPrefixLen: 0 });
  assert.equal(any.readUInt32LE(0), 64);
  assert.deepEqual(C.decodePolicyKey(k), { epId: 7, key: { direction: 'egress', identity: 256, proto: 6, port: 8080, portPrefixLen: 16 } });
  const icmp = C.encodePolicyKey(1, { direction: 'ingress', identity: 5, proto: 1, port: 8, portPrefixLen: 16 });
  assert.equal(icmp.readUInt16BE(13), 8, 'ICMP type in the low byte of the big-endian port');
});

test('policy value from MapStateEntry (deny, L7 proxy port, spec length)', () => {
  const e = (over: Partial<MapStateEntry>): MapStateEntry => ({ verdict: 'allow', l7: null, authType: 0, matchType: 2, origins: [], ...over });
  const key = { direction: 'egress' as const, identity: 9, proto: 6, port: 80, portPrefixLen: 16 };
  const plain = C.policyValFor(key, e({}), null);
  assert.deepEqual(plain, { deny: false, authType: 0, matchType: 2, specLen: 24, proxyPort: 0, proxySlot: 0 });
  const l7 = C.policyValFor(key, e({ l7: { parser: 'http', perSelector: [] } }), { port: 15001, slot: 0 });
  assert.equal(l7.proxyPort, 15001);
  const deny = C.policyValFor({ ...key, proto: 0, port: 0, portPrefixLen: 0 }, e({ verdict: 'deny' }), { port: 1, slot: 1 });
  assert.deepEqual(deny, { deny: true, authType: 0, matchType: 2, specLen: 0, proxyPort: 0, proxySlot: 0 });
  assert.deepEqual(C.decodePolicyVal(C.encodePolicyVal(l7)), l7);
});

test('endpoint config round trip', () => {
  const cfg = { ifindex: 12, epId: 300, flags: C.EP_F_DENY_INGRESS, identity: 70000, ipv4: '10.244.1.5', ipv6: 'fd00::5', mac: '02:00:00:00:00:05' };
  const b = C.encodeEpConfig(cfg);
  assert.equal(b.length, C.EP_CONFIG_SIZE);
  assert.deepEqual(C.decodeEpConfig(b), cfg);
});

test('event encode/decode round trip, ICMP carries no ports, time offset applied', () => {
  const ev: DatapathEvent = {
    type: 1, subType: 181, timeNs: 5_000_000_000n, endpointId: 17, ifindex: 4, srcIdentity: 2, dstIdentity: 256, ipVersion: 4,
    srcIp: '198.51.100.7', dstIp: '10.244.1.5', proto: 6, srcPort: 40000, dstPort: 443, tcpFlags: 2, icmpType: 0, icmpCode: 0,
    ctReason: 1, direction: 'ingress', verdict: -181, matchType: 2, authType: 0, length: 74, etherType: 0x0800,
  };
  const b = C.encodeEvent(ev, 1000n);
  assert.equal(b.length, C.EVENT_SIZE);
  assert.deepEqual(C.decodeEvent(b, 0, 1000n), ev);
  const icmp = { ...ev, proto: 1, srcPort: 0, dstPort: 0, icmpType: 3, icmpCode: 3, direction: 'unknown' as const };
  assert.deepEqual(C.decodeEvent(C.encodeEvent(icmp), 0, 0n), icmp);
  // an unsupported-L3 drop of a VLAN-tagged frame keeps its ethertype (big-endian on the wire)
  const vlan = { ...ev, subType: 139, verdict: -139, etherType: 0x8100 };
  const vb = C.encodeEvent(vlan);
  assert.deepEqual([vb[74], vb[75]], [0x81, 0x00]);
  assert.equal(C.decodeEvent(vb, 0, 0n).etherType, 0x8100);
  // a frame that is not IP carries no addresses (family 0): empty, not "::"
  const l2 = C.encodeEvent({ ...vlan, etherType: 0x88cc });
  l2[10] = 0;
  l2.fill(0, 32, 64);
  assert.deepEqual([C.decodeEvent(l2, 0, 0n).srcIp, C.decodeEvent(l2, 0, 0n).dstIp], ['', '']);
});

test('datapath config and event budget: GCRA interval and burst', () => {
  assert.deepEqual(C.eventBudget(0, 100), { eventIntervalNs: 0n, eventBurstNs: 0n }, 'rate 0: unlimited');
  assert.deepEqual(C.eventBudget(1000, 1000), { eventIntervalNs: 1_000_000n, eventBurstNs: 999_000_000n });
  assert.deepEqual(C.eventBudget(1000, 1), { eventIntervalNs: 1_000_000n, eventBurstNs: 0n }, 'burst 1: one event per interval');
  const cfg = { policyRevision: 0xfffffffe, ...C.eventBudget(250, 10) };
  const b = C.encodeDpConfig(cfg);
  assert.equal(b.length, C.DP_CONFIG_SIZE);
  const t = { policyRevision: 3, flags: C.DP_F_TUNNEL, ...C.eventBudget(0, 0) };
  assert.deepEqual(C.decodeDpConfig(C.encodeDpConfig(t)), t, 'routing-mode flags at offset 4');
  assert.deepEqual(C.decodeDpConfig(b), cfg);
  const o = { ...t, overlayIfindex: 0x01020304 };
  assert.equal(C.encodeDpConfig(o).readUInt32LE(24), 0x01020304, 'overlay ifindex at offset 24');
  assert.deepEqual(C.decodeDpConfig(C.encodeDpConfig(o)), o);
  assert.equal(C.encodeDpConfig(t).readUInt8(28), 0, 'medium monitor aggregation is 0: what a config never written holds');
  const m = { ...t, monitorAggregation: 'low' as const, monitorIntervalS: 10 };
  assert.deepEqual([C.encodeDpConfig(m).readUInt8(28), C.encodeDpConfig(m).readUInt16LE(30)], [1, 10], 'monitor aggregation at 28, its interval at 30');
  assert.deepEqual(C.decodeDpConfig(C.encodeDpConfig(m)), m);
  assert.deepEqual([C.ctOwnIndex(0), C.ctExtIndex(0), C.ctOwnIndex(65535), C.ctExtIndex(65535)], [0, 1, 131070, 131071]);
  assert.ok(C.ctExtIndex(65535) < C.CT_TABLES);
});

test('helpers that replaced offsets written outside the codec: flags in place, key owner, batch, per-CPU sum, sockmap fd, protocol names', () => {
  const cfg = C.encodeEpConfig({ ifindex: 7, epId: 42, flags: C.EP_F_AUDIT, identity: 1234, ipv4: '10.244.1.5', mac: '02:00:00:00:00:01' });
  C.setEpConfigFlags(cfg, C.EP_F_DENY_INGRESS | C.EP_F_AUDIT);
  assert.deepEqual(C.decodeEpConfig(cfg), { ifindex: 7, epId: 42, flags: C.EP_F_DENY_INGRESS | C.EP_F_AUDIT, identity: 1234, ipv4: '10.244.1.5', mac: '02:00:00:00:00:01' });

  const k1 = { direction: 'ingress' as const, identity: 5, proto: 6, port: 80, portPrefixLen: 16 };
  const k2 = { direction: 'egress' as const, identity: 9, proto: 0, port: 0, portPrefixLen: 0 };
  const v1 = { deny: false, authType: 0, matchType: 2, specLen: 24, proxyPort: 0, proxySlot: 0 };
  const v2 = { deny: true, authType: 0, matchType: 1, specLen: 0, proxyPort: 0, proxySlot: 0 };
  assert.equal(C.policyKeyEndpoint(C.encodePolicyKey(300, k1)), 300);
  const b = C.encodePolicyBatch(300, [{ key: k1, val: v1 }, { key: k2, val: v2 }]);
  assert.equal(b.keys.length, 2 * C.POLICY_KEY_SIZE);
  assert.equal(b.vals.length, 2 * C.POLICY_VAL_SIZE);
  assert.deepEqual(b.keyList, [C.encodePolicyKey(300, k1), C.encodePolicyKey(300, k2)]);
  assert.deepEqual(b.keys, Buffer.concat(b.keyList));
  assert.deepEqual(b.vals, Buffer.concat([C.encodePolicyVal(v1), C.encodePolicyVal(v2)]));
  b.keys.fill(0); // the key list is a copy, not a view of the batch buffer
  assert.equal(C.policyKeyEndpoint(b.keyList[1]!), 300);

  const perCpu = Buffer.alloc(24);
  perCpu.writeBigUInt64LE(3n, 0);
  perCpu.writeBigUInt64LE(2n ** 40n, 8);
  perCpu.writeBigUInt64LE(0n, 16);
  assert.equal(C.decodePerCpuSum(perCpu), 3n + 2n ** 40n);
  assert.equal(C.decodeU32(C.encodeU32(0xfffffffe)), 0xfffffffe);
  assert.equal(C.encodeSockmapFd(17).readBigUInt64LE(0), 17n);
  assert.equal(C.decodeEvBucketLost(C.emptyEvBucket()), 0n);
  assert.equal(C.emptyEvBucket().length, C.EV_BUCKET_SIZE);
  assert.equal(C.protoName(C.protoNumber('UDP')), 'UDP');
  assert.equal(C.protoName(C.protoNumber('TCP')), 'TCP');
});
