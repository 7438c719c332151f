/**
 * ClusterIP allocation from the lab's service range 10.96.0.0/16 (10.96.0.1 is reserved for the
 * `kubernetes` service, 10.96.0.10 for kube-dns as in kubeadm clusters). A user-given clusterIP
 * inside the range is honoured; outside it is an error.
 */
import { MembraneError } from '../../errors.ts';
import type { Service } from '../../api/types.ts';

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
