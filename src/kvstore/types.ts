/**
 * The kvstore: where agents share cluster state (resources, identities, endpoints). One interface,
 * two backends: memory (the lab's single node, persisted to a file so an agent restart keeps its
 * state) and etcd (many nodes; later). Keys follow Cilium's layout where one exists
 * (`cilium/state/identities/v1/...`); membrane's own objects live under `membrane/`.
 */
export interface KVPair {
  key: string;
  value: string;
  /** Monotonic per-store revision of the last change to this key. */
  revision: number;
}

export type WatchEvent = { type: 'put'; kv: KVPair } | { type: 'delete'; key: string; revision: number };

export interface KVStore {
  get(key: string): Promise<KVPair | undefined>;
  list(prefix: string): Promise<KVPair[]>;
  /** Writes a value; returns the new revision. */
  put(key: string, value: string): Promise<number>;
  /** Applies several writes and deletes atomically (all or nothing). */
  txn(ops: ({ op: 'put'; key: string; value: string } | { op: 'delete'; key: string })[]): Promise<number>;
  delete(key: string): Promise<boolean>;
  /** Calls `cb` for every change under `prefix` after the call; returns an unsubscribe. */
  watch(prefix: string, cb: (ev: WatchEvent) => void): () => void;
  close(): Promise<void>;
}
