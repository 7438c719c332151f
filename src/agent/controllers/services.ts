/**
 * ClusterIP allocation from the lab's service ranges: IPv4 10.96.0.0/16 (10.96.0.1 is reserved for
 * the `kubernetes` service, 10.96.0.10 for kube-dns as in kubeadm clusters) and, with enable-ipv6,
 * IPv6 fd00:10:96::/112 (kind's default service range; fd00:10:96::a for kube-dns). A user-given
 * clusterIP inside the range is honoured; outside it is an error.
 *
 * Families follow Kubernetes' dual-stack Service fields: spec.ipFamilyPolicy (SingleStack, the
 * default; PreferDualStack; RequireDualStack), spec.ipFamilies (the families in order, the first
 * one primary) and spec.clusterIPs (one address per family, in the same order; clusterIP is its
 * first). IPv4 is the cluster's primary family. IPv6 is only available with enable-ipv6: asking
 * for it otherwise (RequireDualStack, or ipFamilies/clusterIPs naming IPv6) is an error, as on a
 * single-stack Kubernetes cluster; PreferDualStack then gets IPv4 alone.
 */
import { MembraneError } from '../../common/errors.ts';
import type { Pod, Service } from '../../api/types.ts';
import { formatIPv6, isIPv4Mapped, parseIP, parseIPv6 } from '../../ipcache/prefix.ts';

export const SERVICE_CIDR = '10.96.0.0/16';
export const KUBE_DNS_IP = '10.96.0.10';
export const SERVICE_CIDR6 = 'fd00:10:96::/112';
export const KUBE_DNS_IP6 = 'fd00:10:96::a';
const BASE = (10 << 24) | (96 << 16);
const BASE6 = parseIPv6('fd00:10:96::')!;

export type IPFamily = 'IPv4' | 'IPv6';

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => (a << 8) | Number(o), 0) >>> 0;
}
export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
function ip6At(offset: number): string {
  return formatIPv6(BASE6 + BigInt(offset));
}

export function inServiceRange(ip: string): boolean {
  const a = parseIP(ip);
  if (!a) return false;
  if (a.family === 4) return ((a.addr as number) & 0xffff0000) >>> 0 === BASE >>> 0;
  return (a.addr as bigint) >> 16n === BASE6 >> 16n;
}

/** The family of an address, or undefined (not an address, or an IPv4-mapped IPv6 one). */
function familyOf(ip: string): IPFamily | undefined {
  const a = parseIP(ip);
  if (!a) return undefined;
  if (a.family === 4) return 'IPv4';
  return isIPv4Mapped(ip) ? undefined : 'IPv6';
}

function canonical(ip: string): string {
  const a = parseIP(ip)!;
  return a.family === 6 ? formatIPv6(a.addr as bigint) : ip;
}

/**
 * A Service's families and the addresses it asked for, checked against the cluster (Kubernetes'
 * rules). Throws a coded error for what the cluster cannot give; headless services have none.
 */
export function serviceFamilies(s: Service, o: { ipv6: boolean }): { families: IPFamily[]; requested: (string | undefined)[]; headless: boolean } {
  const name = `service ${s.metadata.namespace ?? 'default'}/${s.metadata.name}`;
  const spec = s.spec;
  const policy = spec.ipFamilyPolicy ?? 'SingleStack';
  const ips = spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : []);
  if (spec.clusterIP && spec.clusterIPs?.length && spec.clusterIPs[0] !== spec.clusterIP) {
    throw new MembraneError('SERVICE_CLUSTER_IPS', `${name}: clusterIP ${spec.clusterIP} is not clusterIPs[0] (${spec.clusterIPs[0]})`, { hint: 'clusterIP is the first of clusterIPs; set one of them, or both the same' });
  }
  if (ips[0] === 'None' || spec.clusterIP === 'None') {
    if (ips.length > 1) throw new MembraneError('SERVICE_CLUSTER_IPS', `${name}: a headless service (clusterIP None) has no other clusterIPs`);
    return { families: [], requested: [], headless: true };
  }
  const ipFams: IPFamily[] = [];
  for (const ip of ips) {
    const f = familyOf(ip);
    if (!f) throw new MembraneError('SERVICE_IP_INVALID', `${name}: clusterIP "${ip}" is not an IPv4 or IPv6 address${parseIP(ip) ? ' (IPv4-mapped IPv6 addresses are not service addresses)' : ''}`, { hint: 'omit clusterIP to have one allocated' });
    ipFams.push(f);
  }
  if (ips.length > 2 || (ips.length === 2 && ipFams[0] === ipFams[1])) {
    throw new MembraneError('SERVICE_CLUSTER_IPS', `${name}: clusterIPs [${ips.join(', ')}] must be at most one address of each family`);
  }
  const asked = spec.ipFamilies ?? [];
  if (asked.length > 2 || (asked.length === 2 && asked[0] === asked[1])) {
    throw new MembraneError('SERVICE_IP_FAMILIES', `${name}: ipFamilies [${asked.join(', ')}] must name each family at most once`);
  }
  asked.forEach((f, i) => {
    if (ipFams[i] && ipFams[i] !== f) throw new MembraneError('SERVICE_IP_FAMILIES', `${name}: clusterIPs[${i}] ${ips[i]} is not of ipFamilies[${i}] ${f}`, { hint: 'list clusterIPs in the order of ipFamilies' });
  });
  const order: IPFamily[] = [...(asked.length ? asked : ipFams)];
  for (const f of ipFams) if (!order.includes(f)) order.push(f);
  if (policy === 'SingleStack' && order.length > 1) {
    throw new MembraneError('SERVICE_IP_FAMILIES', `${name}: ipFamilyPolicy SingleStack takes one family, got [${order.join(', ')}]`, { hint: 'set ipFamilyPolicy: PreferDualStack or RequireDualStack for both families' });
  }
  if (!order.length) order.push('IPv4');
  const noV6 = () => new MembraneError('SERVICE_IPV6_DISABLED', `${name}: IPv6 is not enabled on this cluster`, { hint: 'bring the lab up with --enable-ipv6 (MEMBRANE_ENABLE_IPV6=true), or ask for IPv4 only' });
  if (policy !== 'SingleStack') {
    const other: IPFamily = order[0] === 'IPv4' ? 'IPv6' : 'IPv4';
    if (order.length === 1 && (o.ipv6 || policy === 'RequireDualStack')) order.push(other);
    if (!o.ipv6) {
      // PreferDualStack on a single-stack cluster: its primary family alone, when that is IPv4
      if (policy === 'RequireDualStack' || ipFams.includes('IPv6') || order[0] === 'IPv6') throw noV6();
      order.length = 1;
    }
  }
  if (!o.ipv6 && order.includes('IPv6')) throw noV6();
  for (const [i, ip] of ips.entries()) {
    if (!inServiceRange(ip)) throw new MembraneError('SERVICE_IP_OUT_OF_RANGE', `${name}: clusterIP ${ip} is outside ${ipFams[i] === 'IPv6' ? SERVICE_CIDR6 : SERVICE_CIDR}`, { hint: 'omit clusterIP to have one allocated' });
  }
  return { families: order, requested: order.map((f) => { const j = ipFams.indexOf(f); return j < 0 ? undefined : canonical(ips[j]!); }), headless: false };
}

/**
 * Assigns cluster IPs (every family a service has) to services that lack them; returns the
 * services it changed. A service whose fields the cluster cannot honour is left as it is and
 * reported through onError (the others are still served).
 */
export function assignClusterIPs(services: Service[], o: { ipv6?: boolean; onError?: (s: Service, e: unknown) => void } = {}): Service[] {
  const ipv6 = o.ipv6 ?? false;
  const used = new Set<string>(['10.96.0.1', ip6At(1)]);
  const plans = new Map<Service, ReturnType<typeof serviceFamilies>>();
  for (const s of services) {
    try {
      const plan = serviceFamilies(s, { ipv6 });
      plans.set(s, plan);
      for (const ip of plan.requested) if (ip) used.add(ip);
    } catch (e) {
      o.onError?.(s, e);
    }
  }
  const changed: Service[] = [];
  let next = 11, next6 = 11;
  for (const s of services) {
    const plan = plans.get(s);
    if (!plan || plan.headless) continue;
    const ips = plan.families.map((f, i) => {
      const want = plan.requested[i];
      if (want) return want;
      const isDns = s.metadata.namespace === 'kube-system' && s.metadata.name === 'kube-dns';
      if (f === 'IPv4') {
        if (isDns && !used.has(KUBE_DNS_IP)) return KUBE_DNS_IP;
        while (used.has(intToIp(BASE + next))) next++;
        if (next >= 0xfffe) throw new MembraneError('SERVICE_IP_EXHAUSTED', `no free cluster IP left in ${SERVICE_CIDR}`);
        return intToIp(BASE + next);
      }
      if (isDns && !used.has(KUBE_DNS_IP6)) return KUBE_DNS_IP6;
      while (used.has(ip6At(next6))) next6++;
      if (next6 >= 0xfffe) throw new MembraneError('SERVICE_IP_EXHAUSTED', `no free cluster IP left in ${SERVICE_CIDR6}`);
      return ip6At(next6);
    });
    for (const ip of ips) used.add(ip);
    const policy = s.spec.ipFamilyPolicy ?? 'SingleStack';
    const same = s.spec.clusterIP === ips[0] && JSON.stringify(s.spec.clusterIPs) === JSON.stringify(ips) &&
      JSON.stringify(s.spec.ipFamilies) === JSON.stringify(plan.families) && s.spec.ipFamilyPolicy === policy;
    if (same) continue;
    s.spec.clusterIP = ips[0]!;
    s.spec.clusterIPs = ips;
    s.spec.ipFamilies = plan.families;
    s.spec.ipFamilyPolicy = policy;
    changed.push(s);
  }
  return changed;
}

/** A Service's cluster IPs, every family (clusterIPs, or the single clusterIP of an older record). */
export function clusterIPsOf(s: Service): string[] {
  const ips = s.spec.clusterIPs?.length ? s.spec.clusterIPs : s.spec.clusterIP ? [s.spec.clusterIP] : [];
  return ips.filter((ip) => ip !== 'None');
}

// ---------------------------------------------------------------- endpoints of services (backends)

/** A service frontend with its backends, as the datapath load-balances it. */
export interface ServiceFrontend {
  ip: string;
  port: number;
  proto: 'TCP' | 'UDP';
  backends: { ip: string; port: number }[];
  /** namespace/name of the Service (for flows and logs) */
  service: { namespace: string; name: string };
}

function frontendKey(f: { ip: string; port: number; proto: string }): string {
  return `${f.ip}:${f.port}/${f.proto}`;
}

/**
 * Frontends of every ClusterIP service: for each port, the backends are the pods (with an IP)
 * matched by the service's selector in its namespace, at the numeric targetPort (default: the
 * port) or the container port named by a string targetPort (pods without that name are skipped,
 * as the endpoints controller does). Services without a selector, headless services and SCTP
 * ports have no frontend. Backends are sorted (stable slots across reconciles).
 */
export function serviceFrontends(services: Service[], pods: Pod[]): ServiceFrontend[] {
  const out: ServiceFrontend[] = [];
  for (const s of services) {
    if (!s.spec.selector) continue;
    const ns = s.metadata.namespace ?? 'default';
    const sel = Object.entries(s.spec.selector);
    const selected = pods.filter((p) => (p.metadata.namespace ?? 'default') === ns && p.status?.podIP && sel.every(([k, v]) => p.metadata.labels?.[k] === v));
    for (const ip of clusterIPsOf(s)) {
    const fam = familyOf(ip);
    if (!fam) continue;
    // the pods' addresses of the frontend's family (a pod without one is no backend of it)
    const members = selected.flatMap((p) => {
      const addr = podAddressOf(p, fam);
      return addr ? [{ p, addr }] : [];
    });
    for (const sp of s.spec.ports ?? []) {
      const proto = sp.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP') continue;
      const backends: { ip: string; port: number }[] = [];
      for (const { p, addr } of members) {
        let port: number | undefined;
        const tp = sp.targetPort;
        if (tp === undefined || tp === '') port = sp.port;
        else if (typeof tp === 'number' || /^\d+$/.test(tp)) port = Number(tp);
        else {
          for (const c of p.spec.containers) {
            const cp = c.ports?.find((x) => x.name === tp && (x.protocol ?? 'TCP') === proto);
            if (cp) { port = cp.containerPort; break; }
          }
        }
        if (port !== undefined && port > 0 && port < 65536) backends.push({ ip: addr, port });
      }
      backends.sort((a, b) => compareIp(a.ip, b.ip) || a.port - b.port);
      out.push({ ip, port: sp.port, proto, backends, service: { namespace: ns, name: s.metadata.name } });
    }
    }
  }
  return out;
}

/** A pod's address of a family: podIPs (dual stack) or the single podIP. */
function podAddressOf(p: Pod, fam: IPFamily): string | undefined {
  const all = p.status?.podIPs?.map((x) => x.ip) ?? (p.status?.podIP ? [p.status.podIP] : []);
  return all.find((ip) => familyOf(ip) === fam);
}

function compareIp(a: string, b: string): number {
  const x = parseIP(a), y = parseIP(b);
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0;
  if (x.family !== y.family) return x.family - y.family;
  return x.addr < y.addr ? -1 : x.addr > y.addr ? 1 : 0;
}

/** What changed between two sets of frontends: upserts (new or different backends) and deletes. */
export function diffFrontends(prev: Map<string, ServiceFrontend>, next: ServiceFrontend[]): { upserts: ServiceFrontend[]; deletes: ServiceFrontend[]; next: Map<string, ServiceFrontend> } {
  const nm = new Map(next.map((f) => [frontendKey(f), f]));
  const upserts: ServiceFrontend[] = [];
  for (const [k, f] of nm) {
    const p = prev.get(k);
    if (!p || JSON.stringify(p.backends) !== JSON.stringify(f.backends)) upserts.push(f);
  }
  const deletes = [...prev].filter(([k]) => !nm.has(k)).map(([, f]) => f);
  return { upserts, deletes, next: nm };
}
