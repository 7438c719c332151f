/**
 * Outside ("world") hosts: addresses in 198.51.100.0/24 and 203.0.113.0/24 that live in the
 * world namespace behind node1. Tests and the lab DNS use this table; later tasks add hosts
 * (api.openai.com with TLS from the lab CA, ...).
 */
export interface WorldHost {
  /** DNS name the lab DNS will answer for it. */
  name: string;
  ip: string;
  /** TCP ports serving the HTTP echo. */
  tcp: number[];
  /** UDP ports answering every datagram (echo). */
  udp: number[];
}

export const worldHosts: readonly WorldHost[] = [
  { name: 'echo-a.world.lab', ip: '198.51.100.10', tcp: [80, 8080], udp: [7] },
  { name: 'echo-b.world.lab', ip: '203.0.113.10', tcp: [80, 8080], udp: [7] },
];

export function worldHost(name: string): WorldHost | undefined {
  return worldHosts.find((h) => h.name === name || h.ip === name);
}
