/**
 * Resolution: the rules that select one endpoint → its MapState (types.ts), and incremental
 * upkeep of that MapState as identities and rules change.
 *
 * Vocabulary:
 *   contribution — one (peer selector × port block) of one rule entry selecting the endpoint
 *   lane         — the MapState keys of one remote identity; lane 0 holds wildcard-peer keys
 *   covers       — proto 0 covers everything; else same proto and a port block containing
 *
 * For key K in lane X the entry folds every contribution that matches X (its selector selects
 * X, or is the wildcard) and covers K:
 *   - any deny ⇒ deny (this is how "no allow under a covering deny in the same lane" holds);
 *   - else allow, authType = the strongest explicit mode, L7Policy = L7Policy(K).
 * L7Policy(K) exists iff some L7 allow contribution (of any selector) covers K; its perSelector
 * list groups every allow contribution covering K by selector (an L4-only one wildcards L7).
 * Because the datapath takes the longer of the lane-X and lane-0 matches, a lane-0 key can
 * decide for X; where X's own broader contributions would change the result (authentication)
 * a lane-X copy of that key is added ("refinement"). With that, lookupMapState(resolve()) equals
 * the reference decide() for every (identity, proto, port) — the property tests check it.
 *
 * An identity change touches only its own lane: lane 0 and L7Policy(K) do not depend on which
 * identities exist (L7Policy identity sets are live selector-cache sets).
 */
import type { PortRuleDNS, PortRuleHTTP } from '../api/types.ts';
import type { Issue } from '../common/errors.ts';
import type { LabelSet } from '../labels/labels.ts';
import type { L7Spec, PolicyEntry, TranslatedRule } from './rules.ts';
import type { Repository } from './repository.ts';
import { HOST_PEER } from './selectors.ts';
import type { CachedSelector, SelectionChange, SelectorCache, SelectorUser } from './selectorcache.ts';
import {
  type Direction, type L7Policy, type MapState, type MapStateDelta, type MapStateEntry, type MapStateKey,
  type RuleOrigin, PolicyMatchType, mapStateKeyString,
} from './types.ts';
import { portBlockCovers } from './ports.ts';

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

interface Contrib {
  /** unique within one build: memo keys for entries */
  id: number;
  sel: CachedSelector;
  verdict: 'allow' | 'deny';
  proto: number;
  port: number;
  plen: number;
  /** egress named port, resolved per destination identity */
  name?: string;
  l7: L7Spec | null;
  auth: number | undefined;
  origin: RuleOrigin;
  seq: number;
}

interface Block {
  proto: number;
  port: number;
  plen: number;
}

const spec = (b: Block) => (b.proto === 0 ? 0 : 8 + b.plen);
const blockKey = (b: Block) => `${b.proto}/${b.port}/${b.plen}`;

function covers(c: Block, k: Block): boolean {
  if (c.proto === 0) return true;
  return c.proto === k.proto && portBlockCovers(c.port, c.plen, k.port, k.plen);
}

function classify(identitySpecific: boolean, b: Block): number {
  if (identitySpecific) return b.proto === 0 ? PolicyMatchType.l3Only : b.plen === 0 ? PolicyMatchType.l3Proto : PolicyMatchType.l3l4;
  return b.proto === 0 ? PolicyMatchType.all : b.plen === 0 ? PolicyMatchType.protoOnly : PolicyMatchType.l4Only;
}

function originKey(o: RuleOrigin): string {
  return `${o.kind}/${o.namespace}/${o.name}@${o.file}:${o.line}${o.log ? `#${o.log}` : ''}`;
}

function sortedOrigins(cs: Iterable<{ origin: RuleOrigin }>): RuleOrigin[] {
  const m = new Map<string, RuleOrigin>();
  for (const c of cs) m.set(originKey(c.origin), c.origin);
  return [...m.keys()].sort().map((k) => m.get(k)!);
}

function dedupeSorted<T>(items: Iterable<T>): T[] {
  const m = new Map<string, T>();
  for (const i of items) m.set(stableStringify(i), i);
  return [...m.keys()].sort().map((k) => m.get(k)!);
}

export function stableStringify(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  if (v instanceof Set) return `set(${[...v].sort().join(',')})`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`).join(',')}}`;
}

// Signatures for cheap entry comparison in deltas.
const l7Sigs = new WeakMap<L7Policy, string>();
function l7Sig(p: L7Policy | null): string {
  if (!p) return '';
  let s = l7Sigs.get(p);
  if (s === undefined) {
    s = stableStringify({ ...p, perSelector: p.perSelector.map((e) => ({ ...e, identities: e.identities === 'all' ? 'all' : e.selectorKey })) });
    l7Sigs.set(p, s);
  }
  return s;
}

export function entriesEqual(a: MapStateEntry, b: MapStateEntry): boolean {
  if (a === b) return true;
  if (a.verdict !== b.verdict || a.authType !== b.authType || a.matchType !== b.matchType) return false;
  if (a.l7 !== b.l7 && l7Sig(a.l7) !== l7Sig(b.l7)) return false;
  if (a.origins.length !== b.origins.length) return false;
  for (let i = 0; i < a.origins.length; i++) if (originKey(a.origins[i]!) !== originKey(b.origins[i]!)) return false;
  return true;
}

interface Fold {
  denies: Contrib[];
  bestDeny: Contrib | null;
  allows: Contrib[];
  auth: number;
}

const EMPTY_FOLD: Fold = Object.freeze({ denies: [], bestDeny: null, allows: [], auth: 0 }) as Fold;

function fold(contribs: Iterable<Contrib & Block>, k: Block): Fold {
  let f: Fold | undefined;
  for (const c of contribs) {
    if (!covers(c, k)) continue;
    f ??= { denies: [], bestDeny: null, allows: [], auth: 0 };
    if (c.verdict === 'deny') {
      f.denies.push(c);
      if (!f.bestDeny || spec(c) > spec(f.bestDeny)) f.bestDeny = c;
    } else {
      f.allows.push(c);
      if (c.auth !== undefined && c.auth > f.auth) f.auth = c.auth;
    }
  }
  return f ?? EMPTY_FOLD;
}

/** Per-direction working state of one endpoint's resolution. */
class DirState {
  readonly dir: Direction;
  /** wildcard-peer contributions, ports resolved */
  readonly wild: (Contrib & Block)[] = [];
  /** non-wildcard contributions by selector */
  readonly bySel = new Map<CachedSelector, Contrib[]>();
  /** every allow contribution with its blocks for L7Policy(K) (named ports via any()) */
  readonly allowBlocks: (Contrib & Block)[] = [];
  readonly #l7 = new Map<string, L7Policy | null>();
  readonly #wfold = new Map<string, Fold>();
  readonly #wkeys = new Map<string, Block>();
  readonly #np: NamedPortProvider;

  constructor(dir: Direction, np: NamedPortProvider) {
    this.dir = dir;
    this.#np = np;
  }

  addWild(c: Contrib & Block): void {
    this.wild.push(c);
    this.#wkeys.set(blockKey(c), { proto: c.proto, port: c.port, plen: c.plen });
  }

  wildKeys(): IterableIterator<Block> {
    return this.#wkeys.values();
  }

  wfold(k: Block): Fold {
    const key = blockKey(k);
    let f = this.#wfold.get(key);
    if (!f) {
      f = fold(this.wild, k);
      this.#wfold.set(key, f);
    }
    return f;
  }

  /** Blocks of a non-wildcard contribution for identity X (named ports per X). */
  blocksFor(c: Contrib, x: number): Block[] {
    if (c.name === undefined) return [c];
    const out: Block[] = [];
    for (const np of this.#np.forIdentity(x, c.name)) if (np.proto === c.proto) out.push({ proto: c.proto, port: np.port, plen: 16 });
    return out;
  }

  l7Policy(k: Block): L7Policy | null {
    const key = blockKey(k);
    let p = this.#l7.get(key);
    if (p === undefined) {
      p = buildL7Policy(this.allowBlocks, k, this.#np);
      this.#l7.set(key, p);
    }
    return p;
  }

  /**
   * Entries by (key, lane kind, contributions of the identity covering the key): identities
   * selected by the same selectors share one entry object, computed once.
   */
  readonly memo = new Map<string, MapStateEntry>();
}

/**
 * The identities of a selector whose pods name `name` as (proto, port): a named egress port
 * rule applies at this port only to them. Live, like the selector's own selections.
 */
class NamedPortIdentities implements ReadonlySet<number> {
  readonly #sel: ReadonlySet<number>;
  readonly #np: NamedPortProvider;
  readonly #name: string;
  readonly #proto: number;
  readonly #port: number;
  constructor(sel: ReadonlySet<number>, np: NamedPortProvider, name: string, proto: number, port: number) {
    this.#sel = sel;
    this.#np = np;
    this.#name = name;
    this.#proto = proto;
    this.#port = port;
  }
  has(x: number): boolean {
    return this.#sel.has(x) && this.#np.forIdentity(x, this.#name).some((p) => p.proto === this.#proto && p.port === this.#port);
  }
  get size(): number {
    return [...this.values()].length;
  }
  *values(): SetIterator<number> {
    for (const x of this.#sel) if (this.has(x)) yield x;
  }
  keys(): SetIterator<number> {
    return this.values();
  }
  *entries(): SetIterator<[number, number]> {
    for (const x of this.values()) yield [x, x];
  }
  [Symbol.iterator](): SetIterator<number> {
    return this.values();
  }
  forEach(cb: (v: number, k: number, s: ReadonlySet<number>) => void): void {
    for (const x of this.values()) cb(x, x, this);
  }
}

function buildL7Policy(allows: readonly (Contrib & Block)[], k: Block, np: NamedPortProvider): L7Policy | null {
  let parser: L7Policy['parser'] | undefined;
  for (const c of allows) {
    if (!c.l7 || !covers(c, k)) continue;
    if (c.l7.parser !== 'tls') { parser = c.l7.parser; break; }
    parser ??= 'tls';
  }
  if (!parser) return null;
  // Group by selector; a named egress port of a non-wildcard selector is its own group, limited
  // to the identities that name this port.
  const bySel = new Map<string, { sel: CachedSelector; cs: (Contrib & Block)[]; identities: ReadonlySet<number> | 'all' }>();
  for (const c of allows) {
    if (!covers(c, k)) continue;
    const named = c.name !== undefined && !c.sel.wildcard;
    const gk = named ? `${c.sel.key}#${c.name}/${c.proto}/${c.port}` : c.sel.key;
    let g = bySel.get(gk);
    if (!g) {
      const identities = c.sel.wildcard ? 'all' as const : named ? new NamedPortIdentities(c.sel.selections, np, c.name!, c.proto, c.port) : c.sel.selections;
      bySel.set(gk, (g = { sel: c.sel, cs: [], identities }));
    }
    g.cs.push(c);
  }
  const perSelector: L7Policy['perSelector'] = [];
  for (const key of [...bySel.keys()].sort()) {
    const { sel, cs, identities } = bySel.get(key)!;
    const pick = <T>(f: (l: L7Spec) => readonly T[] | undefined): T[] | null => {
      const out: T[] = [];
      for (const c of cs) {
        const v = c.l7 ? f(c.l7) : undefined;
        if (v === undefined) return null; // an L4-only (or other-kind) rule wildcards L7 for this selector
        out.push(...v);
      }
      return dedupeSorted(out);
    };
    const sni = pick((l) => l.serverNames);
    const term = cs.find((c) => c.l7?.terminatingTLS)?.l7?.terminatingTLS;
    const orig = cs.find((c) => c.l7?.originatingTLS)?.l7?.originatingTLS;
    const entry: L7Policy['perSelector'][number] = {
      selector: key === sel.key ? sel.selector.display : `${sel.selector.display} (named port ${key.slice(key.indexOf('#') + 1)})`,
      selectorKey: key,
      identities,
      origins: sortedOrigins(cs),
      ...(sni ? { serverNames: sni } : {}),
      ...(term ? { terminatingTLS: term } : {}),
      ...(orig ? { originatingTLS: orig } : {}),
    };
    if (parser === 'http') entry.http = pick((l) => l.http) as PortRuleHTTP[] | null;
    if (parser === 'dns') entry.dns = pick((l) => l.dns) as PortRuleDNS[] | null;
    if (parser === 'kafka') entry.kafka = pick((l) => l.kafka) as Record<string, string>[] | null;
    if (parser === 'generic') {
      entry.l7proto = cs.find((c) => c.l7?.l7proto)?.l7?.l7proto ?? '';
      entry.l7 = pick((l) => l.l7) as Record<string, string>[] | null;
    }
    perSelector.push(entry);
  }
  return Object.freeze({ parser, perSelector });
}

interface Built {
  ingress: DirState;
  egress: DirState;
  defaultDeny: { ingress: boolean; egress: boolean };
  selectors: Set<CachedSelector>;
  issues: Issue[];
  /** whether egress named ports were resolved (the result depends on the NamedPortProvider) */
  usesNamedPorts: boolean;
}

/** Resolve-time L7 conflicts (an endpoint selected by policies that import-time could not pair): later loses. */
function dropConflicts(cs: (Contrib & Block)[], issues: Issue[]): Set<Contrib> {
  const dropped = new Set<Contrib>();
  const l7 = cs.filter((c) => c.verdict === 'allow' && c.l7 && c.l7.parser !== 'tls').sort((a, b) => a.seq - b.seq);
  for (let i = 0; i < l7.length; i++) {
    const a = l7[i]!;
    if (dropped.has(a)) continue;
    for (let j = i + 1; j < l7.length; j++) {
      const b = l7[j]!;
      if (dropped.has(b) || a.l7!.parser === b.l7!.parser) continue;
      if (!(covers(a, b) || covers(b, a))) continue;
      dropped.add(b);
      issues.push({
        code: 'POLICY_L7_CONFLICT', path: [], file: b.origin.file, line: b.origin.line, col: 1,
        message: `cannot merge conflicting L7 parsers (${b.l7!.parser} and ${a.l7!.parser}) on ${b.proto}/${b.port}: ${b.origin.kind} ${b.origin.name} is not enforced for this endpoint (its traffic is dropped)`,
      });
    }
  }
  return dropped;
}

function build(rules: readonly TranslatedRule[], repo: Repository, cache: SelectorCache, ep: EndpointInfo, opts: ResolveOptions, hostSel: CachedSelector | undefined): Built {
  const np = opts.namedPorts ?? NO_NAMED_PORTS;
  const mode = opts.enforcementMode ?? 'default';
  const b: Built = {
    ingress: new DirState('ingress', np), egress: new DirState('egress', np),
    defaultDeny: { ingress: mode === 'always', egress: mode === 'always' }, selectors: new Set(), issues: [], usesNamedPorts: false,
  };
  if (mode === 'never') return b;
  const raw: { ingress: (Contrib & Block)[]; egress: (Contrib & Block)[] } = { ingress: [], egress: [] };
  const named: { ingress: Contrib[]; egress: Contrib[] } = { ingress: [], egress: [] };
  const ownPorts = ep.namedPorts ?? [];
  let nextId = 1;
  for (const r of rules) {
    if (r.defaultDeny.ingress) b.defaultDeny.ingress = true;
    if (r.defaultDeny.egress) b.defaultDeny.egress = true;
    const base = repo.seqOf(r.policyKey) * 1e6 + r.index * 1e4;
    r.entries.forEach((e: PolicyEntry, ei) => {
      for (const peer of e.peers) {
        const sel = cache.get(peer.key);
        if (!sel) continue;
        b.selectors.add(sel);
        const mk = (blk: Block | { proto: number; name: string }): Contrib => ({
          id: nextId++, sel, verdict: e.verdict, l7: e.l7, auth: e.auth, origin: e.origin, seq: base + ei,
          proto: blk.proto, port: 'port' in blk ? blk.port : 0, plen: 'plen' in blk ? blk.plen : 16,
          ...('name' in blk ? { name: blk.name } : {}),
        });
        if (e.ports === null) { raw[e.direction].push(mk({ proto: 0, port: 0, plen: 0 }) as Contrib & Block); continue; }
        for (const p of e.ports) {
          if (p.name === undefined) { raw[e.direction].push(mk(p) as Contrib & Block); continue; }
          if (e.direction === 'ingress') {
            // Ingress named ports are the subject's own container ports.
            for (const n of ownPorts) if (n.name === p.name && n.proto === p.proto) raw.ingress.push(mk({ proto: p.proto, port: n.port, plen: 16 }) as Contrib & Block);
            continue;
          }
          b.usesNamedPorts = true;
          if (sel.wildcard) {
            for (const n of np.any(p.name)) if (n.proto === p.proto) raw.egress.push(mk({ proto: p.proto, port: n.port, plen: 16 }) as Contrib & Block);
          } else {
            named.egress.push(mk({ proto: p.proto, name: p.name }));
          }
        }
      }
    });
  }
  if (hostSel && (ep.kind ?? 'endpoint') === 'endpoint' && (opts.allowLocalhost ?? 'always') === 'always') {
    b.selectors.add(hostSel);
    raw.ingress.push({ id: 0, sel: hostSel, verdict: 'allow', proto: 0, port: 0, plen: 0, l7: null, auth: undefined, origin: ALLOW_LOCALHOST_ORIGIN, seq: -1 });
  }
  for (const dir of ['ingress', 'egress'] as const) {
    const ds = b[dir];
    // Named egress ports resolve per identity; for L7Policy(K) they count with every port any pod names.
    const namedBlocks: (Contrib & Block)[] = [];
    for (const c of named[dir]) for (const n of np.any(c.name!)) if (n.proto === c.proto) namedBlocks.push({ ...c, port: n.port, plen: 16 });
    const dropped = dropConflicts([...raw[dir], ...namedBlocks], b.issues);
    for (const c of raw[dir]) {
      if (dropped.has(c)) continue;
      if (c.verdict === 'allow') ds.allowBlocks.push(c);
      if (c.sel.wildcard) ds.addWild(c);
      else pushSel(ds.bySel, c.sel, c);
    }
    for (const c of namedBlocks) {
      if (dropped.has(c)) continue;
      if (c.verdict === 'allow') ds.allowBlocks.push(c);
    }
    for (const c of named[dir]) if (![...dropped].some((d) => d.seq === c.seq && d.sel === c.sel && d.name === c.name)) pushSel(ds.bySel, c.sel, c);
  }
  return b;
}

function pushSel(m: Map<CachedSelector, Contrib[]>, s: CachedSelector, c: Contrib): void {
  const arr = m.get(s);
  if (arr) arr.push(c);
  else m.set(s, [c]);
}

type Emit = (key: MapStateKey, entry: MapStateEntry) => void;

function allowEntry(ds: DirState, k: Block, f: Fold, g: Fold, matchType: number): MapStateEntry {
  return Object.freeze({
    verdict: 'allow', l7: ds.l7Policy(k), authType: Math.max(f.auth, g.auth), matchType,
    origins: sortedOrigins([...f.allows, ...g.allows]),
  });
}

function entryAt(ds: DirState, k: Block, xf: Fold, wf: Fold, lane: number): MapStateEntry {
  if (xf.bestDeny || wf.bestDeny) {
    // Most specific deny decides the match type; the identity's own wins a tie.
    const x = xf.bestDeny;
    const w = wf.bestDeny;
    const best = x && (!w || spec(x) >= spec(w)) ? { c: x, own: true } : { c: w!, own: false };
    return Object.freeze({
      verdict: 'deny', l7: null, authType: 0, matchType: classify(best.own && lane !== 0, best.c),
      origins: sortedOrigins([...xf.denies, ...wf.denies]),
    });
  }
  return allowEntry(ds, k, xf, wf, classify(lane !== 0, k));
}

function computeLane0(ds: DirState, emit: Emit): void {
  for (const k of ds.wildKeys()) {
    const mk = `${blockKey(k)}|0|`;
    let e = ds.memo.get(mk);
    if (!e) ds.memo.set(mk, (e = entryAt(ds, k, EMPTY_FOLD, ds.wfold(k), 0)));
    emit({ direction: ds.dir, identity: 0, proto: k.proto, port: k.port, portPrefixLen: k.plen }, e);
  }
}

/** All entries of lane X (X ≠ 0). `cs` = X's non-wildcard contributions (unresolved named ports). */
function computeLane(ds: DirState, x: number, cs: readonly Contrib[], emit: Emit): void {
  let own: (Contrib & Block)[];
  if (cs.every((c) => c.name === undefined)) own = cs as (Contrib & Block)[];
  else {
    own = [];
    for (const c of cs) for (const blk of ds.blocksFor(c, x)) own.push(blk === c ? (c as Contrib & Block) : { ...c, ...blk });
  }
  if (own.length === 0) return;
  const keys = new Map<string, Block>();
  for (const c of own) {
    const bk = blockKey(c);
    if (!keys.has(bk)) keys.set(bk, c);
  }
  let auth = false;
  for (const [bk, k] of keys) {
    let ids = '';
    for (const c of own) {
      if (covers(c, k)) ids += `${c.id},`;
      if (c.auth) auth = true;
    }
    const mk = `${bk}|x|${ids}`;
    let e = ds.memo.get(mk);
    if (!e) ds.memo.set(mk, (e = entryAt(ds, k, fold(own, k), ds.wfold(k), x)));
    emit({ direction: ds.dir, identity: x, proto: k.proto, port: k.port, portPrefixLen: k.plen }, e);
  }
  if (!auth) return;
  // Refinement: a lane-0 key that decides for X but would lose X's broader authentication.
  for (const k of ds.wildKeys()) {
    if (keys.has(blockKey(k))) continue;
    const wf = ds.wfold(k);
    if (wf.bestDeny) continue;
    const xf = fold(own, k);
    if (xf.allows.length === 0 || xf.bestDeny || xf.auth <= wf.auth) continue;
    emit({ direction: ds.dir, identity: x, proto: k.proto, port: k.port, portPrefixLen: k.plen }, allowEntry(ds, k, xf, wf, classify(false, k)));
  }
}

function laneContribs(ds: DirState, x: number): Contrib[] {
  const out: Contrib[] = [];
  for (const [sel, cs] of ds.bySel) if (sel.selections.has(x)) for (const c of cs) out.push(c);
  return out;
}

function computeAll(ds: DirState, emit: Emit): void {
  computeLane0(ds, emit);
  const perX = new Map<number, Contrib[]>();
  for (const [sel, cs] of ds.bySel) {
    for (const x of sel.selections) {
      const arr = perX.get(x);
      if (arr) arr.push(...cs);
      else perX.set(x, [...cs]);
    }
  }
  for (const [x, cs] of perX) computeLane(ds, x, cs, emit);
}

export interface ResolveContext {
  repository: Repository;
  options?: ResolveOptions;
}

function hostSelectorOf(cache: SelectorCache): CachedSelector {
  // The repository registers it for good; a cache built without one gets it here.
  return cache.get(HOST_PEER.key) ?? cache.add(HOST_PEER);
}

interface Shared {
  revision: number;
  version: number;
  npVersion: number | undefined;
  built: Built;
  entries: Map<string, { key: MapStateKey; entry: MapStateEntry }>;
  lanes: { ingress: Map<number, Set<string>>; egress: Map<number, Set<string>> };
}

// Endpoints selected by the same rules (with the same own named ports and options) get the same
// MapState: it is computed once per (repository revision, selector-cache version) and copied.
const shared = new WeakMap<Repository, Map<string, Shared>>();
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function oid(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, (id = nextObjectId++));
  return id;
}

function computeShared(repo: Repository, ep: EndpointInfo, opts: ResolveOptions): Shared {
  const cache = repo.selectorCache;
  const host = hostSelectorOf(cache);
  const rules = repo.rulesFor(ep.labels, ep.kind ?? 'endpoint');
  const np = opts.namedPorts ?? NO_NAMED_PORTS;
  const sig = [
    ep.kind ?? 'endpoint', opts.enforcementMode ?? 'default', opts.allowLocalhost ?? 'always', oid(np),
    (ep.namedPorts ?? []).map((n) => `${n.name}/${n.proto}/${n.port}`).join(';'), rules.map(oid).join(','),
  ].join('|');
  let m = shared.get(repo);
  if (!m) shared.set(repo, (m = new Map()));
  const hit = m.get(sig);
  if (hit && hit.revision === repo.revision && hit.version === cache.version && hit.npVersion === np.version) return hit;
  // Anything computed before the latest change is stale for every signature.
  for (const [k, v] of m) if (v.revision !== repo.revision || v.version !== cache.version || v.npVersion !== np.version) m.delete(k);
  const built = build(rules, repo, cache, ep, opts, host);
  const entries = new Map<string, { key: MapStateKey; entry: MapStateEntry }>();
  const lanes = { ingress: new Map<number, Set<string>>(), egress: new Map<number, Set<string>>() };
  for (const dir of ['ingress', 'egress'] as const) {
    computeAll(built[dir], (key, entry) => {
      const ks = mapStateKeyString(key);
      entries.set(ks, Object.freeze({ key: Object.freeze(key), entry }));
      let l = lanes[dir].get(key.identity);
      if (!l) lanes[dir].set(key.identity, (l = new Set()));
      l.add(ks);
    });
  }
  const out: Shared = { revision: repo.revision, version: cache.version, npVersion: np.version, built, entries, lanes };
  m.set(sig, out);
  return out;
}

/** Drops the shared resolutions of a repository (benchmarks measure cold computations). */
export function forgetSharedResolutions(repo: Repository): void {
  shared.delete(repo);
}

/** Computes an endpoint's MapState (no subscriptions; the result is the caller's to keep). */
export function resolve(ctx: ResolveContext, ep: EndpointInfo): MapState {
  const s = computeShared(ctx.repository, ep, ctx.options ?? {});
  return { entries: new Map(s.entries), defaultDeny: { ...s.built.defaultDeny } };
}

/**
 * The policy of one endpoint, kept current: `regenerate()` after rule changes, automatic lane
 * updates on identity changes (it subscribes to its selectors in the SelectorCache). Every change
 * produces a MapStateDelta touching only the entries that changed; `onDelta` receives it, and
 * `takeDelta()` returns everything not yet taken.
 */
export class EndpointPolicy implements SelectorUser {
  readonly mapState: MapState = { entries: new Map(), defaultDeny: { ingress: false, egress: false } };
  #ep: EndpointInfo;
  readonly #repo: Repository;
  readonly #cache: SelectorCache;
  readonly #opts: ResolveOptions;
  #onDelta: ((d: MapStateDelta) => void) | undefined;
  #built: Built | undefined;
  #revision = 0;
  #lanes = { ingress: new Map<number, Set<string>>(), egress: new Map<number, Set<string>>() };
  #pending = new Map<string, { key: MapStateKey; entry: MapStateEntry | null }>();
  #pendingDD = false;
  #issues: Issue[] = [];
  #closed = false;

  constructor(ctx: ResolveContext & { onDelta?: (d: MapStateDelta) => void }, ep: EndpointInfo) {
    this.#ep = ep;
    this.#repo = ctx.repository;
    this.#cache = ctx.repository.selectorCache;
    this.#opts = ctx.options ?? {};
    // The first state is the caller's full sync (mapState), not a delta.
    this.regenerate();
    this.takeDelta();
    this.#onDelta = ctx.onDelta;
  }

  get endpoint(): EndpointInfo {
    return this.#ep;
  }

  /** Repository revision this MapState reflects. */
  get revision(): number {
    return this.#revision;
  }

  /** Resolve-time problems (late L7 conflicts, policy-map overflow). */
  get issues(): readonly Issue[] {
    return this.#issues;
  }

  /** Whether this endpoint's policy resolves egress named ports (depends on other pods' ports). */
  get usesNamedPorts(): boolean {
    return this.#built?.usesNamedPorts ?? false;
  }

  get overflow(): boolean {
    return this.mapState.entries.size > (this.#opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
  }

  /** New endpoint facts (labels/identity or own named ports changed): full regeneration. */
  updateEndpoint(ep: EndpointInfo): MapStateDelta {
    this.#ep = ep;
    return this.regenerate();
  }

  /** Recomputes everything from the repository; returns the delta against the previous state. */
  regenerate(): MapStateDelta {
    if (this.#closed) return { upserts: [], deletes: [], defaultDenyChanged: false };
    const sh = computeShared(this.#repo, this.#ep, this.#opts);
    const b = sh.built;
    const old = this.#built;
    for (const s of b.selectors) this.#cache.subscribe(s.key, this);
    if (old) for (const s of old.selectors) if (!b.selectors.has(s)) this.#cache.unsubscribe(s.key, this);
    this.#built = b;
    this.#revision = this.#repo.revision;
    const next = new Map(sh.entries);
    const lanes = { ingress: new Map(sh.lanes.ingress), egress: new Map(sh.lanes.egress) };
    for (const [ks, { key }] of this.mapState.entries) if (!next.has(ks)) this.#stage(ks, key, null);
    for (const [ks, { key, entry }] of next) {
      const have = this.mapState.entries.get(ks);
      if (!have || !entriesEqual(have.entry, entry)) this.#stage(ks, key, entry);
      else next.set(ks, have); // keep the old object: nothing changed
    }
    this.#lanes = lanes;
    const dd = b.defaultDeny;
    if (dd.ingress !== this.mapState.defaultDeny.ingress || dd.egress !== this.mapState.defaultDeny.egress) {
      this.mapState.defaultDeny.ingress = dd.ingress;
      this.mapState.defaultDeny.egress = dd.egress;
      this.#pendingDD = true;
    }
    this.mapState.entries.clear();
    for (const [ks, v] of next) this.mapState.entries.set(ks, v);
    this.#issues = [...b.issues];
    this.#noteOverflow();
    return this.#flush();
  }

  /** SelectorCache callback: recompute only the lanes of identities that changed. */
  selectionsChanged(changes: SelectionChange[]): void {
    if (this.#closed || !this.#built) return;
    const ids = new Set<number>();
    for (const c of changes) {
      for (const x of c.added) ids.add(x);
      for (const x of c.removed) ids.add(x);
    }
    this.#updateLanes(ids);
    this.#flush();
  }

  /** Named ports of some identities changed (egress): recompute their lanes, or everything. */
  namedPortsChanged(identities?: Iterable<number>): MapStateDelta {
    if (!identities) return this.regenerate();
    this.#updateLanes(new Set(identities));
    return this.#flush();
  }

  /** Everything staged and not yet taken (also what onDelta was given). */
  takeDelta(): MapStateDelta {
    const d = this.#delta();
    this.#pending.clear();
    this.#pendingDD = false;
    return d;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#built) for (const s of this.#built.selectors) this.#cache.unsubscribe(s.key, this);
  }

  #updateLanes(ids: Set<number>): void {
    const b = this.#built!;
    for (const dir of ['ingress', 'egress'] as const) {
      const ds = b[dir];
      for (const x of ids) {
        if (x === 0) continue;
        const prev = this.#lanes[dir].get(x) ?? new Set<string>();
        const now = new Set<string>();
        computeLane(ds, x, laneContribs(ds, x), (key, entry) => {
          const ks = mapStateKeyString(key);
          now.add(ks);
          const have = this.mapState.entries.get(ks);
          if (!have || !entriesEqual(have.entry, entry)) {
            this.mapState.entries.set(ks, { key, entry });
            this.#stage(ks, key, entry);
          }
        });
        for (const ks of prev) {
          if (now.has(ks)) continue;
          const have = this.mapState.entries.get(ks);
          if (have) {
            this.mapState.entries.delete(ks);
            this.#stage(ks, have.key, null);
          }
        }
        if (now.size) this.#lanes[dir].set(x, now);
        else this.#lanes[dir].delete(x);
      }
    }
    this.#noteOverflow();
  }

  #noteOverflow(): void {
    this.#issues = this.#issues.filter((i) => i.code !== 'POLICY_MAP_OVERFLOW');
    const max = this.#opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (this.mapState.entries.size > max) {
      this.#issues.push({
        code: 'POLICY_MAP_OVERFLOW', path: [], file: '', line: 0, col: 0,
        message: `endpoint ${this.#ep.id}: policy needs ${this.mapState.entries.size} map entries, more than the policy map holds (${max})`,
        hint: 'select fewer identities (narrower selectors, toEntities instead of many toEndpoints) or raise the policy map size',
      });
    }
  }

  #stage(ks: string, key: MapStateKey, entry: MapStateEntry | null): void {
    this.#pending.set(ks, { key, entry });
  }

  #delta(): MapStateDelta {
    const upserts: MapStateDelta['upserts'] = [];
    const deletes: MapStateKey[] = [];
    for (const [ks, { key, entry }] of this.#pending) {
      if (entry) upserts.push({ key, entry });
      else if (!this.mapState.entries.has(ks)) deletes.push(key);
    }
    return {
      upserts, deletes, defaultDenyChanged: this.#pendingDD,
      ...(this.#pendingDD ? { defaultDeny: { ...this.mapState.defaultDeny } } : {}),
    };
  }

  #flush(): MapStateDelta {
    const d = this.#delta();
    if (this.#onDelta && (d.upserts.length || d.deletes.length || d.defaultDenyChanged)) {
      this.#pending.clear();
      this.#pendingDD = false;
      this.#onDelta(d);
    }
    return d;
  }
}

/** Structural equality of two MapStates (L7 identity sets compared by content). */
export function mapStatesEqual(a: MapState, b: MapState): boolean {
  return diffMapStates(a, b).length === 0;
}

/** Human-readable differences between two MapStates (for tests). */
export function diffMapStates(a: MapState, b: MapState): string[] {
  const out: string[] = [];
  if (a.defaultDeny.ingress !== b.defaultDeny.ingress || a.defaultDeny.egress !== b.defaultDeny.egress) out.push(`defaultDeny ${JSON.stringify(a.defaultDeny)} != ${JSON.stringify(b.defaultDeny)}`);
  for (const [k, { entry }] of a.entries) {
    const o = b.entries.get(k);
    if (!o) { out.push(`only in first: ${k} ${entry.verdict}`); continue; }
    if (!entriesEqual(entry, o.entry) || l7Content(entry.l7) !== l7Content(o.entry.l7)) out.push(`differs: ${k} ${describeEntry(entry)} != ${describeEntry(o.entry)}`);
  }
  for (const k of b.entries.keys()) if (!a.entries.has(k)) out.push(`only in second: ${k}`);
  return out;
}

function l7Content(p: L7Policy | null): string {
  return p ? stableStringify({ ...p, perSelector: p.perSelector.map((e) => ({ ...e, identities: e.identities === 'all' ? 'all' : [...e.identities].sort((x, y) => x - y) })) }) : '';
}

export function describeEntry(e: MapStateEntry): string {
  return `${e.verdict}${e.l7 ? `+l7(${e.l7.parser})` : ''} auth=${e.authType} match=${e.matchType} origins=${e.origins.map((o) => o.name).join(',')}`;
}
