/**
 * What the HTTP proxy needs from the agent (lookups only: it never computes policy). What it
 * reports back, one access record per request and per response, is `HttpAccessRecord`
 * (src/common/access-log.ts); the agent turns records into Hubble flows, metrics and OTLP spans.
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
