/**
 * The battery's workloads as lab pods: Pods (curl clients, echo servers) and a Service per echo,
 * applied through node1's agent, which schedules them on the nodes they name; probes run in the
 * pods' namespaces. The lab has ClusterIP services, cluster DNS and world hosts.
 */
import { callAgent } from '../../agent/api-client.ts';
import { MembraneError } from '../../common/errors.ts';
import { netnsExecArgv } from '../../sys/net.ts';
import { run } from '../../sys/proc.ts';
import { findPodNetns } from '../lab-target.ts';
import { ECHO_PORT } from './battery.ts';
import type { TestWorkloads, WorkloadSpec } from './workloads.ts';

function resources(ns: string, specs: WorkloadSpec[]): object[] {
  const out: object[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }];
  for (const w of specs) {
    const echo = w.role === 'echo';
    out.push({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: w.name, namespace: ns, labels: w.labels },
      spec: { nodeName: w.node, containers: [{ name: 'c', image: echo ? 'echo-server' : 'curlimages/curl', ...(echo ? { ports: [{ containerPort: ECHO_PORT, protocol: 'TCP' }] } : {}) }] },
    });
    if (echo) out.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: w.name, namespace: ns }, spec: { selector: { app: w.name }, ports: [{ port: ECHO_PORT, targetPort: ECHO_PORT, protocol: 'TCP' }] } });
  }
  return out;
}

async function waitPods(socket: string, ns: string, want: number): Promise<Record<string, string>> {
  const deadline = Date.now() + 180_000;
  let ips: Record<string, string> = {};
  while (Date.now() < deadline) {
    const { items } = await callAgent<{ items: { metadata: { name: string }; status?: { podIP?: string; ready?: string } }[] }>(socket, 'GET', `/v1/resources?kind=Pod&namespace=${ns}`);
    ips = Object.fromEntries(items.filter((p) => p.status?.podIP && p.status.ready === '1/1').map((p) => [p.metadata.name, p.status!.podIP!]));
    if (Object.keys(ips).length >= want) return ips;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new MembraneError('CONNECTIVITY_DEPLOY_TIMEOUT', `the test pods in ${ns} did not all become ready in 180 s (ready: ${Object.keys(ips).join(', ') || 'none'})`, { hint: '`membrane get pods -n ' + ns + '` and `membrane status` show why' });
}

export function labWorkloads(lab: string, sockets: string[]): TestWorkloads {
  const socket = sockets[0]!;
  let applied: object[] = [];
  const settleAll = async () => { for (const s of sockets) await callAgent(s, 'POST', '/v1/settle', {}); };
  return {
    describe: `Lab ${lab}: ${sockets.length} node(s)`,
    features: { services: true, world: true },
    async deploy(ns, specs) {
      applied = resources(ns, specs);
      await callAgent(socket, 'POST', '/v1/apply', { resources: applied, dryRun: false });
      await settleAll();
      const pods = await waitPods(socket, ns, specs.length);
      return Object.fromEntries(specs.filter((s) => s.role === 'echo').map((s) => [s.name, pods[s.name]!]));
    },
    async exec(ns, name, argv, timeoutMs) {
      const a = netnsExecArgv(await findPodNetns(lab, ns, name), argv);
      return run(a[0]!, a.slice(1), { timeoutMs });
    },
    async remove() {
      if (applied.length) await callAgent(socket, 'POST', '/v1/delete', { resources: applied.slice().reverse() }).catch(() => {});
      applied = [];
      await settleAll().catch(() => {});
    },
  };
}
