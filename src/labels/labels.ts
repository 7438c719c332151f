/**
 * Labels: Cilium's (source, key, value) triples and immutable, sorted label sets.
 *
 * Text form is `source:key=value` (value optional). A leading `$` means the reserved source
 * (`$host` ≡ `reserved:host`). Text without a source gets `defaultSource`, which is `any` for
 * selector keys (matches a label of that key from every source) and `k8s` for pod labels.
 */

export interface Label {
  readonly source: string;
  readonly key: string;
  readonly value: string;
}

export const LabelSource = {
  any: 'any',
  k8s: 'k8s',
  reserved: 'reserved',
  cidr: 'cidr',
  fqdn: 'fqdn',
  cidrgroup: 'cidrgroup',
  node: 'node',
  container: 'container',
  unspec: 'unspec',
} as const;

/** Label keys Cilium derives from Kubernetes metadata (pkg/k8s/apis/cilium.io/const.go). */
export const K8sLabel = {
  namespace: 'io.kubernetes.pod.namespace',
  namespaceLabels: 'io.cilium.k8s.namespace.labels',
  serviceAccount: 'io.cilium.k8s.policy.serviceaccount',
  cluster: 'io.cilium.k8s.policy.cluster',
  policyDerivedFrom: 'io.cilium.k8s.policy.derived-from',
  policyName: 'io.cilium.k8s.policy.name',
  policyNamespace: 'io.cilium.k8s.policy.namespace',
  policyUID: 'io.cilium.k8s.policy.uid',
} as const;

export function makeLabel(source: string, key: string, value = ''): Label {
  return Object.freeze({ source, key, value });
}

/**
 * Splits `source:key` into its parts. The source is the text before the first `:` (only when
 * that `:` comes before any `=`, so a value may contain colons); `$name` is `reserved:name`.
 */
export function parseSourceKey(text: string, defaultSource: string = LabelSource.any): { source: string; key: string } {
  if (text.startsWith('$')) return { source: LabelSource.reserved, key: text.slice(1) };
  const colon = text.indexOf(':');
  const eq = text.indexOf('=');
  if (colon > 0 && (eq < 0 || colon < eq)) return { source: text.slice(0, colon), key: text.slice(colon + 1) };
  if (colon === 0) return { source: defaultSource, key: text.slice(1) };
  return { source: defaultSource, key: text };
}

/** Parses `source:key=value`, `key=value`, `key`, `$host`. */
export function parseLabel(text: string, defaultSource: string = LabelSource.any): Label {
  const t = text.trim();
  const eq = t.indexOf('=');
  const head = eq >= 0 ? t.slice(0, eq) : t;
  const value = eq >= 0 ? t.slice(eq + 1) : '';
  const { source, key } = parseSourceKey(head, defaultSource);
  return makeLabel(source, key, value);
}

/** `source:key=value`, or `source:key` when the value is empty (Cilium's Label.String). */
export function labelString(l: Label): string {
  return l.value === '' ? `${l.source}:${l.key}` : `${l.source}:${l.key}=${l.value}`;
}

function compareLabels(a: Label, b: Label): number {
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

const EMPTY: readonly Label[] = Object.freeze([]);

/**
 * An immutable set of labels, sorted by key then source, at most one label per (source, key)
 * (a later duplicate replaces an earlier one). `canonical` is a stable string form suitable as
 * a map key: equal sets have equal canonical strings.
 */
export class LabelSet {
  readonly labels: readonly Label[];
  readonly canonical: string;
  #byKey: Map<string, Label[]> | undefined;

  constructor(labels: Iterable<Label>) {
    const bySourceKey = new Map<string, Label>();
    for (const l of labels) bySourceKey.set(`${l.source}:${l.key}`, Object.isFrozen(l) ? l : makeLabel(l.source, l.key, l.value ?? ''));
    const sorted = [...bySourceKey.values()].sort(compareLabels);
    this.labels = Object.freeze(sorted);
    this.canonical = sorted.map(labelString).join(';');
    Object.freeze(this);
  }

  static readonly empty = new LabelSet([]);

  static parse(texts: Iterable<string>, defaultSource: string = LabelSource.k8s): LabelSet {
    const out: Label[] = [];
    for (const t of texts) out.push(parseLabel(t, defaultSource));
    return new LabelSet(out);
  }

  /** Labels from a `{key: value}` map, all with one source. */
  static fromMap(map: Record<string, string> | undefined, source: string = LabelSource.k8s): LabelSet {
    const out: Label[] = [];
    for (const [k, v] of Object.entries(map ?? {})) out.push(makeLabel(source, k, v));
    return new LabelSet(out);
  }

  get size(): number {
    return this.labels.length;
  }

  /** Every label with this key, whatever its source. */
  byKey(key: string): readonly Label[] {
    if (this.#byKey === undefined) {
      const m = new Map<string, Label[]>();
      for (const l of this.labels) {
        const arr = m.get(l.key);
        if (arr) arr.push(l);
        else m.set(l.key, [l]);
      }
      this.#byKey = m;
    }
    return this.#byKey.get(key) ?? EMPTY;
  }

  get(source: string, key: string): Label | undefined {
    for (const l of this.byKey(key)) if (source === LabelSource.any || l.source === source) return l;
    return undefined;
  }

  has(source: string, key: string): boolean {
    return this.get(source, key) !== undefined;
  }

  hasSource(source: string): boolean {
    return this.labels.some((l) => l.source === source);
  }

  /** All labels of one source. */
  ofSource(source: string): Label[] {
    return this.labels.filter((l) => l.source === source);
  }

  union(other: LabelSet | Iterable<Label>): LabelSet {
    return new LabelSet([...this.labels, ...(other instanceof LabelSet ? other.labels : other)]);
  }

  equals(other: LabelSet): boolean {
    return this.canonical === other.canonical;
  }

  /** `source:key=value` strings, sorted: what Hubble and `membrane get identities` print. */
  toStrings(): string[] {
    return this.labels.map(labelString);
  }

  toString(): string {
    return this.canonical;
  }
}
