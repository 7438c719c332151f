/**
 * Identity-relevant label filter (Cilium pkg/labelsfilter). Only labels that pass become part of
 * a security identity, so that per-pod noise (pod-template-hash, controller uids, ...) does not
 * give every pod its own identity. Consequence: selectors on filtered-out keys match nothing.
 *
 * A label is kept when (no user include rule exists and no ignore rule matches) or the longest
 * matching include rule is longer than the shortest matching ignore rule. Reserved labels are
 * always kept.
 */
import { LabelSource, type Label } from './labels.ts';

export interface LabelPrefix {
  /** Prefix of the key, or a regular expression (anchored at the start of the key) when `regex`. */
  prefix: string;
  regex?: boolean;
  /** `true` for an ignore rule (written `!prefix` in Cilium's --labels). */
  ignore: boolean;
  /** Only labels of this source; undefined = any source. */
  source?: string;
}

interface Compiled extends LabelPrefix {
  re?: RegExp;
}

export class LabelFilter {
  readonly rules: readonly LabelPrefix[];
  readonly #rules: Compiled[];
  readonly #userIncludes: boolean;

  /**
   * @param rules include/ignore rules
   * @param userIncludes whether any include rule came from the user (then only included labels
   *   are kept); the default rules' includes only rescue keys from broader ignores.
   */
  constructor(rules: LabelPrefix[], userIncludes = false) {
    this.rules = Object.freeze(rules.map((r) => ({ ...r })));
    this.#rules = rules.map((r) => (r.regex ? { ...r, re: new RegExp(`^(?:${r.prefix})`) } : { ...r }));
    this.#userIncludes = userIncludes;
  }

  /**
   * Parses Cilium `--labels` syntax: each item `[!][source:]prefix`, regular expressions allowed.
   * The result is the default rules plus these, with the user includes switching to allow-list mode.
   */
  static fromArgs(items: string[]): LabelFilter {
    const user: LabelPrefix[] = items.map((raw) => {
      const ignore = raw.startsWith('!');
      const body = ignore ? raw.slice(1) : raw;
      const colon = body.indexOf(':');
      const source = colon > 0 ? body.slice(0, colon) : undefined;
      const prefix = colon > 0 ? body.slice(colon + 1) : body;
      return { prefix, ignore, regex: /[*+?()[\]|\\^$]/.test(prefix), ...(source ? { source } : {}) };
    });
    return new LabelFilter([...DEFAULT_LABEL_PREFIXES, ...user], user.some((u) => !u.ignore));
  }

  keep(l: Label): boolean {
    if (l.source === LabelSource.reserved) return true;
    let longestInclude = -1;
    let shortestIgnore = Infinity;
    for (const r of this.#rules) {
      if (r.source !== undefined && r.source !== l.source) continue;
      const hit = r.re ? r.re.test(l.key) : l.key.startsWith(r.prefix);
      if (!hit) continue;
      if (r.ignore) shortestIgnore = Math.min(shortestIgnore, r.prefix.length);
      else longestInclude = Math.max(longestInclude, r.prefix.length);
    }
    if (!this.#userIncludes && shortestIgnore === Infinity) return true;
    return longestInclude > shortestIgnore || (longestInclude >= 0 && shortestIgnore === Infinity);
  }

  filter(labels: Iterable<Label>): Label[] {
    const out: Label[] = [];
    for (const l of labels) if (this.keep(l)) out.push(l);
    return out;
  }
}

/** Cilium's default rules (pkg/labelsfilter/filter.go, recent releases). */
export const DEFAULT_LABEL_PREFIXES: readonly LabelPrefix[] = Object.freeze([
  { prefix: 'io.kubernetes.pod.namespace', ignore: false, source: LabelSource.k8s },
  { prefix: 'io.cilium.k8s.namespace.labels', ignore: false, source: LabelSource.k8s },
  { prefix: 'app.kubernetes.io', ignore: false, source: LabelSource.k8s },
  { prefix: 'io.kubernetes', ignore: true },
  { prefix: 'kubernetes.io', ignore: true },
  { prefix: 'statefulset.kubernetes.io/pod-name', ignore: true },
  { prefix: 'apps.kubernetes.io/pod-index', ignore: true },
  { prefix: 'batch.kubernetes.io/job-completion-index', ignore: true },
  { prefix: 'batch.kubernetes.io/controller-uid', ignore: true },
  { prefix: '.*beta\\.kubernetes\\.io', regex: true, ignore: true },
  { prefix: 'k8s.io', ignore: true },
  { prefix: 'pod-template-generation', ignore: true },
  { prefix: 'pod-template-hash', ignore: true },
  { prefix: 'controller-revision-hash', ignore: true },
  { prefix: 'controller-uid', ignore: true },
  { prefix: 'annotation\\..*', regex: true, ignore: true },
  { prefix: 'etcd_node', ignore: true },
  { prefix: 'topology.kubernetes.io', ignore: true },
]);

export const defaultLabelFilter = new LabelFilter([...DEFAULT_LABEL_PREFIXES]);
