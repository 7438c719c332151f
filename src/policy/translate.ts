/**
 * Translation of CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes
 * NetworkPolicy into internal rules (rules.ts), with validation. Every problem is reported at
 * once, each with its YAML path; a resource with any problem yields no rules.
 *
 * Semantics follow spec/policy.md: §1.3 rule validation, §1.4 subject namespace scoping, §2.2
 * namespace injection into peer selectors, §2.3 nil vs empty L3 lists, §2.4 one L3 kind per
 * element, §2.5 entities, §2.6 CIDR, §2.8 services, §2.9 toFQDNs, §2.10 ICMP, §3 toPorts and L7,
 * §4.1 default deny, §4.10 NetworkPolicy.
 */
import { RE2JS } from 're2js';
import type {
  CIDRRule, EgressRule, Entity, FQDNSelector, ICMPRule, IngressRule, LabelSelector, NetworkPolicy,
  NetworkPolicyPeer, NetworkPolicyPort, PolicyResource, PortProtocol, PortRule, Rule, Service, TLSContext,
} from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import { K8sLabel, LabelSet, LabelSource } from '../labels/labels.ts';
import {
  compileRequirements, requirement, selectorRequirements, show, validateSelector, type Requirement,
} from '../labels/selector.ts';
import { parsePrefix, prefixContains, type Prefix } from '../ipcache/prefix.ts';
import { DEFAULT_CLUSTER_NAME } from '../identity/labels.ts';
import { cidrPeer, fqdnPeer, labelPeer, WILDCARD_PEER, type PeerSelector } from './selectors.ts';
import type { L7Spec, PolicyEntry, PortSpec, TranslatedRule } from './rules.ts';
import type { Direction, RuleOrigin } from './types.ts';
import { ANY_PROTOCOLS, PROTO_BY_NAME, isNamedPort, parseICMPType, rangeToPrefixes } from './ports.ts';
import { selectorProblem } from '../fqdn/matchpattern.ts';
import { Proto } from './types.ts';

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

type Path = (string | number)[];

const ENTITIES = new Set<string>([
  'all', 'world', 'world-ipv4', 'world-ipv6', 'cluster', 'host', 'init', 'ingress', 'unmanaged',
  'remote-node', 'health', 'none', 'kube-apiserver',
]);

const AUTH_MODES: Record<string, number> = { disabled: 0, required: 1, 'test-always-fail': 2 };

const NS_KEY = K8sLabel.namespace;
const NS_LABELS_PREFIX = K8sLabel.namespaceLabels;
const isK8sOrAny = (r: Requirement) => r.source === LabelSource.k8s || r.source === LabelSource.any;
const isNamespaceReq = (r: Requirement) => r.key === NS_KEY && isK8sOrAny(r);

function reservedSelector(name: string): PeerSelector {
  return labelPeer([requirement(`reserved:${name}`, 'Exists')]);
}

/** Peer selectors for an entity (spec §2.5). */
export function entitySelectors(entity: Entity, clusterName: string): PeerSelector[] {
  switch (entity) {
    case 'all': return [WILDCARD_PEER];
    case 'world': return [reservedSelector('world'), reservedSelector('world-ipv4'), reservedSelector('world-ipv6')];
    case 'cluster': return [
      ...(['host', 'remote-node', 'init', 'ingress', 'health', 'unmanaged', 'kube-apiserver'] as const).map(reservedSelector),
      labelPeer([requirement(`k8s:${K8sLabel.cluster}`, 'In', [clusterName])]),
    ];
    default: return [reservedSelector(entity)];
  }
}

class Ctx {
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

function list<T>(v: T[] | undefined | null): T[] {
  return Array.isArray(v) ? v : [];
}

/** Validates and compiles a label selector's requirements; problems go to the context. */
function selectorReqs(ctx: Ctx, sel: LabelSelector | undefined | null, path: Path, defaultSource: string = LabelSource.any): Requirement[] | undefined {
  const problems = validateSelector(sel);
  for (const p of problems) ctx.issue('POLICY_SELECTOR_INVALID', [...path, ...p.path], p.message);
  if (problems.length) return undefined;
  return selectorRequirements(sel ?? {}, defaultSource);
}

// ------------------------------------------------------------------------------------------
// Ports and L7

function parseProtocol(ctx: Ctx, pp: PortProtocol, path: Path): { protos: number[]; extended: boolean } | undefined {
  const raw = show(pp.protocol ?? '').toUpperCase();
  if (raw === '' || raw === 'ANY') return { protos: [...ANY_PROTOCOLS], extended: false };
  if (raw === 'TCP' || raw === 'UDP' || raw === 'SCTP') return { protos: [PROTO_BY_NAME[raw]!], extended: false };
  if (raw === 'VRRP' || raw === 'IGMP') {
    if (!(ctx.opts.enableExtendedIPProtocols ?? false)) {
      ctx.issue('POLICY_PROTOCOL_UNSUPPORTED', [...path, 'protocol'], `protocol ${raw} requires --enable-extended-ip-protocols`, 'use TCP, UDP, SCTP or ANY');
      return undefined;
    }
    return { protos: [PROTO_BY_NAME[raw]!], extended: true };
  }
  if (raw === 'ICMP' || raw === 'ICMPV6') {
    ctx.issue('POLICY_PROTOCOL_INVALID', [...path, 'protocol'], `protocol ${raw} is not allowed in toPorts`, 'allow ICMP with an `icmps` block');
    return undefined;
  }
  ctx.issue('POLICY_PROTOCOL_INVALID', [...path, 'protocol'], `invalid protocol "${show(pp.protocol)}"`, 'protocols: TCP, UDP, SCTP, ANY');
  return undefined;
}

interface ExpandedPorts {
  specs: PortSpec[];
  hasZero: boolean;
  hasRange: boolean;
  protos: Set<string>;
}

function expandPorts(ctx: Ctx, ports: PortProtocol[], path: Path): ExpandedPorts | undefined {
  const out: ExpandedPorts = { specs: [], hasZero: false, hasRange: false, protos: new Set() };
  if (ports.length > 40) ctx.issue('POLICY_TOO_MANY_PORTS', path, `too many ports, the max is 40`);
  let ok = true;
  ports.forEach((pp, k) => {
    const pPath = [...path, k];
    if (!pp || typeof pp !== 'object') {
      ctx.issue('POLICY_PORT_INVALID', pPath, 'port entry must be an object');
      ok = false;
      return;
    }
    const proto = parseProtocol(ctx, pp, pPath);
    if (!proto) { ok = false; return; }
    out.protos.add(show(pp.protocol ?? 'ANY').toUpperCase() || 'ANY');
    const portText = pp.port === undefined || pp.port === null ? '' : show(pp.port).trim();
    if (proto.extended) {
      if (portText !== '' && portText !== '0') {
        ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], `port must be empty or 0 for protocol ${show(pp.protocol)}`);
        ok = false;
        return;
      }
      for (const p of proto.protos) out.specs.push({ proto: p, port: 0, plen: 0 });
      return;
    }
    if (portText === '') {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], 'port must be specified');
      ok = false;
      return;
    }
    if (isNamedPort(portText)) {
      for (const p of proto.protos) out.specs.push({ proto: p, name: portText.toLowerCase() });
      return;
    }
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], `unable to parse port: "${portText}"`, 'a port is a number 0-65535 or an IANA service name (a named container port)');
      ok = false;
      return;
    }
    const port = Number(portText);
    const end = pp.endPort;
    if (end !== undefined && end !== null && (!Number.isInteger(end) || end < 0 || end > 65535)) {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'endPort'], `endPort must be an integer 0-65535`);
      ok = false;
      return;
    }
    if (port === 0) {
      out.hasZero = true;
      for (const p of proto.protos) out.specs.push({ proto: p, port: 0, plen: 0 });
      return;
    }
    const hi = end !== undefined && end !== null && end > port ? end : port;
    if (hi > port) out.hasRange = true;
    for (const blk of rangeToPrefixes(port, hi)) for (const p of proto.protos) out.specs.push({ proto: p, port: blk.port, plen: blk.plen });
  });
  return ok ? out : undefined;
}

const HEADER_ACTIONS = new Set(['LOG', 'ADD', 'DELETE', 'REPLACE']);
const SERVER_NAME_RE = /^(\*?\*\.)?([-a-zA-Z0-9_]+\.?)+$/;

function checkRegex(ctx: Ctx, v: unknown, path: Path): void {
  if (v === undefined || v === null || v === '') return;
  if (typeof v !== 'string') {
    ctx.issue('POLICY_L7_INVALID', path, 'must be a string (a regular expression)');
    return;
  }
  try {
    RE2JS.compile(v);
  } catch (e) {
    ctx.issue('POLICY_L7_REGEX_INVALID', path, `invalid regular expression "${v}": ${(e as Error).message}`, 'regular expressions use RE2 syntax and match the whole value (no backreferences or lookaround)');
  }
}

function checkTLS(ctx: Ctx, t: TLSContext | undefined, path: Path): void {
  if (t === undefined || t === null) return;
  if (!t.secret || typeof t.secret.name !== 'string' || t.secret.name === '') {
    ctx.issue('POLICY_TLS_INVALID', [...path, 'secret', 'name'], 'TLS context needs secret.name');
  }
}

function l7Spec(ctx: Ctx, pr: PortRule, dir: Direction, ports: ExpandedPorts, path: Path): L7Spec | null | undefined {
  const rules = pr.rules ?? {};
  const http = list(rules.http);
  const dns = list(rules.dns);
  const kafka = list(rules.kafka);
  const generic = rules.l7proto !== undefined && rules.l7proto !== '' ? list(rules.l7) : undefined;
  const serverNames = pr.serverNames;
  const kinds = [
    rules.http !== undefined ? 'http' : '', rules.dns !== undefined ? 'dns' : '',
    rules.kafka !== undefined ? 'kafka' : '', generic !== undefined ? 'generic' : '',
  ].filter(Boolean);
  const hasL7 = kinds.length > 0 || serverNames !== undefined || pr.terminatingTLS !== undefined || pr.originatingTLS !== undefined || pr.listener !== undefined;
  if (!hasL7) return null;
  let ok = true;
  const bad = (code: string, p: Path, msg: string, hint?: string) => { ctx.issue(code, p, msg, hint); ok = false; };
  if (!(ctx.opts.enableL7Proxy ?? true)) bad('POLICY_L7_DISABLED', path, 'L7 policy is not supported since L7 proxy is not enabled');
  if (kinds.length > 1) bad('POLICY_L7_MULTIPLE', [...path, 'rules'], 'multiple L7 protocol rule types specified in single rule', 'use one of http, dns, kafka or l7proto per toPorts entry');
  if (pr.listener !== undefined) {
    bad('POLICY_LISTENER_UNSUPPORTED', [...path, 'listener'], 'listener (CiliumEnvoyConfig) redirects are not supported', 'express the L7 policy with rules.http instead');
  }
  const kind = kinds[0];
  if (kind === 'dns') {
    if (dir === 'ingress') bad('POLICY_L7_DNS_INGRESS', [...path, 'rules', 'dns'], 'DNS rules are not allowed on ingress');
    if (ports.specs.length === 0) bad('POLICY_L7_DNS_PORT', [...path, 'ports'], 'port 53 must be specified for DNS rules');
    if (ports.hasRange) bad('POLICY_L7_DNS_RANGE', [...path, 'ports'], 'DNS rules do not support port ranges');
    for (const p of ports.protos) if (!['TCP', 'UDP', 'ANY'].includes(p)) bad('POLICY_L7_PROTOCOL', [...path, 'ports'], `DNS rules can only apply to TCP, UDP or ANY (not ${p})`);
    dns.forEach((d, i) => {
      const p = [...path, 'rules', 'dns', i];
      const problem = selectorProblem(d);
      if (problem) bad('POLICY_FQDN_INVALID', problem.field ? [...p, problem.field] : p, problem.message);
    });
  } else if (kind !== undefined) {
    for (const p of ports.protos) {
      if (p !== 'TCP') bad('POLICY_L7_PROTOCOL', [...path, 'ports'], `L7 rules can only apply to TCP (not ${p}) except for DNS rules`, 'set `protocol: TCP` on every port of this toPorts entry');
    }
  }
  if (kind !== undefined && ports.hasZero) bad('POLICY_L7_PORT_ZERO', [...path, 'ports'], 'L7 rules can not be used when a port is 0');
  if (kind === 'http') {
    http.forEach((h, i) => {
      const p = [...path, 'rules', 'http', i];
      if (!h || typeof h !== 'object') { bad('POLICY_L7_INVALID', p, 'HTTP rule must be an object'); return; }
      checkRegex(ctx, h.method, [...p, 'method']);
      checkRegex(ctx, h.path, [...p, 'path']);
      checkRegex(ctx, h.host, [...p, 'host']);
      list(h.headerMatches).forEach((m, j) => {
        const mp = [...p, 'headerMatches', j];
        if (!m || typeof m.name !== 'string' || m.name === '') bad('POLICY_L7_INVALID', [...mp, 'name'], 'Header name missing');
        if (m?.mismatch !== undefined && !HEADER_ACTIONS.has(m.mismatch)) bad('POLICY_L7_INVALID', [...mp, 'mismatch'], `Invalid header action: ${show(m.mismatch)}`);
        if (m?.secret !== undefined && (!m.secret || !m.secret.name)) bad('POLICY_L7_INVALID', [...mp, 'secret', 'name'], 'Secret name missing');
      });
    });
  }
  if (serverNames !== undefined) {
    if (!Array.isArray(serverNames) || serverNames.length === 0) bad('POLICY_TLS_SNI_INVALID', [...path, 'serverNames'], 'serverNames must list at least one name');
    else serverNames.forEach((s, i) => {
      if (typeof s !== 'string' || s === '') bad('POLICY_TLS_SNI_INVALID', [...path, 'serverNames', i], 'empty server name is not allowed');
      else if (s.length > 255 || !SERVER_NAME_RE.test(s)) bad('POLICY_TLS_SNI_INVALID', [...path, 'serverNames', i], `invalid server name "${s}"`, 'a DNS name, optionally starting with `*.` or `**.`');
    });
    if (kind !== undefined && pr.terminatingTLS === undefined) {
      bad('POLICY_TLS_SNI_INVALID', [...path, 'serverNames'], 'ServerNames are not allowed with L7 rules without TLS termination', 'add terminatingTLS (and originatingTLS) to inspect HTTP inside TLS');
    }
  }
  if (serverNames !== undefined || pr.terminatingTLS !== undefined || pr.originatingTLS !== undefined) {
    for (const p of ports.protos) if (p !== 'TCP') bad('POLICY_L7_PROTOCOL', [...path, 'ports'], `TLS rules can only apply to TCP (not ${p})`, 'set `protocol: TCP`');
  }
  checkTLS(ctx, pr.terminatingTLS, [...path, 'terminatingTLS']);
  checkTLS(ctx, pr.originatingTLS, [...path, 'originatingTLS']);
  if (!ok) return undefined;
  const parser = kind === 'http' ? 'http' : kind === 'dns' ? 'dns' : kind === 'kafka' ? 'kafka' : kind === 'generic' ? 'generic' : 'tls';
  return Object.freeze({
    parser,
    ...(kind === 'http' ? { http: Object.freeze(http.map((h) => Object.freeze({ ...h }))) } : {}),
    ...(kind === 'dns' ? { dns: Object.freeze(dns.map((d) => Object.freeze({ ...d }))) } : {}),
    ...(kind === 'kafka' ? { kafka: Object.freeze(kafka.map((k) => Object.freeze({ ...k }))) } : {}),
    ...(kind === 'generic' ? { l7proto: rules.l7proto!, l7: Object.freeze((generic ?? []).map((k) => Object.freeze({ ...k }))) } : {}),
    ...(serverNames !== undefined ? { serverNames: Object.freeze(serverNames.map((s) => s.toLowerCase())) } : {}),
    ...(pr.terminatingTLS !== undefined ? { terminatingTLS: pr.terminatingTLS } : {}),
    ...(pr.originatingTLS !== undefined ? { originatingTLS: pr.originatingTLS } : {}),
  }) as L7Spec;
}

function icmpSpecs(ctx: Ctx, icmps: ICMPRule[], path: Path): PortSpec[] | undefined {
  if (!(ctx.opts.enableICMPRules ?? true)) {
    ctx.issue('POLICY_ICMP_DISABLED', path, 'ICMP rules can only be applied when the "enable-icmp-rules" flag is set');
    return undefined;
  }
  const out: PortSpec[] = [];
  let ok = true;
  icmps.forEach((rule, i) => {
    const fields = list(rule?.fields);
    if (fields.length > 40) { ctx.issue('POLICY_ICMP_INVALID', [...path, i, 'fields'], 'too many types, the max is 40'); ok = false; }
    fields.forEach((f, j) => {
      const fp = [...path, i, 'fields', j];
      const family = f?.family ?? 'IPv4';
      if (family !== 'IPv4' && family !== 'IPv6') { ctx.issue('POLICY_ICMP_INVALID', [...fp, 'family'], `wrong family: ${show(family)}`); ok = false; return; }
      const t = f?.type === undefined ? undefined : parseICMPType(family, f.type);
      if (t === undefined) {
        ctx.issue('POLICY_ICMP_INVALID', [...fp, 'type'], `invalid ICMP type "${show(f?.type)}" for family ${family}`, 'a number 0-255 or a name such as EchoRequest');
        ok = false;
        return;
      }
      out.push({ proto: family === 'IPv6' ? Proto.ICMPV6 : Proto.ICMP, port: t, plen: 16 });
    });
  });
  return ok ? out : undefined;
}

// ------------------------------------------------------------------------------------------
// Peers

interface PeerCtx {
  ctx: Ctx;
  kind: 'cnp' | 'ccnp';
  /** CCNP whose subject selects reserved:init: peer selectors are left as written */
  ccnpInit: boolean;
}

/** Namespace (and cluster) injection into a peer endpoint selector (spec §2.2, getEndpointSelector). */
function injectPeer(pc: PeerCtx, reqs: Requirement[]): Requirement[] {
  if (reqs.some((r) => r.source === LabelSource.reserved)) return reqs;
  const out = [...reqs];
  if (!reqs.some(isNamespaceReq)) {
    if (pc.kind === 'cnp') {
      const usesNsLabels = reqs.some((r) => isK8sOrAny(r) && r.key.startsWith(NS_LABELS_PREFIX));
      if (!usesNsLabels) out.push(requirement(`k8s:${NS_KEY}`, 'In', [pc.ctx.namespace]));
    } else if (!pc.ccnpInit) {
      out.push(requirement(`k8s:${NS_KEY}`, 'Exists'));
    }
  }
  if (pc.ctx.opts.policyDefaultLocalCluster && !reqs.some((r) => r.key === K8sLabel.cluster && isK8sOrAny(r))) {
    out.push(requirement(`k8s:${K8sLabel.cluster}`, 'In', [pc.ctx.clusterName]));
  }
  return out;
}

function endpointPeers(pc: PeerCtx, sels: LabelSelector[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  sels.forEach((s, i) => {
    const reqs = selectorReqs(pc.ctx, s, [...path, i]);
    if (reqs) out.push(labelPeer(injectPeer(pc, reqs)));
  });
  return out;
}

function cidrStringPeers(ctx: Ctx, cidrs: string[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  cidrs.forEach((c, i) => {
    if (typeof c !== 'string' || c.trim() === '') { ctx.issue('POLICY_CIDR_INVALID', [...path, i], 'IP must be specified'); return; }
    const p = parsePrefix(c);
    if (!p) { ctx.issue('POLICY_CIDR_INVALID', [...path, i], `unable to parse CIDR: ${c}`, 'write a.b.c.d/n, an IPv6 prefix, or a bare IP'); return; }
    ctx.addCidr(p);
    out.push(cidrPeer(p));
  });
  return out;
}

function cidrSetPeers(ctx: Ctx, rules: CIDRRule[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  rules.forEach((r, i) => {
    const rp = [...path, i];
    const set = [r?.cidr, r?.cidrGroupRef, r?.cidrGroupSelector].filter((v) => v !== undefined && v !== null && v !== '').length;
    if (set === 0) { ctx.issue('POLICY_CIDR_INVALID', rp, 'one of cidr, cidrGroupRef, or cidrGroupSelector is required'); return; }
    if (set > 1) { ctx.issue('POLICY_CIDR_INVALID', rp, 'more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set'); return; }
    if (r.cidrGroupRef !== undefined && r.cidrGroupRef !== '') {
      if (list(r.except).length) ctx.issue('POLICY_CIDR_INVALID', [...rp, 'except'], 'except is not supported with cidrGroupRef');
      out.push(labelPeer([requirement(`cidrgroup:io.cilium.policy.cidrgroupname/${r.cidrGroupRef}`, 'Exists')]));
      return;
    }
    if (r.cidrGroupSelector !== undefined) {
      const reqs = selectorReqs(ctx, r.cidrGroupSelector, [...rp, 'cidrGroupSelector'], LabelSource.cidrgroup);
      if (reqs) out.push(labelPeer(reqs.length ? reqs : [requirement('cidrgroup:io.cilium.policy.cidrgroupname', 'Exists')]));
      return;
    }
    const p = parsePrefix(r.cidr!, false);
    if (!p) { ctx.issue('POLICY_CIDR_INVALID', [...rp, 'cidr'], `unable to parse CIDR: ${r.cidr}`, 'cidr must be <ip>/<length>'); return; }
    const except: Prefix[] = [];
    let ok = true;
    list(r.except).forEach((e, j) => {
      const ep = parsePrefix(show(e));
      if (!ep) { ctx.issue('POLICY_CIDR_INVALID', [...rp, 'except', j], `unable to parse CIDR: ${show(e)}`); ok = false; return; }
      if (!prefixContains(p, ep)) {
        ctx.issue('POLICY_CIDR_INVALID', [...rp, 'except', j], `allow CIDR prefix ${p.text} does not contain exclude CIDR prefix ${ep.text}`);
        ok = false;
        return;
      }
      except.push(ep);
    });
    if (!ok) return;
    ctx.addCidr(p);
    for (const e of except) ctx.addCidr(e);
    out.push(cidrPeer(p, except));
  });
  return out;
}

function entityPeers(ctx: Ctx, entities: Entity[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  entities.forEach((e, i) => {
    if (typeof e !== 'string' || !ENTITIES.has(e)) {
      ctx.issue('POLICY_ENTITY_INVALID', [...path, i], `unsupported entity: ${show(e)}`, `entities: ${[...ENTITIES].join(', ')}`);
      return;
    }
    out.push(...entitySelectors(e, ctx.clusterName));
  });
  return out;
}

function nodePeers(ctx: Ctx, sels: LabelSelector[], path: Path): PeerSelector[] {
  if (!(ctx.opts.enableNodeSelectorLabels ?? false)) {
    ctx.issue('POLICY_NODE_SELECTOR_DISABLED', path, 'FromNodes/ToNodes rules can only be applied when the "enable-node-selector-labels" flag is set', 'use fromEntities/toEntities remote-node or host instead');
    return [];
  }
  const out: PeerSelector[] = [];
  sels.forEach((s, i) => {
    const reqs = selectorReqs(ctx, s, [...path, i]);
    if (!reqs) return;
    const all = [...reqs, requirement('reserved:remote-node', 'Exists')];
    if (ctx.opts.policyDefaultLocalCluster && !reqs.some((r) => r.key === K8sLabel.cluster)) all.push(requirement(`k8s:${K8sLabel.cluster}`, 'In', [ctx.clusterName]));
    out.push(labelPeer(all));
  });
  return out;
}

function servicePodSelector(svc: Service): PeerSelector | undefined {
  const sel = svc.spec.selector;
  if (!sel || Object.keys(sel).length === 0) return undefined;
  const reqs = Object.entries(sel).map(([k, v]) => requirement(`k8s:${k}`, 'In', [v]));
  reqs.push(requirement(`k8s:${NS_KEY}`, 'In', [svc.metadata.namespace ?? 'default']));
  return labelPeer(reqs);
}

/**
 * toServices (spec §2.8): services with a pod selector become endpoint selectors in the service's
 * namespace. Services without one (manual endpoints) and unknown services select nothing.
 */
function servicePeers(ctx: Ctx, svcs: NonNullable<EgressRule['toServices']>, path: Path): PeerSelector[] {
  ctx.usesServices = true;
  const out: PeerSelector[] = [];
  svcs.forEach((s, i) => {
    const sp = [...path, i];
    if (s?.k8sService && s?.k8sServiceSelector) { ctx.issue('POLICY_SERVICE_INVALID', sp, 'only one of k8sService or k8sServiceSelector may be set'); return; }
    if (s?.k8sService) {
      if (!s.k8sService.serviceName) { ctx.issue('POLICY_SERVICE_INVALID', [...sp, 'k8sService', 'serviceName'], 'serviceName is required'); return; }
      const ns = s.k8sService.namespace || ctx.namespace || 'default';
      const svc = ctx.opts.services?.get(ns, s.k8sService.serviceName);
      const peer = svc ? servicePodSelector(svc) : undefined;
      if (peer) out.push(peer);
      return;
    }
    if (s?.k8sServiceSelector) {
      const reqs = selectorReqs(ctx, s.k8sServiceSelector.selector, [...sp, 'k8sServiceSelector', 'selector'], LabelSource.k8s);
      if (!reqs) return;
      const matcher = compileRequirements(reqs);
      const ns = s.k8sServiceSelector.namespace || ctx.namespace;
      for (const svc of ctx.opts.services?.list() ?? []) {
        if (ns && (svc.metadata.namespace ?? 'default') !== ns) continue;
        if (!matcher.matches(LabelSet.fromMap(svc.metadata.labels, LabelSource.k8s))) continue;
        const peer = servicePodSelector(svc);
        if (peer) out.push(peer);
      }
      return;
    }
    ctx.issue('POLICY_SERVICE_INVALID', sp, 'one of k8sService or k8sServiceSelector is required');
  });
  return out;
}

function fqdnPeers(ctx: Ctx, sels: FQDNSelector[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  sels.forEach((s, i) => {
    const sp = [...path, i];
    const problem = selectorProblem(s);
    if (problem) { ctx.issue('POLICY_FQDN_INVALID', problem.field ? [...sp, problem.field] : sp, problem.message); return; }
    const peer = fqdnPeer(s);
    ctx.fqdns.set(peer.key, peer.fqdn!);
    out.push(peer);
  });
  return out;
}

// ------------------------------------------------------------------------------------------
// Rule elements

const INGRESS_L3 = ['fromEndpoints', 'fromCIDR', 'fromCIDRSet', 'fromEntities', 'fromNodes', 'fromGroups'] as const;
const EGRESS_L3 = ['toEndpoints', 'toCIDR', 'toCIDRSet', 'toEntities', 'toServices', 'toNodes', 'toGroups', 'toFQDNs'] as const;
const FIELD_TITLE: Record<string, string> = {
  fromEndpoints: 'FromEndpoints', fromCIDR: 'FromCIDR', fromCIDRSet: 'FromCIDRSet', fromEntities: 'FromEntities',
  fromNodes: 'FromNodes', fromGroups: 'FromGroups', toEndpoints: 'ToEndpoints', toCIDR: 'ToCIDR',
  toCIDRSet: 'ToCIDRSet', toEntities: 'ToEntities', toServices: 'ToServices', toNodes: 'ToNodes',
  toGroups: 'ToGroups', toFQDNs: 'ToFQDNs',
};

function elementPeers(pc: PeerCtx, e: Record<string, unknown>, field: string, path: Path): PeerSelector[] {
  const v = list(e[field] as unknown[]);
  const p = [...path, field];
  switch (field) {
    case 'fromEndpoints': case 'toEndpoints': return endpointPeers(pc, v as LabelSelector[], p);
    case 'fromCIDR': case 'toCIDR': return cidrStringPeers(pc.ctx, v as string[], p);
    case 'fromCIDRSet': case 'toCIDRSet': return cidrSetPeers(pc.ctx, v as CIDRRule[], p);
    case 'fromEntities': case 'toEntities': return entityPeers(pc.ctx, v as Entity[], p);
    case 'fromNodes': case 'toNodes': return nodePeers(pc.ctx, v as LabelSelector[], p);
    case 'toServices': return servicePeers(pc.ctx, v as NonNullable<EgressRule['toServices']>, p);
    case 'toFQDNs': return fqdnPeers(pc.ctx, v as FQDNSelector[], p);
    case 'fromGroups': case 'toGroups':
      if (v.length) pc.ctx.issue('POLICY_GROUPS_UNSUPPORTED', p, `${field} (cloud provider groups) is not supported`, 'list the addresses with toCIDRSet instead');
      return [];
    default: return [];
  }
}

function translateElement(
  pc: PeerCtx, dir: Direction, verdict: 'allow' | 'deny', e: IngressRule | EgressRule, path: Path, log: string | undefined,
): PolicyEntry[] {
  const { ctx } = pc;
  if (!e || typeof e !== 'object' || Array.isArray(e)) {
    ctx.issue('POLICY_RULE_INVALID', path, 'rule element must be an object');
    return [];
  }
  const el = e as Record<string, unknown>;
  for (const legacy of ['fromRequires', 'toRequires']) {
    if (el[legacy] !== undefined) ctx.issue('POLICY_REQUIRES_REMOVED', [...path, legacy], `${legacy} was removed in Cilium 1.19 and is not supported`, 'add the required labels to each peer selector instead');
  }
  const fields = (dir === 'ingress' ? INGRESS_L3 : EGRESS_L3).filter((f) => !(verdict === 'deny' && f === 'toFQDNs'));
  if (verdict === 'deny' && el.toFQDNs !== undefined) ctx.issue('POLICY_FQDN_DENY', [...path, 'toFQDNs'], 'toFQDNs is not allowed in deny rules');
  const present = fields.filter((f) => el[f] !== undefined && el[f] !== null);
  const nonEmpty = present.filter((f) => list(el[f] as unknown[]).length > 0);
  if (nonEmpty.length > 1) {
    ctx.issue('POLICY_L3_COMBINATION', [...path, nonEmpty[1]!], `combining ${FIELD_TITLE[nonEmpty[0]!]} and ${FIELD_TITLE[nonEmpty[1]!]} is not supported yet`, 'write separate list elements; elements are ORed');
    return [];
  }
  const toPorts = list(el.toPorts as PortRule[]);
  const icmps = list(el.icmps as ICMPRule[]);
  if (toPorts.length && icmps.length) {
    ctx.issue('POLICY_ICMP_WITH_PORTS', [...path, 'icmps'], 'the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts');
    return [];
  }
  let auth: number | undefined;
  if (el.authentication !== undefined) {
    const mode = (el.authentication as { mode?: string } | null)?.mode;
    if (verdict === 'deny') ctx.issue('POLICY_AUTH_INVALID', [...path, 'authentication'], 'authentication is not allowed in deny rules');
    else if (typeof mode !== 'string' || !(mode in AUTH_MODES)) ctx.issue('POLICY_AUTH_INVALID', [...path, 'authentication', 'mode'], `invalid authentication mode "${show(mode)}"`, 'modes: disabled, required, test-always-fail');
    else auth = AUTH_MODES[mode];
  }

  // Peers (§2.3): no L3 field ⇒ wildcard iff there are ports/icmps; an explicit empty list ⇒ nothing.
  let peers: PeerSelector[];
  if (present.length === 0) peers = toPorts.length || icmps.length ? [WILDCARD_PEER] : [];
  else {
    peers = [];
    for (const f of present) peers.push(...elementPeers(pc, el, f, path));
  }
  const dedup = new Map(peers.map((p) => [p.key, p]));
  peers = [...dedup.values()];

  const out: PolicyEntry[] = [];
  const origin = ctx.origin(path, log);
  const emit = (ports: PortSpec[] | null, l7: L7Spec | null) => {
    out.push(Object.freeze({ direction: dir, verdict, peers: Object.freeze(peers), ports: ports && Object.freeze(ports), l7, auth: verdict === 'allow' ? auth : undefined, origin }));
  };
  if (toPorts.length) {
    toPorts.forEach((pr, j) => {
      const pp = [...path, 'toPorts', j];
      if (!pr || typeof pr !== 'object') { ctx.issue('POLICY_PORT_INVALID', pp, 'toPorts entry must be an object'); return; }
      if (verdict === 'deny') {
        const extra = Object.keys(pr).filter((k) => k !== 'ports');
        if (extra.length) ctx.issue('POLICY_DENY_L7', [...pp, extra[0]!], `deny rules only take ports (not ${extra.join(', ')})`, 'deny rules never carry L7 rules, serverNames, TLS or listeners');
      }
      const expanded = expandPorts(ctx, list(pr.ports), [...pp, 'ports']);
      if (!expanded) return;
      const l7 = verdict === 'allow' ? l7Spec(ctx, pr, dir, expanded, pp) : null;
      if (l7 === undefined) return;
      // A PortRule without ports allows nothing (spec §3.1).
      if (expanded.specs.length === 0) return;
      emit(expanded.specs, l7);
    });
  } else if (icmps.length) {
    const specs = icmpSpecs(ctx, icmps, [...path, 'icmps']);
    if (specs && specs.length) emit(specs, null);
  } else if (peers.length) {
    emit(null, null);
  }
  return peers.length ? out : [];
}

function translateRule(ctx: Ctx, r: Rule, path: Path, index: number): TranslatedRule | undefined {
  const before = ctx.issues.length;
  if (!r || typeof r !== 'object' || Array.isArray(r)) {
    ctx.issue('POLICY_RULE_INVALID', path, 'rule must be an object');
    return undefined;
  }
  const isCCNP = ctx.res.kind === 'CiliumClusterwideNetworkPolicy';
  const hasES = r.endpointSelector !== undefined && r.endpointSelector !== null;
  const hasNS = r.nodeSelector !== undefined && r.nodeSelector !== null;
  if (!hasES && !hasNS) ctx.issue('POLICY_SELECTOR_MISSING', path, 'rule must have one of EndpointSelector or NodeSelector');
  if (hasES && hasNS) ctx.issue('POLICY_SELECTOR_BOTH', path, 'rule cannot have both EndpointSelector and NodeSelector');
  if (hasNS && !isCCNP) ctx.issue('POLICY_NODE_SELECTOR_IN_CNP', [...path, 'nodeSelector'], `Invalid ${ctx.res.kind} spec: rule cannot have NodeSelector`, 'host policies need a CiliumClusterwideNetworkPolicy');
  const sections = [r.ingress, r.ingressDeny, r.egress, r.egressDeny];
  if (!sections.some((s) => list(s).length > 0)) {
    ctx.issue('POLICY_RULE_EMPTY', path, 'rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny', 'for default deny write `ingress: [{}]` or `egress: [{}]`');
  }
  let log: string | undefined;
  if (r.log !== undefined) {
    const v = r.log?.value;
    if (typeof v !== 'string' || v.length > 32 || !/^[\P{C}]*$/u.test(v)) ctx.issue('POLICY_LOG_INVALID', [...path, 'log', 'value'], 'log.value must be at most 32 printable characters');
    else log = v;
  }

  // Subject (§1.4).
  const subjKey = hasES ? 'endpointSelector' : 'nodeSelector';
  let subjReqs = selectorReqs(ctx, (hasES ? r.endpointSelector : r.nodeSelector) ?? {}, [...path, subjKey]);
  if (subjReqs && hasES && ctx.namespace) {
    subjReqs = [...subjReqs.filter((q) => !isNamespaceReq(q)), requirement(`k8s:${NS_KEY}`, 'In', [ctx.namespace])];
  }
  const ccnpInit = isCCNP && (subjReqs ?? []).some((q) => q.source === LabelSource.reserved && q.key === 'init');
  const pc: PeerCtx = { ctx, kind: isCCNP ? 'ccnp' : 'cnp', ccnpInit };

  const entries: PolicyEntry[] = [];
  const sectionDefs = [
    ['ingress', 'ingress', 'allow'], ['ingressDeny', 'ingress', 'deny'], ['egress', 'egress', 'allow'], ['egressDeny', 'egress', 'deny'],
  ] as const;
  for (const [field, dir, verdict] of sectionDefs) {
    const v = r[field];
    if (v === undefined || v === null) continue;
    if (!Array.isArray(v)) { ctx.issue('POLICY_RULE_INVALID', [...path, field], `${field} must be a list`); continue; }
    v.forEach((e, i) => entries.push(...translateElement(pc, dir, verdict, e as IngressRule, [...path, field, i], log)));
  }
  if (ctx.issues.length > before || !subjReqs) return undefined;

  const hasIn = list(r.ingress).length > 0 || list(r.ingressDeny).length > 0;
  const hasEg = list(r.egress).length > 0 || list(r.egressDeny).length > 0;
  const honour = ctx.opts.enableNonDefaultDenyPolicies ?? true;
  const dd = {
    ingress: honour ? (r.enableDefaultDeny?.ingress ?? hasIn) : hasIn,
    egress: honour ? (r.enableDefaultDeny?.egress ?? hasEg) : hasEg,
  };
  return Object.freeze({
    policyKey: resourceKey(ctx.res), index,
    subject: Object.freeze({ kind: hasES ? 'endpoint' : 'node', selector: compileRequirements(subjReqs) }),
    defaultDeny: Object.freeze(dd),
    entries: Object.freeze(entries),
    origin: ctx.origin(path, log),
  }) as TranslatedRule;
}

// ------------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy (§4.10)

function npPeer(ctx: Ctx, peer: NetworkPolicyPeer, path: Path): PeerSelector[] {
  if (!peer || typeof peer !== 'object') { ctx.issue('POLICY_PEER_INVALID', path, 'peer must be an object'); return []; }
  const hasPod = peer.podSelector !== undefined && peer.podSelector !== null;
  const hasNs = peer.namespaceSelector !== undefined && peer.namespaceSelector !== null;
  const hasIp = peer.ipBlock !== undefined && peer.ipBlock !== null;
  if (hasIp && (hasPod || hasNs)) { ctx.issue('POLICY_PEER_INVALID', path, 'may not specify both ipBlock and another peer'); return []; }
  if (!hasIp && !hasPod && !hasNs) { ctx.issue('POLICY_PEER_INVALID', path, 'must specify a peer'); return []; }
  if (hasIp) {
    if (typeof peer.ipBlock!.cidr !== 'string' || peer.ipBlock!.cidr === '') { ctx.issue('POLICY_CIDR_INVALID', [...path, 'ipBlock', 'cidr'], 'ipBlock.cidr is required'); return []; }
    return cidrSetPeers(ctx, [{ cidr: peer.ipBlock!.cidr, ...(peer.ipBlock!.except ? { except: peer.ipBlock!.except } : {}) }], [...path, 'ipBlock']).map((p) => p);
  }
  const podReqs = hasPod ? selectorReqs(ctx, peer.podSelector, [...path, 'podSelector'], LabelSource.k8s) : [];
  if (!podReqs) return [];
  if (!hasNs) return [labelPeer([...podReqs.filter((q) => !isNamespaceReq(q)), requirement(`k8s:${NS_KEY}`, 'In', [ctx.namespace])])];
  const nsProblems = validateSelector(peer.namespaceSelector);
  for (const p of nsProblems) ctx.issue('POLICY_SELECTOR_INVALID', [...path, 'namespaceSelector', ...p.path], p.message);
  if (nsProblems.length) return [];
  const nsSel = peer.namespaceSelector!;
  const nsReqs: Requirement[] = [];
  for (const [k, v] of Object.entries(nsSel.matchLabels ?? {})) nsReqs.push(requirement(`k8s:${NS_LABELS_PREFIX}.${k}`, 'In', [v]));
  for (const e of nsSel.matchExpressions ?? []) nsReqs.push(requirement(`k8s:${NS_LABELS_PREFIX}.${e.key}`, e.operator, e.values ?? []));
  if (nsReqs.length === 0) nsReqs.push(requirement(`k8s:${NS_KEY}`, 'Exists'));
  return [labelPeer([...podReqs, ...nsReqs])];
}

function npPorts(ctx: Ctx, ports: NetworkPolicyPort[], path: Path): PortSpec[] | undefined {
  const out: PortSpec[] = [];
  let ok = true;
  ports.forEach((p, i) => {
    const pp = [...path, i];
    if (!p || typeof p !== 'object') { ctx.issue('POLICY_PORT_INVALID', pp, 'port entry must be an object'); ok = false; return; }
    const protoText = show(p.protocol ?? 'TCP').toUpperCase();
    if (!['TCP', 'UDP', 'SCTP'].includes(protoText)) { ctx.issue('POLICY_PROTOCOL_INVALID', [...pp, 'protocol'], `invalid protocol "${show(p.protocol)}"`, 'protocols: TCP, UDP, SCTP'); ok = false; return; }
    const proto = PROTO_BY_NAME[protoText]!;
    if (p.port === undefined || p.port === null || p.port === '') {
      if (p.endPort !== undefined) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort may not be specified without port'); ok = false; return; }
      out.push({ proto, port: 0, plen: 0 });
      return;
    }
    const text = show(p.port).trim();
    if (typeof p.port === 'string' && isNamedPort(text)) {
      if (p.endPort !== undefined) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort may not be specified with a named port'); ok = false; return; }
      out.push({ proto, name: text.toLowerCase() });
      return;
    }
    if (!/^\d+$/.test(text) || Number(text) > 65535) { ctx.issue('POLICY_PORT_INVALID', [...pp, 'port'], `unable to parse port: "${text}"`); ok = false; return; }
    const port = Number(text);
    if (port === 0) { out.push({ proto, port: 0, plen: 0 }); return; }
    let hi = port;
    if (p.endPort !== undefined && p.endPort !== null) {
      if (!Number.isInteger(p.endPort) || p.endPort < port || p.endPort > 65535) {
        ctx.issue('POLICY_PORT_INVALID', [...pp, 'endPort'], 'endPort must be greater than or equal to port', 'endPort is an inclusive upper bound');
        ok = false;
        return;
      }
      hi = p.endPort;
    }
    for (const b of rangeToPrefixes(port, hi)) out.push({ proto, port: b.port, plen: b.plen });
  });
  return ok ? out : undefined;
}

function translateNetworkPolicy(ctx: Ctx, np: NetworkPolicy): TranslatedRule | undefined {
  const spec = np.spec;
  if (!spec || typeof spec !== 'object') { ctx.issue('POLICY_EMPTY', ['spec'], 'NetworkPolicy must have a spec'); return undefined; }
  if (spec.policyTypes !== undefined && spec.policyTypes !== null && !Array.isArray(spec.policyTypes)) ctx.issue('POLICY_TYPE_INVALID', ['spec', 'policyTypes'], 'policyTypes must be a list');
  const types = list(spec.policyTypes);
  types.forEach((t, i) => { if (t !== 'Ingress' && t !== 'Egress') ctx.issue('POLICY_TYPE_INVALID', ['spec', 'policyTypes', i], `invalid policyType "${show(t)}"`, 'Ingress or Egress'); });
  const subjReqs = selectorReqs(ctx, spec.podSelector ?? {}, ['spec', 'podSelector'], LabelSource.k8s);
  const entries: PolicyEntry[] = [];
  const sections = [['ingress', 'from'], ['egress', 'to']] as const;
  for (const [dir, peerField] of sections) {
    const rules = spec[dir];
    if (rules !== undefined && rules !== null && !Array.isArray(rules)) { ctx.issue('POLICY_RULE_INVALID', ['spec', dir], `${dir} must be a list`); continue; }
    list(rules).forEach((rule, i) => {
      const path = ['spec', dir, i];
      if (!rule || typeof rule !== 'object' || Array.isArray(rule)) { ctx.issue('POLICY_RULE_INVALID', path, 'rule must be an object'); return; }
      const peersRaw = (rule as Record<string, unknown>)[peerField];
      const peers: PeerSelector[] = [];
      if (peersRaw !== undefined && peersRaw !== null && !Array.isArray(peersRaw)) { ctx.issue('POLICY_RULE_INVALID', [...path, peerField], `${peerField} must be a list`); return; }
      if (!peersRaw || peersRaw.length === 0) peers.push(WILDCARD_PEER);
      else (peersRaw as NetworkPolicyPeer[]).forEach((p, j) => peers.push(...npPeer(ctx, p, [...path, peerField, j])));
      const portsRaw = list((rule as { ports?: NetworkPolicyPort[] } | null)?.ports);
      const ports = portsRaw.length ? npPorts(ctx, portsRaw, [...path, 'ports']) : null;
      if (ports === undefined || peers.length === 0) return;
      const dedup = [...new Map(peers.map((p) => [p.key, p])).values()];
      entries.push(Object.freeze({ direction: dir, verdict: 'allow', peers: Object.freeze(dedup), ports: ports && Object.freeze(ports), l7: null, auth: undefined, origin: ctx.origin(path) }));
    });
  }
  if (ctx.issues.length || !subjReqs) return undefined;
  const hasIn = list(spec.ingress).length > 0;
  const hasEg = list(spec.egress).length > 0;
  const dd = {
    ingress: hasIn || types.includes('Ingress') || !types.includes('Egress'),
    egress: hasEg || types.includes('Egress'),
  };
  return Object.freeze({
    policyKey: resourceKey(np), index: 0,
    subject: Object.freeze({ kind: 'endpoint', selector: compileRequirements([...subjReqs.filter((q) => !isNamespaceReq(q)), requirement(`k8s:${NS_KEY}`, 'In', [ctx.namespace])]) }),
    defaultDeny: Object.freeze(dd),
    entries: Object.freeze(entries),
    origin: ctx.origin(['spec']),
  }) as TranslatedRule;
}

// ------------------------------------------------------------------------------------------

/** Translates one policy resource. Any issue ⇒ `rules` is empty. */
export function translatePolicy(res: PolicyResource, opts: TranslateOptions = {}): Translation {
  try {
    return translateChecked(res, opts);
  } catch (e) {
    // A shape the loader should have rejected: report it, never crash the importer.
    const src = res?.source ?? { file: '', line: 0, col: 0 };
    return {
      rules: [], cidrs: [], fqdns: [], usesServices: false,
      issues: [{ code: 'POLICY_SHAPE_INVALID', message: `malformed ${show(res?.kind)}: ${(e as Error).message}`, path: [], file: src.file, line: src.line, col: src.col, hint: 'check the resource against the CRD schema (`membrane policy validate`)' }],
    };
  }
}

function translateChecked(res: PolicyResource, opts: TranslateOptions): Translation {
  const ctx = new Ctx(res, opts);
  const rules: TranslatedRule[] = [];
  if (!res.metadata || typeof res.metadata.name !== 'string' || res.metadata.name === '') {
    ctx.issue('POLICY_NO_NAME', ['metadata', 'name'], `${res.kind} must have name`);
  }
  if (res.kind === 'NetworkPolicy') {
    const r = translateNetworkPolicy(ctx, res);
    if (r) rules.push(r);
  } else if (res.kind === 'CiliumNetworkPolicy' || res.kind === 'CiliumClusterwideNetworkPolicy') {
    const specs: [Rule, Path][] = [];
    if (res.spec !== undefined && res.spec !== null) specs.push([res.spec, ['spec']]);
    if (res.specs !== undefined && res.specs !== null) {
      if (!Array.isArray(res.specs)) ctx.issue('POLICY_RULE_INVALID', ['specs'], 'specs must be a list');
      else res.specs.forEach((s, i) => specs.push([s, ['specs', i]]));
    }
    if (specs.length === 0) ctx.issue('POLICY_EMPTY', [], `Invalid ${res.kind} spec(s): empty policy`, 'add a spec with an endpointSelector and ingress/egress rules');
    specs.forEach(([s, p], i) => {
      const r = translateRule(ctx, s, p, i);
      if (r) rules.push(r);
    });
  } else {
    ctx.issue('POLICY_KIND_UNKNOWN', ['kind'], `not a policy kind: ${show((res as { kind: unknown }).kind)}`);
  }
  const ok = ctx.issues.length === 0;
  return {
    rules: ok ? rules : [],
    issues: ctx.issues,
    cidrs: ok ? [...ctx.cidrs.values()] : [],
    fqdns: ok ? [...ctx.fqdns.values()] : [],
    usesServices: ctx.usesServices,
  };
}
