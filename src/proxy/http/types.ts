/**
 * What the HTTP proxy needs from the agent (lookups only: it never computes policy) and what it
 * reports back (one access record per request and per response, Cilium's access log shape; the
 * agent turns them into Hubble flows, metrics and OTLP spans).
 */
import type { Direction, L7Policy } from '../../policy/types.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';

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

export interface AccessPeer {
  ip: string;
  port: number;
  identity: number;
}

export type AccessVerdict = 'forwarded' | 'denied' | 'error';

/** One request or response seen by the proxy (Cilium's accesslog.LogRecord, HTTP part). */
export interface AccessRecord {
  type: 'request' | 'response';
  verdict: AccessVerdict;
  direction: Direction;
  /** epoch ms (fractional) */
  timeMs: number;
  /** the client (source of the request) and the server, whatever the record type */
  client: AccessPeer;
  server: AccessPeer;
  /** the local endpoint the policy belongs to (0: none) */
  endpointId: number;
  method: string;
  /** `http://host/path?query` */
  url: string;
  host: string;
  path: string;
  protocol: string;
  /** request headers for requests, response headers for responses: [name, value, ...] as received */
  headers: readonly string[];
  /** response status (0 for requests) */
  code: number;
  /** response time − request time, ns (responses) */
  latencyNs: number;
  /** W3C trace id (32 hex) from the request's traceparent */
  traceId?: string;
  /** parent span id (16 hex) from the request's traceparent */
  parentSpanId?: string;
  /** why the proxy refused or failed (parse errors, timeouts, policy) */
  reason?: string;
  /** headerMatches mismatch actions carried out (LOG/ADD/DELETE/REPLACE name) */
  headerActions?: string[];
  /** request start, epoch ms (responses) */
  requestTimeMs?: number;
  /** the connection is TLS: its server name, and whether the proxy terminated it (interception) */
  tls?: { sni: string; intercepted: boolean };
}
