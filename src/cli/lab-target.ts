/** Which agent the CLI talks to: the lab's first node unless --node says otherwise. */
import { labPaths } from '../agent/paths.ts';

export const DEFAULT_NODE = 'node1';

export function agentSocketFor(node?: string): string {
  return labPaths().agentSocket(node ?? process.env.MEMBRANE_NODE ?? DEFAULT_NODE);
}
