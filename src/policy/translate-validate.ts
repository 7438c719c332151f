/**
 * Validation of CiliumNetworkPolicy rules, apart from their translation: the checks of a rule
 * (subject, sections, log), of a rule element (L3 kinds, ICMP with ports, authentication,
 * removed fields) and of a toPorts entry's L7 part (parsers, ports and protocols they need, RE2
 * regexes, DNS selectors, serverNames, TLS contexts). Each reports every problem to the context
 * and says whether the part may be translated. (Peers and ports are validated as they are parsed:
 * peers.ts, ports.ts.)
 */
import { RE2JS } from 're2js';
import type { ICMPRule, PortRule, Rule, TLSContext } from '../api/types.ts';
import { show } from '../labels/selector.ts';
import { selectorProblem } from '../fqdn/matchpattern.ts';
import type { Direction } from './types.ts';
import { list, type Ctx, type Path } from './translate-context.ts';
import type { ExpandedPorts } from './translate-ports.ts';
import { FIELD_TITLE } from './translate-peers.ts';

export type L7Kind = 'http' | 'dns' | 'kafka' | 'generic';

/** The L7 rule kinds a toPorts entry carries (more than one is invalid). */
export function l7Kinds(pr: PortRule): L7Kind[] {
  const rules = pr.rules ?? {};
  const kinds: L7Kind[] = [];
  if (rules.http !== undefined) kinds.push('http');
  if (rules.dns !== undefined) kinds.push('dns');
  if (rules.kafka !== undefined) kinds.push('kafka');
  if (rules.l7proto !== undefined && rules.l7proto !== '') kinds.push('generic');
  return kinds;
}

/** Whether a toPorts entry has an L7 part (rules, serverNames, TLS contexts or a listener). */
export function hasL7(pr: PortRule): boolean {
  return l7Kinds(pr).length > 0 || (pr.rules?.l7 !== undefined && pr.rules?.l7 !== null) || pr.serverNames !== undefined || pr.terminatingTLS !== undefined || pr.originatingTLS !== undefined || pr.listener !== undefined;
}

export const AUTH_MODES: Record<string, number> = { disabled: 0, required: 1, 'test-always-fail': 2 };

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

function checkTLS(ctx: Ctx, t: TLSContext | undefined, path: Path): boolean {
  if (t === undefined || t === null) return true;
  if (!t.secret || typeof t.secret.name !== 'string' || t.secret.name === '') {
    ctx.issue('POLICY_TLS_INVALID', [...path, 'secret', 'name'], 'TLS context needs secret.name');
    return false;
  }
  return true;
}

/** The L7 part of an allow rule's toPorts entry (spec §3). */
export function validateL7(ctx: Ctx, pr: PortRule, dir: Direction, ports: ExpandedPorts, path: Path): boolean {
  const rules = pr.rules ?? {};
  const http = list(rules.http);
  const dns = list(rules.dns);
  const serverNames = pr.serverNames;
  const kinds = l7Kinds(pr);
  let ok = true;
  const bad = (code: string, p: Path, msg: string, hint?: string) => { ctx.issue(code, p, msg, hint); ok = false; };
  if (!(ctx.opts.enableL7Proxy ?? true)) bad('POLICY_L7_DISABLED', path, 'L7 policy is not supported since L7 proxy is not enabled');
  if (kinds.length > 1) bad('POLICY_L7_MULTIPLE', [...path, 'rules'], 'multiple L7 protocol rule types specified in single rule', 'use one of http, dns, kafka or l7proto per toPorts entry');
  if (pr.listener !== undefined) {
    bad('POLICY_LISTENER_UNSUPPORTED', [...path, 'listener'], 'listener (CiliumEnvoyConfig) redirects are not supported', 'express the L7 policy with rules.http instead');
  }
  const kind = kinds[0];
  // Parsers membrane has no proxy for: the datapath would redirect to a port nobody serves and
  // drop every packet, while the policy looked applied. Rejected, whatever else the entry holds.
  if (kinds.includes('kafka')) {
    bad('POLICY_KAFKA_UNSUPPORTED', [...path, 'rules', 'kafka'], 'Kafka rules are not enforced: membrane has no Kafka proxy', 'remove rules.kafka to allow the port at L4 only, or keep Kafka brokers out of this policy until a Kafka proxy exists');
  }
  if (kinds.includes('generic')) {
    bad('POLICY_L7PROTO_UNSUPPORTED', [...path, 'rules', 'l7proto'], `l7proto "${show(rules.l7proto)}" is not enforced: membrane has no proxylib parsers`, 'remove rules.l7proto and rules.l7 to allow the port at L4 only');
  } else if (rules.l7 !== undefined && rules.l7 !== null) {
    bad('POLICY_L7_INVALID', [...path, 'rules', 'l7'], 'rules.l7 needs rules.l7proto (the parser its rules are for)', 'remove rules.l7, or name its parser with l7proto');
  }
  if (pr.originatingTLS !== undefined && pr.terminatingTLS === undefined) {
    bad('POLICY_TLS_UNSUPPORTED', [...path, 'originatingTLS'], 'originatingTLS without terminatingTLS is not supported: the proxy originates TLS only on connections it terminated, so the upstream would get plain text', 'add terminatingTLS (and HTTP rules), or remove originatingTLS and let the client speak TLS itself');
  }
  if (kind === 'dns' && (pr.terminatingTLS !== undefined || pr.originatingTLS !== undefined)) {
    bad('POLICY_TLS_UNSUPPORTED', [...path, pr.terminatingTLS !== undefined ? 'terminatingTLS' : 'originatingTLS'], 'TLS contexts do not apply to DNS rules (the DNS proxy does not speak TLS)', 'put TLS contexts on a toPorts entry with HTTP rules or serverNames');
  }
  if (kind === 'dns') {
    if (dir === 'ingress') bad('POLICY_L7_DNS_INGRESS', [...path, 'rules', 'dns'], 'DNS rules are not allowed on ingress');
    if (ports.specs.length === 0 && !ports.invalid) bad('POLICY_L7_DNS_PORT', [...path, 'ports'], 'port 53 must be specified for DNS rules');
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
  if (!checkTLS(ctx, pr.terminatingTLS, [...path, 'terminatingTLS'])) ok = false;
  if (!checkTLS(ctx, pr.originatingTLS, [...path, 'originatingTLS'])) ok = false;
  return ok;
}

/** A rule's structure (spec §1.3); returns its log value when valid. */
export function validateRule(ctx: Ctx, r: Rule, path: Path): { ok: boolean; log?: string } {
  const before = ctx.issues.length;
  const isCCNP = ctx.res.kind === 'CiliumClusterwideNetworkPolicy';
  const hasES = r.endpointSelector !== undefined && r.endpointSelector !== null;
  const hasNS = r.nodeSelector !== undefined && r.nodeSelector !== null;
  if (!hasES && !hasNS) ctx.issue('POLICY_SELECTOR_MISSING', path, 'rule must have one of EndpointSelector or NodeSelector');
  if (hasES && hasNS) ctx.issue('POLICY_SELECTOR_BOTH', path, 'rule cannot have both EndpointSelector and NodeSelector');
  if (hasNS && !isCCNP) ctx.issue('POLICY_NODE_SELECTOR_IN_CNP', [...path, 'nodeSelector'], `Invalid ${ctx.res.kind} spec: rule cannot have NodeSelector`, 'host policies need a CiliumClusterwideNetworkPolicy');
  else if (hasNS && !hasES && !(ctx.opts.enableHostFirewall ?? false)) {
    ctx.issue('POLICY_HOST_FIREWALL_UNSUPPORTED', [...path, 'nodeSelector'], 'host policies (nodeSelector) are not supported yet: membrane has no host firewall, so the node would stay open', 'select pods with endpointSelector; traffic of the nodes themselves is not filtered by membrane');
  }
  const sections = [r.ingress, r.ingressDeny, r.egress, r.egressDeny];
  if (!sections.some((s) => list(s).length > 0)) {
    ctx.issue('POLICY_RULE_EMPTY', path, 'rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny', 'for default deny write `ingress: [{}]` or `egress: [{}]`');
  }
  let log: string | undefined;
  if (r.log !== undefined) {
    const v = r.log?.value;
    if (typeof v !== 'string' || v.length > 32 || !/^[\P{C}]*$/u.test(v)) ctx.issue('POLICY_LOG_INVALID', [...path, 'log', 'value'], 'must be at most 32 printable characters');
    else log = v;
  }
  return { ok: ctx.issues.length === before, ...(log !== undefined ? { log } : {}) };
}

/**
 * A rule element's structure (spec §2.3, §2.4, §2.10): removed fields, toFQDNs in deny rules, one
 * L3 kind per element, no icmps beside toPorts, a known and enforceable authentication mode.
 * `present` are the L3 fields it sets; false means emit nothing of it. The caller still checks
 * the element's peers and ports, so that every problem of a rule is reported at once.
 */
export function validateElement(ctx: Ctx, el: Record<string, unknown>, verdict: 'allow' | 'deny', present: readonly string[], path: Path): boolean {
  for (const legacy of ['fromRequires', 'toRequires']) {
    if (el[legacy] !== undefined) ctx.issue('POLICY_REQUIRES_REMOVED', [...path, legacy], `${legacy} was removed in Cilium 1.19 and is not supported`, 'add the required labels to each peer selector instead');
  }
  if (verdict === 'deny' && el.toFQDNs !== undefined) ctx.issue('POLICY_FQDN_DENY', [...path, 'toFQDNs'], 'toFQDNs is not allowed in deny rules');
  let ok = true;
  const nonEmpty = present.filter((f) => list(el[f] as unknown[]).length > 0);
  if (nonEmpty.length > 1) {
    ctx.issue('POLICY_L3_COMBINATION', [...path, nonEmpty[1]!], `combining ${FIELD_TITLE[nonEmpty[0]!]} and ${FIELD_TITLE[nonEmpty[1]!]} is not supported yet`, 'write separate list elements; elements are ORed');
    ok = false;
  }
  if (list(el.toPorts as PortRule[]).length && list(el.icmps as ICMPRule[]).length) {
    ctx.issue('POLICY_ICMP_WITH_PORTS', [...path, 'icmps'], 'the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts');
    ok = false;
  }
  if (el.authentication !== undefined) {
    const mode = (el.authentication as { mode?: string } | null)?.mode;
    if (verdict === 'deny') ctx.issue('POLICY_AUTH_INVALID', [...path, 'authentication'], 'authentication is not allowed in deny rules');
    else if (typeof mode !== 'string' || !(mode in AUTH_MODES)) ctx.issue('POLICY_AUTH_INVALID', [...path, 'authentication', 'mode'], `invalid authentication mode "${show(mode)}"`, 'modes: disabled, required, test-always-fail');
    else if (mode === 'required' && !(ctx.opts.enableMutualAuth ?? false)) {
      ctx.issue('POLICY_AUTH_UNSUPPORTED', [...path, 'authentication', 'mode'], 'mutual authentication is not supported yet: every packet of this rule would be dropped (AUTH_REQUIRED)', 'remove authentication (or use mode: disabled); membrane has no SPIRE or auth map to authenticate peers');
    }
  }
  return ok;
}
