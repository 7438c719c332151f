/**
 * Kubernetes NetworkPolicy truth tables, after the upstream e2e suite (test/e2e/network/netpol):
 * namespaces x, y, z (label ns=<name>), pods a, b, c in each (label pod=<name>), each serving
 * 80 and 81 on TCP and UDP (container ports named serve-80-tcp, serve-81-tcp, serve-80-udp,
 * serve-81-udp). Every case is checked as a WHOLE 9×9 reachability matrix per probe.
 *
 * Expectations are written from the upstream definitions, with Cilium's documented deviation:
 * ipBlock never matches pod or node addresses (spec §2.6, §4.10), so ipBlock cases expect what
 * Cilium does, and say so. Traffic from a pod to itself never leaves its network namespace, so
 * the diagonal is always reachable (upstream's AllowLoopback).
 *
 * This file has no test of its own: test/unit/policy/np-truth-tables.test.ts evaluates the cases
 * on the policy engine; the integration suite re-probes them with real TCP/UDP in namespaces.
 */
import type { Namespace, NetworkPolicy, NetworkPolicySpec, Pod } from '../../../src/api/types.ts';

export const NP_NAMESPACES = ['x', 'y', 'z'] as const;
export const NP_POD_NAMES = ['a', 'b', 'c'] as const;
/** `namespace/pod`, row-major x/a … z/c */
export const NP_PODS: readonly string[] = NP_NAMESPACES.flatMap((n) => NP_POD_NAMES.map((p) => `${n}/${p}`));
export const NP_PORTS = [80, 81] as const;
export const NP_PROTOCOLS = ['TCP', 'UDP'] as const;
export type NPProtocol = (typeof NP_PROTOCOLS)[number];

const SRC = { file: 'np-truth-tables.ts', line: 1, col: 1 };

export function npNamespaces(): Namespace[] {
  return NP_NAMESPACES.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n, labels: { ns: n } }, source: SRC }));
}

export function npPods(): Pod[] {
  return NP_PODS.map((key) => {
    const [namespace, name] = key.split('/') as [string, string];
    return {
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels: { pod: name } }, source: SRC,
      spec: {
        containers: NP_PORTS.flatMap((port) => NP_PROTOCOLS.map((protocol) => ({
          name: `cont-${port}-${protocol.toLowerCase()}`, image: 'agnhost',
          ports: [{ name: `serve-${port}-${protocol.toLowerCase()}`, containerPort: port, protocol }],
        }))),
      },
    };
  });
}

export interface PeerSel {
  namespace?: string;
  pod?: string;
}

function sel(s: PeerSel, key: string): boolean {
  const [n, p] = key.split('/');
  return (s.namespace === undefined || s.namespace === n) && (s.pod === undefined || s.pod === p);
}

/** A from × to matrix of expected (or observed) reachability, default all reachable. */
export class Reachability {
  readonly #m = new Map<string, boolean>();

  constructor(initial = true) {
    for (const f of NP_PODS) for (const t of NP_PODS) this.#m.set(`${f}>${t}`, initial);
  }

  get(from: string, to: string): boolean {
    return this.#m.get(`${from}>${to}`)!;
  }

  set(from: string, to: string, v: boolean): this {
    this.#m.set(`${from}>${to}`, v);
    return this;
  }

  /** Every pair matching the two peer selectors. */
  expectPeer(from: PeerSel, to: PeerSel, v: boolean): this {
    for (const f of NP_PODS) for (const t of NP_PODS) if (sel(from, f) && sel(to, t)) this.set(f, t, v);
    return this;
  }

  expectAllIngress(to: PeerSel, v: boolean): this {
    return this.expectPeer({}, to, v);
  }

  expectAllEgress(from: PeerSel, v: boolean): this {
    return this.expectPeer(from, {}, v);
  }

  /** A pod always reaches itself. */
  allowLoopback(): this {
    for (const p of NP_PODS) this.set(p, p, true);
    return this;
  }

  /** Cells that differ, as `from -> to: want X, got Y`. */
  diff(actual: Reachability): string[] {
    const out: string[] = [];
    for (const f of NP_PODS) for (const t of NP_PODS) {
      if (this.get(f, t) !== actual.get(f, t)) out.push(`${f} -> ${t}: want ${this.get(f, t) ? '.' : 'X'}, got ${actual.get(f, t) ? '.' : 'X'}`);
    }
    return out;
  }

  /** Upstream-style table: `.` reachable, `X` blocked. */
  toString(): string {
    const head = `     ${NP_PODS.map((p) => p.padEnd(4)).join('')}`;
    return [head, ...NP_PODS.map((f) => `${f.padEnd(5)}${NP_PODS.map((t) => (this.get(f, t) ? '.' : 'X').padEnd(4)).join('')}`)].join('\n');
  }
}

export interface NPProbe {
  port: number;
  protocol: NPProtocol;
  expect: Reachability;
}

export interface NPCase {
  name: string;
  /** the upstream e2e test this follows */
  upstream: string;
  /**
   * Policies; ipBlock cases build them from the pods' IPs of one family (`x/a` → `10.244.1.7`, or
   * `fd00:10:244:1::7` with family 6) and write that family's CIDRs.
   */
  policies: (ips: Readonly<Record<string, string>>, family?: 4 | 6) => NetworkPolicy[];
  probes: NPProbe[];
  /** Where the expectation follows Cilium rather than upstream Kubernetes. */
  deviation?: string;
}

function np(name: string, namespace: string, spec: NetworkPolicySpec): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, source: SRC, spec };
}

const podA = { matchLabels: { pod: 'a' } };
const r = () => new Reachability();
const probe = (port: number, protocol: NPProtocol, expect: Reachability): NPProbe => ({ port, protocol, expect: expect.allowLoopback() });

export const NP_CASES: readonly NPCase[] = [
  {
    name: 'deny all ingress in a namespace',
    upstream: "should support a 'default-deny-ingress' policy",
    policies: () => [np('deny-ingress', 'x', { podSelector: {}, policyTypes: ['Ingress'] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x' }, false)), probe(81, 'UDP', r().expectAllIngress({ namespace: 'x' }, false))],
  },
  {
    name: 'allow all ingress next to deny all',
    upstream: "should support a 'default-deny-all' policy / allow-all ingress",
    policies: () => [
      np('deny-all', 'x', { podSelector: {}, policyTypes: ['Ingress'] }),
      np('allow-all', 'x', { podSelector: {}, ingress: [{}] }),
    ],
    probes: [probe(80, 'TCP', r()), probe(81, 'UDP', r())],
  },
  {
    name: 'pod selector in the same namespace',
    upstream: 'should enforce policy to allow traffic from pods within server namespace based on PodSelector',
    policies: () => [np('allow-b', 'x', { podSelector: podA, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'x', pod: 'b' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'namespace selector',
    upstream: 'should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector',
    policies: () => [np('allow-ns-y', 'x', { podSelector: podA, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'y' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'pod AND namespace selector in one peer',
    upstream: 'should enforce policy based on PodSelector and NamespaceSelector',
    policies: () => [np('allow-b-not-x', 'x', {
      podSelector: podA,
      ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] }, podSelector: { matchLabels: { pod: 'b' } } }] }],
    })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)
      .expectPeer({ namespace: 'y', pod: 'b' }, { namespace: 'x', pod: 'a' }, true)
      .expectPeer({ namespace: 'z', pod: 'b' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'pod OR namespace selector (two peers)',
    upstream: 'should enforce policy based on PodSelector or NamespaceSelector',
    policies: () => [np('allow-b-or-not-x', 'x', {
      podSelector: podA,
      ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] } }, { podSelector: { matchLabels: { pod: 'b' } } }] }],
    })],
    probes: [probe(80, 'TCP', r().expectPeer({ namespace: 'x', pod: 'c' }, { namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'ports: only 81/TCP from anywhere',
    upstream: 'should enforce policy based on Ports',
    policies: () => [np('allow-81', 'x', { podSelector: podA, ingress: [{ ports: [{ port: 81, protocol: 'TCP' }] }] })],
    probes: [
      probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)),
      probe(81, 'TCP', r()),
      probe(81, 'UDP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)),
    ],
  },
  {
    name: 'named port',
    upstream: 'should allow ingress access on one named port',
    policies: () => [np('allow-serve-81-tcp', 'x', { podSelector: podA, ingress: [{ ports: [{ port: 'serve-81-tcp' }] }] })],
    probes: [probe(81, 'TCP', r()), probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)), probe(81, 'UDP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'named port of another protocol',
    upstream: 'should allow ingress access from namespace on one named port',
    policies: () => [np('allow-serve-80-udp-from-y', 'x', { podSelector: podA, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 'serve-80-udp', protocol: 'UDP' }] }] })],
    probes: [
      probe(80, 'UDP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'y' }, { namespace: 'x', pod: 'a' }, true)),
      probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)),
    ],
  },
  {
    name: 'deny all egress in a namespace',
    upstream: "should support a 'default-deny-all' policy (egress)",
    policies: () => [np('deny-egress', 'x', { podSelector: {}, policyTypes: ['Egress'] })],
    probes: [probe(80, 'TCP', r().expectAllEgress({ namespace: 'x' }, false)), probe(81, 'UDP', r().expectAllEgress({ namespace: 'x' }, false))],
  },
  {
    name: 'egress to a namespace',
    upstream: 'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector',
    policies: () => [np('egress-to-y', 'x', { podSelector: podA, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'x', pod: 'a' }, { namespace: 'y' }, true))],
  },
  {
    name: 'egress to one pod of another namespace (pod AND namespace)',
    upstream: 'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector',
    policies: () => [np('egress-to-y-a', 'x', { podSelector: podA, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: podA }] }] })],
    probes: [probe(80, 'UDP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'x', pod: 'a' }, { namespace: 'y', pod: 'a' }, true))],
  },
  {
    name: 'policyTypes Ingress+Egress with only ingress rules: egress denied',
    upstream: 'should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector',
    policies: () => [np('both', 'x', { podSelector: podA, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'x', pod: 'b' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'policyTypes Egress only without rules: ingress unaffected',
    upstream: 'should deny egress from pods based on PodSelector',
    policies: () => [np('egress-only', 'x', { podSelector: podA, policyTypes: ['Egress'] })],
    probes: [probe(81, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'ipBlock with except (egress) never matches pods',
    upstream: 'should enforce except clause while egress access to server in CIDR block',
    deviation: 'upstream Kubernetes allows x/a to reach every pod but y/b; Cilium never matches pod IPs with CIDR rules, so x/a reaches no pod',
    policies: (ips, family = 4) => [np('egress-cidr-except', 'x', {
      podSelector: podA, policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: family === 4 ? { cidr: '10.0.0.0/8', except: [`${ips['y/b']}/32`] } : { cidr: 'fd00::/8', except: [`${ips['y/b']}/128`] } }] }],
    })],
    probes: [probe(80, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'ipBlock 0.0.0.0/0 (::/0) (ingress) allows outside peers, not pods',
    upstream: 'should allow ingress access from updated pod / ipBlock',
    deviation: 'upstream Kubernetes allows every pod to reach x/a; Cilium matches only addresses outside the cluster',
    policies: (_ips, family = 4) => [np('ingress-world', 'x', { podSelector: podA, ingress: [{ from: [{ ipBlock: { cidr: family === 4 ? '0.0.0.0/0' : '::/0' } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'multiple policies on one pod are a union',
    upstream: 'should enforce multiple, stacked policies with overlapping podSelectors',
    policies: () => [
      np('from-b', 'x', { podSelector: podA, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }),
      np('from-y', 'x', { podSelector: podA, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] }),
    ],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)
      .expectPeer({ namespace: 'x', pod: 'b' }, { namespace: 'x', pod: 'a' }, true)
      .expectPeer({ namespace: 'y' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'empty from list: all sources',
    upstream: 'should allow ingress access from any source when from is empty',
    policies: () => [
      np('deny-all', 'x', { podSelector: {}, policyTypes: ['Ingress'] }),
      np('empty-from', 'x', { podSelector: podA, ingress: [{ from: [] }] }),
    ],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x' }, false).expectAllIngress({ namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'empty ingress list: deny all to the pod',
    upstream: "should support a 'default-deny-ingress' policy (explicit empty ingress)",
    policies: () => [np('empty-ingress', 'x', { podSelector: podA, ingress: [] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)), probe(81, 'UDP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    name: 'port range (endPort)',
    upstream: 'should support allow-all policy / endPort',
    policies: () => [np('range', 'x', { podSelector: podA, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }], ports: [{ port: 80, endPort: 81, protocol: 'TCP' }] }] })],
    probes: [
      probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'z' }, { namespace: 'x', pod: 'a' }, true)),
      probe(81, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'z' }, { namespace: 'x', pod: 'a' }, true)),
      probe(80, 'UDP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false)),
    ],
  },
  {
    name: 'namespaceSelector {} with podSelector: that pod in every namespace',
    upstream: 'should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
    policies: () => [np('c-anywhere', 'x', { podSelector: podA, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { pod: 'c' } } }] }] })],
    probes: [probe(80, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false).expectPeer({ pod: 'c' }, { namespace: 'x', pod: 'a' }, true))],
  },
  {
    name: 'UDP only: TCP to the same port is blocked',
    upstream: 'should not allow access by TCP when a policy specifies only UDP',
    policies: () => [np('udp-81', 'x', { podSelector: podA, ingress: [{ ports: [{ port: 81, protocol: 'UDP' }] }] })],
    probes: [probe(81, 'UDP', r()), probe(81, 'TCP', r().expectAllIngress({ namespace: 'x', pod: 'a' }, false))],
  },
  {
    // The control of the next case: the same egress rule alone lets a reach b on 80 (and only
    // there), so the next case's denial comes from b's ingress, not from a's egress (which
    // `egress: []` would deny just as well).
    name: 'both sides must allow: the egress rule alone reaches b on 80',
    upstream: 'should enforce ingress and egress policies together',
    policies: () => [
      np('a-egress-to-b', 'x', { podSelector: podA, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
    ],
    probes: [
      probe(80, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectPeer({ namespace: 'x', pod: 'a' }, { namespace: 'x', pod: 'b' }, true)),
      probe(81, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false)),
    ],
  },
  {
    name: 'both sides must allow: egress allowed, ingress denied',
    upstream: 'should enforce ingress and egress policies together',
    policies: () => [
      np('a-egress-to-b', 'x', { podSelector: podA, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }),
      np('b-deny-ingress', 'x', { podSelector: { matchLabels: { pod: 'b' } }, policyTypes: ['Ingress'] }),
    ],
    probes: [
      probe(80, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectAllIngress({ namespace: 'x', pod: 'b' }, false)),
      probe(81, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false).expectAllIngress({ namespace: 'x', pod: 'b' }, false)),
    ],
  },
  {
    name: 'egress on one port to anywhere',
    upstream: 'should enforce egress policy allowing traffic to a server on a specific port',
    policies: () => [np('egress-80', 'x', { podSelector: podA, policyTypes: ['Egress'], egress: [{ ports: [{ port: 80, protocol: 'TCP' }] }] })],
    probes: [probe(80, 'TCP', r()), probe(81, 'TCP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false)), probe(80, 'UDP', r().expectAllEgress({ namespace: 'x', pod: 'a' }, false))],
  },
];
