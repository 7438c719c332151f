/**
 * What a resolution takes besides the rules: the endpoint (EndpointInfo, with its own named
 * ports), where other pods' named ports come from (NamedPortProvider), and Cilium's options
 * (enforcement mode, allow-localhost, policy-map capacity).
 */
import type { LabelSet } from '../labels/labels.ts';
import type { RuleOrigin } from './types.ts';

export interface NamedPort {
  name: string;
  port: number;
  /** IP protocol number (6 TCP, 17 UDP, 132 SCTP) */
  proto: number;
}

/** Where egress named ports come from: the destination pods' container ports. */
export interface NamedPortProvider {
  /** Ports named `name` on pods with identity `identity`. */
  forIdentity(identity: number, name: string): readonly { port: number; proto: number }[];
  /** Ports named `name` on any known pod (for wildcard peers and L7 keys). */
  any(name: string): readonly { port: number; proto: number }[];
  /** Changes whenever any answer may change (lets resolutions be shared while it stays put). */
  readonly version?: number;
}

export const NO_NAMED_PORTS: NamedPortProvider = Object.freeze({ forIdentity: () => [], any: () => [] });

export interface EndpointInfo {
  /** endpoint ID (1..65535) */
  id: number;
  identity: number;
  labels: LabelSet;
  /** The endpoint's own container ports (ingress named ports). */
  namedPorts?: readonly NamedPort[];
  /** `node` for the host endpoint (host policies via nodeSelector). Default `endpoint`. */
  kind?: 'endpoint' | 'node';
}

export type EnforcementMode = 'default' | 'always' | 'never';

export interface ResolveOptions {
  /** Cilium's enable-policy; default `default`. */
  enforcementMode?: EnforcementMode;
  /** `always` (Cilium's default on Kubernetes): the local host may always reach endpoints. */
  allowLocalhost?: 'always' | 'policy';
  namedPorts?: NamedPortProvider;
  /** Policy-map capacity per endpoint (Cilium bpf-policy-map-max); default 16384. */
  maxEntries?: number;
}

export const DEFAULT_MAX_ENTRIES = 16384;

export const ALLOW_LOCALHOST_ORIGIN: RuleOrigin = Object.freeze({ kind: 'Implicit', name: 'allow-localhost', namespace: '', file: '', line: 0 });
