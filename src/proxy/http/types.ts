/**
 * What the HTTP proxy needs from the agent (lookups only: it never computes policy). What it
 * reports back, one access record per request and per response, is `HttpAccessRecord`
 * (src/common/access-log.ts); the agent turns records into Hubble flows, metrics and OTLP spans.
 */
import type { Direction, L7Policy } from '../../policy/types.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import type { HttpAccessRecord } from '../../common/access-log.ts';
import type { FilterChain } from '../filter-chain.ts';
import type { BufferPool } from './read-buffer.ts';
import type { UpstreamPool } from './upstream-pool.ts';
import type { ParserPool } from './parser.ts';

export type ProxyEndpoint = ResolvedEndpoint;

/** The MapState entry that redirected the connection, as the datapath looked it up. */
export interface ProxyPolicyLookup {
  /** redirect: `l7` applies; forward: allowed without L7 restriction; drop: nothing is allowed */
  verdict: 'forward' | 'redirect' | 'drop';
  l7: L7Policy | null;
}

export interface ProxyPolicySource {
  /** a local endpoint by its address */
  endpointByIp(ip: string): ProxyEndpoint | undefined;
  /** security identity of any address (local endpoint, node, ipcache prefix, else world) */
  identityOf(ip: string): number;
  /** the MapState entry for (endpoint, direction, remote identity, TCP, port) */
  lookup(endpointId: number, direction: Direction, remoteIdentity: number, port: number): ProxyPolicyLookup;
  /** changes whenever MapStates may have changed (connections re-look up their entry) */
  revision(): number;
  /** headerMatches secrets: the single value of secret `name` in `namespace` */
  secret?(name: string, namespace: string | undefined): string | undefined;
}

export interface UpstreamSocketFactory {
  /** An unconnected socket fd bound to `sourceIp` (IP_TRANSPARENT) with SO_MARK `mark`. */
  (sourceIp: string, mark: number): number;
}

/** The proxy's options a client connection reads (HttpProxyOptions adds the listeners' own). */
export interface ConnectionOptions {
  policy: ProxyPolicySource;
  /** each request and response record (flows, metrics, spans) */
  onRecord?(rec: HttpAccessRecord): void;
  /**
   * onRecord reads each record during the call and keeps nothing of the object (the proxy
   * process's feed client encodes it at once): a record without optional fields is then one
   * object the proxy refills, not a new one per request and per response.
   */
  recordsBorrowed?: boolean;
  /**
   * Upstream sockets keeping the client's address (src/sys/proxy-socket.ts). Without it the
   * proxy connects from the node's own address (tests without a datapath).
   */
  upstreamSocket?: UpstreamSocketFactory;
  maxHeadBytes?: number;
  /** upstream connect timeout, default 5 s (then 503) */
  connectTimeoutMs?: number;
  logger?: { info(o: unknown, m?: string): void; warn(o: unknown, m?: string): void; debug(o: unknown, m?: string): void };
  /** fixed upstream (tests): overrides the original destination */
  upstreamOverride?: { host: string; port: number };
  /** request bodies held for filters, all connections together, default 64 MiB (then 503) */
  maxHeldBytes?: number;
}

/**
 * What a client connection needs from the proxy that accepted it (HttpProxy, proxy.ts): a port,
 * so that connection.ts does not import the proxy that imports it. Generic in the connection and
 * stream types, which are connection.ts's and stream.ts's own (this file is below both).
 */
export interface ConnectionOwner<Conn, Stream> {
  readonly opts: ConnectionOptions;
  readonly chain: FilterChain<Conn, Stream>;
  /** the open client connections (a connection leaves it when destroyed) */
  readonly conns: Set<Conn>;
  readonly pool: UpstreamPool;
  /** the connections' parser state, taken on accept and handed back on destroy */
  readonly parsers: ParserPool;
  /** bytes of request bodies held for filters, all connections together */
  heldBytes: number;
  /** coarse clock (ms) refreshed by the sweep */
  readonly now: number;
  /** client read buffers kept from closed connections for new ones */
  readonly readBuffers?: BufferPool;
}
