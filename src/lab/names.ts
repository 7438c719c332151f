/**
 * The lab's names and addresses (a contract: the agent, the CLI, tests and `membrane down` all
 * derive the same names from the same inputs).
 *
 *   node k      netns <lab>-node<k>, router 10.244.<k>.1 and underlay 192.0.2.<k> on mbr_host
 *   pod         netns <lab>-p-<8 hex of sha256(node/ns/pod)>, eth0 10.244.<k>.<n>/32, MAC from the IP
 *   host veth   lxc<11 hex of sha256(ns/pod)> in the node netns
 *   world       netns <lab>-world (outside hosts), underlay bridge netns <lab>-underlay
 */
import { createHash } from 'node:crypto';

const hex = (s: string) => createHash('sha256').update(s).digest('hex');

export const POD_CIDR_PREFIX = '10.244';
// The Service range and the kube-dns ClusterIP are the agent's (its Service controller allocates them).
export { SERVICE_CIDR, SERVICE_CIDR6, KUBE_DNS_IP as CLUSTER_DNS_IP } from '../agent/controllers/services.ts';
export const UNDERLAY_CIDR = '192.0.2.0/24';
export const WORLD_CIDRS = ['198.51.100.0/24', '203.0.113.0/24'] as const;
/** The world's router address (on its mbr_hosts device): nodes route the world prefixes to it. */
export const WORLD_GATEWAY = '198.51.100.1';

/** Holds the node's router and underlay addresses (a veth pair inside the node: mbr_host ↔ mbr_net). */
export const HOST_DUMMY = 'mbr_host';
export const HOST_PEER = 'mbr_net';
export const WORLD_LINK = 'mbr_world';
export const UNDERLAY_LINK = 'mbr_ul';
/** Routing mode tunnel: the node's VXLAN device in external (collect-metadata) mode, Cilium's name and port. */
export const VXLAN_LINK = 'cilium_vxlan';
export const VXLAN_PORT = 8472;
/** The underlay carries VXLAN (50 bytes of headers around a pod's 1500-byte packets): jumbo frames, as cloud networks have. */
export const UNDERLAY_MTU = 9000;
/**
 * Node k's link-layer address on the underlay and (enable-ipv6) its link-local IPv6 address there:
 * fixed, so every node holds permanent neighbour entries for the others (a fixed fabric). The
 * datapath takes a remote pod's packet from the underlay only from its node's MAC (lib/overlay.h).
 */
export function underlayMac(nodeIndex: number): string {
  return `02:00:c0:00:02:${nodeIndex.toString(16).padStart(2, '0')}`;
}
export function underlayIp6(nodeIndex: number): string {
  return `fe80::c000:2${nodeIndex.toString(16).padStart(2, '0')}`;
}

/** In the agent's command line (found by it after its pid file is gone) */
export const AGENT_MARKER = 'src/lab/node-agent.ts';
/** In the agent supervisor's command line */
export const SUPERVISOR_MARKER = 'src/lab/supervisor.ts';
/** The lab's L7 proxy process (src/lab/node-proxy.ts), beside the agent in the node namespace. */
export const PROXY_MARKER = 'src/lab/node-proxy.ts';
/**
 * V8 flags of the agent: young generation at most 3 x 16 MiB. V8's default grew it to 128 MiB
 * committed in an agent holding 300,000 remote endpoints (bench/scale), a third of its RSS for
 * objects that die young.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
/**
 * V8 flags of the L7 proxy process, for the same reason: under new TLS connections the TLS
 * interceptor's RSS grew 155 -> 222 MB while its heap after a full GC stayed at 26.7 MB (flat over
 * 33,000 connections): the new space growing to V8's default 2 x 64 MiB, nothing retained.
 * Capped at 16 MiB it stays at 32 MiB (RSS ~157 MB, flat). It had been 4 MiB while the benches ran
 * the flows (and their ring, copied by each scavenge) in the proxy's process; in its own process
 * the proxy keeps no flows (the agent makes them from the feed), a scavenge finds little alive,
 * and a young generation 4 x larger means 4 x fewer of them on the request path: proxy CPU per
 * request -2.4 % keep-alive, -3.7 % close, one-connection p99 0.46 against 0.91 ms
 * (bench/http/ab.ts --a-flags, 3 rounds, load 2.5, 2026-12-06).
 * --single-threaded-gc: the process is pinned to one CPU in the benches and shares the node's
 * CPUs with the agent and the pods in production; V8's parallel scavenge and concurrent marking
 * helpers then only take turns with the main thread on that CPU and wake it through futexes. Main
 * thread alone, paired 1 s turns of bench/http/ab.ts (15 pairs each way round, 2026-12-06): proxy
 * CPU per request -1.7 % / -2.8 % keep-alive (lower in 22 of 30 pairs), -1.8 % / 0 % close,
 * one connection unchanged; scavenges per request unchanged. A larger young generation (32,
 * 64 MiB) halves the scavenges but not the GC time per request (a close request's ~3-5 µs of
 * scavenge is per dead object, not per scavenge), so 16 MiB stays.
 * --min-semi-space-size=16: the young generation fixed at that size. Under steady keep-alive load
 * V8 shrank it after some full GCs and grew it back (V8 heap total 52.8 -> 20.8 -> 32.8 -> 48.8 MB,
 * RSS 88-114 MB in the 600 s soak of 2026-12-07 08:46): the RSS fell and came back with no change
 * of load. Fixed, it stays where a busy proxy has it anyway (the cost: ~32 MiB committed in an
 * idle proxy too).
 */
export const PROXY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16', '--min-semi-space-size=16', '--single-threaded-gc'];

export function nodeName(index: number): string {
  return `node${index}`;
}
export function nodeIndexOf(node: string): number {
  const m = /^node(\d+)$/.exec(node);
  return m ? Number(m[1]) : NaN;
}
export function nodeNetnsName(node: string, lab: string): string {
  return `${lab}-${node}`;
}
export function worldNetnsName(lab: string): string {
  return `${lab}-world`;
}
export function underlayNetnsName(lab: string): string {
  return `${lab}-underlay`;
}
export function podNetnsName(node: string, ns: string, pod: string, lab: string): string {
  return `${lab}-p-${hex(`${node}/${ns}/${pod}`).slice(0, 8)}`;
}
/** Host-side veth name: `lxc` + 11 hex chars (15 chars, IFNAMSIZ-1). */
export function hostIfname(ns: string, pod: string): string {
  return `lxc${hex(`${ns}/${pod}`).slice(0, 11)}`;
}
export function routerIp(nodeIndex: number): string {
  return `${POD_CIDR_PREFIX}.${nodeIndex}.1`;
}
export function nodeIp(nodeIndex: number): string {
  return `192.0.2.${nodeIndex}`;
}
export function podCidr(nodeIndex: number): string {
  return `${POD_CIDR_PREFIX}.${nodeIndex}.0/24`;
}
/**
 * enable-ipv6: node k's IPv6 pod CIDR, fd00:10:244:<k>::/64 (ULA: never routed off the machine),
 * and a pod's IPv6 address, derived from its IPv4 one (10.244.k.x -> fd00:10:244:<k>::<x in
 * hex>), so the IPv4 IPAM allocates both.
 */
export function podCidr6(nodeIndex: number): string {
  return `fd00:10:244:${nodeIndex.toString(16)}::/64`;
}
export function podIp6(ipv4: string): string {
  const o = ipv4.split('.').map(Number);
  return `fd00:10:244:${o[2]!.toString(16)}::${o[3]!.toString(16)}`;
}
/** The pods' IPv6 gateway: the same link-local address on every host-side veth (a router's). */
export const ROUTER_IP6 = 'fe80::1';
/** enable-ipv6: every node's IPv6 pod CIDR together (cluster addresses, never world). */
export const POD_CIDR6_CLUSTER = 'fd00:10:244::/48';
/** enable-ipv6: node k's own IPv6 address (reserved:host), the first of its pod CIDR, as routerIp is for IPv4. */
export function nodeIp6(nodeIndex: number): string {
  return `fd00:10:244:${nodeIndex.toString(16)}::1`;
}
/**
 * enable-ipv6: the world's IPv6 prefix (documentation range) and a world host's IPv6 address, its
 * IPv4 one in the low 32 bits (198.51.100.10 -> 2001:db8::c633:640a), so one list names both. The
 * world's link to node1 is link-local: node1's end fe80::1 (as on the pods' veths), the world's fe80::2.
 */
export const WORLD_PREFIX6 = '2001:db8::/96';
export const WORLD_ROUTER6 = 'fe80::2';
export function worldIp6(ipv4: string): string {
  const o = ipv4.split('.').map(Number);
  const h = (a: number, b: number) => ((a << 8) | b).toString(16);
  return `2001:db8::${h(o[0]!, o[1]!)}:${h(o[2]!, o[3]!)}`;
}
/** Locally administered unicast MAC from an IPv4 address (the CNI bridge plugin's 0a:58 scheme). */
export function macFromIp(ip: string): string {
  return ['0a', '58', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
/** True for every network namespace name this lab may have made (what `membrane down` removes). */
export function isLabNetns(name: string, lab: string): boolean {
  return new RegExp(`^${esc(lab)}-(node\\d+|world|underlay|p-[0-9a-f]{8})$`).test(name);
}
export function isLabNodeNetns(name: string, lab: string): boolean {
  return new RegExp(`^${esc(lab)}-node\\d+$`).test(name);
}
/** Names under the BPF filesystem root (paths.pinRoot) that belong to this lab. */
export function isLabPinDir(name: string, lab: string): boolean {
  return new RegExp(`^${esc(lab)}-node\\d+$`).test(name);
}
