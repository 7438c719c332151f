/**
 * Built-in Hubble metric handlers (spec hubble.md §5.3): flow, drop, dns, policy, tcp,
 * port-distribution, icmp, flows-to-world. Each is a `HandlerFactory` (see index.ts); label names and orders are
 * Hubble's so dashboards and alerts written for Cilium work unchanged.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { DropReason, FlowType, IPVersion, TrafficDirection, Verdict, type Flow } from '../gen/flow/flow_pb.js';
import { DNS_RCODE_NAMES } from '../names.ts';
import type { HandlerFactory } from './index.ts';
import { icmpv4TypeCode, icmpv6TypeCode, TRACE_POINT_NAMES } from '../names.ts';

/**
 * A counter whose per-flow increment is a Map lookup: prom-client hashes the label object on
 * every inc (even through a labels() child), which is most of a handler's cost per flow. The
 * counts live here and are copied into the prom-client counter when it is scraped (collect).
 */
/**
 * Series removal for fast counters (their counts live outside prom-client, which rebuilds them
 * at each scrape): per registry, the metric names and a function removing the label sets a
 * predicate selects.
 */
export const fastCounterRemovers = new WeakMap<Registry, Map<string, (tied: (labels: Record<string, string>) => boolean) => number>>();

export function fastCounter(opts: { name: string; help: string; labelNames: string[]; registers: Registry[] }): (...values: string[]) => void {
  const counts = new Map<string, { values: string[]; n: number }>();
  const names = opts.labelNames;
  const remover = (tied: (labels: Record<string, string>) => boolean): number => {
    let n = 0;
    for (const [k, e] of counts) {
      const labels: Record<string, string> = {};
      for (let i = 0; i < names.length; i++) labels[names[i]!] = e.values[i] ?? '';
      if (tied(labels)) { counts.delete(k); n++; }
    }
    return n;
  };
  for (const r of opts.registers) {
    let m = fastCounterRemovers.get(r);
    if (!m) fastCounterRemovers.set(r, (m = new Map()));
    m.set(opts.name, remover);
  }
  new Counter({
    ...opts,
    collect() {
      this.reset();
      for (const e of counts.values()) {
        const labels: Record<string, string> = {};
        for (let i = 0; i < names.length; i++) labels[names[i]!] = e.values[i] ?? '';
        this.inc(labels, e.n);
      }
    },
  });
  return (...values) => {
    const k = values.join('\u0001');
    const e = counts.get(k);
    if (e) e.n++;
    else counts.set(k, { values, n: 1 });
  };
}

/**
 * A histogram kept like fastCounter: per label set (one Map lookup per observation) the bucket
 * counts, sum and count, copied into the prom-client histogram when it is scraped. prom-client's
 * own observe builds and hashes a label object per call (~1 KB of garbage per observation).
 */
export function fastHistogram(opts: { name: string; help: string; labelNames: string[]; buckets: number[]; registers: Registry[] }): (value: number, ...values: string[]) => void {
  const bounds = opts.buckets;
  const names = opts.labelNames;
  const series = new Map<string, { values: string[]; buckets: Float64Array; sum: number; count: number }>();
  const labelsOf = (values: string[]) => {
    const labels: Record<string, string> = {};
    for (let i = 0; i < names.length; i++) labels[names[i]!] = values[i] ?? '';
    return labels;
  };
  const remover = (tied: (labels: Record<string, string>) => boolean): number => {
    let n = 0;
    for (const [k, e] of series) if (tied(labelsOf(e.values))) { series.delete(k); n++; }
    return n;
  };
  for (const r of opts.registers) {
    let m = fastCounterRemovers.get(r);
    if (!m) fastCounterRemovers.set(r, (m = new Map()));
    m.set(opts.name, remover);
  }
  new Histogram({
    ...opts,
    collect() {
      // prom-client 15 (pinned) keeps a histogram's series in `hashMap`: { labels, bucketValues (per
      // bound, not cumulative), sum, count }; rebuilt here from the counts kept above
      const h = this as unknown as { hashMap: Record<string, unknown> };
      this.reset();
      for (const [k, e] of series) {
        const bucketValues: Record<number, number> = {};
        for (let i = 0; i < bounds.length; i++) bucketValues[bounds[i]!] = e.buckets[i]!;
        h.hashMap[k] = { labels: labelsOf(e.values), bucketValues, sum: e.sum, count: e.count };
      }
    },
  });
  return (value, ...values) => {
    const k = values.join('\u0001');
    let e = series.get(k);
    if (!e) series.set(k, (e = { values, buckets: new Float64Array(bounds.length), sum: 0, count: 0 }));
    e.sum += value;
    e.count++;
    // the first bound at or above the value (an observation above the last bound is in +Inf only)
    for (let i = 0; i < bounds.length; i++) if (value <= bounds[i]!) { e.buckets[i]!++; break; }
  };
}

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

function flowTypeLabels(f: Flow): [string, string] {
  const t = f.eventType?.type ?? 0;
  switch (t) {
    case 129: return ['L7', f.l7?.record.case === 'dns' ? 'DNS' : f.l7?.record.case === 'http' ? 'HTTP' : ''];
    case 1: return ['Drop', ''];
    case 3: return ['Capture', ''];
    case 4: return ['Trace', TRACE_POINT_NAMES[f.eventType?.subType ?? 0] ?? ''];
    case 5: return ['PolicyVerdict', ''];
    default: return ['Unknown', String(t)];
  }
}

const forwarded = (f: Flow) => f.verdict === Verdict.FORWARDED || f.verdict === Verdict.REDIRECTED;

export const flowHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_flows_processed_total', help: 'Total number of flows processed', labelNames: ['protocol', 'type', 'subtype', 'verdict', ...ctx.names], registers: [registry] }));
  return { name: 'flow', process(f) { const [t, st] = flowTypeLabels(f); c(flowProtocol(f), t, st, Verdict[f.verdict] ?? 'VERDICT_UNKNOWN', ...ctx.values(f)); } };
};

export const dropHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_drop_total', help: 'Number of drops', labelNames: [...ctx.names, 'reason', 'protocol'], registers: [registry] }));
  return {
    name: 'drop',
    process(f) {
      if (f.verdict !== Verdict.DROPPED) return;
      c(...ctx.values(f), DropReason[f.dropReasonDesc] ?? String(f.dropReasonDesc), flowProtocol(f));
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
  return {
    name: 'dns',
    process(f) {
      if (f.l7?.record.case !== 'dns') return;
      const d = f.l7.record.value;
      if (ignoreAAAA && d.qtypes.length === 1 && d.qtypes[0] === 'AAAA') return;
      const qtypes = d.qtypes.join(',');
      const q = withQuery ? [d.query] : [];
      const cl = ctx.values(f);
      if (f.verdict === Verdict.DROPPED) {
        queries(...cl, 'Policy denied', qtypes, '0', ...q);
      } else if (!f.isReply) {
        queries(...cl, '', qtypes, String(d.ips.length), ...q);
      } else {
        responses(...cl, DNS_RCODE_NAMES[d.rcode] ?? String(d.rcode), qtypes, String(d.ips.length), ...q);
        for (const t of d.rrtypes) types(...cl, t, qtypes, ...q);
      }
    },
  };
};

export const policyHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_policy_verdicts_total', help: 'Number of policy verdicts', labelNames: ['direction', 'match', 'action', ...ctx.names], registers: [registry] }));
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
        match = `l7/${f.l7?.record.case ?? 'unknown'}`;
      } else return;
      const dir = f.trafficDirection === TrafficDirection.INGRESS ? 'ingress' : f.trafficDirection === TrafficDirection.EGRESS ? 'egress' : 'traffic_direction_unknown';
      c(dir, match, (Verdict[f.verdict] ?? 'verdict_unknown').toLowerCase(), ...ctx.values(f));
    },
  };
};

export const tcpHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_tcp_flags_total', help: 'TCP flag occurrences', labelNames: ['flag', 'family', ...ctx.names], registers: [registry] }));
  return {
    name: 'tcp',
    process(f) {
      if (!forwarded(f) || f.l4?.protocol.case !== 'TCP') return;
      const fl = f.l4.protocol.value.flags;
      if (!fl) return;
      const fam = f.IP?.ipVersion === IPVersion.IPv6 ? 'IPv6' : 'IPv4';
      const cl = ctx.values(f);
      if (fl.SYN) c(fl.ACK ? 'SYN-ACK' : 'SYN', fam, ...cl);
      if (fl.FIN) c('FIN', fam, ...cl);
      if (fl.RST) c('RST', fam, ...cl);
    },
  };
};

export const portDistributionHandler: HandlerFactory = ({ registry, ctx }) => {
  const c = fastCounter(({ name: 'hubble_port_distribution_total', help: 'Numbers of packets distributed by destination port', labelNames: ['protocol', 'port', ...ctx.names], registers: [registry] }));
  return {
    name: 'port-distribution',
    process(f) {
      if (!forwarded(f) || f.isReply !== false) return;
      const p = f.l4?.protocol;
      if (!p?.case) return;
      const port = p.case === 'TCP' || p.case === 'UDP' || p.case === 'SCTP' ? String(p.value.destinationPort) : p.case === 'ICMPv4' || p.case === 'ICMPv6' ? '0' : undefined;
      if (port === undefined) return;
      c(p.case, port, ...ctx.values(f));
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
  return {
    name: 'icmp',
    process(f) {
      const p = f.l4?.protocol;
      if (p?.case === 'ICMPv4') c('IPv4', icmpv4TypeCode(p.value.type, p.value.code), ...ctx.values(f));
      else if (p?.case === 'ICMPv6') c('IPv6', icmpv6TypeCode(p.value.type, p.value.code), ...ctx.values(f));
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
  return {
    name: 'flows-to-world',
    process(f) {
      const l4 = f.l4?.protocol;
      if (!f.destination?.labels.includes('reserved:world') || !f.eventType || !l4?.case) return;
      if (f.verdict === Verdict.DROPPED && !anyDrop && f.dropReasonDesc !== DropReason.POLICY_DENIED) return;
      const reply = f.isReply === true;
      if (f.verdict !== Verdict.DROPPED && reply) return;
      if (synOnly && (l4.case !== 'TCP' || !l4.value.flags?.SYN || reply)) return;
      const port = withPort ? [l4.case === 'TCP' || l4.case === 'UDP' || l4.case === 'SCTP' ? String(l4.value.destinationPort) : ''] : [];
      c(flowProtocol(f), Verdict[f.verdict] ?? 'VERDICT_UNKNOWN', ...port, ...ctx.values(f));
    },
  };
};
