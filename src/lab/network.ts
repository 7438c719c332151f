/**
 * The lab's networks: node namespaces (router + underlay address on mbr_host, forwarding on),
 * the underlay bridge between nodes, the world namespace behind node1, and pod namespaces
 * joined to their node by veth pairs (the PodNetworks port). Everything is idempotent: a
 * re-run, or a restarted agent, finds what exists and completes what is missing.
 *
 * Nothing here touches the root namespace: every link is created with `ip -n <netns>`.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Pod } from '../api/types.ts';
import type { LabPaths } from '../common/paths.ts';
import type { Logger } from '../common/logger.ts';
import type { RoutingMode } from '../common/config.ts';
import type { PodNetworkInfo, PodNetworks } from '../agent/pod-network.ts';
import { MembraneError } from '../common/errors.ts';
import {
  addrShow, ip, ipBatch, linkDelete, linkShow, netnsAdd, netnsDelete, netnsExists, netnsPids, sysctlIn,
} from '../sys/net.ts';
import { killPids } from '../sys/proc.ts';
import { createPodIpam } from './ipam.ts';
import {
  CLUSTER_DNS_IP, HOST_DUMMY, ROUTER_IP6, podCidr6, underlayIp6, underlayMac, POD_CIDR6_CLUSTER, WORLD_PREFIX6, WORLD_ROUTER6, nodeIp6, podIp6, worldIp6, HOST_PEER, UNDERLAY_LINK, UNDERLAY_MTU, VXLAN_LINK, VXLAN_PORT, WORLD_CIDRS, WORLD_GATEWAY, WORLD_LINK, hostIfname, macFromIp,
  nodeIp, nodeName, nodeNetnsName, podCidr, podNetnsName, routerIp, underlayNetnsName, worldNetnsName,
} from './names.ts';
import { worldHosts } from './world.ts';
import { dnsServerIpFile } from './dns-workload.ts';

const BASE_SYSCTL = {
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
  'net.ipv6.conf.all.disable_ipv6': 1,
  'net.ipv6.conf.default.disable_ipv6': 1,
};

export const ETC_NETNS = '/etc/netns';

/** enable-ipv6: IPv6 on in a pod's namespace (only there), without DAD delays. */
const V6_ON = {
  'net.ipv6.conf.all.disable_ipv6': 0, 'net.ipv6.conf.default.disable_ipv6': 0,
  'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0,
};

/**
 * A device that only holds local addresses. Kernels without the dummy driver are common in
 * containers and VMs, so this is a veth pair with both ends in the namespace (Cilium's
 * cilium_host/cilium_net pair): always carrier-up, no traffic of its own.
 */
async function ensureHostDevice(netns: string, name: string, peer: string, addrs: string[]): Promise<void> {
  const lines: string[] = [];
  if (!(await linkShow(name, netns))) {
    await linkDelete(peer, netns);
    lines.push(`link add ${name} type veth peer name ${peer}`);
  }
  lines.push(`link set ${peer} up`, `link set ${name} up`, ...addrs.map((a) => `addr replace ${a} dev ${name}`));
  await ipBatch(lines, netns);
}

/**
 * Node k's namespace: lo up, forwarding, mbr_host (peer mbr_net) with 10.244.k.1/32 and
 * 192.0.2.k/32; with enable-ipv6 also fd00:10:244:k::1/128 (IPv6 on for mbr_host only).
 */
export async function ensureNodeNetwork(lab: string, k: number, ipv6 = false): Promise<void> {
  const ns = nodeNetnsName(nodeName(k), lab);
  await netnsAdd(ns);
  await sysctlIn(ns, { ...BASE_SYSCTL, 'net.ipv4.ip_forward': 1 });
  await ipBatch(['link set lo up'], ns);
  await ensureHostDevice(ns, HOST_DUMMY, HOST_PEER, [`${routerIp(k)}/32`, `${nodeIp(k)}/32`]);
  if (ipv6) {
    // lo too: the L7 proxies' IPv6 listeners bind ::1 and the proxy routing's `local ::/0` is on lo
    await sysctlIn(ns, { 'net.ipv6.conf.all.forwarding': 1, [`net.ipv6.conf.${HOST_DUMMY}.disable_ipv6`]: 0, [`net.ipv6.conf.${HOST_DUMMY}.accept_dad`]: 0, 'net.ipv6.conf.lo.disable_ipv6': 0 });
    await ipBatch([`addr replace ${nodeIp6(k)}/128 dev ${HOST_DUMMY} nodad`], ns);
  }
}

/**
 * Routing mode tunnel: node k's VXLAN device, external (collect-metadata) mode on UDP 8472, no
 * ARP (the datapath sets each packet's tunnel key: bpf/lib/overlay.h). Native: none.
 */
async function ensureOverlay(ns: string, mode: RoutingMode): Promise<void> {
  const have = await linkShow(VXLAN_LINK, ns);
  if (mode !== 'tunnel') {
    if (have) await linkDelete(VXLAN_LINK, ns);
    return;
  }
  const lines: string[] = [];
  if (!have) lines.push(`link add ${VXLAN_LINK} type vxlan external dstport ${VXLAN_PORT} nolearning`);
  lines.push(`link set ${VXLAN_LINK} mtu 1500 arp off up`);
  await ipBatch(lines, ns);
}

/**
 * enable-ipv6 on a node's link to the other nodes (mbr_ul, cilium_vxlan): IPv6 forwarding through
 * it, no address generated (addr_gen_mode none) and no router solicitation: the underlay's only
 * IPv6 address is the fixed link-local one (underlayIp6), the next hop of native routes and of the
 * world's IPv6 prefix, with permanent neighbour entries. VXLAN carries inner IPv6 in outer IPv4
 * (the tunnel device has no ARP: no neighbour discovery either).
 */
async function enableIPv6On(ns: string, dev: string): Promise<void> {
  await sysctlIn(ns, {
    [`net.ipv6.conf.${dev}.addr_gen_mode`]: 1, [`net.ipv6.conf.${dev}.router_solicitations`]: 0, [`net.ipv6.conf.${dev}.accept_ra`]: 0,
    [`net.ipv6.conf.${dev}.accept_dad`]: 0, [`net.ipv6.conf.${dev}.disable_ipv6`]: 0,
  });
}

/**
 * The underlay: a bridge in <lab>-underlay with one veth per node (node side mbr_ul, jumbo frames).
 * Node k reaches node j's address on mbr_ul (from its own underlay address), and node j's pod
 * CIDR through the tunnel (routing mode tunnel: cilium_vxlan) or via 192.0.2.j (native); the
 * world prefixes via node1. With enable-ipv6 node j's IPv6 pod CIDR the same way (native: an IPv6
 * route via node j's IPv4 address), and the world's IPv6 prefix via node1.
 */
export async function ensureUnderlay(lab: string, nodes: number, mode: RoutingMode = 'tunnel', ipv6 = false): Promise<void> {
  const ul = underlayNetnsName(lab);
  await netnsAdd(ul);
  await sysctlIn(ul, BASE_SYSCTL);
  const lines = ['link set lo up'];
  if (!(await linkShow('br0', ul))) lines.push('link add br0 type bridge');
  lines.push('link set br0 up');
  await ipBatch(lines, ul);
  for (let k = 1; k <= nodes; k++) {
    const ns = nodeNetnsName(nodeName(k), lab);
    const port = `n${k}`;
    if (!(await linkShow(UNDERLAY_LINK, ns))) {
      await linkDelete(port, ul);
      await ip(['link', 'add', port, 'type', 'veth', 'peer', 'name', UNDERLAY_LINK, 'netns', ns], ul);
    }
    await ipBatch([`link set ${port} mtu ${UNDERLAY_MTU}`, `link set ${port} master br0`, `link set ${port} up`], ul);
    await ensureOverlay(ns, mode);
    if (ipv6) {
      await enableIPv6On(ns, UNDERLAY_LINK);
      if (mode === 'tunnel') await enableIPv6On(ns, VXLAN_LINK);
    }
    const routes = [`link set ${UNDERLAY_LINK} address ${underlayMac(k)}`, `link set ${UNDERLAY_LINK} mtu ${UNDERLAY_MTU}`, `link set ${UNDERLAY_LINK} up`];
    if (ipv6) routes.push(`addr replace ${underlayIp6(k)}/64 dev ${UNDERLAY_LINK} nodad`);
    for (let j = 1; j <= nodes; j++) {
      if (j === k) continue;
      routes.push(`neigh replace ${nodeIp(j)} lladdr ${underlayMac(j)} dev ${UNDERLAY_LINK} nud permanent`);
      routes.push(`route replace ${nodeIp(j)}/32 dev ${UNDERLAY_LINK} scope link src ${nodeIp(k)}`);
      routes.push(mode === 'tunnel' ? `route replace ${podCidr(j)} dev ${VXLAN_LINK}` : `route replace ${podCidr(j)} via ${nodeIp(j)} dev ${UNDERLAY_LINK}`);
      if (!ipv6) continue;
      routes.push(`neigh replace ${underlayIp6(j)} lladdr ${underlayMac(j)} dev ${UNDERLAY_LINK} nud permanent`);
      routes.push(mode === 'tunnel' ? `route replace ${podCidr6(j)} dev ${VXLAN_LINK}` : `route replace ${podCidr6(j)} via ${underlayIp6(j)} dev ${UNDERLAY_LINK}`);
    }
    if (k !== 1) for (const c of WORLD_CIDRS) routes.push(`route replace ${c} via ${nodeIp(1)} dev ${UNDERLAY_LINK}`);
    if (k !== 1 && ipv6) routes.push(`route replace ${WORLD_PREFIX6} via ${underlayIp6(1)} dev ${UNDERLAY_LINK}`);
    await ipBatch(routes, ns);
  }
}

/** Node k is gone: the remaining nodes' routes to its address and pod CIDR go (absent ones are fine). */
export async function removeNodeRoutes(lab: string, k: number, remaining: number[]): Promise<void> {
  for (const j of remaining) {
    const ns = nodeNetnsName(nodeName(j), lab);
    for (const dst of [podCidr(k), podCidr6(k), `${nodeIp(k)}/32`]) {
      try { await ip(['route', 'del', dst], ns); } catch { /* not there */ }
    }
  }
}

/**
 * The world namespace behind node1: every world host's address on mbr_hosts, routes back to the
 * lab; with enable-ipv6 each host's IPv6 address too (worldIp6), over a link-local link to node1.
 */
export async function ensureWorldNetwork(lab: string, ipv6 = false): Promise<void> {
  const w = worldNetnsName(lab);
  const n1 = nodeNetnsName(nodeName(1), lab);
  await netnsAdd(w);
  await sysctlIn(w, BASE_SYSCTL);
  await ipBatch(['link set lo up'], w);
  await ensureHostDevice(w, 'mbr_hosts', 'mbr_hosts_p', [`${WORLD_GATEWAY}/32`, ...[...new Set(worldHosts.map((h) => h.ip))].map((a) => `${a}/32`)]);
  if (!(await linkShow(WORLD_LINK, n1))) {
    await linkDelete('mbr_node1', w);
    await ip(['link', 'add', WORLD_LINK, 'type', 'veth', 'peer', 'name', 'mbr_node1', 'netns', w], n1);
  }
  await ipBatch([
    'link set mbr_node1 up',
    `route replace 10.244.0.0/16 via ${nodeIp(1)} dev mbr_node1 onlink`,
    `route replace 192.0.2.0/24 via ${nodeIp(1)} dev mbr_node1 onlink`,
  ], w);
  await ipBatch([
    `link set ${WORLD_LINK} up`,
    ...WORLD_CIDRS.map((c) => `route replace ${c} via ${WORLD_GATEWAY} dev ${WORLD_LINK} onlink`),
  ], n1);
  if (!ipv6) return;
  await sysctlIn(w, V6_ON);
  await ipBatch([
    ...[...new Set(worldHosts.map((h) => worldIp6(h.ip)))].map((a) => `addr replace ${a}/128 dev mbr_hosts nodad`),
    `addr replace ${WORLD_ROUTER6}/64 dev mbr_node1 nodad`,
    `route replace ${POD_CIDR6_CLUSTER} via ${ROUTER_IP6} dev mbr_node1`,
    `route replace ${nodeIp6(1)}/128 via ${ROUTER_IP6} dev mbr_node1`,
  ], w);
  await sysctlIn(n1, { 'net.ipv6.conf.all.forwarding': 1, [`net.ipv6.conf.${WORLD_LINK}.disable_ipv6`]: 0, [`net.ipv6.conf.${WORLD_LINK}.accept_dad`]: 0 });
  await ipBatch([`addr replace ${ROUTER_IP6}/64 dev ${WORLD_LINK} nodad`, `route replace ${WORLD_PREFIX6} via ${WORLD_ROUTER6} dev ${WORLD_LINK}`], n1);
}

/** Every network of a lab with `nodes` nodes (no processes). Idempotent. */
export async function setupLabNetwork(opts: { lab: string; nodes: number; routingMode?: RoutingMode; ipv6?: boolean }): Promise<void> {
  if (!(opts.nodes >= 1 && opts.nodes <= 250)) throw new MembraneError('LAB_BAD_NODES', `--nodes must be 1..250, got ${opts.nodes}`);
  for (let k = 1; k <= opts.nodes; k++) await ensureNodeNetwork(opts.lab, k, opts.ipv6);
  await ensureUnderlay(opts.lab, opts.nodes, opts.routingMode, opts.ipv6);
  await ensureWorldNetwork(opts.lab, opts.ipv6);
}

/**
 * The nameserver pods use: the kube-dns ClusterIP (translated by the datapath to the lab DNS
 * pod), or with `dnsIp` (the labDnsPodIp setting) the DNS pod's own address, for datapaths
 * without ClusterIP translation.
 */
export function podFiles(netns: string, ns: string, pod: string, podIp: string, dnsIp?: string): { resolv: string; hosts: string } {
  const server = dnsIp ?? CLUSTER_DNS_IP;
  return {
    resolv: `nameserver ${server}\nsearch ${ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`,
    hosts: `# ${netns}: written by membrane\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${podIp}\t${pod}.${ns}.pod.cluster.local ${pod}\n`,
  };
}

export interface PodNetworksOptions {
  lab: string;
  node: string;
  nodeIndex: number;
  paths: LabPaths;
  /** labDnsPodIp: resolv.conf names the DNS pod's own address instead of the ClusterIP */
  useDnsPodIp?: boolean;
  /**
   * enable-ipv6: pods get podIp6 beside their IPv4 address, their default IPv6 route via
   * fe80::1 on the host veth; IPv6 is switched on only in the pod's namespace and on its host
   * veth (and forwarding in the node namespace), never on the host.
   */
  ipv6?: boolean;
  logger?: Logger;
}

export function createPodNetworks(opts: PodNetworksOptions): PodNetworks & { lookup(pod: Pod): Promise<PodNetworkInfo | undefined> } {
  const { lab, node, nodeIndex } = opts;
  const nodeNs = nodeNetnsName(node, lab);
  const ipam = createPodIpam(join(opts.paths.nodeDir(node), 'ipam.json'), nodeIndex);
  const log = opts.logger?.child({ subsys: 'lab-net', node });
  const gw = routerIp(nodeIndex);
  const ident = (pod: Pod) => ({ ns: pod.metadata.namespace ?? 'default', name: pod.metadata.name });

  async function writeFiles(netns: string, ns: string, name: string, podIp: string): Promise<void> {
    const dir = join(ETC_NETNS, netns);
    let dnsIp: string | undefined;
    if (opts.useDnsPodIp) {
      try { dnsIp = (await readFile(dnsServerIpFile(opts.paths.stateDir), 'utf8')).trim() || undefined; } catch { /* no lab DNS yet */ }
    }
    const f = podFiles(netns, ns, name, podIp, dnsIp);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'resolv.conf'), f.resolv);
    await writeFile(join(dir, 'hosts'), f.hosts);
  }

  async function existing(netns: string, host: string, podIp: string): Promise<number | undefined> {
    if (!netnsExists(netns)) return undefined;
    const [a, h] = await Promise.all([addrShow('eth0', netns), linkShow(host, nodeNs)]);
    if (!h || !a?.addr_info.some((x) => x.family === 'inet' && x.local === podIp)) return undefined;
    return h.ifindex;
  }

  return {
    async ensure(pod) {
      if (!netnsExists(nodeNs)) {
        throw new MembraneError('LAB_NODE_MISSING', `node namespace ${nodeNs} does not exist`, { hint: 'start the lab with `membrane up`' });
      }
      const { ns, name } = ident(pod);
      const netns = podNetnsName(node, ns, name, lab);
      const host = hostIfname(ns, name);
      const podIp = await ipam.allocate(`${ns}/${name}`);
      const mac = macFromIp(podIp);
      let ifindex = await existing(netns, host, podIp);
      if (ifindex === undefined) {
        // Absent or half-made: start clean.
        await linkDelete(host, nodeNs);
        await netnsDelete(netns);
        await netnsAdd(netns);
        await sysctlIn(netns, opts.ipv6 ? V6_ON : { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 });
        await ip(['link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns], nodeNs);
        await ipBatch([
          'link set lo up',
          `link set eth0 address ${mac}`,
          `addr add ${podIp}/32 dev eth0`,
          'link set eth0 up',
          `route add ${gw} dev eth0 scope link`,
          `route add default via ${gw} dev eth0`,
        ], netns);
        const h = await linkShow(host, nodeNs);
        if (!h) throw new MembraneError('LAB_VETH_MISSING', `veth ${host} vanished in ${nodeNs}`);
        ifindex = h.ifindex;
        log?.info({ pod: `${ns}/${name}`, netns, ip: podIp, ifname: host }, 'pod network created');
      }
      await ipBatch([`link set ${host} up`, `route replace ${podIp}/32 dev ${host} scope link`], nodeNs);
      const ip6 = opts.ipv6 ? podIp6(podIp) : undefined;
      if (ip6) {
        await sysctlIn(nodeNs, { 'net.ipv6.conf.all.forwarding': 1, [`net.ipv6.conf.${host}.disable_ipv6`]: 0, [`net.ipv6.conf.${host}.accept_dad`]: 0 });
        await ipBatch([`addr replace ${ROUTER_IP6}/64 dev ${host} nodad`, `route replace ${ip6}/128 dev ${host}`], nodeNs);
        await ipBatch([`addr replace ${ip6}/128 dev eth0 nodad`, `route replace ::/0 via ${ROUTER_IP6} dev eth0`], netns);
      }
      await writeFiles(netns, ns, name, podIp);
      return { netns, ip: podIp, ...(ip6 ? { ip6 } : {}), mac, hostIfname: host, hostIfindex: ifindex };
    },

    async remove(pod) {
      const { ns, name } = ident(pod);
      const netns = podNetnsName(node, ns, name, lab);
      const host = hostIfname(ns, name);
      await killPids(await netnsPids(netns), { timeoutMs: 2000 });
      await linkDelete(host, nodeNs);
      await netnsDelete(netns);
      await rm(join(ETC_NETNS, netns), { recursive: true, force: true });
      await ipam.release(`${ns}/${name}`);
      log?.info({ pod: `${ns}/${name}`, netns }, 'pod network removed');
    },

    async lookup(pod) {
      const { ns, name } = ident(pod);
      const podIp = await ipam.lookup(`${ns}/${name}`);
      if (!podIp) return undefined;
      const netns = podNetnsName(node, ns, name, lab);
      const host = hostIfname(ns, name);
      const ifindex = await existing(netns, host, podIp);
      return ifindex === undefined ? undefined : { netns, ip: podIp, ...(opts.ipv6 ? { ip6: podIp6(podIp) } : {}), mac: macFromIp(podIp), hostIfname: host, hostIfindex: ifindex };
    },
  };
}
