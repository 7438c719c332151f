/**
 * `membrane endpoint config <id> [Option=Value...]`: Cilium's `cilium endpoint config`, for the
 * endpoint options membrane implements (PolicyAuditMode). Without options it prints them.
 */
import type { Command } from 'commander';
import { MembraneError } from '../../common/errors.ts';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';
import { table } from '../output.ts';
import type { EndpointView } from '../../agent/views.ts';
import type { MembraneConfig } from '../../common/config.ts';

export const ENDPOINT_OPTIONS = ['PolicyAuditMode'] as const;

// Cilium's option parser accepts these spellings of on and off (pkg/option NormalizeBool)
const ON = new Set(['enabled', 'enable', 'true', 'on', '1']);
const OFF = new Set(['disabled', 'disable', 'false', 'off', '0']);

/** Parses `Option=Value` arguments; `default` returns an option to the agent's setting (null). */
export function parseEndpointOptions(args: string[]): { PolicyAuditMode?: boolean | null } {
  const out: { PolicyAuditMode?: boolean | null } = {};
  for (const a of args) {
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    const raw = eq < 0 ? 'enabled' : a.slice(eq + 1); // Cilium: a bare option name enables it
    if (!(ENDPOINT_OPTIONS as readonly string[]).includes(name)) {
      throw new MembraneError('CLI_ENDPOINT_OPTION', `unknown endpoint option "${name}"; nothing was changed`, { hint: `membrane implements: ${ENDPOINT_OPTIONS.join(', ')} (e.g. PolicyAuditMode=Enabled)` });
    }
    const v = raw.toLowerCase();
    if (ON.has(v)) out.PolicyAuditMode = true;
    else if (OFF.has(v)) out.PolicyAuditMode = false;
    else if (v === 'default') out.PolicyAuditMode = null;
    else throw new MembraneError('CLI_ENDPOINT_OPTION', `${name}=${raw}: not Enabled, Disabled or default; nothing was changed`, { hint: `${name}=Enabled, ${name}=Disabled, or ${name}=default (the agent's --policy-audit-mode)` });
  }
  return out;
}

function printOptions(e: EndpointView): void {
  const rows = [['OPTION', 'VALUE', 'IN EFFECT']];
  rows.push(['PolicyAuditMode', e.options.PolicyAuditMode, e.policyAuditMode ? 'Enabled' : 'Disabled']);
  process.stdout.write(table(rows));
}

export function register(program: Command, config: MembraneConfig): void {
  const ep = program.command('endpoint').description('Endpoint configuration (Cilium\'s `cilium endpoint`)');
  ep.command('config')
    .description('Show or set an endpoint\'s options, e.g. PolicyAuditMode=Enabled (Cilium\'s `cilium endpoint config`)')
    .argument('<id>', 'endpoint id (`membrane get endpoints -A`)')
    .argument('[options...]', 'Option=Value: PolicyAuditMode=Enabled|Disabled|default')
    .option('-o, --output <fmt>', 'json')
    .option('--node <name>', 'agent to talk to')
    .action(async (idArg: string, args: string[], o: { output?: string; node?: string }) => {
      if (!/^\d+$/.test(idArg) || Number(idArg) < 1 || Number(idArg) > 65535) {
        throw new MembraneError('CLI_ENDPOINT_OPTION', `"${idArg}" is not an endpoint id (1..65535)`, { hint: '`membrane get endpoints -A` lists the endpoints and their ids' });
      }
      const id = Number(idArg);
      const sock = agentSocketFor(config, o.node);
      let view: EndpointView | undefined;
      if (args.length) {
        const options = parseEndpointOptions(args);
        view = await callAgent<EndpointView>(sock, 'POST', '/v1/endpoint/config', { id, options });
      } else {
        const { items } = await callAgent<{ items: EndpointView[] }>(sock, 'GET', '/v1/endpoints');
        view = items.find((e) => e.id === id);
        if (!view) throw new MembraneError('API_ENDPOINT_NOT_FOUND', `endpoint ${id} not found`, { hint: '`membrane get endpoints -A` lists the endpoints and their ids' });
      }
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(view, null, 2) + '\n');
      printOptions(view);
    });
}
