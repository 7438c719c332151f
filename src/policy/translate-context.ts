/**
 * What every part of the translation shares: its options and result types, and the context of
 * one resource (Ctx) that collects issues at YAML paths (line:col when the loader can locate
 * them) and makes rule origins.
 */
import type { FQDNSelector, LabelSelector, PolicyResource, Service } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import { K8sLabel, LabelSource } from '../labels/labels.ts';
import { selectorRequirements, validateSelector, type Requirement } from '../labels/selector.ts';
import type { Prefix } from '../ipcache/prefix.ts';
import { DEFAULT_CLUSTER_NAME } from '../identity/labels.ts';
import type { TranslatedRule } from './rules.ts';
import type { RuleOrigin } from './types.ts';

export interface ServiceLookup {
  get(namespace: string, name: string): Service | undefined;
  list(): Iterable<Service>;
}

export interface TranslateOptions {
  /** `k8s:io.cilium.k8s.policy.cluster` of local pods; default `default`. */
  clusterName?: string;
  /** --enable-node-selector-labels (fromNodes/toNodes); default false */
  enableNodeSelectorLabels?: boolean;
  /** --enable-icmp-rules; default true */
  enableICMPRules?: boolean;
  /** --enable-l7-proxy; default true */
  enableL7Proxy?: boolean;
  /** --enable-non-default-deny-policies (honour enableDefaultDeny); default true */
  enableNonDefaultDenyPolicies?: boolean;
  /** --policy-default-local-cluster; default false */
  policyDefaultLocalCluster?: boolean;
  /** --enable-extended-ip-protocols (VRRP, IGMP); default false */
  enableExtendedIPProtocols?: boolean;
  /**
   * Whether `authentication.mode: required` can be honoured. Default false: membrane has no
   * mutual authentication (no SPIRE, no auth map), so the datapath would drop every such packet
   * with 189 (AUTH_REQUIRED); import rejects the rule instead. Tests of the MapState folding set it.
   */
  enableMutualAuth?: boolean;
  /**
   * Whether host policies (`nodeSelector`) are enforced on the node's host endpoint. Default
   * false: membrane has no host firewall yet, so import rejects them rather than leave the host
   * open while the policy looks applied. Tests of the repository's subject matching set it.
   */
  enableHostFirewall?: boolean;
  /** Services for toServices; without it toServices selects nothing. */
  services?: ServiceLookup;
  /**
   * Line and column of a YAML path inside the resource's document, when the loader can tell.
   * Without it every issue and rule origin points at the document start (`resource.source`).
   */
  locate?: (resource: PolicyResource, path: (string | number)[]) => { line: number; col: number } | undefined;
}

export interface Translation {
  rules: TranslatedRule[];
  issues: Issue[];
  /** Every CIDR prefix (and except) the policy names: the ipcache needs identities for them. */
  cidrs: Prefix[];
  fqdns: FQDNSelector[];
  /** Whether the translation used services (re-translate when services change). */
  usesServices: boolean;
}

export type Path = (string | number)[];

export const NS_KEY = K8sLabel.namespace;
export const NS_LABELS_PREFIX = K8sLabel.namespaceLabels;
export const isK8sOrAny = (r: Requirement) => r.source === LabelSource.k8s || r.source === LabelSource.any;
export const isNamespaceReq = (r: Requirement) => r.key === NS_KEY && isK8sOrAny(r);

export class Ctx {
  readonly issues: Issue[] = [];
  readonly cidrs = new Map<string, Prefix>();
  readonly fqdns = new Map<string, FQDNSelector>();
  usesServices = false;
  readonly res: PolicyResource;
  readonly opts: TranslateOptions;
  readonly clusterName: string;
  readonly namespace: string;

  constructor(res: PolicyResource, opts: TranslateOptions) {
    this.res = res;
    this.opts = opts;
    this.clusterName = opts.clusterName ?? DEFAULT_CLUSTER_NAME;
    this.namespace = res.kind === 'CiliumClusterwideNetworkPolicy' ? '' : (res.metadata.namespace || 'default');
  }

  where(path: Path): { file: string; line: number; col: number } {
    const at = this.opts.locate?.(this.res, path);
    const src = this.res.source ?? { file: '', line: 0, col: 0 };
    return { file: src.file, line: at?.line ?? src.line, col: at?.col ?? src.col };
  }

  issue(code: string, path: Path, message: string, hint?: string): void {
    this.issues.push({ code, message, path, ...this.where(path), ...(hint ? { hint } : {}) });
  }

  origin(path: Path, log?: string): RuleOrigin {
    const w = this.where(path);
    const name = this.res.kind === 'NetworkPolicy'
      ? (this.res.metadata.annotations?.['policy.cilium.io/name'] ?? this.res.metadata.annotations?.['io.cilium.name'] ?? this.res.metadata.name)
      : this.res.metadata.name;
    return Object.freeze({
      kind: this.res.kind, name, namespace: this.namespace, file: w.file, line: w.line,
      ...(log !== undefined ? { log } : {}),
    });
  }

  addCidr(p: Prefix): void {
    if (p.len > 0) this.cidrs.set(p.text, p);
  }
}

export function list<T>(v: T[] | undefined | null): T[] {
  return Array.isArray(v) ? v : [];
}

/** Validates and compiles a label selector's requirements; problems go to the context. */
export function selectorReqs(ctx: Ctx, sel: LabelSelector | undefined | null, path: Path, defaultSource: string = LabelSource.any): Requirement[] | undefined {
  const problems = validateSelector(sel);
  for (const p of problems) ctx.issue('POLICY_SELECTOR_INVALID', [...path, ...p.path], p.message);
  if (problems.length) return undefined;
  return selectorRequirements(sel ?? {}, defaultSource);
}
