/**
 * `hubble observe` output formats (spec/hubble.md §3): compact line (default), dict, table and
 * JSON (`json` = `jsonpb`: the whole GetFlowsResponse with proto field names, one per line).
 */
import { createRegistry, toJson } from '@bufbuild/protobuf';
import { StructSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import pc from 'picocolors';
import {
  AuthType, DebugCapturePoint, LostEventSource, TrafficDirection, Verdict, L7FlowType,
  type Flow, type LostEvent,
} from './gen/flow/flow_pb.js';
import { GetFlowsResponseSchema, type GetFlowsResponse } from './gen/observer/observer_pb.js';
import { dropReasonText, policyMatchTypeName, reservedIdentityName, TRACE_POINT_NAMES } from './names.ts';

export type OutputFormat = 'compact' | 'dict' | 'json' | 'jsonpb' | 'table';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['compact', 'dict', 'json', 'jsonpb', 'table'];
export const TIME_FORMATS = ['StampMilli', 'RFC3339', 'RFC3339Milli', 'RFC3339Micro', 'RFC3339Nano'] as const;
export type TimeFormat = (typeof TIME_FORMATS)[number];

export interface PrinterOptions {
  format: OutputFormat;
  color?: boolean;
  printNodeName?: boolean;
  timeFormat?: TimeFormat;
  /** translate IPs to pod/service/DNS names (default true; `--numeric` turns it off) */
  ipTranslation?: boolean;
  printPolicyNames?: boolean;
  out: (s: string) => void;
  /** node-status lines (stderr) */
  err?: (s: string) => void;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = (n: number) => String(n).padStart(2, '0');

export function formatTime(t: Timestamp | undefined, fmt: TimeFormat = 'StampMilli'): string {
  if (!t || (t.seconds === 0n && t.nanos === 0)) return 'N/A';
  const d = new Date(Number(t.seconds) * 1000);
  if (Number.isNaN(d.getTime())) return 'N/A';
  const hms = `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  const ns = String(t.nanos).padStart(9, '0');
  if (fmt === 'StampMilli') return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${hms}.${ns.slice(0, 3)}`;
  const date = `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}T${hms}`;
  switch (fmt) {
    case 'RFC3339': return `${date}Z`;
    case 'RFC3339Milli': return `${date}.${ns.slice(0, 3)}Z`;
    case 'RFC3339Micro': return `${date}.${ns.slice(0, 6)}Z`;
    default: {
      const frac = ns.replace(/0+$/, '');
      return `${date}${frac ? `.${frac}` : ''}Z`;
    }
  }
}

export function formatIdentity(id: number): string {
  if (id < 256) {
    const name = reservedIdentityName(id);
    return name ? `(${name})` : `(${id})`;
  }
  return `(ID:${id})`;
}

function ports(f: Flow): [number, number] {
  const p = f.l4?.protocol;
  if (p && (p.case === 'TCP' || p.case === 'UDP' || p.case === 'SCTP')) return [p.value.sourcePort, p.value.destinationPort];
  return [0, 0];
}

function hostname(ip: string, port: number, ns: string, pod: string, svc: string, names: readonly string[], translate: boolean): string {
  let host = ip;
  if (translate) {
    if (pod) host = ns ? `${ns}/${pod}` : pod;
    else if (svc) host = ns ? `${ns}/${svc}` : svc;
    else if (names.length) host = names.join(',');
  }
  if (port !== 0) return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return host;
}

/** Source and destination as the CLI prints them. */
export function hostNames(f: Flow, translate = true): [string, string] {
  if (!f.IP) return f.ethernet ? [f.ethernet.source, f.ethernet.destination] : ['', ''];
  const [sp, dp] = ports(f);
  let sNs = f.source?.namespace ?? '', dNs = f.destination?.namespace ?? '';
  const sPod = f.source?.podName ?? '', dPod = f.destination?.podName ?? '';
  let sSvc = '', dSvc = '';
  if (f.sourceService) { sNs = f.sourceService.namespace; sSvc = f.sourceService.name; }
  if (f.destinationService) { dNs = f.destinationService.namespace; dSvc = f.destinationService.name; }
  return [
    hostname(f.IP.source, sp, sNs, sPod, sSvc, f.sourceNames, translate),
    hostname(f.IP.destination, dp, dNs, dPod, dSvc, f.destinationNames, translate),
  ];
}

const SOCK_XLATE = ['', 'pre-xlate-fwd', 'post-xlate-fwd', 'pre-xlate-rev', 'post-xlate-rev'];

/** The TYPE column (GetFlowType). */
export function flowType(f: Flow): string {
  if (f.l7) {
    const rec = f.l7.record;
    const proto = rec.case === 'dns' ? 'dns' : rec.case === 'http' ? 'http' : rec.case === 'kafka' ? 'kafka' : 'l7';
    const t = (L7FlowType[f.l7.type] ?? 'UNKNOWN_L7_TYPE').toLowerCase();
    const s = `${proto}-${t}`;
    return rec.case === 'dns' && rec.value.observationSource ? `${s} ${rec.value.observationSource}` : s;
  }
  const et = f.eventType;
  switch (et?.type) {
    case 4: return TRACE_POINT_NAMES[et.subType] ?? 'UNKNOWN';
    case 1: return dropReasonText(et.subType);
    case 5: return `policy-verdict:${policyMatchTypeName(f.policyMatchType)} ${TrafficDirection[f.trafficDirection] ?? 'TRAFFIC_DIRECTION_UNKNOWN'}`;
    case 3: return DebugCapturePoint[f.debugCapturePoint] ?? String(f.debugCapturePoint);
    case 7: return SOCK_XLATE[f.sockXlatePoint] ?? 'UNKNOWN';
    default: return 'UNKNOWN';
  }
}

function policyNames(f: Flow): string {
  const pols = [...f.egressAllowedBy, ...f.ingressAllowedBy, ...f.egressDeniedBy, ...f.ingressDeniedBy];
  if (!pols.length) return '';
  return ` BY ${pols.map((p) => `${p.namespace ? `${p.namespace}/` : ''}${p.name} (${p.kind})`).join(', ')}`;
}

/** The VERDICT column: policy verdict events say ALLOWED / DENIED / AUDITED. */
export function verdictText(f: Flow): string {
  if (f.eventType?.type === 5) {
    switch (f.verdict) {
      case Verdict.FORWARDED: case Verdict.REDIRECTED: return 'ALLOWED';
      case Verdict.DROPPED: case Verdict.ERROR: return 'DENIED';
      case Verdict.AUDIT: return 'AUDITED';
    }
  }
  return Verdict[f.verdict] ?? String(f.verdict);
}

export function summaryText(f: Flow): string {
  let s = '';
  if (f.ipTraceId && f.ipTraceId.traceId > 0n) s += `IP Trace ID: ${f.ipTraceId.traceId}; `;
  s += f.Summary;
  if (f.authType !== AuthType.DISABLED) s += `; Auth: ${AuthType[f.authType] ?? f.authType}`;
  return s;
}

function colourVerdict(text: string, v: Verdict, on: boolean): string {
  if (!on) return text;
  if (v === Verdict.FORWARDED || v === Verdict.REDIRECTED) return pc.green(text);
  if (v === Verdict.DROPPED || v === Verdict.ERROR) return pc.red(text);
  return pc.yellow(text);
}

/** One compact line (no trailing newline). */
export function compactLine(f: Flow, o: Partial<PrinterOptions> = {}): string {
  const colour = o.color ?? false;
  let [src, dst] = hostNames(f, o.ipTranslation ?? true);
  let sId = formatIdentity(f.source?.identity ?? 0);
  let dId = formatIdentity(f.destination?.identity ?? 0);
  let arrow = '->';
  if (f.isReply === undefined) arrow = '<>';
  else if (f.isReply) {
    [src, dst] = [dst, src];
    [sId, dId] = [dId, sId];
    arrow = '<-';
  }
  if (colour) {
    src = pc.cyan(src);
    dst = pc.cyan(dst);
  }
  const node = o.printNodeName ? ` [${f.nodeName}]` : '';
  const verdict = colourVerdict(verdictText(f), f.verdict, colour) + (o.printPolicyNames ? policyNames(f) : '');
  return `${formatTime(f.time, o.timeFormat)}${node}: ${src} ${sId} ${arrow} ${dst} ${dId} ${flowType(f)} ${verdict} (${summaryText(f)})`;
}

export function lostLine(l: LostEvent, time: Timestamp | undefined, o: Partial<PrinterOptions> = {}): string {
  let s = `${formatTime(time, o.timeFormat)} EVENTS LOST: ${LostEventSource[l.source] ?? l.source} CPU(${l.cpu ?? 0}) ${l.numEventsLost}`;
  if (l.first && l.last && (l.first.seconds !== l.last.seconds || l.first.nanos !== l.last.nanos)) {
    s += ` (first: ${formatTime(l.first, o.timeFormat)}, last: ${formatTime(l.last, o.timeFormat)})`;
  }
  return s;
}

export function dictBlock(f: Flow, o: Partial<PrinterOptions> = {}): string {
  const [src, dst] = hostNames(f, o.ipTranslation ?? true);
  const lines = [`  TIMESTAMP: ${formatTime(f.time, o.timeFormat)}`];
  if (o.printNodeName) lines.push(`       NODE: ${f.nodeName}`);
  lines.push(
    `     SOURCE: ${src}`,
    `DESTINATION: ${dst}`,
    `       TYPE: ${flowType(f)}`,
    `    VERDICT: ${colourVerdict(verdictText(f), f.verdict, o.color ?? false)}${o.printPolicyNames ? policyNames(f) : ''}`,
    `    SUMMARY: ${summaryText(f)}`,
  );
  return lines.join('\n');
}

/** Go text/tabwriter with minwidth 2, padding 3. */
function tabulate(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length, 2)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 3))).join('')).join('\n') + '\n';
}

/** Types a flow's `extensions` (google.protobuf.Any) may hold: membrane's L7 extras travel as a Struct. */
const EXTENSION_TYPES = createRegistry(StructSchema);

export function jsonLine(resp: GetFlowsResponse): string {
  return JSON.stringify(toJson(GetFlowsResponseSchema, resp, { useProtoFieldName: true, registry: EXTENSION_TYPES }));
}

export interface FlowPrinter {
  write(resp: GetFlowsResponse): void;
  /** flush (table) */
  close(): void;
}

export function createPrinter(o: PrinterOptions): FlowPrinter {
  const rows: string[][] = [];
  let blocks = 0;
  if (o.format === 'table') rows.push(['TIMESTAMP', ...(o.printNodeName ? ['NODE'] : []), 'SOURCE', 'DESTINATION', 'TYPE', 'VERDICT', 'SUMMARY']);
  return {
    write(resp) {
      if (o.format === 'json' || o.format === 'jsonpb') {
        if (resp.responseTypes.case === 'nodeStatus') (o.err ?? o.out)(jsonLine(resp) + '\n');
        else o.out(jsonLine(resp) + '\n');
        return;
      }
      const r = resp.responseTypes;
      if (r.case === 'flow') {
        const f = r.value;
        if (o.format === 'compact') o.out(compactLine(f, o) + '\n');
        else if (o.format === 'dict') {
          o.out((blocks++ ? '------------\n' : '') + dictBlock(f, o) + '\n');
        } else {
          const [src, dst] = hostNames(f, o.ipTranslation ?? true);
          rows.push([formatTime(f.time, o.timeFormat), ...(o.printNodeName ? [f.nodeName] : []), src, dst, flowType(f), verdictText(f), summaryText(f)]);
        }
      } else if (r.case === 'lostEvents') {
        const line = lostLine(r.value, resp.time, o);
        if (o.format === 'table') rows.push([line]);
        else o.out(line + '\n');
      } else if (r.case === 'nodeStatus') {
        (o.err ?? o.out)(`${formatTime(resp.time, o.timeFormat)} [${resp.nodeName}]: ${r.value.message || r.value.nodeNames.join(', ')}\n`);
      }
    },
    close() {
      if (o.format === 'table' && rows.length > 0) o.out(tabulate(rows));
      rows.length = 0;
    },
  };
}
