/** kubectl verbs: apply -f, delete -f, get. */
import type { Command } from 'commander';
import { loadPaths } from '../../api/load.ts';
import { policyCheck } from '../../policy/check.ts';
import { MembraneError } from '../../common/errors.ts';
import { callAgent } from '../../agent/api-client.ts';
import { agentSocketFor } from '../lab-target.ts';
import { age, table } from '../output.ts';
import type { ApplyResponse, EndpointView, IdentityView, NodeView, PolicyView } from '../../agent/views.ts';
import type { Resource } from '../../api/types.ts';
import type { MembraneConfig } from '../../common/config.ts';

const KIND_PATH: Record<string, string> = {
  CiliumNetworkPolicy: 'ciliumnetworkpolicy.cilium.io', CiliumClusterwideNetworkPolicy: 'ciliumclusterwidenetworkpolicy.cilium.io',
  NetworkPolicy: 'networkpolicy.networking.k8s.io', Deployment: 'deployment.apps', ExternalHost: 'externalhost.membrane.dev',
  AIPolicy: 'aipolicy.membrane.dev',
};
const kindPath = (k: string) => KIND_PATH[k] ?? k.toLowerCase();

/** Loads files for apply/delete; any problem in any file means nothing is sent to the agent. */
export async function loadAll(files: string[]): Promise<Resource[]> {
  const { resources, issues } = await loadPaths(files, { policyCheck });
  if (issues.length) {
    throw Object.assign(new MembraneError('API_INVALID', `${issues.length} problem(s) in the input; nothing was applied`, { hint: 'fix the errors above and apply again' }), { issues });
  }
  return resources;
}

export function printApplyResults(res: ApplyResponse): void {
  for (const r of res.results) process.stdout.write(`${kindPath(r.kind)}/${r.name} ${r.action}${res.dryRun ? ' (dry run)' : ''}\n`);
}

export function register(program: Command, config: MembraneConfig): void {
  program.command('apply')
    .description('Create or update resources from YAML/JSON files, directories or - (stdin)')
    .requiredOption('-f, --filename <path...>', 'file, directory or - (repeatable)')
    .option('--dry-run', 'validate and show what would change, change nothing')
    .option('--node <name>', 'agent to talk to')
    .action(async (o: { filename: string[]; dryRun?: boolean; node?: string }) => {
      const resources = await loadAll(o.filename);
      const res = await callAgent<ApplyResponse>(agentSocketFor(config, o.node), 'POST', '/v1/apply', { resources, dryRun: !!o.dryRun });
      printApplyResults(res);
    });

  program.command('delete')
    .description('Delete the resources named in YAML/JSON files')
    .requiredOption('-f, --filename <path...>', 'file, directory or -')
    .option('--node <name>', 'agent to talk to')
    .action(async (o: { filename: string[]; node?: string }) => {
      const resources = await loadAll(o.filename);
      const res = await callAgent<ApplyResponse>(agentSocketFor(config, o.node), 'POST', '/v1/delete', { resources });
      for (const r of res.results) {
        if (r.action === 'not-found') process.stderr.write(`Error from server (NotFound): ${kindPath(r.kind)} "${r.name}" not found\n`);
        else process.stdout.write(`${kindPath(r.kind)} "${r.name}" deleted\n`);
      }
    });

  program.command('get')
    .description('List pods, endpoints, identities, policies, services, namespaces, deployments')
    .argument('<what>', 'pods|nodes|endpoints|identities|policies|services|namespaces|deployments|externalhosts|secrets')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-A, --all-namespaces', 'all namespaces')
    .option('-o, --output <fmt>', 'wide|json')
    .option('--node <name>', 'agent to talk to')
    .action(async (what: string, o: { namespace: string; allNamespaces?: boolean; output?: string; node?: string }) => {
      const sock = agentSocketFor(config, o.node);
      const ns = o.allNamespaces ? undefined : o.namespace;
      const q = ns ? `?namespace=${encodeURIComponent(ns)}` : '';
      const json = o.output === 'json';
      const wide = o.output === 'wide';
      const nsCol = (x: { namespace?: string }) => (o.allNamespaces ? [x.namespace ?? ''] : []);
      const nsHead = o.allNamespaces ? ['NAMESPACE'] : [];
      const kind = normaliseKind(what);
      if (kind === 'endpoints') {
        const { items } = await callAgent<{ items: EndpointView[] }>(sock, 'GET', `/v1/endpoints${q}`);
        if (json) return printList(items);
        const rows = [[...nsHead, 'ENDPOINT', 'POD', 'IDENTITY', 'INGRESS ENFORCEMENT', 'EGRESS ENFORCEMENT', 'IPV4', 'STATE', ...(wide ? ['NODE', 'INTERFACE', 'POLICY ENTRIES', 'LABELS'] : [])]];
        for (const e of items) rows.push([...nsCol(e), String(e.id), e.pod, String(e.identity), enforcementLabel(e.policyEnforcement.ingress, e.policyAuditMode), enforcementLabel(e.policyEnforcement.egress, e.policyAuditMode), e.ipv4, e.state, ...(wide ? [e.node, e.hostIfname, String(e.policyEntries), e.labels.join(',')] : [])]);
        return void process.stdout.write(table(rows));
      }
      if (kind === 'nodes') {
        const { items } = await callAgent<{ items: NodeView[] }>(sock, 'GET', '/v1/nodes');
        if (json) return printList(items);
        const rows = [['NAME', 'STATUS', 'INTERNAL-IP', 'POD-CIDR', ...(wide ? ['ROUTER-IP', 'WIREGUARD-PUBKEY'] : [])]];
        // dual stack: both pod CIDRs, as kubectl prints a node's podCIDRs
        const cidrs = (n: NodeView) => [n.podCIDR, n.podCIDRv6].filter(Boolean).join(',') || '<none>';
        const routers = (n: NodeView) => [n.routerIP, n.routerIPv6].filter(Boolean).join(',') || '<none>';
        for (const n of items) rows.push([n.name, n.status, n.internalIP, cidrs(n), ...(wide ? [routers(n), n.wireguardPubKey ?? '<none>'] : [])]);
        return void process.stdout.write(table(rows));
      }
      if (kind === 'identities') {
        const { items } = await callAgent<{ items: IdentityView[] }>(sock, 'GET', '/v1/identities');
        if (json) return printList(items);
        const rows = [['ID', 'SCOPE', 'REFS', 'LABELS']];
        for (const i of items) rows.push([String(i.id), i.scope, String(i.references), i.labels.join(' ')]);
        return void process.stdout.write(table(rows));
      }
      if (kind === 'policies') {
        const { items } = await callAgent<{ items: PolicyView[] }>(sock, 'GET', `/v1/policies${q}`);
        if (json) return printList(items);
        const rows = [[...nsHead, 'KIND', 'NAME', 'RULES', 'SELECTED', 'REVISION', 'AGE', ...(wide ? ['SOURCE'] : [])]];
        for (const p of items) rows.push([...nsCol(p), p.kind, p.name, String(p.rules), String(p.selectedEndpoints), String(p.revision), age(p.createdAt), ...(wide ? [`${p.file}:${p.line}`] : [])]);
        return void process.stdout.write(table(rows));
      }
      const { items } = await callAgent<{ items: (Resource & { status?: Record<string, unknown> })[] }>(sock, 'GET', `/v1/resources?kind=${kind}${ns ? `&namespace=${encodeURIComponent(ns)}` : ''}`);
      if (json) return printList(items.map(({ source: _s, ...r }) => r));
      if (kind === 'Pod') {
        const rows = [[...nsHead, 'NAME', 'READY', 'STATUS', 'IP', ...(wide ? ['NODE', 'IDENTITY', 'ENDPOINT'] : [])]];
        for (const p of items as (Resource & { kind: 'Pod'; status?: { phase?: string; podIP?: string; ready?: string; identity?: number; endpointId?: number } })[]) {
          rows.push([...nsCol(p.metadata), p.metadata.name, p.status?.ready ?? '0/1', p.status?.phase ?? 'Pending', p.status?.podIP ?? '<none>', ...(wide ? [p.spec.nodeName ?? '<none>', String(p.status?.identity ?? ''), String(p.status?.endpointId ?? '')] : [])]);
        }
        return void process.stdout.write(table(rows));
      }
      if (kind === 'Service') {
        // CLUSTER-IP lists every family's address of a dual-stack Service (clusterIPs, primary first)
        const rows = [[...nsHead, 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)', 'AGE', ...(wide ? ['SELECTOR'] : [])]];
        for (const sv of items as (Resource & { kind: 'Service' })[]) {
          const ports = (sv.spec.ports ?? []).map((pt) => `${pt.port}/${pt.protocol ?? 'TCP'}`).join(',') || '<none>';
          const sel = Object.entries(sv.spec.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>';
          rows.push([...nsCol(sv.metadata), sv.metadata.name, sv.spec.type ?? 'ClusterIP', (sv.spec.clusterIPs ?? (sv.spec.clusterIP ? [sv.spec.clusterIP] : [])).join(',') || '<pending>', ports,
            age((sv.metadata as { creationTimestamp?: string }).creationTimestamp), ...(wide ? [sel] : [])]);
        }
        return void process.stdout.write(table(rows));
      }
      const rows = [[...(kind === 'Namespace' || kind === 'ExternalHost' ? [] : nsHead), 'NAME', 'AGE']];
      for (const r of items) rows.push([...(kind === 'Namespace' || kind === 'ExternalHost' ? [] : nsCol(r.metadata)), r.metadata.name, age((r.metadata as { creationTimestamp?: string }).creationTimestamp)]);
      process.stdout.write(table(rows));
    });
}

function printList(items: unknown[]): void {
  process.stdout.write(JSON.stringify({ apiVersion: 'v1', kind: 'List', items, metadata: { resourceVersion: '' } }, null, 2) + '\n');
}

function normaliseKind(what: string): string {
  const w = what.toLowerCase();
  const map: Record<string, string> = {
    po: 'Pod', pod: 'Pod', pods: 'Pod', ep: 'endpoints', endpoint: 'endpoints', endpoints: 'endpoints', cep: 'endpoints',
    identity: 'identities', identities: 'identities', id: 'identities', no: 'nodes', node: 'nodes', nodes: 'nodes',
    policy: 'policies', policies: 'policies', netpol: 'NetworkPolicy', networkpolicies: 'NetworkPolicy', cnp: 'CiliumNetworkPolicy',
    ciliumnetworkpolicies: 'CiliumNetworkPolicy', ccnp: 'CiliumClusterwideNetworkPolicy', ciliumclusterwidenetworkpolicies: 'CiliumClusterwideNetworkPolicy',
    svc: 'Service', service: 'Service', services: 'Service', ns: 'Namespace', namespace: 'Namespace', namespaces: 'Namespace',
    deploy: 'Deployment', deployment: 'Deployment', deployments: 'Deployment', secret: 'Secret', secrets: 'Secret',
    externalhost: 'ExternalHost', externalhosts: 'ExternalHost', aipolicy: 'AIPolicy', aipolicies: 'AIPolicy',
  };
  const k = map[w];
  if (!k) throw new MembraneError('CLI_UNKNOWN_RESOURCE', `unknown resource type "${what}"`, { hint: 'one of: pods, nodes, endpoints, identities, policies, services, namespaces, deployments, secrets, externalhosts, aipolicies' });
  return k;
}

/**
 * An enforcement column as `cilium endpoint list` shows it: an enforced direction of an endpoint
 * in audit mode drops nothing, so it reads "Disabled (Audit)".
 */
export function enforcementLabel(enforced: boolean, audit: boolean): string {
  return enforced ? (audit ? 'Disabled (Audit)' : 'Enabled') : 'Disabled';
}
