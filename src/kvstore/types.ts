/**
 * The kvstore: where agents share cluster state (resources, identities, endpoints). One interface,
 * two backends: memory (the lab's single node, persisted to a file so an agent restart keeps its
 * state) and etcd (many nodes, `etcd.ts`). Keys follow Cilium's layout where one exists
 * (`cilium/state/identities/v1/...`); membrane's own objects live under `membrane/`.
 *
 * Leases: a write with `lease: true` is owned by this store's session (Cilium's per-agent lease):
 * it disappears when the owner is gone (etcd: the lease expires one TTL after the last keepalive;
 * memory: it is never persisted, so it does not outlive the process).
 */
export interface KVPair {
  key: string;
  value: string;
  /** Monotonic per-store revision of the last change to this key (etcd's mod_revision). */
  revision: number;
}

export type WatchEvent = { type: 'put'; kv: KVPair } | { type: 'delete'; key: string; revision: number };

/** A WatchEvent with the key past the followed prefix and the value as bytes. */
export type BytesWatchEvent = { type: 'put'; rest: string; value: Buffer; revision: number } | { type: 'delete'; rest: string; revision: number };

export type TxnOp = { op: 'put'; key: string; value: string; lease?: boolean } | { op: 'delete'; key: string };

/** A held distributed lock (etcd's concurrency mutex protocol); a Condition can require it is still held. */
export interface KVLock {
  readonly path: string;
  unlock(): Promise<void>;
}

/** Guards of a conditional transaction (etcd Txn `If`). */
export type Condition =
  /** the key does not exist (etcd `version == 0`, as Cilium's CreateOnly) */
  | { key: string; absent: true }
  /** the key exists and was last changed at this revision */
  | { key: string; revision: number }
  /** this store still holds the lock */
  | { lock: KVLock };

export interface KVStatus {
  backend: 'memory' | 'etcd';
  connected: boolean;
  /** one line in Cilium's `KVStore:` status style */
  message: string;
  endpoints: { url: string; version?: string; leader?: boolean; error?: string }[];
  leaseId?: string;
  leaseTtlSeconds?: number;
}

/** How followBytes starts and what it reports besides the events. */
export interface FollowOptions {
  keys?: () => Iterable<string>;
  /**
   * Resume from this revision (one a caller saved from `onProgress` of the same store's cluster):
   * a watch from `resume + 1` delivers what changed since, from the start, beside the listing
   * (which still comes whole: the safety net). Per key the newer of the two wins. A revision etcd
   * has compacted away is logged and the listing alone is followed (the caller prunes what it
   * does not list). The memory store ignores it (it lists in one synchronous step).
   */
  resume?: number;
  /**
   * Called with a revision once every change under the prefix up to it has been delivered to
   * `cb` (after the listing: its revision; then each watch event's). A caller that applied them
   * all may save it as the next `resume`.
   */
  onProgress?: (revision: number) => void;
}

export interface KVStore {
  readonly backend: 'memory' | 'etcd';
  /**
   * The etcd cluster's id (a saved revision means nothing in another etcd's history); undefined
   * for the memory store.
   */
  readonly clusterId?: string;
  get(key: string): Promise<KVPair | undefined>;
  list(prefix: string): Promise<KVPair[]>;
  /** Writes a value; returns the new revision. */
  put(key: string, value: string, opts?: { lease?: boolean }): Promise<number>;
  /** Applies several writes and deletes atomically (all or nothing). */
  txn(ops: TxnOp[]): Promise<number>;
  /** Applies `ops` only if every condition holds; returns whether it did. */
  cas(conditions: Condition[], ops: TxnOp[]): Promise<boolean>;
  delete(key: string): Promise<boolean>;
  /** Takes the lock at `path` (waits for earlier holders, cluster-wide). */
  lock(path: string): Promise<KVLock>;
  /** Calls `cb` for every change under `prefix` after the call; returns an unsubscribe. */
  watch(prefix: string, cb: (ev: WatchEvent) => void): () => void;
  /**
   * Lists `prefix` and then follows it from the list's revision, with no gap (Cilium's
   * list-then-watch): `cb` first gets a put for every existing key, then every change. After a
   * lost watch (compaction, reconnect) the prefix is listed again: keys gone meanwhile come as
   * deletes. Resolves once the first listing is delivered.
   *
   * `opts.keys`: the keys (without the prefix) the caller holds now; a re-list reports as deleted
   * those of them it does not find. Without it the store remembers every key itself (300,000
   * ipcache keys at 10,000 nodes: a second copy of every address as a string and a Set entry).
   */
  follow(prefix: string, cb: (ev: WatchEvent) => void, opts?: { keys?: () => Iterable<string> }): Promise<() => void>;
  /**
   * follow() for bulk prefixes: each key without the prefix, each value as bytes (a view valid
   * during the call only: a reader decodes what it keeps, no value text per key is made).
   */
  followBytes(prefix: string, cb: (ev: BytesWatchEvent) => void, opts?: FollowOptions): Promise<() => void>;
  status(): Promise<KVStatus>;
  /**
   * Closes the store. By default the session lease is revoked (its keys go now); `keepLeases`
   * leaves them to expire one TTL later unless a restarted owner writes them again (an agent
   * restart must not blank its endpoints out of the other nodes).
   */
  close(opts?: { keepLeases?: boolean }): Promise<void>;
}

/** What the backends log (a pino logger fits). */
export interface KVLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}
