import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PolicyResource, Rule, Service } from '../../../src/api/types.ts';
import { translatePolicy } from '../../../src/policy/translate.ts';
import type { PolicyEntry } from '../../../src/policy/rules.ts';
import { ccnp, cnp, knp } from './helpers.ts';

const sel = { matchLabels: { app: 'a' } };

function issuesOf(r: PolicyResource, opts = {}): string[] {
  return translatePolicy(r, opts).issues.map((i) => `${i.code}: ${i.path.join('.')}: ${i.message}`);
}

function entries(r: PolicyResource, opts = {}): PolicyEntry[] {
  const t = translatePolicy(r, opts);
  assert.deepEqual(t.issues, []);
  return t.rules.flatMap((x) => x.entries);
}

test('rule validation (spec §1.3, §2.4, §2.9, §3): every problem, with path and Cilium wording', () => {
  const table: [string, PolicyResource, RegExp][] = [
    ['empty policy', { ...cnp('p', 'x', {}), spec: undefined }, /Invalid CiliumNetworkPolicy spec\(s\): empty policy/],
    ['empty CCNP', { ...ccnp('p', {}), spec: undefined }, /Invalid CiliumClusterwideNetworkPolicy spec\(s\): empty policy/],
    ['no name', { ...cnp('', 'x', { endpointSelector: sel, ingress: [{}] }) }, /CiliumNetworkPolicy must have name/],
    ['no selector', cnp('p', 'x', { ingress: [{}] }), /rule must have one of EndpointSelector or NodeSelector/],
    ['both selectors', ccnp('p', { endpointSelector: sel, nodeSelector: sel, ingress: [{}] }), /rule cannot have both EndpointSelector and NodeSelector/],
    ['CNP nodeSelector', cnp('p', 'x', { nodeSelector: sel, ingress: [{}] }), /rule cannot have NodeSelector/],
    ['no sections', cnp('p', 'x', { endpointSelector: sel }), /at least one of Ingress, IngressDeny, Egress, EgressDeny/],
    ['explicit empty sections', cnp('p', 'x', { endpointSelector: sel, ingress: [], egress: [] }), /at least one of/],
    ['two L3 kinds', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromEndpoints: [{}], fromCIDR: ['10.0.0.0/8'] }] }), /combining FromEndpoints and FromCIDR is not supported yet/],
    ['cidr + cidrset', cnp('p', 'x', { endpointSelector: sel, egress: [{ toCIDR: ['10.0.0.0/8'], toCIDRSet: [{ cidr: '10.0.0.0/8' }] }] }), /combining ToCIDR and ToCIDRSet/],
    ['fqdn + endpoints', cnp('p', 'x', { endpointSelector: sel, egress: [{ toEndpoints: [{}], toFQDNs: [{ matchName: 'a.com' }] }] }), /combining ToEndpoints and ToFQDNs/],
    ['icmps with ports', cnp('p', 'x', { endpointSelector: sel, ingress: [{ icmps: [{ fields: [{ type: 8 }] }], toPorts: [{ ports: [{ port: '80' }] }] }] }), /ICMPs block may only be present without ToPorts/],
    ['bad entity', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromEntities: ['galaxy' as 'all'] }] }), /unsupported entity: galaxy/],
    ['bad cidr', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDR: ['10.0.0.0/33'] }] }), /unable to parse CIDR: 10.0.0.0\/33/],
    ['bare IP in cidrset', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.1' }] }] }), /unable to parse CIDR/],
    ['except outside', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] }] }] }), /allow CIDR prefix 10.0.0.0\/8 does not contain exclude CIDR prefix 11.0.0.0\/16/],
    ['except other family', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', except: ['::/64'] }] }] }), /does not contain exclude/],
    ['cidrset none', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDRSet: [{}] }] }), /one of cidr, cidrGroupRef, or cidrGroupSelector is required/],
    ['cidrset two', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', cidrGroupRef: 'g' }] }] }), /more than one of cidr, cidrGroupRef/],
    ['fqdn both', cnp('p', 'x', { endpointSelector: sel, egress: [{ toFQDNs: [{ matchName: 'a.com', matchPattern: '*.a.com' }] }] }), /only one of MatchName or MatchPattern/],
    ['fqdn chars', cnp('p', 'x', { endpointSelector: sel, egress: [{ toFQDNs: [{ matchPattern: 'a$.com' }] }] }), /Invalid characters in MatchPattern/],
    ['fqdn length', cnp('p', 'x', { endpointSelector: sel, egress: [{ toFQDNs: [{ matchPattern: 'a'.repeat(256) }] }] }), /Must be <= 255 characters long/],
    ['port missing', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ protocol: 'TCP' }] }] }] }), /port must be specified/],
    ['port unparsable', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '99999' }] }] }] }), /unable to parse port/],
    ['too many ports', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: Array.from({ length: 41 }, (_, i) => ({ port: String(i + 1) })) }] }] }), /too many ports, the max is 40/],
    ['L7 on ANY', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules: { http: [{}] } }] }] }), /L7 rules can only apply to TCP \(not ANY\) except for DNS rules/],
    ['L7 on UDP', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'UDP' }], rules: { http: [{}] } }] }] }), /not UDP/],
    ['L7 port 0', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '0', protocol: 'TCP' }], rules: { http: [{}] } }] }] }), /L7 rules can not be used when a port is 0/],
    ['DNS ingress', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '53', protocol: 'UDP' }], rules: { dns: [{ matchPattern: '*' }] } }] }] }), /DNS rules are not allowed on ingress/],
    ['DNS range', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '53', endPort: 54, protocol: 'UDP' }], rules: { dns: [{ matchPattern: '*' }] } }] }] }), /DNS rules do not support port ranges/],
    ['DNS no ports', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ rules: { dns: [{ matchPattern: '*' }] } }] }] }), /port 53 must be specified for DNS rules/],
    ['two L7 kinds', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{}], kafka: [{}] } }] }] }), /multiple L7 protocol rule types specified in single rule/],
    ['bad regex', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ path: '/a(' }] } }] }] }), /invalid regular expression/],
    ['RE2 no lookahead', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ path: '/(?!admin)' }] } }] }] }), /invalid regular expression/],
    ['headerMatch name', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ headerMatches: [{ name: '' }] }] } }] }] }), /Header name missing/],
    ['header action', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ headerMatches: [{ name: 'x', mismatch: 'DROP' as 'LOG' }] }] } }] }] }), /Invalid header action: DROP/],
    ['SNI empty', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: [''] }] }] }), /empty server name is not allowed/],
    ['SNI + http without termination', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: ['a.com'], rules: { http: [{}] } }] }] }), /ServerNames are not allowed with L7 rules without TLS termination/],
    ['listener', cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], listener: { envoyConfig: { name: 'e' }, name: 'l' } }] }] }), /listener .* not supported/],
    ['icmp family', cnp('p', 'x', { endpointSelector: sel, ingress: [{ icmps: [{ fields: [{ family: 'IPv5' as 'IPv4', type: 8 }] }] }] }), /wrong family: IPv5/],
    ['icmp type name', cnp('p', 'x', { endpointSelector: sel, ingress: [{ icmps: [{ fields: [{ family: 'IPv6', type: 'Echo' }] }] }] }), /invalid ICMP type "Echo" for family IPv6/],
    ['icmp max', cnp('p', 'x', { endpointSelector: sel, ingress: [{ icmps: [{ fields: Array.from({ length: 41 }, () => ({ type: 8 })) }] }] }), /too many types, the max is 40/],
    ['auth mode', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromEntities: ['all'], authentication: { mode: 'maybe' as 'required' } }] }), /invalid authentication mode "maybe"/],
    ['toFQDNs in deny', cnp('p', 'x', { endpointSelector: sel, egressDeny: [{ toFQDNs: [{ matchName: 'a.com' }] } as never] }), /toFQDNs is not allowed in deny rules/],
    ['L7 in deny', cnp('p', 'x', { endpointSelector: sel, ingressDeny: [{ toPorts: [{ ports: [{ port: '80' }], rules: { http: [{}] } } as never] }] }), /deny rules only take ports/],
    ['nodes disabled', cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromNodes: [{}] }] }), /FromNodes\/ToNodes rules can only be applied when the "enable-node-selector-labels" flag is set/],
    ['groups', cnp('p', 'x', { endpointSelector: sel, egress: [{ toGroups: [{ aws: {} }] }] }), /toGroups .* is not supported/],
    ['log', cnp('p', 'x', { endpointSelector: sel, ingress: [{}], log: { value: 'x'.repeat(33) } }), /must be at most 32 printable characters/],
    ['ICMP in toPorts', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ port: '8', protocol: 'ICMP' }] }] }] }), /not allowed in toPorts/],
    ['VRRP without flag', cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ protocol: 'VRRP' }] }] }] }), /requires --enable-extended-ip-protocols/],
    ['selector op', cnp('p', 'x', { endpointSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] }, ingress: [{}] }), /invalid label selector/],
    ['NP endPort < port', knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ port: 81, endPort: 80 }] }] }), /endPort must be greater than or equal to port/],
    ['NP ipBlock + pod', knp('p', 'x', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }), /may not specify both ipBlock and another peer/],
    ['NP protocol', knp('p', 'x', { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP' as 'TCP', port: 1 }] }] }), /invalid protocol/],
    ['NP policyType', knp('p', 'x', { podSelector: {}, policyTypes: ['Sideways' as 'Ingress'] }), /invalid policyType/],
  ];
  for (const [name, r, re] of table) {
    const got = issuesOf(r);
    assert.ok(got.some((g) => re.test(g)), `${name}: ${JSON.stringify(got)}`);
    assert.deepEqual(translatePolicy(r).rules, [], `${name}: an invalid resource yields no rules`);
  }
});

test('issues carry the YAML path, and every problem is reported at once', () => {
  const r = cnp('p', 'x', {
    endpointSelector: sel,
    ingress: [{ fromCIDR: ['bad'] }, { toPorts: [{ ports: [{ port: 'http-alt-too-long-name' }] }] }],
    egress: [{ toEntities: ['nope' as 'all'] }],
  });
  const t = translatePolicy(r);
  assert.deepEqual(t.issues.map((i) => i.path), [
    ['spec', 'ingress', 0, 'fromCIDR', 0],
    ['spec', 'ingress', 1, 'toPorts', 0, 'ports', 0, 'port'],
    ['spec', 'egress', 0, 'toEntities', 0],
  ]);
  assert.equal(t.issues[0]!.file, r.source.file);
  assert.equal(t.issues[0]!.line, r.source.line);
  const located = translatePolicy(r, { locate: (_res, path) => ({ line: 100 + path.length, col: 3 }) });
  assert.equal(located.issues[0]!.line, 105);
  assert.equal(located.issues[0]!.col, 3);
});

const peerKeys = (e: PolicyEntry) => e.peers.map((p) => p.key);

test('CNP: subject and peer namespace injection (spec §1.4, §2.2)', () => {
  const t = translatePolicy(cnp('p', 'prod', {
    endpointSelector: { matchLabels: { app: 'a', 'k8s:io.kubernetes.pod.namespace': 'other' } },
    ingress: [
      { fromEndpoints: [{}] },
      { fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }] },
      { fromEndpoints: [{ matchLabels: { 'io.kubernetes.pod.namespace': 'kube-system' } }] },
      { fromEndpoints: [{ matchLabels: { 'reserved:host': '' } }] },
      { fromEndpoints: [{ matchLabels: { 'io.cilium.k8s.namespace.labels.team': 'blue' } }] },
    ],
  }));
  assert.deepEqual(t.issues, []);
  const r = t.rules[0]!;
  // The policy namespace wins over a namespace the user wrote in the subject.
  assert.equal(r.subject.selector.key, '{any:app=a,k8s:io.kubernetes.pod.namespace=prod}');
  const keys = r.entries.map((e) => peerKeys(e)[0]);
  assert.deepEqual(keys, [
    'ls:{k8s:io.kubernetes.pod.namespace=prod}',
    'ls:{k8s:io.kubernetes.pod.namespace=kube-system,k8s:k8s-app=kube-dns}',
    'ls:{any:io.kubernetes.pod.namespace=kube-system}',
    'ls:{reserved:host=}',
    'ls:{any:io.cilium.k8s.namespace.labels.team=blue}', // namespace-label keys stay cluster-wide
  ]);
});

test('CCNP: no subject injection; peers get namespace Exists unless reserved or init subject', () => {
  const t = translatePolicy(ccnp('c', [
    { endpointSelector: {}, ingress: [{ fromEndpoints: [{}] }, { fromEndpoints: [{ matchLabels: { 'io.kubernetes.pod.namespace': 'x' } }] }, { fromEndpoints: [{ matchLabels: { 'reserved:world': '' } }] }] },
    { endpointSelector: { matchLabels: { 'reserved:init': '' } }, egress: [{ toEndpoints: [{}] }] },
  ]));
  assert.deepEqual(t.issues, []);
  assert.equal(t.rules[0]!.subject.selector.key, '{}');
  assert.deepEqual(t.rules[0]!.entries.map((e) => peerKeys(e)[0]), [
    'ls:{k8s:io.kubernetes.pod.namespace}', 'ls:{any:io.kubernetes.pod.namespace=x}', 'ls:{reserved:world=}',
  ]);
  assert.deepEqual(peerKeys(t.rules[1]!.entries[0]!), ['ls:{}']);
  assert.equal(t.rules[1]!.entries[0]!.peers[0]!.wildcard, false);
  const local = translatePolicy(ccnp('c', { endpointSelector: {}, ingress: [{ fromEndpoints: [{}] }] }), { policyDefaultLocalCluster: true, clusterName: 'lab' });
  assert.deepEqual(peerKeys(local.rules[0]!.entries[0]!), ['ls:{k8s:io.cilium.k8s.policy.cluster=lab,k8s:io.kubernetes.pod.namespace}']);
});

test('nil vs empty L3 lists, L4-only wildcard peer, ingress: [{}] (spec §2.3)', () => {
  const e = (rule: Rule['ingress']) => entries(cnp('p', 'x', { endpointSelector: sel, ingress: rule! }));
  assert.deepEqual(e([{}]), []); // default deny only
  const l4only = e([{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }]);
  assert.equal(l4only.length, 1);
  assert.equal(l4only[0]!.peers[0]!.wildcard, true);
  assert.deepEqual(e([{ fromEndpoints: [], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }]), []);
  assert.deepEqual(e([{ fromEntities: [], icmps: [{ fields: [{ type: 8 }] }] }]), []);
  const icmpOnly = e([{ icmps: [{ fields: [{ type: 'EchoRequest' }, { family: 'IPv6', type: 'EchoRequest' }] }] }]);
  assert.equal(icmpOnly[0]!.peers[0]!.wildcard, true);
  assert.deepEqual(icmpOnly[0]!.ports, [{ proto: 1, port: 8, plen: 16 }, { proto: 58, port: 128, plen: 16 }]);
  const l3only = e([{ fromEndpoints: [sel] }]);
  assert.equal(l3only[0]!.ports, null);
  // A PortRule without ports allows nothing.
  assert.deepEqual(e([{ fromEndpoints: [sel], toPorts: [{}] }]), []);
  // Multiple elements of one L3 list are ORed; duplicates collapse.
  assert.equal(e([{ fromEndpoints: [sel, { matchLabels: { app: 'b' } }, sel] }])[0]!.peers.length, 2);
});

test('ports: ANY ⇒ TCP/UDP/SCTP, port 0 = all ports, ranges split into prefixes, named ports lower-cased', () => {
  const e = entries(cnp('p', 'x', {
    endpointSelector: sel,
    ingress: [{ toPorts: [{ ports: [{ port: '80' }, { port: '0', protocol: 'UDP' }, { port: '8080', endPort: 8083, protocol: 'TCP' }, { port: 'HTTP-Alt', protocol: 'TCP' }, { port: '99', endPort: 10, protocol: 'TCP' }] }] }],
  }));
  assert.deepEqual(e[0]!.ports, [
    { proto: 6, port: 80, plen: 16 }, { proto: 17, port: 80, plen: 16 }, { proto: 132, port: 80, plen: 16 },
    { proto: 17, port: 0, plen: 0 },
    { proto: 6, port: 8080, plen: 14 },
    { proto: 6, name: 'http-alt' },
    { proto: 6, port: 99, plen: 16 }, // endPort < port: single port
  ]);
  const ext = entries(cnp('p', 'x', { endpointSelector: sel, ingress: [{ toPorts: [{ ports: [{ protocol: 'VRRP' }] }] }] }), { enableExtendedIPProtocols: true });
  assert.deepEqual(ext[0]!.ports, [{ proto: 112, port: 0, plen: 0 }]);
});

test('entities (spec §2.5): all = wildcard, world incl. split, cluster expansion', () => {
  const keysOf = (ent: string) => entries(cnp('p', 'x', { endpointSelector: sel, ingress: [{ fromEntities: [ent as 'all'] }] }), { clusterName: 'lab' })[0]!.peers.map((p) => p.key);
  assert.deepEqual(keysOf('all'), ['all']);
  assert.deepEqual(keysOf('world'), ['ls:{reserved:world}', 'ls:{reserved:world-ipv4}', 'ls:{reserved:world-ipv6}']);
  assert.deepEqual(keysOf('host'), ['ls:{reserved:host}']);
  assert.deepEqual(keysOf('none'), ['ls:{reserved:none}']);
  assert.deepEqual(keysOf('cluster'), [
    'ls:{reserved:host}', 'ls:{reserved:remote-node}', 'ls:{reserved:init}', 'ls:{reserved:ingress}', 'ls:{reserved:health}',
    'ls:{reserved:unmanaged}', 'ls:{reserved:kube-apiserver}', 'ls:{k8s:io.cilium.k8s.policy.cluster=lab}',
  ]);
});

test('CIDR, CIDRSet with except, FQDN selectors; referenced prefixes for the ipcache', () => {
  const t = translatePolicy(cnp('p', 'x', {
    endpointSelector: sel,
    egress: [
      { toCIDR: ['192.0.2.1', '10.0.0.0/8'] },
      { toCIDRSet: [{ cidr: '172.16.0.0/12', except: ['172.16.1.0/24'] }, { cidr: '0.0.0.0/0' }] },
      { toFQDNs: [{ matchName: 'API.OpenAI.com' }, { matchPattern: '*.github.com' }], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] },
    ],
  }));
  assert.deepEqual(t.issues, []);
  const [a, b, c] = t.rules[0]!.entries;
  assert.deepEqual(a!.peers.map((p) => p.key), ['cidr:192.0.2.1/32', 'cidr:10.0.0.0/8']);
  assert.deepEqual(b!.peers.map((p) => p.key), ['cidr:172.16.0.0/12!172.16.1.0/24', 'cidr:0.0.0.0/0']);
  assert.deepEqual(c!.peers.map((p) => p.key), ['fqdn:api.openai.com', 'fqdn:*.github.com']);
  assert.deepEqual(t.cidrs.map((p) => p.text).sort(), ['10.0.0.0/8', '172.16.0.0/12', '172.16.1.0/24', '192.0.2.1/32']);
  assert.deepEqual(t.fqdns, [{ matchName: 'api.openai.com' }, { matchPattern: '*.github.com' }]);
});

test('toServices: selector services become endpoint selectors in the service namespace', () => {
  const svc = (name: string, namespace: string, selector?: Record<string, string>, labels?: Record<string, string>): Service => ({
    apiVersion: 'v1', kind: 'Service', metadata: { name, namespace, ...(labels ? { labels } : {}) }, source: { file: 's', line: 1, col: 1 },
    spec: { ...(selector ? { selector } : {}), ports: [{ port: 80 }] },
  });
  const services = [svc('api', 'prod', { app: 'api' }, { tier: 'be' }), svc('manual', 'prod'), svc('db', 'data', { app: 'db' }, { tier: 'be' })];
  const lookup = { get: (n: string, s: string) => services.find((x) => x.metadata.namespace === n && x.metadata.name === s), list: () => services };
  const t = translatePolicy(cnp('p', 'prod', {
    endpointSelector: sel,
    egress: [
      { toServices: [{ k8sService: { serviceName: 'api' } }, { k8sService: { serviceName: 'manual' } }, { k8sService: { serviceName: 'nope', namespace: 'x' } }] },
      { toServices: [{ k8sServiceSelector: { selector: { matchLabels: { tier: 'be' } } } }] },
      { toServices: [{ k8sServiceSelector: { selector: { matchLabels: { tier: 'be' } }, namespace: 'data' } }] },
    ],
  }), { services: lookup });
  assert.deepEqual(t.issues, []);
  assert.equal(t.usesServices, true);
  const [a, b, c] = t.rules[0]!.entries;
  assert.deepEqual(a!.peers.map((p) => p.key), ['ls:{k8s:app=api,k8s:io.kubernetes.pod.namespace=prod}']);
  assert.deepEqual(b!.peers.map((p) => p.key), ['ls:{k8s:app=api,k8s:io.kubernetes.pod.namespace=prod}']);
  assert.deepEqual(c!.peers.map((p) => p.key), ['ls:{k8s:app=db,k8s:io.kubernetes.pod.namespace=data}']);
});

test('default deny per rule (spec §4.1): unset ⇒ direction has rules; explicit false; deny-only counts', () => {
  const dd = (r: Rule, opts = {}) => translatePolicy(cnp('p', 'x', r), opts).rules[0]!.defaultDeny;
  assert.deepEqual(dd({ endpointSelector: sel, ingress: [{}] }), { ingress: true, egress: false });
  assert.deepEqual(dd({ endpointSelector: sel, egressDeny: [{ toEntities: ['world'] }] }), { ingress: false, egress: true });
  assert.deepEqual(dd({ endpointSelector: sel, egress: [{ toEntities: ['world'] }], enableDefaultDeny: { egress: false } }), { ingress: false, egress: false });
  assert.deepEqual(dd({ endpointSelector: sel, egress: [{ toEntities: ['world'] }], enableDefaultDeny: { ingress: true } }), { ingress: true, egress: true });
  assert.deepEqual(dd({ endpointSelector: sel, egress: [{ toEntities: ['world'] }], enableDefaultDeny: { egress: false } }, { enableNonDefaultDenyPolicies: false }), { ingress: false, egress: true });
});

test('NetworkPolicy translation (spec §4.10)', () => {
  const t = translatePolicy(knp('np', 'x', {
    podSelector: { matchLabels: { pod: 'a' } },
    ingress: [
      { from: [{ podSelector: { matchLabels: { pod: 'b' } } }, { namespaceSelector: { matchLabels: { ns: 'y' } } }, { namespaceSelector: {}, podSelector: { matchLabels: { pod: 'c' } } }] },
      { from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }], ports: [{ port: 80 }, { protocol: 'UDP' }, { port: 'serve-81', protocol: 'TCP' }, { port: 8000, endPort: 8001 }] },
      {},
    ],
  }));
  assert.deepEqual(t.issues, []);
  const r = t.rules[0]!;
  assert.equal(r.subject.selector.key, '{k8s:io.kubernetes.pod.namespace=x,k8s:pod=a}');
  assert.deepEqual(r.defaultDeny, { ingress: true, egress: false });
  assert.deepEqual(r.entries[0]!.peers.map((p) => p.key), [
    'ls:{k8s:io.kubernetes.pod.namespace=x,k8s:pod=b}',
    'ls:{k8s:io.cilium.k8s.namespace.labels.ns=y}',
    'ls:{k8s:io.kubernetes.pod.namespace,k8s:pod=c}',
  ]);
  assert.equal(r.entries[0]!.ports, null);
  assert.deepEqual(r.entries[1]!.peers.map((p) => p.key), ['cidr:10.0.0.0/8!10.1.0.0/16']);
  assert.deepEqual(r.entries[1]!.ports, [{ proto: 6, port: 80, plen: 16 }, { proto: 17, port: 0, plen: 0 }, { proto: 6, name: 'serve-81' }, { proto: 6, port: 8000, plen: 15 }]);
  assert.equal(r.entries[2]!.peers[0]!.wildcard, true);
  assert.equal(r.origin.kind, 'NetworkPolicy');
  const types = (spec: Parameters<typeof knp>[2]) => translatePolicy(knp('np', 'x', spec)).rules[0]!.defaultDeny;
  assert.deepEqual(types({ podSelector: {} }), { ingress: true, egress: false });
  assert.deepEqual(types({ podSelector: {}, policyTypes: ['Egress'] }), { ingress: false, egress: true });
  assert.deepEqual(types({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] }), { ingress: true, egress: true });
  assert.deepEqual(types({ podSelector: {}, egress: [{}] }), { ingress: true, egress: true });
  assert.deepEqual(types({ podSelector: {}, policyTypes: ['Ingress'], egress: [{}] }), { ingress: true, egress: true });
  const named = translatePolicy({ ...knp('np', 'x', { podSelector: {} }), metadata: { name: 'np', namespace: 'x', annotations: { 'policy.cilium.io/name': 'pretty' } } });
  assert.equal(named.rules[0]!.origin.name, 'pretty');
  const noNs = translatePolicy({ ...knp('np', 'x', { podSelector: {} }), metadata: { name: 'np' } });
  assert.equal(noNs.rules[0]!.subject.selector.key, '{k8s:io.kubernetes.pod.namespace=default}');
});

test('L7 specs: http, dns, serverNames with TLS, origins with log', () => {
  const e = entries(cnp('p', 'x', {
    endpointSelector: sel,
    log: { value: 'audit-me' },
    egress: [
      { toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/a.*' }] } }] },
      { toPorts: [{ ports: [{ port: '53', protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
      { toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: ['API.openai.com'], terminatingTLS: { secret: { name: 's' } }, originatingTLS: { secret: { name: 'ca' } }, rules: { http: [{ path: '/v1/.*' }] } }] },
    ],
  }));
  assert.equal(e[0]!.l7?.parser, 'http');
  assert.equal(e[1]!.l7?.parser, 'dns');
  assert.deepEqual(e[1]!.ports!.map((p) => p.proto), [6, 17, 132]);
  assert.equal(e[2]!.l7?.parser, 'http');
  assert.deepEqual(e[2]!.l7?.serverNames, ['api.openai.com']);
  assert.equal(e[0]!.origin.log, 'audit-me');
  assert.equal(e[0]!.origin.kind, 'CiliumNetworkPolicy');
  const sni = entries(cnp('p', 'x', { endpointSelector: sel, egress: [{ toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }], serverNames: ['*.example.com'] }] }] }));
  assert.equal(sni[0]!.l7?.parser, 'tls');
});

test('malformed shapes (what the loader should have rejected) give issues, never exceptions', async () => {
  const fc = (await import('fast-check')).default;
  const keys = ['endpointSelector', 'nodeSelector', 'ingress', 'egress', 'ingressDeny', 'egressDeny', 'fromEndpoints', 'toEndpoints', 'fromCIDR', 'toCIDRSet', 'cidr', 'except', 'fromEntities', 'toFQDNs', 'matchName', 'matchPattern', 'toPorts', 'ports', 'port', 'protocol', 'endPort', 'rules', 'http', 'dns', 'method', 'path', 'headers', 'headerMatches', 'name', 'icmps', 'fields', 'type', 'family', 'matchLabels', 'matchExpressions', 'key', 'operator', 'values', 'authentication', 'mode', 'serverNames', 'toServices', 'k8sService', 'serviceName', 'enableDefaultDeny', 'log', 'value', 'podSelector', 'namespaceSelector', 'ipBlock', 'from', 'to', 'policyTypes'];
  const shape = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.integer(), fc.string(), fc.constantFrom('TCP', '80', 'http', 'world', '10.0.0.0/8', '*.a.com', 'In', 'Exists'), fc.array(tie('v'), { maxLength: 3 }), tie('o')),
    o: fc.dictionary(fc.constantFrom(...keys), tie('v'), { maxKeys: 4 }),
  }));
  fc.assert(fc.property(shape.o, fc.constantFrom('CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'NetworkPolicy'), (spec, kind) => {
    const r = { apiVersion: 'x', kind, metadata: { name: 'p', namespace: 'x' }, source: { file: 'f', line: 1, col: 1 }, spec } as unknown as PolicyResource;
    for (const res of [r, { ...r, spec: { endpointSelector: {}, ingress: [spec], egress: [spec] } } as unknown as PolicyResource]) {
      const t = translatePolicy(res);
      assert.deepEqual(t.issues.filter((i) => i.code === 'POLICY_SHAPE_INVALID'), []);
    }
  }), { numRuns: 3000 });
});
