/** `membrane node rotate-key NODE`: a new WireGuard key pair on that node (its peers follow through the kvstore). */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';

export function register(program: Command, config: MembraneConfig): void {
  const node = program.command('node').description('Nodes of the cluster');
  node.command('rotate-key <node>')
    .description("Rotate the node's WireGuard key pair (--encryption wireguard); every peer switches to the new public key within seconds")
    .action(async (name: string) => {
      const r = await callAgent<{ publicKey: string }>(agentSocketFor(config, name), 'POST', '/v1/encryption/rotate-key', {});
      process.stdout.write(`${name}: new WireGuard public key ${r.publicKey}\n`);
    });
}
