/** Which agent the CLI talks to: the configured node (node1 by default) unless --node says otherwise. */
import type { MembraneConfig } from '../common/config.ts';
import { labPaths } from '../common/paths.ts';

export function agentSocketFor(config: MembraneConfig, node?: string): string {
  return labPaths(config).agentSocket(node ?? config.node);
}
