/**
 * A pinned map of another build (an upgrade over running pods): libbpf refuses to reuse a pin
 * whose definition differs from the object's (type, key and value size, entries, flags), so before
 * the load each such pin is set aside (renamed `<name>:old`), the load creates and pins the new
 * map, and what can be carried over is copied from the old map into the new one; then the old pin
 * goes. The programs still attached keep the old maps until their links take the new programs
 * (an endpoint's upsert, a device's attach), so enforcement does not stop in between. A load that
 * fails puts the old pins back (as Cilium's map migration rolls back its pending pins).
 *
 * What is carried over, per map (Cilium recreates such maps too; "expect map data loss"):
 * - same key and value layout (only flags or size changed): every entry is copied, the conntrack
 *   array's tables by reference (connections keep their state);
 * - another layout: the new map starts empty. The maps the agent writes from its own store
 *   (endpoints, ipcache, policy, services, devices, node MACs, config) are written again by the
 *   agent's first reconcile; for the others `LOST` says what their loss costs.
 */
import { existsSync, renameSync, rmSync } from 'node:fs';
import { BpfMap, BpfObject, MapType, objectPinnedMaps, sameDef, type MapDef, type PinnedMapDef } from '../../sys/bpf.ts';
import { encodeU32 } from './codec.ts';

/** What starting a map of another layout empty costs, for the maps the agent cannot write again. */
const LOST: Record<string, string> = {
  mb_ct_tables: 'conntrack: every connection is decided by policy again at its next packet; service connections choose a backend again and lose reverse NAT (those to a service with several backends may break), proxied connections lose their redirect',
  mb_ev_buckets: 'event budgets start full again',
  mb_events: 'events not yet read are lost',
  mb_lost: 'the lost-event count starts from zero',
  mb_stats: 'datapath counters start from zero',
  mb_proxy_socks: 'L7 redirects fail until the proxies register their listeners again (they do at their start)',
};

/** How one pinned map of another definition was replaced. */
export interface PinMigration {
  name: string;
  /** the pinned and the object's definitions, as `type/key/value/entries/flags` */
  from: string;
  to: string;
  /** copied: its entries carried over (`entries` of them); empty: another layout */
  kept: 'copied' | 'empty';
  entries: number;
  /** for an empty map the agent does not write again: what that costs */
  cost?: string;
}

const ASIDE = ':old';
const show = (d: MapDef): string => `${d.type}/${d.keySize}/${d.valueSize}/${d.maxEntries}/0x${d.flags.toString(16)}`;

/**
 * Loads a datapath object over the node's pins with the migration: the main object (loader.ts) and
 * those loaded beside it (src/agent/encryption.ts: encrypt.bpf.o, wireguard.bpf.o, which share
 * its pinned maps), so an object loaded first over an older build's pins does not fail its load.
 */
export function loadObjectMigrating(objectPath: string, pinRoot: string): { obj: BpfObject; migrated: PinMigration[] } {
  return loadMigrating(objectPath, pinRoot, () => BpfObject.load(objectPath, pinRoot), (o, name) => o.map(name));
}

/** Each replaced map said once (a warning), with what it costs. */
export function logMigrations(log: { warn(obj: unknown, msg?: string): void }, subsys: string, migrated: readonly PinMigration[]): void {
  for (const m of migrated) {
    log.warn({ subsys, map: m.name, from: m.from, to: m.to, kept: m.kept, entries: m.entries, ...(m.cost ? { cost: m.cost } : {}) },
      m.kept === 'copied' ? 'pinned map of another definition replaced, its entries copied' : 'pinned map of another layout replaced by an empty one');
  }
}

/**
 * Whether the pinned map-in-map `outer` takes tables of the object's inner template: the kernel
 * checks an inserted table against the template the outer was created with (type, key and value
 * size, flags), which no map info shows; so a table is inserted into an empty slot and removed
 * (or, if the slot is taken, the table there is compared).
 */
function innerFits(outer: BpfMap, inner: MapDef): boolean {
  if (outer.info.type !== MapType.ARRAY_OF_MAPS || outer.info.maxEntries === 0) return true;
  const slot = encodeU32(outer.info.maxEntries - 1);
  const cur = outer.lookup(slot);
  if (cur) return tableFits(cur.readUInt32LE(0), inner) === true;
  const probe = BpfMap.create(inner.type, 'mb_probe', inner.keySize, inner.valueSize, inner.maxEntries, { flags: inner.flags });
  try {
    outer.update(slot, encodeU32(probe.fd));
  } catch {
    return false;
  } finally {
    probe.close();
  }
  outer.delete(slot);
  return true;
}

/** A pin set aside before the load: the old map, open, and the object's definition of it. */
interface Aside { def: PinnedMapDef; old: BpfMap }

/**
 * Loads with migration: `load()` runs with every incompatible pin of `objectPath` under pinRoot
 * set aside; after it succeeds the old maps' content is copied into the new ones (`mapOf` opens a
 * map of the loaded object by name) and the old pins are removed. Returns the object and what was
 * replaced.
 */
export function loadMigrating<T>(objectPath: string, pinRoot: string, load: () => T, mapOf: (obj: T, name: string) => BpfMap): { obj: T; migrated: PinMigration[] } {
  const defs = objectPinnedMaps(objectPath, pinRoot);
  // a migration that stopped half-way (a crash): an old pin whose new map is missing goes back,
  // one whose new map is there has been copied already
  for (const d of defs) {
    if (!existsSync(d.pinPath + ASIDE)) continue;
    if (existsSync(d.pinPath)) rmSync(d.pinPath + ASIDE, { force: true });
    else renameSync(d.pinPath + ASIDE, d.pinPath);
  }
  const aside: Aside[] = [];
  try {
    for (const a of incompatible(defs)) {
      aside.push(a);
      renameSync(a.def.pinPath, a.def.pinPath + ASIDE);
    }
  } catch (e) {
    putBack(aside);
    throw e;
  }
  let obj: T;
  try {
    obj = load();
  } catch (e) {
    putBack(aside);
    throw e;
  }
  const migrated: PinMigration[] = [];
  for (const { def, old } of aside) {
    const fresh = mapOf(obj, def.name);
    const layout = old.info.type === def.type && old.info.keySize === def.keySize && old.info.valueSize === def.valueSize &&
      (!def.inner || innerFitsInfo(old, def.inner));
    let entries = 0;
    try {
      if (layout) entries = copyEntries(old, fresh);
    } finally {
      old.close();
      rmSync(def.pinPath + ASIDE, { force: true });
    }
    const copied = layout && canCopy(def.type);
    migrated.push({
      name: def.name, from: show(old.info), to: show(def), kept: copied ? 'copied' : 'empty', entries,
      ...(!copied && LOST[def.name] ? { cost: LOST[def.name] } : {}),
    });
  }
  return { obj, migrated };
}

/** The pins of `defs` whose map the object's definition does not fit, opened (the caller closes them). */
function incompatible(defs: PinnedMapDef[]): Aside[] {
  const out: Aside[] = [];
  try {
    for (const d of defs) {
      if (!existsSync(d.pinPath)) continue;
      const old = BpfMap.fromPin(d.pinPath);
      const fits = sameDef(old.info, d) && (!d.inner || innerFits(old, d.inner));
      if (fits) old.close();
      else out.push({ def: d, old });
    }
  } catch (e) {
    for (const a of out) a.old.close();
    throw e;
  }
  return out;
}

/**
 * Whether every pinned map of `objectPath` under pinRoot is the one `mapOf` names (an object
 * loaded ahead still uses the pins: none was replaced or removed since).
 */
export function pinsAreOf(objectPath: string, pinRoot: string, mapOf: (name: string) => BpfMap): boolean {
  for (const d of objectPinnedMaps(objectPath, pinRoot)) {
    if (!existsSync(d.pinPath)) return false;
    const pinned = BpfMap.fromPin(d.pinPath);
    try {
      if (pinned.info.id !== mapOf(d.name).info.id) return false;
    } finally {
      pinned.close();
    }
  }
  return true;
}

/** The names of the pinned maps under pinRoot that `objectPath` defines otherwise (a load migrates them). */
export function pinsToMigrate(objectPath: string, pinRoot: string): string[] {
  return incompatible(objectPinnedMaps(objectPath, pinRoot)).map((a) => { a.old.close(); return a.def.name; });
}

function putBack(aside: Aside[]): void {
  for (const { def, old } of aside) {
    old.close();
    if (existsSync(def.pinPath + ASIDE)) {
      rmSync(def.pinPath, { force: true });
      renameSync(def.pinPath + ASIDE, def.pinPath);
    }
  }
}

/** Maps whose entries a program of user space can read back and write into another map. */
const canCopy = (type: number): boolean => type !== MapType.RINGBUF && type !== MapType.SOCKMAP;

/** Whether the tables in a map-in-map are of the inner template (read, not probed: the old map is aside). */
function innerFitsInfo(outer: BpfMap, inner: MapDef): boolean {
  for (const k of outer.keys()) {
    const v = outer.lookup(k);
    const fits = v ? tableFits(v.readUInt32LE(0), inner) : undefined;
    if (fits !== undefined) return fits;
  }
  return false;
}

/**
 * Whether table `id` (of a map-in-map) is of the template the kernel checks an inserted table
 * against (type, key and value size, flags); undefined when it is gone.
 */
function tableFits(id: number, inner: MapDef): boolean | undefined {
  let t: BpfMap;
  try {
    t = BpfMap.fromId(id);
  } catch {
    return undefined;
  }
  try {
    const i = t.info;
    return i.type === inner.type && i.keySize === inner.keySize && i.valueSize === inner.valueSize && i.flags === inner.flags;
  } finally {
    t.close();
  }
}

/**
 * Copies every entry of `from` into `to` (same key and value layout); a map-in-map's tables by
 * reference. Stops at a full map (a smaller new size). Returns how many were copied.
 */
function copyEntries(from: BpfMap, to: BpfMap): number {
  if (!canCopy(from.info.type)) return 0;
  let n = 0;
  if (from.info.type === MapType.ARRAY_OF_MAPS || from.info.type === MapType.HASH_OF_MAPS) {
    for (const k of from.keys()) {
      const v = from.lookup(k);
      if (!v) continue;
      let t: BpfMap;
      try {
        t = BpfMap.fromId(v.readUInt32LE(0));
      } catch {
        continue; // freed meanwhile
      }
      try {
        to.update(k, encodeU32(t.fd));
        n++;
      } finally {
        t.close();
      }
    }
    return n;
  }
  for (const k of from.keys()) {
    const v = from.lookup(k);
    if (!v) continue;
    try {
      to.update(k, v);
    } catch {
      break; // full
    }
    n++;
  }
  return n;
}
