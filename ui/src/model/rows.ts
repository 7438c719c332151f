/**
 * A flow as one table row and as a trace question. The texts are `hubble observe`'s own
 * (src/hubble/printer.ts), so the table reads like the compact output.
 */
import type { Flow } from '../../../src/hubble/gen/flow/flow_pb.js';
import { flowType, formatIdentity, formatTime, hostNames, summaryText, verdictText } from '../../../src/hubble/printer.ts';
import { hostOf, nodeFor, pathOf, tracePeer } from './map.ts';

export interface FlowRow {
  uuid: string;
  /** epoch ms */
  t: number;
  time: string;
  src: string;
  dst: string;
  srcId: string;
  dstId: string;
  /** `->`, `<-` (reply) or `<>` (unknown direction) */
  arrow: string;
  type: string;
  verdict: string;
  /** flow.Verdict number */
  v: number;
  summary: string;
  node: string;
  /** the question "why" asks for this flow, when it has one */
  why?: WhyQuery;
}

export interface WhyQuery {
  from: string;
  to: string;
  port: number;
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'ICMP' | 'ICMPV6';
  http?: { method: string; path: string; host: string };
}

export function flowRow(f: Flow): FlowRow {
  let [src, dst] = hostNames(f);
  let srcId = formatIdentity(f.source?.identity ?? 0);
  let dstId = formatIdentity(f.destination?.identity ?? 0);
  let arrow = '->';
  if (f.isReply === undefined) arrow = '<>';
  else if (f.isReply) {
    [src, dst, srcId, dstId] = [dst, src, dstId, srcId];
    arrow = '<-';
  }
  const t = f.time ? Number(f.time.seconds) * 1000 + Math.floor(f.time.nanos / 1e6) : 0;
  const why = whyQuery(f);
  return {
    uuid: f.uuid, t, time: formatTime(f.time), src, dst, srcId, dstId, arrow, type: flowType(f), verdict: verdictText(f), v: f.verdict,
    summary: summaryText(f), node: f.nodeName, ...(why ? { why } : {}),
  };
}

const peer = (ep: Flow['source'], names: readonly string[], ip: string) => tracePeer(nodeFor(ep, names), ip);

/** The connection a flow belongs to, as `policy trace` takes it (the request direction). */
export function whyQuery(f: Flow): WhyQuery | undefined {
  if (!f.IP) return undefined;
  const reply = f.isReply === true;
  const p = f.l4?.protocol;
  let protocol: WhyQuery['protocol'];
  let port: number;
  switch (p?.case) {
    case 'TCP': case 'UDP': case 'SCTP':
      protocol = p.case;
      port = reply ? p.value.sourcePort : p.value.destinationPort;
      break;
    case 'ICMPv4': protocol = 'ICMP'; port = p.value.type; break;
    case 'ICMPv6': protocol = 'ICMPV6'; port = p.value.type; break;
    default: return undefined;
  }
  const from = reply ? peer(f.destination, f.destinationNames, f.IP.destination) : peer(f.source, f.sourceNames, f.IP.source);
  const to = reply ? peer(f.source, f.sourceNames, f.IP.source) : peer(f.destination, f.destinationNames, f.IP.destination);
  const rec = f.l7?.record;
  if (rec?.case === 'http' && rec.value.method) {
    return { from, to, port, protocol, http: { method: rec.value.method, path: pathOf(rec.value.url), host: hostOf(rec.value.url) } };
  }
  return { from, to, port, protocol };
}
