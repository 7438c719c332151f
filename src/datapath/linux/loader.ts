/**
 * Loads bpf/endpoint.bpf.c (dist/bpf/endpoint.bpf.o) with its maps pinned under the node's pin
 * root, and hands out its maps and programs. Every other part reaches the kernel objects through
 * this loader, so "not started" is one error in one place.
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { MembraneError } from '../../common/errors.ts';
import { type BpfObject, type BpfMap, type BpfProgram, removePins } from '../../sys/bpf.ts';
import { loadObjectMigrating, pinsAreOf, type PinMigration } from './pins.ts';

export const DEFAULT_OBJECT_PATH = fileURLToPath(new URL('../../../dist/bpf/endpoint.bpf.o', import.meta.url));

export const MAP_NAMES = [
  'mb_endpoints', 'mb_ep_ids', 'mb_ipcache', 'mb_ipcache_host', 'mb_policy', 'mb_ct_tables', 'mb_config', 'mb_ev_buckets', 'mb_events', 'mb_lost',
  'mb_stats', 'mb_proxy_socks', 'mb_lb4_services', 'mb_lb4_backends', 'mb_lb4_reverse_nat', 'mb_lb6_services',
  'mb_lb6_backends', 'mb_lb6_reverse_nat', 'mb_devices', 'mb_node_macs', 'mb_lb_vips',
] as const;
export type MapName = (typeof MAP_NAMES)[number];

export const PROGRAM_NAMES = ['from_container', 'to_container', 'from_network', 'from_overlay', 'to_overlay'] as const;
export type ProgramName = (typeof PROGRAM_NAMES)[number];

/** The directory of the node's pinned tcx links. */
export function linkPinDir(pinRoot: string): string {
  return join(pinRoot, 'links');
}

/** Where the tcx link of `ifname` in direction `dir` is pinned (the link outlives the agent). */
export function linkPinPath(pinRoot: string, ifname: string, dir: 'ingress' | 'egress'): string {
  return join(linkPinDir(pinRoot), `${ifname}-${dir}`);
}

/** Removes every pinned link (detaching the programs) and pinned map under pinRoot (`membrane down`). */
export function destroy(pinRoot: string): void {
  removePins(pinRoot);
}

function notStarted(): MembraneError {
  return new MembraneError('DATAPATH_NOT_STARTED', 'datapath is not started', { hint: 'call start() first' });
}

export class Loader {
  private obj: BpfObject | null = null;
  private maps: Partial<Record<MapName, BpfMap>> = {};
  private programs: Partial<Record<ProgramName, BpfProgram>> = {};

  get loaded(): boolean {
    return this.obj !== null;
  }

  /**
   * `preloaded`: the object loaded ahead against the same pins (a standby agent's). Pinned maps of
   * another build's definition are replaced (pins.ts); returns which, and how.
   */
  load(objectPath: string, pinRoot: string, preloaded?: BpfObject): PinMigration[] {
    // an object loaded ahead is used only while the pins are still its maps (none replaced since)
    const usable = preloaded && pinsAreOf(objectPath, pinRoot, (name) => preloaded.map(name));
    if (preloaded && !usable) preloaded.close();
    const { obj, migrated } = usable ? { obj: preloaded, migrated: [] } : loadObjectMigrating(objectPath, pinRoot);
    this.obj = obj;
    for (const m of MAP_NAMES) this.maps[m] = obj.map(m);
    for (const p of PROGRAM_NAMES) this.programs[p] = obj.program(p);
    return migrated;
  }

  /** Closes the object; its links and maps stay pinned, so enforcement continues. */
  close(): void {
    this.obj?.close();
    this.obj = null;
    this.maps = {};
    this.programs = {};
  }

  map(n: MapName): BpfMap {
    const m = this.maps[n];
    if (!m) throw notStarted();
    return m;
  }

  program(n: ProgramName): BpfProgram {
    const p = this.programs[n];
    if (!p) throw notStarted();
    return p;
  }
}
