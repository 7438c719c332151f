/**
 * membrane CLI: kubectl verbs for resources, `hubble observe` flags for flows, `cilium status`
 * style for health. One file per command in ./commands; each exports `register(program, config)`.
 * The configuration (src/common/config.ts) is built here, once, and handed to every command.
 * Only the module of the command being run is imported (./command-table.ts).
 */
import { Command } from 'commander';
import { printError } from './output.ts';
import { loadConfig, type MembraneConfig } from '../common/config.ts';
import { commandModulesFor } from './command-table.ts';

const program = new Command('membrane')
  .description('Cilium-compatible network security and observability: eBPF policy, L7 proxies, Hubble flows')
  .version('0.1.0')
  .showHelpAfterError()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

let config: MembraneConfig;
try {
  config = loadConfig();
} catch (e) {
  process.exit(printError(e));
}
for (const path of commandModulesFor(process.argv.slice(2))) {
  const mod = (await import(path)) as { register: (p: Command, c: MembraneConfig) => void };
  mod.register(program, config);
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = printError(e);
}
