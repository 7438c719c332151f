/**
 * toPorts and icmps → port specs: protocols (ANY is TCP+UDP+SCTP), ports and ranges (as
 * prefixes the datapath matches), named ports, ICMP types (spec §2.10, §3).
 */
import type { ICMPRule, PortProtocol } from '../api/types.ts';
import { show } from '../labels/selector.ts';
import type { PortSpec } from './rules.ts';
import { ANY_PROTOCOLS, PROTO_BY_NAME, isNamedPort, parseICMPType, rangeToPrefixes } from './ports.ts';
import { Proto } from './types.ts';
import { list, type Ctx, type Path } from './translate-context.ts';

function parseProtocol(ctx: Ctx, pp: PortProtocol, path: Path): { protos: number[]; extended: boolean } | undefined {
  const raw = show(pp.protocol ?? '').toUpperCase();
  if (raw === '' || raw === 'ANY') return { protos: [...ANY_PROTOCOLS], extended: false };
  if (raw === 'TCP' || raw === 'UDP' || raw === 'SCTP') return { protos: [PROTO_BY_NAME[raw]!], extended: false };
  if (raw === 'VRRP' || raw === 'IGMP') {
    if (!(ctx.opts.enableExtendedIPProtocols ?? false)) {
      ctx.issue('POLICY_PROTOCOL_UNSUPPORTED', [...path, 'protocol'], `protocol ${raw} requires --enable-extended-ip-protocols`, 'use TCP, UDP, SCTP or ANY');
      return undefined;
    }
    return { protos: [PROTO_BY_NAME[raw]!], extended: true };
  }
  if (raw === 'ICMP' || raw === 'ICMPV6') {
    ctx.issue('POLICY_PROTOCOL_INVALID', [...path, 'protocol'], `protocol ${raw} is not allowed in toPorts`, 'allow ICMP with an `icmps` block');
    return undefined;
  }
  ctx.issue('POLICY_PROTOCOL_INVALID', [...path, 'protocol'], `invalid protocol "${show(pp.protocol)}"`, 'protocols: TCP, UDP, SCTP, ANY');
  return undefined;
}

export interface ExpandedPorts {
  /** some port entry had a problem (reported): translate nothing, but the L7 part is still checked */
  invalid: boolean;
  specs: PortSpec[];
  hasZero: boolean;
  hasRange: boolean;
  protos: Set<string>;
}

export function expandPorts(ctx: Ctx, ports: PortProtocol[], path: Path): ExpandedPorts {
  const out: ExpandedPorts = { invalid: false, specs: [], hasZero: false, hasRange: false, protos: new Set() };
  if (ports.length > 40) ctx.issue('POLICY_TOO_MANY_PORTS', path, `too many ports, the max is 40`);
  let ok = true;
  ports.forEach((pp, k) => {
    const pPath = [...path, k];
    if (!pp || typeof pp !== 'object') {
      ctx.issue('POLICY_PORT_INVALID', pPath, 'port entry must be an object');
      ok = false;
      return;
    }
    const proto = parseProtocol(ctx, pp, pPath);
    if (!proto) { ok = false; return; }
    out.protos.add(show(pp.protocol ?? 'ANY').toUpperCase() || 'ANY');
    const portText = pp.port === undefined || pp.port === null ? '' : show(pp.port).trim();
    if (proto.extended) {
      if (portText !== '' && portText !== '0') {
        ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], `port must be empty or 0 for protocol ${show(pp.protocol)}`);
        ok = false;
        return;
      }
      for (const p of proto.protos) out.specs.push({ proto: p, port: 0, plen: 0 });
      return;
    }
    if (portText === '') {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], 'port must be specified');
      ok = false;
      return;
    }
    if (show(pp.protocol ?? '').toUpperCase() === 'SCTP' && portText !== '0') {
      ctx.issue('POLICY_PROTOCOL_UNSUPPORTED', [...pPath, 'port'], 'SCTP port rules are not enforced: the datapath does not read SCTP ports', 'allow or deny SCTP with `port: "0"` (every port) or by peer alone');
      ok = false;
      return;
    }
    if (isNamedPort(portText)) {
      for (const p of proto.protos) out.specs.push({ proto: p, name: portText.toLowerCase() });
      return;
    }
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'port'], `unable to parse port: "${portText}"`, 'a port is a number 0-65535 or an IANA service name (a named container port)');
      ok = false;
      return;
    }
    const port = Number(portText);
    const end = pp.endPort;
    if (end !== undefined && end !== null && (!Number.isInteger(end) || end < 0 || end > 65535)) {
      ctx.issue('POLICY_PORT_INVALID', [...pPath, 'endPort'], `endPort must be an integer 0-65535`);
      ok = false;
      return;
    }
    if (port === 0) {
      out.hasZero = true;
      for (const p of proto.protos) out.specs.push({ proto: p, port: 0, plen: 0 });
      return;
    }
    const hi = end !== undefined && end !== null && end > port ? end : port;
    if (hi > port) out.hasRange = true;
    for (const blk of rangeToPrefixes(port, hi)) for (const p of proto.protos) out.specs.push({ proto: p, port: blk.port, plen: blk.plen });
  });
  out.invalid = !ok;
  return out;
}

export function icmpSpecs(ctx: Ctx, icmps: ICMPRule[], path: Path): PortSpec[] | undefined {
  if (!(ctx.opts.enableICMPRules ?? true)) {
    ctx.issue('POLICY_ICMP_DISABLED', path, 'ICMP rules can only be applied when the "enable-icmp-rules" flag is set');
    return undefined;
  }
  const out: PortSpec[] = [];
  let ok = true;
  icmps.forEach((rule, i) => {
    const fields = list(rule?.fields);
    if (fields.length > 40) { ctx.issue('POLICY_ICMP_INVALID', [...path, i, 'fields'], 'too many types, the max is 40'); ok = false; }
    fields.forEach((f, j) => {
      const fp = [...path, i, 'fields', j];
      const family = f?.family ?? 'IPv4';
      if (family !== 'IPv4' && family !== 'IPv6') { ctx.issue('POLICY_ICMP_INVALID', [...fp, 'family'], `wrong family: ${show(family)}`); ok = false; return; }
      const t = f?.type === undefined ? undefined : parseICMPType(family, f.type);
      if (t === undefined) {
        ctx.issue('POLICY_ICMP_INVALID', [...fp, 'type'], `invalid ICMP type "${show(f?.type)}" for family ${family}`, 'a number 0-255 or a name such as EchoRequest');
        ok = false;
        return;
      }
      out.push({ proto: family === 'IPv6' ? Proto.ICMPV6 : Proto.ICMP, port: t, plen: 16 });
    });
  });
  return ok ? out : undefined;
}
