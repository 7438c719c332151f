/**
 * The lab DNS as a pod: `membrane up` applies the kube-system Pod `coredns` (labels
 * `k8s-app: kube-dns`, image `membrane/lab-dns`) and the Service `kube-dns` (ClusterIP
 * 10.96.0.10, port 53 UDP/TCP). The workload runs src/lab/dns/server.ts in the pod's namespace.
 */
import { join } from 'node:path';
import type { Resource } from '../api/types.ts';
import { CLUSTER_DNS_IP } from './names.ts';
import type { PlanContext, WorkloadPlan } from './workload-plan.ts';

export const LAB_DNS_IMAGE = 'membrane/lab-dns';

/** Where the DNS pod writes its IP (pods' resolv.conf points there until ClusterIPs are translated). */
export function dnsServerIpFile(stateDir: string): string {
  return join(stateDir, 'dns', 'server-ip');
}

export function labDnsPlan(ctx: PlanContext): WorkloadPlan | undefined {
  if (!(ctx.container.image ?? '').toLowerCase().startsWith(LAB_DNS_IMAGE)) return undefined;
  const paths = ctx.paths;
  const readyFile = join(ctx.dir, `${ctx.container.name}.ready`);
  const marker = `--id=${ctx.id}`;
  return {
    kind: 'custom',
    argv: [
      ...ctx.nodeArgv.map((a) => (a.startsWith('--max-old-space-size') ? '--max-old-space-size=96' : a)),
      join(ctx.repoRoot, 'src/lab/dns/server.ts'), marker, `--agent-socket=${paths.agentSocket('node1')}`,
      `--ip-file=${dnsServerIpFile(paths.stateDir)}`, `--pod-ip=${ctx.net.ip}`, `--ready=${readyFile}`,
      // a dual-stack lab (the DNS pod got an IPv6 address: enable-ipv6): AAAA for the world hosts
      ...(ctx.net.ip6 ? ['--ipv6'] : []),
    ],
    marker, readyFile,
  };
}

/** The kube-system DNS pod and Service `membrane up` applies. */
export function labDnsResources(): Resource[] {
  const source = { file: '<membrane up>', line: 0, col: 0 };
  return [
    {
      apiVersion: 'v1', kind: 'Pod', source,
      metadata: { name: 'coredns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
      spec: { nodeName: 'node1', containers: [{ name: 'coredns', image: LAB_DNS_IMAGE, ports: [{ containerPort: 53, protocol: 'UDP', name: 'dns' }, { containerPort: 53, protocol: 'TCP', name: 'dns-tcp' }] }] },
    },
    {
      apiVersion: 'v1', kind: 'Service', source,
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
      spec: { selector: { 'k8s-app': 'kube-dns' }, clusterIP: CLUSTER_DNS_IP, ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }, { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 }] },
    },
  ] as unknown as Resource[];
}
