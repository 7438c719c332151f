/**
 * The agent: one per node. Composition root and the reconcile loop.
 *
 *   apply/delete ─► resource store (kvstore) ─watch─► reconcile (serialized, coalesced)
 *        │                                              │
 *        └─ validate + policy import check first        ├─ Deployments → Pods, Services → ClusterIPs
 *                                                       ├─ Pods on this node → network, identity,
 *                                                       │   endpoint, ipcache, workloads
 *                                                       └─ policy engine → MapState deltas → datapath
 *   datapath events ─► flow sink (hubble)
 *
 * Every step is idempotent, so a restarted agent converges on the same state without disturbing
 * what the pinned datapath keeps enforcing meanwhile.
 */
import type { Datapath, DatapathEndpoint, IPCacheEntry } from '../datapath/types.ts';
import type { KVStore } from '../kvstore/types.ts';
import type { Deployment, Namespace, Pod, PolicyResource, Resource, Service } from '../api/types.ts';
import { resourceKey } from '../api/types.ts';
import { OWNER_ANNOTATION, podOwner } from '../api/deployment.ts';
import { MembraneError } from '../common/errors.ts';
import { createResourceStore, type ResourceStore } from './resources.ts';
import { createEndpointTable, type EndpointOptions, type EndpointRecord, type EndpointTable } from './endpoints.ts';
import { reconcileDeployments } from './controllers/deployments.ts';
import { assignClusterIPs, diffFrontends, serviceFamilies, serviceFrontends, type ServiceFrontend } from './controllers/services.ts';
import type { Logger } from '../common/logger.ts';
import type { PodNetworks, Workloads } from './pod-network.ts';
import type { AgentPolicy } from '../policy/agent-engine.ts';
import type { EndpointView, IdentityView, PolicyView } from './views.ts';
import { ApiRequestError } from './api-server.ts';
import { translateAIPolicy } from '../policy/ai.ts';
import { PolicyImportError } from '../policy/repository.ts';
import type { Issue } from '../common/errors.ts';
import { parseHostPrefix4, parsePrefix } from '../ipcache/prefix.ts';

export interface AgentConfig {
  node: string;
  /** the node's address (Pod status hostIP) */
  hostIp: string;
  lab: string;
  /** Cilium's --policy-audit-mode: the audit mode of every endpoint without its own PolicyAuditMode option */
  policyAuditMode?: boolean;
  /** Cilium's enable-ipv6: Services may have IPv6 cluster IPs (dual stack) */
  enableIPv6?: boolean;
}

export interface AgentDeps {
  config: AgentConfig;
  kv: KVStore;
  datapath: Datapath;
  networks: PodNetworks;
  workloads: Workloads;
  policy: AgentPolicy;
  logger: Logger;
  /** Called after each reconcile with the prefixes the policy engine wants in the ipcache (CIDR identities). */
  extraIPCache?: () => IPCacheEntry[];
  /** In a cluster: who runs the cluster-wide controllers, and where new pods go (src/agent/cluster.ts). */
  cluster?: { isLeader(): boolean; schedule(pods: Pod[], existing: Pod[]): void; holds(prefix: string): boolean };
  /** Told of each policy import or delete that was not a dry run (cilium_policy_change_total). */
  onPolicyChange?: (outcome: 'success' | 'failure', count: number) => void;
}

const POLICY_KINDS = new Set(['CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy', 'NetworkPolicy']);
const NAMESPACED = new Set(['CiliumNetworkPolicy', 'NetworkPolicy', 'Pod', 'Deployment', 'Service', 'Secret', 'AIPolicy']);

export interface Agent {
  start(): Promise<void>;
  stop(): Promise<void>;
  resources: ResourceStore;
  apply(rs: Resource[], dryRun: boolean): Promise<import('./resources.ts').ApplyResult[]>;
  remove(rs: Resource[]): Promise<import('./resources.ts').ApplyResult[]>;
  endpoints(): EndpointView[];
  identities(): IdentityView[];
  policies(namespace?: string): Promise<PolicyView[]>;
  /** Resolves when everything applied so far is in the datapath (runs one more reconcile). */
  settled(): Promise<void>;
  /**
   * Resolves when the reconciles already asked for (by apply/remove, or by a watched change)
   * have run, without asking for another: what a caller that just applied through this agent
   * waits for (CNI ADD/DEL: one reconcile per container, not two or three).
   */
  idle(): Promise<void>;
  /**
   * Removes the kernel's ipcache entries that nothing claims now: left by an earlier agent for a
   * pod deleted, a policy CIDR dropped or a remote endpoint gone while no agent ran (the pinned map
   * survives restarts). Run once after the first reconcile and the cluster's first listing; an
   * address left with its old identity would keep that identity's permissions for whoever gets
   * the address next. Returns the prefixes removed.
   */
  pruneStaleIPCache(): Promise<string[]>;
  lastErrors(): string[];
  endpointTable(): EndpointTable;
  /**
   * Sets (true/false) or clears (null: back to the agent's setting) an endpoint's options, as
   * `cilium endpoint config <id> PolicyAuditMode=Enabled` does; returns the endpoint's view.
   */
  configureEndpoint(id: number, options: { PolicyAuditMode?: boolean | null }): Promise<EndpointView>;
}

export async function createAgent(deps: AgentDeps): Promise<Agent> {
  const { config, kv, datapath, networks, workloads, policy, logger } = deps;
  const log = logger.child({ subsys: 'agent', node: config.node });
  const resources = createResourceStore(kv);
  // reads from the followed copy from here on: the kvstore away stops writes, not the agent
  await resources.start();
  const table = await createEndpointTable(kv, config.node);
  const errors: string[] = [];
  const ready = new Map<number, { state: EndpointView['state']; policyRevision: number; policyEntries: number }>();
  let unwatch: (() => void) | undefined;
  let running = false;
  let pending: Promise<void> = Promise.resolve();
  let dirty = false;
  let extraPrefixes = new Set<string>();
  /** service frontends as last pushed to the datapath (only diffs are pushed) */
  let frontends = new Map<string, ServiceFrontend>();
  let servicesLoaded = false;
  /** Stored policies that no longer validate (stored by an older version): key → their issues. */
  let rejectedStored = new Map<string, Issue[]>();
  /**
   * What this agent wrote to the store itself (key → the JSON written, or DELETED), until the
   * watch event of that write comes back. That event is the agent's own echo and needs no
   * reconcile: apply/remove reconcile after their write anyway, and the pass that wrote a Pod
   * status already used it. Without this, each write costs two reconciles (the echo arrives
   * while the first runs). Any other write of the key, from anyone, still triggers one.
   */
  const ownWrites = new Map<string, string>();
  const DELETED = '\u0000deleted';
  const expectEcho = (r: { kind: string; metadata: { name: string; namespace?: string } }, json: string) => ownWrites.set(resourceKey(r), json);
  const isOwnEcho = (ev: { type: 'put'; resource: Resource } | { type: 'delete'; key: string }): boolean => {
    const k = ev.type === 'put' ? resourceKey(ev.resource) : ev.key;
    const v = ownWrites.get(k);
    if (v === undefined) return false;
    ownWrites.delete(k);
    return v === (ev.type === 'put' ? JSON.stringify(ev.resource) : DELETED);
  };

  function noteError(msg: string, err: unknown): void {
    const line = `${new Date().toISOString()} ${msg}: ${(err as Error)?.message ?? String(err)}`;
    errors.push(line);
    if (errors.length > 20) errors.shift();
    log.error({ err }, msg);
  }

  /** Coalesces change notifications into one reconcile at a time. */
  function kick(): Promise<void> {
    dirty = true;
    pending = pending.then(async () => {
      if (!dirty || !running) return;
      dirty = false;
      try {
        await reconcile();
      } catch (e) {
        noteError('reconcile failed', e);
      }
    });
    return pending;
  }

  async function reconcile(): Promise<void> {
    const all = await resources.list();
    const of = <K extends Resource['kind']>(k: K) => all.filter((r): r is Extract<Resource, { kind: K }> => r.kind === k);

    // Controllers that write back to the store (their writes trigger another pass).
    // In a cluster only the leader runs them (deterministic names, but one writer).
    const lead = deps.cluster?.isLeader() ?? true;
    const { create, delete: gone } = lead ? reconcileDeployments(of('Deployment') as Deployment[], of('Pod') as Pod[]) : { create: [], delete: [] };
    if (deps.cluster) deps.cluster.schedule(create, of('Pod') as Pod[]);
    else for (const p of create) p.spec.nodeName ??= config.node;
    if (create.length) await resources.commit(create);
    if (gone.length) await resources.commitDelete(gone);
    const services = of('Service') as Service[];
    const assigned = lead ? assignClusterIPs(services, { ipv6: config.enableIPv6 ?? false, onError: (s, e) => noteError(`service ${s.metadata.namespace ?? 'default'}/${s.metadata.name}`, e) }) : [];
    for (const s of assigned) await resources.putStatus(s);
    if (create.length || gone.length || assigned.length) dirty = true;

    const namespaces = new Map((of('Namespace') as Namespace[]).map((n) => [n.metadata.name, n]));
    policy.setServices(services);
    importStoredPolicies(all.filter((r): r is PolicyResource => POLICY_KINDS.has(r.kind)));

    const pods = (of('Pod') as Pod[]).filter((p) => (p.spec.nodeName ?? config.node) === config.node && !p.spec.hostNetwork);
    const want = new Map(pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));

    // Endpoints whose pod is gone, or whose labels changed (new identity).
    for (const ep of table.all()) {
      const pod = want.get(`${ep.namespace}/${ep.pod}`);
      if (!pod) await removeEndpoint(ep);
    }
    // statuses written in this pass: the services below see them (their echo does not reconcile again)
    const written = new Map<string, Pod>();
    for (const pod of pods) {
      try {
        const now = await ensureEndpoint(pod, namespaces.get(pod.metadata.namespace ?? 'default'));
        if (now) written.set(resourceKey(now), now);
      } catch (e) {
        noteError(`endpoint ${pod.metadata.namespace}/${pod.metadata.name}`, e);
      }
    }

    // Policy: every endpoint's MapState brought up to date, then written.
    const deltas = policy.regenerate();
    for (const [id, delta] of deltas) {
      await datapath.applyPolicy(id, delta);
      const ms = policy.mapState(id);
      const st = ready.get(id);
      if (st) { st.policyRevision = policy.revision(); st.policyEntries = ms?.entries.size ?? 0; }
    }
    if (deps.extraIPCache) {
      // CIDR/FQDN identities come and go with policies: the datapath mirrors exactly the current set.
      // Endpoint addresses win over policy-derived prefixes for the same /32 (Cilium's ipcache
      // source precedence): a CIDR rule naming a pod's address never relabels the pod.
      const owned = new Set(table.all().flatMap((ep) => endpointPrefixes(ep)));
      // Remote pods and nodes (written as deltas by the daemon) beat CIDR claims too.
      const held = (p: string) => owned.has(p) || (deps.cluster?.holds(p) ?? false);
      const entries = deps.extraIPCache().filter((e) => !held(e.prefix));
      const now = new Set(entries.map((e) => e.prefix));
      const stale = [...extraPrefixes].filter((p) => !now.has(p) && !held(p));
      if (stale.length) await datapath.deleteIPCache(stale);
      await datapath.upsertIPCache(entries);
      extraPrefixes = now;
    }
    await syncServices(services, (of('Pod') as Pod[]).map((p) => written.get(resourceKey(p)) ?? p));
  }

  /**
   * The stored policies into the engine. A stored policy that no longer validates (stored by an
   * older version, e.g. Kafka rules, now rejected) must not stop the reconcile: it is left out,
   * reported in `status` and the log with its code, and every other policy stays enforced.
   */
  function importStoredPolicies(stored: PolicyResource[]): void {
    try {
      policy.setPolicies(stored);
      if (rejectedStored.size) log.info({ policies: [...rejectedStored.keys()] }, 'stored policies no longer rejected');
      rejectedStored = new Map();
      return;
    } catch (e) {
      if (!(e instanceof PolicyImportError)) throw e;
    }
    const ok: PolicyResource[] = [];
    const bad = new Map<string, Issue[]>();
    for (const p of stored) {
      try {
        policy.checkPolicies([p]);
        ok.push(p);
      } catch (e) {
        if (!(e instanceof PolicyImportError)) throw e;
        bad.set(resourceKey(p), e.issues);
      }
    }
    for (const [key, issues] of bad) {
      if (JSON.stringify(rejectedStored.get(key)) === JSON.stringify(issues)) continue;
      log.error({ policy: key, code: issues[0]?.code, issues: issues.map((i) => `${i.code} ${i.file}:${i.line}:${i.col} ${i.path.join('.')}: ${i.message}`) },
        'stored policy no longer validates: not enforced (the other policies are)');
    }
    rejectedStored = bad;
    policy.setPolicies(ok);
  }

  /** ClusterIP load balancing: every Service's frontends with the pods (any node) it selects. */
  async function syncServices(services: Service[], allPods: Pod[]): Promise<void> {
    if (!datapath.upsertService || !datapath.deleteService) return;
    if (!servicesLoaded) {
      // after a restart: what the pinned maps hold, so services deleted meanwhile are removed
      servicesLoaded = true;
      for (const s of (await datapath.listServices?.()) ?? []) frontends.set(`${s.ip}:${s.port}/${s.proto}`, { ...s, service: { namespace: '', name: '' } });
    }
    const d = diffFrontends(frontends, serviceFrontends(services, allPods));
    const next = new Map(frontends);
    for (const f of d.deletes) {
      try {
        await datapath.deleteService({ ip: f.ip, port: f.port, proto: f.proto });
        next.delete(`${f.ip}:${f.port}/${f.proto}`);
      } catch (e) {
        noteError(`service ${f.service.namespace}/${f.service.name} ${f.ip}:${f.port}/${f.proto}`, e);
      }
    }
    for (const f of d.upserts) {
      try {
        await datapath.upsertService({ ip: f.ip, port: f.port, proto: f.proto, backends: f.backends });
        next.set(`${f.ip}:${f.port}/${f.proto}`, f);
      } catch (e) {
        noteError(`service ${f.service.namespace}/${f.service.name} ${f.ip}:${f.port}/${f.proto}`, e);
      }
    }
    frontends = next;
  }

  /** Returns the Pod as stored when this call wrote its status. */
  async function ensureEndpoint(pod: Pod, ns: Namespace | undefined): Promise<Pod | undefined> {
    const nsName = pod.metadata.namespace ?? 'default';
    const have = table.get(nsName, pod.metadata.name);
    const ident = await policy.allocateIdentity({ pod, namespace: ns });
    const workload = podOwner(pod);
    if (have && have.identity === ident.id) {
      if (JSON.stringify(have.workload) !== JSON.stringify(workload)) {
        const { workload: _old, ...rest } = have;
        await table.save({ ...rest, ...(workload ? { workload } : {}) });
      }
      if (ready.has(have.id)) {
        policy.releaseIdentity(ident.id); // allocateIdentity took another reference
        return;
      }
      // First sight of this endpoint in this process (restored after a restart): the reference
      // just taken is the endpoint's own.
      return attach(have, pod, ns);
    }
    const net = await networks.ensure(pod);
    const id = table.idFor(nsName, pod.metadata.name);
    if (have) {
      // Labels changed: same endpoint, new identity.
      policy.removeEndpoint(have.id);
      policy.releaseIdentity(have.identity);
    }
    const rec: EndpointRecord = {
      id, namespace: nsName, pod: pod.metadata.name, identity: ident.id, ip: net.ip, ...(net.ip6 ? { ip6: net.ip6 } : {}), mac: net.mac, netns: net.netns,
      hostIfname: net.hostIfname, hostIfindex: net.hostIfindex, labels: ident.labels, createdAt: have?.createdAt ?? new Date().toISOString(),
      ...(workload ? { workload } : {}),
    };
    await table.save(rec);
    ready.delete(id);
    return attach(rec, pod, ns);
  }

  async function pruneStale(): Promise<string[]> {
    const canon = (p: string) => parsePrefix(p)?.text ?? p;
    const wanted = new Set<string>();
    for (const ep of table.all()) for (const p of endpointPrefixes(ep)) wanted.add(canon(p));
    for (const p of extraPrefixes) wanted.add(canon(p));
    // asked now, not from the last reconcile: a DNS answer may have added an FQDN address since
    for (const e of deps.extraIPCache?.() ?? []) wanted.add(canon(e.prefix));
    const stale: string[] = [];
    for (const p of datapath.ipcachePrefixes()) {
      // an IPv4 host prefix as the datapath reads it back is in its canonical text already (300,000
      // remote pods at 10,000 nodes: no parse and second string each)
      const c = parseHostPrefix4(p) !== undefined ? p : canon(p);
      if (!wanted.has(c) && !(deps.cluster?.holds(c) ?? false)) stale.push(p);
    }
    if (stale.length) {
      await datapath.deleteIPCache(stale);
      log.info({ prefixes: stale.length, sample: stale.slice(0, 5) }, 'stale ipcache entries removed (left by an earlier agent)');
    }
    return stale;
  }

  /** The ipcache prefixes of an endpoint's addresses: its IPv4 /32 and, dual stack, its IPv6 /128. */
  function endpointPrefixes(rec: EndpointRecord): string[] {
    return rec.ip6 ? [`${rec.ip}/32`, `${rec.ip6}/128`] : [`${rec.ip}/32`];
  }

  /** The endpoint's audit mode: its own PolicyAuditMode option, else the agent's setting. */
  function auditMode(rec: EndpointRecord): boolean {
    return rec.options?.PolicyAuditMode ?? config.policyAuditMode ?? false;
  }

  function datapathEndpoint(rec: EndpointRecord): DatapathEndpoint {
    return { id: rec.id, identity: rec.identity, ipv4: rec.ip, ...(rec.ip6 ? { ipv6: rec.ip6 } : {}), mac: rec.mac, ifname: rec.hostIfname, ifindex: rec.hostIfindex, policyAuditMode: auditMode(rec) };
  }

  function endpointView(e: EndpointRecord): EndpointView {
    const st = ready.get(e.id);
    const ms = policy.mapState(e.id);
    return {
      id: e.id, namespace: e.namespace, pod: e.pod, node: config.node, identity: e.identity, labels: e.labels, ipv4: e.ip, ...(e.ip6 ? { ipv6: e.ip6 } : {}),
      hostIfname: e.hostIfname, state: st?.state ?? 'not-ready',
      policyEnforcement: { ingress: ms?.defaultDeny.ingress ?? false, egress: ms?.defaultDeny.egress ?? false },
      policyAuditMode: auditMode(e),
      options: { PolicyAuditMode: e.options?.PolicyAuditMode === undefined ? 'default' : e.options.PolicyAuditMode ? 'Enabled' : 'Disabled' },
      policyRevision: st?.policyRevision ?? 0, policyEntries: ms?.entries.size ?? 0,
    };
  }

  async function configure(id: number, options: { PolicyAuditMode?: boolean | null }): Promise<EndpointView> {
    const rec = table.all().find((e) => e.id === id);
    if (!rec) throw new ApiRequestError('API_ENDPOINT_NOT_FOUND', `endpoint ${id} not found on node ${config.node}; nothing was changed`, { hint: '`membrane get endpoints -A` lists the endpoints and their ids' });
    const next: EndpointOptions = { ...rec.options };
    if (options.PolicyAuditMode === null) delete next.PolicyAuditMode;
    else if (options.PolicyAuditMode !== undefined) next.PolicyAuditMode = options.PolicyAuditMode;
    const { options: _old, ...rest } = rec;
    const updated: EndpointRecord = { ...rest, ...(Object.keys(next).length ? { options: next } : {}) };
    await table.save(updated);
    // the datapath bumps the policy revision when the audit bit changes: connections audit let
    // through are decided again on their next packet
    if (ready.has(id)) await datapath.upsertEndpoint(datapathEndpoint(updated));
    log.info({ endpointID: id, policyAuditMode: auditMode(updated) }, 'endpoint configured');
    return endpointView(updated);
  }

  async function attach(rec: EndpointRecord, pod: Pod, ns: Namespace | undefined): Promise<Pod | undefined> {
    ready.set(rec.id, { state: 'regenerating', policyRevision: 0, policyEntries: 0 });
    await datapath.upsertIPCache(endpointPrefixes(rec).map((prefix) => ({ prefix, identity: rec.identity, endpointId: rec.id })));
    await datapath.upsertEndpoint(datapathEndpoint(rec));
    const full = policy.addEndpoint({ id: rec.id, identity: rec.identity, pod, namespace: ns });
    await datapath.applyPolicy(rec.id, { upserts: [...full.entries.values()], deletes: [], defaultDenyChanged: true }, full);
    // Policy is in place before any workload runs: the first packet is already enforced.
    const w = await workloads.ensure(pod, { netns: rec.netns, ip: rec.ip, ...(rec.ip6 ? { ip6: rec.ip6 } : {}), mac: rec.mac, hostIfname: rec.hostIfname, hostIfindex: rec.hostIfindex });
    ready.set(rec.id, { state: 'ready', policyRevision: policy.revision(), policyEntries: full.entries.size });
    const status = { phase: 'Running', podIP: rec.ip, ...(rec.ip6 ? { podIPs: [{ ip: rec.ip }, { ip: rec.ip6 }] } : {}), hostIP: config.hostIp, ready: `${w.ready}/${w.total}`, identity: rec.identity, endpointId: rec.id };
    const cur = await resources.get('Pod', rec.namespace, rec.pod);
    if (!cur || JSON.stringify((cur as Pod).status) === JSON.stringify(status)) return undefined;
    const next = { ...(cur as Pod), status } as Pod;
    expectEcho(next, JSON.stringify(next));
    await resources.putStatus(next);
    return next;
  }

  async function removeEndpoint(ep: EndpointRecord): Promise<void> {
    const podStub = { apiVersion: 'v1', kind: 'Pod', metadata: { name: ep.pod, namespace: ep.namespace }, spec: { containers: [] }, source: { file: '', line: 0, col: 0 } } as Pod;
    await workloads.stop(podStub);
    await datapath.removeEndpoint(ep.id);
    await datapath.deleteIPCache(endpointPrefixes(ep));
    policy.removeEndpoint(ep.id);
    policy.releaseIdentity(ep.identity);
    await networks.remove(podStub);
    await table.remove(ep.namespace, ep.pod);
    ready.delete(ep.id);
  }

  const agent: Agent = {
    resources,
    async start() {
      running = true;
      unwatch = resources.watch((ev) => { if (!isOwnEcho(ev)) void kick(); });
      await kick();
      log.info({ endpoints: table.all().length }, 'agent started');
    },
    async stop() {
      running = false;
      unwatch?.();
      await pending;
      resources.stop();
    },
    async apply(rs, dryRun) {
      for (const r of rs) {
        if (NAMESPACED.has(r.kind) && r.metadata.namespace && r.kind !== 'Namespace') {
          const ns = await resources.get('Namespace', undefined, r.metadata.namespace);
          const inBatch = rs.some((x) => x.kind === 'Namespace' && x.metadata.name === r.metadata.namespace);
          if (!ns && !inBatch) throw new ApiRequestError('API_NAMESPACE_NOT_FOUND', `${r.kind} ${r.metadata.name}: namespace "${r.metadata.namespace}" not found; nothing was applied`, { hint: `create it first: a Namespace named ${r.metadata.namespace}` });
        }
        if (r.kind === 'Service') {
          // what the cluster cannot give (IPv6 without enable-ipv6, an address out of range) is
          // refused here, not left unallocated
          try {
            serviceFamilies(r, { ipv6: config.enableIPv6 ?? false });
          } catch (e) {
            if (e instanceof MembraneError) throw new ApiRequestError(e.code, `${e.message}; nothing was applied`, e.hint ? { hint: e.hint } : {});
            throw e;
          }
        }
        if (r.kind === 'AIPolicy') {
          // an AIPolicy the proxy could not apply is refused here (an ignored one would fail open)
          const t = translateAIPolicy(r);
          if (t.issues.length) throw new ApiRequestError(t.issues[0]!.code, `AIPolicy ${r.metadata.namespace}/${r.metadata.name}: ${t.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}; nothing was applied`, { issues: t.issues });
        }
      }
      // A pod keeps the node it has; a new one goes where the scheduler puts it (one node: here).
      const batchPods = rs.filter((r): r is Pod => r.kind === 'Pod');
      for (const p of batchPods) {
        if (p.spec.nodeName) continue;
        const had = (await resources.get('Pod', p.metadata.namespace, p.metadata.name)) as Pod | undefined;
        if (had?.spec.nodeName) p.spec.nodeName = had.spec.nodeName;
      }
      if (deps.cluster) deps.cluster.schedule(batchPods, (await resources.list('Pod')) as Pod[]);
      else for (const p of batchPods) p.spec.nodeName ??= config.node;
      // The whole batch must import into the policy repository together with what exists.
      const existing = (await resources.list()).filter((r): r is PolicyResource => POLICY_KINDS.has(r.kind));
      const incoming = rs.filter((r): r is PolicyResource => POLICY_KINDS.has(r.kind));
      if (incoming.length) {
        const keys = new Set(incoming.map(resourceKey));
        try {
          policy.checkPolicies([...existing.filter((p) => !keys.has(resourceKey(p))), ...incoming]);
        } catch (e) {
          if (!dryRun) deps.onPolicyChange?.('failure', incoming.length);
          throw e;
        }
      }
      const now = new Date().toISOString();
      for (const r of rs) (r.metadata as { creationTimestamp?: string }).creationTimestamp ??= ((await resources.get(r.kind, r.metadata.namespace, r.metadata.name))?.metadata as { creationTimestamp?: string } | undefined)?.creationTimestamp ?? now;
      if (dryRun) return resources.plan(rs);
      for (const r of rs) expectEcho(r, JSON.stringify(r));
      const results = await resources.commit(rs);
      if (incoming.length) deps.onPolicyChange?.('success', incoming.length);
      await kick();
      return results;
    },
    async remove(rs) {
      for (const r of rs) expectEcho(r, DELETED);
      const results = await resources.commitDelete(rs);
      const deleted = rs.filter((r) => POLICY_KINDS.has(r.kind)).length;
      if (deleted) deps.onPolicyChange?.('success', deleted);
      // Deleting a Deployment deletes its pods.
      const owned = (await resources.list('Pod')).filter((p) => rs.some((d) => d.kind === 'Deployment' && d.metadata.namespace === p.metadata.namespace && p.metadata.annotations?.[OWNER_ANNOTATION] === `Deployment/${d.metadata.name}`));
      for (const r of owned) expectEcho(r, DELETED);
      if (owned.length) await resources.commitDelete(owned);
      await kick();
      return results;
    },
    endpoints() {
      return table.all().map(endpointView);
    },
    configureEndpoint(id, options) {
      // on the reconcile chain: a reconcile never re-attaches the endpoint with stale options
      const run = pending.then(() => configure(id, options));
      pending = run.then(() => undefined, () => undefined);
      return run;
    },
    identities() {
      return policy.identities();
    },
    async policies(namespace) {
      const list = (await resources.list()).filter((r): r is PolicyResource => POLICY_KINDS.has(r.kind));
      const selected = new Map<string, number>();
      const byIdentity = new Map<number, Set<string>>();
      for (const ep of table.all()) {
        let keys = byIdentity.get(ep.identity);
        if (!keys) byIdentity.set(ep.identity, (keys = policy.policiesSelecting(ep.identity)));
        for (const k of keys) selected.set(k, (selected.get(k) ?? 0) + 1);
      }
      return list
        .filter((p) => !namespace || p.metadata.namespace === namespace || p.kind === 'CiliumClusterwideNetworkPolicy')
        .map((p) => ({
          kind: p.kind, name: p.metadata.name, ...(p.metadata.namespace ? { namespace: p.metadata.namespace } : {}),
          file: p.source.file, line: p.source.line, revision: policy.revision(),
          rules: p.kind === 'NetworkPolicy' ? 1 : (p.spec ? 1 : 0) + (p.specs?.length ?? 0),
          selectedEndpoints: selected.get(resourceKey(p)) ?? 0,
          ...((p.metadata as { creationTimestamp?: string }).creationTimestamp ? { createdAt: (p.metadata as { creationTimestamp?: string }).creationTimestamp } : {}),
        }));
    },
    async settled() {
      await kick();
      while (dirty) await kick();
    },
    async idle() {
      await pending;
      while (dirty) await kick();
    },
    pruneStaleIPCache() {
      // on the reconcile chain: the wanted set is not read halfway through a reconcile
      const run = pending.then(pruneStale);
      pending = run.then(() => undefined, () => undefined);
      return run;
    },
    lastErrors: () => [
      ...[...rejectedStored].map(([key, issues]) => `stored policy ${key} not enforced: ${issues.map((i) => `${i.code} ${i.file}:${i.line}:${i.col} ${i.path.join('.')}: ${i.message}`).join('; ')} (hint: fix it and apply it again, or delete it)`),
      ...errors,
    ],
    endpointTable: () => table,
  };
  return agent;
}

export function assertNever(x: never): never {
  throw new MembraneError('AGENT_BUG', `unexpected ${String(x)}`);
}
