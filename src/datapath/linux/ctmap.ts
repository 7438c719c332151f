/**
 * Conntrack: an array of tables (mb_ct_tables), two per endpoint (ctOwnIndex / ctExtIndex), each
 * an LRU hash the agent creates and the kernel frees when its slot is cleared.
 */
import { join } from 'node:path';
import { BpfMap, MapType } from '../../sys/bpf.ts';
import {
  CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES, ctExtIndex, ctKeyEndpoint, ctOwnIndex, decodeCt, decodeU32, encodeU32, type CtEntry,
} from './codec.ts';
import type { Loader } from './loader.ts';

/**
 * Opens the conntrack table in slot `index` of a node's pinned table array (ctOwnIndex /
 * ctExtIndex); undefined when the slot is empty. The caller closes it.
 */
export function openCtTable(pinRoot: string, index: number): BpfMap | undefined {
  const outer = BpfMap.fromPin(join(pinRoot, 'mb_ct_tables'));
  try {
    return ctTableOf(outer, index);
  } finally {
    outer.close();
  }
}

function ctTableOf(outer: BpfMap, index: number): BpfMap | undefined {
  const v = outer.lookup(encodeU32(index));
  if (!v) return undefined;
  try {
    return BpfMap.fromId(decodeU32(v), `ct table ${index}`);
  } catch {
    return undefined; // freed between the lookup and the open
  }
}

function decodeTable(t: BpfMap, pred: (e: CtEntry) => boolean): CtEntry[] {
  const out: CtEntry[] = [];
  for (const k of t.keys()) {
    const v = t.lookup(k);
    if (!v) continue;
    const e = decodeCt(k, v);
    if (pred(e)) out.push(e);
  }
  return out;
}

export class CtMap {
  private readonly loader: Loader;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  /** Creates the endpoint's two conntrack tables if absent (or of another layout). */
  ensureTables(id: number): void {
    const outer = this.loader.map('mb_ct_tables');
    for (const [idx, kind] of [[ctOwnIndex(id), 'o'], [ctExtIndex(id), 'x']] as const) {
      const cur = ctTableOf(outer, idx);
      if (cur) {
        const ok = cur.info.type === MapType.LRU_HASH && cur.info.keySize === CT_KEY_SIZE && cur.info.valueSize === CT_VAL_SIZE &&
          cur.info.maxEntries === CT_TABLE_ENTRIES;
        cur.close();
        if (ok) continue;
      }
      const t = BpfMap.create(MapType.LRU_HASH, `mb_ct_${id}${kind}`, CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES);
      try {
        outer.update(encodeU32(idx), encodeU32(t.fd));
      } finally {
        t.close(); // the array holds the table now
      }
    }
  }

  /**
   * The endpoint's tables go (the kernel frees them); its entries in other endpoints' tables
   * (connections it received from them) are removed so a reused id starts clean.
   */
  removeTables(id: number, otherIds: number[]): void {
    const outer = this.loader.map('mb_ct_tables');
    outer.delete(encodeU32(ctOwnIndex(id)));
    outer.delete(encodeU32(ctExtIndex(id)));
    for (const other of otherIds) {
      if (other === id) continue;
      const t = ctTableOf(outer, ctOwnIndex(other));
      if (!t) continue;
      try {
        const stale: Buffer[] = [];
        for (const k of t.keys()) if (ctKeyEndpoint(k) === id) stale.push(k);
        t.deleteMany(stale);
      } finally {
        t.close();
      }
    }
  }

  /** Entries of one table (ctOwnIndex / ctExtIndex). */
  table(index: number): CtEntry[] {
    const t = ctTableOf(this.loader.map('mb_ct_tables'), index);
    if (!t) return [];
    try {
      return decodeTable(t, () => true);
    } finally {
      t.close();
    }
  }

  /** Entries of the endpoints' tables that `pred` keeps. */
  entries(endpointIds: number[], pred: (e: CtEntry) => boolean): CtEntry[] {
    const out: CtEntry[] = [];
    this.eachTable(endpointIds, (t) => { out.push(...decodeTable(t, pred)); });
    return out;
  }

  /** Number of entries in the endpoints' tables. */
  count(endpointIds: number[]): number {
    let n = 0;
    this.eachTable(endpointIds, (t) => { for (const _ of t.keys()) n++; });
    return n;
  }

  private eachTable(endpointIds: number[], fn: (t: BpfMap) => void): void {
    const outer = this.loader.map('mb_ct_tables');
    for (const id of endpointIds) {
      for (const idx of [ctOwnIndex(id), ctExtIndex(id)]) {
        const t = ctTableOf(outer, idx);
        if (!t) continue;
        try {
          fn(t);
        } finally {
          t.close();
        }
      }
    }
  }
}
