/**
 * Where in the lab the CLI acts: the agent it talks to (the configured node, node1 by default,
 * unless --node says otherwise) and a pod's network namespace.
 */
import type { MembraneConfig } from '../common/config.ts';
import { MembraneError } from '../common/errors.ts';
import { labPaths } from '../common/paths.ts';
import { labNodes, nodeName, podNetnsName } from '../lab/index.ts';
import { netnsExists } from '../sys/net.ts';

export function agentSocketFor(config: MembraneConfig, node?: string): string {
  return labPaths(config).agentSocket(node ?? config.node);
}

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
