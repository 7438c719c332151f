/**
 * Hubble L7 DNS flows of the DNS proxy (spec hubble.md §1.5): a REQUEST per query (verdict
 * FORWARDED, or DROPPED when the policy refused it) and a RESPONSE per answer (is_reply, source
 * = the DNS server), with query, qtypes, rcode, ips, ttl, cnames, rrtypes and latency, and the
 * Summary the compact printer shows (`DNS Query example.com. A`,
 * `DNS Answer "1.2.3.4" TTL: 30 (Proxy example.com. A)`).
 */
import { randomUUID } from 'node:crypto';
import { DNS_RCODE_NAMES } from '../../hubble/names.ts';
import type { ResolvedEndpoint } from '../../common/endpoint.ts';
import {
  FlowType, IPVersion, L7FlowType, TrafficDirection, Verdict, type Endpoint, type Flow, type Layer4,
} from '../../hubble/gen/flow/flow_pb.js';

export interface FlowPeer {
  ip: string;
  port: number;
  endpoint?: ResolvedEndpoint;
  identity: number;
  labels?: string[];
}

export interface DNSFlowInput {
  kind: 'request' | 'response';
  client: FlowPeer;
  server: FlowPeer;
  proto: 'UDP' | 'TCP';
  query: string;
  qtypes: string[];
  verdict: 'FORWARDED' | 'DROPPED' | 'ERROR';
  rcode?: number;
  ips?: string[];
  ttl?: number;
  cnames?: string[];
  rrtypes?: string[];
  latencyNs?: bigint;
  nodeName: string;
  timeMs?: number;
}

export function dnsSummary(i: Pick<DNSFlowInput, 'kind' | 'query' | 'qtypes' | 'rcode' | 'ips' | 'ttl'>): string {
  const qt = i.qtypes.join(',');
  if (i.kind === 'request') return `DNS Query ${i.query} ${qt}`;
  if (i.rcode) return `DNS Answer RCode: ${DNS_RCODE_NAMES[i.rcode] ?? String(i.rcode)} TTL: ${i.ttl ?? 0} (Proxy ${i.query} ${qt})`;
  return `DNS Answer "${(i.ips ?? []).join(',')}" TTL: ${i.ttl ?? 0} (Proxy ${i.query} ${qt})`;
}

const EMITTER = { $typeName: 'flow.Emitter' as const, name: 'Hubble', version: '1.19.4' };
const sortedLabels = new WeakMap<readonly string[], string[]>();
function sorted(ls: readonly string[] | undefined): string[] {
  if (!ls) return [];
  let s = sortedLabels.get(ls);
  if (!s) {
    s = [...ls].sort();
    sortedLabels.set(ls, s);
  }
  return s;
}

function endpoint(p: FlowPeer): Endpoint {
  const e = p.endpoint;
  return {
    $typeName: 'flow.Endpoint', ID: e?.id ?? 0, identity: e?.identity ?? p.identity, clusterName: e ? 'default' : '', namespace: e?.namespace ?? '',
    labels: sorted(e?.labels ?? p.labels), podName: e?.pod ?? '', workloads: [],
  };
}

/** A Flow message literal (create(FlowSchema, …) is ~10x slower on this per-query path). */
export function buildDNSFlow(i: DNSFlowInput): Flow {
  const isResp = i.kind === 'response';
  const src = isResp ? i.server : i.client;
  const dst = isResp ? i.client : i.server;
  const verdict = i.verdict === 'DROPPED' ? Verdict.DROPPED : i.verdict === 'ERROR' ? Verdict.ERROR : Verdict.FORWARDED;
  const ms = i.timeMs ?? Date.now();
  const ports = { sourcePort: src.port, destinationPort: dst.port };
  const l4: Layer4 = i.proto === 'UDP'
    ? { $typeName: 'flow.Layer4', protocol: { case: 'UDP', value: { $typeName: 'flow.UDP', ...ports } } }
    : { $typeName: 'flow.Layer4', protocol: { case: 'TCP', value: { $typeName: 'flow.TCP', ...ports, flags: undefined } } };
  return {
    $typeName: 'flow.Flow',
    time: { $typeName: 'google.protobuf.Timestamp', seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.floor((ms % 1000) * 1e6) },
    uuid: randomUUID(),
    emitter: EMITTER,
    verdict,
    dropReason: 0,
    authType: 0,
    ethernet: undefined,
    IP: { $typeName: 'flow.IP', source: src.ip, sourceXlated: '', destination: dst.ip, ipVersion: src.ip.includes(':') ? IPVersion.IPv6 : IPVersion.IPv4, encrypted: false },
    l4,
    tunnel: undefined,
    source: endpoint(src),
    destination: endpoint(dst),
    Type: FlowType.L7,
    nodeName: i.nodeName,
    nodeLabels: [],
    sourceNames: [],
    destinationNames: [],
    l7: {
      $typeName: 'flow.Layer7',
      type: isResp ? L7FlowType.RESPONSE : L7FlowType.REQUEST,
      latencyNs: i.latencyNs ?? 0n,
      record: {
        case: 'dns',
        value: {
          $typeName: 'flow.DNS', query: i.query, ips: i.ips ?? [], ttl: i.ttl ?? 0, cnames: i.cnames ?? [], observationSource: 'proxy',
          rcode: i.rcode ?? 0, qtypes: i.qtypes, rrtypes: i.rrtypes ?? [],
        },
      },
    },
    reply: false,
    eventType: { $typeName: 'flow.CiliumEventType', type: 129, subType: 0 },
    sourceService: undefined,
    destinationService: undefined,
    trafficDirection: TrafficDirection.EGRESS,
    policyMatchType: 0,
    traceObservationPoint: 0,
    traceReason: 0,
    file: undefined,
    ipTraceId: undefined,
    dropReasonDesc: 0,
    isReply: isResp,
    debugCapturePoint: 0,
    interface: undefined,
    proxyPort: 0,
    traceContext: undefined,
    sockXlatePoint: 0,
    socketCookie: 0n,
    cgroupId: 0n,
    Summary: dnsSummary(i),
    extensions: undefined,
    egressAllowedBy: [],
    ingressAllowedBy: [],
    egressDeniedBy: [],
    ingressDeniedBy: [],
    policyLog: [],
    aggregate: undefined,
  };
}
