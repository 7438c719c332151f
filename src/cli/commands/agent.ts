/**
 * `membrane agent [--config FILE] [--node-name NAME] [settings]`: host mode. Runs one node's
 * agent in the foreground, in the network namespace it is started in, for containers that
 * membrane-cni attaches (src/cni). Settings: flags win over the environment, which wins over the
 * config file (YAML or JSON, `setting: value`), which wins over the defaults.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Option, type Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { MembraneError } from '../../common/errors.ts';
import { SETTINGS, loadConfig, settingsFromDocument, settingsHelp, type ConfigFlags, type MembraneConfig } from '../../common/config.ts';
import { runHostAgent } from '../../cni/host-agent.ts';

/** host mode's lab name (state under /run/membrane/host, pins under <bpffs>/host-<node>) unless a setting names another */
export const HOST_LAB = 'host';

export function register(program: Command, _config: MembraneConfig): void {
  const cmd = program.command('agent')
    .description('Run the agent on this host (host mode) for containers attached by the membrane-cni plugin')
    .option('--config <file>', 'settings file (YAML/JSON: `pod-cidr: 10.244.7.0/24`, `devices: eth0`, `kvstore-endpoint: ...`)')
    .option('--node-name <name>', 'this node\'s name (default: the hostname)');
  const settingOf = new Map<string, (typeof SETTINGS)[number]>();
  for (const s of SETTINGS.filter((x) => x.scope !== 'cli')) {
    const opt = new Option(`${s.flag} <value>`, s.help).hideHelp();
    settingOf.set(opt.attributeName(), s);
    cmd.addOption(opt);
  }
  cmd.addHelpText('after', `\nHost mode needs --pod-cidr; it attaches only to --devices and never changes the default route.\n\n${settingsHelp()}`);
  cmd.action(async (o: { config?: string; nodeName?: string } & Record<string, unknown>) => {
    const flags: ConfigFlags = {};
    for (const [attr, s] of settingOf) if (typeof o[attr] === 'string') flags[s.name] = o[attr] as string;
    let file: ConfigFlags = {};
    if (o.config) {
      let text: string;
      try { text = readFileSync(o.config, 'utf8'); } catch (e) {
        throw new MembraneError('CONFIG_INVALID', `cannot read the config file ${o.config}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: 'give --config an existing YAML or JSON file' });
      }
      let doc: unknown;
      try { doc = parseYaml(text); } catch (e) {
        throw new MembraneError('CONFIG_INVALID', `${o.config}: not YAML: ${(e as Error).message}`, { hint: 'one `setting: value` per line' });
      }
      file = settingsFromDocument(doc, o.config);
    }
    const config = loadConfig(flags, { lab: HOST_LAB, ...file });
    const node = o.nodeName ?? hostname();
    if (!/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/.test(node)) throw new MembraneError('CONFIG_INVALID', `node name "${node}" is not a DNS label`, { hint: 'set --node-name' });
    await runHostAgent({ config, node });
  });
}
