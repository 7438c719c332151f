/** The ipcache (mb_ipcache): prefix -> security identity (and local endpoint id), longest prefix wins. */
import type { IPCacheEntry } from '../types.ts';
import { decodeIpcacheKey, decodeIpcacheVal, encodeIpcacheKey, encodeIpcacheVal } from './codec.ts';
import type { Loader } from './loader.ts';

export class IPCacheMap {
  private readonly loader: Loader;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  upsert(entries: IPCacheEntry[]): void {
    const m = this.loader.map('mb_ipcache');
    for (const e of entries) m.update(encodeIpcacheKey(e.prefix), encodeIpcacheVal(e.identity, e.endpointId ?? 0));
  }

  /** Returns how many prefixes were there. */
  delete(prefixes: string[]): number {
    const m = this.loader.map('mb_ipcache');
    let n = 0;
    for (const p of prefixes) if (m.delete(encodeIpcacheKey(p))) n++;
    return n;
  }

  dump(): IPCacheEntry[] {
    const m = this.loader.map('mb_ipcache');
    const out: IPCacheEntry[] = [];
    for (const k of m.keys()) {
      const v = m.lookup(k);
      if (v) {
        const d = decodeIpcacheVal(v);
        out.push({ prefix: decodeIpcacheKey(k), identity: d.identity, ...(d.endpointId ? { endpointId: d.endpointId } : {}) });
      }
    }
    return out;
  }
}
