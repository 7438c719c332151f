import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { ALL_COMMAND_MODULES, COMMAND_MODULES, commandModulesFor } from '../../../src/cli/command-table.ts';
import { loadConfig, type MembraneConfig } from '../../../src/common/config.ts';

test('the table names exactly the top-level commands each module registers', async () => {
  const registered: Record<string, string> = {};
  for (const path of ALL_COMMAND_MODULES) {
    const program = new Command('membrane');
    const mod = (await import(new URL(path, new URL('../../../src/cli/', import.meta.url)).href)) as { register: (p: Command, c: MembraneConfig) => void };
    mod.register(program, loadConfig());
    for (const c of program.commands) for (const name of [c.name(), ...c.aliases()]) registered[name] = path;
  }
  assert.deepEqual(registered, { ...COMMAND_MODULES });
});

test('a known command imports its module only; help, --version, unknown or no words import them all', () => {
  assert.deepEqual(commandModulesFor(['get', 'pods', '-A']), ['./commands/resources.ts']);
  assert.deepEqual(commandModulesFor(['up', '--nodes', '3']), ['./commands/lab.ts']);
  for (const argv of [[], ['--help'], ['-h'], ['help', 'get'], ['--version'], ['gte', 'pods'], ['constructor'], ['__proto__'], ['toString']]) {
    assert.deepEqual(commandModulesFor(argv), ALL_COMMAND_MODULES, JSON.stringify(argv));
  }
});
