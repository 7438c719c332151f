import { readFile } from 'node:fs/promises';
import type { Condition, KVLock, KVPair, KVStore, TxnOp, WatchEvent } from './types.ts';
import { writeFileAtomic } from '../common/atomic-file.ts';

/**
 * In-memory kvstore. With `file`, every change is persisted (write to a temp file, then rename,
 * so a crash never leaves a torn snapshot) and reloaded on open: the lab agent keeps its state
 * across restarts. Leased keys are never persisted: like an etcd lease, they end with their owner.
 */
export async function openMemoryStore(opts: { file?: string } = {}): Promise<KVStore> {
  const data = new Map<string, KVPair>();
  const leased = new Set<string>();
  let revision = 0;
  if (opts.file) {
    try {
      const snap = JSON.parse(await readFile(opts.file, 'utf8')) as { revision: number; pairs: KVPair[] };
      revision = snap.revision;
      for (const p of snap.pairs) data.set(p.key, p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  const watchers = new Set<{ prefix: string; cb: (ev: WatchEvent) => void }>();
  /** lock path → the tail of its queue */
  const locks = new Map<string, Promise<void>>();
  const held = new Set<KVLock>();
  let persisting: Promise<void> = Promise.resolve();
  let dirty = false;

  function persist(): Promise<void> {
    if (!opts.file) return Promise.resolve();
    dirty = true;
    const file = opts.file;
    persisting = persisting.then(async () => {
      if (!dirty) return;
      dirty = false;
      await writeFileAtomic(file, JSON.stringify({ revision, pairs: [...data.values()].filter((p) => !leased.has(p.key)) }), { mkdir: true });
    });
    return persisting;
  }

  function notify(ev: WatchEvent): void {
    const key = ev.type === 'put' ? ev.kv.key : ev.key;
    for (const w of watchers) if (key.startsWith(w.prefix)) w.cb(ev);
  }

  function sortedList(prefix: string): KVPair[] {
    const out: KVPair[] = [];
    for (const [k, v] of data) if (k.startsWith(prefix)) out.push(v);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  function holds(c: Condition): boolean {
    if ('lock' in c) return held.has(c.lock);
    if ('absent' in c) return !data.has(c.key);
    return data.get(c.key)?.revision === c.revision;
  }

  async function apply(ops: TxnOp[]): Promise<number> {
    revision++;
    const events: WatchEvent[] = [];
    for (const o of ops) {
      if (o.op === 'put') {
        const kv = { key: o.key, value: o.value, revision };
        data.set(o.key, kv);
        if (o.lease) leased.add(o.key);
        else leased.delete(o.key);
        events.push({ type: 'put', kv });
      } else if (data.delete(o.key)) {
        leased.delete(o.key);
        events.push({ type: 'delete', key: o.key, revision });
      }
    }
    await persist();
    for (const ev of events) notify(ev);
    return revision;
  }

  const store: KVStore = {
    backend: 'memory',
    async get(key) {
      return data.get(key);
    },
    async list(prefix) {
      return sortedList(prefix);
    },
    async put(key, value, o) {
      return apply([{ op: 'put', key, value, ...(o?.lease ? { lease: true } : {}) }]);
    },
    async delete(key) {
      if (!data.has(key)) return false;
      await apply([{ op: 'delete', key }]);
      return true;
    },
    async txn(ops) {
      return apply(ops);
    },
    async cas(conditions, ops) {
      // Checked and applied in one synchronous step: no other call interleaves.
      if (!conditions.every(holds)) return false;
      await apply(ops);
      return true;
    },
    async lock(path) {
      const prev = locks.get(path) ?? Promise.resolve();
      let release!: () => void;
      const mine = new Promise<void>((r) => { release = r; });
      const tail = prev.then(() => mine);
      locks.set(path, tail);
      await prev;
      const lock: KVLock = {
        path,
        async unlock() {
          if (!held.delete(lock)) return;
          if (locks.get(path) === tail) locks.delete(path);
          release();
        },
      };
      held.add(lock);
      return lock;
    },
    watch(prefix, cb) {
      const w = { prefix, cb };
      watchers.add(w);
      return () => watchers.delete(w);
    },
    followBytes(prefix, cb) {
      const skip = prefix.length;
      return store.follow(prefix, (ev) => cb(ev.type === 'put'
        ? { type: 'put', rest: ev.kv.key.slice(skip), value: Buffer.from(ev.kv.value), revision: ev.kv.revision }
        : { type: 'delete', rest: ev.key.slice(skip), revision: ev.revision }));
    },
    async follow(prefix, cb) {
      // List and subscribe in the same synchronous step: no change can fall between them.
      const w = { prefix, cb };
      const now = sortedList(prefix);
      watchers.add(w);
      for (const kv of now) cb({ type: 'put', kv });
      return () => watchers.delete(w);
    },
    async status() {
      return { backend: 'memory', connected: true, message: `memory: ${data.size} keys${opts.file ? ` (${opts.file})` : ''}`, endpoints: [] };
    },
    async close() {
      watchers.clear();
      await persisting;
    },
  };
  return store;
}
