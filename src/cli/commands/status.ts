/** `membrane status`: cilium-dbg status style, one line per component, `-o json` for scripts. */
import type { Command } from 'commander';
import pc from 'picocolors';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';
import { table } from '../output.ts';
import type { StatusView } from '../../agent/views.ts';
import type { MembraneConfig } from '../../common/config.ts';
import { labPaths } from '../../common/paths.ts';
import { labRelay } from '../../lab/relay.ts';
import { relayClientTls } from '../../lab/hubble-certs.ts';
import { observerClient, parseServer } from '../../hubble/client.ts';

/** The lab's Hubble Relay as `status` shows it (asked with the lab's client certificate). */
export interface RelayStatusView {
  state: 'Ok' | 'Warning' | 'Failure';
  address: string;
  tls: boolean;
  connected?: number;
  unavailable?: string[];
  message?: string;
}

async function relayStatus(config: MembraneConfig): Promise<RelayStatusView | undefined> {
  const paths = labPaths(config);
  const r = labRelay(paths);
  if (!r) return undefined;
  try {
    const c = observerClient(parseServer(r.address), r.tls ? relayClientTls(paths.stateDir) : undefined);
    const s = await c.serverStatus({}, { timeoutMs: 5000 });
    const connected = s.numConnectedNodes ?? 0;
    return { state: s.unavailableNodes.length ? 'Warning' : 'Ok', address: r.address, tls: r.tls, connected, unavailable: [...s.unavailableNodes] };
  } catch (e) {
    return { state: 'Failure', address: r.address, tls: r.tls, message: (e as Error).message };
  }
}

function relayRow(r: RelayStatusView): string {
  const how = `${r.address} ${r.tls ? 'mutual TLS' : 'PLAIN TEXT'}`;
  if (r.message !== undefined) return `${how}, ${r.message}`;
  const total = (r.connected ?? 0) + (r.unavailable?.length ?? 0);
  return `${how}, ${r.connected}/${total} nodes connected${r.unavailable?.length ? `, unavailable: ${r.unavailable.join(', ')}` : ''}`;
}

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

/** Cilium's `Encryption:` line: `Wireguard [NodeEncryption: Disabled, cilium_wg0 (Pubkey: …, Port: 51871, Peers: 2)]`. */
export function encryptionRow(e: NonNullable<StatusView['encryption']>): string {
  if (!e.wireguard) return '';
  const ifs = e.wireguard.interfaces.map((i) => `${i.name} (Pubkey: ${i.publicKey}, Port: ${i.listenPort}, Peers: ${i.peerCount})`);
  return `[NodeEncryption: ${e.wireguard.nodeEncryption}, ${ifs.join(', ')}]`;
}

export function formatStatus(s: StatusView, useColour: boolean, relay?: RelayStatusView): string {
  const rows: string[][] = [
    ['Node:', s.node, `lab ${s.lab}`],
    ['Agent:', colour(s.agent.state, s.agent.state, useColour), `pid ${s.agent.pid}, up ${Math.round(s.agent.uptimeSeconds)}s, ${s.agent.version}${s.agent.restarts !== undefined ? `, ${s.agent.restarts} restart(s)` : ''}${s.agent.lastExit ? `, last exit ${s.agent.lastExit.at}: ${s.agent.lastExit.reason} after ${s.agent.lastExit.ranSeconds}s` : ''}`],
    ['Datapath:', colour(s.datapath.state, s.datapath.state, useColour), `${s.datapath.mode}, ${s.datapath.programs} programs attached${s.datapath.message ? `, ${s.datapath.message}` : ''}`],
    ...(s.kvstore ? [['KVStore:', colour(s.kvstore.state, s.kvstore.state, useColour), s.kvstore.message]] : []),
    ...(s.cluster ? [['Cluster:', colour('Ok', 'Ok', useColour), `${s.cluster.nodes.length} node(s) registered: ${s.cluster.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`]] : []),
    ...(s.encryption ? [['Encryption:', s.encryption.mode, encryptionRow(s.encryption)]] : []),
    ['Endpoints:', colour(s.endpoints.notReady ? 'Warning' : 'Ok', s.endpoints.notReady ? 'Warning' : 'Ok', useColour), `${s.endpoints.ready}/${s.endpoints.total} ready`],
    ['Policy:', colour('Ok', 'Ok', useColour), `revision ${s.policy.revision}, ${s.policy.policies} policies, ${s.policy.identities} identities, enforcement ${s.policy.enforcement}, ${auditLine(s.policy.auditMode)}`],
    ['Hubble:', colour(s.hubble.state, s.hubble.state, useColour), `Current/Max Flows: ${s.hubble.flows.toLocaleString('en-US')}/${s.hubble.maxFlows.toLocaleString('en-US')}, seen ${s.hubble.seenFlows.toLocaleString('en-US')}, lost ${s.hubble.lost}, ${s.hubble.socket}${listen(s.hubble.listen)}${s.hubble.metrics ? `, metrics ${s.hubble.metrics}` : ''}`],
    ...(relay ? [['Hubble Relay:', colour(relay.state, relay.state, useColour), relayRow(relay)]] : []),
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
      const relay = await relayStatus(config);
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(relay ? { ...s, relay } : s, null, 2) + '\n');
      const useColour = o.color === 'always' || (o.color === 'auto' && !!process.stdout.isTTY && !config.noColor);
      process.stdout.write(formatStatus(s, useColour, relay));
      if (s.errors.length || s.agent.state !== 'Ok' || s.datapath.state === 'Failure') process.exitCode = 1;
    });
}
