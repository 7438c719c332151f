/**
 * Repository: the imported policies, keyed by resource (`kind/namespace/name`), translated into
 * rules, with a revision that increases on every change. Imports are all-or-nothing: a resource
 * (or a batch) with any problem — invalid fields, or an L7 parser conflict with what is already
 * imported — throws PolicyImportError listing every problem and changes nothing.
 *
 * The repository registers every peer selector of its rules in the SelectorCache, so the cache
 * always knows each selector's identities before an endpoint resolves its policy.
 */
import type { PolicyResource, Service } from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import { MembraneError, type Issue } from '../common/errors.ts';
import type { FQDNSelector } from '../api/types.ts';
import type { LabelSet } from '../labels/labels.ts';
import type { Prefix } from '../ipcache/prefix.ts';
import type { PolicyEntry, PortSpec, TranslatedRule } from './rules.ts';
import { SelectorCache } from './selectorcache.ts';
import { translatePolicy } from './translate.ts';
import type { ServiceLookup, TranslateOptions, Translation } from './translate-context.ts';
import { portBlockCovers } from './ports.ts';
import { HOST_PEER } from './selectors.ts';

export class PolicyImportError extends MembraneError {
  readonly issues: Issue[];
  constructor(issues: Issue[], what: string) {
    const first = issues[0];
    super('POLICY_INVALID', `${what}: ${issues.length} problem(s)${first ? `; first: ${first.file}:${first.line}:${first.col}: ${first.message}` : ''}`, {
      hint: 'nothing was applied; fix every listed problem and apply again',
    });
    this.issues = issues;
  }
}

export interface RepositoryOptions extends Omit<TranslateOptions, 'services'> {
  selectorCache?: SelectorCache;
}

interface Stored {
  resource: PolicyResource;
  translation: Translation;
  /** import order, for stable rule order and "older wins" on late conflicts */
  seq: number;
}

export interface RepositoryChange {
  revision: number;
  /** resource keys added, replaced or deleted */
  keys: string[];
}

function servicesIndex(services: Iterable<Service>): ServiceLookup {
  const byKey = new Map<string, Service>();
  for (const s of services) byKey.set(`${s.metadata.namespace ?? 'default'}/${s.metadata.name}`, s);
  return { get: (ns, name) => byKey.get(`${ns}/${name}`), list: () => byKey.values() };
}

function portsOverlap(a: readonly PortSpec[] | null, b: readonly PortSpec[] | null): boolean {
  if (!a || !b) return true; // L3-only: every port
  for (const x of a) for (const y of b) {
    if (x.proto !== y.proto) continue;
    if (x.name !== undefined || y.name !== undefined) {
      if (x.name !== undefined && x.name === y.name) return true;
      continue;
    }
    if (portBlockCovers(x.port, x.plen, y.port!, y.plen!) || portBlockCovers(y.port!, y.plen!, x.port, x.plen)) return true;
  }
  return false;
}

function sameTLS(a: unknown, b: unknown): boolean {
  return a === undefined || b === undefined || JSON.stringify(a) === JSON.stringify(b);
}

export class Repository {
  readonly selectorCache: SelectorCache;
  readonly #opts: RepositoryOptions;
  readonly #stored = new Map<string, Stored>();
  readonly #listeners = new Set<(c: RepositoryChange) => void>();
  #services: ServiceLookup = servicesIndex([]);
  #revision = 1;
  #seq = 0;
  #rulesCache: TranslatedRule[] | undefined;

  constructor(opts: RepositoryOptions = {}) {
    this.#opts = opts;
    this.selectorCache = opts.selectorCache ?? new SelectorCache();
    // Every endpoint's implicit allow-localhost rule selects the host: registered for good.
    this.selectorCache.add(HOST_PEER);
  }

  /** Starts at 1 (Cilium's initial revision) and increases by one per change. */
  get revision(): number {
    return this.#revision;
  }

  get size(): number {
    return this.#stored.size;
  }

  get options(): Readonly<RepositoryOptions> {
    return this.#opts;
  }

  keys(): string[] {
    return [...this.#stored.keys()];
  }

  get(key: string): PolicyResource | undefined {
    return this.#stored.get(key)?.resource;
  }

  /** All rules, in import order (older policies first). */
  rules(): readonly TranslatedRule[] {
    if (!this.#rulesCache) {
      const stored = [...this.#stored.values()].sort((a, b) => a.seq - b.seq);
      this.#rulesCache = stored.flatMap((s) => s.translation.rules);
    }
    return this.#rulesCache;
  }

  /** Rules whose subject selects an endpoint with these labels (`node` rules only for the host). */
  rulesFor(labels: LabelSet, kind: 'endpoint' | 'node' = 'endpoint'): TranslatedRule[] {
    return this.rules().filter((r) => r.subject.kind === kind && r.subject.selector.matches(labels));
  }

  /** Import order of a policy (lower = older). */
  seqOf(policyKey: string): number {
    return this.#stored.get(policyKey)?.seq ?? Infinity;
  }

  /** Every CIDR prefix the policies name (with excepts), deduplicated: give each an identity. */
  referencedCIDRs(): Prefix[] {
    const m = new Map<string, Prefix>();
    for (const s of this.#stored.values()) for (const p of s.translation.cidrs) m.set(p.text, p);
    return [...m.values()];
  }

  /** Every toFQDNs selector, deduplicated: the fqdn subsystem labels learned IPs with them. */
  fqdnSelectors(): FQDNSelector[] {
    const m = new Map<string, FQDNSelector>();
    for (const s of this.#stored.values()) for (const f of s.translation.fqdns) m.set(JSON.stringify(f), f);
    return [...m.values()];
  }

  onChange(cb: (c: RepositoryChange) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /** Translates without importing: every problem, including conflicts with what is imported. */
  check(resources: PolicyResource[], replaceAll = false): Issue[] {
    const { issues } = this.#prepare(resources, replaceAll);
    return issues;
  }

  /** Adds or replaces one policy. Throws PolicyImportError (changing nothing) on any problem. */
  upsert(resource: PolicyResource): RepositoryChange {
    return this.apply([resource], false);
  }

  /** Deletes a policy by resource key (`kind/namespace/name`). */
  delete(key: string): RepositoryChange | undefined {
    const s = this.#stored.get(key);
    if (!s) return undefined;
    this.#releaseSelectors(s.translation);
    this.#stored.delete(key);
    return this.#changed([key]);
  }

  /**
   * Imports a batch atomically. With `replaceAll`, the batch becomes the whole set of policies
   * (missing ones are deleted). Unchanged resources keep their place and revision.
   */
  apply(resources: PolicyResource[], replaceAll = false): RepositoryChange {
    const { issues, translations } = this.#prepare(resources, replaceAll);
    if (issues.length) throw new PolicyImportError(issues, resources.length === 1 ? `${resources[0]!.kind} ${resources[0]!.metadata?.name}` : `${resources.length} policies`);
    const keys: string[] = [];
    const incoming = new Set(translations.keys());
    if (replaceAll) {
      for (const [key, s] of this.#stored) {
        if (incoming.has(key)) continue;
        this.#releaseSelectors(s.translation);
        this.#stored.delete(key);
        keys.push(key);
      }
    }
    for (const [key, { resource, translation }] of translations) {
      const old = this.#stored.get(key);
      if (old && sameResource(old.resource, resource)) continue;
      this.#addSelectors(translation);
      if (old) this.#releaseSelectors(old.translation);
      this.#stored.set(key, { resource, translation, seq: old?.seq ?? ++this.#seq });
      keys.push(key);
    }
    if (keys.length === 0) return { revision: this.#revision, keys };
    return this.#changed(keys);
  }

  /** New services: re-translates policies that use toServices. Returns the change, if any. */
  setServices(services: Iterable<Service>): RepositoryChange | undefined {
    this.#services = servicesIndex(services);
    const keys: string[] = [];
    for (const [key, s] of this.#stored) {
      if (!s.translation.usesServices) continue;
      const t = translatePolicy(s.resource, { ...this.#opts, services: this.#services });
      if (t.issues.length) continue; // cannot happen: services do not make a valid policy invalid
      if (JSON.stringify(t.rules.map(ruleSig)) === JSON.stringify(s.translation.rules.map(ruleSig))) continue;
      this.#addSelectors(t);
      this.#releaseSelectors(s.translation);
      s.translation = t;
      keys.push(key);
    }
    return keys.length ? this.#changed(keys) : undefined;
  }

  #prepare(resources: PolicyResource[], replaceAll: boolean): { issues: Issue[]; translations: Map<string, { resource: PolicyResource; translation: Translation }> } {
    const issues: Issue[] = [];
    const translations = new Map<string, { resource: PolicyResource; translation: Translation }>();
    for (const resource of resources) {
      const old = this.#stored.get(resourceKey(resource));
      const translation = old && sameResource(old.resource, resource) && !old.translation.usesServices
        ? old.translation
        : translatePolicy(resource, { ...this.#opts, services: this.#services });
      issues.push(...translation.issues);
      translations.set(resourceKey(resource), { resource, translation });
    }
    if (issues.length) return { issues, translations };
    // The rules as they would be after the import, for cross-policy conflicts.
    const after = new Map<string, TranslatedRule[]>();
    for (const [k, s] of this.#stored) if (!replaceAll || translations.has(k)) after.set(k, s.translation.rules);
    for (const [k, t] of translations) after.set(k, t.translation.rules);
    const fresh = new Set(translations.keys());
    issues.push(...this.#conflicts(after, fresh, translations));
    return { issues, translations };
  }

  /**
   * L7 parser, TLS context and authentication conflicts between rules that can select the same
   * endpoint (same subject selector, or some known identity matched by both subjects).
   */
  #conflicts(after: Map<string, TranslatedRule[]>, fresh: Set<string>, translations: Map<string, { resource: PolicyResource }>): Issue[] {
    const issues: Issue[] = [];
    const all: { key: string; rule: TranslatedRule; entry: PolicyEntry }[] = [];
    for (const [key, rules] of after) for (const rule of rules) for (const entry of rule.entries) {
      if (entry.verdict === 'allow' && (entry.l7 || entry.auth !== undefined)) all.push({ key, rule, entry });
    }
    const identities = [...this.selectorCache.identities().values()];
    const overlap = new Map<string, boolean>();
    const subjectsOverlap = (a: TranslatedRule, b: TranslatedRule) => {
      if (a.subject.kind !== b.subject.kind) return false;
      if (a.subject.selector.key === b.subject.selector.key) return true;
      const k = `${a.subject.selector.key}|${b.subject.selector.key}`;
      let v = overlap.get(k);
      if (v === undefined) {
        v = identities.some((ls) => a.subject.selector.matches(ls) && b.subject.selector.matches(ls));
        overlap.set(k, v);
      }
      return v;
    };
    const seen = new Set<string>();
    for (let i = 0; i < all.length; i++) {
      for (let j = i + 1; j < all.length; j++) {
        const a = all[i]!;
        const b = all[j]!;
        if (!fresh.has(a.key) && !fresh.has(b.key)) continue;
        if (a.entry.direction !== b.entry.direction || !portsOverlap(a.entry.ports, b.entry.ports)) continue;
        if (!subjectsOverlap(a.rule, b.rule)) continue;
        const newer = fresh.has(b.key) ? b : a;
        const older = newer === b ? a : b;
        const res = translations.get(newer.key)?.resource;
        const file = newer.entry.origin.file;
        const line = newer.entry.origin.line;
        const pa = a.entry.l7?.parser;
        const pb = b.entry.l7?.parser;
        let msg: string | undefined;
        if (pa && pb && pa !== 'tls' && pb !== 'tls' && pa !== pb) {
          msg = `cannot merge conflicting L7 parsers (${pb} and ${pa}) on the same port with ${older.entry.origin.kind} ${older.entry.origin.namespace ? `${older.entry.origin.namespace}/` : ''}${older.entry.origin.name}`;
        } else {
          const samePeer = a.entry.peers.some((p) => b.entry.peers.some((q) => q.key === p.key));
          if (samePeer && !sameTLS(a.entry.l7?.terminatingTLS, b.entry.l7?.terminatingTLS)) msg = 'cannot merge conflicting TLS contexts (terminatingTLS) for the same peer and port';
          else if (samePeer && !sameTLS(a.entry.l7?.originatingTLS, b.entry.l7?.originatingTLS)) msg = 'cannot merge conflicting TLS contexts (originatingTLS) for the same peer and port';
          else if (samePeer && a.entry.auth !== undefined && b.entry.auth !== undefined && a.entry.auth !== b.entry.auth && JSON.stringify(a.entry.ports) === JSON.stringify(b.entry.ports)) {
            msg = 'cannot merge conflicting authentication types for the same peer and port';
          }
        }
        if (!msg) continue;
        const dedupe = `${newer.key}|${msg}`;
        if (seen.has(dedupe)) continue;
        seen.add(dedupe);
        issues.push({
          code: 'POLICY_L7_CONFLICT', message: msg, path: [], file, line, col: res?.source?.col ?? 1,
          hint: 'use one L7 protocol per port for endpoints both policies select, or select different endpoints',
        });
      }
    }
    return issues;
  }

  #addSelectors(t: Translation): void {
    for (const r of t.rules) for (const e of r.entries) for (const p of e.peers) this.selectorCache.add(p);
  }

  #releaseSelectors(t: Translation): void {
    for (const r of t.rules) for (const e of r.entries) for (const p of e.peers) this.selectorCache.release(p.key);
  }

  #changed(keys: string[]): RepositoryChange {
    this.#revision++;
    this.#rulesCache = undefined;
    const c = { revision: this.#revision, keys };
    for (const l of this.#listeners) l(c);
    return c;
  }
}

function sameResource(a: PolicyResource, b: PolicyResource): boolean {
  const strip = (r: PolicyResource) => {
    const { source: _s, ...rest } = r as PolicyResource & { status?: unknown };
    delete (rest as { status?: unknown }).status;
    return JSON.stringify(rest);
  };
  return a.source?.file === b.source?.file && a.source?.line === b.source?.line && strip(a) === strip(b);
}

function ruleSig(r: TranslatedRule): unknown {
  return { s: r.subject.selector.key, e: r.entries.map((e) => ({ d: e.direction, v: e.verdict, p: e.peers.map((p) => p.key), o: e.ports, l: e.l7, a: e.auth })) };
}

export { SelectorCache };
