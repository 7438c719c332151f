/**
 * Cilium's own policy examples (its repository's examples/policies, 136 files) through
 * `membrane policy validate`: nothing crashes, and every file either validates and is enforced
 * (only subjects, peers, ports and parsers the datapath and proxies carry out) or is rejected
 * with codes. The files are Cilium's and are not copied into this repository: point
 * MEMBRANE_CILIUM_EXAMPLES at a checkout's examples/policies folder (or any subset of it keeping
 * the relative paths) to run it; without it the test is skipped and says so.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { loadPath, locate } from '../../../src/api/load.ts';
import { policyCheck } from '../../../src/policy/check.ts';
import { checkImport } from '../../../src/policy/trace.ts';
import { translatePolicy } from '../../../src/policy/translate.ts';
import type { PolicyResource } from '../../../src/api/types.ts';

const DIR = process.env.MEMBRANE_CILIUM_EXAMPLES ?? '';

/**
 * Expected codes per file (sorted, unique); [] = valid and enforced. Files not listed are held to
 * the general rule only. Every `*.json` of the corpus is a bare rule list (API_CILIUM_RULE_LIST).
 */
const EXPECTED: Record<string, string[]> = {
  'auth/auth.yaml': ['API_FIELD_UNKNOWN'], // `auth: {type: "null"}`, an old spelling of authentication
  'cidr.yaml': ['POLICY_L3_COMBINATION'], // toCIDR + toCIDRSet in one element
  'entities.yaml': [],
  'getting-started/kafka.yaml': ['API_FIELD_UNKNOWN', 'POLICY_KAFKA_UNSUPPORTED'], // top-level description
  'l7/kafka/kafka-role.yaml': ['POLICY_KAFKA_UNSUPPORTED'],
  'l7/kafka/kafka.yaml': ['API_FIELD_UNKNOWN', 'POLICY_KAFKA_UNSUPPORTED'],
  'l7/kafka/kafka-Role.yaml': ['POLICY_KAFKA_UNSUPPORTED'],
  'host/demo-host-policy.yaml': ['POLICY_HOST_FIREWALL_UNSUPPORTED'],
  'host/lock-down-dev-vms.yaml': ['API_FIELD_UNKNOWN', 'POLICY_HOST_FIREWALL_UNSUPPORTED'],
  'host/allow-extended-protocols.yaml': ['POLICY_HOST_FIREWALL_UNSUPPORTED', 'POLICY_PROTOCOL_UNSUPPORTED'], // VRRP without --enable-extended-ip-protocols
  'l3/requires/requires.yaml': ['API_FIELD_UNKNOWN', 'POLICY_REQUIRES_REMOVED'],
  'l3/simple/l3.json': ['API_CILIUM_RULE_LIST'],
  'l4/envoy_listener_redirect.yaml': ['POLICY_LISTENER_UNSUPPORTED'],
  'l4/l4_sni.yaml': [],
  'l4/icmp.yaml': [],
  'l7/dns/dns.yaml': [],
  'service-empty.yaml': [], // toServices: [] and [{}]: valid, select nothing
  'kubernetes/clusterwide/health.yaml': [],
  'l4/wildcard_port_listener.yaml': ['POLICY_LISTENER_UNSUPPORTED'],
  'l4/l4_port_range.yaml': [],
  // `apiversion` (sic) in Cilium's file; fromNodes without --enable-node-selector-labels
  'l3/entities/from_nodes.yaml': ['API_FIELD_UNKNOWN', 'API_VERSION_MISSING', 'POLICY_NODE_SELECTOR_DISABLED'],
  'l3/service/service.yaml': [],
  'l7/http/http.yaml': ['API_FIELD_UNKNOWN'], // `HTTP:` (Go's JSON decoding ignores case, the CRD schema does not)
  'l3/fqdn/fqdn.yaml': [],
  'l3/egress-deny/egress-deny.yaml': [],
};

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (/\.(ya?ml|json)$/.test(e)) out.push(p);
  }
  return out;
}

const present = DIR !== '' && existsSync(DIR);

test('Cilium examples/policies: every file validates and is enforced, or is rejected with codes', { skip: present ? false : 'set MEMBRANE_CILIUM_EXAMPLES to a Cilium checkout\'s examples/policies' }, async () => {
  const listed = readFileSync(join(import.meta.dirname, '../../../ERRORS.md'), 'utf8');
  const all = files(DIR);
  assert.ok(all.length > 0, `no policy files under ${DIR}`);
  let valid = 0;
  let rejected = 0;
  for (const file of all) {
    const rel = relative(DIR, file);
    const r = await loadPath(file, { policyCheck });
    const issues = [...r.issues, ...checkImport(r.resources, { locate })];
    const codes = [...new Set(issues.map((i) => i.code))].sort();
    for (const i of issues) {
      assert.ok(listed.includes(`\`${i.code}\``), `${rel}: code ${i.code} is not in ERRORS.md`);
      assert.ok(i.line >= 1 && i.message !== '', `${rel}: ${i.code} without a line or message`);
    }
    const want = EXPECTED[rel] ?? (rel.endsWith('.json') ? ['API_CILIUM_RULE_LIST'] : undefined);
    if (want) assert.deepEqual(codes, want, rel);
    if (codes.length) { rejected++; continue; }
    valid++;
    // Enforced: only endpoint subjects, and only parsers membrane has proxies for.
    for (const res of r.resources) {
      if (!/NetworkPolicy$/.test(res.kind)) continue;
      const t = translatePolicy(res as PolicyResource);
      assert.deepEqual(t.issues, [], rel);
      for (const rule of t.rules) {
        assert.equal(rule.subject.kind, 'endpoint', `${rel}: host policy accepted`);
        for (const e of rule.entries) {
          if (e.l7) assert.ok(['http', 'dns', 'tls'].includes(e.l7.parser), `${rel}: parser ${e.l7.parser} accepted`);
          assert.notEqual(e.auth, 1, `${rel}: authentication required accepted`);
        }
      }
    }
  }
  assert.equal(valid + rejected, all.length);
});
