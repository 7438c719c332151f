/**
 * Built-in Hubble metric handlers (spec hubble.md §5.3): flow, drop, dns, policy, tcp,
 * port-distribution, icmp, flows-to-world. Each is a `HandlerFactory` (see handler.ts); label names and orders are
 * Hubble's so dashboards and alerts written for Cilium work unchanged.
 */
import { fastCounter } from '../../common/fast-counter.ts';
import { DropReason, FlowType, IPVersion, TrafficDirection, Verdict, type Flow } from '../gen/flow/flow_pb.js';
import { DNS_RCODE_NAMES } from '../names.ts';
import type { HandlerFactory } from './handler.ts';
import { icmpv4TypeCode, icmpv6TypeCode, TRACE_POINT_NAMES } from '../names.ts';

/** small decimal strings made once (ips_returned, ports): no number → string per flow */
const DECIMALS: string[] = [];
function decimal(n: number): string {
  if (n < 0 || n > 65535 || !Number.isInteger(n)) return String(n);
  return DECIMALS[n] ?? (DECIMALS[n] = String(n));
}

/** The comma-joined qtypes, without a new string for the usual single type. */
const qtypesLabel = (q: readonly string[]): string => (q.length === 1 ? q[0]! : q.join(','));

const MATCH_NAMES: Record<number, string> = { 0: 'none', 1: 'l3-only', 2: 'l3-l4', 3: 'l4-only', 4: 'all', 5: 'l3-proto', 6: 'proto-only' };

/** `protocol` label of flow/drop metrics. */
export function flowProtocol(f: Flow): string {
  if (f.eventType?.type === 129 || f.Type === FlowType.L7) {
    switch (f.l7?.record.case) {
      case 'dns': return 'DNS';
      case 'http': return 'HTTP';
      case 'kafka': return 'Kafka';
      default: return 'Unknown L7';
    }
  }
  const c = f.l4?.protocol.case;
  if (c) return c === 'ICMPv4' ? 'ICMPv4' : c === 'ICMPv6' ? 'ICMPv6' : c;
  return f.eventType ? 'Unknown L4' : 'Unknown flow';
}

/** `type` and `subtype` of the flow metric, written at out[at], out[at + 1]. */
function flowTypeLabels(f: Flow, out: string[], at: number): void {
  const t = f.eventType?.type ?? 0;
  let type: string, sub = '';
  switch (t) {
    case 129: type = 'L7'; sub = f.l7?.record.case === 'dns' ? 'DNS' : f.l7?.record.case === 'http' ? 'HTTP' : ''; break;
    case 1: type = 'Drop'; break;
    case 3: type = 'Capture'; break;
    case 4: type = 'Trace'; sub = TRACE_POINT_NAMES[f.eventType?.subType ?? 0] ?? ''; break;
    case 5: type = 'PolicyVerdict'; break;
    default: type = 'Unknown'; sub = decimal(t);
  }
  out[at] = type;
  out[at + 1] = sub;
}

const verdictName = (v: Verdict): string => Verdict[v] ?? 'VERDICT_UNKNOWN';
/** lower-case verdict names (policy metric), made once */
const VERDICT_LOWER = new Map<number, string>();
const verdictLower = (v: Verdict): string => {
  let s = VERDICT_LOWER.get(v);
  if (s === undefined) VERDICT_LOWER.set(v, (s = (Verdict[v] ?? 'verdict_unknown').toLowerCase()));
  return s;
};
const L7_MATCH: Record<string, string> = { dns: 'l7/dns', http: 'l7/http', kafka: 'l7/kafka' };

const forwarded = (f: Flow) => f.verdict === Verdict.FORWARDED || f.verdict === Verdict.REDIRECTED;

/**
 * An L7 flow's message (its DNS or HTTP record): the proxies' flows share one per question and
 * answer, or per request (l7-parser.ts), so it stands for the flow's series in fastCounter's
 * incAt. Undefined for any other flow (counted by the walk).
 */
const l7Message = (f: Flow): object | undefined => f.l7?.record.value;

// Each handler fills one scratch array of its labels per flow (src/common/fast-counter.ts).

export const flowHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_flows_processed_total', help: 'Total number of flows processed', labelNames: ['protocol', 'type', 'subtype', 'verdict', ...ctx.names], registers: [registry] }));
  const v = new Array<string>(4 + ctx.names.length).fill('');
  return {
    name: 'flow',
    process(f) {
      v[0] = flowProtocol(f);
      flowTypeLabels(f, v, 1);
      v[3] = verdictName(f.verdict);
      ctx.into(f, v, 4);
      const m = l7Message(f);
      if (m !== undefined) c.incAt(m, v);
      else c.inc(v);
    },
  };
};

export const dropHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_drop_total', help: 'Number of drops', labelNames: [...ctx.names, 'reason', 'protocol'], registers: [registry] }));
  const n = ctx.names.length;
  const v = new Array<string>(n + 2).fill('');
  return {
    name: 'drop',
    process(f) {
      if (f.verdict !== Verdict.DROPPED) return;
      ctx.into(f, v, 0);
      v[n] = DropReason[f.dropReasonDesc] ?? decimal(f.dropReasonDesc);
      v[n + 1] = flowProtocol(f);
      c.inc(v);
    },
  };
};

export const dnsHandler: HandlerFactory = ({ registry, ctx, options }) => {
  const withQuery = 'query' in options;
  const ignoreAAAA = 'ignoreAAAA' in options;
  const extra = withQuery ? ['query'] : [];
  const queries = fastCounter(({ name: 'hubble_dns_queries_total', help: 'Number of DNS queries observed', labelNames: [...ctx.names, 'rcode', 'qtypes', 'ips_returned', ...extra], registers: [registry] }));
  const responses = fastCounter(({ name: 'hubble_dns_responses_total', help: 'Number of DNS responses observed', labelNames: [...ctx.names, 'rcode', 'qtypes', 'ips_returned', ...extra], registers: [registry] }));
  const types = fastCounter(({ name: 'hubble_dns_response_types_total', help: 'Number of DNS response types', labelNames: [...ctx.names, 'type', 'qtypes', ...extra], registers: [registry] }));
  const n = ctx.names.length;
  const v = new Array<string>(n + 4).fill('');
  const t = new Array<string>(n + 3).fill('');
  return {
    name: 'dns',
    process(f) {
      if (f.l7?.record.case !== 'dns') return;
      const d = f.l7.record.value;
      if (ignoreAAAA && d.qtypes.length === 1 && d.qtypes[0] === 'AAAA') return;
      const qtypes = qtypesLabel(d.qtypes);
      ctx.into(f, v, 0);
      v[n + 1] = qtypes;
      if (withQuery) v[n + 3] = d.query;
      if (f.verdict === Verdict.DROPPED) {
        v[n] = 'Policy denied';
        v[n + 2] = '0';
        queries.incAt(d, v);
      } else if (!f.isReply) {
        v[n] = '';
        v[n + 2] = decimal(d.ips.length);
        queries.incAt(d, v);
      } else {
        v[n] = DNS_RCODE_NAMES[d.rcode] ?? decimal(d.rcode);
        v[n + 2] = decimal(d.ips.length);
        responses.incAt(d, v);
        if (d.rrtypes.length === 0) return;
        for (let i = 0; i < n; i++) t[i] = v[i]!;
        t[n + 1] = qtypes;
        if (withQuery) t[n + 2] = d.query;
        // the first type's series by the message (an answer's usual one type); a second type's by the walk
        for (let i = 0; i < d.rrtypes.length; i++) {
          t[n] = d.rrtypes[i]!;
          if (i === 0) types.incAt(d, t);
          else types.inc(t);
        }
      }
    },
  };
};

export const policyHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_policy_verdicts_total', help: 'Number of policy verdicts', labelNames: ['direction', 'match', 'action', ...ctx.names], registers: [registry] }));
  const v = new Array<string>(3 + ctx.names.length).fill('');
  return {
    name: 'policy',
    process(f) {
      const t = f.eventType?.type;
      let match: string;
      if (t === 5) {
        if (f.source?.identity === 1) return;
        match = MATCH_NAMES[f.policyMatchType] ?? 'unknown';
      } else if (t === 129) {
        if (f.isReply) return; // the request carries the L7 decision
        const rc = f.l7?.record.case ?? 'unknown';
        match = L7_MATCH[rc] ?? `l7/${rc}`;
      } else return;
      const dir = f.trafficDirection === TrafficDirection.INGRESS ? 'ingress' : f.trafficDirection === TrafficDirection.EGRESS ? 'egress' : 'traffic_direction_unknown';
      v[0] = dir;
      v[1] = match;
      v[2] = verdictLower(f.verdict);
      ctx.into(f, v, 3);
      const m = l7Message(f);
      if (m !== undefined) c.incAt(m, v);
      else c.inc(v);
    },
  };
};

export const tcpHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_tcp_flags_total', help: 'TCP flag occurrences', labelNames: ['flag', 'family', ...ctx.names], registers: [registry] }));
  const v = new Array<string>(2 + ctx.names.length).fill('');
  return {
    name: 'tcp',
    process(f) {
      if (!forwarded(f) || f.l4?.protocol.case !== 'TCP') return;
      const fl = f.l4.protocol.value.flags;
      if (!fl) return;
      if (!fl.SYN && !fl.FIN && !fl.RST) return;
      v[1] = f.IP?.ipVersion === IPVersion.IPv6 ? 'IPv6' : 'IPv4';
      ctx.into(f, v, 2);
      if (fl.SYN) { v[0] = fl.ACK ? 'SYN-ACK' : 'SYN'; c.inc(v); }
      if (fl.FIN) { v[0] = 'FIN'; c.inc(v); }
      if (fl.RST) { v[0] = 'RST'; c.inc(v); }
    },
  };
};

export const portDistributionHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_port_distribution_total', help: 'Numbers of packets distributed by destination port', labelNames: ['protocol', 'port', ...ctx.names], registers: [registry] }));
  const v = new Array<string>(2 + ctx.names.length).fill('');
  return {
    name: 'port-distribution',
    process(f) {
      if (!forwarded(f) || f.isReply !== false) return;
      const p = f.l4?.protocol;
      if (!p?.case) return;
      const port = p.case === 'TCP' || p.case === 'UDP' || p.case === 'SCTP' ? decimal(p.value.destinationPort) : p.case === 'ICMPv4' || p.case === 'ICMPv6' ? '0' : undefined;
      if (port === undefined) return;
      v[0] = p.case;
      v[1] = port;
      ctx.into(f, v, 2);
      const m = l7Message(f);
      if (m !== undefined) c.incAt(m, v);
      else c.inc(v);
    },
  };
};

/**
 * `icmp`: hubble_icmp_total{family, type, ctx} for every flow with an ICMP layer; `type` is
 * gopacket's TypeCode string. Deliberate difference: Cilium labels ICMPv6 with family IPv4 (a
 * long-standing bug); membrane says IPv6.
 */
export const icmpHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_icmp_total', help: 'Number of ICMP messages', labelNames: ['family', 'type', ...ctx.names], registers: [registry] }));
  const v = new Array<string>(2 + ctx.names.length).fill('');
  return {
    name: 'icmp',
    process(f) {
      const p = f.l4?.protocol;
      if (p?.case === 'ICMPv4') { v[0] = 'IPv4'; v[1] = icmpv4TypeCode(p.value.type, p.value.code); }
      else if (p?.case === 'ICMPv6') { v[0] = 'IPv6'; v[1] = icmpv6TypeCode(p.value.type, p.value.code); }
      else return;
      ctx.into(f, v, 2);
      c.inc(v);
    },
  };
};

/**
 * `flows-to-world`: hubble_flows_to_world_total{protocol, verdict[, port], ctx} for flows whose
 * destination carries `reserved:world`. Drops count only when POLICY_DENIED unless `any-drop`;
 * forwarded replies are skipped; `syn-only` counts only TCP SYNs of new connections.
 */
export const flowsToWorldHandler: HandlerFactory = ({ registry, ctx, options }) => {
  const opt = new Set(Object.keys(options).map((k) => k.toLowerCase()));
  const anyDrop = opt.has('any-drop'), withPort = opt.has('port'), synOnly = opt.has('syn-only');
  const c = fastCounter(({ name: 'hubble_flows_to_world_total', help: 'Total number of flows to reserved:world', labelNames: ['protocol', 'verdict', ...(withPort ? ['port'] : []), ...ctx.names], registers: [registry] }));
  const at = withPort ? 3 : 2;
  const v = new Array<string>(at + ctx.names.length).fill('');
  return {
    name: 'flows-to-world',
    process(f) {
      const l4 = f.l4?.protocol;
      if (!f.destination?.labels.includes('reserved:world') || !f.eventType || !l4?.case) return;
      if (f.verdict === Verdict.DROPPED && !anyDrop && f.dropReasonDesc !== DropReason.POLICY_DENIED) return;
      const reply = f.isReply === true;
      if (f.verdict !== Verdict.DROPPED && reply) return;
      if (synOnly && (l4.case !== 'TCP' || !l4.value.flags?.SYN || reply)) return;
      v[0] = flowProtocol(f);
      v[1] = verdictName(f.verdict);
      if (withPort) v[2] = l4.case === 'TCP' || l4.case === 'UDP' || l4.case === 'SCTP' ? decimal(l4.value.destinationPort) : '';
      ctx.into(f, v, at);
      c.inc(v);
    },
  };
};
