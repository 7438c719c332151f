/**
 * membrane CLI: kubectl verbs for resources, `hubble observe` flags for flows, `cilium status`
 * style for health. One file per command in ./commands; each exports `register(program, config)`.
 * The configuration (src/common/config.ts) is built here, once, and handed to every command.
 */
import { Command } from 'commander';
import { printError } from './output.ts';
import { loadConfig, type MembraneConfig } from '../common/config.ts';

const program = new Command('membrane')
  .description('Cilium-compatible network security and observability: eBPF policy, L7 proxies, Hubble flows')
  .version('0.1.0')
  .showHelpAfterError()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

const commands = [
  './commands/policy.ts', './commands/lab.ts', './commands/resources.ts', './commands/exec.ts',
  './commands/status.ts', './commands/observe.ts', './commands/ui.ts', './commands/ai.ts', './commands/endpoint.ts', './commands/agent.ts', './commands/connectivity.ts',
  './commands/node.ts',
];
let config: MembraneConfig;
try {
  config = loadConfig();
} catch (e) {
  process.exit(printError(e));
}
for (const path of commands) {
  try {
    const mod = (await import(path)) as { register?: (p: Command, c: MembraneConfig) => void };
    mod.register?.(program, config);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw e;
  }
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = printError(e);
}
