/** `membrane status`: cilium-dbg status style, one line per component, `-o json` for scripts. */
import type { Command } from 'commander';
import pc from 'picocolors';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';
import { table } from '../output.ts';
import type { StatusView } from '../../agent/views.ts';
import type { MembraneConfig } from '../../common/config.ts';

function colour(state: string, text: string, on: boolean): string {
  if (!on) return text;
  return state === 'Ok' ? pc.green(text) : state === 'Disabled' ? pc.cyan(text) : state === 'Warning' ? pc.yellow(text) : pc.red(text);
}

function listen(l: StatusView['hubble']['listen']): string {
  if (!l) return '';
  return l.tls ? `, ${l.address} mutual TLS (${l.serverName}; \`membrane lab hubble\`)` : `, ${l.address} PLAIN TEXT`;
}

/** Policy audit mode: the setting, and the endpoints whose policy drops pass as AUDIT now. */
export function auditLine(a: StatusView['policy']['auditMode'] | undefined): string {
  if (!a) return 'audit mode unknown';
  const n = `${a.endpoints} endpoint${a.endpoints === 1 ? '' : 's'} in audit mode`;
  return `audit mode ${a.global ? 'Enabled' : 'Disabled'}${a.endpoints || a.global ? ` (${n})` : ''}`;
}

export function formatStatus(s: StatusView, useColour: boolean): string {
  const rows: string[][] = [
    ['Node:', s.node, `lab ${s.lab}`],
    ['Agent:', colour(s.agent.state, s.agent.state, useColour), `pid ${s.agent.pid}, up ${Math.round(s.agent.uptimeSeconds)}s, ${s.agent.version}`],
    ['Datapath:', colour(s.datapath.state, s.datapath.state, useColour), `${s.datapath.mode}, ${s.datapath.programs} programs attached${s.datapath.message ? `, ${s.datapath.message}` : ''}`],
    ...(s.kvstore ? [['KVStore:', colour(s.kvstore.state, s.kvstore.state, useColour), s.kvstore.message]] : []),
    ...(s.cluster ? [['Cluster:', colour('Ok', 'Ok', useColour), `${s.cluster.nodes.length} node(s) registered: ${s.cluster.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`]] : []),
    ['Endpoints:', colour(s.endpoints.notReady ? 'Warning' : 'Ok', s.endpoints.notReady ? 'Warning' : 'Ok', useColour), `${s.endpoints.ready}/${s.endpoints.total} ready`],
    ['Policy:', colour('Ok', 'Ok', useColour), `revision ${s.policy.revision}, ${s.policy.policies} policies, ${s.policy.identities} identities, enforcement ${s.policy.enforcement}, ${auditLine(s.policy.auditMode)}`],
    ['Hubble:', colour(s.hubble.state, s.hubble.state, useColour), `Current/Max Flows: ${s.hubble.flows.toLocaleString('en-US')}/${s.hubble.maxFlows.toLocaleString('en-US')}, seen ${s.hubble.seenFlows.toLocaleString('en-US')}, lost ${s.hubble.lost}, ${s.hubble.socket}${listen(s.hubble.listen)}${s.hubble.metrics ? `, metrics ${s.hubble.metrics}` : ''}`],
  ];
  for (const p of s.proxies) rows.push([`Proxy ${p.name}:`, colour(p.state === 'listening' ? 'Ok' : 'Warning', p.state, useColour), `port ${p.port}`]);
  let out = table(rows, 2);
  if (s.errors.length) out += `Errors:\n${s.errors.map((e) => `  ${colour('Failure', '-', useColour)} ${e}`).join('\n')}\n`;
  return out;
}

export function register(program: Command, config: MembraneConfig): void {
  program.command('status')
    .description('Health of the node agent, datapath, endpoints, policy and flows')
    .option('-o, --output <fmt>', 'json')
    .option('--node <name>', 'agent to ask')
    .option('--color <when>', 'auto|always|never', 'auto')
    .action(async (o: { output?: string; node?: string; color: string }) => {
      const s = await callAgent<StatusView>(agentSocketFor(config, o.node), 'GET', '/v1/status');
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      const useColour = o.color === 'always' || (o.color === 'auto' && !!process.stdout.isTTY && !config.noColor);
      process.stdout.write(formatStatus(s, useColour));
      if (s.errors.length || s.agent.state !== 'Ok' || s.datapath.state === 'Failure') process.exitCode = 1;
    });
}
