/**
 * TLS records → Hubble flows. Hubble's flow model has no TLS record (spec/hubble.md; cilium#28513
 * asks for one), so a TLS decision is an L7 flow without a record: Type L7, event type 129,
 * l7.type REQUEST, the verdict (FORWARDED / DROPPED with POLICY_DENIED for a refused name), the
 * server name in destination_names, and a Summary the compact printer shows:
 *
 *   TLS ClientHello SNI api.openai.com (TLS 1.3, alpn h2,http/1.1)
 *   TLS ClientHello SNI evil.example refused: server name not allowed by policy
 *   TLS ClientHello refused: NOT_TLS (first byte 0x47 is not a TLS handshake record)
 *
 * Endpoints, IPs, ports and direction are filled exactly as for HTTP flows (same builder).
 */
import { DropReason, L7FlowType, Verdict, type Flow } from '../../hubble/gen/flow/flow_pb.js';
import { createFlowBuilder, type FlowEndpointResolver } from '../http/flows.ts';
import type { AccessPeer } from '../http/types.ts';
import type { Direction } from '../../policy/types.ts';
import { DEFAULT_PROXY_PORTS } from '../../common/proxy-ports.ts';

/** The TLS SNI proxy port the datapath redirects to (DEFAULT_PROXY_PORTS.tls). */
export const TLS_PROXY_PORT = DEFAULT_PROXY_PORTS.tls;

export interface TlsRecord {
  verdict: 'forwarded' | 'denied' | 'error';
  direction: Direction;
  timeMs: number;
  client: AccessPeer;
  server: AccessPeer;
  endpointId: number;
  sni?: string;
  /** e.g. `TLS 1.3` */
  version?: string;
  alpn?: string[];
  /** the proxy terminates this connection (terminatingTLS) */
  intercepted?: boolean;
  /** the client resumed an earlier session (no new certificate) */
  resumed?: boolean;
  /** why it was refused or failed (stable code first: `NOT_TLS: ...`, `policy: ...`) */
  reason?: string;
  /** proxy port of the listener that saw it (TLS 15443, HTTP 15001 for intercepted connections) */
  proxyPort?: number;
}

export function tlsSummary(r: TlsRecord): string {
  let s = 'TLS ClientHello';
  if (r.sni) s += ` SNI ${r.sni}`;
  if (r.verdict === 'forwarded') {
    const details = [r.version, r.alpn?.length ? `alpn ${r.alpn.join(',')}` : '', r.intercepted ? 'intercepted' : '', r.resumed ? 'resumed' : ''].filter(Boolean);
    if (details.length) s += ` (${details.join(', ')})`;
    return s;
  }
  return `${s} ${r.verdict === 'denied' ? 'refused' : 'failed'}: ${r.reason ?? 'unknown'}`;
}

export function createTlsFlowBuilder(opts: { nodeName: string; resolver: FlowEndpointResolver }): (r: TlsRecord) => Flow {
  const build = createFlowBuilder(opts);
  return (r) => {
    const f = build({
      type: 'request', verdict: r.verdict, direction: r.direction, timeMs: r.timeMs, client: r.client, server: r.server,
      endpointId: r.endpointId, method: '', url: '', host: r.sni ?? '', path: '', protocol: 'TLS', headers: [], code: 0, latencyNs: 0,
    });
    f.l7 = { $typeName: 'flow.Layer7', type: L7FlowType.REQUEST, latencyNs: 0n, record: { case: undefined } };
    f.Summary = tlsSummary(r);
    f.destinationNames = r.sni ? [r.sni] : [];
    f.proxyPort = r.proxyPort ?? TLS_PROXY_PORT;
    if (r.verdict === 'denied') f.dropReasonDesc = DropReason.POLICY_DENIED;
    if (r.verdict !== 'forwarded') f.verdict = Verdict.DROPPED;
    return f;
  };
}
