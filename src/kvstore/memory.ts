import { readFile, writeFile, rename, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { KVPair, KVStore, WatchEvent } from './types.ts';

/**
 * In-memory kvstore. With `file`, every change is persisted (write to a temp file, then rename,
 * so a crash never leaves a torn snapshot) and reloaded on open: the lab agent keeps its state
 * across restarts.
 */
export async function openMemoryStore(opts: { file?: string } = {}): Promise<KVStore> {
  const data = new Map<string, KVPair>();
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
  let persisting: Promise<void> = Promise.resolve();
  let dirty = false;

  function persist(): Promise<void> {
    if (!opts.file) return Promise.resolve();
    dirty = true;
    const file = opts.file;
    persisting = persisting.then(async () => {
      if (!dirty) return;
      dirty = false;
      await mkdir(dirname(file), { recursive: true });
      const tmp = `${file}.tmp`;
      await writeFile(tmp, JSON.stringify({ revision, pairs: [...data.values()] }));
      await rename(tmp, file);
    });
    return persisting;
  }

  function notify(ev: WatchEvent): void {
    const key = ev.type === 'put' ? ev.kv.key : ev.key;
    for (const w of watchers) if (key.startsWith(w.prefix)) w.cb(ev);
  }

  const store: KVStore = {
    async get(key) {
      return data.get(key);
    },
    async list(prefix) {
      const out: KVPair[] = [];
      for (const [k, v] of data) if (k.startsWith(prefix)) out.push(v);
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    },
    async put(key, value) {
      return store.txn([{ op: 'put', key, value }]);
    },
    async delete(key) {
      if (!data.has(key)) return false;
      await store.txn([{ op: 'delete', key }]);
      return true;
    },
    async txn(ops) {
      revision++;
      const events: WatchEvent[] = [];
      for (const o of ops) {
        if (o.op === 'put') {
          const kv = { key: o.key, value: o.value, revision };
          data.set(o.key, kv);
          events.push({ type: 'put', kv });
        } else if (data.delete(o.key)) {
          events.push({ type: 'delete', key: o.key, revision });
        }
      }
      await persist();
      for (const ev of events) notify(ev);
      return revision;
    },
    watch(prefix, cb) {
      const w = { prefix, cb };
      watchers.add(w);
      return () => watchers.delete(w);
    },
    async close() {
      watchers.clear();
      await persisting;
    },
  };
  return store;
}
