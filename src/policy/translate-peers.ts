/**
 * L3 peers → peer selectors (spec §2): endpoint selectors with namespace (and cluster)
 * injection, CIDRs and CIDR sets (every prefix noted for the ipcache), entities, nodes,
 * services (their pod selectors) and toFQDNs selectors.
 */
import type { CIDRRule, EgressRule, Entity, FQDNSelector, LabelSelector, Service } from '../api/types.ts';
import { K8sLabel, LabelSet, LabelSource } from '../labels/labels.ts';
import { compileRequirements, requirement, show, type Requirement } from '../labels/selector.ts';
import { parsePrefix, prefixContains, type Prefix } from '../ipcache/prefix.ts';
import { selectorProblem } from '../fqdn/matchpattern.ts';
import { cidrPeer, fqdnPeer, labelPeer, WILDCARD_PEER, type PeerSelector } from './selectors.ts';
import { NS_KEY, NS_LABELS_PREFIX, isK8sOrAny, isNamespaceReq, list, selectorReqs, type Ctx, type Path } from './translate-context.ts';

const ENTITIES = new Set<string>([
  'all', 'world', 'world-ipv4', 'world-ipv6', 'cluster', 'host', 'init', 'ingress', 'unmanaged',
  'remote-node', 'health', 'none', 'kube-apiserver',
]);


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

export interface PeerCtx {
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

export function cidrSetPeers(ctx: Ctx, rules: CIDRRule[], path: Path): PeerSelector[] {
  const out: PeerSelector[] = [];
  rules.forEach((r, i) => {
    const rp = [...path, i];
    const set = [r?.cidr, r?.cidrGroupRef, r?.cidrGroupSelector].filter((v) => v !== undefined && v !== null && v !== '').length;
    if (set === 0) { ctx.issue('POLICY_CIDR_INVALID', rp, 'one of cidr, cidrGroupRef, or cidrGroupSelector is required'); return; }
    if (set > 1) { ctx.issue('POLICY_CIDR_INVALID', rp, 'more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set'); return; }
    if ((r.cidrGroupRef !== undefined && r.cidrGroupRef !== '') || (r.cidrGroupSelector !== undefined && r.cidrGroupSelector !== null)) {
      // No CiliumCIDRGroup kind exists here, so no address would ever carry a cidrgroup label:
      // an allow would allow nothing and a deny would silently deny nothing.
      const field = r.cidrGroupRef !== undefined && r.cidrGroupRef !== '' ? 'cidrGroupRef' : 'cidrGroupSelector';
      if (field === 'cidrGroupRef' && list(r.except).length) ctx.issue('POLICY_CIDR_INVALID', [...rp, 'except'], 'except is not supported with cidrGroupRef');
      if (field === 'cidrGroupSelector') selectorReqs(ctx, r.cidrGroupSelector, [...rp, 'cidrGroupSelector'], LabelSource.cidrgroup);
      ctx.issue('POLICY_CIDR_GROUP_UNSUPPORTED', [...rp, field], 'CIDR groups are not supported: membrane has no CiliumCIDRGroup resource, so the group would match no address', 'list the prefixes with cidr entries instead');
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
      if (!s.k8sService.serviceName) { ctx.issue('POLICY_SERVICE_INVALID', [...sp, 'k8sService', 'serviceName'], 'required field is missing'); return; }
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
    // Neither: Cilium accepts the empty selector and it selects no service (nor any peer).
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

export const INGRESS_L3 = ['fromEndpoints', 'fromCIDR', 'fromCIDRSet', 'fromEntities', 'fromNodes', 'fromGroups'] as const;
export const EGRESS_L3 = ['toEndpoints', 'toCIDR', 'toCIDRSet', 'toEntities', 'toServices', 'toNodes', 'toGroups', 'toFQDNs'] as const;
export const FIELD_TITLE: Record<string, string> = {
  fromEndpoints: 'FromEndpoints', fromCIDR: 'FromCIDR', fromCIDRSet: 'FromCIDRSet', fromEntities: 'FromEntities',
  fromNodes: 'FromNodes', fromGroups: 'FromGroups', toEndpoints: 'ToEndpoints', toCIDR: 'ToCIDR',
  toCIDRSet: 'ToCIDRSet', toEntities: 'ToEntities', toServices: 'ToServices', toNodes: 'ToNodes',
  toGroups: 'ToGroups', toFQDNs: 'ToFQDNs',
};

export function elementPeers(pc: PeerCtx, e: Record<string, unknown>, field: string, path: Path): PeerSelector[] {
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
