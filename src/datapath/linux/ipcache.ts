/** The ipcache (mb_ipcache): prefix -> security identity (and local endpoint id), longest prefix wins. */
import type { IPCacheEntry } from '../types.ts';
import { IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE, decodeIpcacheKey, decodeIpcacheVal, encodeIpcacheKey, encodeIpcacheKeyInto, encodeIpcacheValInto } from './codec.ts';

/** entries per BPF_MAP_UPDATE_BATCH call (4,096 remote endpoints: 144 KiB of keys and values) */
const BATCH = 4096;
import type { Loader } from './loader.ts';

export class IPCacheMap {
  private readonly loader: Loader;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  /**
   * In batches (one syscall per BATCH entries, keys and values packed in two buffers): 300,000
   * remote endpoints after an agent restart are not 300,000 syscalls and 600,000 small Buffers.
   */
  upsert(entries: IPCacheEntry[]): void {
    const m = this.loader.map('mb_ipcache');
    const n = Math.min(entries.length, BATCH);
    const keys = Buffer.alloc(n * IPCACHE_KEY_SIZE);
    const vals = Buffer.alloc(n * IPCACHE_VAL_SIZE);
    for (let at = 0; at < entries.length; at += BATCH) {
      const count = Math.min(BATCH, entries.length - at);
      for (let i = 0; i < count; i++) {
        const e = entries[at + i]!;
        encodeIpcacheKeyInto(keys, i * IPCACHE_KEY_SIZE, e.prefix);
        encodeIpcacheValInto(vals, i * IPCACHE_VAL_SIZE, e.identity, e.endpointId ?? 0, e.tunnelEndpoint);
      }
      m.updateBatch(keys, vals, count);
    }
  }

  /** Returns how many prefixes were there. */
  delete(prefixes: string[]): number {
    const m = this.loader.map('mb_ipcache');
    let n = 0;
    for (const p of prefixes) if (m.delete(encodeIpcacheKey(p))) n++;
    return n;
  }

  /**
   * The prefixes alone, read in batches (BPF_MAP_LOOKUP_BATCH): a restart with 300,000 entries
   * was 600,000 syscalls one key at a time.
   */
  prefixes(): string[] {
    const out: string[] = [];
    this.loader.map('mb_ipcache').forEachBatch(BATCH, (keys, _vals, count) => {
      for (let i = 0; i < count; i++) out.push(decodeIpcacheKey(keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE)));
    });
    return out;
  }

  /**
   * Every entry, in batches. A value is the kernel's lookup of the key (an LPM trie answers with
   * the longest match of the key's address, as a single lookup did before).
   */
  dump(): IPCacheEntry[] {
    const m = this.loader.map('mb_ipcache');
    const out: IPCacheEntry[] = [];
    m.forEachBatch(BATCH, (keys, vals, count) => {
      for (let i = 0; i < count; i++) {
        const k = keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE);
        const d = decodeIpcacheVal(vals.subarray(i * IPCACHE_VAL_SIZE, (i + 1) * IPCACHE_VAL_SIZE));
        out.push({ prefix: decodeIpcacheKey(k), identity: d.identity, ...(d.endpointId ? { endpointId: d.endpointId } : {}), ...(d.tunnelEndpoint ? { tunnelEndpoint: d.tunnelEndpoint } : {}) });
      }
    });
    return out;
  }
}
