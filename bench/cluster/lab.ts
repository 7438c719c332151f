// The cluster benches' two-node lab: `membrane up --nodes 2` in a routing mode, a client pod on
// node1 and a server pod on node2 (namespace bench), and an ingress allow policy on the server for
// the bench's ports (iperf3 5201, rr 7001 / 7002). One home for bench/cluster/run.ts and profile.ts.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { podNetnsName } from '../../src/lab/names.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface ClusterLab {
  lab: string;
  cliNs: string;
  srvNs: string;
  srvIp: string;
  /** the membrane CLI with the lab's environment */
  membrane(args: string[]): string;
  /** `membrane down` (best effort) */
  down(): void;
}

/** The lab's name and CLI, before it is up (so that a failed `up` can still be taken down). */
export function clusterCli(lab: string): Pick<ClusterLab, 'lab' | 'membrane' | 'down'> {
  const env = { ...process.env, MEMBRANE_LAB: lab, MEMBRANE_STATE_DIR: `/run/membrane-bench/${lab}`, NO_COLOR: '1' };
  const membrane = (args: string[]) => execFileSync(join(REPO, 'bin/membrane'), args, { env, encoding: 'utf8', timeout: 600_000 });
  return { lab, membrane, down: () => { try { membrane(['down']); } catch { /* best effort */ } } };
}

/** Brings the lab up with its two pods and the server's policy; resolves once both pods run. */
export async function clusterLab(lab: string, mode: 'tunnel' | 'native'): Promise<ClusterLab> {
  const cli = clusterCli(lab);
  const { membrane } = cli;
  membrane(['up', '--nodes', '2', '--routing-mode', mode, '-q']);
  const yaml = join(tmpdir(), `${lab}.yaml`);
  const pod = (name: string, node: string, app: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'bench', labels: { app } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'curlimages/curl' }] } });
  const cnp = {
    apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'srv-from-cli', namespace: 'bench' },
    spec: { endpointSelector: { matchLabels: { app: 'srv' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'cli' } }], toPorts: [{ ports: ['5201', '7001', '7002'].map((port) => ({ port, protocol: 'TCP' })) }] }] },
  };
  writeFileSync(yaml, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } }, pod('cli', 'node1', 'cli'), pod('srv', 'node2', 'srv'), cnp].map((o) => JSON.stringify(o)).join('\n---\n'));
  membrane(['apply', '-f', yaml]);
  let srvIp = '';
  for (let i = 0; i < 120 && !srvIp; i++) {
    const list = JSON.parse(membrane(['get', 'pods', '-n', 'bench', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { podIP?: string; phase?: string } }[] };
    const ready = list.items.filter((p) => p.status?.phase === 'Running');
    if (ready.length === 2) srvIp = ready.find((p) => p.metadata.name === 'srv')!.status!.podIP!;
    else await new Promise((r) => setTimeout(r, 500));
  }
  if (!srvIp) throw new Error('pods did not start');
  return { ...cli, srvIp, cliNs: podNetnsName('node1', 'bench', 'cli', lab), srvNs: podNetnsName('node2', 'bench', 'srv', lab) };
}
