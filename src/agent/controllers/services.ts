/**
 * ClusterIP allocation from the lab's service range 10.96.0.0/16 (10.96.0.1 is reserved for the
 * `kubernetes` service, 10.96.0.10 for kube-dns as in kubeadm clusters). A user-given clusterIP
 * inside the range is honoured; outside it is an error.
 */
import { MembraneError } from '../../common/errors.ts';
import type { Pod, Service } from '../../api/types.ts';

export const SERVICE_CIDR = '10.96.0.0/16';
export const KUBE_DNS_IP = '10.96.0.10';
const BASE = (10 << 24) | (96 << 16);

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((a, o) => (a << 8) | Number(o), 0) >>> 0;
}
export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function inServiceRange(ip: string): boolean {
  return (ipToInt(ip) & 0xffff0000) >>> 0 === BASE >>> 0;
}

/** Assigns cluster IPs to services that lack one; returns the services it changed. */
export function assignClusterIPs(services: Service[]): Service[] {
  const used = new Set<string>(['10.96.0.1']);
  for (const s of services) if (s.spec.clusterIP && s.spec.clusterIP !== 'None') used.add(s.spec.clusterIP);
  const changed: Service[] = [];
  let next = 11;
  for (const s of services) {
    const ip = s.spec.clusterIP;
    if (ip === 'None') continue;
    if (ip) {
      if (!inServiceRange(ip)) throw new MembraneError('SERVICE_IP_OUT_OF_RANGE', `service ${s.metadata.namespace}/${s.metadata.name}: clusterIP ${ip} is outside ${SERVICE_CIDR}`, { hint: 'omit clusterIP to have one allocated' });
      continue;
    }
    if (s.metadata.namespace === 'kube-system' && s.metadata.name === 'kube-dns' && !used.has(KUBE_DNS_IP)) {
      s.spec.clusterIP = KUBE_DNS_IP;
    } else {
      while (used.has(intToIp(BASE + next))) next++;
      if (next >= 0xfffe) throw new MembraneError('SERVICE_IP_EXHAUSTED', `no free cluster IP left in ${SERVICE_CIDR}`);
      s.spec.clusterIP = intToIp(BASE + next);
    }
    used.add(s.spec.clusterIP);
    changed.push(s);
  }
  return changed;
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
    const ip = s.spec.clusterIP;
    if (!ip || ip === 'None' || !s.spec.selector) continue;
    const ns = s.metadata.namespace ?? 'default';
    const sel = Object.entries(s.spec.selector);
    const members = pods.filter((p) => (p.metadata.namespace ?? 'default') === ns && p.status?.podIP && sel.every(([k, v]) => p.metadata.labels?.[k] === v));
    for (const sp of s.spec.ports ?? []) {
      const proto = sp.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP') continue;
      const backends: { ip: string; port: number }[] = [];
      for (const p of members) {
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
        if (port !== undefined && port > 0 && port < 65536) backends.push({ ip: p.status!.podIP!, port });
      }
      backends.sort((a, b) => (ipToInt(a.ip) - ipToInt(b.ip)) || a.port - b.port);
      out.push({ ip, port: sp.port, proto, backends, service: { namespace: ns, name: s.metadata.name } });
    }
  }
  return out;
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
