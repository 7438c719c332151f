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
}

export function createResourceStore(kv: KVStore): ResourceStore {
  const keyOf = (r: { kind: string; metadata: { name: string; namespace?: string } }) => PREFIX + resourceKey(r);
  const result = (r: { kind: string; metadata: { name: string; namespace?: string } }, action: ApplyAction): ApplyResult => ({
    kind: r.kind, name: r.metadata.name, action, ...(r.metadata.namespace ? { namespace: r.metadata.namespace } : {}),
  });

  const store: ResourceStore = {
    async list(kind) {
      const prefix = PREFIX + (kind ? `${kind}/` : '');
      return (await kv.list(prefix)).map((p) => JSON.parse(p.value)) as never;
    },
    async get(kind, namespace, name) {
      const p = await kv.get(`${PREFIX}${kind}/${namespace ?? ''}/${name}`);
      return p ? (JSON.parse(p.value) as Resource) : undefined;
    },
    async plan(rs) {
      const out: ApplyResult[] = [];
      const seen = new Map<string, Resource>();
      for (const r of rs) {
        const k = keyOf(r);
        const prior = seen.get(k) ?? (await kv.get(k).then((p) => (p ? (JSON.parse(p.value) as Resource) : undefined)));
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
      if (ops.length) await kv.txn(ops);
      return planned;
    },
    async planDelete(rs) {
      const out: ApplyResult[] = [];
      for (const r of rs) out.push(result(r, (await kv.get(keyOf(r))) ? 'deleted' : 'not-found'));
      return out;
    },
    async commitDelete(rs) {
      const planned = await store.planDelete(rs);
      const ops = rs.filter((_, i) => planned[i]!.action === 'deleted').map((r) => ({ op: 'delete' as const, key: keyOf(r) }));
      if (ops.length) await kv.txn(ops);
      return planned;
    },
    async putStatus(r) {
      await kv.put(keyOf(r), JSON.stringify(r));
    },
    watch(cb) {
      return kv.watch(PREFIX, (ev) => {
        if (ev.type === 'put') cb({ type: 'put', resource: JSON.parse(ev.kv.value) as Resource });
        else cb({ type: 'delete', key: ev.key.slice(PREFIX.length) });
      });
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
  if (prior.kind === 'Service' && next.kind === 'Service' && !next.spec.clusterIP && !next.spec.clusterIPs && prior.spec.clusterIP) {
    next.spec.clusterIP = prior.spec.clusterIP;
    // the families' addresses too, as long as the new manifest asks for the same families
    const fams = next.spec.ipFamilies, policy = next.spec.ipFamilyPolicy ?? 'SingleStack';
    if (prior.spec.clusterIPs && (prior.spec.ipFamilyPolicy ?? 'SingleStack') === policy && (!fams || JSON.stringify(fams) === JSON.stringify(prior.spec.ipFamilies))) {
      next.spec.clusterIPs = prior.spec.clusterIPs;
      if (prior.spec.ipFamilies) next.spec.ipFamilies = prior.spec.ipFamilies;
      next.spec.ipFamilyPolicy = policy;
    }
  }
}
