/**
 * Translation of CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes
 * NetworkPolicy into internal rules (rules.ts). Every problem is reported at once, each with its
 * YAML path; a resource with any problem yields no rules.
 *
 *   translate-context.ts       options, result, the per-resource context (issues, origins)
 *   translate-validate.ts      rule, element and L7 checks (spec §1.3, §2.3-2.4, §3)
 *   translate-cilium.ts        CNP/CCNP rules: subject, elements, default deny (§1.4, §4.1)
 *   translate-peers.ts         L3 peers: endpoints, CIDRs, entities, nodes, services, FQDNs (§2)
 *   translate-ports.ts         toPorts and icmps → port specs (§2.10, §3)
 *   translate-l7-spec.ts       the L7 part of a toPorts entry → L7Spec
 *   translate-networkpolicy.ts Kubernetes NetworkPolicy (§4.10)
 */
import type { PolicyResource, Rule } from '../api/types.ts';
import { show } from '../labels/selector.ts';
import type { TranslatedRule } from './rules.ts';
import { Ctx, type Path, type TranslateOptions, type Translation } from './translate-context.ts';
import { translateRule } from './translate-cilium.ts';
import { translateNetworkPolicy } from './translate-networkpolicy.ts';

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
      if (!Array.isArray(res.specs)) ctx.issue('POLICY_RULE_INVALID', ['specs'], 'must be a list of rules');
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
