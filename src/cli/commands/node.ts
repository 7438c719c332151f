/**
 * `membrane node add|delete` (the lab's nodes) and `membrane node rotate-key NODE` (a new WireGuard
 * key pair on that node; its peers follow through the kvstore).
 */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';
import { labNodeAdd, labNodeDelete } from '../../lab/index.ts';

export function register(program: Command, config: MembraneConfig): void {
  const node = program.command('node').description('Nodes of the cluster');
  node.command('add')
    .description('Add the next node to the running lab (its namespace, routes, agent; the others learn it through etcd)')
    .action(async () => {
      const r = await labNodeAdd({ config, progress: (m) => process.stderr.write(`${m}\n`) });
      process.stderr.write(`lab ${r.lab}: ${r.nodes.length} node(s); ${r.nodes[r.nodes.length - 1]!.node} added\n`);
    });
  node.command('delete <node>')
    .description('Remove a node as if it died: its pods are deleted, its agent killed; the others forget it when its lease expires')
    .action(async (node: string) => {
      const r = await labNodeDelete({ config, node, progress: (m) => process.stderr.write(`${m}\n`) });
      process.stderr.write(`${r.node} deleted (${r.pods} pod(s))\n`);
    });

  node.command('rotate-key <node>')
    .description("Rotate the node's WireGuard key pair (--encryption wireguard); every peer switches to the new public key within seconds")
    .action(async (name: string) => {
      const r = await callAgent<{ publicKey: string }>(agentSocketFor(config, name), 'POST', '/v1/encryption/rotate-key', {});
      process.stdout.write(`${name}: new WireGuard public key ${r.publicKey}\n`);
    });
}
