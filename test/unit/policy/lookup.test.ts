/** The MapState lookup contract (src/policy/types.ts) on hand-built maps: the C datapath mirrors these. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import { allow, deny, ms } from './helpers.ts';

test('no entry: default deny (133) or forward', () => {
  assert.deepEqual(lookupMapState(ms([]), 'ingress', 300, 6, 80), { verdict: 'drop', dropReason: 133, matchType: 0, authType: 0 });
  assert.deepEqual(lookupMapState(ms([]), 'egress', 300, 6, 80), { verdict: 'forward', matchType: 0, authType: 0 });
});

test('longest prefix within a lane: exact port beats range beats proto beats L3', () => {
  const m = ms([
    [{ identity: 300, proto: 0, port: 0, portPrefixLen: 0 }, allow(1)],
    [{ identity: 300, proto: 6, port: 0, portPrefixLen: 0 }, allow(5)],
    [{ identity: 300, proto: 6, port: 8080, portPrefixLen: 14 }, allow(2)],
    [{ identity: 300, proto: 6, port: 8081, portPrefixLen: 16 }, deny(2)],
  ]);
  assert.equal(lookupMapState(m, 'ingress', 300, 6, 8080).matchType, 2);
  assert.equal(lookupMapState(m, 'ingress', 300, 6, 8083).key?.portPrefixLen, 14);
  assert.equal(lookupMapState(m, 'ingress', 300, 6, 8081).dropReason, 181);
  assert.equal(lookupMapState(m, 'ingress', 300, 6, 9000).matchType, 5);
  assert.equal(lookupMapState(m, 'ingress', 300, 17, 9000).matchType, 1);
  assert.equal(lookupMapState(m, 'ingress', 301, 17, 9000).dropReason, 133);
});

test('two lanes: a deny in either drops; else the longer wins, the identity lane on a tie', () => {
  const l7 = { parser: 'http' as const, perSelector: [] };
  const m = ms([
    [{ identity: 300, proto: 0, port: 0, portPrefixLen: 0 }, allow(1)],
    [{ identity: 0, proto: 6, port: 80, portPrefixLen: 16 }, allow(3, l7)],
    [{ identity: 300, proto: 6, port: 443, portPrefixLen: 16 }, allow(2)],
    [{ identity: 0, proto: 6, port: 443, portPrefixLen: 16 }, allow(3, l7)],
    [{ identity: 0, proto: 17, port: 0, portPrefixLen: 0 }, deny(6)],
  ]);
  const r80 = lookupMapState(m, 'ingress', 300, 6, 80);
  assert.equal(r80.verdict, 'redirect'); // wildcard L4 entry is longer than the L3-only entry
  assert.equal(r80.matchType, 3);
  const r443 = lookupMapState(m, 'ingress', 300, 6, 443);
  assert.equal(r443.verdict, 'forward'); // tie: identity lane
  assert.equal(r443.matchType, 2);
  assert.equal(lookupMapState(m, 'ingress', 300, 17, 53).dropReason, 181); // wildcard deny beats the identity's L3 allow
  assert.equal(lookupMapState(m, 'ingress', 300, 1, 8).verdict, 'forward');
  assert.equal(lookupMapState(m, 'ingress', 0, 6, 80).verdict, 'redirect');
});
