/**
 * Where the L7 proxies listen and which sockmap slot holds each listener: a contract between the
 * datapath (policy entries carry the port and slot; bpf/lib/maps.h has the same slot layout) and
 * the proxies (they listen there and register their sockets in that slot).
 */
export type ProxyParser = 'http' | 'dns' | 'kafka' | 'generic' | 'tls';
type Direction = 'ingress' | 'egress';

const PARSERS: readonly ProxyParser[] = ['http', 'dns', 'kafka', 'generic', 'tls'];

/** Proxy port per L7 parser (egress listener; the proxies listen here in the node namespace). */
export const DEFAULT_PROXY_PORTS: Readonly<Record<ProxyParser, number>> = { http: 15001, dns: 15053, kafka: 15092, generic: 15090, tls: 15443 };

/** The listening port of a TCP proxy: the ingress listener sits one above the egress one. */
export function proxyListenPort(parser: ProxyParser, direction: Direction): number {
  return DEFAULT_PROXY_PORTS[parser] + (direction === 'ingress' ? 1 : 0);
}

/** UDP listeners sit this many slots above the TCP ones (bpf/lib/maps.h PROXY_UDP_SLOT_OFFSET). */
export const PROXY_UDP_SLOT_OFFSET = 32;

/** IPv6 listeners sit this many slots above the IPv4 ones (bpf/lib/maps.h PROXY_V6_SLOT_OFFSET). */
export const PROXY_V6_SLOT_OFFSET = 16;

/** An address family as the proxies' listeners are made per family. */
export type ProxyFamily = 4 | 6;

/**
 * Sockmap slot of the proxy listener for (parser, direction, transport, family): 2 × parser
 * index + (ingress ? 1 : 0), plus PROXY_UDP_SLOT_OFFSET for a UDP listener and
 * PROXY_V6_SLOT_OFFSET for an IPv6 one. Policy entries carry the IPv4 TCP slot; the datapath adds
 * the offsets from the packet and never assigns a socket of the wrong protocol or family.
 */
export function proxySlot(parser: ProxyParser, direction: Direction, transport: 'TCP' | 'UDP' = 'TCP', family: ProxyFamily = 4): number {
  return PARSERS.indexOf(parser) * 2 + (direction === 'ingress' ? 1 : 0) + (transport === 'UDP' ? PROXY_UDP_SLOT_OFFSET : 0) +
    (family === 6 ? PROXY_V6_SLOT_OFFSET : 0);
}

/** The loopback address a proxy listener of a family binds (the datapath assigns connections to it whatever their address). */
export function proxyListenHost(family: ProxyFamily): string {
  return family === 6 ? '::1' : '127.0.0.1';
}

export function defaultProxyRedirect(l7: { parser: ProxyParser }, direction: Direction): { port: number; slot: number } {
  return { port: DEFAULT_PROXY_PORTS[l7.parser], slot: proxySlot(l7.parser, direction) };
}
