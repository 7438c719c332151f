/**
 * A node's part in a kvstore cluster (Cilium's kvstore mode, etcd):
 *
 *   register ── cilium/state/nodes/v1/<cluster>/<node>  (leased; Cilium's types.Node JSON)
 *   mirror   ── this node's endpoint records (membrane/endpoints/<node>/) become leased ipcache
 *               keys cilium/state/ip/v1/default/<ip> (Cilium's IPIdentityPair JSON)
 *   follow   ── every node key and ipcache key: remote pods (with their identity and node) and
 *               remote node addresses (remote-node identity) for the datapath's ipcache and for
 *               flow enrichment; a value that does not parse is logged and skipped
 *   schedule ── a pod without spec.nodeName goes to the registered node with the fewest pods
 *   leader   ── the lowest-numbered registered node runs the cluster-wide controllers
 *               (Deployments → Pods, ClusterIP assignment), as Cilium's operator is one
 *
 * The ipcache key's middle segment is Cilium's AddressSpace constant `default`, not the cluster
 * name (pkg/ipcache/kvstore.go); node keys do use the cluster name. The keys' values are written
 * and read in cluster-keys.ts.
 */
import { randomUUID } from 'node:crypto';
import type { BytesWatchEvent, KVStore, WatchEvent } from '../kvstore/types.ts';
import type { Logger } from '../common/logger.ts';
import type { EndpointRecord } from './endpoints.ts';
import type { Pod } from '../api/types.ts';
import type { IPCacheEntry } from '../datapath/types.ts';
import { ReservedIdentity } from '../identity/identity.ts';
import { formatIPv4, hostPrefix, parseIPv4 } from '../ipcache/prefix.ts';
import { RELABELED, RemoteStore, UNCHANGED, type RemoteEndpoint } from './remote-store.ts';
import { IPCACHE_PREFIX, NODES_PREFIX, createInterner, createIpcacheBytesReader, ipcacheValue, nodeValue, parseNodeValue, type ClusterNode } from './cluster-keys.ts';

/** pods per host kept in an array before a Set */
const SMALL_HOST = 256;

export interface ClusterOptions {
  kv: KVStore;
  self: ClusterNode;
  logger: Logger;
  /**
   * called (coalesced by the caller) when remote endpoints or nodes change; `nodesChanged` when
   * the node set did (scheduling and leadership read it), else only ipcache entries changed
   * (`drainIPCacheChanges` has them)
   */
  onChange?: (nodesChanged: boolean) => void;
}

export function createCluster(o: ClusterOptions) {
  const { kv, self } = o;
  const log = o.logger.child({ subsys: 'cluster' });
  const nodeKey = `${NODES_PREFIX}${self.cluster}/${self.name}`;
  const nodes = new Map<string, ClusterNode>();
  const remote = new RemoteStore();
  /** ip → value of this node's ipcache keys, as written */
  const mine = new Map<string, string>();
  const stops: (() => void)[] = [];
  let chain: Promise<void> = Promise.resolve();
  const serial = (fn: () => Promise<void>) => { chain = chain.then(fn).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'kvstore write failed')); return chain; };
  /**
   * The addresses (host prefixes: /32, /128) whose ipcache entry may have changed since the last drain: the
   * datapath applies only what changed, never the whole remote set per event (300,000 entries at
   * 10,000 nodes). Only the address is kept: the entry is read at drain time, so a burst costs
   * one string reference per address, not an entry object per event.
   */
  let pending = new Set<string>();
  /** every ipcache change up to this etcd revision has come through onIp (0: not known yet) */
  let received = 0;
  const intern = createInterner();
  const changed = (nodesChanged = false) => o.onChange?.(nodesChanged);
  /** a remote node's addresses (host prefixes); none for this node */
  function nodeAddresses(n: ClusterNode): string[] {
    return n.name === self.name && n.cluster === self.cluster ? [] : [n.ip, ...(n.routerIp ? [n.routerIp] : []), ...(n.routerIp6 ? [n.routerIp6] : [])];
  }
  /** remote node address → how many nodes claim it */
  const nodeAddrs = new Map<string, number>();
  /** remote node address → the tunnel endpoint for it (the InternalIP of the node that claimed it last) */
  const nodeTunnel = new Map<string, string>();
  /**
   * remote pod addresses by the HostIP they live on: their tunnel endpoint follows that node. An
   * array while small (some tens of pods per node: a Set each is several times the memory), a Set
   * past SMALL_HOST so that a host claiming very many addresses does not make removal quadratic.
   * An IPv4 address as its number (no text kept per pod), any other as its text.
   */
  const byHost = new Map<string, (number | string)[] | Set<number | string>>();
  function repend(hostIp: string): void {
    for (const a of byHost.get(hostIp) ?? []) pending.add(typeof a === 'number' ? formatIPv4(a) : a);
  }
  function hostSet(text: string, was: string | undefined, hostIp: string | undefined): void {
    if (was === hostIp) return;
    const ip = parseIPv4(text) ?? text;
    if (was !== undefined) {
      const a = byHost.get(was);
      if (a instanceof Set) { a.delete(ip); if (!a.size) byHost.delete(was); }
      else if (a) {
        const i = a.indexOf(ip);
        if (i >= 0) { a[i] = a[a.length - 1]!; a.pop(); if (!a.length) byHost.delete(was); }
      }
    }
    if (hostIp !== undefined) {
      const a = byHost.get(hostIp);
      if (!a) byHost.set(hostIp, [ip]);
      else if (a instanceof Set) a.add(ip);
      else if (a.length < SMALL_HOST) a.push(ip);
      else byHost.set(hostIp, new Set([...a, ip]));
    }
  }
  function nodeGone(n: ClusterNode): void {
    for (const a of nodeAddresses(n)) {
      const c = (nodeAddrs.get(a) ?? 1) - 1;
      if (c > 0) nodeAddrs.set(a, c); else { nodeAddrs.delete(a); nodeTunnel.delete(a); }
      pending.add(a);
    }
    if (nodeAddresses(n).length) repend(n.ip);
  }
  function nodeCame(n: ClusterNode): void {
    for (const a of nodeAddresses(n)) {
      nodeAddrs.set(a, (nodeAddrs.get(a) ?? 0) + 1);
      nodeTunnel.set(a, n.ip);
      pending.add(a);
    }
    if (nodeAddresses(n).length) repend(n.ip);
  }
  /**
   * What the cluster holds for the address `ip` (/32, /128) now: a remote pod's identity wins over a
   * node address (the order ipcacheEntries() wrote them); each with its tunnel endpoint, as
   * ipcacheEntries() gives it.
   */
  function entryAt(ip: string): IPCacheEntry | undefined {
    if (remote.at(ip)) {
      const hostIp = remote.atHost;
      // two literals, no spread: one object per remote pod drained (300,000 after a restart)
      const prefix = hostPrefix(ip), identity = remote.atIdentity;
      return nodeTunnel.get(hostIp) === hostIp ? { prefix, identity, endpointId: 0, tunnelEndpoint: hostIp } : { prefix, identity, endpointId: 0 };
    }
    const tunnel = nodeTunnel.get(ip);
    if (nodeAddrs.has(ip)) return { prefix: hostPrefix(ip), identity: ReservedIdentity.remoteNode, endpointId: 0, ...(tunnel ? { tunnelEndpoint: tunnel } : {}) };
    return undefined;
  }

  function onNode(ev: WatchEvent): void {
    const key = ev.type === 'put' ? ev.kv.key : ev.key;
    const rest = key.slice(NODES_PREFIX.length);
    if (ev.type === 'delete') {
      const had = nodes.get(rest);
      if (had) { nodes.delete(rest); nodeGone(had); log.info({ node: rest }, 'node left'); changed(true); }
      if (key === nodeKey) void serial(register); // self-deletion protection
      return;
    }
    const parsed = parseNodeValue(ev.kv.value);
    const n = parsed && { ...parsed, name: intern(parsed.name), cluster: intern(parsed.cluster), ip: intern(parsed.ip) };
    if (!n || `${n.cluster}/${n.name}` !== rest) {
      log.warn({ key }, 'kvstore: skipping a node key whose value does not parse or does not match its key');
      return;
    }
    const had = nodes.get(rest);
    nodes.set(rest, n);
    if (!had) log.info({ node: n.name, ip: n.ip, podCidr: n.podCidr }, 'node joined');
    if (!had || had.ip !== n.ip || had.routerIp !== n.routerIp || had.routerIp6 !== n.routerIp6 || had.podCidr !== n.podCidr || had.podCidr6 !== n.podCidr6) {
      if (had) nodeGone(had);
      nodeCame(n);
      changed(true);
    } else if (had.wireguardPubKey !== n.wireguardPubKey) {
      changed(true); // a key rotation: the WireGuard peers follow (the ipcache does not change)
    }
  }

  const readIpcache = createIpcacheBytesReader(intern);
  function onIp(ev: BytesWatchEvent): void {
    const ip = ev.rest;
    if (ev.type === 'delete') {
      if (mine.has(ip)) { void serial(async () => { const v = mine.get(ip); if (v) await kv.put(`${IPCACHE_PREFIX}${ip}`, v, { lease: true }); }); return; }
      if (remote.delete(ip)) hostSet(ip, remote.prevHost, undefined);
      // even one this process never held: a watch resumed after a restart names what went while
      // no agent ran, and the pinned map still holds it (the drain deletes what nothing claims)
      pending.add(ip);
      changed();
      return;
    }
    const e = readIpcache(ip, ev.value);
    if (!e) {
      log.warn({ key: `${IPCACHE_PREFIX}${ip}`, value: ev.value.toString('utf8', 0, 200) }, 'kvstore: skipping an ipcache key whose value does not parse');
      return;
    }
    if (e.hostIp === self.ip) return; // our own: the endpoint table is the truth
    const what = remote.set(e);
    if (what === UNCHANGED) return;
    hostSet(e.ip, remote.prevHost, e.hostIp);
    if (what !== RELABELED) pending.add(e.ip);
    changed();
  }

  async function register(): Promise<void> {
    await kv.put(nodeKey, nodeValue(self, bootId), { lease: true });
  }
  const bootId = randomUUID();

  /** This node's endpoint records → its ipcache keys (put what changed, delete what went). */
  function onEndpoint(ev: WatchEvent, byKey: Map<string, EndpointRecord>): void {
    if (ev.type === 'delete') byKey.delete(ev.key);
    else {
      try { byKey.set(ev.kv.key, JSON.parse(ev.kv.value) as EndpointRecord); } catch { log.warn({ key: ev.kv.key }, 'kvstore: skipping an endpoint record that does not parse'); return; }
    }
    void serial(async () => {
      const want = new Map<string, string>();
      for (const r of byKey.values()) {
        if (r.ip) want.set(r.ip, ipcacheValue(r, self.name, self.ip));
        if (r.ip6) want.set(r.ip6, ipcacheValue(r, self.name, self.ip, r.ip6));
      }
      for (const [ip, v] of want) {
        if (mine.get(ip) === v) continue;
        mine.set(ip, v);
        await kv.put(`${IPCACHE_PREFIX}${ip}`, v, { lease: true });
      }
      for (const ip of [...mine.keys()]) {
        if (want.has(ip)) continue;
        mine.delete(ip);
        await kv.delete(`${IPCACHE_PREFIX}${ip}`);
      }
    });
  }

  return {
    /**
     * Registers this node and loads the node set and this node's endpoints (what scheduling and
     * leadership read); the ipcache keys come with `listIPCache()`.
     */
    async startNodes(): Promise<void> {
      await register();
      stops.push(await kv.follow(NODES_PREFIX, onNode));
      const eps = new Map<string, EndpointRecord>();
      stops.push(await kv.follow(`membrane/endpoints/${self.name}/`, (ev) => onEndpoint(ev, eps)));
    },
    /**
     * Lists every ipcache key and follows them. The listing arrives in pages and every page is
     * handed on as it comes (`onChange`, `drainIPCacheChanges`): a restarted agent writes what
     * changed while the rest of the listing is still on its way. Resolves when it is complete.
     */
    async listIPCache(o?: { resume?: number }): Promise<void> {
      // the keys this node holds are the re-list's reference (the store keeps no second copy)
      stops.push(await kv.followBytes(IPCACHE_PREFIX, onIp, {
        keys: () => [...remote.keys(), ...mine.keys()], ...(o?.resume !== undefined ? { resume: o.resume } : {}),
        onProgress: (rev) => { received = rev; },
      }));
      await chain;
      log.info({ nodes: nodes.size, remoteEndpoints: remote.size }, 'cluster state loaded');
    },
    async start(): Promise<void> {
      await this.startNodes();
      await this.listIPCache();
    },
    stop(): void {
      for (const s of stops.splice(0)) s();
    },
    /** Changes this node's entry (e.g. a new WireGuard key) and writes it again. */
    updateSelf(patch: Partial<Pick<ClusterNode, 'wireguardPubKey'>>): Promise<void> {
      Object.assign(self, patch);
      return serial(register);
    },
    /** waits for this node's pending kvstore writes */
    flushed: () => chain,
    nodes: (): ClusterNode[] => [...nodes.values()].sort((a, b) => nodeOrder(a.name, b.name)),
    remoteEndpoints: (): RemoteEndpoint[] => [...remote.values()],
    remoteEndpoint: (ip: string): RemoteEndpoint | undefined => remote.get(ip),
    /** remoteEndpoint without a record per call (RemoteStore.peek): read at once, never kept */
    peekRemoteEndpoint: (ip: string): Readonly<RemoteEndpoint> | undefined => remote.peek(ip),
    /** The lowest-numbered registered node runs the cluster-wide controllers. */
    isLeader(): boolean {
      const first = [...nodes.values()].filter((n) => n.cluster === self.cluster).sort((a, b) => nodeOrder(a.name, b.name))[0];
      return !first || first.name === self.name;
    },
    /**
     * The ipcache changes (remote pods, remote nodes) since the last call: `upserts` to write,
     * `deletes` gone from the cluster. The first call after start has every entry. With `max`, at
     * most that many (the rest stay for the next call): a caller applies 300,000 entries in
     * batches instead of holding them all at once. Addresses `hold` names stay pending, untouched,
     * for a later call.
     */
    drainIPCacheChanges(max = Infinity, hold?: (ip: string) => boolean): { upserts: IPCacheEntry[]; deletes: string[] } {
      const upserts: IPCacheEntry[] = [];
      const deletes: string[] = [];
      let held: string[] | undefined;
      let n = 0;
      for (const ip of pending) {
        if (n >= max) break;
        pending.delete(ip);
        if (hold?.(ip)) { (held ??= []).push(ip); continue; }
        n++;
        const e = entryAt(ip);
        if (e) upserts.push(e); else deletes.push(hostPrefix(ip));
      }
      if (!pending.size) pending = new Set(); // a drained Set keeps its grown table
      for (const ip of held ?? []) pending.add(ip);
      return { upserts, deletes };
    },
    /**
     * The etcd revision up to which every ipcache change has come in (0 before the listing ends);
     * once `drainIPCacheChanges` has nothing left, whatever drained it has applied them all.
     */
    ipcacheRevision: (): number => received,
    /** whether ipcache changes wait for a drain */
    ipcachePending: (): boolean => pending.size > 0,
    /** Whether the cluster (a remote pod or node) claims `prefix`. */
    holds: (prefix: string): boolean => {
      const ip = prefix.endsWith('/32') ? prefix.slice(0, -3) : prefix.endsWith('/128') ? prefix.slice(0, -4) : undefined;
      // what entryAt finds, without making the entry (the prune asks for every key in the map)
      return ip !== undefined && hostPrefix(ip) === prefix && (remote.at(ip) || nodeAddrs.has(ip));
    },
    /**
     * Remote pods (their identity) and remote nodes (remote-node) for the datapath's ipcache, each
     * with its tunnel endpoint (Cilium's): the InternalIP of the node it lives on. A node's own
     * InternalIP names itself; that is what makes an address a tunnel peer (bpf/lib/overlay.h).
     * A pod whose HostIP is not a registered node gets none: the tunnel does not carry it.
     */
    ipcacheEntries(): IPCacheEntry[] {
      const out: IPCacheEntry[] = [];
      const nodeIps = new Set<string>();
      for (const n of nodes.values()) if (n.name !== self.name) nodeIps.add(n.ip);
      for (const e of remote.values()) {
        out.push({ prefix: hostPrefix(e.ip), identity: e.identity, endpointId: 0, ...(nodeIps.has(e.hostIp) ? { tunnelEndpoint: e.hostIp } : {}) });
      }
      for (const n of nodes.values()) {
        if (n.name === self.name) continue;
        out.push({ prefix: `${n.ip}/32`, identity: ReservedIdentity.remoteNode, endpointId: 0, tunnelEndpoint: n.ip });
        if (n.routerIp) out.push({ prefix: `${n.routerIp}/32`, identity: ReservedIdentity.remoteNode, endpointId: 0, tunnelEndpoint: n.ip });
        if (n.routerIp6) out.push({ prefix: `${n.routerIp6}/128`, identity: ReservedIdentity.remoteNode, endpointId: 0, tunnelEndpoint: n.ip });
      }
      return out;
    },
    /**
     * Gives every pod of `pods` without spec.nodeName the registered node with the fewest pods
     * (counting `existing`, the batch's pods that have a node, and those placed before it),
     * lowest-numbered first on a tie.
     */
    schedule(pods: Pod[], existing: Pod[]): void {
      const names = [...nodes.values()].filter((n) => n.cluster === self.cluster).map((n) => n.name).sort(nodeOrder);
      if (!names.length) names.push(self.name);
      const load = new Map(names.map((n) => [n, 0]));
      const key = (p: Pod) => `${p.metadata.namespace ?? 'default'}/${p.metadata.name}`;
      const batch = new Set(pods.map(key));
      for (const p of existing) if (p.spec.nodeName && load.has(p.spec.nodeName) && !batch.has(key(p))) load.set(p.spec.nodeName, load.get(p.spec.nodeName)! + 1);
      for (const p of pods) {
        if (p.spec.hostNetwork || p.spec.nodeName) {
          if (p.spec.nodeName && load.has(p.spec.nodeName)) load.set(p.spec.nodeName, load.get(p.spec.nodeName)! + 1);
          continue;
        }
        let best = names[0]!;
        for (const n of names) if (load.get(n)! < load.get(best)!) best = n;
        p.spec.nodeName = best;
        load.set(best, load.get(best)! + 1);
      }
    },
  };
}

/** node2 before node10; names without a number after those with one. */
function nodeOrder(a: string, b: string): number {
  const na = /(\d+)$/.exec(a);
  const nb = /(\d+)$/.exec(b);
  if (na && nb && a.slice(0, -na[1]!.length) === b.slice(0, -nb[1]!.length)) return Number(na[1]) - Number(nb[1]);
  return a < b ? -1 : a > b ? 1 : 0;
}

export type Cluster = ReturnType<typeof createCluster>;
