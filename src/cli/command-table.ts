/**
 * Which module registers each top-level command. The CLI imports only the module of the command
 * it runs: importing every command pulls in the lab, the agent, gRPC, X.509 and the BPF loader
 * (about 1,000 modules), which made `membrane get pods` cost seconds of CPU before doing anything.
 * Help, `--version` and unknown words still import them all, so commander can list and suggest.
 * test/unit/cli/command-table.test.ts checks this table against what the modules register.
 */
export const COMMAND_MODULES: Readonly<Record<string, string>> = {
  policy: './commands/policy.ts',
  up: './commands/lab.ts', down: './commands/lab.ts', lab: './commands/lab.ts',
  apply: './commands/resources.ts', delete: './commands/resources.ts', get: './commands/resources.ts',
  exec: './commands/exec.ts',
  status: './commands/status.ts',
  observe: './commands/observe.ts',
  ui: './commands/ui.ts',
  ai: './commands/ai.ts',
  endpoint: './commands/endpoint.ts',
  agent: './commands/agent.ts',
  connectivity: './commands/connectivity.ts',
  node: './commands/node.ts',
};

/** Every command module, in the order `membrane --help` lists them. */
export const ALL_COMMAND_MODULES: readonly string[] = [...new Set(Object.values(COMMAND_MODULES))];

/** The modules to import for `argv` (process.argv without node and the script). */
export function commandModulesFor(argv: readonly string[]): readonly string[] {
  const first = argv[0];
  return first !== undefined && Object.hasOwn(COMMAND_MODULES, first) ? [COMMAND_MODULES[first]!] : ALL_COMMAND_MODULES;
}
