/**
 * The typed resource store on top of the kvstore: what `membrane apply/delete/get` change and
 * what the agent's controllers watch. An apply is all-or-nothing: the objects are checked by the
 * caller (validation, policy import) before `commit` writes them in one transaction.
 */
import type { KVStore } from '../kvstore/types.ts';
import type { Resource } from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import { stableJson } from '../common/stable-json.ts';

const PREFIX = 'membrane/resources/';

export type ApplyAction = 'created' | 'configured' | 'unchanged' | 'deleted' | 'not-found';
export interface ApplyResult {
  kind: string;
  namespace?: string;
  name: string;
  action: ApplyAction;
}

/** The part of a resource that decides "unchanged": everything but where it was loaded from and status. */
function comparable(r: Resource): string {
  const { source: _source, ...rest } = r as Resource & { status?: unknown };
  delete (rest as { status?: unknown }).status;
  return stableJson(rest);
}


export interface ResourceStore {
  list<K extends Resource['kind']>(kind?: K): Promise<Extract<Resource, { kind: K }>[]>;
  get(kind: string, namespace: string | undefined, name: string): Promise<Resource | undefined>;
  /** Works out what applying `rs` would do, without writing. */
  plan(rs: Resource[]): Promise<ApplyResult[]>;
  commit(rs: Resource[]): Promise<ApplyResult[]>;
  planDelete(rs: { kind: string; metadata: { name: string; namespace?: string } }[]): Promise<ApplyResult[]>;
  commitDelete(rs: { kind: string; metadata: { name: string; namespace?: string } }[]): Promise<ApplyResult[]>;
  /** Writes status without counting as a user change. */
  putStatus(r: Resource): Promise<void>;
  watch(cb: (ev: { type: 'put'; resource: Resource } | { type: 'delete'; key: string }) => void): () => void;
  /**
   * Follows the store (list, then watch): from then on reads are served from this agent's copy,
   * as Cilium's agents read their informer caches, so status, reconciles and the proxies'
   * snapshots go on while the kvstore is away. Before `start`, reads go to the kvstore.
   */
  start(): Promise<void>;
  stop(): void;
}

type ResourceEvent = { type: 'put'; resource: Resource } | { type: 'delete'; key: string };

export function createResourceStore(kv: KVStore): ResourceStore {
  const keyOf = (r: { kind: string; metadata: { name: string; namespace?: string } }) => PREFIX + resourceKey(r);
  const result = (r: { kind: string; metadata: { name: string; namespace?: string } }, action: ApplyAction): ApplyResult => ({
    kind: r.kind, name: r.metadata.name, action, ...(r.metadata.namespace ? { namespace: r.metadata.namespace } : {}),
  });

  /**
   * The followed copy: full key → the JSON stored and its revision; a delete leaves its revision
   * (value undefined) so that a write of ours applied after a newer event never brings back what
   * someone else deleted. Reads parse the JSON again: callers may change what they get.
   */
  const copy = new Map<string, { json: string | undefined; revision: number }>();
  let sortedKeys: string[] | undefined;
  let following: (() => void) | undefined;
  const watchers = new Set<(ev: ResourceEvent) => void>();

  /** Takes a change unless the copy holds a newer one for the key. */
  function take(key: string, json: string | undefined, revision: number): void {
    const had = copy.get(key);
    if (had && had.revision > revision) return;
    if ((had?.json === undefined) !== (json === undefined)) sortedKeys = undefined;
    copy.set(key, { json, revision });
  }
  function keysUnder(prefix: string): string[] {
    sortedKeys ??= [...copy.entries()].filter(([, v]) => v.json !== undefined).map(([k]) => k).sort();
    return prefix === PREFIX ? sortedKeys : sortedKeys.filter((k) => k.startsWith(prefix));
  }
  async function read(key: string): Promise<Resource | undefined> {
    if (following) {
      const v = copy.get(key)?.json;
      return v === undefined ? undefined : (JSON.parse(v) as Resource);
    }
    const p = await kv.get(key);
    return p ? (JSON.parse(p.value) as Resource) : undefined;
  }

  const store: ResourceStore = {
    async list(kind) {
      const prefix = PREFIX + (kind ? `${kind}/` : '');
      if (following) return keysUnder(prefix).map((k) => JSON.parse(copy.get(k)!.json!)) as never;
      return (await kv.list(prefix)).map((p) => JSON.parse(p.value)) as never;
    },
    async get(kind, namespace, name) {
      return read(`${PREFIX}${kind}/${namespace ?? ''}/${name}`);
    },
    async plan(rs) {
      const out: ApplyResult[] = [];
      const seen = new Map<string, Resource>();
      for (const r of rs) {
        const k = keyOf(r);
        const prior = seen.get(k) ?? (await read(k));
        if (prior) keepServerDefaults(prior, r);
        out.push(result(r, !prior ? 'created' : comparable(prior) === comparable(r) ? 'unchanged' : 'configured'));
        seen.set(k, r);
      }
      return out;
    },
    async commit(rs) {
      const planned = await store.plan(rs);
      const ops = rs
        .map((r, i) => ({ r, action: planned[i]!.action }))
        .filter((x) => x.action !== 'unchanged')
        .map((x) => ({ op: 'put' as const, key: keyOf(x.r), value: JSON.stringify(x.r) }));
      if (ops.length) {
        const rev = await kv.txn(ops);
        // read-your-writes: the next read sees this even before the watch brings it back
        for (const o of ops) take(o.key, o.value, rev);
      }
      return planned;
    },
    async planDelete(rs) {
      const out: ApplyResult[] = [];
      for (const r of rs) out.push(result(r, (await read(keyOf(r))) ? 'deleted' : 'not-found'));
      return out;
    },
    async commitDelete(rs) {
      const planned = await store.planDelete(rs);
      const ops = rs.filter((_, i) => planned[i]!.action === 'deleted').map((r) => ({ op: 'delete' as const, key: keyOf(r) }));
      if (ops.length) {
        const rev = await kv.txn(ops);
        for (const o of ops) take(o.key, undefined, rev);
      }
      return planned;
    },
    async putStatus(r) {
      const json = JSON.stringify(r);
      const rev = await kv.put(keyOf(r), json);
      take(keyOf(r), json, rev);
    },
    watch(cb) {
      if (following) {
        watchers.add(cb);
        return () => { watchers.delete(cb); };
      }
      return kv.watch(PREFIX, (ev) => {
        if (ev.type === 'put') cb({ type: 'put', resource: JSON.parse(ev.kv.value) as Resource });
        else cb({ type: 'delete', key: ev.key.slice(PREFIX.length) });
      });
    },
    async start() {
      if (following) return;
      let listed = false;
      const stop = await kv.follow(PREFIX, (ev) => {
        if (ev.type === 'put') take(ev.kv.key, ev.kv.value, ev.kv.revision);
        else take(ev.key, undefined, ev.revision);
        // the copy first: a watcher that reads sees the change it is told of
        if (!listed || !watchers.size) return;
        const out: ResourceEvent = ev.type === 'put' ? { type: 'put', resource: JSON.parse(ev.kv.value) as Resource } : { type: 'delete', key: ev.key.slice(PREFIX.length) };
        for (const w of watchers) w(out);
      });
      listed = true;
      following = stop;
    },
    stop() {
      following?.();
      following = undefined;
      watchers.clear();
    },
  };
  return store;
}

/**
 * Fields the cluster fills in and a manifest usually leaves out survive a re-apply, as in
 * Kubernetes: an allocated Service clusterIP is immutable, so applying the same file again is a
 * no-op rather than a reallocation.
 */
function keepServerDefaults(prior: Resource, next: Resource): void {
  if (prior.kind === 'Service' && next.kind === 'Service' && !next.spec.clusterIP && prior.spec.clusterIP) {
    next.spec.clusterIP = prior.spec.clusterIP;
  }
}
