/**
 * Host mode's PodNetworkProvider: the pods are containers a runtime (podman, containerd) started,
 * attached by membrane-cni. ADD (routes.ts) stores a Pod whose annotations name the container's
 * network namespace file and interface; the agent's reconcile calls `ensure` here, which takes an
 * address from the node's pod CIDR, makes the veth into that namespace and routes the /32 to it.
 * The runtime runs the containers, so `workloads` has nothing to start.
 *
 * What it changes in the host namespace, and nothing else: the membrane_host/membrane_net pair
 * holding the gateway address (the pod CIDR's first), IPv4 forwarding, one lxc* veth and one /32
 * route per container. It attaches the datapath only to the devices the configuration names,
 * and it never touches the default route.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Pod, Resource } from '../api/types.ts';
import type { MembraneConfig } from '../common/config.ts';
import type { LabPaths } from '../common/paths.ts';
import type { Logger } from '../common/logger.ts';
import type { PodNetworkInfo, PodNetworkProvider } from '../agent/pod-network.ts';
import { MembraneError } from '../common/errors.ts';
import { createSerial } from '../common/serial.ts';
import { addrShowAt, ip, ipAt, ipBatch, linkDelete, linkPresentSelf, linkShow, sysctlAt } from '../sys/net.ts';
import { containerVethHostEnd, createContainerVeth, deleteContainerVeth } from '../sys/netlink.ts';
import { createCidrIpam, parseCidr, type CidrPool } from '../common/cidr-ipam.ts';
import { writeFileAtomic } from '../common/atomic-file.ts';

export const ANN_CONTAINER_ID = 'cni.membrane.io/container-id';
export const ANN_NETNS = 'cni.membrane.io/netns';
export const ANN_IFNAME = 'cni.membrane.io/ifname';
export const HOST_DEVICE = 'membrane_host';
const HOST_PEER = 'membrane_net';

/** What ADD made for one container (kept in the node's state dir: DEL and restarts find it). */
export interface Attachment { containerId: string; ifname: string; netns: string; hostIfname: string; ip: string; namespace: string; pod: string }

export interface HostProvider extends PodNetworkProvider {
  pool: CidrPool;
  attachments(): Promise<Attachment[]>;
  byContainer(containerId: string, ifname: string): Promise<Attachment | undefined>;
  /** What is missing of an attachment (empty: intact). */
  verify(a: Attachment): Promise<string[]>;
}

export function hostIfnameFor(containerId: string, ifname: string): string {
  return `lxc${createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 11)}`;
}

export function macFromIp(ipv4: string): string {
  return ['0a', '58', ...ipv4.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

export function createHostProvider(o: { config: MembraneConfig; paths: LabPaths; node: string; logger: Logger }): HostProvider {
  const { config, paths, node } = o;
  if (!config.podCidr) throw new MembraneError('CONFIG_INVALID', 'podCidr (--pod-cidr / MEMBRANE_POD_CIDR) is required in host mode', { hint: 'give the node its own pod CIDR, e.g. --pod-cidr 10.244.7.0/24' });
  const pool = parseCidr(config.podCidr);
  const log = o.logger.child({ subsys: 'cni-host', node });
  const ipam = createCidrIpam(join(paths.nodeDir(node), 'cni-ipam.json'), pool);
  const stateFile = join(paths.nodeDir(node), 'cni-attachments.json');
  const gw = pool.gateway;
  const configured = (config.nodeAddresses ?? '').split(',').filter(Boolean);
  const nodeAddresses = [...new Set([configured[0] ?? gw, gw, ...configured])];
  const dns = config.clusterDnsIp;

  const serial = createSerial();
  async function load(): Promise<Record<string, Attachment>> {
    try { return JSON.parse(await readFile(stateFile, 'utf8')) as Record<string, Attachment>; } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw e;
    }
  }
  async function save(m: Record<string, Attachment>): Promise<void> {
    await mkdir(paths.nodeDir(node), { recursive: true });
    await writeFileAtomic(stateFile, JSON.stringify(m, null, 1));
  }
  const keyOf = (pod: Pod) => `${pod.metadata.namespace ?? 'default'}/${pod.metadata.name}`;

  async function verify(a: Attachment): Promise<string[]> {
    const problems: string[] = [];
    const h = await linkShow(a.hostIfname);
    if (!h) problems.push(`host veth ${a.hostIfname} is missing`);
    else if (!(await ip(['route', 'show', `${a.ip}/32`])).includes(a.hostIfname)) problems.push(`route ${a.ip}/32 dev ${a.hostIfname} is missing`);
    const c = await addrShowAt(a.netns, a.ifname);
    if (!c) problems.push(`interface ${a.ifname} is missing in ${a.netns}`);
    else if (!c.addr_info.some((x) => x.family === 'inet' && x.local === a.ip)) problems.push(`${a.ifname} in ${a.netns} does not hold ${a.ip}`);
    return problems;
  }

  async function ensure(pod: Pod): Promise<PodNetworkInfo> {
    const ann = pod.metadata.annotations ?? {};
    const containerId = ann[ANN_CONTAINER_ID], netns = ann[ANN_NETNS], ifname = ann[ANN_IFNAME];
    if (!containerId || !netns || !ifname) {
      throw new MembraneError('CNI_POD_NOT_ATTACHED', `pod ${keyOf(pod)} was not added by membrane-cni; a host-mode agent does not run pods itself`, { hint: 'start the container with a runtime whose network uses membrane-cni (see README "protect real containers")' });
    }
    const key = keyOf(pod);
    const hostIfname = hostIfnameFor(containerId, ifname);
    const podIp = await ipam.allocate(key);
    const mac = macFromIp(podIp);
    const a: Attachment = { containerId, ifname, netns, hostIfname, ip: podIp, namespace: pod.metadata.namespace ?? 'default', pod: pod.metadata.name };
    await serial(async () => { const m = await load(); m[key] = a; await save(m); });
    // no process: the veth, addresses and routes over rtnetlink from the agent (src/sys/netlink.ts);
    // each `ip`/`nsenter`/`sh` was a fork of the agent, as much CPU as the rest of ADD
    let hostIfindex: number | undefined;
    const had = linkPresentSelf(hostIfname);
    if (had && !(await verify(a)).length) hostIfindex = containerVethHostEnd(hostIfname, podIp);
    if (!hostIfindex) {
      if (!existsSync(netns)) throw new MembraneError('CNI_NETNS_MISSING', `network namespace ${netns} of container ${containerId.slice(0, 12)} does not exist`, { hint: 'the container is gone: its runtime sends DEL' });
      if (had) {
        // half-made: start clean
        await linkDelete(hostIfname);
        await ipAt(netns, ['link', 'del', ifname]).catch(() => {});
      }
      // IPv6 off in the container's namespace before its interface exists (IPv4 only: the
      // datapath drops what it does not parse, so no link-local chatter)
      hostIfindex = createContainerVeth({
        netns, ifname, mac, hostIfname, ip: podIp, gateway: gw,
        sysctls: { 'net.ipv6.conf.all.disable_ipv6': 1, 'net.ipv6.conf.default.disable_ipv6': 1 },
      });
      log.info({ container: containerId.slice(0, 12), pod: key, ip: podIp, ifname: hostIfname }, 'container network created');
    }
    return { netns, ip: podIp, mac, hostIfname, hostIfindex };
  }

  async function remove(pod: Pod): Promise<void> {
    const key = keyOf(pod);
    const a = (await load())[key];
    if (a) {
      // deleting the host end removes the container's end (if the namespace still exists) and
      // the /32 route through it; the route is named too in case the link was already gone
      deleteContainerVeth(a.hostIfname, a.ip);
    }
    await ipam.release(key);
    await serial(async () => { const m = await load(); delete m[key]; await save(m); });
    if (a) log.info({ container: a.containerId.slice(0, 12), pod: key }, 'container network removed');
  }

  return {
    kind: 'cni',
    pool,
    networks: { ensure, remove },
    // the runtime runs the containers; an attached container counts as ready
    workloads: { ensure: async () => ({ ready: 1, total: 1 }), stop: async () => {} },
    nodeAddresses,
    podCidr: pool.cidr,
    networkDevices: (config.devices ?? '').split(',').filter(Boolean),
    clusterPrefixes: [pool.cidr, '127.0.0.0/8'],
    clusterDNS: { serviceIp: dns ?? '0.0.0.0', serverIp: () => dns },
    async start({ resources }) {
      // containers whose labels name no namespace land in `default`, which exists as in a cluster
      if (!(await resources.get('Namespace', undefined, 'default'))) {
        await resources.commit([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' }, source: { file: '<host>', line: 0, col: 0 } } as Resource]);
      }
      // the gateway lives on a device of its own (Cilium's cilium_host): always up, no traffic of its own
      if (!(await linkShow(HOST_DEVICE))) {
        await linkDelete(HOST_PEER);
        await ip(['link', 'add', HOST_DEVICE, 'type', 'veth', 'peer', 'name', HOST_PEER]);
      }
      await ipBatch([`link set ${HOST_PEER} up`, `link set ${HOST_DEVICE} up`, `addr replace ${gw}/32 dev ${HOST_DEVICE}`]);
      await sysctlAt(undefined, { 'net.ipv4.ip_forward': 1 });
      log.info({ podCidr: pool.cidr, gateway: gw, devices: config.devices ?? '(none)' }, 'host mode ready');
    },
    attachments: async () => Object.values(await load()),
    byContainer: async (containerId, ifname) => Object.values(await load()).find((a) => a.containerId === containerId && a.ifname === ifname),
    verify,
  };
}
