/**
 * CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy rules → TranslatedRules: the subject
 * (§1.4, namespace-scoped for CNP), each ingress/egress (deny) element's peers (peers.ts),
 * ports (ports.ts) and L7 part (l7-spec.ts), and default deny (§4.1). Structure is checked by
 * validate.ts first; anything invalid translates to nothing.
 */
import type { EgressRule, ICMPRule, IngressRule, PortRule, Rule } from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import { LabelSource } from '../labels/labels.ts';
import { compileRequirements, requirement } from '../labels/selector.ts';
import { WILDCARD_PEER, type PeerSelector } from './selectors.ts';
import type { L7Spec, PolicyEntry, PortSpec, TranslatedRule } from './rules.ts';
import type { Direction } from './types.ts';
import { NS_KEY, isNamespaceReq, list, selectorReqs, type Ctx, type Path } from './translate-context.ts';
import { expandPorts, icmpSpecs } from './translate-ports.ts';
import { EGRESS_L3, INGRESS_L3, elementPeers, type PeerCtx } from './translate-peers.ts';
import { l7Spec } from './translate-l7-spec.ts';
import { AUTH_MODES, validateElement, validateRule } from './translate-validate.ts';

function translateElement(
  pc: PeerCtx, dir: Direction, verdict: 'allow' | 'deny', e: IngressRule | EgressRule, path: Path, log: string | undefined,
): PolicyEntry[] {
  const { ctx } = pc;
  if (!e || typeof e !== 'object' || Array.isArray(e)) {
    ctx.issue('POLICY_RULE_INVALID', path, 'rule element must be an object');
    return [];
  }
  const el = e as Record<string, unknown>;
  const fields = (dir === 'ingress' ? INGRESS_L3 : EGRESS_L3).filter((f) => !(verdict === 'deny' && f === 'toFQDNs'));
  const present = fields.filter((f) => el[f] !== undefined && el[f] !== null);
  // An invalid element emits nothing, but its peers and ports are still checked below: every
  // problem of a rule is reported at once.
  const valid = validateElement(ctx, el, verdict, present, path);
  const toPorts = list(el.toPorts as PortRule[]);
  const icmps = list(el.icmps as ICMPRule[]);
  const mode = (el.authentication as { mode?: string } | null | undefined)?.mode;
  const auth = verdict === 'allow' && typeof mode === 'string' && mode in AUTH_MODES ? AUTH_MODES[mode] : undefined;

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
      // The L7 part is checked even when a port is bad: every problem at once.
      const expanded = expandPorts(ctx, list(pr.ports), [...pp, 'ports']);
      const l7 = verdict === 'allow' ? l7Spec(ctx, pr, dir, expanded, pp) : null;
      if (expanded.invalid || l7 === undefined) return;
      // A PortRule without ports allows nothing (spec §3.1).
      if (expanded.specs.length === 0) return;
      emit(expanded.specs, l7);
    });
  }
  if (icmps.length) {
    const specs = icmpSpecs(ctx, icmps, [...path, 'icmps']);
    if (specs && specs.length && !toPorts.length) emit(specs, null);
  } else if (!toPorts.length && peers.length) {
    emit(null, null);
  }
  return valid && peers.length ? out : [];
}

export function translateRule(ctx: Ctx, r: Rule, path: Path, index: number): TranslatedRule | undefined {
  const before = ctx.issues.length;
  if (!r || typeof r !== 'object' || Array.isArray(r)) {
    ctx.issue('POLICY_RULE_INVALID', path, 'rule must be an object');
    return undefined;
  }
  const isCCNP = ctx.res.kind === 'CiliumClusterwideNetworkPolicy';
  const hasES = r.endpointSelector !== undefined && r.endpointSelector !== null;
  const { log } = validateRule(ctx, r, path);

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
    if (!Array.isArray(v)) { ctx.issue('POLICY_RULE_INVALID', [...path, field], 'must be a list'); continue; }
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
