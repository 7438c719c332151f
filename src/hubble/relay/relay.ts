/**
 * Hubble Relay: one Observer API for the whole cluster, as Cilium's hubble-relay.
 *
 *   peer service (any agent's 4244, Peer.Notify) ──► peers: name → address, TLS server name
 *   each peer: a gRPC client over mutual TLS (the Relay's client certificate)
 *   GetFlows  ── fan out the same request to every available peer, merge by flow time
 *               (non-follow: every answer, sorted; follow: a 100-entry queue drained after 1 s,
 *               Cilium's sort-buffer-len-max / sort-buffer-drain-timeout), node status events
 *               first (NODE_CONNECTED, NODE_UNAVAILABLE) and NODE_ERROR when a peer fails
 *   ServerStatus / GetNodes / GetNamespaces ── asked of every peer, summed / listed / merged
 *
 * Served on TCP (4245) with mutual TLS unless plain text is asked for explicitly (Cilium's
 * --disable-server-tls), checked with the same rules as the agents' 4244 (../tls.ts).
 */
import http2 from 'node:http2';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, createClient, type Client, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter, createGrpcTransport } from '@connectrpc/connect-node';
import { MembraneError } from '../../common/errors.ts';
import {
  Observer, GetFlowsResponseSchema, ServerStatusResponseSchema, GetNodesResponseSchema, GetNamespacesResponseSchema,
  type GetFlowsRequest, type GetFlowsResponse, type ServerStatusResponse, type Namespace,
} from '../gen/observer/observer_pb.js';
import { NodeState } from '../gen/relay/relay_pb.js';
import { Peer as PeerService, ChangeNotificationType } from '../gen/peer/peer_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import { clientTlsOptions, serverTlsOptions, hubbleServerName, type HubbleClientTlsFiles, type HubbleTcpSecurity } from '../tls.ts';

/** Cilium's relay defaults: --sort-buffer-len-max, --sort-buffer-drain-timeout. */
export const SORT_BUFFER_LEN = 100;
export const SORT_BUFFER_DRAIN_MS = 1000;
/** Hubble Relay's port (Cilium's relay defaults.ListenAddress `:4245`). */
export const RELAY_PORT = 4245;
const PEER_TIMEOUT_MS = 3000;
const PROBE_INTERVAL_MS = 2000;

export interface RelayPeerAddress {
  name: string;
  /** `ip:port` as Peer.Notify gave it */
  address: string;
  /** the name to verify on its certificate; empty: peers serve plain text */
  serverName?: string;
}

export interface RelayOptions {
  listenHost: string;
  listenPort: number;
  /** the Relay's own listener: mutual TLS (its server certificate, the CA of its clients) or plain text explicitly */
  security: HubbleTcpSecurity;
  /** client side toward the peers (CA, the Relay's client certificate); undefined: plain text (--disable-client-tls) */
  clientTls?: HubbleClientTlsFiles;
  /** where the peer service may be asked (tried in turn; a lost stream moves to the next) */
  peerService: () => RelayPeerAddress[];
  /** how to reach a peer: a connected stream (the lab's port-forward socket); default TCP to its address */
  dial?: (peer: RelayPeerAddress) => Duplex;
  version: string;
  log?: (msg: string) => void;
}

interface PeerState extends RelayPeerAddress {
  client: Client<typeof Observer>;
  available: boolean;
  lastError?: string;
}

function tsMs(t: Timestamp | undefined): number {
  return t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : 0;
}

function nodeStatus(state: NodeState, names: string[], message = ''): GetFlowsResponse {
  return create(GetFlowsResponseSchema, {
    responseTypes: { case: 'nodeStatus', value: { stateChange: state, nodeNames: names, message } },
    time: timestampFromMs(Date.now()),
  });
}

/** A bounded wait that ends early on abort. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** Responses of several peers as one stream, in arrival order (the merge sorts them). */
class FanIn {
  private items: GetFlowsResponse[] = [];
  private wake: (() => void) | undefined;
  private space: (() => void)[] = [];
  private running = 0;
  push(r: GetFlowsResponse): void {
    this.items.push(r);
    this.wake?.();
  }
  /**
   * Backpressure (Cilium's relay blocks on a bounded channel): a peer's reader waits while this
   * many responses are not yet taken, so a slow client never makes the Relay buffer without end.
   * Non-follow requests take at the end, so they are not held back (their size is the peers' rings).
   */
  room(limit: number, signal: AbortSignal): Promise<void> {
    if (this.items.length < limit || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.space.push(resolve);
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  }
  started(): void { this.running++; }
  ended(): void {
    this.running--;
    this.wake?.();
  }
  get idle(): boolean { return this.running === 0; }
  take(): GetFlowsResponse[] {
    const out = this.items;
    this.items = [];
    for (const r of this.space.splice(0)) r();
    return out;
  }
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.items.length || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { clearTimeout(t); this.wake = undefined; resolve(); };
      const t = setTimeout(done, ms);
      this.wake = done;
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

export interface Relay {
  start(): Promise<void>;
  stop(): Promise<void>;
  address(): { host: string; port: number } | undefined;
  peers(): { name: string; address: string; available: boolean }[];
}

export function createRelay(o: RelayOptions): Relay {
  const log = o.log ?? (() => {});
  const peers = new Map<string, PeerState>();
  const shutdown = new AbortController();
  const startedAt = Date.now();
  let server: http2.Http2Server | http2.Http2SecureServer | undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  let bound: { host: string; port: number } | undefined;
  const clientTls = o.clientTls ? clientTlsOptions(o.clientTls) : undefined;

  function connectTo(p: RelayPeerAddress): Client<typeof Observer> & { peer: Client<typeof PeerService> } {
    const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(p.address);
    const host = m?.[1] || p.address;
    const port = Number(m?.[2] ?? 4244);
    const useTls = clientTls !== undefined;
    const dial = o.dial;
    // TLS end to end with the peer, over TCP or over the stream `dial` gives
    const createConnection = (): Duplex => {
      if (!useTls) return dial!(p);
      const servername = p.serverName || hubbleServerName(p.name);
      return tls.connect({ ...clientTls, servername, ALPNProtocols: ['h2'], ...(dial ? { socket: dial(p) } : { host, port }) });
    };
    const transport = createGrpcTransport({
      baseUrl: `${useTls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
      ...(dial || useTls ? { nodeOptions: { createConnection } } : {}),
    });
    return Object.assign(createClient(Observer, transport), { peer: createClient(PeerService, transport) });
  }

  function addPeer(p: RelayPeerAddress): void {
    const had = peers.get(p.name);
    if (had && had.address === p.address && had.serverName === p.serverName) return;
    peers.set(p.name, { ...p, client: connectTo(p), available: had?.available ?? false });
    log(`peer ${p.name} at ${p.address}${had ? ' (updated)' : ''}`);
    void probe(peers.get(p.name)!);
  }

  async function probe(p: PeerState): Promise<ServerStatusResponse | undefined> {
    try {
      const s = await p.client.serverStatus({}, { timeoutMs: PEER_TIMEOUT_MS, signal: shutdown.signal });
      if (!p.available) log(`peer ${p.name} connected`);
      p.available = true;
      delete p.lastError;
      return s;
    } catch (e) {
      if (p.available) log(`peer ${p.name} unavailable: ${(e as Error).message}`);
      p.available = false;
      p.lastError = e instanceof ConnectError ? e.rawMessage : (e as Error).message;
      return undefined;
    }
  }

  /** Follows Peer.Notify of one peer-service candidate after another, for as long as the Relay runs. */
  async function watchPeers(): Promise<void> {
    let i = 0;
    while (!shutdown.signal.aborted) {
      const candidates = o.peerService();
      if (!candidates.length) {
        await sleep(1000, shutdown.signal);
        continue;
      }
      const c = candidates[i++ % candidates.length]!;
      try {
        const svc = connectTo(c).peer;
        for await (const n of svc.notify({}, { signal: shutdown.signal })) {
          const serverName = n.tls?.serverName ?? '';
          if (n.type === ChangeNotificationType.PEER_DELETED) {
            if (peers.delete(n.name)) log(`peer ${n.name} deleted`);
          } else if (n.type === ChangeNotificationType.PEER_ADDED || n.type === ChangeNotificationType.PEER_UPDATED) {
            addPeer({ name: n.name, address: n.address, serverName });
          }
        }
      } catch (e) {
        if (!shutdown.signal.aborted) log(`peer service at ${c.name} (${c.address}): ${(e as Error).message}`);
      }
      await sleep(1000, shutdown.signal);
    }
  }

  async function probeLoop(): Promise<void> {
    while (!shutdown.signal.aborted) {
      await Promise.all([...peers.values()].map((p) => probe(p)));
      await sleep(PROBE_INTERVAL_MS, shutdown.signal);
    }
  }

  async function* getFlows(req: GetFlowsRequest, ctx: HandlerContext): AsyncGenerator<GetFlowsResponse> {
    if (req.first && req.follow) throw new ConnectError('first cannot be specified with follow', Code.InvalidArgument);
    const signal = AbortSignal.any([ctx.signal, shutdown.signal]);
    const fan = new FanIn();
    const streaming = new Set<string>();
    const limit = req.follow ? SORT_BUFFER_LEN * 10 : Infinity;
    const pump = (p: PeerState) => {
      streaming.add(p.name);
      fan.started();
      void (async () => {
        try {
          for await (const r of p.client.getFlows(req, { signal })) {
            fan.push(r);
            await fan.room(limit, signal);
          }
        } catch (e) {
          if (!signal.aborted) {
            const ce = ConnectError.from(e);
            // a bad filter is the client's error: every peer says the same, the first one is enough
            if (ce.code === Code.InvalidArgument) fan.push(nodeStatus(NodeState.NODE_ERROR, [p.name], `InvalidArgument: ${ce.rawMessage}`));
            else fan.push(nodeStatus(NodeState.NODE_ERROR, [p.name], ce.rawMessage));
            p.available = false;
          }
        } finally {
          streaming.delete(p.name);
          fan.ended();
        }
      })();
    };
    const all = [...peers.values()];
    const connected = all.filter((p) => p.available);
    const unavailable = all.filter((p) => !p.available);
    if (connected.length) yield nodeStatus(NodeState.NODE_CONNECTED, connected.map((p) => p.name));
    if (unavailable.length) yield nodeStatus(NodeState.NODE_UNAVAILABLE, unavailable.map((p) => p.name));
    for (const p of connected) pump(p);

    if (!req.follow) {
      // every peer answers with its own window; the whole answer is sorted by flow time
      const got: GetFlowsResponse[] = [];
      while (!fan.idle) {
        await fan.wait(1000, signal);
        if (signal.aborted) return;
        got.push(...fan.take());
      }
      got.push(...fan.take());
      got.sort((a, b) => tsMs(a.time) - tsMs(b.time));
      yield* got;
      return;
    }

    // follow: a bounded queue ordered by time; entries leave when it is full or older than the window
    const queue: GetFlowsResponse[] = [];
    const insert = (r: GetFlowsResponse) => {
      const t = tsMs(r.time);
      let i = queue.length;
      while (i > 0 && tsMs(queue[i - 1]!.time) > t) i--;
      queue.splice(i, 0, r);
    };
    let lastJoin = Date.now();
    while (!signal.aborted) {
      await fan.wait(SORT_BUFFER_DRAIN_MS, signal);
      if (signal.aborted) return;
      for (const r of fan.take()) {
        if (r.responseTypes.case === 'nodeStatus') {
          yield r;
          continue;
        }
        if (queue.length >= SORT_BUFFER_LEN) yield queue.shift()!;
        insert(r);
      }
      const cutoff = Date.now() - SORT_BUFFER_DRAIN_MS;
      while (queue.length && tsMs(queue[0]!.time) <= cutoff) yield queue.shift()!;
      // peers that came (back) since the request started join it
      if (Date.now() - lastJoin >= PROBE_INTERVAL_MS) {
        lastJoin = Date.now();
        const joined = [...peers.values()].filter((p) => p.available && !streaming.has(p.name));
        if (joined.length) {
          yield nodeStatus(NodeState.NODE_CONNECTED, joined.map((p) => p.name));
          for (const p of joined) pump(p);
        }
      }
    }
  }

  async function statuses(): Promise<{ p: PeerState; s: ServerStatusResponse | undefined }[]> {
    const list = [...peers.values()].sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
    return Promise.all(list.map(async (p) => ({ p, s: await probe(p) })));
  }

  function routes(router: ConnectRouter): void {
    router.service(Observer, {
      getFlows,
      getAgentEvents() { throw new ConnectError('GetAgentEvents is not served by Hubble Relay', Code.Unimplemented); },
      getDebugEvents() { throw new ConnectError('GetDebugEvents is not served by Hubble Relay', Code.Unimplemented); },
      async serverStatus() {
        const all = await statuses();
        const up = all.filter((x) => x.s);
        const sum = (f: (s: ServerStatusResponse) => bigint) => up.reduce((acc, x) => acc + f(x.s!), 0n);
        return create(ServerStatusResponseSchema, {
          numFlows: sum((s) => s.numFlows),
          maxFlows: sum((s) => s.maxFlows),
          seenFlows: sum((s) => s.seenFlows),
          uptimeNs: BigInt(Math.round((Date.now() - startedAt) * 1e6)),
          numConnectedNodes: up.length,
          numUnavailableNodes: all.length - up.length,
          unavailableNodes: all.filter((x) => !x.s).map((x) => x.p.name),
          version: o.version,
          flowsRate: up.reduce((acc, x) => acc + x.s!.flowsRate, 0),
        });
      },
      async getNodes() {
        const all = await statuses();
        return create(GetNodesResponseSchema, {
          nodes: all.map(({ p, s }) => ({
            name: p.name,
            address: p.address,
            state: s ? NodeState.NODE_CONNECTED : NodeState.NODE_UNAVAILABLE,
            tls: p.serverName ? { enabled: true, serverName: p.serverName } : { enabled: false, serverName: '' },
            ...(s ? { version: s.version, uptimeNs: s.uptimeNs, numFlows: s.numFlows, maxFlows: s.maxFlows, seenFlows: s.seenFlows } : {}),
          })),
        });
      },
      async getNamespaces() {
        const seen = new Map<string, Namespace>();
        await Promise.all([...peers.values()].filter((p) => p.available).map(async (p) => {
          try {
            const r = await p.client.getNamespaces({}, { timeoutMs: PEER_TIMEOUT_MS });
            for (const n of r.namespaces) seen.set(`${n.cluster}\0${n.namespace}`, n);
          } catch { /* an unavailable peer adds nothing */ }
        }));
        const namespaces = [...seen.values()].sort((a, b) => a.cluster.localeCompare(b.cluster) || a.namespace.localeCompare(b.namespace));
        return create(GetNamespacesResponseSchema, { namespaces });
      },
    });
    router.service(Health, {
      check() { return { status: HealthCheckResponse_ServingStatus.SERVING }; },
      async *watch(_req, ctx) {
        yield { status: HealthCheckResponse_ServingStatus.SERVING };
        await sleep(2 ** 31 - 1, ctx.signal);
      },
    });
  }

  return {
    async start() {
      // files are read before anything listens: a bad TLS setup serves nothing
      const secure = 'tls' in o.security ? serverTlsOptions(o.security.tls) : undefined;
      const handler = connectNodeAdapter({ routes, shutdownSignal: shutdown.signal });
      const s = secure ? http2.createSecureServer(secure, handler) : http2.createServer(handler);
      s.on('session', (x) => { sessions.add(x); x.on('close', () => sessions.delete(x)); });
      await new Promise<void>((resolve, reject) => {
        s.once('error', (e: NodeJS.ErrnoException) => reject(new MembraneError('HUBBLE_RELAY_LISTEN', `hubble relay cannot listen on ${o.listenHost}:${o.listenPort}: ${e.message}`, {
          hint: e.code === 'EADDRINUSE' ? 'another relay (another lab?) serves there: set MEMBRANE_HUBBLE_RELAY_PORT' : 'check the address', cause: e,
        })));
        s.listen(o.listenPort, o.listenHost, () => resolve());
      });
      const a = s.address();
      if (a && typeof a === 'object') bound = { host: a.address, port: a.port };
      server = s;
      void watchPeers();
      void probeLoop();
    },
    async stop() {
      shutdown.abort();
      for (const x of sessions) x.close();
      if (server) {
        const timer = setTimeout(() => { for (const x of sessions) x.destroy(); }, 200);
        await new Promise<void>((resolve) => server!.close(() => resolve()));
        clearTimeout(timer);
      }
      server = undefined;
    },
    address: () => bound,
    peers: () => [...peers.values()].map((p) => ({ name: p.name, address: p.address, available: p.available })),
  };
}
