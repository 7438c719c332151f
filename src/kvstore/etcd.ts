/**
 * The etcd kvstore (npm etcd3 over gRPC), as Cilium's agent uses etcd (pkg/kvstore/etcd.go):
 *
 *   session lease (default 15 min, keepalive every TTL/3) ── owns every `lease: true` key; when
 *       it is lost (etcd unreachable for 2 TTLs) a new one is granted and the owned keys re-put
 *   lock lease (25 s) ── owns lock keys `<path>/<lease hex>` (etcd's concurrency.Mutex protocol:
 *       the holder is the key under `<path>/` with the lowest create revision)
 *   follow(prefix) ── paginated list at one revision, then watch from revision+1; a cancelled
 *       watch (compaction) lists again and reports keys gone meanwhile as deletes
 *
 * Conditions map to etcd compares: absent → `version == 0` (Cilium's CreateOnly), revision →
 * `mod_revision ==`, lock → `create_revision(own lock key) ==` the revision it was created at.
 */
import { Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IKeyValue, type IOptions, type Lease, type WatchBuilder } from 'etcd3';
import { MembraneError } from '../common/errors.ts';
import type { BytesWatchEvent, Condition, KVLock, KVLog, KVPair, KVStatus, KVStore, TxnOp } from './types.ts';
import { decodeRangeResponse, encodeRangeRequest, type RangeResult, type RangeVisitor } from './etcd-range.ts';

/** What listRange needs of etcd3's connection pool (its host failover and auth metadata). */
interface RawPool {
  /** etcd3's retry of recoverable errors around every call (kept for the raw ones too) */
  globalPolicy?: { execute<T>(fn: () => Promise<T>): Promise<T> };
  withConnection(service: 'KV', fn: (c: { client: RawClient; metadata: unknown }) => Promise<unknown>): Promise<unknown>;
}
interface RawClient {
  makeUnaryRequest(method: string, serialize: (b: Buffer) => Buffer, deserialize: (b: Buffer) => Buffer, arg: Buffer, metadata: unknown, options: object, cb: (err: Error | null, res?: Buffer) => void): unknown;
}

export interface EtcdStoreOptions {
  /** `http://host:port`, `https://host:port` or `unix:/path` */
  endpoints: string[];
  /** PEM contents; `cert`+`key` are the client certificate (etcd --client-cert-auth) */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** session lease TTL (Cilium's kvstore-lease-ttl; default 900 s) */
  leaseTtlSeconds?: number;
  /** lock lease TTL (Cilium's LockLeaseTTL; default 25 s) */
  lockLeaseTtlSeconds?: number;
  /** how long the first connection may take (default 15 s) */
  connectTimeoutMs?: number;
  /** keys per range read when listing (default 16,384) */
  listPageSize?: number;
  log?: KVLog;
}

// etcd (3.4) counts every key from a page's start to the range end on each paged read, so a
// listing costs pages × keys: 300,000 ipcache keys are 75 pages at 4,096 and 19 at 16,384 (about
// 5 MB of values a page, hence the larger gRPC receive limit below)
const PAGE = 16_384;
const MAX_RECEIVE = 64 * 1024 * 1024;

function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i] = b[i]! + 1;
      return out;
    }
  }
  return Buffer.from([0]);
}

/**
 * etcd away (no answer, or etcd3's circuit breaker still open for a few seconds after an outage)
 * becomes a coded error a caller can wait out; anything else passes as it is.
 */
function unavailable(e: unknown): never {
  if (e instanceof Error && (isRecoverableError(e) || (e as { isBrokenCircuitError?: boolean }).isBrokenCircuitError === true)) {
    throw new MembraneError('KVSTORE_UNAVAILABLE', `etcd is unavailable: ${e.message}`, { hint: 'the agents keep enforcing their last state; retry once `membrane status` shows the kvstore Ok', cause: e });
  }
  throw e;
}

type Watcher = Awaited<ReturnType<ReturnType<Etcd3['watch']>['create']>>;

interface WatchHandlers {
  put?: (kv: IKeyValue) => void;
  delete?: (kv: IKeyValue) => void;
  /** etcd ended the watch after it was created (compacted past its revision, ...) */
  error?: (err: Error, w: Watcher) => void;
}

/**
 * Starts the watch `b` describes (from revision `from`, or from now) with its handlers on before
 * etcd is asked for it; resolves once etcd has created it, rejects if etcd refuses it.
 *
 * etcd3 reconnects a watch whose connection broke from the revision after the last response's
 * header, which is the store's revision when etcd sent it: for a watch still catching up (created
 * from a past revision: a resumed or a just-listed prefix; etcd sends its history 1,000 revisions a
 * response) that is past events it has not delivered yet, and they were lost for good (a test
 * against a real etcd lost 1,500 of 2,500 deletions). Here the revision it goes on from is the
 * one after the last event delivered, as etcd's own Go client does, or after a progress
 * notification's (etcd sends those only to a watch that has caught up). And etcd3's create()
 * attached nothing before the watch was there: events that came with its creation went unheard.
 */
function openWatch(b: WatchBuilder, from: number | undefined, on: WatchHandlers): Promise<Watcher> {
  if (from !== undefined) b.startRevision(String(from));
  const w = b.watcher();
  let next = from;
  // etcd3 sets the request's start revision from each response's header: set back after it
  // (these listeners run after etcd3's own, which the Watcher's constructor added first)
  const pin = () => { if (next !== undefined) w.request.start_revision = String(next); };
  w.on('put', (kv) => { next = Number(kv.mod_revision) + 1; on.put?.(kv); });
  w.on('delete', (kv) => { next = Number(kv.mod_revision) + 1; on.delete?.(kv); });
  w.on('data', (res) => {
    if (!res.events.length) next = Math.max(next ?? 0, Number(res.header.revision) + 1);
    pin();
  });
  return new Promise<Watcher>((resolve, reject) => {
    let created = false;
    w.on('connected', (res) => {
      // a watch from now starts after the revision etcd created it at
      next ??= Number(res.header.revision) + 1;
      pin();
      if (!created) { created = true; resolve(w); }
    });
    w.on('error', (err) => {
      if (!created) { created = true; reject(err); return; }
      on.error?.(err, w);
    });
  });
}

/** what a watch event's key-value carries here */
type WatchedKV = { key: Buffer; value: Buffer; mod_revision: string };
const pair = (kv: WatchedKV): KVPair => ({ key: kv.key.toString(), value: kv.value.toString(), revision: Number(kv.mod_revision) });

export async function openEtcdStore(opts: EtcdStoreOptions): Promise<KVStore> {
  if (!opts.endpoints.length) throw new MembraneError('KVSTORE_CONFIG', 'etcd: no endpoint given', { hint: 'pass --kvstore-endpoint http(s)://host:port' });
  const https = opts.endpoints.some((e) => e.startsWith('https://'));
  if (https && !opts.tls) throw new MembraneError('KVSTORE_CONFIG', 'etcd: an https:// endpoint needs a CA certificate', { hint: 'pass --kvstore-ca (and --kvstore-cert/--kvstore-key for client certificates)' });
  const options: IOptions = {
    hosts: opts.endpoints,
    dialTimeout: opts.connectTimeoutMs ?? 15_000,
    grpcOptions: { 'grpc.max_receive_message_length': MAX_RECEIVE },
    ...(opts.tls ? { credentials: { rootCertificate: opts.tls.ca, ...(opts.tls.key ? { privateKey: opts.tls.key } : {}), ...(opts.tls.cert ? { certChain: opts.tls.cert } : {}) } } : {}),
  };
  const client = new Etcd3(options);
  const log = opts.log;
  const ttl = opts.leaseTtlSeconds ?? 900;
  const lockTtl = opts.lockLeaseTtlSeconds ?? 25;
  let closed = false;

  // The first contact decides: an unreachable etcd is an error now, not a hang later.
  let clusterId: string;
  try {
    clusterId = (await client.maintenance.status({ deadline: Date.now() + (opts.connectTimeoutMs ?? 15_000) })).header.cluster_id;
  } catch (e) {
    client.close();
    throw new MembraneError('KVSTORE_UNREACHABLE', `etcd at ${opts.endpoints.join(', ')} does not answer: ${(e as Error).message}`, { hint: 'is etcd running, and are the endpoint and certificates right?', cause: e });
  }

  /** key → value of every leased key this store wrote and has not deleted */
  const owned = new Map<string, string>();
  let session: { lease: Lease; id: Promise<string> } | undefined;
  let lockSession: { lease: Lease; id: Promise<string> } | undefined;

  function newSession(): { lease: Lease; id: Promise<string> } {
    const lease = client.lease(ttl);
    const s = { lease, id: lease.grant() };
    s.id.catch(() => {}); // `lost` handles it
    lease.on('lost', (err) => {
      if (closed || session !== s) return;
      log?.warn({ subsys: 'kvstore', err: err.message }, 'etcd session lease lost; granting a new one and re-writing owned keys');
      dropSession(s);
      scheduleReown(0);
    });
    return s;
  }
  /** Forgets a session whose lease is gone (its keepalives stop): the next leased write grants a new one. */
  function dropSession(s: { lease: Lease } | undefined): void {
    if (!s || session !== s) return;
    session = undefined;
    s.lease.release();
  }
  async function sessionId(): Promise<string> {
    session ??= newSession();
    return session.id;
  }
  /**
   * One re-own loop at a time, with backoff. Each failed attempt used to schedule another while
   * the new session's own `lost` started one more: during an etcd outage the loops multiplied to
   * hundreds of failing requests a second, and after it a loop holding an expired lease id kept
   * failing forever, starving the agent's event loop (its API stopped answering).
   */
  let reowning = false;
  let reownTimer: NodeJS.Timeout | undefined;
  let reownDelay = 0;
  function scheduleReown(delayMs: number): void {
    if (closed || reowning || reownTimer) return;
    reownTimer = setTimeout(() => { reownTimer = undefined; void reown(); }, delayMs);
    reownTimer.unref();
  }
  async function reown(): Promise<void> {
    reowning = true;
    const s = session;
    let failed: Error | undefined;
    try {
      const id = await sessionId();
      for (const [k, v] of owned) await client.put(k).value(v).lease(id).exec();
      log?.info({ subsys: 'kvstore', keys: owned.size, lease: BigInt(id).toString(16) }, 'owned keys re-written under the new lease');
      reownDelay = 0;
    } catch (e) {
      failed = e as Error;
      // a lease etcd no longer has (expired during the outage, or etcd restarted) is never coming back
      if (e instanceof EtcdLeaseInvalidError) dropSession(session ?? s);
    } finally {
      reowning = false;
    }
    if (failed && !closed) {
      if (reownDelay === 0) log?.warn({ subsys: 'kvstore', err: failed.message }, 'cannot re-write owned keys yet: retrying with backoff');
      reownDelay = Math.min(5000, Math.max(250, reownDelay * 2));
      scheduleReown(reownDelay);
    }
  }
  /** A leased write refused for its lease: the session is gone, whatever the keepalive said. */
  function leaseRefused(e: unknown): void {
    if (e instanceof EtcdLeaseInvalidError && session) {
      log?.warn({ subsys: 'kvstore', err: (e as Error).message }, 'etcd refused the session lease; granting a new one and re-writing owned keys');
      dropSession(session);
      scheduleReown(0);
    }
  }
  /**
   * Every call the store makes to etcd goes through here: etcd away is KVSTORE_UNAVAILABLE (the
   * agent API's 503) whatever the method, and a write etcd refused for the session lease starts
   * a new session (`session`: the calls that write leased keys with it).
   */
  async function call<T>(fn: () => Promise<T>, o?: { session: true }): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (o?.session) leaseRefused(e);
      return unavailable(e);
    }
  }
  async function lockLeaseId(): Promise<string> {
    if (!lockSession) {
      const lease = client.lease(lockTtl);
      const s = { lease, id: lease.grant() };
      s.id.catch(() => {});
      lease.on('lost', () => { if (lockSession === s) lockSession = undefined; });
      lockSession = s;
    }
    return lockSession.id;
  }

  // Builders are thenables that run when awaited: they are made synchronously, never returned
  // from an async function.
  function build(o: TxnOp, leaseId: string | undefined) {
    if (o.op === 'delete') return client.delete().key(o.key);
    const p = client.put(o.key).value(o.value);
    return o.lease ? p.lease(leaseId!) : p;
  }
  async function leaseFor(ops: TxnOp[]): Promise<string | undefined> {
    return ops.some((o) => o.op === 'put' && o.lease) ? sessionId() : undefined;
  }
  function noteOwned(ops: TxnOp[]): void {
    for (const o of ops) {
      if (o.op === 'put' && o.lease) owned.set(o.key, o.value);
      else owned.delete(o.key);
    }
  }

  /** lock → its own key and the create revision it got */
  const lockKeys = new WeakMap<KVLock, { own: string; rev: number }>();
  /** lock path → tail of this process's queue (one lock lease, so one own key per path) */
  const localQueue = new Map<string, Promise<void>>();

  async function waitDeleted(key: Buffer, afterRevision: number): Promise<void> {
    let deleted!: () => void;
    let failed!: (e: Error) => void;
    const gone = new Promise<void>((resolve, reject) => { deleted = resolve; failed = reject; });
    const w = await openWatch(client.watch().key(key), afterRevision + 1, { delete: () => deleted(), error: (e) => failed(e) });
    try {
      await gone;
    } finally {
      await w.cancel().catch(() => {});
    }
  }

  const store: KVStore = {
    backend: 'etcd',
    clusterId,
    async get(key) {
      const r = await call(() => client.kv.range({ key: Buffer.from(key) }));
      const kv = r.kvs[0];
      return kv ? pair(kv) : undefined;
    },
    async list(prefix) {
      return (await listAt(prefix)).pairs;
    },
    async put(key, value, o) {
      const op: TxnOp = { op: 'put', key, value, ...(o?.lease ? { lease: true } : {}) };
      const r = await call(async () => build(op, await leaseFor([op])).exec(), { session: true });
      noteOwned([op]);
      return Number(r.header.revision);
    },
    async delete(key) {
      const r = await call(() => client.delete().key(key).exec());
      owned.delete(key);
      return Number(r.deleted) > 0;
    },
    async txn(ops) {
      const r = await call(async () => {
        const id = await leaseFor(ops);
        const reqs = await Promise.all(ops.map((o) => build(o, id).op()));
        return client.kv.txn({ compare: [], success: reqs, failure: [] });
      }, { session: true });
      noteOwned(ops);
      return Number(r.header.revision);
    },
    async cas(conditions, ops) {
      if (!conditions.length) {
        await store.txn(ops);
        return true;
      }
      const cmp = conditions.map((c): [string, 'Version' | 'Mod' | 'Create', number] => {
        if ('lock' in c) {
          const l = lockKeys.get(c.lock);
          if (!l) throw new MembraneError('KVSTORE_LOCK', `lock ${c.lock.path} is not held by this store`);
          return [l.own, 'Create', l.rev];
        }
        if ('absent' in c) return [c.key, 'Version', 0];
        return [c.key, 'Mod', c.revision];
      });
      let b = client.if(cmp[0]![0], cmp[0]![1], '==', cmp[0]![2]);
      for (const c of cmp.slice(1)) b = b.and(c[0], c[1], '==', c[2]);
      const r = await call(async () => { const id = await leaseFor(ops); return b.then(...ops.map((o) => build(o, id))).commit(); }, { session: true });
      if (r.succeeded) noteOwned(ops);
      return r.succeeded;
    },
    async lock(path) {
      const prev = localQueue.get(path) ?? Promise.resolve();
      let releaseLocal!: () => void;
      const mine = new Promise<void>((r) => { releaseLocal = r; });
      const tail = prev.then(() => mine);
      localQueue.set(path, tail);
      await prev;
      const dropLocal = () => {
        if (localQueue.get(path) === tail) localQueue.delete(path);
        releaseLocal();
      };
      try {
        const leaseId = await call(lockLeaseId);
        const own = `${path}/${BigInt(leaseId).toString(16)}`;
        const r = await call(() => client.if(own, 'Create', '==', 0).then(client.put(own).value('').lease(leaseId)).else(client.get(own)).commit());
        const rev = r.succeeded ? Number(r.header.revision) : Number(r.responses[0]!.response_range!.kvs[0]!.create_revision);
        // Wait for every earlier holder (lower create revision) to go, one at a time.
        for (;;) {
          const older = await call(() => client.kv.range({
            key: Buffer.from(`${path}/`), range_end: prefixEnd(`${path}/`), max_create_revision: rev - 1,
            sort_order: 'Descend', sort_target: 'Create', limit: 1,
          }));
          if (!older.kvs.length) break;
          await call(() => waitDeleted(older.kvs[0]!.key, Number(older.header.revision)));
        }
        const lock: KVLock = {
          path,
          async unlock() {
            if (!lockKeys.has(lock)) return;
            lockKeys.delete(lock);
            try {
              await call(() => client.delete().key(own).exec());
            } finally {
              dropLocal();
            }
          },
        };
        lockKeys.set(lock, { own, rev });
        return lock;
      } catch (e) {
        dropLocal();
        throw e;
      }
    },
    watch(prefix, cb) {
      let stop = false;
      let cancel: (() => void) | undefined;
      void (async () => {
        const w = await call(() => openWatch(client.watch().prefix(prefix), undefined, {
          put: (kv) => { if (!stop) cb({ type: 'put', kv: pair(kv) }); },
          delete: (kv) => { if (!stop) cb({ type: 'delete', key: kv.key.toString(), revision: Number(kv.mod_revision) }); },
          error: (err) => log?.warn({ subsys: 'kvstore', prefix, err: err.message }, 'etcd watch ended'),
        }));
        if (stop) return void w.cancel().catch(() => {});
        cancel = () => void w.cancel().catch(() => {});
      })().catch((e: unknown) => log?.warn({ subsys: 'kvstore', prefix, err: (e as Error).message }, 'etcd watch failed'));
      return () => { stop = true; cancel?.(); };
    },
    follow(prefix, cb, fo) {
      return store.followBytes(prefix, (ev) => cb(ev.type === 'put'
        ? { type: 'put', kv: { key: prefix + ev.rest, value: Buffer.from(ev.value.buffer, ev.value.byteOffset, ev.value.byteLength).toString(), revision: ev.revision } }
        : { type: 'delete', key: prefix + ev.rest, revision: ev.revision }), fo);
    },
    async followBytes(prefix, cb: (ev: BytesWatchEvent) => void, fo) {
      // The keys present, without the prefix (a fresh short string each, not a slice of the full
      // key): a re-list reports the keys gone meanwhile. Unless the caller keeps them (`fo.keys`).
      const own = !fo?.keys;
      let seen = new Set<string>();
      const skip = Buffer.byteLength(prefix);
      const rest = (key: Buffer) => key.toString('utf8', skip);
      const progress = fo?.onProgress;
      let stopped = false;
      let listed = false;
      let watcher: Watcher | undefined;
      /** watches etcd ended (never cancelled by us: etcd3 has dropped them) */
      const ended = new WeakSet<Watcher>();
      /**
       * A resumed watch runs beside the first listing and every event it brings is applied, in
       * revision order: what changed while the caller was away (deletions too, which no listing
       * can name) comes first. The listing gives way to it per key: a key the watch has changed
       * is not listed again (the watch's state is the newer, or it is on its way to the listing's
       * revision and past it). `upTo`: the resumed watch's last revision.
       */
      let listing = false;
      let touched: Set<string> | undefined;
      let skippedForWatch = false;
      let upTo = 0;
      const onEvent = (type: 'put' | 'delete', kv: WatchedKV) => {
        const r = rest(kv.key);
        const e = Number(kv.mod_revision);
        touched?.add(r);
        if (type === 'put') { if (own) seen.add(r); cb({ type: 'put', rest: r, value: kv.value, revision: e }); }
        else { if (own) seen.delete(r); cb({ type: 'delete', rest: r, revision: e }); }
        upTo = e;
        if (!listing) progress?.(e);
      };
      function watch(from: number, resumed: boolean): Promise<Watcher> {
        return call(() => openWatch(client.watch().prefix(prefix), from, {
          put: (kv) => onEvent('put', kv as WatchedKV),
          delete: (kv) => onEvent('delete', kv as WatchedKV),
          error: (err, w) => {
            // etcd cancelled it and etcd3 has dropped it already: a cancel of our own now would
            // name a watch id the stream no longer knows (etcd3 throws on the answer, every other
            // watch on the stream goes down with it)
            ended.add(w);
            if (watcher === w) watcher = undefined;
            if (stopped) return;
            if (resumed && listing) {
              // compacted past the saved revision (or lost) while the first listing runs: that
              // listing alone is followed, and a watch starts from its revision when it ends
              log?.warn({ subsys: 'kvstore', prefix, from, err: err.message }, 'etcd watch from the saved revision lost; following the listing');
              touched = undefined;
              resumeLost = true;
              return;
            }
            // Cancelled by etcd (compacted past our revision): list again, as Cilium does.
            log?.warn({ subsys: 'kvstore', prefix, err: err.message }, 'etcd watch lost; listing again');
            const retry = () => {
              if (stopped) return;
              sync().catch((e: unknown) => {
                log?.warn({ subsys: 'kvstore', prefix, err: (e as Error).message }, 'etcd re-list failed');
                setTimeout(retry, 1000).unref();
              });
            };
            setTimeout(retry, 50).unref();
          },
        })).then((w) => {
          // (ended already, between its creation and here: not kept, as the handler above would have it)
          if (!ended.has(w)) watcher = w;
          return w;
        });
      }
      let resumeLost = false;
      async function sync(resume?: number): Promise<void> {
        // each page goes to `cb` as it arrives: the whole listing is never held at once; keys are
        // remembered only for a re-list (the first listing has nothing to compare with)
        const before = listed ? (own ? seen : new Set(fo!.keys!())) : undefined;
        const now = new Set<string>();
        listing = true;
        skippedForWatch = false;
        try {
          if (resume !== undefined) {
            touched = new Set();
            upTo = resume;
            // created before the listing's first page: what changed while the caller was away comes first
            await watch(resume + 1, true).catch((e: unknown) => {
              // compacted already (etcd refuses the watch at creation): the listing alone
              log?.warn({ subsys: 'kvstore', prefix, from: resume + 1, err: (e as Error).message }, 'cannot watch from the saved revision; following the listing');
              touched = undefined;
              resumeLost = true;
            });
          }
          const revision = await listPages(prefix, (r, buf, start, end, rev) => {
            if (touched?.has(r)) { skippedForWatch = true; return; }
            if (own || before) now.add(r);
            cb({ type: 'put', rest: r, value: buf.subarray(start, end), revision: rev });
          }, (rev) => {
            if (resume !== undefined && rev < resume && !resumeLost) {
              // a revision from another history (etcd restored from a backup): never resumed from
              log?.warn({ subsys: 'kvstore', prefix, resume, revision: rev }, 'saved revision is ahead of etcd; following the listing');
              const w = watcher;
              watcher = undefined;
              void w?.cancel().catch(() => {});
              touched = undefined;
              resumeLost = true;
            }
          });
          // the keys the resumed watch changed meanwhile are as it left them
          if (own && touched) for (const k of touched.keys()) { if (seen.has(k)) now.add(k); else now.delete(k); }
          if (before) for (const k of before) if (!now.has(k)) cb({ type: 'delete', rest: k, revision });
          seen = own ? now : new Set();
          listed = true;
          listing = false;
          touched = undefined;
          if (stopped) return;
          if (resume === undefined || resumeLost) {
            // the listing's revision: the caller prunes what it did not list
            progress?.(revision);
            const again = resumeLost && skippedForWatch;
            resumeLost = false;
            // lost midway, after the listing gave way to it for some keys: those are listed again
            if (again) await sync();
            else await watch(revision + 1, false);
          } else {
            // the resumed watch may not have reached the listing's revision yet: only its own
            // revision is claimed (a deletion it has still to bring is not in the listing either)
            progress?.(upTo);
          }
        } catch (e) {
          // a first listing that fails fails the follow: its resumed watch goes with it
          if (!listed) { const w = watcher; watcher = undefined; await w?.cancel().catch(() => {}); }
          throw e;
        } finally {
          listing = false;
          touched = undefined;
        }
        if (stopped) await watcher?.cancel().catch(() => {});
      }
      await sync(fo?.resume);
      return () => { stopped = true; void watcher?.cancel().catch(() => {}); };
    },
    async status(): Promise<KVStatus> {
      const endpoints: KVStatus['endpoints'] = [];
      for (const url of opts.endpoints) {
        const one = new Etcd3({ ...options, hosts: [url] });
        try {
          const s = await one.maintenance.status({ deadline: Date.now() + 3000 });
          endpoints.push({ url, version: s.version, leader: s.leader === s.header.member_id });
        } catch (e) {
          endpoints.push({ url, error: (e as Error).message });
        } finally {
          one.close();
        }
      }
      const ok = endpoints.filter((e) => !e.error).length;
      // a lease being granted while etcd is away may take as long as the outage: status never waits for it
      const id = session ? await Promise.race([session.id.catch(() => undefined), new Promise<undefined>((r) => { setTimeout(() => r(undefined), 2000).unref(); })]) : undefined;
      const parts = endpoints.map((e) => (e.error ? `${e.url} - ${e.error}` : `${e.url} - ${e.version}${e.leader ? ' (Leader)' : ''}`));
      return {
        backend: 'etcd', connected: ok > 0, endpoints,
        message: `etcd: ${ok}/${endpoints.length} connected, leases=${id ? 1 : 0}, lock leases=${lockSession ? 1 : 0}, lease TTL ${ttl}s: ${parts.join('; ')}`,
        ...(id ? { leaseId: BigInt(id).toString(16) } : {}), leaseTtlSeconds: ttl,
      };
    },
    async close(o) {
      closed = true;
      if (reownTimer) clearTimeout(reownTimer);
      // Revoking removes the owned keys now (a clean stop), instead of one TTL later.
      for (const s of o?.keepLeases ? [lockSession] : [session, lockSession]) {
        if (!s) continue;
        try { await s.id; await s.lease.revoke(); } catch { /* already gone */ }
      }
      for (const s of [session, lockSession]) s?.lease.removeAllListeners();
      client.close();
    },
  };

  const pool = (client as unknown as { pool: RawPool }).pool;
  const identity = (b: Buffer) => b;
  /** One KV.Range call: the response's bytes, read by etcd-range.ts. */
  function rangeRaw(req: Buffer): Promise<Buffer> {
    const range = () => pool.withConnection('KV', ({ client: c, metadata }) => new Promise<Buffer>((resolve, reject) => {
      c.makeUnaryRequest('/etcdserverpb.KV/Range', identity, identity, req, metadata, {}, (err, res) => (err ? reject(err) : resolve(res!)));
    }));
    return call(async () => (pool.globalPolicy ? await pool.globalPolicy.execute(range) : await range()) as Buffer);
  }

  /**
   * Every pair under `prefix` at one revision, read in pages (Cilium's paginatedList), each key
   * handed to `visit` (its text past the prefix, its value, its revision) as its page arrives;
   * returns the revision. No sort option: etcd returns a range in key order anyway, and with one
   * it reads the whole range before applying the limit. Pipelined: a page's last key is read
   * first and the next page asked for before this one is handed on, so etcd reads and sends page
   * n+1 while the agent applies page n (one after the other, a restart's listing of 300,000 keys
   * waited for each in turn).
   */
  async function listPages(prefix: string, visit: RangeVisitor, paged?: (revision: number, lastKey: Buffer | undefined) => void): Promise<number> {
    const rangeEnd = prefixEnd(prefix);
    const first = Buffer.from(prefix);
    const skip = first.length;
    const limit = opts.listPageSize ?? PAGE;
    let revision = 0;
    let next: Promise<Buffer> | undefined = rangeRaw(encodeRangeRequest({ key: first, rangeEnd, limit }));
    while (next) {
      const raw: Buffer = await next;
      const r: RangeResult = decodeRangeResponse(raw, skip, undefined);
      if (!revision) revision = r.revision;
      next = r.more && r.lastKey ? rangeRaw(encodeRangeRequest({ key: Buffer.concat([r.lastKey, Buffer.from([0])]), rangeEnd, limit, revision })) : undefined;
      // a page that fails while this one is applied is reported by the await above, not as unhandled
      next?.catch(() => {});
      decodeRangeResponse(raw, skip, visit);
      paged?.(revision, r.lastKey);
    }
    return revision;
  }
  async function listAt(prefix: string): Promise<{ pairs: KVPair[]; revision: number }> {
    const pairs: KVPair[] = [];
    const revision = await listPages(prefix, (rest, buf, start, end, rev) => { pairs.push({ key: prefix + rest, value: buf.toString('utf8', start, end), revision: rev }); });
    return { pairs, revision };
  }

  return store;
}
