/**
 * Test helpers: resources built directly in TypeScript (the loader's normalised shapes) and a
 * small "world" of pods with identities on top of the real PolicyEngine.
 */
import type {
  CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, Namespace, NetworkPolicy, NetworkPolicySpec, Pod, Rule,
} from '../../../src/api/types.ts';
import { PolicyEngine, type PolicyEngineOptions } from '../../../src/policy/engine.ts';
import { podNamedPorts } from '../../../src/policy/named-ports.ts';
import { lookupMapState, type LookupResult } from '../../../src/policy/lookup.ts';
import { resolve } from '../../../src/policy/distillery.ts';
import type { EndpointInfo } from '../../../src/policy/resolve-options.ts';
import { PROTO_BY_NAME } from '../../../src/policy/ports.ts';
import { mapStateKeyString, type Direction, type MapState, type MapStateEntry, type MapStateKey } from '../../../src/policy/types.ts';
import type { LabelSet } from '../../../src/labels/labels.ts';
import { cidrIdentityLabels, fqdnIdentityLabels } from '../../../src/identity/labels.ts';

let line = 1;
const src = (file = 'test.yaml') => ({ file, line: line++, col: 1 });

export function cnp(name: string, namespace: string, spec: Rule | Rule[], file?: string): CiliumNetworkPolicy {
  return {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name, namespace }, source: src(file),
    ...(Array.isArray(spec) ? { specs: spec } : { spec }),
  };
}

export function ccnp(name: string, spec: Rule | Rule[]): CiliumClusterwideNetworkPolicy {
  return {
    apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name }, source: src(),
    ...(Array.isArray(spec) ? { specs: spec } : { spec }),
  };
}

export function knp(name: string, namespace: string, spec: NetworkPolicySpec): NetworkPolicy {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, source: src(), spec };
}

export function ns(name: string, labels: Record<string, string> = {}): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels }, source: src() };
}

export function pod(namespace: string, name: string, labels: Record<string, string>, ports: { name: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[] = []): Pod {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, source: src(),
    spec: { containers: [{ name: 'main', image: 'x', ports: ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol ?? 'TCP' })) }] },
  };
}

export interface WorldPod {
  pod: Pod;
  identity: number;
  labels: LabelSet;
  info: EndpointInfo;
}

/** Pods with identities in a PolicyEngine; verdicts computed with resolve + lookupMapState. */
export class World {
  readonly engine: PolicyEngine;
  readonly pods = new Map<string, WorldPod>();
  readonly namespaces = new Map<string, Namespace>();
  #nextEp = 1;

  constructor(opts: PolicyEngineOptions = {}) {
    this.engine = new PolicyEngine(opts);
  }

  addNamespace(n: Namespace): this {
    this.namespaces.set(n.metadata.name, n);
    return this;
  }

  addPod(p: Pod): WorldPod {
    const nsName = p.metadata.namespace ?? 'default';
    const { identity } = this.engine.allocatePodIdentity(p, this.namespaces.get(nsName));
    const named = podNamedPorts(p);
    this.engine.namedPorts.set(`${nsName}/${p.metadata.name}`, identity.id, named);
    const wp: WorldPod = { pod: p, identity: identity.id, labels: identity.labels, info: { id: this.#nextEp++, identity: identity.id, labels: identity.labels, namedPorts: named } };
    this.pods.set(`${nsName}/${p.metadata.name}`, wp);
    return wp;
  }

  /** A local identity for an outside prefix (as the agent makes for policy CIDRs). */
  addCIDR(prefix: string): number {
    return this.engine.allocator.allocateSync(cidrIdentityLabels(prefix)).identity.id;
  }

  addFQDN(ip: string, selectors: { matchName?: string; matchPattern?: string }[]): number {
    return this.engine.allocator.allocateSync(fqdnIdentityLabels(ip, selectors)).identity.id;
  }

  apply(...policies: Parameters<PolicyEngine['applyPolicies']>[0]): this {
    this.engine.applyPolicies(policies);
    return this;
  }

  get(key: string): WorldPod {
    const p = this.pods.get(key.includes('/') ? key : `default/${key}`);
    if (!p) throw new Error(`no pod ${key}`);
    return p;
  }

  mapState(key: string): MapState {
    return resolve({ repository: this.engine.repository, options: this.engine.resolveOptions }, this.get(key).info);
  }

  /** Policy at one side: `dir` evaluated at pod `at` for remote identity `remote`. */
  lookup(at: string, dir: Direction, remote: number, proto: string | number, port: number): LookupResult {
    const p = typeof proto === 'number' ? proto : PROTO_BY_NAME[proto.toUpperCase()]!;
    return lookupMapState(this.mapState(at), dir, remote, p, port);
  }

  /** Whole-path verdict between two pods: egress at `from`, ingress at `to`. */
  allowed(from: string, to: string, proto: string, port: number): boolean {
    const a = this.get(from);
    const b = this.get(to);
    return this.lookup(from, 'egress', b.identity, proto, port).verdict !== 'drop'
      && this.lookup(to, 'ingress', a.identity, proto, port).verdict !== 'drop';
  }
}

export const TCP = 6;
export const UDP = 17;
export const ICMP = 1;

/** Map-state entries and an ingress MapState built by hand, for the lookup contract's tests (the C datapath mirrors it). */
export const allow = (matchType = 2, l7: MapStateEntry['l7'] = null, authType = 0): MapStateEntry => ({ verdict: 'allow', l7, authType, matchType, origins: [] });
export const deny = (matchType = 2): MapStateEntry => ({ verdict: 'deny', l7: null, authType: 0, matchType, origins: [] });
export function ms(entries: [Omit<MapStateKey, 'direction'>, MapStateEntry][], dd = true): MapState {
  const m: MapState = { entries: new Map(), defaultDeny: { ingress: dd, egress: false } };
  for (const [k, e] of entries) {
    const key = { direction: 'ingress' as const, ...k };
    m.entries.set(mapStateKeyString(key), { key, entry: e });
  }
  return m;
}
