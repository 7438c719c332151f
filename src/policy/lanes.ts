/**
 * Lanes: the rules that select one endpoint → the MapState entries of each remote identity.
 *
 *   lane — the MapState keys of one remote identity; lane 0 holds wildcard-peer keys
 *
 * For key K in lane X the entry folds every contribution that matches X (its selector selects
 * X, or is the wildcard) and covers K (contributions.ts): any deny ⇒ deny (this is how "no allow
 * under a covering deny in the same lane" holds); else allow, authType = the strongest explicit
 * mode, L7Policy = L7Policy(K) (l7-policy.ts). Because the datapath takes the longer of the
 * lane-X and lane-0 matches, a lane-0 key can decide for X; where X's own broader contributions
 * would change the result (authentication) a lane-X copy of that key is added ("refinement").
 * With that, lookupMapState(resolve()) equals the reference decide() for every (identity, proto,
 * port) — the property tests check it.
 *
 * An identity change touches only its own lane: lane 0 and L7Policy(K) do not depend on which
 * identities exist, so EndpointPolicy recomputes one lane (computeLane) per changed identity.
 */
import type { Issue } from '../common/errors.ts';
import type { PolicyEntry, TranslatedRule } from './rules.ts';
import type { Repository } from './repository.ts';
import { HOST_PEER } from './selectors.ts';
import type { CachedSelector, SelectorCache } from './selectorcache.ts';
import type { Direction, L7Policy, MapStateEntry, MapStateKey } from './types.ts';
import { ALLOW_LOCALHOST_ORIGIN, NO_NAMED_PORTS, type EndpointInfo, type NamedPortProvider, type ResolveOptions } from './resolve-options.ts';
import {
  EMPTY_FOLD, blockKey, classify, covers, fold, sortedOrigins, spec, type Block, type Contrib, type Fold,
} from './contributions.ts';
import { buildL7Policy } from './l7-policy.ts';

export class DirState {
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

export interface Built {
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

export function build(rules: readonly TranslatedRule[], repo: Repository, cache: SelectorCache, ep: EndpointInfo, opts: ResolveOptions, hostSel: CachedSelector | undefined): Built {
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

export type Emit = (key: MapStateKey, entry: MapStateEntry) => void;

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
export function computeLane(ds: DirState, x: number, cs: readonly Contrib[], emit: Emit): void {
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

export function laneContribs(ds: DirState, x: number): Contrib[] {
  const out: Contrib[] = [];
  for (const [sel, cs] of ds.bySel) if (sel.selections.has(x)) for (const c of cs) out.push(c);
  return out;
}

export function computeAll(ds: DirState, emit: Emit): void {
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

export function hostSelectorOf(cache: SelectorCache): CachedSelector {
  // The repository registers it for good; a cache built without one gets it here.
  return cache.get(HOST_PEER.key) ?? cache.add(HOST_PEER);
}
