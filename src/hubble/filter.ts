/**
 * FlowFilter semantics (spec/hubble.md §1.6–1.7, Cilium pkg/hubble/filters): inside one
 * FlowFilter every set field must match (AND), inside one field any value may match (OR);
 * a request passes flows matching any whitelist filter (or all when empty) and no blacklist
 * filter. Filters are compiled once per request into closures; a bad filter is a FilterError.
 */
import { BlockList, isIP } from 'node:net';
import type { Flow, FlowFilter, Endpoint } from './gen/flow/flow_pb.js';
import { Verdict } from './gen/flow/flow_pb.js';

export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

export type FlowPredicate = (flow: Flow) => boolean;

const L7_EVENT_TYPE = 129;

// ---------------------------------------------------------------------------------------------
// IP / CIDR

function ipMatcher(values: readonly string[], field: string): (ip: string) => boolean {
  const exact = new Set<string>();
  const list = new BlockList();
  let hasCidr = false;
  for (const v of values) {
    const slash = v.indexOf('/');
    if (slash >= 0) {
      const addr = v.slice(0, slash);
      const len = Number(v.slice(slash + 1));
      const fam = isIP(addr);
      if (!fam || !/^\d+$/.test(v.slice(slash + 1)) || len > (fam === 4 ? 32 : 128)) throw new FilterError(`invalid CIDR in ${field} filter: "${v}"`);
      list.addSubnet(addr, len, fam === 4 ? 'ipv4' : 'ipv6');
      hasCidr = true;
    } else {
      const fam = isIP(v);
      if (!fam) throw new FilterError(`invalid IP address in ${field} filter: "${v}"`);
      exact.add(fam === 6 ? normalizeV6(v) : v);
    }
  }
  return (ip: string) => {
    if (!ip) return false;
    const fam = isIP(ip);
    if (exact.has(fam === 6 ? normalizeV6(ip) : ip)) return true;
    return hasCidr && fam !== 0 && list.check(ip, fam === 4 ? 'ipv4' : 'ipv6');
  };
}

function normalizeV6(ip: string): string {
  try {
    return new URL(`http://[${ip}]/`).hostname;
  } catch {
    return ip;
  }
}

// ---------------------------------------------------------------------------------------------
// pod / service names: `[ns/]prefix`

interface NsName { namespace: string; prefix: string }

export function parseNsName(v: string, field: string): NsName {
  if (v === '') throw new FilterError(`invalid empty ${field} filter`);
  const slash = v.indexOf('/');
  if (slash < 0) return { namespace: 'default', prefix: v };
  return { namespace: v.slice(0, slash), prefix: v.slice(slash + 1) };
}

function nsNameMatcher(values: readonly string[], field: string): (ns: string, name: string) => boolean {
  const parsed = values.map((v) => parseNsName(v, field));
  return (ns, name) => {
    if (ns === '' && name === '') return false;
    for (const p of parsed) if ((p.namespace === '' || p.namespace === ns) && name.startsWith(p.prefix)) return true;
    return false;
  };
}

// ---------------------------------------------------------------------------------------------
// FQDN wildcard patterns

const FQDN_CHARS = /^[-a-z0-9_.*]*$/;

export function compileFqdnPattern(pattern: string, field: string): RegExp {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (!FQDN_CHARS.test(p)) throw new FilterError(`invalid ${field} pattern "${pattern}": only a-z, 0-9, '-', '_', '.' and '*' are allowed`);
  const body = p.replace(/\./g, '\\.').replace(/\*/g, '[-.0-9a-z]*');
  return new RegExp(`^${body}$`);
}

function fqdnMatcher(values: readonly string[], field: string): (names: readonly string[]) => boolean {
  const res = values.map((v) => compileFqdnPattern(v, field));
  return (names) => {
    for (const n of names) {
      const name = n.toLowerCase().replace(/\.$/, '');
      for (const re of res) if (re.test(name)) return true;
    }
    return false;
  };
}

// ---------------------------------------------------------------------------------------------
// Label selectors (Kubernetes syntax over `source:key=value` labels)

interface Req { key: string; op: 'exists' | '!exists' | 'in' | 'notin'; values: string[] }

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of s) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) { out.push(cur); cur = ''; } else cur += c;
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x !== '');
}

/** `k8s:app` → `k8s.app`; bare `app` → `any.app` (matches any source). */
function selectorKey(raw: string, withSource: boolean): string {
  const k = raw.trim();
  if (!withSource) return k;
  const colon = k.indexOf(':');
  return colon >= 0 ? `${k.slice(0, colon)}.${k.slice(colon + 1)}` : `any.${k}`;
}

const KEY_RE = /^[A-Za-z0-9:._\-/]+$/;

export function parseSelector(text: string, field: string, withSource = true): Req[] {
  const reqs: Req[] = [];
  const parts = splitTopLevel(text);
  if (parts.length === 0) throw new FilterError(`invalid ${field} selector "${text}": empty`);
  for (const part of parts) {
    let m: RegExpMatchArray | null;
    const bad = () => new FilterError(`invalid ${field} selector "${text}": cannot parse "${part}"`);
    if ((m = part.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      if (!KEY_RE.test(m[1]!)) throw bad();
      const values = m[3]!.split(',').map((v) => v.trim()).filter((v) => v !== '');
      reqs.push({ key: selectorKey(m[1]!, withSource), op: m[2] === 'in' ? 'in' : 'notin', values });
    } else if ((m = part.match(/^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      if (!KEY_RE.test(m[1]!)) throw bad();
      reqs.push({ key: selectorKey(m[1]!, withSource), op: m[2] === '!=' ? 'notin' : 'in', values: [m[3]!] });
    } else if ((m = part.match(/^!\s*(\S+)$/))) {
      if (!KEY_RE.test(m[1]!)) throw bad();
      reqs.push({ key: selectorKey(m[1]!, withSource), op: '!exists', values: [] });
    } else if (KEY_RE.test(part)) {
      reqs.push({ key: selectorKey(part, withSource), op: 'exists', values: [] });
    } else throw bad();
  }
  return reqs;
}

/** Flow labels as selector keys: `k8s:app=x` → {`k8s.app`: x, `any.app`: x}. */
function labelMap(labels: readonly string[], withSource: boolean): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of labels) {
    const eq = l.indexOf('=');
    const kv = eq >= 0 ? l.slice(0, eq) : l;
    const value = eq >= 0 ? l.slice(eq + 1) : '';
    if (!withSource) { m.set(kv, value); continue; }
    const colon = kv.indexOf(':');
    const source = colon >= 0 ? kv.slice(0, colon) : 'unspec';
    const key = colon >= 0 ? kv.slice(colon + 1) : kv;
    m.set(`${source}.${key}`, value);
    if (!m.has(`any.${key}`)) m.set(`any.${key}`, value);
  }
  return m;
}

function reqMatches(r: Req, m: Map<string, string>): boolean {
  const v = m.get(r.key);
  switch (r.op) {
    case 'exists': return v !== undefined;
    case '!exists': return v === undefined;
    case 'in': return v !== undefined && r.values.includes(v);
    case 'notin': return v === undefined || !r.values.includes(v);
  }
}

function labelMatcher(values: readonly string[], field: string, withSource = true): (labels: readonly string[]) => boolean {
  const sels = values.map((v) => parseSelector(v, field, withSource));
  return (labels) => {
    const m = labelMap(labels, withSource);
    return sels.some((reqs) => reqs.every((r) => reqMatches(r, m)));
  };
}

// ---------------------------------------------------------------------------------------------
// protocols, ports, HTTP

const PROTOCOLS = new Set(['icmp', 'icmpv4', 'icmpv6', 'tcp', 'udp', 'sctp', 'vrrp', 'igmp', 'dns', 'http', 'kafka']);

function flowProtocolMatches(flow: Flow, p: string): boolean {
  const l4 = flow.l4?.protocol.case;
  const l7 = flow.l7?.record.case;
  switch (p) {
    case 'icmp': return l4 === 'ICMPv4' || l4 === 'ICMPv6';
    case 'icmpv4': return l4 === 'ICMPv4';
    case 'icmpv6': return l4 === 'ICMPv6';
    case 'tcp': return l4 === 'TCP';
    case 'udp': return l4 === 'UDP';
    case 'sctp': return l4 === 'SCTP';
    case 'vrrp': return l4 === 'VRRP';
    case 'igmp': return l4 === 'IGMP';
    case 'dns': return l7 === 'dns';
    case 'http': return l7 === 'http';
    case 'kafka': return l7 === 'kafka';
  }
  return false;
}

function ports(flow: Flow): [number, number] | undefined {
  const p = flow.l4?.protocol;
  if (p && (p.case === 'TCP' || p.case === 'UDP' || p.case === 'SCTP')) return [p.value.sourcePort, p.value.destinationPort];
  return undefined;
}

function parsePorts(values: readonly string[], field: string): Set<number> {
  const s = new Set<number>();
  for (const v of values) {
    if (!/^\d+$/.test(v) || Number(v) > 65535) throw new FilterError(`invalid port in ${field} filter: "${v}"`);
    s.add(Number(v));
  }
  return s;
}

function statusCodeMatcher(values: readonly string[]): (code: number) => boolean {
  const exact = new Set<number>();
  const prefixes: string[] = [];
  for (const v of values) {
    if (/^[1-5][0-9]{2}$/.test(v)) exact.add(Number(v));
    else if (/^[1-5][0-9]?\+$/.test(v)) prefixes.push(v.slice(0, -1));
    else throw new FilterError(`invalid http status code filter "${v}": use a code (404) or a prefix (5+, 40+)`);
  }
  return (code) => code !== 0 && (exact.has(code) || prefixes.some((p) => String(code).startsWith(p)));
}

function regexes(values: readonly string[], field: string): RegExp[] {
  return values.map((v) => {
    try {
      return new RegExp(v);
    } catch (e) {
      throw new FilterError(`invalid regular expression in ${field} filter "${v}": ${(e as Error).message}`);
    }
  });
}

function urlPath(url: string): string | undefined {
  try {
    return new URL(url).pathname;
  } catch {
    return url.startsWith('/') ? url.split('?')[0] : undefined;
  }
}

function nodeNameMatcher(values: readonly string[]): (node: string) => boolean {
  const pats = values.map((v) => {
    if (v === '') throw new FilterError('invalid empty node_name filter');
    const slash = v.indexOf('/');
    const cluster = slash >= 0 ? v.slice(0, slash) : '*';
    const node = slash >= 0 ? v.slice(slash + 1) : v;
    return { cluster: compileFqdnPattern(cluster || '*', 'node_name'), node: compileFqdnPattern(node || '*', 'node_name') };
  });
  return (name) => {
    if (!name) return false;
    const slash = name.indexOf('/');
    const cluster = slash >= 0 ? name.slice(0, slash) : 'default';
    const node = (slash >= 0 ? name.slice(slash + 1) : name).toLowerCase();
    return pats.some((p) => p.cluster.test(cluster.toLowerCase()) && p.node.test(node));
  };
}

// ---------------------------------------------------------------------------------------------

function epOf(flow: Flow, side: 'source' | 'destination'): Endpoint | undefined {
  return side === 'source' ? flow.source : flow.destination;
}

/** Compile one FlowFilter into a predicate (all set fields AND). Throws FilterError. */
export function compileFilter(f: FlowFilter): FlowPredicate {
  const preds: FlowPredicate[] = [];

  if (f.uuid.length) {
    const s = new Set(f.uuid);
    preds.push((fl) => s.has(fl.uuid));
  }
  if (f.sourceIp.length) {
    const m = ipMatcher(f.sourceIp, 'source_ip');
    preds.push((fl) => m(fl.IP?.source ?? ''));
  }
  if (f.sourceIpXlated.length) {
    const m = ipMatcher(f.sourceIpXlated, 'source_ip_xlated');
    preds.push((fl) => m(fl.IP?.sourceXlated ?? ''));
  }
  if (f.destinationIp.length) {
    const m = ipMatcher(f.destinationIp, 'destination_ip');
    preds.push((fl) => m(fl.IP?.destination ?? ''));
  }
  for (const [vals, side, field] of [[f.sourcePod, 'source', 'source_pod'], [f.destinationPod, 'destination', 'destination_pod']] as const) {
    if (!vals.length) continue;
    const m = nsNameMatcher(vals, field);
    preds.push((fl) => {
      const ep = epOf(fl, side);
      return m(ep?.namespace ?? '', ep?.podName ?? '');
    });
  }
  for (const [vals, side, field] of [[f.sourceService, 'source', 'source_service'], [f.destinationService, 'destination', 'destination_service']] as const) {
    if (!vals.length) continue;
    const m = nsNameMatcher(vals, field);
    preds.push((fl) => {
      const s = side === 'source' ? fl.sourceService : fl.destinationService;
      return m(s?.namespace ?? '', s?.name ?? '');
    });
  }
  if (f.sourceFqdn.length) {
    const m = fqdnMatcher(f.sourceFqdn, 'source_fqdn');
    preds.push((fl) => m(fl.sourceNames));
  }
  if (f.destinationFqdn.length) {
    const m = fqdnMatcher(f.destinationFqdn, 'destination_fqdn');
    preds.push((fl) => m(fl.destinationNames));
  }
  for (const [vals, side, field] of [[f.sourceLabel, 'source', 'source_label'], [f.destinationLabel, 'destination', 'destination_label']] as const) {
    if (!vals.length) continue;
    const m = labelMatcher(vals, field);
    preds.push((fl) => m(epOf(fl, side)?.labels ?? []));
  }
  for (const [vals, side] of [[f.sourceWorkload, 'source'], [f.destinationWorkload, 'destination']] as const) {
    if (!vals.length) continue;
    preds.push((fl) => {
      const wls = epOf(fl, side)?.workloads ?? [];
      return vals.some((w) => wls.some((x) => (!w.name || w.name === x.name) && (!w.kind || w.kind === x.kind)));
    });
  }
  for (const [vals, side, field] of [[f.sourceClusterName, 'source', 'source_cluster_name'], [f.destinationClusterName, 'destination', 'destination_cluster_name']] as const) {
    if (!vals.length) continue;
    if (vals.some((v) => v === '')) throw new FilterError(`invalid empty ${field} filter`);
    const s = new Set(vals);
    preds.push((fl) => s.has(epOf(fl, side)?.clusterName ?? ''));
  }
  if (f.trafficDirection.length) {
    const s = new Set<number>(f.trafficDirection);
    preds.push((fl) => s.has(fl.trafficDirection));
  }
  if (f.verdict.length) {
    const s = new Set<number>(f.verdict);
    preds.push((fl) => s.has(fl.verdict));
  }
  if (f.dropReasonDesc.length) {
    const s = new Set<number>(f.dropReasonDesc);
    preds.push((fl) => fl.verdict === Verdict.DROPPED && s.has(fl.dropReasonDesc));
  }
  if (f.interface.length) {
    const ifs = f.interface;
    preds.push((fl) => {
      const i = fl.interface;
      if (!i) return false;
      return ifs.some((x) => (x.index === 0 || x.index === i.index) && (!x.name || x.name === i.name));
    });
  }
  if (f.eventType.length) {
    const ets = f.eventType;
    preds.push((fl) => {
      const t = fl.eventType;
      if (!t) return false;
      return ets.some((e) => (e.type === 0 || e.type === t.type) && (!e.matchSubType || e.subType === t.subType));
    });
  }
  const hasHttp = f.httpStatusCode.length || f.httpMethod.length || f.httpPath.length || f.httpUrl.length || f.httpHeader.length;
  if (hasHttp && f.eventType.length && !f.eventType.some((e) => e.type === L7_EVENT_TYPE)) {
    throw new FilterError('filtering by http fields requires event type l7 (129): the event_type filter excludes every L7 flow');
  }
  if (f.httpStatusCode.length) {
    const m = statusCodeMatcher(f.httpStatusCode);
    preds.push((fl) => {
      const h = fl.l7?.record.case === 'http' ? fl.l7.record.value : undefined;
      return h !== undefined && m(h.code);
    });
  }
  if (f.httpMethod.length) {
    const s = new Set(f.httpMethod.map((m) => m.toUpperCase()));
    preds.push((fl) => fl.l7?.record.case === 'http' && s.has(fl.l7.record.value.method.toUpperCase()));
  }
  if (f.httpPath.length) {
    const res = regexes(f.httpPath, 'http_path');
    preds.push((fl) => {
      if (fl.l7?.record.case !== 'http') return false;
      const p = urlPath(fl.l7.record.value.url);
      return p !== undefined && res.some((r) => r.test(p));
    });
  }
  if (f.httpUrl.length) {
    const res = regexes(f.httpUrl, 'http_url');
    preds.push((fl) => fl.l7?.record.case === 'http' && res.some((r) => r.test((fl.l7!.record.value as { url: string }).url)));
  }
  if (f.httpHeader.length) {
    const hs = f.httpHeader;
    preds.push((fl) => fl.l7?.record.case === 'http' && fl.l7.record.value.headers.some((h) => hs.some((x) => x.key === h.key && x.value === h.value)));
  }
  if (f.protocol.length) {
    const ps = f.protocol.map((p) => p.toLowerCase());
    for (const p of ps) if (!PROTOCOLS.has(p)) throw new FilterError(`unknown protocol in filter: "${p}"`);
    preds.push((fl) => ps.some((p) => flowProtocolMatches(fl, p)));
  }
  if (f.sourcePort.length) {
    const s = parsePorts(f.sourcePort, 'source_port');
    preds.push((fl) => { const p = ports(fl); return p !== undefined && s.has(p[0]); });
  }
  if (f.destinationPort.length) {
    const s = parsePorts(f.destinationPort, 'destination_port');
    preds.push((fl) => { const p = ports(fl); return p !== undefined && s.has(p[1]); });
  }
  if (f.reply.length) {
    const vals = f.reply;
    preds.push((fl) => {
      if (fl.isReply === undefined && fl.verdict !== Verdict.DROPPED) return false;
      const r = fl.isReply ?? false;
      return vals.includes(r);
    });
  }
  if (f.dnsQuery.length) {
    const res = regexes(f.dnsQuery, 'dns_query');
    preds.push((fl) => fl.l7?.record.case === 'dns' && res.some((r) => r.test((fl.l7!.record.value as { query: string }).query)));
  }
  if (f.sourceIdentity.length) {
    const s = new Set(f.sourceIdentity);
    preds.push((fl) => s.has(fl.source?.identity ?? 0));
  }
  if (f.destinationIdentity.length) {
    const s = new Set(f.destinationIdentity);
    preds.push((fl) => s.has(fl.destination?.identity ?? 0));
  }
  if (f.tcpFlags.length) {
    const want = f.tcpFlags;
    const keys = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR', 'NS'] as const;
    preds.push((fl) => {
      const p = fl.l4?.protocol;
      if (p?.case !== 'TCP' || !p.value.flags) return false;
      const have = p.value.flags;
      return want.some((w) => keys.every((k) => !w[k] || have[k]));
    });
  }
  if (f.nodeName.length) {
    const m = nodeNameMatcher(f.nodeName);
    preds.push((fl) => m(fl.nodeName));
  }
  if (f.nodeLabels.length) {
    const m = labelMatcher(f.nodeLabels, 'node_labels', false);
    preds.push((fl) => m(fl.nodeLabels));
  }
  if (f.ipVersion.length) {
    const s = new Set<number>(f.ipVersion);
    preds.push((fl) => s.has(fl.IP?.ipVersion ?? 0));
  }
  if (f.traceId.length) {
    const s = new Set(f.traceId);
    preds.push((fl) => s.has(fl.traceContext?.parent?.traceId ?? ''));
  }
  if (f.ipTraceId.length) {
    const s = new Set(f.ipTraceId);
    preds.push((fl) => s.has(fl.ipTraceId?.traceId ?? 0n));
  }
  if (f.encrypted.length) {
    const vals = f.encrypted;
    preds.push((fl) => vals.includes(fl.IP?.encrypted ?? false));
  }
  if (f.experimental?.celExpression.length) {
    throw new FilterError('CEL expression filters (experimental.cel_expression) are not supported by membrane');
  }

  if (preds.length === 0) return () => true;
  if (preds.length === 1) return preds[0]!;
  return (fl) => {
    for (const p of preds) if (!p(fl)) return false;
    return true;
  };
}

export function compileFilters(list: readonly FlowFilter[]): FlowPredicate[] {
  return list.map(compileFilter);
}

/** True if any predicate matches, or the list is empty (whitelist). */
export function matchOne(preds: readonly FlowPredicate[], flow: Flow): boolean {
  if (preds.length === 0) return true;
  for (const p of preds) if (p(flow)) return true;
  return false;
}

/** True if no predicate matches (blacklist). */
export function matchNone(preds: readonly FlowPredicate[], flow: Flow): boolean {
  for (const p of preds) if (p(flow)) return false;
  return true;
}

/** whitelist − blacklist as one predicate (filters.Apply). Throws FilterError on a bad filter. */
export function compileRequestFilter(whitelist: readonly FlowFilter[], blacklist: readonly FlowFilter[]): FlowPredicate {
  const wl = compileFilters(whitelist);
  const bl = compileFilters(blacklist);
  if (wl.length === 0 && bl.length === 0) return () => true;
  return (flow) => matchOne(wl, flow) && matchNone(bl, flow);
}
