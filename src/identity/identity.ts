/**
 * Security identities: numbers that stand for a set of identity-relevant labels. Reserved
 * identities 0–10 use Cilium's numbers and labels (pkg/identity/numericidentity.go), so flows and
 * map dumps read the same as Cilium's.
 *
 * Scopes (top 8 bits of the 32-bit number):
 *   0x00  global/cluster: 1–255 reserved, 256–65535 allocated for endpoints (pods)
 *   0x01  local (1<<24): CIDR, FQDN and CIDR-group identities; node-local, never shared
 *   0x02  remote-node (2<<24): per-node identities (not used yet)
 */
import { LabelSet, LabelSource, makeLabel } from '../labels/labels.ts';

export interface Identity {
  readonly id: number;
  readonly labels: LabelSet;
}

export const ReservedIdentity = {
  unknown: 0,
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  remoteNode: 6,
  kubeApiserver: 7,
  ingress: 8,
  worldIPv4: 9,
  worldIPv6: 10,
} as const;

/** Reserved label names (`reserved:<name>`) by identity number. */
export const RESERVED_NAMES: Readonly<Record<number, string>> = Object.freeze({
  0: 'unknown', 1: 'host', 2: 'world', 3: 'unmanaged', 4: 'health', 5: 'init', 6: 'remote-node',
  7: 'kube-apiserver', 8: 'ingress', 9: 'world-ipv4', 10: 'world-ipv6',
});

export const LOCAL_IDENTITY_FLAG = 1 << 24;
export const REMOTE_NODE_IDENTITY_FLAG = 2 << 24;
export const MIN_CLUSTER_IDENTITY = 256;
export const MAX_CLUSTER_IDENTITY = 65535;
export const MIN_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG + 1;
export const MAX_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG + 0xffffff;

export type IdentityScope = 'reserved' | 'cluster' | 'local' | 'remote-node';

export function identityScope(id: number): IdentityScope {
  const scope = id >>> 24;
  if (scope === 1) return 'local';
  if (scope === 2) return 'remote-node';
  return id < MIN_CLUSTER_IDENTITY ? 'reserved' : 'cluster';
}

function reservedLabels(id: number): LabelSet {
  const name = RESERVED_NAMES[id]!;
  const labels = [makeLabel(LabelSource.reserved, name)];
  // The kube-apiserver identity stands for remote nodes running the apiserver.
  if (id === ReservedIdentity.kubeApiserver) labels.push(makeLabel(LabelSource.reserved, 'remote-node'));
  return new LabelSet(labels);
}

export const RESERVED_IDENTITIES: readonly Identity[] = Object.freeze(
  Object.keys(RESERVED_NAMES).map((k) => Object.freeze({ id: Number(k), labels: reservedLabels(Number(k)) })),
);

const reservedByCanonical = new Map(RESERVED_IDENTITIES.map((i) => [i.labels.canonical, i]));

export function reservedIdentity(id: number): Identity | undefined {
  return id >= 0 && id <= 10 ? RESERVED_IDENTITIES[id] : undefined;
}

/** The reserved identity whose labels are exactly `labels`, if any. */
export function reservedIdentityForLabels(labels: LabelSet): Identity | undefined {
  return reservedByCanonical.get(labels.canonical);
}

/** The world identity for an address family: 2 in single stack, 9 (IPv4) / 10 (IPv6) in dual stack. */
export function worldIdentity(family: 4 | 6, dualStack: boolean): number {
  if (!dualStack) return ReservedIdentity.world;
  return family === 4 ? ReservedIdentity.worldIPv4 : ReservedIdentity.worldIPv6;
}

/** The world label a CIDR/FQDN identity of this family carries. */
export function worldLabelName(family: 4 | 6, dualStack: boolean): string {
  if (!dualStack) return 'world';
  return family === 4 ? 'world-ipv4' : 'world-ipv6';
}

/**
 * Whether an identity with these labels is node-local: all labels from the cidr, fqdn,
 * cidrgroup or reserved sources (and not one reserved identity by itself).
 */
export function requiresLocalScope(labels: LabelSet): boolean {
  if (labels.size === 0) return false;
  let nonReserved = false;
  for (const l of labels.labels) {
    if (l.source === LabelSource.cidr || l.source === LabelSource.fqdn || l.source === LabelSource.cidrgroup) nonReserved = true;
    else if (l.source !== LabelSource.reserved) return false;
  }
  return nonReserved;
}
