/** The JSON shapes the agent API returns (the CLI prints them; `-o json` wraps them in a List). */
import type { ApplyResult } from './resources.ts';
import type { ResolvedEndpoint } from '../common/endpoint.ts';

/** A row of `GET /v1/endpoints`: the shared endpoint view and what the agent knows of it. */
export interface EndpointView extends ResolvedEndpoint {
  node: string;
  ipv4: string;
  hostIfname: string;
  state: 'ready' | 'regenerating' | 'waiting-for-identity' | 'not-ready' | 'disconnected';
  policyEnforcement: { ingress: boolean; egress: boolean };
  policyRevision: number;
  policyEntries: number;
}

export interface IdentityView {
  id: number;
  labels: string[];
  /** endpoints using it (cluster identities) */
  references: number;
  scope: 'reserved' | 'cluster' | 'local';
}

export interface PolicyView {
  kind: string;
  namespace?: string;
  name: string;
  file: string;
  line: number;
  revision: number;
  rules: number;
  selectedEndpoints: number;
  createdAt?: string;
}

/** Hubble's TCP listener: `:4244`, mutual TLS with the server name clients verify, or plain text. */
export interface HubbleListenerView { address: string; tls: boolean; serverName?: string }

export interface StatusView {
  node: string;
  lab: string;
  agent: { state: 'Ok' | 'Warning' | 'Failure'; pid: number; uptimeSeconds: number; version: string };
  datapath: { state: 'Ok' | 'Warning' | 'Failure' | 'Disabled'; mode: string; programs: number; message?: string };
  endpoints: { total: number; ready: number; notReady: number };
  policy: { revision: number; policies: number; identities: number; enforcement: string };
  hubble: { state: 'Ok' | 'Warning' | 'Failure'; flows: number; maxFlows: number; seenFlows: number; lost: number; socket: string; metrics?: string; listen?: HubbleListenerView };
  proxies: { name: string; port: number; state: string }[];
  errors: string[];
}

export interface ApplyResponse {
  results: ApplyResult[];
  dryRun: boolean;
}
