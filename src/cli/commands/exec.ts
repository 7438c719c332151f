/** `membrane exec [-n NS] POD -- CMD...`: runs a host command in a pod's network namespace. */
import type { Command } from 'commander';
import type { MembraneConfig } from '../../common/config.ts';
import { findPodNetns } from '../lab-target.ts';
import { netnsExecArgv } from '../../sys/net.ts';
import { runInherit } from '../../sys/proc.ts';

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
