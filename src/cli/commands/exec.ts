/** `membrane exec [-n NS] POD -- CMD...`: runs a host command in a pod's network namespace. */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { MembraneError } from '../../common/errors.ts';
import { labNodes, nodeName, podNetnsName } from '../../lab/index.ts';
import { netnsExecArgv, netnsExists } from '../../sys/net.ts';
import { runInherit } from '../../sys/proc.ts';

/** The pod's netns on whichever node of the lab has it. */
export async function findPodNetns(lab: string, ns: string, pod: string, node?: string): Promise<string> {
  const nodes = node ? [node] : (await labNodes(lab)).map(nodeName);
  for (const n of nodes) {
    const name = podNetnsName(n, ns, pod, lab);
    if (netnsExists(name)) return name;
  }
  throw new MembraneError('EXEC_POD_NOT_FOUND', `pod ${ns}/${pod} has no network namespace in lab ${lab}${node ? ` on ${node}` : ''}`, {
    hint: `check \`membrane get pods -n ${ns}\`; the pod must be scheduled and running`,
  });
}

export function register(program: Command, config: MembraneConfig): void {
  program.command('exec')
    .description("Run a command in a pod's network namespace (with the pod's /etc/resolv.conf and /etc/hosts)")
    .argument('<pod>', 'pod name')
    .argument('<command...>', 'command and arguments (after --)')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('--node <name>', 'node the pod runs on (default: search all)')
    .action(async (pod: string, command: string[], o: { namespace: string; node?: string }) => {
      const netns = await findPodNetns(config.lab, o.namespace, pod, o.node);
      const [cmd, ...args] = netnsExecArgv(netns, command);
      process.exitCode = await runInherit(cmd!, args);
    });
}
