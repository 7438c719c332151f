/** The IPv6 side of the map codecs: ipcache keys by family and prefix (host bits cleared,
 * IPv4-mapped addresses kept as IPv6 bytes, never folded into IPv4), endpoint configs with an
 * IPv6 address, and the enable-ipv6 flag of mb_config. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  DP_F_IPV6, DP_F_TUNNEL, decodeDpConfig, decodeEpConfig, decodeIpcacheKey, encodeDpConfig, encodeEpConfig, encodeIpcacheKey, formatIp, parseIPv6, parsePrefix,
} from '../../../src/datapath/linux/codec.ts';
import * as C from '../../../src/datapath/linux/codec.ts';

test('ipcache keys: family 6, prefix length 32 + bits, address in network order, host bits cleared', () => {
  const cases: [string, number, string, string][] = [
    ['fd00:10:250:6::2/128', 160, 'fd000010025000060000000000000002', 'fd00:10:250:6::2/128'],
    ['2001:db8:9::1/48', 80, '20010db8000900000000000000000000', '2001:db8:9::/48'],
    ['::/0', 32, '00000000000000000000000000000000', '::/0'],
    ['::ffff:10.250.6.3/128', 160, '00000000000000000000ffff0afa0603', '::ffff:afa:603/128'],
    ['fe80::1', 160, 'fe800000000000000000000000000001', 'fe80::1/128'],
  ];
  for (const [prefix, plen, hex, back] of cases) {
    const k = encodeIpcacheKey(prefix);
    assert.equal(k.readUInt32LE(0), plen, prefix);
    assert.equal(k.readUInt8(4), 6, `${prefix}: family 6`);
    assert.equal(k.subarray(8, 24).toString('hex'), hex, prefix);
    assert.equal(decodeIpcacheKey(k), back, prefix);
  }
  const v4 = encodeIpcacheKey('10.250.6.3/32');
  assert.equal(v4.readUInt8(4), 4, 'an IPv4 prefix stays family 4 (never the same key as its mapped form)');
  assert.notDeepEqual(v4, encodeIpcacheKey('::ffff:10.250.6.3/128'));
});

test('bad IPv6 prefixes are rejected with a coded error', () => {
  for (const bad of ['fd00::1/129', 'fd00:::1/64', 'fd00::g/64', '1:2:3:4:5:6:7:8:9/128', 'fd00::1/-1']) {
    assert.throws(() => encodeIpcacheKey(bad), (e: unknown) => (e as { code?: string }).code === 'DATAPATH_BAD_PREFIX', bad);
  }
});

test('property: any 16 bytes and length round-trip through the ipcache key as the masked prefix', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }), (bytes, len) => {
    const addr = formatIp(Buffer.from(bytes), 0, 6);
    const k = encodeIpcacheKey(`${addr}/${len}`);
    const back = decodeIpcacheKey(k);
    const p = parsePrefix(back);
    assert.equal(p.len, len);
    for (let bit = 0; bit < 128; bit++) {
      const b = (Buffer.from(bytes)[bit >> 3]! >> (7 - (bit & 7))) & 1;
      const got = (p.addr[bit >> 3]! >> (7 - (bit & 7))) & 1;
      assert.equal(got, bit < len ? b : 0);
    }
  }), { numRuns: 300 });
});

test('endpoint config carries the IPv6 address (absent stays absent)', () => {
  const c = { ifindex: 9, epId: 101, flags: 0, identity: 6101, ipv4: '10.250.6.3', ipv6: 'fd00:10:250:6::3', mac: '02:00:00:00:00:01' };
  const d = decodeEpConfig(encodeEpConfig(c));
  assert.equal(d.ipv6, 'fd00:10:250:6::3');
  assert.equal(d.ipv4, '10.250.6.3');
  assert.equal(decodeEpConfig(encodeEpConfig({ ...c, ipv6: undefined as unknown as string })).ipv6, undefined);
  assert.throws(() => encodeEpConfig({ ...c, ipv6: 'fd00::zz' }), (e: unknown) => (e as { code?: string }).code === 'DATAPATH_BAD_IP');
});

test('mb_config: enable-ipv6 is its own flag beside tunnel', () => {
  assert.equal(DP_F_IPV6 & DP_F_TUNNEL, 0);
  const b = encodeDpConfig({ policyRevision: 3, flags: DP_F_IPV6 | DP_F_TUNNEL, eventIntervalNs: 0n, eventBurstNs: 0n });
  assert.equal(b.readUInt32LE(4), 0x03);
  assert.equal(decodeDpConfig(b).flags, DP_F_IPV6 | DP_F_TUNNEL);
  assert.deepEqual(parseIPv6('::ffff:10.0.0.1')?.toString('hex'), '00000000000000000000ffff0a000001');
});

test('lb6 codecs: 16-byte frontend and backend addresses round-trip; IPv4-mapped and IPv4 addresses are refused', () => {
  const k = C.encodeLb6Key('fd00:10:96::50', 80, 6, 3);
  assert.equal(k.length, C.LB6_KEY_SIZE);
  assert.deepEqual(C.decodeLb6Key(k), { ip: 'fd00:10:96::50', port: 80, proto: 6, slot: 3 });
  assert.deepEqual(C.decodeLb6Backend(C.encodeLb6Backend('fd00:10:244:1::a', 8080, 17)), { ip: 'fd00:10:244:1::a', port: 8080, proto: 17 });
  assert.equal(C.encodeLb6RevNat('fd00:10:96::50', 80).length, C.LB6_REVNAT_SIZE);
  assert.throws(() => C.encodeLb6Backend('::ffff:10.244.1.5', 80, 6), /IPv4-mapped/);
  assert.throws(() => C.encodeLb6Key('::ffff:10.96.0.11', 80, 6, 0), /IPv4-mapped/);
  assert.throws(() => C.encodeLb6Backend('10.244.1.5', 80, 6), /not an IPv6 address/);
});

test('lb4 and lb6 structs: the bytes of bpf/lib/lb.h (address, port BE, proto, pad, slot LE) and back', () => {
  const hex = (b: Buffer): string => b.toString('hex');
  assert.equal(hex(C.encodeLb4Key('10.96.0.10', 80, 6, 3)), '0a60000a' + '0050' + '06' + '00' + '0300' + '0000');
  assert.equal(hex(C.encodeLb4Backend('10.244.1.5', 8080, 17)), '0af40105' + '1f90' + '11' + '00');
  assert.equal(hex(C.encodeLb4RevNat('10.96.0.10', 53)), '0a60000a' + '0035' + '0000');
  assert.deepEqual(C.decodeLb4Key(C.encodeLb4Key('10.96.0.10', 80, 6, 0x1234)), { ip: '10.96.0.10', port: 80, proto: 6, slot: 0x1234 });
  assert.deepEqual(C.decodeLb4Backend(C.encodeLb4Backend('10.244.1.5', 8080, 17)), { ip: '10.244.1.5', port: 8080, proto: 17 });
  const v6 = 'fd00001000960000' + '0000000000000050';
  assert.equal(hex(C.encodeLb6Key('fd00:10:96::50', 443, 6, 2)), v6 + '01bb' + '06' + '00' + '0200' + '0000');
  assert.equal(hex(C.encodeLb6Backend('fd00:10:96::50', 443, 6)), v6 + '01bb' + '06' + '00');
  assert.equal(hex(C.encodeLb6RevNat('fd00:10:96::50', 443)), v6 + '01bb' + '0000');
  assert.throws(() => C.encodeLb4Key('fd00::1', 80, 6, 0), /not an IPv4 address/);
});
