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

  /** The prefixes alone (keys, no value lookups: a restart with 300,000 entries reads half as much). */
  prefixes(): string[] {
    const out: string[] = [];
    for (const k of this.loader.map('mb_ipcache').keys()) out.push(decodeIpcacheKey(k));
    return out;
  }

  dump(): IPCacheEntry[] {
    const m = this.loader.map('mb_ipcache');
    const out: IPCacheEntry[] = [];
    for (const k of m.keys()) {
      const v = m.lookup(k);
      if (v) {
        const d = decodeIpcacheVal(v);
        out.push({ prefix: decodeIpcacheKey(k), identity: d.identity, ...(d.endpointId ? { endpointId: d.endpointId } : {}), ...(d.tunnelEndpoint ? { tunnelEndpoint: d.tunnelEndpoint } : {}) });
      }
    }
    return out;
  }
}
