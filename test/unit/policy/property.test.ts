/**
 * Property tests (fast-check) over random rule sets and identities:
 *   1. the same rules in any order give the same MapState;
 *   2. incremental upkeep (identities and rules added/removed in random order) equals a full
 *      recomputation, and the deltas replayed on the first state reproduce the last;
 *   3. lookupMapState(resolve(…)) agrees with the reference decide() for random
 *      (identity, proto, port), including redirects, authentication and L7 judgements;
 *   4. the MapState change log (what the L7 proxy feed sends) applied to the last MapState a
 *      reader took gives the new full MapState, for random rule, identity, FQDN and endpoint changes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, EgressRule, IngressRule, LabelSelector, PortRule, Rule } from '../../../src/api/types.ts';
import { PolicyEngine } from '../../../src/policy/engine.ts';
import { podNamedPorts } from '../../../src/policy/named-ports.ts';
import { decide } from '../../../src/policy/decide.ts';
import { lookupMapState } from '../../../src/policy/lookup.ts';
import { decideHTTP } from '../../../src/policy/l7.ts';
import { resolve } from '../../../src/policy/distillery.ts';
import { diffMapStates } from '../../../src/policy/mapstate-compare.ts';
import type { EndpointInfo } from '../../../src/policy/resolve-options.ts';
import type { MapState, MapStateDelta } from '../../../src/policy/types.ts';
import { cidrIdentityLabels, fqdnIdentityLabels, podIdentityLabels } from '../../../src/identity/labels.ts';
import type { LabelSet } from '../../../src/labels/labels.ts';
import { createAgentPolicyEngine } from '../../../src/policy/agent-engine.ts';
import { entriesEqual } from '../../../src/policy/mapstate-compare.ts';
import { pod } from './helpers.ts';

// ---- generators ---------------------------------------------------------------------------

const SELECTORS: LabelSelector[] = [
  {}, { matchLabels: { app: 'a' } }, { matchLabels: { app: 'b' } }, { matchLabels: { tier: 'fe' } },
  { matchLabels: { app: 'c', 'k8s:io.kubernetes.pod.namespace': 'y' } },
  { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['a'] }] },
  { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] },
  { matchLabels: { 'io.cilium.k8s.namespace.labels.team': 'blue' } },
];
const CIDRS = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.3/32', '192.168.0.0/24', '0.0.0.0/0'];
const ENTITIES = ['world', 'host', 'all', 'cluster', 'remote-node'] as const;

const portEntry = fc.record({
  port: fc.constantFrom('80', '81', '0', '8080', 'http', '53'),
  protocol: fc.constantFrom('TCP', 'UDP', 'ANY') as fc.Arbitrary<'TCP' | 'UDP' | 'ANY'>,
  range: fc.boolean(),
});

const portRule = (allowL7: boolean): fc.Arbitrary<PortRule> => fc.record({
  ports: fc.array(portEntry, { minLength: 1, maxLength: 2 }),
  http: allowL7 ? fc.option(fc.subarray([{ method: 'GET' }, { path: '/a.*' }, { method: 'POST', path: '/b' }], { minLength: 1 }), { nil: undefined }) : fc.constant(undefined),
}).map(({ ports, http }) => {
  // L7 needs TCP on every port and no port 0.
  const l7 = http !== undefined && !ports.some((p) => p.port === '0');
  return {
    ports: ports.map((p) => ({
      port: p.port, protocol: l7 ? 'TCP' as const : p.protocol,
      ...(p.range && p.port === '8080' ? { endPort: 8090 } : {}),
    })),
    ...(l7 ? { rules: { http } } : {}),
  };
});

type Peer = { kind: 'none' | 'endpoints' | 'entities' | 'cidr' | 'cidrset' | 'fqdn' | 'empty'; sel: LabelSelector[]; ent: (typeof ENTITIES)[number][]; cidr: string; except: boolean };
const peer = fc.record({
  kind: fc.constantFrom('none', 'endpoints', 'endpoints', 'entities', 'cidr', 'cidrset', 'fqdn', 'empty'),
  sel: fc.subarray(SELECTORS, { minLength: 1, maxLength: 2 }),
  ent: fc.subarray([...ENTITIES], { minLength: 1, maxLength: 2 }),
  cidr: fc.constantFrom(...CIDRS),
  except: fc.boolean(),
}) as fc.Arbitrary<Peer>;

function element(dir: 'ingress' | 'egress', deny: boolean, p: Peer, ports: PortRule[] | undefined, icmp: boolean, auth: boolean): IngressRule & EgressRule {
  const e: Record<string, unknown> = {};
  const pre = dir === 'ingress' ? 'from' : 'to';
  switch (p.kind) {
    case 'endpoints': e[`${pre}Endpoints`] = p.sel; break;
    case 'entities': e[`${pre}Entities`] = p.ent; break;
    case 'cidr': e[`${pre}CIDR`] = [p.cidr]; break;
    case 'cidrset': e[`${pre}CIDRSet`] = [{ cidr: p.cidr, ...(p.except && p.cidr !== '10.1.2.3/32' ? { except: [p.cidr === '0.0.0.0/0' ? '10.0.0.0/8' : p.cidr === '10.0.0.0/8' ? '10.1.0.0/16' : p.cidr === '10.1.0.0/16' ? '10.1.2.3/32' : '192.168.0.128/25'] } : {}) }]; break;
    case 'fqdn': if (dir === 'egress' && !deny) e.toFQDNs = [{ matchName: 'api.example.com' }]; else e[`${pre}Endpoints`] = p.sel; break;
    case 'empty': e[`${pre}Endpoints`] = []; break;
    case 'none': break;
  }
  if (icmp) e.icmps = [{ fields: [{ type: 8 }, { family: 'IPv6', type: 'EchoRequest' }] }];
  else if (ports) e.toPorts = deny ? ports.map((r) => ({ ports: r.ports })) : ports;
  else if (p.kind === 'none') e.toPorts = [{ ports: [{ port: '443', protocol: 'TCP' }] }];
  if (auth && !deny) e.authentication = { mode: 'required' };
  return e as IngressRule & EgressRule;
}

const elementArb = (dir: 'ingress' | 'egress', deny: boolean) => fc.record({
  peer, ports: fc.option(fc.array(portRule(!deny), { minLength: 1, maxLength: 2 }), { nil: undefined }),
  auth: fc.boolean(), useIcmp: fc.integer({ min: 0, max: 9 }),
}).map((x) => element(dir, deny, x.peer, x.ports, x.useIcmp === 0, x.auth && x.useIcmp === 1));

const ruleArb: fc.Arbitrary<Rule> = fc.record({
  subject: fc.constantFrom<LabelSelector>({}, { matchLabels: { app: 'a' } }, { matchLabels: { tier: 'fe' } }, { matchLabels: { app: 'b' } }),
  ingress: fc.option(fc.array(elementArb('ingress', false), { maxLength: 2 }), { nil: undefined }),
  ingressDeny: fc.option(fc.array(elementArb('ingress', true), { maxLength: 1 }), { nil: undefined }),
  egress: fc.option(fc.array(elementArb('egress', false), { maxLength: 2 }), { nil: undefined }),
  egressDeny: fc.option(fc.array(elementArb('egress', true), { maxLength: 1 }), { nil: undefined }),
  dd: fc.constantFrom(undefined, { ingress: false }, { egress: false }),
}).map((r) => {
  const out: Rule = { endpointSelector: r.subject };
  if (r.ingress) out.ingress = r.ingress;
  if (r.ingressDeny) out.ingressDeny = r.ingressDeny;
  if (r.egress) out.egress = r.egress;
  if (r.egressDeny) out.egressDeny = r.egressDeny;
  if (!out.ingress?.length && !out.ingressDeny?.length && !out.egress?.length && !out.egressDeny?.length) out.ingress = [{}];
  if (r.dd) out.enableDefaultDeny = r.dd;
  return out;
});

const policyArb = (i: number): fc.Arbitrary<CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy> => fc.record({ rule: ruleArb, ccnp: fc.integer({ min: 0, max: 4 }) }).map(({ rule, ccnp }) => (ccnp === 0
  ? { apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: `p${i}` }, source: { file: 'gen.yaml', line: i + 1, col: 1 }, spec: rule }
  : { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: `p${i}`, namespace: 'x' }, source: { file: 'gen.yaml', line: i + 1, col: 1 }, spec: rule }));

const policiesArb = fc.integer({ min: 1, max: 5 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => policyArb(i))));

// ---- world --------------------------------------------------------------------------------

const POD_SHAPES: { ns: string; labels: Record<string, string>; port?: number }[] = [
  { ns: 'x', labels: { app: 'a', tier: 'fe' }, port: 8080 },
  { ns: 'x', labels: { app: 'b' }, port: 9090 },
  { ns: 'x', labels: { app: 'c', tier: 'fe' } },
  { ns: 'y', labels: { app: 'a' }, port: 8081 },
  { ns: 'y', labels: { app: 'c' } },
  { ns: 'y', labels: { app: 'b', tier: 'be' }, port: 80 },
];
const NS_LABELS: Record<string, Record<string, string>> = { x: { team: 'blue' }, y: { team: 'red' } };

function podLabels(i: number): LabelSet {
  const s = POD_SHAPES[i]!;
  return podIdentityLabels({ pod: pod(s.ns, `p${i}`, s.labels), namespace: { metadata: { name: s.ns, labels: NS_LABELS[s.ns]! } } });
}

function newEngine(): { engine: PolicyEngine; ep: EndpointInfo; ids: number[] } {
  const engine = new PolicyEngine({ enableMutualAuth: true });
  const ids: number[] = [1, 2, 6, 4];
  POD_SHAPES.forEach((s, i) => {
    const id = engine.allocator.allocateSync(podLabels(i)).identity.id;
    ids.push(id);
    engine.namedPorts.set(`${s.ns}/p${i}`, id, s.port ? podNamedPorts(pod(s.ns, `p${i}`, s.labels, [{ name: 'http', port: s.port }])) : []);
  });
  for (const c of ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.3/32', '192.168.0.0/24', '192.168.0.128/25', '172.16.0.0/12']) ids.push(engine.allocator.allocateSync(cidrIdentityLabels(c)).identity.id);
  ids.push(engine.allocator.allocateSync(fqdnIdentityLabels('203.0.113.9', [{ matchName: 'api.example.com' }])).identity.id);
  const self = engine.allocator.lookupByLabels(podLabels(0))!;
  const ep: EndpointInfo = { id: 1, identity: self.id, labels: self.labels, namedPorts: [{ name: 'http', port: 8080, proto: 6 }] };
  return { engine, ep, ids };
}

function fresh(engine: PolicyEngine, ep: EndpointInfo): MapState {
  return resolve({ repository: engine.repository, options: engine.resolveOptions }, ep);
}

// ---- properties ---------------------------------------------------------------------------

test('property: rule order does not change the MapState', () => {
  fc.assert(fc.property(policiesArb, fc.infiniteStream(fc.integer()), (policies, rnd) => {
    const a = newEngine();
    const b = newEngine();
    if (a.engine.check(policies).length) return; // conflicting combination: nothing to compare
    a.engine.applyPolicies(policies);
    const keyed = policies.map((p) => ({ p, k: rnd.next().value as number })).sort((x, y) => x.k - y.k).map((x) => x.p);
    for (const p of keyed) b.engine.applyPolicies([p]);
    assert.deepEqual(diffMapStates(fresh(a.engine, a.ep), fresh(b.engine, b.ep)), []);
  }), { numRuns: 80 });
});

type Op = { kind: 'addPolicy'; i: number } | { kind: 'delPolicy'; i: number } | { kind: 'addId'; labels: number; extra: string } | { kind: 'delId'; n: number };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('addPolicy' as const), i: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ kind: fc.constant('delPolicy' as const), i: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ kind: fc.constant('addId' as const), labels: fc.integer({ min: 0, max: POD_SHAPES.length - 1 }), extra: fc.constantFrom('1', '2', '3') }),
  fc.record({ kind: fc.constant('delId' as const), n: fc.nat() }),
);

function replay(ms: MapState, d: MapStateDelta): void {
  for (const k of d.deletes) ms.entries.delete(`${k.direction === 'ingress' ? 'i' : 'e'}/${k.identity}/${k.proto}/${k.port}/${k.portPrefixLen}`);
  for (const u of d.upserts) ms.entries.set(`${u.key.direction === 'ingress' ? 'i' : 'e'}/${u.key.identity}/${u.key.proto}/${u.key.port}/${u.key.portPrefixLen}`, u);
  if (d.defaultDenyChanged) ms.defaultDeny = { ...d.defaultDeny! };
}

test('property: incremental updates equal a full recomputation; deltas replay to the same state', () => {
  fc.assert(fc.property(fc.tuple(policyArb(0), policyArb(1), policyArb(2), policyArb(3), policyArb(4)), fc.array(opArb, { minLength: 1, maxLength: 14 }), (pool, ops) => {
    const { engine, ep } = newEngine();
    const deltas: MapStateDelta[] = [];
    const live = engine.addEndpoint(ep, (d) => deltas.push(d));
    const shadow: MapState = { entries: new Map(live.mapState.entries), defaultDeny: { ...live.mapState.defaultDeny } };
    const added: number[] = [];
    const applied = new Set<number>();
    for (const op of ops) {
      if (op.kind === 'addPolicy') {
        const next = [...applied, op.i].map((i) => pool[i]!);
        if (engine.check(next, true).length) continue;
        engine.applyPolicies([pool[op.i]!]);
        applied.add(op.i);
        engine.regenerate();
      } else if (op.kind === 'delPolicy') {
        if (!applied.has(op.i)) continue;
        const p = pool[op.i]!;
        engine.deletePolicy(`${p.kind}/${p.metadata.namespace ?? ''}/${p.metadata.name}`);
        applied.delete(op.i);
        engine.regenerate();
      } else if (op.kind === 'addId') {
        const base = podLabels(op.labels);
        const id = engine.allocator.allocateSync(base.union([{ source: 'k8s', key: 'extra', value: op.extra }])).identity.id;
        added.push(id);
      } else if (added.length) {
        const id = added.splice(op.n % added.length, 1)[0]!;
        engine.allocator.releaseSync(id);
      }
      const want = fresh(engine, ep);
      assert.deepEqual(diffMapStates(live.mapState, want), [], `after ${JSON.stringify(op)}`);
    }
    for (const d of deltas) replay(shadow, d);
    assert.deepEqual(diffMapStates(shadow, live.mapState), []);
  }), { numRuns: 60 });
});

const REQUESTS = [
  { method: 'GET', path: '/a', host: 'h' }, { method: 'POST', path: '/b', host: 'h' },
  { method: 'GET', path: '/b', host: 'h' }, { method: 'DELETE', path: '/a/x', host: 'h' },
];

test('property: lookupMapState(resolve()) agrees with decide() for every (identity, proto, port)', () => {
  const query = fc.record({
    identityIndex: fc.nat(),
    proto: fc.constantFrom(6, 17, 1, 58, 132),
    port: fc.constantFrom(0, 1, 8, 53, 80, 81, 128, 443, 8080, 8081, 8085, 8090, 8091, 9090, 65535),
  });
  fc.assert(fc.property(policiesArb, fc.array(query, { minLength: 10, maxLength: 40 }), fc.constantFrom('default', 'always') as fc.Arbitrary<'default' | 'always'>, (policies, queries, mode) => {
    const { engine, ep, ids } = newEngine();
    if (engine.check(policies).length) return;
    engine.applyPolicies(policies);
    const opts = { ...engine.resolveOptions, enforcementMode: mode };
    const ms = resolve({ repository: engine.repository, options: opts }, ep);
    const all = [...new Set([...ids, ...engine.cidrEntries().map((c) => c.identity)])];
    for (const q of queries) {
      const id = all[q.identityIndex % all.length]!;
      for (const dir of ['ingress', 'egress'] as const) {
        const labels = engine.selectorCache.identityLabels(id)!;
        const got = lookupMapState(ms, dir, id, q.proto, q.port);
        const want = decide(engine.repository, ep, dir, { identity: id, labels }, q.proto, q.port, opts);
        const what = `${dir} id=${id} (${labels.toStrings().join(',')}) ${q.proto}/${q.port}: map ${got.verdict}/${got.dropReason}/${got.matchType}/${got.authType} vs decide ${want.verdict}/${want.dropReason}/${want.matchType}/${want.authType}`;
        const verdict = got.verdict === 'forward' ? 'allow' : got.verdict === 'drop' ? 'deny' : 'redirect';
        assert.equal(verdict, want.verdict, what);
        assert.equal(got.dropReason, want.dropReason, what);
        assert.equal(got.matchType, want.matchType, what);
        assert.equal(got.authType, want.authType, what);
        if (got.verdict === 'redirect') {
          assert.equal(got.entry!.l7!.parser, want.l7!.parser, what);
          for (const r of REQUESTS) assert.equal(decideHTTP(got.entry!.l7!, id, r).allowed, want.l7!.allowsHTTP(r), `${what} ${r.method} ${r.path}`);
        }
      }
    }
  }), { numRuns: 300 });
});

type LogOp = Op | { kind: 'fqdn'; ip: number; sel: number } | { kind: 'readd' };
const logOpArb: fc.Arbitrary<LogOp> = fc.oneof(
  opArb,
  fc.record({ kind: fc.constant('fqdn' as const), ip: fc.integer({ min: 1, max: 40 }), sel: fc.integer({ min: 0, max: 2 }) }),
  fc.record({ kind: fc.constant('readd' as const) }),
);

/** Key sets, verdicts, auth, match types, L7 policies (by rules and selectors) and origins equal; `[]` when they are. */
function logDiff(mirror: MapState, want: MapState): string[] {
  const out: string[] = [];
  if (mirror.defaultDeny.ingress !== want.defaultDeny.ingress || mirror.defaultDeny.egress !== want.defaultDeny.egress) out.push('defaultDeny');
  for (const [ks, v] of want.entries) {
    const m = mirror.entries.get(ks);
    if (!m) out.push(`missing ${ks}`);
    else if (!entriesEqual(m.entry, v.entry)) out.push(`differs ${ks}`);
  }
  for (const ks of mirror.entries.keys()) if (!want.entries.has(ks)) out.push(`extra ${ks}`);
  return out;
}

test('property: the MapState change log applied to the MapState last taken gives the new full MapState (rules, identities, FQDN identities, endpoint re-adds)', () => {
  const FQDN_SELS = [[{ matchName: 'api.example.com' }], [{ matchPattern: '*.example.com' }], [{ matchName: 'api.example.com' }, { matchPattern: '*.example.com' }]];
  fc.assert(fc.property(fc.tuple(policyArb(0), policyArb(1), policyArb(2), policyArb(3), policyArb(4)), fc.array(logOpArb, { minLength: 1, maxLength: 16 }), (pool, ops) => {
    const policy = createAgentPolicyEngine({ enableMutualAuth: true });
    const { engine } = policy;
    POD_SHAPES.forEach((s, i) => {
      const id = engine.allocator.allocateSync(podLabels(i)).identity.id;
      engine.namedPorts.set(`${s.ns}/p${i}`, id, s.port ? podNamedPorts(pod(s.ns, `p${i}`, s.labels, [{ name: 'http', port: s.port }])) : []);
    });
    const self = engine.allocator.lookupByLabels(podLabels(0))!;
    const selfPod = pod('x', 'p0', POD_SHAPES[0]!.labels, [{ name: 'http', port: 8080 }]);
    const nsX = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x', labels: NS_LABELS.x! }, source: { file: '', line: 0, col: 0 } } as const;
    const reader = policy.mapStateChanges();
    policy.addEndpoint({ id: 1, identity: self.id, pod: selfPod, namespace: nsX });
    let mirror: MapState | undefined;
    let rev = 0;
    const take = () => {
      for (const [id, c] of reader.take()) {
        assert.equal(id, 1);
        assert.ok(c.revision > rev, `the change count moves on (${rev} → ${c.revision})`);
        rev = c.revision;
        assert.equal(c.revision, policy.mapStateRevision(1));
        const live = policy.mapState(1);
        if (c.gone || !live) { mirror = undefined; continue; }
        if (c.full || !mirror) { mirror = { entries: new Map(live.entries), defaultDeny: { ...live.defaultDeny } }; continue; }
        // the value each touched key has now (an entry object is replaced, never changed, when its entry changes)
        for (const ks of c.keys.keys()) {
          const v = live.entries.get(ks);
          if (v) mirror.entries.set(ks, v); else mirror.entries.delete(ks);
        }
        if (c.defaultDeny) mirror.defaultDeny = { ...live.defaultDeny };
      }
    };
    take();
    const added: number[] = [];
    const fqdn = new Map<number, number>();
    const applied = new Set<number>();
    for (const op of ops) {
      if (op.kind === 'addPolicy' || op.kind === 'delPolicy') {
        const next = new Set(applied);
        if (op.kind === 'addPolicy') next.add(op.i); else next.delete(op.i);
        const list = [...next].map((i) => pool[i]!);
        if (engine.check(list, true).length) continue;
        policy.setPolicies(list);
        applied.clear();
        for (const i of next) applied.add(i);
      } else if (op.kind === 'addId') {
        added.push(engine.allocator.allocateSync(podLabels(op.labels).union([{ source: 'k8s', key: 'extra', value: op.extra }])).identity.id);
      } else if (op.kind === 'delId') {
        if (added.length) engine.allocator.releaseSync(added.splice(op.n % added.length, 1)[0]!);
      } else if (op.kind === 'fqdn') {
        // a name learnt for a new IP (an FQDN identity), or the IP's name expiring (released)
        const had = fqdn.get(op.ip);
        if (had !== undefined) { engine.allocator.releaseSync(had); fqdn.delete(op.ip); }
        else fqdn.set(op.ip, engine.allocator.allocateSync(fqdnIdentityLabels(`203.0.113.${op.ip}`, FQDN_SELS[op.sel]!)).identity.id);
      } else {
        policy.removeEndpoint(1);
        take();
        assert.equal(mirror, undefined, 'a removed endpoint: gone');
        policy.addEndpoint({ id: 1, identity: self.id, pod: selfPod, namespace: nsX });
      }
      // as the agent does after each change (agent.ts reconcile, node.ts applyUpdate)
      policy.regenerate();
      take();
      const want = resolve({ repository: engine.repository, options: engine.resolveOptions }, policy.engine.endpoint(1)!.endpoint);
      assert.ok(mirror, 'the endpoint has a MapState');
      assert.deepEqual(logDiff(mirror, want), [], `after ${JSON.stringify(op)}`);
    }
    reader.close();
  }), { numRuns: 80 });
});
