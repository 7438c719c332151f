/**
 * Composition root of one node: the real subsystems the agent sequences. Where pods live comes
 * from a PodNetworkProvider (the lab, or the CNI plugin); settings from the configuration.
 *
 *   PodNetworkProvider (networks, workloads) ─► agent ─► LinuxDatapath (bpf maps, tcx links)
 *                                            │ ring buffer events
 *                                            ▼
 *                            Hubble (flows, ring, Observer gRPC on hubble.sock)
 *
 * Flow enrichment resolves IPs through the agent's endpoint table (a map by IP) and identities
 * through the policy engine's allocator: lookups only, per event.
 */
import { hostPrefix } from '../ipcache/prefix.ts';
import { MembraneError } from '../common/errors.ts';
import { join } from 'node:path';
import type { Logger } from '../common/logger.ts';
import type { LabPaths } from '../common/paths.ts';
import type { KVStore } from '../kvstore/types.ts';
import type { Agent } from './agent.ts';
import type { StatusView } from './views.ts';
import type { PodNetworkProvider, PodNetworks, Workloads } from './pod-network.ts';
import type { MembraneConfig } from '../common/config.ts';
import type { Datapath, IPCacheEntry } from '../datapath/types.ts';
import type { AgentPolicyEngine } from '../policy/agent-engine.ts';
import { createLinuxDatapath, type LinuxDatapathOptions } from '../datapath/linux/index.ts';
import {
  createHubble, hubbleTcpSecurity, HUBBLE_SERVER_PORT, LostEventSource, type Hubble, type HubbleServerTlsFiles,
} from '../hubble/index.ts';
import { createFlowResolver } from './flow-resolver.ts';
import { ReservedIdentity } from '../identity/identity.ts';
import { ensureProxyRouting } from '../sys/proxy-routing.ts';
import { createNodeDNS } from '../proxy/dns/node.ts';
import type { DNSProxyStats } from '../proxy/dns/proxy.ts';
import { createHubbleMetrics } from '../hubble/metrics/index.ts';
import { createAgentMetrics, metricsSocketPaths } from './metrics.ts';
import { proxySlot } from '../common/proxy-ports.ts';
import { createHttpProxyNode } from '../proxy/http/node.ts';
import { createTlsNode } from '../proxy/tls/node.ts';
import { createAINode } from '../proxy/ai/node.ts';
import type { AccessLogRecord } from '../common/access-log.ts';
import { readSupervisorState, supervisorFiles } from '../sys/supervise.ts';
import type { FeedServer } from '../proxy/feed/server.ts';
import { proxyFiles } from '../proxy/feed/wire.ts';
import { createAgentProxyFeed } from './proxy-feed.ts';

export interface NodeParts {
  datapath: Datapath;
  networks: PodNetworks;
  workloads: Workloads;
  hubble: Hubble;
  /** ipcache entries of the node itself (host identity), merged with the policy engine's. */
  nodeIPCache(): IPCacheEntry[];
  /** FQDN identities' ipcache entries (DNS proxy + name manager); also syncs toFQDNs selectors. */
  fqdnIPCache(): IPCacheEntry[];
  /** Extra agent API routes of the DNS proxy / FQDN subsystem. */
  fqdnRoutes(): ReturnType<ReturnType<typeof createNodeDNS>['routes']>;
  /** cilium_policy_change_total{outcome}: the agent reports each policy import or delete. */
  policyChange(outcome: 'success' | 'failure', n: number): void;
  /** Extra agent API routes of the AI filter (`GET /v1/ai/usage`). */
  aiRoutes(): Record<string, () => Promise<unknown>>;
  /** resolves once the external L7 proxy holds the current policy (at once without one) */
  proxiesSettled(): Promise<void>;
  status(ctx: { agent: Agent; started: number; policy: AgentPolicyEngine }): Promise<StatusView>;
  start(agent: Agent): Promise<void>;
  /**
   * The L7 proxies take traffic: call after the agent's first reconcile (agent.start()), so that
   * nothing is judged before its endpoint has policy; until then the datapath fails closed.
   */
  serve(): Promise<void>;
  stop(): Promise<void>;
}

export interface ComposeInput {
  node: string;
  config: MembraneConfig;
  provider: PodNetworkProvider;
  paths: LabPaths;
  logger: Logger;
  kv: KVStore;
  policy: AgentPolicyEngine;
  /** registered nodes (cluster mode): `status` lists them */
  clusterNodes?: () => { name: string; ip: string }[];
  /** pods on other nodes (cluster mode): flows name them; the answer is read at once, never kept (RemoteStore.peek) */
  remoteEndpoint?: (ip: string) => { identity: number; namespace?: string; pod?: string } | undefined;
  /** Hubble's TLS files when no setting names them (the lab's Hubble certificates for this node) */
  hubbleTls?: HubbleServerTlsFiles;
  /** false: no Hubble TCP listener (host mode without Hubble TLS settings); the unix socket stays */
  hubbleTcp?: boolean;
  /** the datapath object loaded ahead (a standby agent's; src/datapath/linux preloadObject) */
  preloadedDatapath?: LinuxDatapathOptions['preloaded'];
}

const VERSION = 'membrane 0.1.0';
const POD_METRICS_GRACE_MS = 60_000;

export async function composeNode(input: ComposeInput): Promise<NodeParts> {
  const { node, config, provider, paths, logger, policy } = input;
  const lab = paths.lab;
  const datapath = createLinuxDatapath({
    pinRoot: paths.pinRoot(node), logger: logger.child({ subsys: 'datapath' }),
    eventRate: { perSecond: config.bpfEventsDefaultRateLimit, burst: config.bpfEventsDefaultBurstLimit },
    tunnel: config.routingMode === 'tunnel' && provider.overlayDevice !== undefined,
    enableIPv6: config.enableIPv6, strictIngress: config.encryptionStrictIngress,
    monitorAggregation: config.monitorAggregation, monitorIntervalS: config.monitorAggregationInterval,
    runTimeStats: config.bpfRunTimeStats,
    ...(input.preloadedDatapath ? { preloaded: input.preloadedDatapath } : {}),
  });
  const { networks, workloads } = provider;

  let agentRef: Agent | undefined;
  // Flow enrichment runs per event: lookups only (flow-resolver.ts)
  const resolver = createFlowResolver({
    localByIp: (ip) => agentRef?.endpointTable().byIp(ip),
    ...(input.remoteEndpoint ? { remoteEndpoint: input.remoteEndpoint } : {}),
    identityLabels: (id) => policy.identityLabels(id),
    mapState: (id) => policy.mapState(id),
    revision: () => policy.revision(),
  });
  const resolved = resolver.local;
  const hubble = createHubble({
    nodeName: node, resolver, socketPath: paths.hubbleSocket(node), version: VERSION, startedAt: Date.now(),
    // Hubble's peer port, in the node's namespace (as the agent's :4244 on a Cilium node): mutual
    // TLS with the provider's Hubble certificates unless the settings say otherwise (src/hubble/tls.ts).
    ...(input.hubbleTcp === false ? {} : { tcpPort: HUBBLE_SERVER_PORT, tcpSecurity: hubbleTcpSecurity(config, input.hubbleTls) }),
    peerAddress: `${provider.nodeAddresses[0] ?? '127.0.0.1'}:${HUBBLE_SERVER_PORT}`,
    // Peer.Notify names every registered node, as Cilium's agent does: a Relay dialling one agent finds all
    ...(input.clusterNodes ? { peers: () => input.clusterNodes!().map((n) => ({ name: n.name, address: `${n.ip}:${HUBBLE_SERVER_PORT}` })) } : {}),
    tcpForwardSocket: paths.hubblePeerSocket(node),
    // Cilium's --hubble-event-buffer-capacity (2^n - 1; default 4095)
    capacity: config.hubbleEventBufferCapacity,
  });
  let unsubscribe: (() => void) | undefined;
  let lostTimer: NodeJS.Timeout | undefined;
  const nodeAddrs = [...provider.nodeAddresses];
  // The proxies judge this node's endpoints' traffic: they look up local endpoints only.
  const endpointByIp = (ip: string) => {
    const ep = agentRef?.endpointTable().byIp(ip);
    return ep ? resolved(ep) : undefined;
  };
  // The proxies' access records become L7 flows in Hubble (its seven parser), their peers resolved
  // by the datapath flows' resolver: a pod on another node is named as in its L3/L4 flows.
  const emitRecord = (rec: AccessLogRecord) => hubble.ingestRecord(rec);
  // --external-envoy-proxy: the DNS, HTTP and TLS proxies (and the AI filter in the HTTP proxy) run
  // in their own supervised process, fed policy snapshots over <nodeDir>/l7proxy.sock (src/proxy/feed)
  const external = config.externalEnvoyProxy === true;
  let feed: FeedServer | undefined;
  const dns = createNodeDNS({
    node, pinRoot: paths.pinRoot(node), cacheFile: join(paths.nodeDir(node), 'fqdn-cache.json'), datapath, policy, emitRecord, logger,
    endpoints: {
      byIp: (ip) => { const ep = agentRef?.endpointTable().byIp(ip); return ep ? resolved(ep) : undefined; },
      has: (id) => !!agentRef?.endpointTable().byId(id),
    },
    nodeAddrs, ipv6: config.enableIPv6, clusterPrefixes: provider.clusterPrefixes, clusterDNS: provider.clusterDNS,
    minTTL: config.tofqdnsMinTTL, maxIPsPerName: config.tofqdnsMaxIPsPerHostname, idleGracePeriodMs: config.tofqdnsIdleConnectionGraceMs,
    gcIntervalMs: config.tofqdnsGcMs, rejectResponseCode: config.tofqdnsDnsRejectResponseCode, hold: config.dnsProxyHold,
    // an external L7 proxy judges a connection to an answer's IP by its snapshot: the snapshot (or
    // ipcache delta) with the new IPs is written to its socket before the `dns-done` that releases
    // the answer, so the proxy applies it first (one socket, read in order). No ack awaited: that
    // round trip more was most of the external proxy's hold (bench/dns, 2026-12-05: p50 3.9 of 8.8 ms)
    afterIPCache: async () => { await feed?.sent(); },
    ...(external ? { standalone: { stats: async () => (await feed!.request('dns-stats', 2000)) as DNSProxyStats } } : {}),
  });
  resolver.setNames({ has: (ip) => dns.nameManager.cache.hasIP(ip), names: (ip) => dns.namesForIp(ip) });
  // Hubble metrics on hubbleMetricsPort in the node namespace and on a root-only unix socket for
  // host-side scrapers; hubbleMetrics is Cilium's --hubble-metrics, hubbleMetricsOpenMetrics its
  // --enable-hubble-open-metrics. Entries that cannot be served are logged; the others run.
  const metrics = createHubbleMetrics(config.hubbleMetrics, { openMetrics: config.hubbleMetricsOpenMetrics });
  for (const msg of metrics.configErrors) logger.warn({ subsys: 'hubble-metrics' }, msg);
  const agentMetrics = createAgentMetrics({
    policies: async () => (agentRef ? (await agentRef.policies()).length : 0), policyRevision: () => policy.revision(),
    endpoints: () => agentRef?.endpoints() ?? [], identities: () => policy.identities(), mapState: (id) => policy.mapState(id),
    pinRoot: paths.pinRoot(node),
    // the external proxy's membrane_ai_* series, beside the agent's own
    ...(external ? { extra: async () => String(await feed?.request('metrics', 2000)) } : {}),
  });
  const metricSockets = metricsSocketPaths(paths.nodeDir(node));
  const metricsServers: import('node:http').Server[] = [];
  let unsubscribeMetrics: (() => void) | undefined;
  // L7 HTTP proxy (egress + ingress listeners in the sockmap; flows into Hubble).
  const proxyDeps = {
    nodeName: node, setProxyListener: (slot: number, fd: number | null) => datapath.setProxyListener(slot, fd),
    ipv6: config.enableIPv6, endpointByIp,
    identityOfOther: (ip: string) => (nodeAddrs.includes(ip) ? ReservedIdentity.host : policy.engine.ipcache.lookupIdentity(ip)),
    mapState: (id: number) => policy.mapState(id), revision: () => policy.revision(),
    emitRecord, resources: () => agentRef?.resources,
    ...(config.otlpEndpoint ? { otlpEndpoint: config.otlpEndpoint } : {}), otel: config.otel,
  };
  // TLS: the SNI proxy on the `tls` slot (serverNames only) and interception inside the HTTP proxy (terminatingTLS).
  const local = external ? undefined : localProxies();
  function localProxies() {
  const tlsNode = createTlsNode({ ...proxyDeps, slot: (dir, family) => proxySlot('tls', dir, 'TCP', family), logger: logger.child({ subsys: 'proxy-tls' }) });
  // AIPolicy in the HTTP proxy (models, tokens, budgets kept in the node's state dir); its membrane_ai_*
  // series live in the agent's registry beside the cilium_* ones.
  const ai = createAINode({
    node, resources: () => agentRef?.resources, stateFile: join(paths.nodeDir(node), 'ai-budgets.json'),
    identityLabels: (id) => policy.identityLabels(id), namesForIp: (ip) => dns.namesForIp(ip),
    maxBodyBytes: config.aiMaxBodyBytes,
    registry: agentMetrics.registry, logger: logger.child({ subsys: 'proxy-ai' }),
  });
  const httpProxy = createHttpProxyNode({
    ...proxyDeps, slot: (dir, family) => proxySlot('http', dir, 'TCP', family), logger: logger.child({ subsys: 'proxy-http' }),
    configure: (chain) => { tlsNode.configureHttp(chain); ai.configureHttp(chain); },
  });
  return { tlsNode, ai, httpProxy };
  }
  if (external) {
    feed = createAgentProxyFeed({
      socketPath: proxyFiles(paths.nodeDir(node)).feed, agent: () => agentRef, policy, nodeAddrs, resolved,
      namesForIp: (ip) => dns.namesForIp(ip), emitRecord, logger: logger.child({ subsys: 'proxy-feed' }),
      dns: { info: () => dns.info(), serverIp: () => provider.clusterDNS.serverIp(), onReports: (items, done) => dns.onReports(items, done) },
    });
  }
  /** The external proxy's rows as it reported them, or why there are none (fail closed meanwhile). */
  const externalRows = (): { name: string; port: number; state: string }[] => {
    const rows = feed?.clients().flatMap((c) => c.rows) ?? [];
    if (rows.length) return rows;
    const sup = readSupervisorState(proxyFiles(paths.nodeDir(node)).supervisor);
    return [{ name: 'dns/http/tls (external process)', port: 0, state: `not connected${sup?.lastExit ? `; last exit ${sup.lastExit.reason}` : ''}` }];
  };

  /** What the agent's supervisor (src/lab/supervisor.ts, or any that writes the same file) recorded. */
  const supervision = (): Pick<StatusView['agent'], 'restarts' | 'lastExit'> => {
    const sup = readSupervisorState(supervisorFiles(paths.nodeDir(node)).state);
    if (!sup) return {};
    return { restarts: sup.restarts, ...(sup.lastExit ? { lastExit: { at: sup.lastExit.at, reason: sup.lastExit.reason, ranSeconds: Math.round(sup.lastExit.ranMs / 100) / 10 } } : {}) };
  };

  return {
    datapath, networks, workloads, hubble,
    nodeIPCache: () => nodeAddrs.map((ip) => ({ prefix: hostPrefix(ip), identity: ReservedIdentity.host, endpointId: 0 })),
    fqdnIPCache: () => dns.ipcacheEntries(),
    fqdnRoutes: () => dns.routes(),
    policyChange: (outcome, n) => { for (let i = 0; i < n; i++) agentMetrics.policyChange(outcome); },
    aiRoutes: () => local?.ai.routes() ?? { 'GET /v1/ai/usage': async () => feed!.request('ai-usage') },
    proxiesSettled: async () => { await feed?.settled(); },
    async start(agent) {
      agentRef = agent;
      // L7 redirect (bpf_sk_assign, mark 0x200) needs local delivery of non-local destinations;
      // traffic from outside the pods gets its destination's ingress policy on the network devices.
      await ensureProxyRouting({ ipv6: config.enableIPv6 });
      for (const dev of provider.networkDevices) {
        try {
          if (datapath.attachNetworkDevice(dev, { underlay: dev === provider.underlayDevice })) logger.info({ subsys: 'datapath', dev }, 'network device attached');
        } catch (e) {
          logger.warn({ subsys: 'datapath', dev, err: String(e) }, 'cannot attach to network device');
        }
      }
      // Routing mode tunnel: the VXLAN device carries every pod packet between nodes, so a node
      // whose overlay cannot be attached must not come up half-working.
      if (config.routingMode === 'tunnel' && provider.overlayDevice) {
        if (!datapath.attachOverlayDevice(provider.overlayDevice)) {
          throw new MembraneError('DATAPATH_NO_OVERLAY', `routing mode tunnel: the VXLAN device ${provider.overlayDevice} does not exist`, { hint: 'the lab makes it on `membrane up`; or run with --routing-mode native' });
        }
        logger.info({ subsys: 'datapath', dev: provider.overlayDevice }, 'overlay device attached (routing mode tunnel)');
      }
      // datapath flows feed the agent's drop/forward counters with their packet length (the flow has none)
      // The flow is borrowed (one Flow refilled per event, flow.ts FlowBuilder.borrow): the counters
      // below and the metrics' onFlow read it during the call only, the ring keeps it compactly.
      unsubscribe = datapath.onEvent((ev) => { const f = hubble.ingestBorrowed(ev); if (f) agentMetrics.observe(f, ev.length); });
      await hubble.start();
      await dns.start();
      const offFlow = hubble.onFlow((f) => { metrics.process(f); if (f.eventType?.type === 129) agentMetrics.observe(f); }, { borrows: true });
      // hubble_lost_events_total{source}: every loss the ring records (kernel ring, queue, ring buffer).
      const offLost = hubble.ring.onLost((source, n) => metrics.lost(LostEventSource[source] ?? 'unknown', n));
      // Series of deleted pods go away a minute after the deletion, as Hubble's do.
      let knownPods = new Set<string>();
      const podWatch = setInterval(() => {
        const now = new Set(agent.endpointTable().all().map((e) => `${e.namespace}/${e.pod}`));
        for (const k of knownPods) {
          if (now.has(k)) continue;
          const [ns, pod] = k.split('/') as [string, string];
          setTimeout(() => { metrics.forgetPod(ns, pod).catch(() => {}); }, POD_METRICS_GRACE_MS).unref();
        }
        knownPods = now;
      }, 5000);
      podWatch.unref();
      unsubscribeMetrics = () => { offFlow(); offLost(); clearInterval(podWatch); };
      const serves: [string, () => Promise<import('node:http').Server>][] = [
        ['hubble :' + config.hubbleMetricsPort, () => metrics.serve(config.hubbleMetricsPort)],
        ['hubble socket', () => metrics.serveUnix(metricSockets.hubble)],
        ['agent :' + config.agentMetricsPort, () => agentMetrics.serve(config.agentMetricsPort)],
        ['agent socket', () => agentMetrics.serveUnix(metricSockets.agent)],
      ];
      for (const [what, serve] of serves) {
        try {
          metricsServers.push(await serve());
        } catch (e) {
          logger.warn({ subsys: 'metrics', err: String(e) }, `metrics server ${what} not started`);
        }
      }
      // AI policies and budgets are in before the proxy takes its first connection
      await local?.ai.start();
      await provider.start?.({ resources: agent.resources });
      // Kernel-side losses (ring full, or a sender's event budget spent) become LostEvents in the
      // flow stream (hubble's PERF_EVENT_RING_BUFFER); the endpoints whose budget was spent are logged.
      let lostSeen = 0n;
      const lostBySender = new Map<number, bigint>();
      lostTimer = setInterval(() => {
        try {
          const total = datapath.eventsLost();
          hubble.reportKernelLost(total);
          if (total <= lostSeen) return;
          lostSeen = total;
          for (const [id, l] of datapath.eventsLostBySender()) {
            const n = l.own + l.external;
            if (n <= (lostBySender.get(id) ?? 0n)) continue;
            lostBySender.set(id, n);
            const ep = agentRef?.endpointTable().byId(id);
            logger.warn({ subsys: 'datapath', endpointID: id, ...(ep ? { pod: `${ep.namespace}/${ep.pod}` } : {}), lostOwn: String(l.own), lostExternal: String(l.external) },
              'events over the endpoint\'s budget were not reported (counted as lost events)');
          }
        } catch { /* maps gone: stopping */ }
      }, 1000);
      lostTimer.unref();
    },
    async serve() {
      await dns.listen();
      await local?.httpProxy.start();
      await local?.tlsNode.start();
      await feed?.start();
    },
    async stop() {
      if (lostTimer) clearInterval(lostTimer);
      await provider.stop?.();
      await dns.stop();
      unsubscribeMetrics?.();
      for (const m of metricsServers) m.close();
      unsubscribe?.();
      await feed?.stop();
      await local?.tlsNode.stop();
      await local?.httpProxy.stop();
      await local?.ai.stop();
      await hubble.stop();
    },
    async status({ agent, started, policy: engine }) {
      const errors = [...agent.lastErrors(), ...metrics.configErrors.map((m) => `hubble metrics: ${m}`)];
      let dpState: StatusView['datapath'] = { state: 'Ok', mode: 'tcx (eBPF)', programs: 0 };
      try {
        const s = await datapath.stats();
        dpState = { state: 'Ok', mode: 'tcx (eBPF)', programs: s.programs.length, message: `${s.policyEntries} policy entries, ${s.ctEntries} connections tracked, BPF run-time stats ${s.runTimeStats ? 'on' : 'off (--bpf-run-time-stats)'}` };
      } catch (e) {
        dpState = { state: 'Failure', mode: 'tcx (eBPF)', programs: 0, message: (e as Error).message };
        errors.push(`datapath: ${(e as Error).message}`);
      }
      const eps = agent.endpoints();
      const ready = eps.filter((e) => e.state === 'ready').length;
      let kvstore: StatusView['kvstore'];
      try {
        const k = await input.kv.status();
        kvstore = { state: k.connected ? 'Ok' : 'Failure', backend: k.backend, message: k.message };
      } catch (e) {
        kvstore = { state: 'Failure', backend: input.kv.backend, message: (e as Error).message };
      }
      if (kvstore.state === 'Failure') errors.push(`kvstore: ${kvstore.message}`);
      const hs = hubble.stats();
      const lostTotal = Object.values(hs.lost).reduce((a, b) => a + (b ?? 0), 0);
      return {
        node, lab,
        agent: {
          state: errors.length ? 'Warning' : 'Ok', pid: process.pid, uptimeSeconds: (Date.now() - started) / 1000, version: VERSION,
          ...supervision(),
        },
        datapath: dpState,
        kvstore,
        ...(input.clusterNodes ? { cluster: { nodes: input.clusterNodes().map((n) => ({ name: n.name, ip: n.ip })) } } : {}),
        endpoints: { total: eps.length, ready, notReady: eps.length - ready },
        policy: {
          revision: engine.revision(), policies: (await agent.policies()).length, identities: engine.identities().length,
          enforcement: 'default',
          auditMode: { global: config.policyAuditMode, endpoints: eps.filter((e) => e.policyAuditMode).length },
        },
        hubble: { state: metrics.configErrors.length ? 'Warning' : 'Ok', flows: hs.numFlows, maxFlows: hs.maxFlows, seenFlows: hs.seenFlows, lost: lostTotal, socket: paths.hubbleSocket(node), listen: hubble.listener() },
        proxies: [...(local ? [dns.statusEntry()!, ...local.httpProxy.statusEntries(), ...local.tlsNode.statusEntries()] : externalRows())],
        errors,
      };
    },
  };
}
