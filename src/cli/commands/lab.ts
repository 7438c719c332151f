/** `membrane up [--nodes N] [-f FILE|DIR ...]`, `membrane down`, `membrane lab status`. */
import type { Command } from 'commander';
import { labPaths } from '../../agent/paths.ts';
import type { ApplyResponse } from '../../agent/views.ts';
import { loadAll, printApplyResults } from './resources.ts';
import { labDown, labStatus, labUp } from '../../lab/index.ts';
import { callAgent } from '../client.ts';
import { table } from '../output.ts';

export function register(program: Command): void {
  program.command('up')
    .description('Start the local lab: node namespaces with their agents, the world hosts (idempotent)')
    .option('--nodes <n>', 'number of nodes', (v) => Number(v))
    .option('-f, --filename <path...>', 'apply these files once the lab is up')
    .option('-q, --quiet', 'print nothing but errors')
    .action(async (o: { nodes?: number; filename?: string[]; quiet?: boolean }) => {
      const say = (m: string) => { if (!o.quiet) process.stderr.write(`${m}\n`); };
      const resources = o.filename?.length ? await loadAll(o.filename) : [];
      const r = await labUp({ ...(o.nodes ? { nodes: o.nodes } : {}), progress: say });
      if (resources.length) {
        const res = await callAgent<ApplyResponse>(r.nodes[0]!.socket, 'POST', '/v1/apply', { resources, dryRun: false });
        printApplyResults(res);
      }
      say(`lab ${r.lab} is up: ${r.nodes.length} node(s); try \`membrane status\``);
    });

  program.command('down')
    .description('Remove the lab: agents, workloads, namespaces, links, pinned maps, state')
    .action(async () => {
      const r = await labDown({ progress: (m) => process.stderr.write(`${m}\n`) });
      process.stderr.write(`lab ${r.lab} is down (${r.namespaces.length} namespace(s), ${r.processes} process(es) stopped)\n`);
    });

  const lab = program.command('lab').description('The local lab');
  lab.command('status')
    .description('Namespaces and agent processes of the lab')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }) => {
      const s = await labStatus(labPaths());
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      const rows = [['NODE', 'AGENT', 'PID', 'SOCKET']];
      for (const n of s.nodes) rows.push([n.node, n.agentAlive ? 'running' : 'stopped', String(n.agentPid ?? '-'), n.socket]);
      rows.push(['world', s.world.alive ? 'running' : 'stopped', String(s.world.pid ?? '-'), '-']);
      process.stdout.write(`lab ${s.lab}: ${s.namespaces.length} namespace(s)\n` + table(rows));
      if (!s.nodes.length) process.exitCode = 1;
    });
}
