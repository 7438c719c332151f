/**
 * Transparent encryption between nodes with WireGuard (Cilium's --enable-wireguard), one node's
 * part:
 *
 *   key      ── <nodeDir>/wireguard/cilium_wg0.key (0600, made once, kept across restarts);
 *               the public key goes into this node's kvstore entry (WireguardPubKey)
 *   device   ── cilium_wg0 on UDP 51871: the kernel's where the module exists, else
 *               wireguard-go (src/sys/wireguard.ts), checked every second and restarted with
 *               the same key when it is gone; the agent opens wireguard-go's
 *               TUN itself, with NAPI and a GRO flush timeout (WG_TUN_GRO_FLUSH_NS), so a pod
 *               receiving a stream gets its segments coalesced and acknowledges them once
 *   peers    ── every other node with a key: endpoint <InternalIP>:51871, allowed IPs its pod
 *               CIDR (and its InternalIP with --encryption-node); in tunnel mode its InternalIP
 *               only (what crosses the device is VXLAN between node addresses)
 *   routes   ── native routing: a peer's pod CIDR via cilium_wg0; a node without a key (or while
 *               the device is down) keeps the plain underlay route, which strict mode's
 *               to_network_strict (bpf/encrypt.bpf.c) drops with UNENCRYPTED_TRAFFIC (195) on the
 *               way out.
 *               tunnel routing (VXLAN inside WireGuard, as Cilium's tunnel mode): pod CIDRs stay on
 *               cilium_vxlan, whose datapath puts the sender's identity in the VNI; the VXLAN
 *               packet it makes (UDP 8472 to the peer's InternalIP) is steered by the rule
 *               `ipproto udp dport 8472 lookup 2005` into table 2005, which holds each keyed
 *               peer's InternalIP via cilium_wg0 (for a keyed peer from_container makes that
 *               VXLAN itself and hands it to cilium_wg0: mb_encrypt's ENCRYPT_F_TUNNEL and the
 *               device's ifindex). wireguard-go's own UDP (port 51871, mark 0xe00)
 *               never matches, so it cannot loop into its own device. A peer without a key has no
 *               entry: its VXLAN falls through to the plain underlay route, where strict mode
 *               reads the inner addresses and drops with 195. cilium_wg0's MTU is the pods' plus
 *               VXLAN's 50 bytes, so a full pod frame fits without fragmenting the tunnel
 *   receive  ── native: decrypted packets keep the sender pod's address, so the receiver finds
 *               the sender's identity in its ipcache (as Cilium's WireGuard does without a
 *               tunnel); from_wireguard (bpf/wireguard.bpf.c) runs at cilium_wg0's ingress for
 *               the destination's ingress policy and L7 redirect, and delivers a packet of a
 *               known connection to a local endpoint straight into the pod (bpf_redirect_peer,
 *               Cilium's BPF host routing): no host routing, no second pass through the veth.
 *               tunnel: the decrypted packet is VXLAN from the peer's InternalIP; GRO on the TUN
 *               (the node's vxlan socket's handler) merges a stream's datagrams that share outer
 *               headers and VNI; from_wireguard takes the VXLAN off what is for a local endpoint
 *               (one merged skb at a time) and delivers it as in native routing, the VNI its
 *               source's identity. The rest: cilium_wg0 is registered as an underlay device (an
 *               authenticated one) so from_network lets a node's address through, the kernel
 *               hands it to cilium_vxlan, and from_overlay reads the identity from the VNI
 *
 * Every change (nodes joining, leaving, rotating keys; the device coming back) goes through one
 * serial reconcile, so peers and routes follow the kvstore within a second.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../common/logger.ts';
import type { MembraneConfig } from '../common/config.ts';
import { MembraneError } from '../common/errors.ts';
import { WG_SOCKET_BUFFER, WG_TUN_GRO_FLUSH_NS, WG_TUN_TXQUEUELEN, createWireguardDevice, generateKeyPair, publicKeyOf, udpSockets, type WireguardPeer, type WireguardState } from '../sys/wireguard.ts';
import { ip } from '../sys/net.ts';
import { routes4 } from '../sys/netlink.ts';
import { BPF_TCX_EGRESS, BPF_TCX_INGRESS, attachTcx, ifNameToIndex, type BpfMap, type BpfObject } from '../sys/bpf.ts';
import { loadObjectMigrating, logMigrations } from '../datapath/linux/pins.ts';
import type { ClusterNode } from './cluster-keys.ts';
import type { StatusView } from './views.ts';
import { writeFileAtomicSync } from '../common/atomic-file.ts';

export const WG_IFNAME = 'cilium_wg0';
export const WG_PORT = 51871;
/** wireguard-go's TUN gets the pods' MTU: a full pod frame fits, the underlay fragments the UDP */
const WG_MTU = 1500;
/** VXLAN's outer IPv4 + UDP + VXLAN + inner Ethernet headers */
const VXLAN_OVERHEAD = 50;
const VXLAN_PORT = 8472;
/** mb_encrypt's flags (bpf/lib/encrypt.h) */
const ENCRYPT_F_STRICT = 0x01;
const ENCRYPT_F_TUNNEL = 0x02;
const ENCRYPT_F_NODE = 0x04;
/** the table of routes into cilium_wg0 for node addresses (node encryption; VXLAN in tunnel mode) */
const WG_TABLE = '2005';
const CHECK_INTERVAL_MS = 1000;
const WG_FWMARK = 0xe00;
/** the main routing table's id (pod CIDR routes in native routing) */
const RT_TABLE_MAIN = 254;

export interface EncryptionStatus {
  mode: 'Wireguard';
  nodeEncryption: boolean;
  strict: boolean;
  strictIngress: boolean;
  ifname: string;
  implementation: 'kernel' | 'userspace' | undefined;
  publicKey: string;
  port: number;
  peers: { node: string; publicKey: string; endpoint: string; allowedIps: string[]; latestHandshake: number }[];
  up: boolean;
}

export interface EncryptionOptions {
  config: Pick<MembraneConfig, 'encryption' | 'encryptionNode' | 'encryptionStrict' | 'encryptionStrictIngress' | 'encryptionStrictModeCidr' | 'routingMode'>;
  self: ClusterNode;
  /** <nodeDir>/wireguard */
  dir: string;
  /** the node's BPF pin directory (strict mode's program and map live there) */
  pinRoot: string;
  /** the node's network devices (strict mode watches their egress) */
  networkDevices: readonly string[];
  /** compiled BPF objects (dist/bpf) */
  bpfDir: string;
  logger: Logger;
}

/** Reads the node's private key, or makes one (0600, written atomically). Returns the public key. */
export function ensureKeyFile(file: string): string {
  if (existsSync(file)) {
    chmodSync(file, 0o600);
    return publicKeyOf(readFileSync(file, 'utf8'));
  }
  return writeNewKey(file);
}

function writeNewKey(file: string): string {
  const k = generateKeyPair();
  writeFileAtomicSync(file, `${k.privateKey}\n`, { mode: 0o600 });
  return k.publicKey;
}

/** The peers this node wants: every other node of its cluster that published a key and a pod CIDR.
 *  In tunnel mode a peer sends only VXLAN from its InternalIP through the device: that is all it may send. */
export function desiredPeers(self: ClusterNode, nodes: readonly ClusterNode[], nodeEncryption: boolean, tunnel = false): (WireguardPeer & { node: string })[] {
  const out: (WireguardPeer & { node: string })[] = [];
  for (const n of nodes) {
    if (n.name === self.name || n.cluster !== self.cluster || !n.wireguardPubKey || !n.podCidr) continue;
    if (n.wireguardPubKey === self.wireguardPubKey) continue; // a copied key would route our own traffic back
    out.push({ node: n.name, publicKey: n.wireguardPubKey, endpoint: `${n.ip}:${WG_PORT}`, allowedIps: tunnel ? [`${n.ip}/32`] : [n.podCidr, ...(nodeEncryption ? [`${n.ip}/32`] : [])] });
  }
  return out;
}

/** mb_devices' key and value (lib/maps.h): a u32, host order */
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
/** lib/maps.h DEV_F_UNDERLAY */
const DEV_F_UNDERLAY = 0x01;

function cidrParts(cidr: string): { net: Buffer; mask: Buffer } {
  const [a, len] = cidr.split('/') as [string, string];
  const n = a.split('.').reduce((x, o) => (x << 8) | Number(o), 0) >>> 0;
  const bits = Number(len);
  const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const net = Buffer.alloc(4);
  const mask = Buffer.alloc(4);
  net.writeUInt32BE((n & m) >>> 0);
  mask.writeUInt32BE(m);
  return { net, mask };
}

export function createEncryption(o: EncryptionOptions) {
  const log = o.logger.child({ subsys: 'encryption' });
  const keyFile = join(o.dir, `${WG_IFNAME}.key`);
  const tunnel = o.config.routingMode === 'tunnel';
  // GRO on wireguard-go's TUN (WG_TUN_GRO_FLUSH_NS), so a receiving pod gets a stream's segments
  // coalesced and acknowledges them once. In tunnel routing the node's vxlan socket (cilium_vxlan,
  // same namespace) gives GRO its VXLAN handler: it merges VXLAN datagrams of one inner TCP flow
  // with the same outer headers and the same VXLAN header (so the same VNI, the sender's
  // identity) into one skb, which from_wireguard's wg_decap decapsulates as a whole.
  const device = createWireguardDevice({ ifname: WG_IFNAME, dir: o.dir, groFlushTimeoutNs: WG_TUN_GRO_FLUSH_NS });
  const mtu = tunnel ? WG_MTU + VXLAN_OVERHEAD : WG_MTU;
  let nodes: ClusterNode[] = [];
  let publishKey: ((key: string) => Promise<void>) | undefined;
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();
  let pending = false;
  let stopped = false;
  let restarts = 0;
  /** the last reconcile threw: the next supervision tick runs it again */
  let failed = false;
  /** pod CIDR (tunnel mode: the peer's InternalIP/32) → how this node routes it now ('wg' or 'plain') */
  const routed = new Map<string, 'wg' | 'plain'>();
  let strictObj: BpfObject | undefined;
  let wgObj: BpfObject | undefined;
  let encryptMap: BpfMap | undefined;
  /** mb_wg_peers (lib/encrypt.h): the keyed peers from_container hands packets to cilium_wg0 for */
  let peersMap: BpfMap | undefined;
  /** mb_wg_peers as written: InternalIP → its pod CIDR */
  const peersWritten = new Map<string, string>();
  let attachedWgIfindex = 0;

  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const publicKey = { value: ensureKeyFile(keyFile) };
  o.self.wireguardPubKey = publicKey.value;

  /** underlay routes to other nodes carry this node's InternalIP as source: WireGuard's UDP then
   *  comes from the address peers know it by (else the kernel may pick the router address, and
   *  peers would roam their endpoint into the pod CIDR routed through the tunnel itself) */
  const sourced = new Set<string>();
  async function underlaySource(n: ClusterNode): Promise<void> {
    if (sourced.has(n.ip)) return;
    const r = JSON.parse(await ip(['-j', 'route', 'get', n.ip])) as { dev?: string; gateway?: string }[];
    const dev = r[0]?.dev;
    if (!dev || dev === WG_IFNAME) return;
    await ip(['route', 'replace', `${n.ip}/32`, ...(r[0]?.gateway ? ['via', r[0].gateway] : []), 'dev', dev, 'scope', r[0]?.gateway ? 'global' : 'link', 'src', o.self.ip]);
    sourced.add(n.ip);
  }

  async function routesFor(peers: (WireguardPeer & { node: string })[], up: boolean): Promise<void> {
    const keyed = new Map(peers.map((p) => [p.node, p]));
    /** InternalIP → pod CIDR of the peers routed through cilium_wg0 now (mb_wg_peers follows) */
    const through = new Map<string, string>();
    for (const n of nodes) {
      if (n.name === o.self.name || !n.podCidr) continue;
      await underlaySource(n);
      const want: 'wg' | 'plain' = up && keyed.has(n.name) ? 'wg' : 'plain';
      if (want === 'wg') through.set(n.ip, n.podCidr);
      if (tunnel) {
        // pod CIDRs stay on cilium_vxlan; the VXLAN to the node's address goes through table 2005
        const dst = `${n.ip}/32`;
        if (routed.get(dst) === want) continue;
        if (want === 'wg') await ip(['route', 'replace', 'table', WG_TABLE, dst, 'dev', WG_IFNAME, 'scope', 'link', 'src', o.self.ip]);
        else await ip(['route', 'del', 'table', WG_TABLE, dst]).catch(() => undefined);
        routed.set(dst, want);
        log.info({ node: n.name, ip: n.ip, vxlan: want === 'wg' ? WG_IFNAME : 'underlay (unencrypted)' }, 'VXLAN route to node');
        continue;
      }
      if (routed.get(n.podCidr) === want) continue;
      if (want === 'wg') {
        await ip(['route', 'replace', n.podCidr, 'dev', WG_IFNAME, 'scope', 'link', ...(o.self.routerIp ? ['src', o.self.routerIp] : [])]);
        if (o.config.encryptionNode) await ip(['route', 'replace', 'table', '2005', `${n.ip}/32`, 'dev', WG_IFNAME, 'scope', 'link']);
      } else {
        // the underlay route the node had without encryption (native routing)
        await ip(['route', 'replace', n.podCidr, 'via', n.ip]);
        if (o.config.encryptionNode) await ip(['route', 'del', 'table', '2005', `${n.ip}/32`]).catch(() => undefined);
      }
      routed.set(n.podCidr, want);
      log.info({ node: n.name, podCidr: n.podCidr, via: want === 'wg' ? WG_IFNAME : `${n.ip} (unencrypted)` }, 'pod CIDR route');
    }
    // nodes that left: their pod CIDR goes back to the underlay route (or away with their node)
    const live = new Set(nodes.filter((n) => n.podCidr).map((n) => (tunnel ? `${n.ip}/32` : n.podCidr!)));
    for (const [cidr, how] of routed) {
      if (live.has(cidr)) continue;
      routed.delete(cidr);
      if (how === 'wg') await ip(['route', 'del', ...(tunnel ? ['table', WG_TABLE] : []), cidr, 'dev', WG_IFNAME]).catch(() => undefined);
    }
    syncPeersMap(through);
  }

  /** mb_wg_peers := `want` (InternalIP → pod CIDR): from_container hands a pod's packet to
   *  cilium_wg0 itself only for these peers, each written after its routes through the device and
   *  removed with them, so the datapath never sends a packet there that the node would not route
   *  there (and what it does not send there the stack routes as before). */
  function syncPeersMap(want: ReadonlyMap<string, string>): void {
    if (!peersMap) return;
    for (const [nodeIp, cidr] of want) {
      if (peersWritten.get(nodeIp) === cidr) continue;
      const { net, mask } = cidrParts(cidr);
      peersMap.update(cidrParts(`${nodeIp}/32`).net, Buffer.concat([net, mask]));
      peersWritten.set(nodeIp, cidr);
    }
    for (const nodeIp of [...peersWritten.keys()]) {
      if (want.has(nodeIp)) continue;
      peersMap.delete(cidrParts(`${nodeIp}/32`).net);
      peersWritten.delete(nodeIp);
    }
  }

  /** Forgets the pod-CIDR routes this node set through cilium_wg0 that are no longer there; true if any. */
  async function routesDrifted(): Promise<boolean> {
    const want = [...routed].filter(([, how]) => how === 'wg').map(([cidr]) => cidr);
    if (!want.length) return false;
    // one rtnetlink dump, no `ip` process: this runs every second
    const ifindex = ifNameToIndex(WG_IFNAME);
    const table = tunnel ? Number(WG_TABLE) : RT_TABLE_MAIN;
    const have = new Set(routes4().filter((r) => r.oif === ifindex && r.table === table).map((r) => r.dst));
    const gone = want.filter((c) => !have.has(c));
    for (const c of gone) routed.delete(c);
    if (gone.length) log.warn({ podCidrs: gone }, 'routes through the WireGuard device were replaced; putting them back');
    return gone.length > 0;
  }

  /** Node encryption: everything to another node's InternalIP but wireguard-go's own UDP (fwmark) via table 2005.
   *  Tunnel mode: the VXLAN the node sends (UDP to 8472) via table 2005 (wireguard-go's UDP goes to 51871). */
  async function nodeEncryptionRules(): Promise<void> {
    if (tunnel) {
      const rules = await ip(['rule', 'show', 'pref', '2004']);
      if (!rules.includes(`lookup ${WG_TABLE}`)) await ip(['rule', 'add', 'pref', '2004', 'ipproto', 'udp', 'dport', String(VXLAN_PORT), 'lookup', WG_TABLE]);
      log.info({ table: Number(WG_TABLE), port: VXLAN_PORT }, 'tunnel mode: VXLAN to keyed nodes goes through WireGuard');
    }
    if (!o.config.encryptionNode) return;
    const rules = await ip(['rule', 'show', 'pref', '2005']);
    if (!rules.includes(`lookup ${WG_TABLE}`)) await ip(['rule', 'add', 'pref', '2005', 'not', 'fwmark', '0xe00/0xf00', 'lookup', WG_TABLE]);
    log.info({ table: Number(WG_TABLE) }, 'node encryption: traffic to other nodes\' addresses goes through WireGuard');
  }

  /**
   * An object of the encryption datapath over the node's pins, through the datapath's migration:
   * they share its pinned maps, and an upgrade whose maps changed must not fail here either.
   */
  function loadObject(file: string): BpfObject {
    const { obj, migrated } = loadObjectMigrating(join(o.bpfDir, file), o.pinRoot);
    logMigrations(log, 'encryption', migrated);
    return obj;
  }

  function attachWireguardIngress(): void {
    const ifindex = ifNameToIndex(WG_IFNAME);
    if (!ifindex || ifindex === attachedWgIfindex) return;
    wgObj ??= loadObject('wireguard.bpf.o');
    if (tunnel) {
      // decrypted VXLAN comes from the peer's node address: an authenticated underlay, not a spoof
      const devices = wgObj.map('mb_devices');
      if (attachedWgIfindex) { try { devices.delete(u32(attachedWgIfindex)); } catch { /* gone */ } }
      devices.update(u32(ifindex), u32(DEV_F_UNDERLAY));
    }
    attachTcx(wgObj.program('from_wireguard').fd, ifindex, BPF_TCX_INGRESS, join(o.pinRoot, 'links', `${WG_IFNAME}-ingress`));
    attachedWgIfindex = ifindex;
    writeEncryptConfig(ifindex);
    log.info({ ifname: WG_IFNAME, ifindex }, 'from_wireguard attached to the WireGuard device');
  }

  /** mb_encrypt (lib/encrypt.h): strict mode, its CIDR, and cilium_wg0's ifindex, to which
   *  from_container hands pod packets the node routes into the tunnel (0: the stack); in tunnel
   *  routing (ENCRYPT_F_TUNNEL) their VXLAN, made by from_container, when the node routes it there */
  function writeEncryptConfig(wgIfindex: number): void {
    const v = Buffer.alloc(20);
    const { net, mask } = cidrParts(o.config.encryptionStrictModeCidr);
    // ENCRYPT_F_STRICT, ENCRYPT_F_TUNNEL, ENCRYPT_F_NODE (strict ingress is the datapath's: mb_config DP_F_STRICT_INGRESS)
    v.writeUInt32LE((o.config.encryptionStrict ? ENCRYPT_F_STRICT : 0) | (tunnel ? ENCRYPT_F_TUNNEL : 0) | (o.config.encryptionNode ? ENCRYPT_F_NODE : 0), 0);
    net.copy(v, 4);
    mask.copy(v, 8);
    v.writeUInt32LE(wgIfindex, 12);
    cidrParts(`${o.self.ip}/32`).net.copy(v, 16);
    encryptMap?.update(Buffer.alloc(4), v);
  }

  function setupStrict(): void {
    strictObj ??= loadObject('encrypt.bpf.o');
    encryptMap ??= strictObj.map('mb_encrypt');
    writeEncryptConfig(0);
    if (!peersMap) {
      // what an agent before this one wrote: the first reconcile writes the peers it routes now
      peersMap = strictObj.map('mb_wg_peers');
      peersMap.deleteMany([...peersMap.keys()]);
    }
    if (!o.config.encryptionStrict) return;
    const prog = strictObj.program('to_network_strict');
    for (const dev of o.networkDevices) {
      const ifindex = ifNameToIndex(dev);
      if (!ifindex) continue;
      attachTcx(prog.fd, ifindex, BPF_TCX_EGRESS, join(o.pinRoot, 'links', `${dev}-egress-encrypt`));
      log.info({ dev, cidr: o.config.encryptionStrictModeCidr }, 'strict mode: unencrypted pod traffic is dropped at egress');
    }
  }

  /** wireguard-go's sockets as last sized (pid: inodes); a new process or a rebind (new inodes) is sized again */
  let sized = '';
  /** userspace: wireguard-go's UDP socket buffers up to what newer wireguard-go sets itself (src/sys/wireguard.ts) */
  function sizeSockets(): void {
    if (device.kind() !== 'userspace') return;
    const pid = device.pid();
    const socks = pid ? udpSockets(pid, WG_PORT) : [];
    const now = `${pid}:${socks.map((x) => x.inode).join(',')}`;
    if (!pid || !socks.length || now === sized) return;
    try {
      const n = device.sizeSockets(WG_PORT);
      sized = now;
      log.info({ wireguardGoPid: pid, sockets: n, bytes: WG_SOCKET_BUFFER }, 'wireguard-go UDP socket buffers sized');
    } catch (e) {
      log.warn({ err: (e as Error).message, wireguardGoPid: pid }, 'cannot size wireguard-go\'s UDP socket buffers; its receiver drops under load');
    }
  }

  async function reconcileOnce(): Promise<void> {
    const created = await device.ensure();
    if (created) {
      if (restarts++ > 0) log.warn({ ifname: WG_IFNAME, implementation: device.kind(), wireguardGoPid: device.pid() }, 'WireGuard device was gone: recreated with the same key');
      else log.info({ ifname: WG_IFNAME, implementation: device.kind(), wireguardGoPid: device.pid(), port: WG_PORT, publicKey: publicKey.value }, 'WireGuard device created');
      // the kernel dropped the routes through the old device
      for (const [cidr, how] of routed) if (how === 'wg') routed.delete(cidr);
      // userspace: a longer TUN ring than wireguard-go's (WG_TUN_TXQUEUELEN); the kernel's device has no queue
      await ip(['link', 'set', 'dev', WG_IFNAME, 'mtu', String(mtu), ...(device.kind() === 'userspace' ? ['txqueuelen', String(WG_TUN_TXQUEUELEN)] : [])]);
    }
    const peers = desiredPeers(o.self, nodes, o.config.encryptionNode, tunnel);
    // wireguard-go's own UDP carries mark 0xe00 (Cilium's MARK_MAGIC_WG_ENCRYPTED): node
    // encryption's rule leaves it on the underlay
    await device.configure({ privateKeyFile: keyFile, listenPort: WG_PORT, peers, fwmark: WG_FWMARK });
    await ip(['link', 'set', 'dev', WG_IFNAME, 'up']);
    sizeSockets();
    attachWireguardIngress();
    await routesFor(peers, await device.up());
  }

  function reconcile(): Promise<void> {
    if (pending || stopped) return chain;
    pending = true;
    chain = chain.then(async () => {
      pending = false;
      if (stopped) return;
      try {
        await reconcileOnce();
        failed = false;
      } catch (e) {
        // the supervision tick retries it: a device that came back up would not call for it (a
        // restarted wireguard-go takes a moment to open its UAPI socket: `wg show` fails meanwhile)
        failed = true;
        log.warn({ err: (e as Error).message }, 'WireGuard reconcile failed; retrying');
      }
    });
    return chain;
  }

  return {
    publicKey: () => publicKey.value,
    async start(ctx: { publish(key: string): Promise<void> }): Promise<void> {
      publishKey = ctx.publish;
      setupStrict();
      await nodeEncryptionRules();
      await reconcile();
      if (!(await device.up())) throw new MembraneError('WG_START_FAILED', `${WG_IFNAME} is not up`, { hint: `see ${join(o.dir, 'wireguard-go.log')}` });
      // supervision: a dead wireguard-go or a deleted device comes back with the same key
      // and a route through it that something else replaced (a re-run of the lab's network setup
      // writes the plain underlay routes again) is put back
      timer = setInterval(() => {
        void (async () => {
          if (failed || !(await device.up())) return void reconcile();
          // wireguard-go binds its socket when the device comes up, after the reconcile that raised it
          sizeSockets();
          if (await routesDrifted()) void reconcile();
        })().catch(() => undefined);
      }, CHECK_INTERVAL_MS);
      timer.unref();
    },
    /** The cluster's nodes changed (joined, left, new key): peers and routes follow. */
    nodesChanged(list: ClusterNode[]): void {
      nodes = list;
      void reconcile();
    },
    /** A new key pair: the device switches, then the kvstore entry tells the peers. */
    async rotateKey(): Promise<string> {
      publicKey.value = writeNewKey(keyFile);
      o.self.wireguardPubKey = publicKey.value;
      await reconcile();
      await publishKey?.(publicKey.value);
      log.info({ publicKey: publicKey.value }, 'WireGuard key rotated');
      return publicKey.value;
    },
    async status(): Promise<EncryptionStatus> {
      let st: WireguardState | undefined;
      try { st = await device.show(); } catch { st = undefined; }
      const byKey = new Map(nodes.filter((n) => n.wireguardPubKey).map((n) => [n.wireguardPubKey!, n.name]));
      return {
        mode: 'Wireguard', nodeEncryption: o.config.encryptionNode, strict: o.config.encryptionStrict, strictIngress: o.config.encryptionStrictIngress, ifname: WG_IFNAME, implementation: device.kind(),
        publicKey: publicKey.value, port: st?.listenPort ?? WG_PORT, up: !!st && (await device.up()),
        peers: (st?.peers ?? []).map((p) => ({ node: byKey.get(p.publicKey) ?? '', publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: p.allowedIps, latestHandshake: p.latestHandshake })),
      };
    },
    /** Agent stop: the device and its process stay (pods keep talking encrypted); timers go. */
    async stop(): Promise<void> {
      stopped = true;
      if (timer) clearInterval(timer);
      await chain;
      strictObj?.close();
      wgObj?.close();
    },
    /** waits for the pending reconcile */
    settled: () => chain,
  };
}

export type Encryption = ReturnType<typeof createEncryption>;

/** The status view's `Encryption:` part (what `cilium status` prints); a device that is down is
 *  also one of the status errors. */
export async function encryptionView(encryption: Encryption | undefined, errors: string[]): Promise<NonNullable<StatusView['encryption']>> {
  if (!encryption) return { mode: 'Disabled' };
  const e = await encryption.status();
  if (!e.up) errors.push(`encryption: ${e.ifname} is down (${e.implementation ?? 'not created'}); restarting`);
  return {
    mode: 'Wireguard',
    wireguard: {
      nodeEncryption: e.nodeEncryption ? 'Enabled' : 'Disabled', strictMode: e.strict ? 'Enabled' : 'Disabled', strictModeIngress: e.strictIngress ? 'Enabled' : 'Disabled',
      interfaces: [{ name: e.ifname, publicKey: e.publicKey, listenPort: e.port, peerCount: e.peers.length, implementation: e.implementation ?? '', up: e.up }],
    },
  };
}
