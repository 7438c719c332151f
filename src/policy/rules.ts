/**
 * The internal form of policy after translation: what the repository stores and the resolver
 * reads. One `PolicyEntry` is one (rule element × PortRule) with its peers, L4 and L7 parts,
 * already validated and normalised (ANY expanded, ranges split into port prefixes).
 */
import type { PortRuleDNS, PortRuleHTTP, TLSContext } from '../api/types.ts';
import type { CompiledSelector } from '../labels/selector.ts';
import type { PeerSelector } from './selectors.ts';
import type { Direction, RuleOrigin } from './types.ts';

/** A port block (port, prefix length) of one protocol, or a named port to resolve per peer. */
export type PortSpec =
  | { readonly proto: number; readonly port: number; readonly plen: number; readonly name?: undefined }
  | { readonly proto: number; readonly name: string; readonly port?: undefined; readonly plen?: undefined };

export type L7Parser = 'http' | 'dns' | 'kafka' | 'generic' | 'tls';

export interface L7Spec {
  readonly parser: L7Parser;
  readonly http?: readonly PortRuleHTTP[];
  readonly dns?: readonly PortRuleDNS[];
  readonly kafka?: readonly Record<string, string>[];
  readonly l7proto?: string;
  readonly l7?: readonly Record<string, string>[];
  readonly serverNames?: readonly string[];
  readonly terminatingTLS?: TLSContext;
  readonly originatingTLS?: TLSContext;
}

export interface PolicyEntry {
  readonly direction: Direction;
  readonly verdict: 'allow' | 'deny';
  /** ORed; empty = selects nothing */
  readonly peers: readonly PeerSelector[];
  /** null = L3-only: every protocol and port, ICMP included */
  readonly ports: readonly PortSpec[] | null;
  readonly l7: L7Spec | null;
  /** explicit authentication mode as Hubble's auth_type (0 disabled, 1 SPIRE, 2 test-always-fail); undefined = not set */
  readonly auth: number | undefined;
  readonly origin: RuleOrigin;
}

export interface TranslatedRule {
  /** `kind/namespace/name` of the resource */
  readonly policyKey: string;
  /** index of the rule within the resource (spec first, then specs) */
  readonly index: number;
  readonly subject: { readonly kind: 'endpoint' | 'node'; readonly selector: CompiledSelector };
  /** Whether this rule asks for default-deny per direction (spec §4.1). */
  readonly defaultDeny: { readonly ingress: boolean; readonly egress: boolean };
  readonly entries: readonly PolicyEntry[];
  readonly origin: RuleOrigin;
}
