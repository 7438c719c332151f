/**
 * Outside ("world") hosts: addresses in 198.51.100.0/24 and 203.0.113.0/24 that live in the
 * world namespace behind node1. The lab DNS (src/lab/dns) answers their names; the world's echo
 * serves HTTP on every listed TCP port and, on `tls` ports, HTTPS with a certificate from the
 * lab CA (src/lab/ca.ts). `ExternalHost` resources add more at run time (addresses are added to
 * the world namespace by the agent on node1, names to the lab DNS).
 */
export interface WorldHost {
  /** DNS name the lab DNS will answer for it. */
  name: string;
  ip: string;
  /** TCP ports serving the HTTP echo. */
  tcp: number[];
  /** UDP ports answering every datagram (echo). */
  udp: number[];
  /** TCP ports serving HTTPS (lab CA) instead of plain HTTP. */
  tls?: number[];
  /** DNS TTL of the name's records, seconds (default 30). */
  ttl?: number;
  /** Extra names answered with a CNAME to `name`. */
  aliases?: string[];
}

export const DEFAULT_WORLD_TTL = 30;

export const worldHosts: readonly WorldHost[] = [
  { name: 'echo-a.world.lab', ip: '198.51.100.10', tcp: [80, 8080], udp: [7] },
  { name: 'echo-b.world.lab', ip: '203.0.113.10', tcp: [80, 8080], udp: [7] },
  { name: 'api.openai.com', ip: '198.51.100.20', tcp: [80, 443], udp: [7], tls: [443] },
  { name: 'api.anthropic.com', ip: '198.51.100.21', tcp: [80, 443], udp: [7], tls: [443] },
  { name: 'example.com', ip: '203.0.113.20', tcp: [80, 443], udp: [7], tls: [443] },
  { name: 'www.example.com', ip: '203.0.113.21', tcp: [80, 443], udp: [7], tls: [443], aliases: ['cdn.example.com'] },
  { name: 'a.example.com', ip: '203.0.113.22', tcp: [80, 443], udp: [7], tls: [443] },
  { name: 'a.b.example.com', ip: '203.0.113.23', tcp: [80, 443], udp: [7], tls: [443] },
];

export function worldHost(name: string): WorldHost | undefined {
  return worldHosts.find((h) => h.name === name || h.ip === name);
}

/** Every TLS port of the built-in hosts (the world's HTTPS echo listens on these). */
export function worldTlsPorts(): number[] {
  return [...new Set(worldHosts.flatMap((h) => h.tls ?? []))].sort((a, b) => a - b);
}
