/**
 * `hubble observe` output formats (spec/hubble.md §3), byte for byte as the hubble CLI v1.17.0
 * prints them (hubble/pkg/printer in cilium v1.17.0): compact line (default), dict, table (Go's
 * text/tabwriter, minwidth 2, padding 3) and JSON (`json` = `jsonpb`: the whole GetFlowsResponse
 * as protojson with proto field names, passed through Go's json.Encoder).
 *
 * Two later hubble behaviours are taken on purpose, because v1.17.0 lacks them:
 * - terminal escaping (hubble v1.17.2): ESC becomes `^[` and CR becomes `\r` in everything but
 *   JSON, so a pod cannot move the cursor or recolour a terminal through a DNS name or URL; the
 *   printer's own colour sequences stay.
 * - `--print-policy-names` (hubble v1.18): ` BY <name> (<kind>), …` after ALLOWED/DENIED of
 *   policy-verdict events, from the flow's {egress,ingress}_{allowed,denied}_by for its direction.
 */
import { toJson, type DescMessage, type JsonValue, type MessageShape } from '@bufbuild/protobuf';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import {
  AuthType, DebugCapturePoint, LostEventSource, SocketTranslationPoint, TrafficDirection, Verdict, L7FlowType,
  type Flow, type LostEvent, type Policy,
} from './gen/flow/flow_pb.js';
import { GetFlowsResponseSchema, type GetFlowsResponse } from './gen/observer/observer_pb.js';
import { NodeState } from './gen/relay/relay_pb.js';
import { DROP_REASON_TEXT, policyMatchTypeName, reservedIdentityName, TRACE_POINT_NAMES } from './names.ts';

export type OutputFormat = 'compact' | 'dict' | 'json' | 'jsonpb' | 'table' | 'tab';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['compact', 'dict', 'json', 'jsonpb', 'table', 'tab'];
/** hubble's --time-format names (hubble/pkg/time FormatNames), matched case-insensitively. */
export const TIME_FORMATS = [
  'YearMonthDay', 'YearMonthDayHour', 'YearMonthDayHourMinute', 'StampMilli', 'RFC3339', 'RFC3339Milli',
  'RFC3339Micro', 'RFC3339Nano', 'RFC1123Z',
] as const;
export type TimeFormat = (typeof TIME_FORMATS)[number];

/** The canonical name of a --time-format value (case-insensitive), or undefined. */
export function timeFormatName(v: string): TimeFormat | undefined {
  return TIME_FORMATS.find((f) => f.toLowerCase() === v.toLowerCase());
}

export interface PrinterOptions {
  format: OutputFormat;
  color?: boolean;
  printNodeName?: boolean;
  timeFormat?: TimeFormat;
  /** translate IPs to pod/service/DNS names (default true; `--numeric` turns it off) */
  ipTranslation?: boolean;
  printPolicyNames?: boolean;
  /** hubble's -D: informational node-status events are printed too */
  debug?: boolean;
  out: (s: string) => void;
  /** node-status events (stderr) */
  err?: (s: string) => void;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const p2 = (n: number) => String(n).padStart(2, '0');
/** the range protobuf's Timestamp.IsValid accepts (years 1 … 9999) */
const MIN_SECONDS = -62135596800n;
const MAX_SECONDS = 253402300799n;

/** Go's `.999…` fraction: trailing zeros dropped, and the dot too when nothing is left. */
function goFraction(nanos: number, digits: number): string {
  const s = String(nanos).padStart(9, '0').slice(0, digits).replace(/0+$/, '');
  return s ? `.${s}` : '';
}

/** `ts.AsTime().Format(layout)` in UTC; `N/A` for a missing or out-of-range timestamp. */
export function formatTime(t: Timestamp | undefined, fmt: TimeFormat = 'StampMilli'): string {
  if (!t || t.seconds < MIN_SECONDS || t.seconds > MAX_SECONDS || t.nanos < 0 || t.nanos >= 1e9) return 'N/A';
  const d = new Date(Number(t.seconds) * 1000);
  const year = String(d.getUTCFullYear()).padStart(4, '0');
  const ymd = `${year}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}`;
  const hh = p2(d.getUTCHours()), mm = p2(d.getUTCMinutes()), ss = p2(d.getUTCSeconds());
  switch (fmt) {
    case 'StampMilli': return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${hh}:${mm}:${ss}.${String(t.nanos).padStart(9, '0').slice(0, 3)}`;
    case 'YearMonthDay': return ymd;
    case 'YearMonthDayHour': return `${ymd}T${hh}Z`;
    case 'YearMonthDayHourMinute': return `${ymd}T${hh}:${mm}Z`;
    case 'RFC3339': return `${ymd}T${hh}:${mm}:${ss}Z`;
    case 'RFC3339Milli': return `${ymd}T${hh}:${mm}:${ss}${goFraction(t.nanos, 3)}Z`;
    case 'RFC3339Micro': return `${ymd}T${hh}:${mm}:${ss}${goFraction(t.nanos, 6)}Z`;
    case 'RFC3339Nano': return `${ymd}T${hh}:${mm}:${ss}${goFraction(t.nanos, 9)}Z`;
    case 'RFC1123Z': return `${DAYS[d.getUTCDay()]}, ${p2(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${year} ${hh}:${mm}:${ss} +0000`;
  }
}

// fatih/color's sequences as hubble uses them: cyan hosts, yellow ports, magenta identities,
// green/red/yellow verdicts; the reset of a foreground colour is ESC[0m.
const SGR = { red: 31, green: 32, yellow: 33, magenta: 35, cyan: 36 } as const;
type Colour = keyof typeof SGR;
const paint = (on: boolean, c: Colour, s: string) => (on ? `\x1b[${SGR[c]}m${s}\x1b[0m` : s);
const ALLOWED_SEQUENCES = Object.values(SGR).map((n) => `\x1b[${n}m`).concat('\x1b[0m');

/**
 * hubble's terminal escaper: ESC → `^[`, CR → `\r` (two characters), except the colour
 * sequences the printer itself writes when colours are on.
 */
export function escapeTerminal(s: string, colours = false): string {
  if (!s.includes('\x1b') && !s.includes('\r')) return s;
  if (!colours) return s.replaceAll('\x1b', '^[').replaceAll('\r', '\\r');
  let out = '';
  for (let i = 0; i < s.length;) {
    const c = s[i]!;
    if (c === '\x1b') {
      const seq = ALLOWED_SEQUENCES.find((q) => s.startsWith(q, i));
      if (seq) { out += seq; i += seq.length; continue; }
      out += '^['; i++; continue;
    }
    out += c === '\r' ? '\\r' : c;
    i++;
  }
  return out;
}

/** `(ID:n)`, or `(name)` for identities Cilium names (0 … 10). */
export function formatIdentity(id: number, colour = false): string {
  const name = reservedIdentityName(id);
  return paint(colour, 'magenta', name !== undefined ? `(${name})` : `(ID:${id})`);
}

function ports(f: Flow): [string, string] {
  const p = f.l4?.protocol;
  if (p && (p.case === 'TCP' || p.case === 'UDP' || p.case === 'SCTP')) return [String(p.value.sourcePort), String(p.value.destinationPort)];
  return ['', ''];
}

/** Go's path.Join(ns, name) for the two non-empty-name cases hubble uses. */
function join(ns: string, name: string): string {
  const parts = [ns, name].filter(Boolean).join('/');
  return parts.replace(/\/{2,}/g, '/').replace(/(^|\/)\.(\/|$)/g, '$1').replace(/\/$/, '') || '.';
}

function hostname(ip: string, port: string, ns: string, pod: string, svc: string, names: readonly string[], translate: boolean, colour: boolean): string {
  let host = ip;
  if (translate) {
    if (pod) host = join(ns, pod);
    else if (svc) host = join(ns, svc);
    else if (names.length) host = names.join(',');
  }
  if (port !== '' && port !== '0') {
    const p = paint(colour, 'yellow', port);
    return host.includes(':') ? `[${host}]:${p}` : `${host}:${p}`;
  }
  return host;
}

/** Source and destination as the CLI prints them. */
export function hostNames(f: Flow, translate = true, colour = false): [string, string] {
  if (!f.IP) return f.ethernet ? [paint(colour, 'cyan', f.ethernet.source), paint(colour, 'cyan', f.ethernet.destination)] : ['', ''];
  const [sp, dp] = ports(f);
  let sNs = f.source?.namespace ?? '', dNs = f.destination?.namespace ?? '';
  const sPod = f.source?.podName ?? '', dPod = f.destination?.podName ?? '';
  let sSvc = '', dSvc = '';
  if (f.sourceService) { sNs = f.sourceService.namespace; sSvc = f.sourceService.name; }
  if (f.destinationService) { dNs = f.destinationService.namespace; dSvc = f.destinationService.name; }
  return [
    paint(colour, 'cyan', hostname(f.IP.source, sp, sNs, sPod, sSvc, f.sourceNames, translate, colour)),
    paint(colour, 'cyan', hostname(f.IP.destination, dp, dNs, dPod, dSvc, f.destinationNames, translate, colour)),
  ];
}

/** Go's String() of a protobuf enum: the name, or the number when the value is unknown. */
const enumName = (e: Record<number, string>, v: number) => e[v] ?? String(v);

/** The drop strings of the v1.17 CLI (pkg/monitor/api/drop.go); others print as `<code>, 0`. */
const CLI_DROP_TEXT: Readonly<Record<number, string>> = (() => {
  const t: Record<number, string> = { ...DROP_REASON_TEXT };
  delete t[205];
  return t;
})();

/** The observation points the v1.17 CLI names; others print as the number. */
const CLI_TRACE_POINTS = TRACE_POINT_NAMES.slice(0, 12);

/** The TYPE column (GetFlowType). */
export function flowType(f: Flow): string {
  if (f.l7) {
    const rec = f.l7.record;
    let t = enumName(L7FlowType, f.l7.type).toLowerCase();
    let proto = 'l7';
    if (rec.case === 'http') proto = 'http';
    else if (rec.case === 'dns') { proto = 'dns'; t += ` ${rec.value.observationSource}`; }
    else if (rec.case === 'kafka') proto = 'kafka';
    return `${proto}-${t}`;
  }
  const et = f.eventType;
  const sub = (et?.subType ?? 0) & 0xff; // the CLI reads the sub-type as a uint8
  switch (et?.type ?? 0) {
    case 4: return CLI_TRACE_POINTS[sub] ?? String(sub);
    case 1: return CLI_DROP_TEXT[sub] ?? `${sub}, 0`;
    case 5: return `policy-verdict:${policyMatchTypeName(f.policyMatchType)} ${enumName(TrafficDirection, f.trafficDirection)}`;
    case 3: return enumName(DebugCapturePoint, f.debugCapturePoint);
    case 7:
      switch (f.sockXlatePoint) {
        case SocketTranslationPoint.SOCK_XLATE_POINT_POST_DIRECTION_FWD: return 'post-xlate-fwd';
        case SocketTranslationPoint.SOCK_XLATE_POINT_POST_DIRECTION_REV: return 'post-xlate-rev';
        case SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_FWD: return 'pre-xlate-fwd';
        case SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_REV: return 'pre-xlate-rev';
        default: return enumName(SocketTranslationPoint, f.sockXlatePoint);
      }
    default: return 'UNKNOWN';
  }
}

/** ` BY name (kind), …` for the policies named with both a name and a kind (hubble v1.18). */
export function formatPolicyNames(policies: readonly Policy[]): string {
  const named = policies.filter((p) => p.kind !== '' && p.name !== '');
  return named.length ? ` BY ${named.map((p) => `${p.name} (${p.kind})`).join(', ')}` : '';
}

/** The VERDICT column: policy verdict events say ALLOWED / DENIED / AUDITED. */
export function verdictText(f: Flow, o: { color?: boolean; printPolicyNames?: boolean } = {}): string {
  const pv = f.eventType?.type === 5;
  const on = o.color ?? false;
  let msg = enumName(Verdict, f.verdict);
  const names = (egress: readonly Policy[], ingress: readonly Policy[]) => {
    if (!o.printPolicyNames) return '';
    if (f.trafficDirection === TrafficDirection.EGRESS) return formatPolicyNames(egress);
    if (f.trafficDirection === TrafficDirection.INGRESS) return formatPolicyNames(ingress);
    return '';
  };
  switch (f.verdict) {
    case Verdict.FORWARDED: case Verdict.REDIRECTED:
      if (pv) msg = `ALLOWED${names(f.egressAllowedBy, f.ingressAllowedBy)}`;
      return paint(on, 'green', msg);
    case Verdict.DROPPED: case Verdict.ERROR:
      if (pv) msg = `DENIED${names(f.egressDeniedBy, f.ingressDeniedBy)}`;
      return paint(on, 'red', msg);
    case Verdict.AUDIT:
      if (pv) msg = 'AUDITED';
      return paint(on, 'yellow', msg);
    case Verdict.TRACED: case Verdict.TRANSLATED:
      return paint(on, 'yellow', msg);
    default:
      return msg;
  }
}

/** The SUMMARY of compact and table lines: `[IP Trace ID: n; ]Summary[; Auth: TYPE]`. */
export function summaryText(f: Flow, colour = false): string {
  let s = '';
  if (f.ipTraceId && f.ipTraceId.traceId > 0n) s += `IP Trace ID: ${f.ipTraceId.traceId}; `;
  s += f.Summary;
  if (f.authType !== AuthType.DISABLED) {
    const name = enumName(AuthType, f.authType);
    s += `; Auth: ${paint(colour, f.authType === AuthType.TEST_ALWAYS_FAIL ? 'red' : 'green', name)}`;
  }
  return s;
}

/** One compact line (no trailing newline, not escaped). */
export function compactLine(f: Flow, o: Partial<PrinterOptions> = {}): string {
  const colour = o.color ?? false;
  let [src, dst] = hostNames(f, o.ipTranslation ?? true, colour);
  let sId = formatIdentity(f.source?.identity ?? 0, colour);
  let dId = formatIdentity(f.destination?.identity ?? 0, colour);
  let arrow = '->';
  if (f.isReply === undefined) arrow = '<>';
  else if (f.isReply) {
    [src, dst] = [dst, src];
    [sId, dId] = [dId, sId];
    arrow = '<-';
  }
  const node = o.printNodeName ? ` [${f.nodeName}]` : '';
  return `${formatTime(f.time, o.timeFormat)}${node}: ${src} ${sId} ${arrow} ${dst} ${dId} ${flowType(f)} ${verdictText(f, o)} (${summaryText(f, colour)})`;
}

/** The compact lost-events line (v1.17 prints no time). */
export function lostLine(l: LostEvent): string {
  return `EVENTS LOST: ${enumName(LostEventSource, l.source)} CPU(${l.cpu ?? 0}) ${l.numEventsLost}`;
}

/** One dict block (no separator, no trailing newline, not escaped). v1.17 prints the bare Summary here. */
export function dictBlock(f: Flow, o: Partial<PrinterOptions> = {}): string {
  const [src, dst] = hostNames(f, o.ipTranslation ?? true, o.color ?? false);
  const lines = [`  TIMESTAMP: ${formatTime(f.time, o.timeFormat)}`];
  if (o.printNodeName) lines.push(`       NODE: ${f.nodeName}`);
  lines.push(
    `     SOURCE: ${src}`,
    `DESTINATION: ${dst}`,
    `       TYPE: ${flowType(f)}`,
    `    VERDICT: ${verdictText(f, o)}`,
    `    SUMMARY: ${f.Summary}`,
  );
  return lines.join('\n');
}

/**
 * Go's text/tabwriter as hubble configures it (minwidth 2, tabwidth 0, padding 3, spaces, no
 * flags): cells end at `\t` (or `\v`); the text after a line's last tab is not aligned; a column
 * block is a run of adjacent lines that have a cell in that column; a line without any tab (or a
 * `\f`) closes every block. Widths count runes, as Go does.
 */
export function goTabwriter(text: string): string {
  const MIN = 2, PAD = 3;
  type Cell = { text: string; width: number };
  let out = '';
  let lines: Cell[][] = [[]];
  const runes = (s: string) => { let n = 0; for (const _ of s) n++; return n; };
  const writeLines = (widths: number[], from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const line = lines[i]!;
      for (let j = 0; j < line.length; j++) {
        const c = line[j]!;
        out += c.text;
        if (j < widths.length) out += ' '.repeat(widths[j]! - c.width);
      }
      // the last buffered line is the one being written: no newline yet
      if (i + 1 < lines.length) out += '\n';
    }
  };
  const format = (widths: number[], line0: number, line1: number): void => {
    const column = widths.length;
    for (let cur = line0; cur < line1; cur++) {
      if (column >= lines[cur]!.length - 1) continue;
      writeLines(widths, line0, cur);
      line0 = cur;
      let width = MIN;
      for (; cur < line1; cur++) {
        const line = lines[cur]!;
        if (column >= line.length - 1) break;
        width = Math.max(width, line[column]!.width + PAD);
      }
      format([...widths, width], line0, cur);
      line0 = cur;
    }
    writeLines(widths, line0, line1);
  };
  const flush = () => {
    format([], 0, lines.length);
    lines = [[]];
  };
  let cell = '';
  const terminate = () => {
    const line = lines[lines.length - 1]!;
    line.push({ text: cell, width: runes(cell) });
    cell = '';
    return line.length;
  };
  for (const ch of text) {
    if (ch === '\t' || ch === '\v') terminate();
    else if (ch === '\n' || ch === '\f') {
      const n = terminate();
      lines.push([]);
      // a line of one cell cannot change the alignment of later lines; a form feed always flushes
      if (n === 1 || ch === '\f') flush();
    } else cell += ch;
  }
  if (cell) terminate();
  flush();
  return out;
}

/** Keys in the order the .proto declares the fields, as protojson writes them (protobuf-es sorts by number). */
function declarationOrder(desc: DescMessage, v: JsonValue): JsonValue {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || desc.typeName.startsWith('google.protobuf.')) return v;
  const out: Record<string, JsonValue> = {};
  for (const f of desc.fields) {
    const val = v[f.name];
    if (val === undefined) continue;
    if (f.fieldKind === 'message') out[f.name] = declarationOrder(f.message, val);
    else if (f.fieldKind === 'list' && f.listKind === 'message') out[f.name] = (val as JsonValue[]).map((x) => declarationOrder(f.message, x));
    else if (f.fieldKind === 'map' && f.mapKind === 'message') {
      out[f.name] = Object.fromEntries(Object.entries(val as Record<string, JsonValue>).map(([k, x]) => [k, declarationOrder(f.message, x)]));
    } else out[f.name] = val;
  }
  return out;
}

/**
 * A message as hubble prints it: protojson with proto names (fields in declaration order), then
 * Go's json.Encoder, which re-encodes it compactly with HTML escaping.
 */
export function protoJson<D extends DescMessage>(desc: D, msg: MessageShape<D>): string {
  return goJsonEscape(JSON.stringify(declarationOrder(desc, toJson(desc, msg, { useProtoFieldName: true }))));
}

/** One `-o json` line: the whole GetFlowsResponse. */
export function jsonLine(resp: GetFlowsResponse): string {
  return protoJson(GetFlowsResponseSchema, resp);
}

/** `<`, `>`, `&`, U+2028, U+2029 and DEL as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, `\u007f` (Go's json.Encoder and protojson). */
export function goJsonEscape(json: string): string {
  return json.replace(/[<>&\u2028\u2029\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** strconv.Quote for the strings hubble quotes (node-status messages). */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"': out += '\\"'; continue;
      case '\\': out += '\\\\'; continue;
      case '\x07': out += '\\a'; continue;
      case '\b': out += '\\b'; continue;
      case '\f': out += '\\f'; continue;
      case '\n': out += '\\n'; continue;
      case '\r': out += '\\r'; continue;
      case '\t': out += '\\t'; continue;
      case '\v': out += '\\v'; continue;
    }
    if (cp < 0x20 || cp === 0x7f) out += `\\x${cp.toString(16).padStart(2, '0')}`;
    else if (cp < 0x80 || /[\p{L}\p{M}\p{N}\p{P}\p{S}]/u.test(ch)) out += ch;
    else if (cp <= 0xffff) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return out + '"';
}

/** strings.Join that stops adding names past `target` characters, then ` (and N more)`. */
export function joinWithCutOff(elems: readonly string[], sep: string, target: number): string {
  let len = 0;
  let end = elems.length;
  for (let i = 0; i < elems.length; i++) {
    len += elems[i]!.length + sep.length;
    if (len > target && i > 0) { end = i; break; }
  }
  const joined = elems.slice(0, end).join(sep);
  return end === elems.length ? joined : `${joined} (and ${elems.length - end} more)`;
}

export interface FlowPrinter {
  write(resp: GetFlowsResponse): void;
  /** flush (table) */
  close(): void;
}

export function createPrinter(o: PrinterOptions): FlowPrinter {
  const format = o.format === 'tab' ? 'table' : o.format;
  // tabwriter output is never coloured (hubble disables colours for it)
  const colour = format === 'table' ? false : (o.color ?? false);
  const opts = { ...o, color: colour };
  const esc = (s: string) => escapeTerminal(s, colour);
  const out = (s: string) => o.out(esc(s));
  const err = (s: string) => (o.err ?? o.out)(esc(s));
  let table = '';
  let line = 0;
  const tableHeader = () => (line === 0 ? `TIMESTAMP\t${o.printNodeName ? 'NODE\t' : ''}SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n` : '');

  const nodeStatus = (resp: GetFlowsResponse) => {
    if (resp.responseTypes.case !== 'nodeStatus') return;
    const s = resp.responseTypes.value;
    if (!o.debug && s.stateChange !== NodeState.NODE_ERROR && s.stateChange !== NodeState.NODE_UNAVAILABLE) return;
    if (format === 'json' || format === 'jsonpb') { (o.err ?? o.out)(jsonLine(resp) + '\n'); return; }
    const names = joinWithCutOff(s.nodeNames, ', ', 50);
    if (format === 'dict') {
      if (line !== 0) o.out('------------\n');
      else line++;
      err(`  TIMESTAMP: ${formatTime(resp.time, o.timeFormat)}\n      STATE: ${enumName(NodeState, s.stateChange)}\n      NODES: ${names}\n    MESSAGE: ${s.message ? goQuote(s.message) : 'N/A'}\n`);
      return;
    }
    const prefix = `${formatTime(resp.time, o.timeFormat)} [${resp.nodeName}]`;
    const n = s.nodeNames.length;
    let msg: string;
    switch (s.stateChange) {
      case NodeState.NODE_CONNECTED: msg = `${prefix}: Receiving flows from ${n} nodes: ${names}`; break;
      case NodeState.NODE_UNAVAILABLE: msg = `${prefix}: ${n} nodes are unavailable: ${names}`; break;
      case NodeState.NODE_GONE: msg = `${prefix}: ${n} nodes removed from cluster: ${names}`; break;
      case NodeState.NODE_ERROR: msg = `${prefix}: Error ${goQuote(s.message)} on ${n} nodes: ${names}`; break;
      default: msg = `${prefix}: unknown node status event: state_change:${enumName(NodeState, s.stateChange)}`;
    }
    err(msg + '\n');
  };

  return {
    write(resp) {
      const r = resp.responseTypes;
      if (r.case === 'nodeStatus') { nodeStatus(resp); return; }
      if (r.case !== 'flow' && r.case !== 'lostEvents') return;
      if (format === 'json' || format === 'jsonpb') { o.out(jsonLine(resp) + '\n'); return; }
      if (r.case === 'flow') {
        const f = r.value;
        if (format === 'compact') out(compactLine(f, opts) + '\n');
        else if (format === 'dict') out((line ? '------------\n' : '') + dictBlock(f, opts) + '\n');
        else {
          const [src, dst] = hostNames(f, o.ipTranslation ?? true, false);
          table += esc(tableHeader() + `${formatTime(f.time, o.timeFormat)}\t${o.printNodeName ? `${f.nodeName}\t` : ''}${src}\t${dst}\t${flowType(f)}\t${verdictText(f, opts)}\t${summaryText(f)}\n`);
        }
      } else {
        const l = r.value;
        const src = enumName(LostEventSource, l.source);
        const summary = `CPU(${l.cpu ?? 0}) - ${l.numEventsLost}`;
        if (format === 'compact') out(lostLine(l) + '\n');
        else if (format === 'dict') {
          out(`${line ? '------------\n' : ''}  TIMESTAMP: \n${o.printNodeName ? '       NODE: \n' : ''}     SOURCE: ${src}\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: ${summary}\n`);
        } else {
          table += esc(tableHeader() + `\t${o.printNodeName ? '\t' : ''}${src}\t\tEVENTS LOST\t\t${summary}\n`);
        }
      }
      line++;
    },
    close() {
      if (format === 'table' && table) o.out(goTabwriter(table));
      table = '';
    },
  };
}
