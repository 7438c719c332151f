/**
 * The eBPF datapath: the Datapath interface composed of the parts that each own one kind of
 * kernel object (README.md has the picture). Loads bpf/endpoint.bpf.c with its maps pinned under
 * `pinRoot`, attaches programs to each endpoint's host-side veth through pinned tcx links
 * (enforcement outlives the agent), mirrors policy, ipcache and services into the maps, and turns
 * ring-buffer records into DatapathEvents.
 *
 * The agent runs in the node's network namespace with the host's bpffs; endpoints' host veths
 * are in that namespace, so attachment is by ifindex.
 */
import {
  serviceKeyString, type Datapath, type DatapathEndpoint, type DatapathEvent, type DatapathService, type DatapathServiceKey, type DatapathStats,
  type IPCacheEntry,
} from '../types.ts';
import type { MapState, MapStateDelta } from '../../policy/types.ts';
import { defaultProxyRedirect } from '../../common/proxy-ports.ts';
import { BpfObject, ensureBpffs, enableRunTimeStats, disableRunTimeStats, setLibbpfLogger } from '../../sys/bpf.ts';
import { DP_F_NO_SERVICES, decodeNodeMacKey, encodeNodeMac, encodeNodeMacKey, encodeSockmapFd, encodeU32, type CtEntry, type MonitorAggregation } from './codec.ts';
import { ConfigMap } from './configmap.ts';
import { CtMap } from './ctmap.ts';
import { NetworkDevices } from './devices.ts';
import { EndpointMap } from './endpoints.ts';
import { EventReader } from './events.ts';
import { IPCacheMap } from './ipcache.ts';
import { LbMap } from './lbmap.ts';
import { DEFAULT_OBJECT_PATH, Loader } from './loader.ts';
import { PolicyMap, type PolicyDumpEntry, type ProxyRedirect } from './policymap.ts';
import { logMigrations, pinsToMigrate } from './pins.ts';
import { MembraneError } from '../../common/errors.ts';
import { readCounters, type Counters } from './statsmap.ts';

export interface DatapathLogger {
  info(obj: unknown, msg?: string): void;
  warn(obj: unknown, msg?: string): void;
  error(obj: unknown, msg?: string): void;
  debug(obj: unknown, msg?: string): void;
}

export interface LinuxDatapathOptions {
  /** bpffs directory for this node's maps and links, e.g. /sys/fs/bpf/membrane/lab-node1 */
  pinRoot: string;
  /** compiled object (default dist/bpf/endpoint.bpf.o of this checkout) */
  objectPath?: string;
  logger?: DatapathLogger;
  /**
   * Proxy port + sockmap slot for an L7 redirect (default: `defaultProxyRedirect`). Return null
   * to leave the entry without redirect (then it is a plain allow).
   */
  proxyRedirect?: ProxyRedirect;
  /** Events buffered while nobody is subscribed (read after a restart), default 65536. */
  backlogLimit?: number;
  /**
   * Event budget of each sender (an endpoint's own packets; packets sent to an endpoint from
   * outside the node's endpoints): events per second and burst (default 1000/s, burst 1000;
   * rate 0 = unlimited). Events over budget are counted as lost for that sender.
   */
  eventRate?: { perSecond: number; burst: number };
  /** routing mode tunnel: pods may not send to the tunnel port (ENCAPSULATION_TRAFFIC_IS_PROHIBITED) */
  tunnel?: boolean;
  /**
   * Cilium's --monitor-aggregation as the datapath implements it (default medium: a connection's
   * packets are traced where conntrack reports them, bpf/README.md "Monitor aggregation"; low:
   * every packet, never on receive) and --monitor-aggregation-interval in seconds (default 5).
   */
  monitorAggregation?: MonitorAggregation;
  monitorIntervalS?: number;
  /**
   * IPv6 enforced like IPv4 (Cilium's `enable-ipv6`): parsed (extension headers, fragments),
   * identities from the ipcache's IPv6 prefixes, policy, conntrack. Default false: endpoints drop
   * every IPv6 packet with UNSUPPORTED_L3_PROTOCOL (139) and a flow, never forward it unenforced.
   */
  enableIPv6?: boolean;
  /**
   * Strict ingress of transparent encryption (Cilium's --enable-encryption-strict-mode-ingress):
   * a pod's packet from another node must arrive decrypted, else it is dropped with
   * UNENCRYPTED_TRAFFIC (195): tunnel routing, VXLAN that did not come out of cilium_wg0; native
   * routing, a remote pod's packet for a local pod on the underlay (mb_config DP_F_STRICT_INGRESS).
   */
  strictIngress?: boolean;
  /**
   * The kernel's BPF run-time stats on while the datapath runs (stats()' run counts and times; two
   * clock reads per program run, on every program of the machine). Default false, as Cilium: the
   * counts then only move while something else holds them on.
   */
  runTimeStats?: boolean;
  /**
   * The object already loaded (its programs verified, its maps the pinned ones): a standby agent
   * loads it while it waits, so that a restart does not wait for the verifier (preloadObject).
   */
  preloaded?: BpfObject;
}

/**
 * Loads the datapath's object against the node's pinned maps, without attaching anything. Refused
 * when a pinned map is of another definition (an upgrade): replacing it is the starting agent's
 * business, not a standby's while the previous agent still writes the maps.
 */
export function preloadObject(pinRoot: string, objectPath = DEFAULT_OBJECT_PATH): BpfObject {
  ensureBpffs();
  const differ = pinsToMigrate(objectPath, pinRoot);
  if (differ.length) {
    throw new MembraneError('DATAPATH_PINS_DIFFER', `pinned maps of another definition: ${differ.join(', ')}`, { hint: 'the agent replaces them when it starts' });
  }
  return BpfObject.load(objectPath, pinRoot);
}

// The proxy ports and sockmap slots are shared with the proxies (src/common/proxy-ports.ts).
/** The event budget when none is given (src/common/config.ts has the same default). */
export const DEFAULT_EVENT_RATE = { perSecond: 1000, burst: 1000 } as const;

export { DEFAULT_PROXY_PORTS, PROXY_UDP_SLOT_OFFSET, proxySlot, defaultProxyRedirect } from '../../common/proxy-ports.ts';
export { DEFAULT_OBJECT_PATH, destroy, linkPinPath } from './loader.ts';
export { openCtTable } from './ctmap.ts';

export class LinuxDatapath implements Datapath {
  private readonly opts: LinuxDatapathOptions;
  private readonly log: DatapathLogger;
  private readonly loader = new Loader();
  private readonly config: ConfigMap;
  private readonly endpoints: EndpointMap;
  private readonly policy: PolicyMap;
  private readonly ipcache: IPCacheMap;
  private readonly ct: CtMap;
  private readonly lb: LbMap;
  private readonly devices: NetworkDevices;
  private readonly events: EventReader;
  private statsEnabled = false;
  /** mb_node_macs as written (undefined until the first set after a start) */
  private nodeMacs: Map<string, string> | undefined;

  constructor(opts: LinuxDatapathOptions) {
    this.opts = opts;
    this.log = opts.logger ?? { info() {}, warn() {}, error() {}, debug() {} };
    this.config = new ConfigMap(this.loader);
    this.endpoints = new EndpointMap(this.loader, opts.pinRoot);
    this.policy = new PolicyMap(this.loader, opts.proxyRedirect ?? defaultProxyRedirect);
    this.ipcache = new IPCacheMap(this.loader);
    this.ct = new CtMap(this.loader);
    this.lb = new LbMap(this.loader);
    this.devices = new NetworkDevices(this.loader, opts.pinRoot);
    this.events = new EventReader(this.loader, this.log, opts.backlogLimit ?? 65536);
  }

  async start(): Promise<void> {
    if (this.loader.loaded) return;
    ensureBpffs();
    setLibbpfLogger((level, msg) => (level === 'warn' ? this.log.warn({ subsys: 'datapath' }, `libbpf: ${msg}`) : this.log.debug({ subsys: 'datapath' }, `libbpf: ${msg}`)));
    const t0 = process.hrtime.bigint();
    const migrated = this.loader.load(this.opts.objectPath ?? DEFAULT_OBJECT_PATH, this.opts.pinRoot, this.opts.preloaded);
    // an upgrade over an older build's pins: each replaced map said once, with what it costs
    logMigrations(this.log, 'datapath', migrated);
    const timeOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.events.resetLostBaseline();
    this.config.init(this.opts.eventRate ?? DEFAULT_EVENT_RATE, {
      tunnel: this.opts.tunnel ?? false, enableIPv6: this.opts.enableIPv6 ?? false, strictIngress: this.opts.strictIngress ?? false,
      ...(this.opts.monitorAggregation ? { monitorAggregation: this.opts.monitorAggregation } : {}),
      ...(this.opts.monitorIntervalS ? { monitorIntervalS: this.opts.monitorIntervalS } : {}),
    });
    this.endpoints.restore((id) => this.ct.ensureTables(id));
    this.lb.load();
    this.config.setFlag(DP_F_NO_SERVICES, this.lb.count() === 0);
    if (this.opts.runTimeStats) {
      try {
        enableRunTimeStats();
        this.statsEnabled = true;
      } catch (e) {
        this.log.warn({ subsys: 'datapath', err: String(e) }, 'BPF run-time stats unavailable');
      }
    }
    this.events.start(timeOffsetNs);
    this.log.info({ subsys: 'datapath', pinRoot: this.opts.pinRoot, loadMs: Number(process.hrtime.bigint() - t0) / 1e6 }, 'datapath loaded');
  }

  async stop(): Promise<void> {
    await this.events.stop();
    if (this.statsEnabled) disableRunTimeStats();
    this.statsEnabled = false;
    this.config.unmap();
    this.loader.close(); // links and maps stay pinned: enforcement continues
    this.lb.reset();
    this.devices.reset();
    this.policy.reset();
    this.nodeMacs = undefined;
    setLibbpfLogger(null);
  }

  // ---------------------------------------------------------------- endpoints

  async upsertEndpoint(ep: DatapathEndpoint): Promise<void> {
    const r = this.endpoints.upsert(ep, (isNew) => {
      // tables first: an endpoint without them has its packets dropped (CT_NO_MAP_FOUND)
      if (isNew) this.events.resetBudgets(ep.id);
      this.ct.ensureTables(ep.id);
    });
    // a direction without any policy entry is decided without looking (EP_F_NO_POLICY_*)
    this.endpoints.setPolicyHeld(ep.id, this.policy.holds(ep.id));
    if (r.policyChanged) this.config.bumpPolicyRevision();
    this.log.debug({ subsys: 'datapath', endpointID: ep.id, ifname: ep.ifname }, 'endpoint attached');
  }

  async removeEndpoint(id: number): Promise<void> {
    this.endpoints.remove(id);
    this.policy.removeEndpoint(id);
    this.ct.removeTables(id, this.endpoints.knownIds());
    this.events.resetBudgets(id);
    this.config.bumpPolicyRevision();
  }

  // ---------------------------------------------------------------- policy and ipcache

  async applyPolicy(endpointId: number, delta: MapStateDelta, full?: MapState): Promise<void> {
    // the datapath decides a direction whose "no policy" bit is set without looking: the bit goes
    // before the direction's first entry is written, and comes back only once its last is gone
    const held = this.policy.holds(endpointId);
    const adds = PolicyMap.directionsOf(delta, full);
    if ((adds.has('ingress') && !held.ingress) || (adds.has('egress') && !held.egress)) {
      this.endpoints.setPolicyHeld(endpointId, { ingress: held.ingress || adds.has('ingress'), egress: held.egress || adds.has('egress') });
    }
    const changed = this.policy.apply(endpointId, delta, full);
    this.endpoints.setPolicyHeld(endpointId, this.policy.holds(endpointId));
    const dd = full ? full.defaultDeny : delta.defaultDenyChanged ? delta.defaultDeny : undefined;
    if (dd) this.endpoints.setDefaultDeny(endpointId, dd);
    if (changed || dd) this.config.bumpPolicyRevision();
  }

  async upsertIPCache(entries: IPCacheEntry[]): Promise<void> {
    if (this.ipcache.upsert(entries)) this.config.bumpPolicyRevision();
  }

  async deleteIPCache(prefixes: string[]): Promise<void> {
    if (this.ipcache.delete(prefixes)) this.config.bumpPolicyRevision();
  }

  async setNodeMacs(macs: ReadonlyMap<string, string>): Promise<void> {
    const m = this.loader.map('mb_node_macs');
    // the first set after a start sweeps what an earlier agent left pinned
    if (!this.nodeMacs) {
      this.nodeMacs = new Map();
      for (const k of [...m.keys()]) this.nodeMacs.set(decodeNodeMacKey(k), '');
    }
    for (const [ip, mac] of macs) {
      if (this.nodeMacs.get(ip) === mac) continue;
      m.update(encodeNodeMacKey(ip), encodeNodeMac(mac));
      this.nodeMacs.set(ip, mac);
    }
    for (const ip of [...this.nodeMacs.keys()]) {
      if (macs.has(ip)) continue;
      m.delete(encodeNodeMacKey(ip));
      this.nodeMacs.delete(ip);
    }
  }

  /** The current policy revision (tests, status). */
  policyRevision(): number {
    return this.config.policyRevision();
  }

  // ---------------------------------------------------------------- services (lb4)

  // DP_F_NO_SERVICES lets pods' packets skip the frontend lookup: cleared before the first
  // service is written, set once the last one is gone, so no packet skips a frontend in the maps.
  async upsertService(svc: DatapathService): Promise<void> {
    this.config.setFlag(DP_F_NO_SERVICES, false);
    const backends = this.lb.upsert(svc);
    if (backends !== null) this.log.debug({ subsys: 'datapath', service: serviceKeyString(svc), backends }, 'service upserted');
  }

  async deleteService(k: DatapathServiceKey): Promise<void> {
    this.lb.delete(k);
    if (this.lb.count() === 0) this.config.setFlag(DP_F_NO_SERVICES, true);
  }

  async listServices(): Promise<DatapathService[]> {
    return this.lb.dump();
  }

  /** The services in the kernel maps (decoded). */
  serviceDump(): DatapathService[] {
    return this.lb.dump();
  }

  // ---------------------------------------------------------------- network devices

  /**
   * Attaches from_network at tcx ingress of a network device of the agent's namespace (world,
   * underlay). Idempotent; returns false when the device does not exist.
   */
  attachNetworkDevice(ifname: string, o: { underlay?: boolean } = {}): boolean {
    const ifindex = this.devices.attach(ifname, o);
    if (ifindex) this.log.debug({ subsys: 'datapath', ifname, ifindex, underlay: o.underlay ?? false }, 'network device attached');
    return ifindex > 0;
  }

  /**
   * Routing mode tunnel: from_overlay and to_overlay on the node's VXLAN device (external mode),
   * where tunnel keys are set and read. Idempotent; false when the device does not exist.
   */
  attachOverlayDevice(ifname: string): boolean {
    const ifindex = this.devices.attachOverlay(ifname);
    if (ifindex) this.config.setOverlayIfindex(ifindex);
    if (ifindex) this.log.debug({ subsys: 'datapath', ifname, ifindex }, 'overlay device attached');
    return ifindex > 0;
  }

  detachNetworkDevice(ifname: string): void {
    this.devices.detach(ifname);
  }

  // ---------------------------------------------------------------- proxies

  /** Registers (fd) or clears (null) the L7 proxy listener socket of a sockmap slot. */
  setProxyListener(slot: number, fd: number | null): void {
    const m = this.loader.map('mb_proxy_socks');
    if (fd === null) m.delete(encodeU32(slot));
    else m.update(encodeU32(slot), encodeSockmapFd(fd));
  }

  // ---------------------------------------------------------------- events

  onEvent(cb: (ev: DatapathEvent) => void): () => void {
    return this.events.subscribe(cb);
  }

  /**
   * Events the datapath did not deliver since start: the ring was full, or the sender's event
   * budget was spent. Two per-CPU array reads (stats() walks the maps).
   */
  eventsLost(): bigint {
    return this.events.lost();
  }

  /**
   * Events each sender lost to its budget (cumulative since the endpoint was added): `own` for
   * packets the endpoint sent, `external` for packets sent to it from outside the node's
   * endpoints. Endpoints without losses are left out.
   */
  eventsLostBySender(): Map<number, { own: bigint; external: bigint }> {
    return this.events.lostBySender(this.endpoints.knownIds());
  }

  /** Events consumed from the ring so far. */
  eventsRead(): number {
    return this.events.read();
  }

  // ---------------------------------------------------------------- inspection

  async stats(): Promise<DatapathStats> {
    const fi = this.loader.program('from_container').info();
    const ti = this.loader.program('to_container').info();
    const ni = this.loader.program('from_network').info();
    const oi = this.loader.program('from_overlay').info();
    const oe = this.loader.program('to_overlay').info();
    const ov = this.devices.overlayDevice();
    const ifs = this.endpoints.ifnames();
    const devs = this.devices.names();
    return {
      programs: [
        { name: 'from_container', attachedTo: `tcx-ingress:${ifs.join(',')}`, runCount: fi.runCnt, runTimeNs: fi.runTimeNs },
        { name: 'to_container', attachedTo: `tcx-egress:${ifs.join(',')}`, runCount: ti.runCnt, runTimeNs: ti.runTimeNs },
        ...(devs.length ? [{ name: 'from_network', attachedTo: `tcx-ingress:${devs.join(',')}`, runCount: ni.runCnt, runTimeNs: ni.runTimeNs }] : []),
        ...(ov ? [
          { name: 'from_overlay', attachedTo: `tcx-ingress:${ov}`, runCount: oi.runCnt, runTimeNs: oi.runTimeNs },
          { name: 'to_overlay', attachedTo: `tcx-egress:${ov}`, runCount: oe.runCnt, runTimeNs: oe.runTimeNs },
        ] : []),
      ],
      runTimeStats: this.statsEnabled,
      eventsLost: this.eventsLost(),
      policyEntries: this.policy.size(),
      ctEntries: this.ct.count(this.endpoints.knownIds()),
    };
  }

  /** Kernel counters (per-CPU stats map summed). */
  counters(): Counters {
    return readCounters(this.loader.map('mb_stats'));
  }

  /** Connection entries of every endpoint's tables (service entries included, fragment state not). */
  conntrack(): CtEntry[] {
    return this.ct.entries(this.endpoints.knownIds(), (e) => !e.fragment);
  }

  /** Fragment state: the first fragments' ports remembered for their datagrams. */
  fragments(): CtEntry[] {
    return this.ct.entries(this.endpoints.knownIds(), (e) => !!e.fragment);
  }

  /** Entries of one conntrack table (ctOwnIndex / ctExtIndex). */
  ctTable(index: number): CtEntry[] {
    return this.ct.table(index);
  }

  /** The policy entries in the kernel for one endpoint (decoded). */
  policyDump(endpointId: number): PolicyDumpEntry[] {
    return this.policy.dump(endpointId);
  }

  ipcacheInstance(): string {
    return `map-${this.loader.map('mb_ipcache').info.id}`;
  }

  ipcachePrefixes(): string[] {
    return this.ipcache.prefixes();
  }

  ipcacheLocalIdentities(): { prefix: string; identity: number }[] {
    return this.ipcache.localEntries();
  }

  ipcacheDump(): IPCacheEntry[] {
    return this.ipcache.dump();
  }
}

export function createLinuxDatapath(opts: LinuxDatapathOptions): LinuxDatapath {
  return new LinuxDatapath(opts);
}
