/**
 * The L7 proxies of a node in their own process (the agent's `--external-envoy-proxy`, as Cilium
 * runs Envoy as its own DaemonSet and its DNS proxy standalone): the HTTP proxy with the AI filter
 * and TLS interception, the TLS SNI proxy, and the DNS proxy (src/proxy/dns/standalone.ts: it
 * reports allowed answers to the agent, which writes their IPs to the datapath). Policy comes from the agent's feed (src/proxy/feed) as whole snapshots; the
 * listeners go into the node's pinned sockmap directly, so they stay registered while the agent
 * restarts and established connections never notice it. Until the first snapshot arrives nothing
 * listens: the datapath drops redirected traffic (178, fail closed).
 *
 *   agent ──snapshot (MapStates, endpoints, ipcache, Secrets, AIPolicies, DNS settings)──► feed socket ──► this
 *         ◄──access records (buffered while the agent is away), DNS answers, status, AI usage, metrics──┘
 *   this ──listener fds──► <pinRoot>/mb_proxy_socks (slot per parser and direction)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { resourceKey } from '../../api/types.ts';
import type { AccessLogRecord } from '../../common/access-log.ts';
import { proxySlot } from '../../common/proxy-ports.ts';
import { encodeSockmapFd, encodeU32 } from '../../datapath/linux/codec.ts';
import { BpfMap } from '../../sys/bpf.ts';
import { createAINode } from '../ai/node.ts';
import { createHttpProxyNode } from '../http/node.ts';
import { createTlsNode } from '../tls/node.ts';
import { createStandaloneDNS } from '../dns/standalone.ts';
import { createFeedClient } from '../feed/client.ts';
import { applyDelta, applyIpcacheDelta, viewOf, type PolicyView, type ProxySnapshot } from '../feed/snapshot.ts';

type Log = { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void; debug(o: unknown, m?: string): void; error?(o: unknown, m?: string): void; child?(b: Record<string, unknown>): Log };

export interface ProxyProcessDeps {
  node: string;
  pinRoot: string;
  /** the agent's feed socket (<nodeDir>/l7proxy.sock) */
  feedSocket: string;
  /** the AI budget ledger (<nodeDir>/ai-budgets.json), shared with an in-agent proxy of earlier runs */
  aiStateFile: string;
  aiMaxBodyBytes: number;
  /** enable-ipv6: IPv6 listeners beside the IPv4 ones */
  ipv6?: boolean;
  otlpEndpoint?: string;
  otel?: Readonly<Record<string, string>>;
  logger: Log;
}

type StoreEvent = { type: 'put'; resource: { kind: string; metadata: { name: string; namespace?: string } } } | { type: 'delete'; key: string };

export interface ProxyProcess {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** the snapshot being judged with (undefined until the first one) */
  view(): PolicyView | undefined;
}

export function createProxyProcess(deps: ProxyProcessDeps): ProxyProcess {
  const log = deps.logger;
  let view: PolicyView | undefined;
  let seqSeen = 0;
  let firstSnapshot: (() => void) | undefined;
  const gotFirst = new Promise<void>((r) => { firstSnapshot = r; });

  // The resources the proxies read (Secrets, AIPolicies), served from the snapshot as the agent's
  // store would: list, and a watch told of every change between two snapshots.
  const watchers = new Set<(ev: StoreEvent) => void>();
  const store = {
    list: async (kind: string) => (view?.resources[kind as 'Secret' | 'AIPolicy'] ?? []),
    watch(cb: (ev: StoreEvent) => void) { watchers.add(cb); return () => { watchers.delete(cb); }; },
  };
  function resourcesChanged(before: PolicyView['resources'] | undefined, after: PolicyView['resources']): void {
    for (const kind of ['Secret', 'AIPolicy'] as const) {
      const old = new Map(((before?.[kind] ?? []) as { kind: string; metadata: { name: string; namespace?: string } }[]).map((r) => [resourceKey(r), JSON.stringify(r)]));
      const now = (after[kind] ?? []) as { kind: string; metadata: { name: string; namespace?: string } }[];
      for (const r of now) {
        const k = resourceKey(r);
        if (old.get(k) !== JSON.stringify(r)) for (const w of watchers) w({ type: 'put', resource: r });
        old.delete(k);
      }
      for (const k of old.keys()) for (const w of watchers) w({ type: 'delete', key: k });
    }
  }

  // The node's sockmap, opened from its pin (the agent made it; a proxy started first waits for it).
  let sockmap: BpfMap | undefined;
  const setProxyListener = (slot: number, fd: number | null) => {
    if (!sockmap) throw new Error('sockmap not open');
    if (fd === null) sockmap.delete(encodeU32(slot));
    else sockmap.update(encodeU32(slot), encodeSockmapFd(fd));
  };

  const feed = createFeedClient({
    socketPath: deps.feedSocket,
    onSnapshot(snap: ProxySnapshot, seq: number) {
      const before = view?.resources;
      view = viewOf(snap, view?.ipcache);
      seqSeen = seq;
      revision++;
      resourcesChanged(before, view.resources);
      firstSnapshot?.();
      firstSnapshot = undefined;
    },
    onIpcache(d, seq) {
      if (!view) return; // never before the first snapshot (it carries the ipcache whole)
      applyIpcacheDelta(view.ipcache, d);
      seqSeen = seq;
      revision++;
    },
    onDelta(d, seq) {
      if (!view) return; // never before the first snapshot
      view = applyDelta(view, d);
      seqSeen = seq;
      revision++;
    },
    handle: async (what) => (what === 'ai-usage' ? ai.usage() : what === 'dns-stats' ? dns.stats() : registry.metrics()),
    statusRows: () => [dns.statusEntry(), ...httpProxy.statusEntries(), ...tlsNode.statusEntries()],
    logger: log,
  });
  let revision = 0;
  const emitRecord = (rec: AccessLogRecord) => feed.record(rec);
  const registry = new Registry();
  const proxyDeps = {
    nodeName: deps.node, setProxyListener, ipv6: deps.ipv6 ?? false,
    endpointByIp: (ip: string) => view?.endpointByIp(ip),
    identityOfOther: (ip: string) => view?.identityOfOther(ip) ?? 2,
    // no snapshot: no MapState, the proxy denies (it never listens before the first one anyway)
    mapState: (id: number) => view?.mapState(id),
    // a new snapshot may change any decision: connections look their entry up again
    revision: () => revision,
    // the feed client encodes a record as it comes (into its frame, or a WireRecord of its values): it keeps no record object
    emitRecord, recordsBorrowed: true, resources: () => store,
    ...(deps.otlpEndpoint ? { otlpEndpoint: deps.otlpEndpoint } : {}), ...(deps.otel ? { otel: deps.otel } : {}),
  };
  const child = (subsys: string): Log => log.child?.({ subsys }) ?? log;
  const tlsNode = createTlsNode({ ...proxyDeps, slot: (dir, family) => proxySlot('tls', dir, 'TCP', family), logger: child('proxy-tls') });
  const ai = createAINode({
    node: deps.node, resources: () => store, stateFile: deps.aiStateFile,
    identityLabels: (id) => view?.identityLabels(id), namesForIp: (ip) => view?.namesForIp(ip) ?? [],
    maxBodyBytes: deps.aiMaxBodyBytes, registry, logger: child('proxy-ai'),
  });
  const dns = createStandaloneDNS({
    node: deps.node, pinRoot: deps.pinRoot, view: () => view, feed, emit: emitRecord, recordsBorrowed: true, setProxyListener, ipv6: deps.ipv6 ?? false, logger: child('proxy-dns'),
    revision: () => revision,
  });
  const httpProxy = createHttpProxyNode({
    ...proxyDeps, slot: (dir, family) => proxySlot('http', dir, 'TCP', family), logger: child('proxy-http'),
    configure: (chain) => { tlsNode.configureHttp(chain); ai.configureHttp(chain); },
  });

  return {
    view: () => view,
    async start() {
      feed.start();
      const pin = join(deps.pinRoot, 'mb_proxy_socks');
      while (!existsSync(pin)) await new Promise((r) => setTimeout(r, 100));
      sockmap = BpfMap.fromPin(pin);
      // nothing is judged before the agent's policy is here
      await gotFirst;
      log.info({ seq: seqSeen, revision: view?.revision }, 'first policy snapshot');
      await ai.start();
      await dns.start();
      await httpProxy.start();
      await tlsNode.start();
    },
    async stop() {
      await dns.stop();
      await tlsNode.stop();
      await httpProxy.stop();
      await ai.stop();
      feed.stop();
      sockmap?.close();
    },
  };
}
