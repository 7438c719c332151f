/**
 * Socket-less ClusterIP load balancing (mb_lb4_services, mb_lb4_backends, mb_lb4_reverse_nat and
 * their lb6 twins for IPv6 frontends): per frontend a master slot 0 (backend count, reverse-NAT
 * id) and slots 1..n (backend ids); backends are shared between frontends of their family and
 * counted by reference. A frontend's backends are of its own family (Kubernetes' EndpointSlices
 * are per family too); reverse-NAT ids are one space across both families.
 */
import { MembraneError } from '../../common/errors.ts';
import { serviceKeyString, type DatapathService, type DatapathServiceKey, type ServiceProto } from '../types.ts';
import {
  decodeLb4Backend, decodeLb4Key, decodeLb4Service, decodeLb6Backend, decodeLb6Key, decodeU32, encodeLb4Backend, encodeLb4Key, encodeLb4RevNat,
  encodeLb4Service, encodeLb6Backend, encodeLb6Key, encodeLb6RevNat, encodeLbVipFilter, encodeU32, protoName, setLbVipBit, protoNumber,
} from './codec.ts';
import type { Loader, MapName } from './loader.ts';

type Family = 4 | 6;
interface ServiceState { ip: string; port: number; proto: ServiceProto; revNat: number; backendIds: number[] }
interface BackendState { id: number; refs: number; ip: string; port: number; fam: Family }

/** One family's maps and encodings. */
interface LbFamily {
  services: MapName;
  backends: MapName;
  reverseNat: MapName;
  key(ip: string, port: number, proto: number, slot: number): Buffer;
  decodeKey(b: Buffer): { ip: string; port: number; proto: number; slot: number };
  backend(ip: string, port: number, proto: number): Buffer;
  decodeBackend(b: Buffer): { ip: string; port: number; proto: number };
  revNat(ip: string, port: number): Buffer;
}
const FAMILIES: Record<Family, LbFamily> = {
  4: {
    services: 'mb_lb4_services', backends: 'mb_lb4_backends', reverseNat: 'mb_lb4_reverse_nat',
    key: encodeLb4Key, decodeKey: decodeLb4Key, backend: encodeLb4Backend, decodeBackend: decodeLb4Backend, revNat: encodeLb4RevNat,
  },
  6: {
    services: 'mb_lb6_services', backends: 'mb_lb6_backends', reverseNat: 'mb_lb6_reverse_nat',
    key: encodeLb6Key, decodeKey: decodeLb6Key, backend: encodeLb6Backend, decodeBackend: decodeLb6Backend, revNat: encodeLb6RevNat,
  },
};

function familyOf(ip: string): Family {
  return ip.includes(':') ? 6 : 4;
}

/** Backends are shared by address, port and protocol number. */
function backendKey(ip: string, port: number, proto: number): string {
  return `${ip}:${port}/${proto}`;
}

export class LbMap {
  private readonly loader: Loader;
  /** frontends by serviceKeyString (ip:port/PROTO) */
  private readonly services = new Map<string, ServiceState>();
  /** backends by backendKey */
  private readonly backends = new Map<string, BackendState>();
  /** mb_lb_vips' value as last written here (undefined: not written since reset) */
  private vipFilter: Buffer | undefined;

  constructor(loader: Loader) {
    this.loader = loader;
  }

  /** Forgets the bookkeeping (rebuilt by load() at the next start). */
  reset(): void {
    this.services.clear();
    this.backends.clear();
    this.vipFilter = undefined;
  }

  /** Creates or replaces a frontend; the number of backends written, null when nothing changed. */
  upsert(svc: DatapathService): number | null {
    const proto = protoNumber(svc.proto);
    const key = serviceKeyString(svc);
    const st = this.services.get(key);
    const seen = new Set<string>();
    const list = svc.backends.filter((b) => {
      const k = `${b.ip}:${b.port}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    if (list.length > 65535) throw new MembraneError('DATAPATH_SERVICE_TOO_BIG', `service ${key}: ${list.length} backends (max 65535)`);
    const fam = familyOf(svc.ip);
    const f = FAMILIES[fam];
    // every address encoded before anything is written: a bad one changes nothing
    f.key(svc.ip, svc.port, proto, 0);
    for (const b of list) {
      if (familyOf(b.ip) !== fam) throw new MembraneError('DATAPATH_SERVICE_FAMILY', `service ${key}: backend ${b.ip} is not of the frontend's family (IPv${fam})`, { hint: 'an IPv4 frontend takes IPv4 backends, an IPv6 one IPv6 backends' });
      f.backend(b.ip, b.port, proto);
    }
    if (st) {
      const same = st.backendIds.length === list.length && list.every((b, i) => this.backends.get(backendKey(b.ip, b.port, proto))?.id === st.backendIds[i]);
      if (same) return null;
    }
    // the frontend's bit in the address filter before the frontend: no packet to it skips the lookup
    if (!st) this.addVipBit(svc.ip);
    const svcMap = this.loader.map(f.services);
    const revNat = st?.revNat ?? this.allocRevNat();
    // backends first, then slots, then the master entry (a packet never sees a slot without its backend)
    const ids = list.map((b) => this.acquireBackend(fam, b.ip, b.port, proto));
    this.loader.map(f.reverseNat).update(encodeU32(revNat), f.revNat(svc.ip, svc.port));
    ids.forEach((id, i) => svcMap.update(f.key(svc.ip, svc.port, proto, i + 1), encodeLb4Service(id, 0, 0)));
    svcMap.update(f.key(svc.ip, svc.port, proto, 0), encodeLb4Service(0, ids.length, revNat));
    const old = st?.backendIds ?? [];
    for (let i = ids.length; i < old.length; i++) svcMap.delete(f.key(svc.ip, svc.port, proto, i + 1));
    for (const id of old) this.releaseBackend(fam, id);
    this.services.set(key, { ip: svc.ip, port: svc.port, proto: svc.proto, revNat, backendIds: ids });
    return ids.length;
  }

  delete(k: DatapathServiceKey): void {
    const proto = protoNumber(k.proto);
    const key = serviceKeyString(k);
    const st = this.services.get(key);
    if (!st) return;
    const fam = familyOf(k.ip);
    const f = FAMILIES[fam];
    const svcMap = this.loader.map(f.services);
    svcMap.delete(f.key(k.ip, k.port, proto, 0));
    st.backendIds.forEach((_id, i) => svcMap.delete(f.key(k.ip, k.port, proto, i + 1)));
    this.loader.map(f.reverseNat).delete(encodeU32(st.revNat));
    for (const id of st.backendIds) this.releaseBackend(fam, id);
    this.services.delete(key);
    // the filter from the frontends left, once this one is gone from the maps
    this.writeVipFilter();
  }

  /**
   * mb_lb_vips from the frontends the bookkeeping holds (bpf/lib/maps.h): a pod's packet to an
   * address whose bit is clear skips the frontend lookup, so a bit is set before its frontend is
   * written and cleared only after the last frontend on it is gone. `adding`: a frontend about to
   * be written.
   */
  private writeVipFilter(adding?: string): void {
    const ips = [...this.services.values()].map((s) => s.ip);
    if (adding) ips.push(adding);
    const b = encodeLbVipFilter(ips);
    this.loader.map('mb_lb_vips').update(encodeU32(0), b);
    this.vipFilter = b;
  }

  /** `ip`'s bit set in mb_lb_vips, written only when it was clear (a new frontend walks nothing). */
  private addVipBit(ip: string): void {
    if (!this.vipFilter) return this.writeVipFilter(ip);
    const b = Buffer.from(this.vipFilter);
    if (!setLbVipBit(b, ip)) return;
    this.loader.map('mb_lb_vips').update(encodeU32(0), b);
    this.vipFilter = b;
  }

  /** How many frontends the maps hold. */
  count(): number {
    return this.services.size;
  }

  /** The frontends and their backends, as written to the maps. */
  dump(): DatapathService[] {
    const byId = new Map<string, { ip: string; port: number }>();
    for (const b of this.backends.values()) byId.set(`${b.fam}/${b.id}`, { ip: b.ip, port: b.port });
    const out: DatapathService[] = [];
    for (const st of this.services.values()) {
      const fam = familyOf(st.ip);
      out.push({ ip: st.ip, port: st.port, proto: st.proto, backends: st.backendIds.map((id) => byId.get(`${fam}/${id}`)!).filter(Boolean) });
    }
    return out;
  }

  /** Rebuilds the bookkeeping from the pinned maps (after an agent restart); drops orphans. */
  load(): void {
    this.reset();
    for (const fam of [4, 6] as const) this.loadFamily(fam);
    // a pinned filter from before the restart holds every frontend's bit already; rewritten exact
    this.writeVipFilter();
  }

  private loadFamily(fam: Family): void {
    const f = FAMILIES[fam];
    const beMap = this.loader.map(f.backends);
    const beById = new Map<number, string>();
    for (const k of beMap.keys()) {
      const v = beMap.lookup(k);
      if (!v) continue;
      const b = f.decodeBackend(v);
      const id = decodeU32(k);
      const key = backendKey(b.ip, b.port, b.proto);
      beById.set(id, key);
      this.backends.set(key, { id, refs: 0, ip: b.ip, port: b.port, fam });
    }
    const svcMap = this.loader.map(f.services);
    const slots = new Map<string, { master?: { count: number; revNat: number }; ids: Map<number, number>; ip: string; port: number; proto: number }>();
    for (const k of svcMap.keys()) {
      const v = svcMap.lookup(k);
      if (!v) continue;
      const d = f.decodeKey(k);
      const sk = serviceKeyString({ ip: d.ip, port: d.port, proto: protoName(d.proto) });
      let e = slots.get(sk);
      if (!e) slots.set(sk, (e = { ids: new Map(), ip: d.ip, port: d.port, proto: d.proto }));
      const sv = decodeLb4Service(v);
      if (d.slot === 0) e.master = { count: sv.count, revNat: sv.revNat };
      else e.ids.set(d.slot, sv.backendId);
    }
    for (const [sk, e] of slots) {
      if (!e.master) {
        for (const slot of e.ids.keys()) svcMap.delete(f.key(e.ip, e.port, e.proto, slot));
        continue;
      }
      const ids: number[] = [];
      for (let i = 1; i <= e.master.count; i++) ids.push(e.ids.get(i) ?? 0);
      for (const id of ids) {
        const bk = beById.get(id);
        if (bk) this.backends.get(bk)!.refs++;
      }
      this.services.set(sk, { ip: e.ip, port: e.port, proto: protoName(e.proto), revNat: e.master.revNat, backendIds: ids });
    }
    for (const [k, b] of [...this.backends]) {
      if (b.fam === fam && b.refs === 0) {
        beMap.delete(encodeU32(b.id));
        this.backends.delete(k);
      }
    }
  }

  private allocRevNat(): number {
    const used = new Set([...this.services.values()].map((s) => s.revNat));
    for (let i = 1; i <= 65535; i++) if (!used.has(i)) return i;
    throw new MembraneError('DATAPATH_SERVICE_EXHAUSTED', 'no free reverse-NAT id (65535 services)');
  }

  private acquireBackend(fam: Family, ip: string, port: number, proto: number): number {
    const k = backendKey(ip, port, proto);
    const b = this.backends.get(k);
    if (b) {
      b.refs++;
      return b.id;
    }
    const used = new Set([...this.backends.values()].filter((x) => x.fam === fam).map((x) => x.id));
    let id = 1;
    while (used.has(id)) id++;
    this.loader.map(FAMILIES[fam].backends).update(encodeU32(id), FAMILIES[fam].backend(ip, port, proto));
    this.backends.set(k, { id, refs: 1, ip, port, fam });
    return id;
  }

  private releaseBackend(fam: Family, id: number): void {
    for (const [k, b] of this.backends) {
      if (b.id !== id || b.fam !== fam) continue;
      if (--b.refs <= 0) {
        this.backends.delete(k);
        this.loader.map(FAMILIES[fam].backends).delete(encodeU32(id));
      }
      return;
    }
  }
}
