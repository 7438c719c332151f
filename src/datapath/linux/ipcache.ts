/**
 * The ipcache (mb_ipcache): prefix -> security identity (and local endpoint id), longest prefix wins;
 * its host entries (/32, /128: pods, nodes) also in mb_ipcache_host, the exact-address hash the
 * datapath looks up first (bpf/lib/maps.h). The trie is written first and the hash second, and a
 * delete goes to the hash first: the hash never holds what the trie does not.
 */
import type { IPCacheEntry } from '../types.ts';
import { IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE, decodeIpcacheKey, decodeIpcacheVal, encodeIpcacheKey, encodeIpcacheKeyInto, encodeIpcacheValInto } from './codec.ts';
import { identityScope } from '../../identity/identity.ts';

/** entries per BPF_MAP_UPDATE_BATCH call (4,096 remote endpoints: 144 KiB of keys and values) */
const BATCH = 4096;
import type { Loader } from './loader.ts';

/** key bytes of an IPv4 /32: prefixlen (static 32 + 32) LE at 0, family 4 at 4 */
const V4_HOST_LEN = 64;
/** an IPv6 /128's prefixlen (static 32 + 128) */
const V6_HOST_LEN = 160;

/** Whether the key at `k` of `keys` is a full-length prefix (an entry of mb_ipcache_host too). */
const isHostKey = (keys: Buffer, k: number): boolean => {
  const len = keys.readUInt32LE(k);
  return (len === V4_HOST_LEN && keys[k + 4] === 4) || (len === V6_HOST_LEN && keys[k + 4] === 6);
};

export class IPCacheMap {
  private readonly loader: Loader;
  /**
   * After an agent restart, what the pinned map held for IPv4 /32 keys (address as int32 → slot of
   * `#kernelVals`: identity, endpoint id, tunnel endpoint), read once in batches before the first
   * write. An upsert of what the kernel already holds is not written again (300,000 remote entries
   * after a restart are mostly unchanged: no LPM trie update for them). Dropped at the first
   * prefixes() call (the agent's prune after its resync) or once drained; only ever saves writes.
   */
  #kernel: Map<number, number> | undefined;
  #kernelVals = new Uint32Array(0);
  #kernelRead = false;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  #readKernel(): void {
    this.#kernelRead = true;
    const map = new Map<number, number>();
    let vals = new Uint32Array(3 * 1024);
    this.loader.map('mb_ipcache').forEachBatch(BATCH, (keys, v, count) => {
      for (let i = 0; i < count; i++) {
        const k = i * IPCACHE_KEY_SIZE;
        if (keys.readUInt32LE(k) !== V4_HOST_LEN || keys[k + 4] !== 4) continue;
        const slot = map.size;
        if (3 * slot + 3 > vals.length) { const g = new Uint32Array(vals.length * 2); g.set(vals); vals = g; }
        const o = i * IPCACHE_VAL_SIZE;
        vals[3 * slot] = v.readUInt32LE(o);
        vals[3 * slot + 1] = v.readUInt16LE(o + 4);
        vals[3 * slot + 2] = v.readUInt32BE(o + 8);
        map.set(keys.readInt32BE(k + 8), slot);
      }
    });
    if (map.size) { this.#kernel = map; this.#kernelVals = vals; }
    // The previous agent may have stopped between a changed entry's trie write and its hash
    // write: an IPv4 host entry the hash holds with another value than the trie (or without the
    // trie's entry) goes, since #unchanged compares with the trie and would leave it. IPv6 ones
    // are always written again (and pruned from both maps when nothing claims them).
    const host = this.loader.map('mb_ipcache_host');
    const stale: Buffer[] = [];
    host.forEachBatch(BATCH, (keys, v, count) => {
      for (let i = 0; i < count; i++) {
        const k = i * IPCACHE_KEY_SIZE;
        if (keys.readUInt32LE(k) !== V4_HOST_LEN || keys[k + 4] !== 4) continue;
        const slot = map.get(keys.readInt32BE(k + 8));
        const o = i * IPCACHE_VAL_SIZE;
        if (slot !== undefined && vals[3 * slot] === v.readUInt32LE(o) && vals[3 * slot + 1] === v.readUInt16LE(o + 4) && vals[3 * slot + 2] === v.readUInt32BE(o + 8)) continue;
        stale.push(Buffer.from(keys.subarray(k, k + IPCACHE_KEY_SIZE)));
      }
    });
    for (const k of stale) host.delete(k);
  }

  /**
   * Whether the kernel holds exactly the entry encoded at `k`/`o` of `keys`/`vals` (then it is not
   * written); either way the address is no longer the previous agent's alone.
   */
  #unchanged(keys: Buffer, k: number, vals: Buffer, o: number): boolean {
    const kernel = this.#kernel!;
    if (keys.readUInt32LE(k) !== V4_HOST_LEN || keys[k + 4] !== 4) return false;
    const addr = keys.readInt32BE(k + 8);
    const slot = kernel.get(addr);
    if (slot === undefined) return false;
    kernel.delete(addr);
    if (!kernel.size) this.#kernel = undefined;
    const kv = this.#kernelVals;
    return kv[3 * slot] === vals.readUInt32LE(o) && kv[3 * slot + 1] === vals.readUInt16LE(o + 4) && kv[3 * slot + 2] === vals.readUInt32BE(o + 8);
  }

  /** Stops comparing writes with what the previous agent left (its memory is freed). */
  #dropKernel(): void {
    this.#kernelRead = true;
    this.#kernel = undefined;
    this.#kernelVals = new Uint32Array(0);
  }

  /**
   * In batches (one syscall per BATCH entries, keys and values packed in two buffers): 300,000
   * remote endpoints after an agent restart are not 300,000 syscalls and 600,000 small Buffers.
   * Returns how many entries were written (those the kernel held already are not).
   */
  upsert(entries: IPCacheEntry[]): number {
    if (!entries.length) return 0;
    if (!this.#kernelRead) this.#readKernel();
    const m = this.loader.map('mb_ipcache');
    const host = this.loader.map('mb_ipcache_host');
    const n = Math.min(entries.length, BATCH);
    const keys = Buffer.alloc(n * IPCACHE_KEY_SIZE);
    const vals = Buffer.alloc(n * IPCACHE_VAL_SIZE);
    const hkeys = Buffer.alloc(n * IPCACHE_KEY_SIZE);
    const hvals = Buffer.alloc(n * IPCACHE_VAL_SIZE);
    let written = 0;
    for (let at = 0; at < entries.length; at += BATCH) {
      const count = Math.min(BATCH, entries.length - at);
      let j = 0;
      for (let i = 0; i < count; i++) {
        const e = entries[at + i]!;
        encodeIpcacheKeyInto(keys, j * IPCACHE_KEY_SIZE, e.prefix);
        encodeIpcacheValInto(vals, j * IPCACHE_VAL_SIZE, e.identity, e.endpointId ?? 0, e.tunnelEndpoint);
        if (this.#kernel && this.#unchanged(keys, j * IPCACHE_KEY_SIZE, vals, j * IPCACHE_VAL_SIZE)) continue;
        j++;
      }
      if (!j) continue;
      m.updateBatch(keys, vals, j);
      let h = 0;
      for (let i = 0; i < j; i++) {
        if (!isHostKey(keys, i * IPCACHE_KEY_SIZE)) continue;
        keys.copy(hkeys, h * IPCACHE_KEY_SIZE, i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE);
        vals.copy(hvals, h * IPCACHE_VAL_SIZE, i * IPCACHE_VAL_SIZE, (i + 1) * IPCACHE_VAL_SIZE);
        h++;
      }
      if (h) host.updateBatch(hkeys, hvals, h);
      written += j;
    }
    return written;
  }

  /** Returns how many prefixes were there. */
  delete(prefixes: string[]): number {
    const m = this.loader.map('mb_ipcache');
    const host = this.loader.map('mb_ipcache_host');
    let n = 0;
    for (const p of prefixes) {
      const key = encodeIpcacheKey(p);
      if (isHostKey(key, 0)) host.delete(key);
      if (this.#kernel && key.readUInt32LE(0) === V4_HOST_LEN && key[4] === 4) {
        this.#kernel.delete(key.readInt32BE(8));
        if (!this.#kernel.size) this.#kernel = undefined;
      }
      if (m.delete(key)) n++;
    }
    return n;
  }

  /**
   * The prefixes alone, read in batches (BPF_MAP_LOOKUP_BATCH): a restart with 300,000 entries
   * was 600,000 syscalls one key at a time. The agent asks once its resync is complete (to prune
   * what nothing claims): from then on every write goes to the kernel as it comes.
   */
  prefixes(): string[] {
    this.#dropKernel();
    const out: string[] = [];
    this.loader.map('mb_ipcache').forEachBatch(BATCH, (keys, _vals, count) => {
      for (let i = 0; i < count; i++) out.push(decodeIpcacheKey(keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE)));
    });
    return out;
  }

  /**
   * The entries whose identity is node-local (CIDR, FQDN: 1 << 24 and up), in batches; the others
   * are skipped by their value's number, never made objects (a restart with 300,000 remote pods has
   * a few local ones). What a restarted agent holds its local identities by (daemon.ts).
   */
  localEntries(): { prefix: string; identity: number }[] {
    const out: { prefix: string; identity: number }[] = [];
    this.loader.map('mb_ipcache').forEachBatch(BATCH, (keys, vals, count) => {
      for (let i = 0; i < count; i++) {
        const identity = vals.readUInt32LE(i * IPCACHE_VAL_SIZE);
        if (identityScope(identity) !== 'local') continue;
        out.push({ prefix: decodeIpcacheKey(keys.subarray(i * IPCACHE_KEY_SIZE, (i + 1) * IPCACHE_KEY_SIZE)), identity });
      }
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
