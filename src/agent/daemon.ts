/**
 * The agent daemon of one node: the agent, its datapath, proxies, Hubble and API, started in
 * order and stopped cleanly on SIGTERM/SIGINT without touching the datapath (pinned programs and
 * maps keep enforcing policy while no agent runs). A provider's entry runs it with its own pod
 * networks: the lab's is src/lab/node-agent.ts (started by `membrane up` inside the node's
 * network namespace).
 */
import { startCpuProfile } from './cpu-profile.ts';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import type { MembraneConfig } from '../common/config.ts';
import { labPaths, type LabPaths } from '../common/paths.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import { openAgentKVStore } from './kvstore-open.ts';
import { createCluster, type Cluster } from './cluster.ts';
import type { ClusterNode } from './cluster-keys.ts';
import type { NodeView } from './views.ts';
import type { IPCacheEntry } from '../datapath/types.ts';
import { createAgentPolicyEngine } from '../policy/agent-engine.ts';
import { createAgent } from './agent.ts';
import { createApiServer } from './api-server.ts';
import { agentRoutes } from './routes.ts';
import { composeNode, type ComposeInput } from './compose.ts';
import type { PodNetworkProvider } from './pod-network.ts';
import type { HubbleServerTlsFiles } from '../hubble/index.ts';
import type { Agent } from './agent.ts';
import type { Handler } from './api-server.ts';
import { createEncryption, encryptionView, type Encryption } from './encryption.ts';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { linkMac } from '../sys/netlink.ts';
import { collectAndRelease, setMmapThreshold } from '../sys/memory.ts';
import { readResume, resumeFile, saveResume } from './resume.ts';
import { getHeapStatistics } from 'node:v8';

export interface AgentDaemonOptions {
  config: MembraneConfig;
  node: string;
  /** the node's pod networks (the lab, the CNI plugin) */
  provider(ctx: { paths: LabPaths; logger: Logger }): PodNetworkProvider;
  /** Hubble's TLS files when no setting names them (the lab's: src/lab/hubble-certs.ts) */
  hubbleTls?: HubbleServerTlsFiles;
  /** API routes of the provider (host mode: the CNI plugin's, src/cni/routes.ts) */
  extraRoutes?(agent: Agent): Record<string, Handler>;
  /** false: no Hubble TCP 4244 listener (host mode without Hubble TLS settings) */
  hubbleTcp?: boolean;
  /** the datapath object loaded ahead (a standby agent loads it while it waits) */
  preloadedDatapath?: ComposeInput['preloadedDatapath'];
}

/** remote ipcache entries written in one burst that make it worth a full collection afterwards */
const BURST_RELEASE_ENTRIES = 20_000;
/** the window a burst is checked in, and what counts as quiet in one */
const BURST_QUIET_MS = 2_000;
const BURST_QUIET_ENTRIES = 1_000;

function memory(): Record<string, number> {
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  const mib = (x: number) => Math.round(x / 2 ** 20);
  return {
    rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external),
    arrayBuffersMiB: mib(m.arrayBuffers), mallocedMiB: mib(h.malloced_memory), peakMallocedMiB: mib(h.peak_malloced_memory),
  };
}

export async function runAgentDaemon(o: AgentDaemonOptions): Promise<void> {
  const { config, node } = o;
  // a listing page or map batch of a few MiB is its own mapping, freed to the kernel (src/sys/memory.ts)
  setMmapThreshold();
  const paths = labPaths(config);
  await mkdir(paths.nodeDir(node), { recursive: true });
  const logger = createLogger({ level: config.logLevel });
  const started = Date.now();
  logger.info({ subsys: 'daemon', node, pid: process.pid }, 'agent starting');
  const provider = o.provider({ paths, logger });

  const hostIp = provider.nodeAddresses[0] ?? '';
  const store = await openAgentKVStore({
    endpoints: (config.kvstoreEndpoint ?? '').split(',').map((e) => e.trim()).filter(Boolean), storeFile: paths.storeFile(node),
    ...(config.kvstoreCa ? { ca: config.kvstoreCa } : {}), ...(config.kvstoreCert ? { cert: config.kvstoreCert } : {}), ...(config.kvstoreKey ? { key: config.kvstoreKey } : {}),
    leaseTtlSeconds: config.kvstoreLeaseTTL ?? 900, identityGcIntervalMs: (config.identityGcInterval ?? 60) * 1000,
    nodeSuffix: hostIp, logger,
  });
  const { kv, allocator } = store;
  logger.info({ subsys: 'daemon', backend: kv.backend }, 'kvstore open');
  const policy = createAgentPolicyEngine({ allocator });

  // In a kvstore cluster: this node registered, its endpoints published, remote pods and nodes known.
  let agentRef: Awaited<ReturnType<typeof createAgent>> | undefined;
  let agentRunning = false;
  let datapathRunning = false;
  let encryptionRunning = false;
  let clusterKick: NodeJS.Timeout | undefined;
  let clusterResync = false;
  let nodeMacsDirty = false;
  const routerIp6 = provider.nodeAddresses.find((a) => a.includes(':'));
  // published in the node entry: the others take this node's pods' packets from the underlay by it
  const underlayMac = provider.underlayDevice ? linkMac(provider.underlayDevice) : undefined;
  const self: ClusterNode = {
    ...(underlayMac ? { underlayMac } : {}),
    name: node, cluster: 'default', ip: hostIp, ...(provider.nodeAddresses[1] ? { routerIp: provider.nodeAddresses[1] } : {}), ...(provider.podCidr ? { podCidr: provider.podCidr } : {}),
    ...(routerIp6 ? { routerIp6 } : {}), ...(provider.podCidr6 ? { podCidr6: provider.podCidr6 } : {}),
  };
  // Before the node registers: its WireGuard public key goes into its first kvstore entry.
  const encryption: Encryption | undefined = config.encryption === 'wireguard'
    ? createEncryption({
      config, self, dir: join(paths.nodeDir(node), 'wireguard'), pinRoot: paths.pinRoot(node), networkDevices: provider.networkDevices,
      bpfDir: fileURLToPath(new URL('../../dist/bpf/', import.meta.url)), logger,
    })
    : undefined;
  const cluster: Cluster | undefined = kv.backend === 'etcd'
    ? createCluster({
      kv, logger, self,
      onChange(nodesChanged) {
        // remote pods and nodes go to the ipcaches as deltas, one pass per burst; a changed node
        // set also reruns the reconcile (scheduling, leadership) and updates the WireGuard peers.
        // From the datapath's start on, every page of the first listing is written as it comes.
        clusterResync ||= nodesChanged;
        nodeMacsDirty ||= nodesChanged;
        clusterKick ??= setTimeout(() => {
          clusterKick = undefined;
          if (encryptionRunning && clusterResync) encryption?.nodesChanged(cluster!.nodes());
          if (!datapathRunning) return;
          if (nodeMacsDirty) writeNodeMacs();
          void applyRemote().catch((e: unknown) => logger.warn({ subsys: 'cluster', err: (e as Error).message }, 'cannot write remote ipcache entries'));
          if (clusterResync && agentRunning) { clusterResync = false; void agentRef?.settled(); }
        }, 20);
      },
    })
    : undefined;
  /** The other nodes' underlay MACs (their entries') into the datapath's spoof check. */
  function writeNodeMacs(): void {
    nodeMacsDirty = false;
    const macs = new Map<string, string>();
    for (const n of cluster?.nodes() ?? []) if (n.name !== node && n.underlayMac) macs.set(n.ip, n.underlayMac);
    void parts.datapath.setNodeMacs(macs).catch((e: unknown) => logger.warn({ subsys: 'cluster', err: (e as Error).message }, 'cannot write the nodes\' underlay MACs'));
  }
  /**
   * Remote pods and nodes into the policy engine's ipcache (the L7 proxies name peers through it)
   * and the datapath's, as deltas. The datapath gets the engine's winner for the prefix (a local
   * endpoint's address or a policy's CIDR claim stays when a remote claim goes or loses).
   */
  let applying: Promise<void> = Promise.resolve();
  function applyRemote(): Promise<void> {
    applying = applying.then(async () => {
      if (!cluster) return;
      // every change up to it has come in: once drained and written, the map reflects it
      const revision = cluster.ipcacheRevision();
      // Before the agent's first reconcile the policy engine does not know the local endpoints
      // yet: a remote claim on one of their addresses waits for it (the local endpoint wins).
      const local = agentRunning ? undefined : new Set(agentRef?.endpointTable().all().flatMap((e) => (e.ip6 ? [e.ip, e.ip6] : [e.ip])));
      const hold = local?.size ? (ip: string) => local.has(ip) : undefined;
      // in batches: 300,000 entries after a restart are never all held as objects at once
      for (;;) {
        const { upserts, deletes } = cluster.drainIPCacheChanges(4096, hold);
        if (!upserts.length && !deletes.length) {
          if (!hold && !cluster.ipcachePending()) applied(revision);
          return;
        }
        const ipc = policy.engine.ipcache;
        const write: IPCacheEntry[] = [];
        const drop: string[] = [];
        for (const p of deletes) {
          ipc.delete(p, 'node');
          const w = ipc.get(p);
          if (w) write.push({ prefix: p, identity: w.identity, endpointId: w.endpointId });
          else drop.push(p);
        }
        for (const e of upserts) {
          const w = ipc.upsert(e.prefix, e.identity, 'node');
          // the tunnel endpoint goes with the cluster's claim only when that claim is the winner
          // (then the entry is written as drained: no second object per remote pod)
          write.push(w.identity === e.identity && w.endpointId === 0 ? e : { prefix: e.prefix, identity: w.identity, endpointId: w.endpointId });
        }
        if (drop.length) await parts.datapath.deleteIPCache(drop);
        if (write.length) await parts.datapath.upsertIPCache(write);
        burstApplied(drop.length + write.length);
      }
    });
    return applying;
  }

  /**
   * A cluster that grows or shrinks by thousands of pods at once (a node joining with its pods,
   * a deployment scaled) leaves its drained batches and map writes as garbage, as the resync's
   * listing does: once such a burst has died down (a check window with few changes), one full
   * collection and malloc's free pages back, as after the resync (bench/scale: 322-368 MiB at
   * 10,000 nodes grown by watch events against 261-285 after a resync). Pod-by-pod churn never
   * adds up to a burst, so it never pays for the collection.
   */
  let burstEntries = 0;
  let windowEntries = 0;
  let burstTimer: NodeJS.Timeout | undefined;
  function burstApplied(entries: number): void {
    burstEntries += entries;
    windowEntries += entries;
    if (burstEntries < BURST_RELEASE_ENTRIES || burstTimer) return;
    windowEntries = 0;
    burstTimer = setInterval(() => {
      if (windowEntries > BURST_QUIET_ENTRIES) { windowEntries = 0; return; }
      clearInterval(burstTimer);
      burstTimer = undefined;
      const n = burstEntries;
      burstEntries = windowEntries = 0;
      const gcMs = Math.round(collectAndRelease());
      logger.info({ subsys: 'daemon', entries: n, gcMs, ...memory() }, 'memory after a burst of remote ipcache changes');
    }, BURST_QUIET_MS);
    burstTimer.unref();
  }

  /**
   * The revision the pinned ipcache reflects, saved (at most once a second) for the next start to
   * resume from. Only from this process's first prune on: before it the map may still hold
   * entries an earlier agent left for keys deleted while none ran.
   */
  const resumeAt = resumeFile(paths.nodeDir(node));
  let resumable = false;
  let savedRevision = 0;
  let toSave = 0;
  let saveTimer: NodeJS.Timeout | undefined;
  function applied(revision: number): void {
    if (!resumable || revision <= Math.max(savedRevision, toSave)) return;
    toSave = revision;
    saveTimer ??= setTimeout(() => {
      saveTimer = undefined;
      const r = toSave;
      const map = parts.datapath.ipcacheInstance?.();
      if (!kv.clusterId || !map) return;
      void saveResume(resumeAt, { etcd: kv.clusterId, map, revision: r }).then(() => { savedRevision = Math.max(savedRevision, r); },
        (e: unknown) => logger.warn({ subsys: 'cluster', err: (e as Error).message }, 'cannot save the ipcache revision'));
    }, 1000);
    saveTimer.unref();
  }

  const parts = await composeNode({
    node, config, provider, paths, logger, kv, policy, ...(o.hubbleTls ? { hubbleTls: o.hubbleTls } : {}), ...(o.hubbleTcp === false ? { hubbleTcp: false } : {}),
    ...(o.preloadedDatapath ? { preloadedDatapath: o.preloadedDatapath } : {}),
    ...(cluster ? { remoteEndpoint: (ip: string) => cluster.peekRemoteEndpoint(ip), clusterNodes: () => cluster.nodes() } : {}),
  });
  const agent = await createAgent({
    config: { node, hostIp, lab: paths.lab, policyAuditMode: config.policyAuditMode, enableIPv6: config.enableIPv6 }, kv, datapath: parts.datapath, networks: parts.networks,
    workloads: parts.workloads, policy, logger,
    // remote pods and nodes are not here: applyRemote() writes them as deltas
    extraIPCache: () => [...policy.ipcacheEntries(), ...parts.nodeIPCache(), ...parts.fqdnIPCache()],
    ...(cluster ? { cluster } : {}),
    onPolicyChange: (outcome, n) => parts.policyChange(outcome, n),
  });
  agentRef = agent;
  // The datapath first: the pinned maps keep enforcing the previous agent's state, and each page of
  // the cluster's listing is written into them as it arrives (only what changed is written).
  await parts.datapath.start();
  datapathRunning = true;
  // Local identities (CIDR, FQDN) the pinned ipcache carries that the store did not give back (an
  // FQDN identity reaches the single-node store up to 50 ms after the maps have it; etcd keeps no
  // local ones): held for their prefixes until the maps are resynced (the prune below), as Cilium
  // restores local identities from the pinned ipcache, so that no other labels take a number the
  // maps and the proxies still mean the old labels by.
  const held = allocator.hold(parts.datapath.ipcacheLocalIdentities?.() ?? []);
  if (held) logger.info({ subsys: 'daemon', identities: held }, 'local identities held from the pinned ipcache');
  // the node set before the first reconcile (scheduling and leadership read it); the ipcache
  // listing (300,000 keys at 10,000 nodes) goes on while the agent starts and serves
  let listing: Promise<void> = Promise.resolve();
  if (cluster) {
    await cluster.startNodes();
    writeNodeMacs();
    // the pinned map as the previous agent left it, and the revision it reflects: a watch from
    // there brings what changed while no agent ran (deletions too) ahead of the full listing
    const from = await readResume(resumeAt, kv.clusterId, parts.datapath.ipcacheInstance?.());
    logger.info({ subsys: 'cluster', ...('revision' in from ? { resumeFrom: from.revision } : { fullListing: from.why }) }, 'cluster ipcache: following');
    listing = cluster.listIPCache('revision' in from ? { resume: from.revision } : {});
    listing.catch(() => {}); // awaited (and fatal) below
  }
  const routes = agentRoutes(agent, async () => {
    const s = await parts.status({ agent, started, policy });
    return { ...s, encryption: await encryptionView(encryption, s.errors) };
  }, policy, {
    learnedIPLabels: (ip) => {
      // the DNS proxy's learnt IPs are the engine's ipcache entries of source fqdn
      const e = policy.engine.ipcache.lookup(ip);
      return e?.source === 'fqdn' ? policy.identityLabels(e.identity) : undefined;
    },
    podIdentity: (ip) => {
      // this node's endpoint, else a pod of another node (kvstore): identities are cluster-wide
      const id = agent.endpointTable().byIp(ip)?.identity ?? cluster?.remoteEndpoint(ip)?.identity;
      const labels = id === undefined ? undefined : policy.identityLabels(id);
      return id !== undefined && labels ? { id, labels } : undefined;
    },
  });
  // A policy change is in once the proxies judge by it too: with an external L7 proxy that is when
  // it acked the snapshot holding it (in-agent proxies look the engine up live).
  for (const r of ['POST /v1/apply', 'POST /v1/delete', 'POST /v1/settle'] as const) {
    const h = routes[r]!;
    routes[r] = async (...args) => { const out = await h(...args); await parts.proxiesSettled(); return out; };
  }
  const api = createApiServer({
    socketPath: paths.agentSocket(node),
    routes: {
      ...routes, ...parts.fqdnRoutes(), ...parts.aiRoutes(), ...(o.extraRoutes?.(agent) ?? {}),
      ...(encryption ? {
        'GET /v1/encryption': async () => encryption.status(),
        'POST /v1/encryption/rotate-key': async () => ({ publicKey: await encryption.rotateKey() }),
      } : {}),
      'GET /v1/nodes': async () => ({
        items: (cluster?.nodes() ?? [self]).map((n): NodeView => ({
          name: n.name, status: 'Ready', internalIP: n.ip, ...(n.routerIp ? { routerIP: n.routerIp } : {}), ...(n.podCidr ? { podCIDR: n.podCidr } : {}),
          ...(n.podCidr6 ? { podCIDRv6: n.podCidr6 } : {}), ...(n.routerIp6 ? { routerIPv6: n.routerIp6 } : {}),
          ...(n.wireguardPubKey ? { wireguardPubKey: n.wireguardPubKey } : {}), self: n.name === node,
        })),
      }),
    },
  });

  if (encryption) {
    // after the datapath: strict mode's program and the L3 from_network share its pinned maps
    await encryption.start({ publish: async (key) => { await cluster?.updateSelf({ wireguardPubKey: key }); } });
    encryptionRunning = true;
    if (cluster) encryption.nodesChanged(cluster.nodes());
    await encryption.settled();
  }
  await parts.start(agent);
  await agent.start();
  agentRunning = true;
  await applyRemote(); // every remote entry known so far, after the first reconcile
  // L7 after the first reconcile: every endpoint has its policy before a proxy judges anything
  await parts.serve();
  // Identities restored from the kvstore that no endpoint or policy claimed in the first
  // reconcile belong to pods deleted while no agent ran: free them and resync the maps.
  const freed = allocator.gcUnreferenced();
  if (freed.length) {
    logger.info({ subsys: 'daemon', identities: freed.map((i) => i.id) }, 'released identities unused since the restart');
    await agent.settled();
  }
  // Entries an earlier agent left for what is gone now: only after the first reconcile and the
  // cluster's complete listing (everything still claimed has been claimed again by then; a prune
  // halfway through the listing would blank remote pods out until their page came).
  const prune = async () => {
    await listing;
    const revision = cluster?.ipcacheRevision() ?? 0;
    await applyRemote();
    const ok = await agent.pruneStaleIPCache().then(() => true, (e: unknown) => { logger.warn({ subsys: 'daemon', err: (e as Error).message }, 'cannot prune stale ipcache entries'); return false; });
    // what was not claimed again is gone from the maps now (or, the prune failed, never will be)
    if (ok) allocator.releaseHeld();
    if (cluster) {
      logger.info({ subsys: 'daemon', resyncMs: Date.now() - started }, 'cluster ipcache resynced');
      // the listing's pages and the map batches are garbage now: collected, and malloc's free pages go back
      const gcMs = Math.round(collectAndRelease());
      logger.info({ subsys: 'daemon', gcMs, ...memory() }, 'memory');
      // from here the map holds what the cluster does: its revision may be saved
      resumable = ok;
      applied(revision);
    }
  };
  // one node (no listing to wait for): pruned before the API answers
  if (!cluster) await prune();
  await api.start();
  await writeFile(paths.agentPidFile(node), String(process.pid));
  logger.info({ subsys: 'daemon', node, pid: process.pid, pods: provider.kind }, 'agent ready');
  const cpuProfile = await startCpuProfile(config.agentCpuProfile, node);
  // what the agent's memory is made of, once a minute: RSS that grows over restarts or hours shows
  // here as heap (objects kept), external/array buffers (Buffers, typed arrays) or malloc (native)
  setInterval(() => logger.info({ subsys: 'daemon', ...memory() }, 'memory'), 60_000).unref();
  if (cluster) {
    // a listing that fails is a start that failed (as when it was awaited before the API): the
    // supervisor starts the agent again
    await prune().catch((e: unknown) => {
      logger.error({ subsys: 'daemon', err: (e as Error).message }, 'cluster ipcache listing failed; exiting');
      process.exit(1);
    });
  }

  let stopping = false;
  async function shutdown(signal: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    logger.info({ subsys: 'daemon', signal }, 'agent stopping (datapath stays enforcing)');
    await cpuProfile?.stop().catch((e: unknown) => logger.warn({ subsys: 'daemon', err: String(e) }, 'cpu profile not written'));
    await api.stop();
    agentRunning = false;
    await agent.stop();
    await encryption?.stop();
    cluster?.stop();
    await cluster?.flushed();
    await parts.stop();
    await parts.datapath.stop();
    store.stop();
    // leased keys (this node's ipcache entries, identity users) outlive a restart by one lease TTL
    await kv.close({ keepLeases: true });
    await rm(paths.agentPidFile(node), { force: true });
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}
