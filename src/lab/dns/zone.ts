/**
 * The lab DNS's records, built from the cluster's resources (pure: resources in, zone out).
 *
 *   <svc>.<ns>.svc.cluster.local        A    the Service's ClusterIP (AAAA: its IPv6 one, dual stack)
 *   <a-b-c-d>.<ns>.pod.cluster.local    A    a pod's IP (and <pod>.<ns>.pod.cluster.local)
 *   world hosts (world.ts) and ExternalHosts: A / AAAA per address (world hosts: AAAA in a
 *   dual-stack lab, their worldIp6); extra names are CNAMEs to
 *   the first name (a chain: alias → name → addresses). TTL per host (default 30 s).
 * Anything else is NXDOMAIN (the lab forwards nothing to the internet); a known name without
 * records of the asked type is NODATA (NOERROR, empty answer).
 */
import type { ExternalHost, Pod, Resource, Service } from '../../api/types.ts';
import { DEFAULT_WORLD_TTL, worldHosts } from '../world.ts';
import { clusterIPsOf } from '../../agent/controllers/services.ts';
import { worldIp6 } from '../names.ts';

export const CLUSTER_DOMAIN = 'cluster.local';
const CLUSTER_TTL = 30;

export interface ZoneName {
  a: string[];
  aaaa: string[];
  cname?: string;
  ttl: number;
}

export type Zone = Map<string, ZoneName>;

/** Lower case, no trailing dot. */
export function zoneKey(name: string): string {
  const n = name.trim().toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

function add(zone: Zone, name: string, ips: string[], ttl: number): void {
  const k = zoneKey(name);
  const e = zone.get(k) ?? { a: [], aaaa: [], ttl };
  for (const ip of ips) {
    const list = ip.includes(':') ? e.aaaa : e.a;
    if (!list.includes(ip)) list.push(ip);
  }
  e.ttl = ttl;
  delete e.cname;
  zone.set(k, e);
}

function alias(zone: Zone, name: string, target: string, ttl: number): void {
  const k = zoneKey(name);
  if (zone.has(k) && !zone.get(k)!.cname) return; // a real name wins over an alias
  zone.set(k, { a: [], aaaa: [], cname: zoneKey(target), ttl });
}

/** `ipv6`: a dual-stack lab (enable-ipv6): world hosts answer AAAA with their IPv6 address (worldIp6). */
export function buildZone(resources: readonly Resource[], o: { ipv6?: boolean } = {}): Zone {
  const zone: Zone = new Map();
  for (const h of worldHosts) {
    add(zone, h.name, o.ipv6 ? [h.ip, worldIp6(h.ip)] : [h.ip], h.ttl ?? DEFAULT_WORLD_TTL);
  }
  for (const h of worldHosts) for (const a of h.aliases ?? []) alias(zone, a, h.name, h.ttl ?? DEFAULT_WORLD_TTL);
  for (const r of resources) {
    if (r.kind === 'Service') {
      const s = r as Service;
      const ips = clusterIPsOf(s);
      if (ips.length) add(zone, `${s.metadata.name}.${s.metadata.namespace ?? 'default'}.svc.${CLUSTER_DOMAIN}`, ips, CLUSTER_TTL);
    } else if (r.kind === 'Pod') {
      const p = r as Pod;
      const ip = (p.status as { podIP?: string } | undefined)?.podIP;
      if (!ip) continue;
      const ns = p.metadata.namespace ?? 'default';
      add(zone, `${ip.replace(/[.:]/g, '-')}.${ns}.pod.${CLUSTER_DOMAIN}`, [ip], CLUSTER_TTL);
      add(zone, `${p.metadata.name}.${ns}.pod.${CLUSTER_DOMAIN}`, [ip], CLUSTER_TTL);
    }
  }
  for (const r of resources) {
    if (r.kind !== 'ExternalHost') continue;
    const h = r as ExternalHost;
    const ttl = h.spec.ttl ?? DEFAULT_WORLD_TTL;
    const [first, ...rest] = h.spec.names;
    if (!first) continue;
    add(zone, first, h.spec.addresses, ttl);
    for (const n of rest) alias(zone, n, first, ttl);
  }
  return zone;
}

export interface Answer {
  rcode: 'NOERROR' | 'NXDOMAIN';
  /** CNAME chain followed from the query name, in order */
  cnames: { name: string; target: string; ttl: number }[];
  records: { name: string; type: 'A' | 'AAAA'; ip: string; ttl: number }[];
}

/** Resolves `name` for `type` (A, AAAA, CNAME, ANY…) in the zone, following CNAMEs (max 8). */
export function resolve(zone: Zone, name: string, type: string): Answer {
  const out: Answer = { rcode: 'NOERROR', cnames: [], records: [] };
  let k = zoneKey(name);
  for (let hop = 0; hop < 8; hop++) {
    const e = zone.get(k);
    if (!e) {
      if (hop === 0) out.rcode = 'NXDOMAIN';
      return out;
    }
    if (e.cname) {
      out.cnames.push({ name: k, target: e.cname, ttl: e.ttl });
      if (type === 'CNAME') return out;
      k = e.cname;
      continue;
    }
    if (type === 'A' || type === 'ANY') for (const ip of e.a) out.records.push({ name: k, type: 'A', ip, ttl: e.ttl });
    if (type === 'AAAA' || type === 'ANY') for (const ip of e.aaaa) out.records.push({ name: k, type: 'AAAA', ip, ttl: e.ttl });
    return out;
  }
  return out;
}
