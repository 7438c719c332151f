/**
 * Policy audit mode (Cilium's POLICY_AUDIT_MODE): the verdict logic (src/policy/lookup.ts
 * auditVerdict, mirrored by bpf/lib/policy.h policy_audit), its event flag, the AUDIT flow and
 * metrics, and how the CLI shows and sets it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { auditVerdict, lookupMapState } from '../../../src/policy/lookup.ts';
import { allow, deny, ms } from './helpers.ts';
import * as C from '../../../src/datapath/linux/codec.ts';
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import { FakeDatapath } from '../../../src/datapath/fake.ts';
import { createFlowBuilder } from '../../../src/hubble/flow.ts';
import { createHubbleMetrics } from '../../../src/hubble/metrics/index.ts';
import { Verdict, DropReason } from '../../../src/hubble/gen/flow/flow_pb.js';
import { parseEndpointOptions } from '../../../src/cli/commands/endpoint.ts';
import { enforcementLabel } from '../../../src/cli/commands/resources.ts';
import { auditLine } from '../../../src/cli/commands/status.ts';
import { buildConfig } from '../../../src/common/config.ts';
import { MembraneError } from '../../../src/common/errors.ts';
import { ev, resolver } from '../hubble/fixtures.ts';

const l7 = { parser: 'http' as const, perSelector: [] };
const M = ms([
  [{ identity: 300, proto: 6, port: 80, portPrefixLen: 16 }, allow(2)],
  [{ identity: 300, proto: 6, port: 81, portPrefixLen: 16 }, deny(2)],
  [{ identity: 300, proto: 6, port: 82, portPrefixLen: 16 }, allow(2, l7)],
  [{ identity: 300, proto: 6, port: 83, portPrefixLen: 16 }, allow(2, null, 1)],
]);

test('audit verdicts: every L3/L4 drop passes as audited (default deny, deny rule, auth); allows and redirects are untouched', () => {
  const rows: [string, number, { verdict: string; audited?: true; auditedReason?: number }][] = [
    ['allowed port', 80, { verdict: 'forward' }],
    ['deny rule (181): audited, as Cilium audits every policy error', 81, { verdict: 'forward', audited: true, auditedReason: 181 }],
    ['L7 redirect: stays a redirect, the proxy enforces L7', 82, { verdict: 'redirect' }],
    ['auth required (189 in the datapath): audited', 83, { verdict: 'forward', audited: true, auditedReason: 189 }],
    ['default deny (133)', 9999, { verdict: 'forward', audited: true, auditedReason: 133 }],
  ];
  for (const [what, port, want] of rows) {
    const r = auditVerdict(lookupMapState(M, 'ingress', 300, 6, port), true);
    assert.deepEqual({ verdict: r.verdict, ...(r.audited ? { audited: r.audited, auditedReason: r.auditedReason } : {}) }, want, what);
    assert.equal(r.dropReason, undefined, what);
  }
  // audit off: the lookup as it is
  for (const port of [80, 81, 82, 83, 9999]) assert.deepEqual(auditVerdict(lookupMapState(M, 'ingress', 300, 6, port), false), lookupMapState(M, 'ingress', 300, 6, port));
});

test('property: audit never drops, never changes an allow, and off is the identity', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 400 }), fc.constantFrom(6, 17, 1), fc.integer({ min: 0, max: 65535 }), (id, proto, port) => {
    const r = lookupMapState(M, 'ingress', id, proto, port);
    const on = auditVerdict(r, true);
    assert.notEqual(on.verdict, 'drop');
    if (r.verdict !== 'drop' && r.authType === 0) assert.deepEqual(on, r);
    if (r.verdict === 'drop') assert.equal(on.auditedReason, r.dropReason);
    assert.deepEqual(auditVerdict(r, false), r);
  }));
});

test('the audit flag lives in the endpoint config and the event; the fake datapath audits per endpoint', async () => {
  const cfg = { ifindex: 12, epId: 300, flags: C.EP_F_DENY_INGRESS | C.EP_F_AUDIT, identity: 70000, ipv4: '10.244.1.5' };
  assert.deepEqual(C.decodeEpConfig(C.encodeEpConfig(cfg)), cfg);
  const e: DatapathEvent = {
    type: 5, subType: 0, timeNs: 1n, endpointId: 17, ifindex: 4, srcIdentity: 2, dstIdentity: 256, ipVersion: 4,
    srcIp: '198.51.100.7', dstIp: '10.244.1.5', proto: 6, srcPort: 40000, dstPort: 443, tcpFlags: 2, icmpType: 0, icmpCode: 0,
    ctReason: 1, direction: 'ingress', verdict: 0, matchType: 0, authType: 0, audited: true, length: 74, etherType: 0x0800,
  };
  const b = C.encodeEvent(e);
  assert.equal(b[73], C.EV_F_AUDITED);
  assert.deepEqual(C.decodeEvent(b, 0, 0n), e);
  const { audited: _a, ...plain } = e;
  assert.equal('audited' in C.decodeEvent(C.encodeEvent(plain), 0, 0n), false);

  const dp = new FakeDatapath();
  await dp.upsertEndpoint({ id: 1, identity: 1001, ipv4: '10.244.1.1', ifname: 'a', ifindex: 1, policyAuditMode: true });
  await dp.upsertEndpoint({ id: 2, identity: 1002, ipv4: '10.244.1.2', ifname: 'b', ifindex: 2 });
  for (const id of [1, 2]) await dp.applyPolicy(id, { upserts: [], deletes: [], defaultDenyChanged: true }, ms([]));
  assert.deepEqual([dp.decide(1, 'ingress', 1002, 6, 80).verdict, dp.decide(1, 'ingress', 1002, 6, 80).audited], ['forward', true]);
  assert.deepEqual([dp.decide(2, 'ingress', 1001, 6, 80).verdict, dp.decide(2, 'ingress', 1001, 6, 80).dropReason], ['drop', 133], 'audit on endpoint 1 does not open endpoint 2');
});

test('an audited policy verdict is an AUDIT flow, counted as audit (never as a drop) by the metrics', async () => {
  const build = createFlowBuilder({ nodeName: 'node1', resolver, uuid: () => 'u' });
  const audited = build(ev({ type: 5, verdict: 0, matchType: 0, direction: 'ingress', audited: true }))!;
  assert.equal(audited.verdict, Verdict.AUDIT);
  assert.equal(audited.dropReasonDesc, DropReason.DROP_REASON_UNKNOWN);
  assert.equal(audited.isReply, false);
  const plain = build(ev({ type: 5, verdict: 0, matchType: 2, direction: 'ingress' }))!;
  assert.equal(plain.verdict, Verdict.FORWARDED);
  const redirected = build(ev({ type: 5, verdict: 15001, matchType: 2, direction: 'egress', audited: true }))!;
  assert.equal(redirected.verdict, Verdict.REDIRECTED, 'a redirect stays a redirect');
  const m = createHubbleMetrics('flow drop policy');
  m.process(audited);
  const body = (await m.render()).body;
  assert.match(body, /hubble_flows_processed_total\{[^}]*verdict="AUDIT"[^}]*\} 1/);
  assert.match(body, /hubble_policy_verdicts_total\{[^}]*action="audit"[^}]*\} 1/);
  assert.doesNotMatch(body, /hubble_drop_total\{/);
});

test('CLI: endpoint options as Cilium spells them, enforcement columns as cilium endpoint list shows them, the status line', () => {
  assert.deepEqual(parseEndpointOptions(['PolicyAuditMode=Enabled']), { PolicyAuditMode: true });
  assert.deepEqual(parseEndpointOptions(['PolicyAuditMode=disabled']), { PolicyAuditMode: false });
  assert.deepEqual(parseEndpointOptions(['PolicyAuditMode=true']), { PolicyAuditMode: true });
  assert.deepEqual(parseEndpointOptions(['PolicyAuditMode']), { PolicyAuditMode: true });
  assert.deepEqual(parseEndpointOptions(['PolicyAuditMode=default']), { PolicyAuditMode: null });
  for (const bad of [['Debug=Enabled'], ['PolicyAuditMode=maybe'], ['policyauditmode=Enabled']]) {
    assert.throws(() => parseEndpointOptions(bad), (e: unknown) => e instanceof MembraneError && e.code === 'CLI_ENDPOINT_OPTION', bad.join(' '));
  }
  assert.deepEqual([enforcementLabel(true, false), enforcementLabel(true, true), enforcementLabel(false, true), enforcementLabel(false, false)], ['Enabled', 'Disabled (Audit)', 'Disabled', 'Disabled']);
  assert.equal(auditLine({ global: false, endpoints: 0 }), 'audit mode Disabled');
  assert.equal(auditLine({ global: false, endpoints: 1 }), 'audit mode Disabled (1 endpoint in audit mode)');
  assert.equal(auditLine({ global: true, endpoints: 4 }), 'audit mode Enabled (4 endpoints in audit mode)');
});

test('setting: --policy-audit-mode / MEMBRANE_POLICY_AUDIT_MODE, off by default, a bad value refused', () => {
  assert.equal(buildConfig({ env: {} }).policyAuditMode, false);
  assert.equal(buildConfig({ env: { MEMBRANE_POLICY_AUDIT_MODE: 'true' } }).policyAuditMode, true);
  assert.equal(buildConfig({ flags: { policyAuditMode: true } }).policyAuditMode, true);
  assert.throws(() => buildConfig({ env: { MEMBRANE_POLICY_AUDIT_MODE: 'sometimes' } }), (e: unknown) => e instanceof MembraneError && e.code === 'CONFIG_INVALID');
});
