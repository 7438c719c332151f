/**
 * `membrane observe`: `hubble observe` against a node's Hubble server (spec/hubble.md §4.2).
 * Flags map to FlowFilters the way the hubble CLI builds them: different flags AND inside one
 * filter, repeated values OR, un-prefixed flags (`--pod`, `--ip`, …) make a source filter OR a
 * destination filter, `--not` sends the next flag to the blacklist.
 */
import { Command, Option } from 'commander';
import { create, fromJsonString, toJson, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError } from '@connectrpc/connect';
import { MembraneError } from '../../common/errors.ts';
import { labPaths } from '../../common/paths.ts';
import type { MembraneConfig } from '../../common/config.ts';
import {
  FlowFilterSchema, Verdict, DropReason, TrafficDirection, IPVersion, type FlowFilter,
} from '../../hubble/gen/flow/flow_pb.js';
import { GetFlowsRequestSchema } from '../../hubble/gen/observer/observer_pb.js';
import { MONITOR_TYPES, TRACE_POINT_NAMES, parseIdentity } from '../../hubble/names.ts';
import { createPrinter, OUTPUT_FORMATS, TIME_FORMATS, type OutputFormat, type TimeFormat } from '../../hubble/printer.ts';
import { formatTarget, observerClient, parseServer } from '../../hubble/client.ts';

type FilterInit = MessageInitShape<typeof FlowFilterSchema> & Record<string, unknown>;

function bad(flag: string, msg: string): MembraneError {
  return new MembraneError('OBSERVE_BAD_FLAG', `--${flag}: ${msg}`, { hint: 'see `membrane observe --help`' });
}

/** One side (whitelist or blacklist) as hubble's filterTracker: left = source variant, right = destination variant. */
class Tracker {
  left: FilterInit = {};
  right: FilterInit = {};
  both = false;
  used = false;
  /** flag names used, for conflict checks */
  flags = new Set<string>();
  ns = { left: { src: [] as string[], dst: [] as string[] }, right: { src: [] as string[], dst: [] as string[] } };
  allNs = { src: false, dst: false };

  private push(f: FilterInit, key: string, v: unknown): void {
    ((f[key] ??= []) as unknown[]).push(v);
  }
  /** a field that does not depend on the side: both variants */
  apply(key: string, v: unknown): void {
    this.used = true;
    this.push(this.left, key, v);
    this.push(this.right, key, v);
  }
  /** either side: source in the left variant, destination in the right */
  either(srcKey: string, dstKey: string, v: unknown): void {
    this.used = true;
    this.both = true;
    this.push(this.left, srcKey, v);
    this.push(this.right, dstKey, v);
  }
  namespace(side: 'src' | 'dst' | 'either', ns: string): void {
    this.used = true;
    if (side === 'either') {
      this.both = true;
      this.ns.left.src.push(ns);
      this.ns.right.dst.push(ns);
    } else {
      this.ns.left[side].push(ns);
      this.ns.right[side].push(ns);
    }
  }

  private finishNs(f: FilterInit, nss: string[], podKey: string, svcKey: string, all: boolean): void {
    const pods = f[podKey] as string[] | undefined;
    const svcs = f[svcKey] as string[] | undefined;
    if (all && pods) f[podKey] = pods.map((p) => (p.includes('/') ? p : `/${p}`));
    if (all && svcs) f[svcKey] = svcs.map((p) => (p.includes('/') ? p : `/${p}`));
    if (!nss.length) return;
    const prefix = (vals: string[]) => nss.flatMap((n) => vals.map((v) => (v.includes('/') ? v : `${n}/${v}`)));
    if (pods) f[podKey] = prefix(pods);
    if (svcs) f[svcKey] = prefix(svcs);
    if (!pods && !svcs) f[podKey] = nss.map((n) => `${n}/`);
  }

  filters(): FlowFilter[] {
    if (!this.used) return [];
    const out: FilterInit[] = this.both ? [this.left, this.right] : [this.left];
    const nss = this.both ? [this.ns.left, this.ns.right] : [this.ns.left];
    return out.map((f, i) => {
      const n = nss[i]!;
      this.finishNs(f, n.src, 'sourcePod', 'sourceService', this.allNs.src);
      this.finishNs(f, n.dst, 'destinationPod', 'destinationService', this.allNs.dst);
      return create(FlowFilterSchema, f);
    });
  }
}

function parseEnum(flag: string, e: Record<string, string | number>, v: string): number {
  const n = e[v.toUpperCase()];
  if (typeof n !== 'number') throw bad(flag, `unknown value "${v}" (one of ${Object.keys(e).filter((k) => Number.isNaN(Number(k))).join(', ')})`);
  return n;
}

function parseEventType(v: string): { type: number; matchSubType: boolean; subType: number } {
  const [t, sub] = v.split(':', 2) as [string, string | undefined];
  const type = MONITOR_TYPES[t] ?? (/^\d+$/.test(t) ? Number(t) : undefined);
  if (type === undefined) throw bad('type', `unknown event type "${t}" (trace, drop, policy-verdict, l7, capture, trace-sock or a number)`);
  if (sub === undefined) return { type, matchSubType: false, subType: 0 };
  let subType: number | undefined = /^\d+$/.test(sub) ? Number(sub) : undefined;
  if (subType === undefined && type === 4) {
    const i = TRACE_POINT_NAMES.indexOf(sub);
    if (i >= 0) subType = i;
  }
  if (subType === undefined) throw bad('type', `unknown sub-type "${sub}" for type "${t}"`);
  return { type, matchSubType: true, subType };
}

/** `3s`, `4m`, `1h43m` (Go durations) → ms ago; otherwise an absolute time. */
export function parseTime(flag: string, v: string, now = Date.now()): number {
  if (/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(v)) {
    const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1e3, m: 6e4, h: 3.6e6 };
    let ms = 0;
    for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * unit[m[2]!]!;
    return now - ms;
  }
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw bad(flag, `invalid time "${v}" (a duration like 5m, 1h30m or an RFC 3339 time)`);
  return t;
}

/** hubble rejects an either-side flag together with its directional variants */
const CONFLICTS: [string, string[]][] = [
  ['pod', ['from-pod', 'to-pod', 'from-namespace', 'to-namespace']],
  ['namespace', ['from-namespace', 'to-namespace', 'from-pod', 'to-pod']],
  ['ip', ['from-ip', 'to-ip', 'fqdn', 'from-fqdn', 'to-fqdn']],
  ['fqdn', ['from-fqdn', 'to-fqdn', 'from-ip', 'to-ip']],
  ['label', ['from-label', 'to-label']],
  ['port', ['from-port', 'to-port']],
  ['service', ['from-service', 'to-service']],
  ['workload', ['from-workload', 'to-workload']],
  ['identity', ['from-identity', 'to-identity']],
  ['cluster', ['from-cluster', 'to-cluster']],
];

const collect = (v: string, prev: string[] = []) => [...prev, v];

interface ObserveOpts {
  last?: string; first?: string; all?: boolean; follow?: boolean; since?: string; until?: string;
  output: string; printNodeName?: boolean; timeFormat: string; numeric?: boolean; ipTranslation: boolean;
  color: string; server?: string; node?: string; printRawFilters?: boolean; printPolicyNames?: boolean;
  allowlist?: string[]; denylist?: string[];
  tls?: boolean; tlsCaCertFiles?: string[]; tlsClientCertFile?: string; tlsClientKeyFile?: string; tlsServerName?: string;
}

/** The hubble CLI's TLS flags, each also from its HUBBLE_* variable as hubble reads them (src/common/config.ts). */
function tlsFromFlags(o: ObserveOpts, config: MembraneConfig) {
  const list = (v: string | undefined) => (v ? v.split(',').map((x) => x.trim()).filter(Boolean) : undefined);
  const caFiles = o.tlsCaCertFiles ?? list(config.hubbleTlsCaCertFiles);
  const certFile = o.tlsClientCertFile ?? config.hubbleTlsClientCertFile;
  const keyFile = o.tlsClientKeyFile ?? config.hubbleTlsClientKeyFile;
  const serverName = o.tlsServerName ?? config.hubbleTlsServerName;
  return {
    enabled: o.tls ?? config.hubbleTls,
    ...(caFiles ? { caFiles } : {}), ...(certFile ? { certFile } : {}), ...(keyFile ? { keyFile } : {}), ...(serverName ? { serverName } : {}),
  };
}

export function register(program: Command, config: MembraneConfig): void {
  const wl = new Tracker();
  const bl = new Tracker();
  let negateNext = false;
  let errors: MembraneError[] = [];
  const target = () => {
    const t = negateNext ? bl : wl;
    negateNext = false;
    return t;
  };
  /** a filter flag: called by commander in argv order */
  const filt = (name: string, fn: (t: Tracker, v: string) => void) => (v: string) => {
    try {
      const t = target();
      t.flags.add(name);
      fn(t, v);
    } catch (e) {
      if (e instanceof MembraneError) errors.push(e);
      else errors.push(bad(name, (e as Error).message));
    }
    return v;
  };
  const flag = (name: string, fn: (t: Tracker) => void) => () => {
    const t = target();
    t.flags.add(name);
    fn(t);
    return true;
  };
  const port = (flag: string, v: string) => {
    if (!/^\d+$/.test(v) || Number(v) > 65535) throw bad(flag, `invalid port "${v}"`);
    return v;
  };
  const identity = (flag: string, v: string) => {
    const n = parseIdentity(v);
    if (n === undefined) throw bad(flag, `invalid identity "${v}" (a number or a reserved name like world, host)`);
    return n;
  };
  const workload = (v: string) => {
    const slash = v.indexOf('/');
    return slash >= 0 ? { kind: v.slice(0, slash), name: v.slice(slash + 1) } : { name: v, kind: '' };
  };

  const cmd = program.command('observe')
    .description('Observe flows of a node\'s Hubble server (hubble observe flags)')
    .option('--last <n>', 'get the last N flows (default 20 unless following or --since)')
    .option('--first <n>', 'get the first N flows stored in the ring')
    .option('--all', 'get all flows stored in the ring')
    .option('-f, --follow', 'follow flows as they arrive')
    .option('--since <time>', 'flows since this time (5m, 1h30m or RFC 3339)')
    .option('--until <time>', 'flows until this time (ignored with --follow)')
    .option('--not', 'negate the next filter flag')
    .option('--uuid <id>', 'flow UUID', filt('uuid', (t, v) => t.apply('uuid', v)))
    .option('--ip <ip>', 'source or destination IP or CIDR', filt('ip', (t, v) => t.either('sourceIp', 'destinationIp', v)))
    .option('--from-ip <ip>', 'source IP or CIDR', filt('from-ip', (t, v) => t.apply('sourceIp', v)))
    .option('--to-ip <ip>', 'destination IP or CIDR', filt('to-ip', (t, v) => t.apply('destinationIp', v)))
    .option('--snat-ip <ip>', 'source IP after SNAT', filt('snat-ip', (t, v) => t.apply('sourceIpXlated', v)))
    .option('-4, --ipv4', 'IPv4 flows only', flag('ipv4', (t) => t.apply('ipVersion', IPVersion.IPv4)))
    .option('-6, --ipv6', 'IPv6 flows only', flag('ipv6', (t) => t.apply('ipVersion', IPVersion.IPv6)))
    .option('--ip-version <v>', 'none|v4|v6', filt('ip-version', (t, v) => t.apply('ipVersion', ({ none: 0, v4: 1, v6: 2, ipv4: 1, ipv6: 2 } as Record<string, number>)[v.toLowerCase()] ?? (() => { throw bad('ip-version', `invalid "${v}"`); })())))
    .option('--pod <[ns/]pod>', 'source or destination pod (name prefix)', filt('pod', (t, v) => t.either('sourcePod', 'destinationPod', v)))
    .option('--from-pod <[ns/]pod>', 'source pod', filt('from-pod', (t, v) => t.apply('sourcePod', v)))
    .option('--to-pod <[ns/]pod>', 'destination pod', filt('to-pod', (t, v) => t.apply('destinationPod', v)))
    .option('-n, --namespace <ns>', 'source or destination namespace', filt('namespace', (t, v) => t.namespace('either', v)))
    .option('--from-namespace <ns>', 'source namespace', filt('from-namespace', (t, v) => t.namespace('src', v)))
    .option('--to-namespace <ns>', 'destination namespace', filt('to-namespace', (t, v) => t.namespace('dst', v)))
    .option('-A, --all-namespaces', 'pods in any namespace', flag('all-namespaces', (t) => { t.allNs.src = true; t.allNs.dst = true; }))
    .option('--from-all-namespaces', 'source pods in any namespace', flag('from-all-namespaces', (t) => { t.allNs.src = true; }))
    .option('--to-all-namespaces', 'destination pods in any namespace', flag('to-all-namespaces', (t) => { t.allNs.dst = true; }))
    .option('-l, --label <selector>', 'source or destination label selector', filt('label', (t, v) => t.either('sourceLabel', 'destinationLabel', v)))
    .option('--from-label <selector>', 'source label selector', filt('from-label', (t, v) => t.apply('sourceLabel', v)))
    .option('--to-label <selector>', 'destination label selector', filt('to-label', (t, v) => t.apply('destinationLabel', v)))
    .option('--service <[ns/]svc>', 'source or destination service', filt('service', (t, v) => t.either('sourceService', 'destinationService', v)))
    .option('--from-service <[ns/]svc>', 'source service', filt('from-service', (t, v) => t.apply('sourceService', v)))
    .option('--to-service <[ns/]svc>', 'destination service', filt('to-service', (t, v) => t.apply('destinationService', v)))
    .option('--fqdn <pattern>', 'source or destination DNS name (*.example.com)', filt('fqdn', (t, v) => t.either('sourceFqdn', 'destinationFqdn', v)))
    .option('--from-fqdn <pattern>', 'source DNS name', filt('from-fqdn', (t, v) => t.apply('sourceFqdn', v)))
    .option('--to-fqdn <pattern>', 'destination DNS name', filt('to-fqdn', (t, v) => t.apply('destinationFqdn', v)))
    .option('--port <port>', 'source or destination port', filt('port', (t, v) => t.either('sourcePort', 'destinationPort', port('port', v))))
    .option('--from-port <port>', 'source port', filt('from-port', (t, v) => t.apply('sourcePort', port('from-port', v))))
    .option('--to-port <port>', 'destination port', filt('to-port', (t, v) => t.apply('destinationPort', port('to-port', v))))
    .option('--workload <[kind/]name>', 'source or destination workload', filt('workload', (t, v) => t.either('sourceWorkload', 'destinationWorkload', workload(v))))
    .option('--from-workload <[kind/]name>', 'source workload', filt('from-workload', (t, v) => t.apply('sourceWorkload', workload(v))))
    .option('--to-workload <[kind/]name>', 'destination workload', filt('to-workload', (t, v) => t.apply('destinationWorkload', workload(v))))
    .option('--identity <id>', 'source or destination identity (number or reserved name)', filt('identity', (t, v) => t.either('sourceIdentity', 'destinationIdentity', identity('identity', v))))
    .option('--from-identity <id>', 'source identity', filt('from-identity', (t, v) => t.apply('sourceIdentity', identity('from-identity', v))))
    .option('--to-identity <id>', 'destination identity', filt('to-identity', (t, v) => t.apply('destinationIdentity', identity('to-identity', v))))
    .option('--cluster <name>', 'source or destination cluster', filt('cluster', (t, v) => t.either('sourceClusterName', 'destinationClusterName', v)))
    .option('--from-cluster <name>', 'source cluster', filt('from-cluster', (t, v) => t.apply('sourceClusterName', v)))
    .option('--to-cluster <name>', 'destination cluster', filt('to-cluster', (t, v) => t.apply('destinationClusterName', v)))
    .option('--node-name <pattern>', 'node name ([cluster/]node, wildcards)', filt('node-name', (t, v) => t.apply('nodeName', v)))
    .option('--node-label <selector>', 'node label selector', filt('node-label', (t, v) => t.apply('nodeLabels', v)))
    .option('--verdict <verdict>', 'FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED', filt('verdict', (t, v) => t.apply('verdict', parseEnum('verdict', Verdict as unknown as Record<string, number>, v))))
    .option('--drop-reason-desc <reason>', 'drop reason (POLICY_DENIED, …)', filt('drop-reason-desc', (t, v) => t.apply('dropReasonDesc', parseEnum('drop-reason-desc', DropReason as unknown as Record<string, number>, v))))
    .option('-t, --type <type[:subtype]>', 'event type: trace, drop, policy-verdict, l7, capture, trace-sock (trace:to-endpoint)', filt('type', (t, v) => t.apply('eventType', parseEventType(v))))
    .option('--protocol <proto>', 'tcp, udp, icmp, icmpv4, icmpv6, sctp, dns, http, kafka', filt('protocol', (t, v) => t.apply('protocol', v)))
    .option('--tcp-flags <flags>', 'TCP flags, all required (syn,ack)', filt('tcp-flags', (t, v) => {
      const f: Record<string, boolean> = {};
      for (const x of v.split(',')) {
        const k = x.trim().toUpperCase();
        if (!['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'].includes(k)) throw bad('tcp-flags', `unknown flag "${x}"`);
        f[k] = true;
      }
      t.apply('tcpFlags', f);
    }))
    .option('--http-status <code>', 'HTTP status (404, 5+)', filt('http-status', (t, v) => t.apply('httpStatusCode', v)))
    .option('--http-method <method>', 'HTTP method', filt('http-method', (t, v) => t.apply('httpMethod', v)))
    .option('--http-path <regex>', 'HTTP path regex', filt('http-path', (t, v) => t.apply('httpPath', v)))
    .option('--http-url <regex>', 'HTTP URL regex', filt('http-url', (t, v) => t.apply('httpUrl', v)))
    .option('--http-header <key:value>', 'HTTP header', filt('http-header', (t, v) => {
      const i = v.indexOf(':');
      if (i <= 0) throw bad('http-header', `expected key:value, got "${v}"`);
      t.apply('httpHeader', { key: v.slice(0, i), value: v.slice(i + 1) });
    }))
    .option('--traffic-direction <dir>', 'ingress|egress', filt('traffic-direction', (t, v) => t.apply('trafficDirection', parseEnum('traffic-direction', TrafficDirection as unknown as Record<string, number>, v))))
    .option('--trace-id <id>', 'trace id', filt('trace-id', (t, v) => t.apply('traceId', v)))
    .option('--interface <name>', 'interface name', filt('interface', (t, v) => t.apply('interface', { name: v })))
    .option('--encrypted', 'encrypted flows only', flag('encrypted', (t) => t.apply('encrypted', true)))
    .option('--unencrypted', 'unencrypted flows only', flag('unencrypted', (t) => t.apply('encrypted', false)))
    .option('--allowlist <json>', 'raw FlowFilter JSON added to the allowlist', collect)
    .option('--denylist <json>', 'raw FlowFilter JSON added to the denylist', collect)
    .addOption(new Option('-o, --output <format>', 'compact, dict, json, jsonpb, table').default('compact'))
    .option('--print-node-name', 'print the node name in each line')
    .option('--print-policy-names', 'print the policies that allowed or denied each flow')
    .addOption(new Option('--time-format <format>', TIME_FORMATS.join(', ')).default('StampMilli'))
    .option('--numeric', 'print IPs instead of pod/service/DNS names')
    .addOption(new Option('--ip-translation <bool>', 'translate IPs to names').default(true).argParser((v) => v !== 'false'))
    .option('--color <when>', 'auto, always, never', 'auto')
    .option('--print-raw-filters', 'print the allowlist/denylist as JSON and exit')
    .option('--server <address>', 'hubble server: unix:///path, host:port or tls://host:port (default: the node\'s hubble socket)')
    .option('--node <name>', 'lab node whose hubble socket to use')
    .option('--tls', 'use TLS to a host:port server (implied by tls:// and the --tls-* flags)')
    .option('--tls-ca-cert-files <files>', 'CA certificates (PEM) that sign the server\'s certificate, comma-separated', (v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)])
    .option('--tls-client-cert-file <file>', 'client certificate (PEM) for mutual TLS')
    .option('--tls-client-key-file <file>', 'client private key (PEM)')
    .option('--tls-server-name <name>', 'name to verify on the server certificate (<node>.<cluster>.hubble-grpc.cilium.io)');

  cmd.on('option:not', () => {
    if (negateNext) errors.push(bad('not', 'duplicate --not'));
    negateNext = true;
  });

  cmd.action(async (o: ObserveOpts) => {
    const errs = errors;
    errors = [];
    if (errs.length) throw errs[0];
    if (negateNext) throw bad('not', 'trailing --not: it must precede a filter flag');
    if (o.first !== undefined && (o.last !== undefined || o.all || o.follow)) throw bad('first', 'cannot be combined with --last, --all or --follow');
    if (o.last !== undefined && o.all) throw bad('last', 'cannot be combined with --all');
    const format = o.output as OutputFormat;
    if (!OUTPUT_FORMATS.includes(format)) throw bad('output', `unknown format "${o.output}" (${OUTPUT_FORMATS.join(', ')})`);
    if (format === 'table' && o.follow) throw bad('output', 'table output cannot be used with --follow');
    if (!(TIME_FORMATS as readonly string[]).includes(o.timeFormat)) throw bad('time-format', `unknown format "${o.timeFormat}" (${TIME_FORMATS.join(', ')})`);

    for (const t of [wl, bl]) {
      for (const [a, others] of CONFLICTS) {
        for (const b of others) if (t.flags.has(a) && t.flags.has(b)) throw bad(a, `cannot be combined with --${b}`);
      }
    }
    const whitelist = wl.filters();
    const blacklist = bl.filters();
    for (const [list, raw] of [[whitelist, o.allowlist], [blacklist, o.denylist]] as const) {
      for (const j of raw ?? []) {
        try {
          list.push(fromJsonString(FlowFilterSchema, j));
        } catch (e) {
          throw bad(list === whitelist ? 'allowlist' : 'denylist', `invalid FlowFilter JSON: ${(e as Error).message}`);
        }
      }
    }
    if (o.printRawFilters) {
      const show = (l: FlowFilter[]) => l.map((f) => `    - '${JSON.stringify(toJson(FlowFilterSchema, f, { useProtoFieldName: true }))}'`).join('\n');
      process.stdout.write(`allowlist:\n${show(whitelist)}\ndenylist:\n${show(blacklist)}\n`);
      return;
    }

    const count = (flag: string, v: string) => {
      if (!/^\d+$/.test(v)) throw bad(flag, `expected a number, got "${v}"`);
      return BigInt(v);
    };
    let number = 0n;
    if (o.all) number = 0xffff_ffff_ffff_ffffn;
    else if (o.first !== undefined) number = count('first', o.first);
    else if (o.last !== undefined) number = count('last', o.last);
    else if (!o.follow && o.since === undefined) number = 20n;
    const now = Date.now();
    const req = create(GetFlowsRequestSchema, {
      number,
      first: o.first !== undefined,
      follow: o.follow ?? false,
      whitelist,
      blacklist,
      since: o.since !== undefined ? timestampFromMs(parseTime('since', o.since, now)) : undefined,
      until: o.until !== undefined && !o.follow ? timestampFromMs(parseTime('until', o.until, now)) : undefined,
    });

    const server = o.server ?? config.hubbleServer ?? `unix://${labPaths(config).hubbleSocket(o.node ?? config.node)}`;
    const t = parseServer(server);
    const tls = tlsFromFlags(o, config);
    const client = observerClient(t, tls);
    const color = o.color === 'always' || (o.color === 'auto' && !!process.stdout.isTTY && !config.noColor);
    const printer = createPrinter({
      format, color, printNodeName: o.printNodeName, timeFormat: o.timeFormat as TimeFormat,
      ipTranslation: o.numeric ? false : o.ipTranslation, printPolicyNames: o.printPolicyNames,
      out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s),
    });
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    try {
      for await (const resp of client.getFlows(req, { signal: ac.signal })) {
        printer.write(resp);
      }
    } catch (e) {
      if (ac.signal.aborted) return;
      if (e instanceof ConnectError) {
        // The server judges requests with InvalidArgument; anything else is the connection (down, or refused by TLS).
        if (e.code === Code.InvalidArgument || e.code === Code.Unimplemented) {
          throw new MembraneError('HUBBLE_REQUEST', `hubble server rejected the request: ${e.rawMessage}`, { hint: 'check the filter flags', cause: e });
        }
        throw new MembraneError('HUBBLE_UNAVAILABLE', `cannot read flows from hubble at ${formatTarget(t)}: ${e.rawMessage}`, {
          hint: t.kind === 'tcp' ? 'check the address; Hubble\'s port 4244 serves mutual TLS only (`membrane lab hubble` prints the --tls-* flags)' : 'is the lab up? run `membrane up` (or check --server / --node)', cause: e,
        });
      }
      throw e;
    } finally {
      printer.close();
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
  });
}
