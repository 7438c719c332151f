/**
 * ExternalHost resources → addresses in the world namespace (on its mbr_hosts device) and, for
 * addresses outside the world prefixes, a route in node1 toward the world. Idempotent; run by
 * the node1 agent whenever resources change. The world's echo processes listen on all
 * addresses, so a new address serves HTTP (80, 8080) and HTTPS (443) at once.
 */
import type { ExternalHost } from '../api/types.ts';
import { ipBatch } from '../sys/net.ts';
import { WORLD_GATEWAY, WORLD_LINK, nodeNetnsName, worldNetnsName } from './names.ts';

const inWorld = (ip: string) => ip.startsWith('198.51.100.') || ip.startsWith('203.0.113.');

export async function syncExternalHosts(lab: string, hosts: readonly ExternalHost[], done: Set<string>): Promise<void> {
  const want = [...new Set(hosts.flatMap((h) => h.spec.addresses))].filter((a) => !a.includes(':') && !done.has(a));
  if (want.length === 0) return;
  await ipBatch(want.map((a) => `addr replace ${a}/32 dev mbr_hosts`), worldNetnsName(lab));
  const routes = want.filter((a) => !inWorld(a)).map((a) => `route replace ${a}/32 via ${WORLD_GATEWAY} dev ${WORLD_LINK} onlink`);
  if (routes.length) await ipBatch(routes, nodeNetnsName('node1', lab));
  for (const a of want) done.add(a);
}
