/** `membrane up [--nodes N] [-f FILE|DIR ...]`, `membrane down`, `membrane lab status|ca|hubble`. */
import { Option, type Command } from 'commander';
import { SETTINGS, isFlagSetting, settingsHelp, withFlags, type ConfigFlags, type MembraneConfig } from '../../common/config.ts';
import { labPaths } from '../../common/paths.ts';
import type { ApplyResponse } from '../../agent/views.ts';
import { loadAll, printApplyResults } from './resources.ts';
import { labDown, labStatus, labUp } from '../../lab/index.ts';
import { callAgent } from '../../agent/api-client.ts';
import { table } from '../output.ts';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { MembraneError } from '../../common/errors.ts';
import { caCertPath, caDir } from '../../lab/ca.ts';
import { hubbleTlsPaths } from '../../lab/index.ts';
import { registerLabHubble } from './lab-hubble.ts';
import { registerLabMetrics } from './lab-metrics.ts';

export function register(program: Command, config: MembraneConfig): void {
  const up = program.command('up')
    .description('Start the local lab: node namespaces with their agents, the world hosts (idempotent)')
    .option('--nodes <n>', 'number of nodes', (v) => Number(v))
    .option('-f, --filename <path...>', 'apply these files once the lab is up')
    .option('-q, --quiet', 'print nothing but errors');
  // Every lab and agent setting as a flag; the agents start with the resulting configuration.
  const settingOf = new Map<string, (typeof SETTINGS)[number]>();
  for (const s of SETTINGS.filter((x) => x.scope !== 'cli')) {
    const opt = new Option(`${s.flag} ${isFlagSetting(s) ? '[value]' : '<value>'}`, s.help).hideHelp();
    settingOf.set(opt.attributeName(), s);
    up.addOption(opt);
  }
  up.addHelpText('after', `\n${settingsHelp()}`);
  up.action(async (o: { nodes?: number; filename?: string[]; quiet?: boolean } & Record<string, unknown>) => {
      const flags: ConfigFlags = {};
      for (const [attr, s] of settingOf) if (typeof o[attr] === 'string' || o[attr] === true) flags[s.name] = o[attr] === true ? 'true' : o[attr] as string;
      const cfg = withFlags(config, flags);
      const say = (m: string) => { if (!o.quiet) process.stderr.write(`${m}\n`); };
      const resources = o.filename?.length ? await loadAll(o.filename) : [];
      const r = await labUp({ config: cfg, ...(o.nodes ? { nodes: o.nodes } : {}), progress: say });
      if (resources.length) {
        const res = await callAgent<ApplyResponse>(r.nodes[0]!.socket, 'POST', '/v1/apply', { resources, dryRun: false });
        printApplyResults(res);
      }
      const h = hubbleTlsPaths(labPaths(cfg).stateDir);
      say(`Hubble API: ${labPaths(cfg).hubbleSocket(r.nodes[0]!.node)} (root only) and TCP 4244 in each node namespace with mutual TLS`);
      say(`  (Hubble CA ${h.caCert}); \`membrane lab hubble\` prints the hubble CLI flags`);
      say(`lab ${r.lab} is up: ${r.nodes.length} node(s); try \`membrane status\``);
      say('UI: `membrane ui` serves it at http://127.0.0.1:12000');
    });

  program.command('down')
    .description('Remove the lab: agents, workloads, namespaces, links, pinned maps, state')
    .action(async () => {
      const r = await labDown({ config, progress: (m) => process.stderr.write(`${m}\n`) });
      process.stderr.write(`lab ${r.lab} is down (${r.namespaces.length} namespace(s), ${r.processes} process(es) stopped)\n`);
    });

  const lab = program.command('lab').description('The local lab');
  lab.command('status')
    .description('Namespaces and agent processes of the lab')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }) => {
      const s = await labStatus(labPaths(config));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      const rows = [['NODE', 'AGENT', 'PID', 'SUPERVISOR', 'RESTARTS', 'LAST EXIT', 'SOCKET']];
      for (const n of s.nodes) rows.push([n.node, n.agentAlive ? 'running' : 'stopped', String(n.agentPid ?? '-'), n.supervisorPid ? String(n.supervisorPid) : 'none', String(n.restarts ?? 0), n.lastExit ?? '-', n.socket]);
      rows.push(['world', s.world.alive ? 'running' : 'stopped', String(s.world.pid ?? '-'), '-', '-', '-', '-']);
      process.stdout.write(`lab ${s.lab}: ${s.namespaces.length} namespace(s)\n` + table(rows));
      if (!s.nodes.length) process.exitCode = 1;
    });

  lab.command('ca')
    .description('The lab CA: its path, how a pod trusts it, and Secrets for TLS interception (terminatingTLS/originatingTLS)')
    .option('--secret <name>', 'print a v1 Secret (tls.crt, tls.key, ca.crt) for `membrane apply -f -` instead')
    .option('-n, --namespace <ns>', 'namespace of the Secret', 'default')
    .option('--cert <file>', 'CA certificate for tls.crt (default: the lab CA)')
    .option('--key <file>', 'CA private key for tls.key (default: the lab CA key)')
    .option('--trust <file>', 'trust bundle for ca.crt (default: the lab CA, which signs the world hosts)')
    .action((o: { secret?: string; namespace: string; cert?: string; key?: string; trust?: string }) => {
      const paths = labPaths(config);
      const crt = caCertPath(paths.stateDir);
      const key = join(caDir(paths.stateDir), 'ca.key');
      if (!existsSync(crt)) throw new MembraneError('LAB_NO_CA', `lab ${paths.lab} has no CA at ${crt}`, { hint: 'run `membrane up` first (it creates the lab CA)' });
      if (o.secret) {
        if (!!o.cert !== !!o.key) throw new MembraneError('CLI_USAGE', '--cert and --key go together', { hint: 'give both, or neither to use the lab CA' });
        const read = (f: string) => readFileSync(f, 'utf8');
        const secret = {
          apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls', metadata: { name: o.secret, namespace: o.namespace },
          stringData: { 'tls.crt': read(o.cert ?? crt), 'tls.key': read(o.key ?? key), 'ca.crt': read(o.trust ?? crt) },
        };
        process.stdout.write(stringify(secret));
        return;
      }
      process.stdout.write([
        `lab CA: ${crt}`,
        `  The world hosts (api.openai.com, example.com, ...) serve HTTPS with certificates it signs.`,
        ``,
        `A pod trusts it (run with \`membrane exec POD -- ...\`):`,
        `  curl --cacert ${crt} https://api.openai.com/v1/models`,
        `  NODE_EXTRA_CA_CERTS=${crt} node app.js`,
        `  SSL_CERT_FILE=${crt} python app.py        (OpenSSL-based clients; also REQUESTS_CA_BUNDLE for requests)`,
        ``,
        `TLS interception (terminatingTLS + originatingTLS with HTTP rules): the proxy answers with a leaf`,
        `for the requested name issued by the CA in the terminatingTLS Secret (tls.crt, tls.key; the key stays in`,
        `the agent), and verifies the real server against ca.crt of the originatingTLS Secret. Pods must trust the`,
        `interception CA as above.`,
        `  membrane lab ca --secret tls-intercept -n NS | membrane apply -f -                     # the lab CA`,
        `  membrane lab ca --secret tls-intercept -n NS --cert ca.crt --key ca.key | membrane apply -f -   # your CA`,
        `  make a CA: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt \\`,
        `             -days 30 -subj /CN=interception -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign`,
        `  then in toPorts: terminatingTLS: {secret: {name: tls-intercept}}, originatingTLS: {secret: {name: tls-intercept}}`,
        `  (examples/tls/)`,
        ``,
      ].join('\n'));
    });

  registerLabHubble(lab, config);
  registerLabMetrics(lab, config);
}
