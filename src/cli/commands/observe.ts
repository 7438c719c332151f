/**
 * `membrane observe`: `hubble observe` against a node's Hubble server (spec/hubble.md §4.2).
 * Flags map to FlowFilters the way the hubble CLI builds them: different flags AND inside one
 * filter, repeated values OR, un-prefixed flags (`--pod`, `--ip`, …) make a source filter OR a
 * destination filter, `--not` sends the next flag to the blacklist.
 */
import { Command, Option } from 'commander';
import { create, fromJsonString, toJson, type MessageInitShape } from '@bufbuild/protobuf';
import { FieldMaskSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Code, ConnectError } from '@connectrpc/connect';
import { MembraneError } from '../../common/errors.ts';
import { labPaths } from '../../common/paths.ts';
import type { MembraneConfig } from '../../common/config.ts';
import {
  FlowFilterSchema, Verdict, DropReason, TrafficDirection, IPVersion, type FlowFilter,
} from '../../hubble/gen/flow/flow_pb.js';
import { FlowSchema } from '../../hubble/gen/flow/flow_pb.js';
import { GetFlowsRequestSchema, GetFlowsResponseSchema, type GetFlowsRequest, type GetFlowsResponse } from '../../hubble/gen/observer/observer_pb.js';
import { parseHubbleTime } from '../../hubble/time.ts';
import { compileRequestFilter, FilterError } from '../../hubble/filter.ts';
import { compileFieldMask } from '../../hubble/observer.ts';
import { MONITOR_TYPES, TRACE_POINT_NAMES, parseIdentity } from '../../hubble/names.ts';
import { createPrinter, protoJson, OUTPUT_FORMATS, TIME_FORMATS, timeFormatName, type OutputFormat } from '../../hubble/printer.ts';
import { formatTarget, observerClient, parseServer } from '../../hubble/client.ts';
import { labRelay } from '../../lab/relay.ts';
import { relayClientTls } from '../../lab/hubble-certs.ts';

type FilterInit = MessageInitShape<typeof FlowFilterSchema> & Record<string, unknown>;

function bad(flag: string, msg: string, hint = 'see `membrane observe --help`'): MembraneError {
  return new MembraneError('OBSERVE_BAD_FLAG', `--${flag}: ${msg}`, { hint });
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

/** --since / --until by hubble's rules (src/hubble/time.ts); refused as hubble refuses. */
export function parseTime(flag: string, v: string): Timestamp {
  const t = parseHubbleTime(v);
  if (!t) {
    throw bad(flag, `failed to convert ${v} to time`, 'use a duration before now (30s, 5m, 1h43m) or a time with a date: 2006-01-02, 2006-01-02T15:04:05Z, 2006-01-02T15:04:05.999999999+02:00 or Mon, 02 Jan 2006 15:04:05 -0700 (hubble reads no year-less StampMilli times)');
  }
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
  allowlist?: string[]; denylist?: string[]; fieldMask?: string[]; useDefaultFieldMasks?: boolean;
  inputFile?: string; silentErrors?: boolean; debug?: boolean;
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
    .option('--last <n>', 'get the last N flows (default 20 unless following or --since/--until)')
    .option('--first <n>', 'get the first N flows stored in the ring')
    .option('--all', 'get all flows stored in the ring')
    .option('-f, --follow', 'follow flows as they arrive')
    .option('--since <time>', 'flows since this time: a duration before now (30s, 5m, 1h43m) or 2006-01-02[T15[:04[:05[.999999999]]]]Z07:00 or RFC1123Z')
    .option('--until <time>', 'flows until this time (same formats; ignored with --follow)')
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
    .option('--print-policy-names', 'print the policies that allowed or denied each policy verdict (hubble v1.18)')
    .addOption(new Option('--time-format <format>', TIME_FORMATS.join(', ')).default('StampMilli'))
    .option('--field-mask <paths>', 'only these Flow fields (comma-separated proto paths, e.g. time,source.pod_name,verdict); JSON output only', (v: string, prev: string[] = []) => [...prev, ...v.split(',').map((x) => x.trim()).filter(Boolean)])
    .addOption(new Option('--experimental-field-mask <paths>', 'hubble v1.17\'s name of --field-mask').hideHelp().argParser((v: string, prev: string[] = []) => [...prev, ...v.split(',').map((x) => x.trim()).filter(Boolean)]))
    .option('--use-default-field-masks', 'request only the fields compact, dict and table print')
    .addOption(new Option('--experimental-use-default-field-masks', 'hubble v1.17\'s name of --use-default-field-masks').hideHelp())
    .option('--input-file <path>', 'read flows from this file of JSON lines (`-` for stdin) instead of a server')
    .option('-s, --silent-errors', 'do not print node-status messages (stderr)')
    .option('-D, --debug', 'also print informational node-status messages')
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

  cmd.action(async (o: ObserveOpts & { experimentalFieldMask?: string[]; experimentalUseDefaultFieldMasks?: boolean }) => {
    const errs = errors;
    errors = [];
    if (errs.length) throw errs[0];
    if (negateNext) throw bad('not', 'trailing --not found in the arguments');
    const format = (o.output === 'JSON' ? 'json' : o.output) as OutputFormat;
    if (!OUTPUT_FORMATS.includes(format)) throw bad('output', `invalid output format: ${o.output} (compact, dict, json, jsonpb, table)`);
    if ((format === 'table' || format === 'tab') && o.follow) throw bad('output', 'table output format is not compatible with follow mode');
    const timeFormat = timeFormatName(o.timeFormat);
    if (!timeFormat) throw bad('time-format', `unknown format "${o.timeFormat}" (${TIME_FORMATS.join(', ')})`);
    const json = format === 'json' || format === 'jsonpb';
    let fieldMask = [...(o.fieldMask ?? []), ...(o.experimentalFieldMask ?? [])];
    if (!json) {
      if (fieldMask.length) throw bad('field-mask', `${o.output} output format is not compatible with custom field mask`);
      if (o.useDefaultFieldMasks || o.experimentalUseDefaultFieldMasks) fieldMask = [...DEFAULT_FIELD_MASK];
    }
    if (fieldMask.length) {
      try {
        compileFieldMask(FlowSchema, fieldMask);
      } catch (e) {
        throw bad('field-mask', `failed to construct field mask: ${(e as Error).message}`);
      }
    }

    // the same checks and order as hubble's getFlowsRequest
    const count = (flag: string, v: string) => {
      if (!/^\d+$/.test(v) || BigInt(v) > 0xffff_ffff_ffff_ffffn) throw bad(flag, `expected a number, got "${v}"`);
      return BigInt(v);
    };
    const firstN = o.first !== undefined ? count('first', o.first) : 0n;
    let lastN = o.last !== undefined ? count('last', o.last) : 0n;
    const first = firstN > 0n;
    const last = lastN > 0n;
    if (first && last) throw bad('first', 'cannot set both --first and --last');
    if (first && o.all) throw bad('first', 'cannot set both --first and --all');
    if (first && o.follow) throw bad('first', 'cannot set both --first and --follow');
    if (last && o.all) throw bad('last', 'cannot set both --last and --all');
    const since = o.since ? parseTime('since', o.since) : undefined;
    const until = o.until && !o.follow ? parseTime('until', o.until) : undefined;
    if (!since && !until && !first) {
      if (o.all) lastN = 0xffff_ffff_ffff_ffffn;
      else if (lastN === 0n && !o.follow && !o.inputFile) lastN = 20n;
    }

    for (const t of [wl, bl]) {
      for (const [a, others] of CONFLICTS) {
        for (const b of others) if (t.flags.has(a) && t.flags.has(b)) throw bad(a, `filters --${a} and --${b} cannot be combined`);
      }
    }
    const whitelist = wl.filters();
    const blacklist = bl.filters();
    for (const [list, raw] of [[whitelist, o.allowlist], [blacklist, o.denylist]] as const) {
      for (const j of raw ?? []) {
        try {
          list.push(fromJsonString(FlowFilterSchema, j));
        } catch (e) {
          throw bad(list === whitelist ? 'allowlist' : 'denylist', `failed to decode '${j}': ${(e as Error).message}`);
        }
      }
    }
    if (o.printRawFilters) {
      // hubble prints YAML (yaml.v3: four-space indent, single-quoted JSON, empty lists omitted)
      const show = (l: FlowFilter[]) => l.map((f) => `    - '${protoJson(FlowFilterSchema, f).replaceAll("'", "''")}'\n`).join('');
      let y = '';
      if (whitelist.length) y += `allowlist:\n${show(whitelist)}`;
      if (blacklist.length) y += `denylist:\n${show(blacklist)}`;
      process.stdout.write(y || '{}\n');
      return;
    }

    const number = first ? firstN : lastN;
    const mask = fieldMask.length ? create(FieldMaskSchema, { paths: fieldMask }) : undefined;
    const req = create(GetFlowsRequestSchema, {
      number, first, follow: o.follow ?? false, whitelist, blacklist, since, until,
      // both places: field_mask for hubble ≥ 1.18 servers, experimental.field_mask for 1.17 ones
      ...(mask ? { fieldMask: mask, experimental: { fieldMask: mask } } : {}),
    });

    const color = o.color === 'always' || (o.color === 'auto' && !!process.stdout.isTTY && !config.noColor);
    const printer = createPrinter({
      format, color, printNodeName: o.printNodeName, timeFormat,
      ipTranslation: o.numeric ? false : o.ipTranslation, printPolicyNames: o.printPolicyNames, debug: o.debug,
      out: (s) => void process.stdout.write(s), err: o.silentErrors ? () => {} : (s) => void process.stderr.write(s),
    });
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    try {
      if (o.inputFile) {
        for await (const resp of readFlowsFile(o.inputFile, req)) printer.write(resp);
        return;
      }
      // A cluster lab's Relay sees every node; --node then keeps that node's flows (as --node-name)
      const relay = o.server ?? config.hubbleServer ? undefined : labRelay(labPaths(config));
      if (relay && o.node) {
        if (req.whitelist.length === 0) req.whitelist.push(create(FlowFilterSchema, {}));
        for (const f of req.whitelist) if (f.nodeName.length === 0) f.nodeName = [o.node];
      }
      const server = o.server ?? config.hubbleServer ?? (relay ? relay.address : `unix://${labPaths(config).hubbleSocket(o.node ?? config.node)}`);
      const t = parseServer(server);
      const client = observerClient(t, relay?.tls ? relayClientTls(labPaths(config).stateDir) : tlsFromFlags(o, config));
      try {
        for await (const resp of client.getFlows(req, { signal: ac.signal })) printer.write(resp);
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
      }
    } finally {
      printer.close();
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
  });
}

/** The fields compact, dict and table print (hubble/pkg/defaults FieldMask). */
export const DEFAULT_FIELD_MASK = [
  'time', 'source.identity', 'source.namespace', 'source.pod_name', 'destination.identity', 'destination.namespace',
  'destination.pod_name', 'source_service', 'destination_service', 'l4', 'IP', 'ethernet', 'l7', 'Type', 'node_name',
  'is_reply', 'event_type', 'verdict', 'Summary',
] as const;

/**
 * `--input-file`: GetFlowsResponse JSON lines (what `-o json` prints), read as hubble does: lines
 * that do not parse are skipped with a warning, since/until and the filters apply to flows, `--last
 * N` keeps the last N, `--first N` stops after N, otherwise every line in file order.
 */
async function* readFlowsFile(path: string, req: GetFlowsRequest): AsyncGenerator<GetFlowsResponse> {
  let pass: (f: import('../../hubble/gen/flow/flow_pb.js').Flow) => boolean;
  try {
    pass = compileRequestFilter(req.whitelist, req.blacklist);
  } catch (e) {
    if (e instanceof FilterError) throw bad('input-file', e.message);
    throw e;
  }
  const n = req.number;
  const limited = n !== 0n && n !== 0xffff_ffff_ffff_ffffn;
  if (limited && !req.first && n > 1_000_000n) throw bad('last', `--last must be <= 1_000_000, got ${n}`);
  const ns = (t: Timestamp | undefined) => (t ? t.seconds * 1_000_000_000n + BigInt(t.nanos) : 0n);
  const since = req.since ? ns(req.since) : undefined;
  const until = req.until ? ns(req.until) : undefined;
  const input = path === '-' ? process.stdin : createReadStream(path);
  input.on('error', () => {});
  const lines = createInterface({ input, crlfDelay: Infinity });
  const kept: GetFlowsResponse[] = [];
  let returned = 0n;
  let lineNo = 0;
  try {
    for await (const line of lines) {
      lineNo++;
      if (!line.trim()) continue;
      let resp: GetFlowsResponse;
      try {
        resp = fromJsonString(GetFlowsResponseSchema, line, { ignoreUnknownFields: true });
      } catch (e) {
        process.stderr.write(`warning: ${path}:${lineNo}: not a GetFlowsResponse JSON line (${(e as Error).message}); skipped\n`);
        continue;
      }
      const t = ns(resp.time);
      if (since !== undefined && since > t) continue;
      if (until !== undefined && until < t) continue;
      if (resp.responseTypes.case === 'flow' && !pass(resp.responseTypes.value)) continue;
      if (limited && !req.first) {
        kept.push(resp);
        if (BigInt(kept.length) > n) kept.shift();
        continue;
      }
      yield resp;
      if (limited && req.first && ++returned >= n) return;
    }
  } catch (e) {
    throw new MembraneError('OBSERVE_INPUT_FILE', `cannot read ${path}: ${(e as Error).message}`, { hint: 'give a file of `membrane observe -o json` lines, or - for stdin' });
  }
  yield* kept;
}
