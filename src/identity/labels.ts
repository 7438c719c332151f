/**
 * How identities get their labels: pods (from pod, namespace, service account and cluster),
 * CIDR prefixes (`cidr:` + world) and FQDN selectors (`fqdn:` + world).
 */
import type { FQDNSelector, Namespace, Pod } from '../api/types.ts';
import { K8sLabel, LabelSet, LabelSource, makeLabel, type Label } from '../labels/labels.ts';
import { defaultLabelFilter, type LabelFilter } from '../labels/filter.ts';
import { parsePrefix, type Prefix } from '../ipcache/prefix.ts';
import { worldLabelName } from './identity.ts';

export const DEFAULT_CLUSTER_NAME = 'default';

export interface PodIdentityInput {
  pod: Pick<Pod, 'metadata'> & { spec?: Partial<Pod['spec']> };
  namespace?: Pick<Namespace, 'metadata'> | undefined;
  clusterName?: string;
  filter?: LabelFilter;
}

/**
 * A pod's identity labels (Cilium §5.3): filtered pod labels (source k8s, `io.cilium.k8s*` keys
 * stripped) plus the namespace, every namespace label as `io.cilium.k8s.namespace.labels.<k>`
 * (including `kubernetes.io/metadata.name`, which Kubernetes sets on every namespace), the
 * service account and the cluster name.
 */
export function podIdentityLabels(input: PodIdentityInput): LabelSet {
  const { pod } = input;
  const ns = pod.metadata.namespace ?? input.namespace?.metadata.name ?? 'default';
  const out: Label[] = [];
  for (const [k, v] of Object.entries(pod.metadata.labels ?? {})) {
    if (k.startsWith('io.cilium.k8s')) continue;
    out.push(makeLabel(LabelSource.k8s, k, v));
  }
  const nsLabels: Record<string, string> = { ...(input.namespace?.metadata.labels ?? {}), 'kubernetes.io/metadata.name': ns };
  for (const [k, v] of Object.entries(nsLabels)) out.push(makeLabel(LabelSource.k8s, `${K8sLabel.namespaceLabels}.${k}`, v));
  out.push(makeLabel(LabelSource.k8s, K8sLabel.namespace, ns));
  out.push(makeLabel(LabelSource.k8s, K8sLabel.serviceAccount, pod.spec?.serviceAccountName || 'default'));
  out.push(makeLabel(LabelSource.k8s, K8sLabel.cluster, input.clusterName ?? DEFAULT_CLUSTER_NAME));
  return new LabelSet((input.filter ?? defaultLabelFilter).filter(out));
}

/**
 * The `cidr:` label key of a prefix. IPv6 colons become `-`; a leading or trailing colon becomes
 * `0-` / `-0` because selector keys may not start or end with `-` (Cilium pkg/labels/cidr.go).
 */
export function cidrLabelKey(p: Prefix): string {
  const ip = p.text.slice(0, p.text.indexOf('/'));
  if (p.family === 4) return p.text;
  let s = '';
  for (let i = 0; i < ip.length; i++) {
    const c = ip[i]!;
    if (c !== ':') s += c;
    else if (i === 0) s += '0-';
    else if (i === ip.length - 1) s += '-0';
    else s += '-';
  }
  return `${s}/${p.len}`;
}

/** Parses a `cidr:` label key back into a prefix. */
export function parseCidrLabelKey(key: string): Prefix | undefined {
  return parsePrefix(key.includes('-') ? key.replaceAll('-', ':') : key, false);
}

export function cidrLabel(p: Prefix): Label {
  return makeLabel(LabelSource.cidr, cidrLabelKey(p));
}

/**
 * Labels of the local identity for an external prefix: `cidr:<prefix>` plus the family's world
 * label. `/0` has no cidr label: it is the world identity itself.
 */
export function cidrIdentityLabels(prefix: string | Prefix, dualStack = false): LabelSet {
  const p = typeof prefix === 'string' ? parsePrefix(prefix) : prefix;
  if (!p) throw new TypeError(`invalid prefix "${String(prefix)}"`);
  const world = makeLabel(LabelSource.reserved, worldLabelName(p.family, dualStack));
  return new LabelSet(p.len === 0 ? [world] : [cidrLabel(p), world]);
}

/**
 * The identity label an FQDN selector selects: `fqdn:<matchName or matchPattern>` (lower-cased,
 * trailing dot removed), empty value — the format of Cilium's FQDNSelector.IdentityLabel.
 * The fqdn subsystem gives every IP learned for a name the labels of all FQDN selectors that
 * match the name, plus `cidr:<ip>/32|128` and the world label (see fqdnIdentityLabels).
 */
export function fqdnSelectorLabel(sel: FQDNSelector): Label {
  const raw = (sel.matchName ?? sel.matchPattern ?? '').trim().toLowerCase();
  const key = raw.length > 1 && raw.endsWith('.') ? raw.slice(0, -1) : raw;
  return makeLabel(LabelSource.fqdn, key);
}

/** Labels for the identity of an IP learned from DNS for names matched by `selectors`. */
export function fqdnIdentityLabels(ip: string, selectors: FQDNSelector[], dualStack = false): LabelSet {
  const p = parsePrefix(ip);
  if (!p) throw new TypeError(`invalid IP "${ip}"`);
  return cidrIdentityLabels(p, dualStack).union(selectors.map(fqdnSelectorLabel));
}
