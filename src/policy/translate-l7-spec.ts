/**
 * The L7 part of an allow rule's toPorts entry → L7Spec (the parser and its rules, serverNames,
 * TLS contexts), once validate.ts has accepted it. null: the entry has no L7 part; undefined:
 * it is invalid (the problems are in the context).
 */
import type { PortRule } from '../api/types.ts';
import type { L7Spec } from './rules.ts';
import type { Direction } from './types.ts';
import { list, type Ctx, type Path } from './translate-context.ts';
import type { ExpandedPorts } from './translate-ports.ts';
import { hasL7, l7Kinds, validateL7 } from './translate-validate.ts';

export function l7Spec(ctx: Ctx, pr: PortRule, dir: Direction, ports: ExpandedPorts, path: Path): L7Spec | null | undefined {
  if (!hasL7(pr)) return null;
  if (!validateL7(ctx, pr, dir, ports, path)) return undefined;
  const rules = pr.rules ?? {};
  const http = list(rules.http);
  const dns = list(rules.dns);
  const kafka = list(rules.kafka);
  const generic = rules.l7proto !== undefined && rules.l7proto !== '' ? list(rules.l7) : undefined;
  const serverNames = pr.serverNames;
  const kind = l7Kinds(pr)[0];
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
