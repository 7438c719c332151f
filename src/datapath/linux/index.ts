/**
 * The eBPF datapath: loads bpf/endpoint.bpf.c (dist/bpf/endpoint.bpf.o) with its maps pinned
 * under `pinRoot`, attaches `from_container`/`to_container` to each endpoint's host-side veth
 * through pinned tcx links (enforcement outlives the agent), mirrors policy and ipcache into the
 * maps, and turns ring-buffer records into DatapathEvents.
 *
 * The agent runs in the node's network namespace with the host's bpffs; endpoints' host veths
 * are in that namespace, so attachment is by ifindex.
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { serviceKeyString, type Datapath, type DatapathEndpoint, type DatapathEvent, type DatapathService, type DatapathServiceKey, type DatapathStats, type IPCacheEntry } from '../types.ts';
import type { Direction, L7Policy, MapState, MapStateDelta, MapStateKey, MapStateEntry } from '../../policy/types.ts';
import { MembraneError } from '../../common/errors.ts';
import { defaultProxyRedirect } from '../../common/proxy-ports.ts';
import {
  BpfObject, BpfMap, type BpfProgram, attachTcx, detachPinnedLink, BPF_TCX_INGRESS, BPF_TCX_EGRESS, ensureBpffs,
  enableRunTimeStats, disableRunTimeStats, removePins, setLibbpfLogger, pinnedLinkInfo, ifNameToIndex, MapType,
} from '../../sys/bpf.ts';
import { MmapRing } from '../../sys/ring.ts';
import {
  EP_F_AUDIT, EP_F_DENY_EGRESS, EP_F_DENY_INGRESS, POLICY_KEY_SIZE, POLICY_VAL_SIZE, STAT_NAMES, decodeEpConfig, decodeEvent,
  decodeCt, ctKeyEndpoint, encodeEpConfig, encodeIpcacheKey, encodeIpcacheVal, encodePolicyKey, encodePolicyVal,
  encodeU32, policyValFor, decodePolicyKey, decodePolicyVal, decodeIpcacheKey, decodeIpcacheVal, type CtEntry, type EpConfig,
  encodeLb4Key, decodeLb4Key, encodeLb4Service, decodeLb4Service, encodeLb4Backend, decodeLb4Backend, encodeLb4RevNat, protoNumber,
  CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES, ctOwnIndex, ctExtIndex, encodeDpConfig, decodeDpConfig, eventBudget,
  decodeEvBucketLost, EV_BUCKET_SIZE, STAT_EVENTS_LIMITED,
} from './codec.ts';

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
  proxyRedirect?: (l7: L7Policy, direction: Direction) => { port: number; slot: number } | null;
  /** Events buffered while nobody is subscribed (read after a restart), default 65536. */
  backlogLimit?: number;
  /**
   * Event budget of each sender (an endpoint's own packets; packets sent to an endpoint from
   * outside the node's endpoints): events per second and burst (default 1000/s, burst 1000;
   * rate 0 = unlimited). Events over budget are counted as lost for that sender.
   */
  eventRate?: { perSecond: number; burst: number };
  /**
   * The object already loaded (its programs verified, its maps the pinned ones): a standby agent
   * loads it while it waits, so that a restart does not wait for the verifier (preloadObject).
   */
  preloaded?: BpfObject;
}

/** Loads the datapath's object against the node's pinned maps, without attaching anything. */
export function preloadObject(pinRoot: string, objectPath = DEFAULT_OBJECT_PATH): BpfObject {
  ensureBpffs();
  return BpfObject.load(objectPath, pinRoot);
}

// The proxy ports and sockmap slots are shared with the proxies (src/common/proxy-ports.ts).
/** The event budget when none is given (src/common/config.ts has the same default). */
export const DEFAULT_EVENT_RATE = { perSecond: 1000, burst: 1000 } as const;

export { DEFAULT_PROXY_PORTS, PROXY_UDP_SLOT_OFFSET, proxySlot, defaultProxyRedirect } from '../../common/proxy-ports.ts';

export const DEFAULT_OBJECT_PATH = fileURLToPath(new URL('../../../dist/bpf/endpoint.bpf.o', import.meta.url));

const MAPS = [
  'mb_endpoints', 'mb_ep_ids', 'mb_ipcache', 'mb_policy', 'mb_ct_tables', 'mb_config', 'mb_ev_buckets', 'mb_events', 'mb_lost',
  'mb_stats', 'mb_proxy_socks', 'mb_lb4_services', 'mb_lb4_backends', 'mb_lb4_reverse_nat',
] as const;
type MapName = (typeof MAPS)[number];

export function linkPinPath(pinRoot: string, ifname: string, dir: 'ingress' | 'egress'): string {
  return join(pinRoot, 'links', `${ifname}-${dir}`);
}

/**
 * Opens the conntrack table in slot `index` of a node's pinned table array (ctOwnIndex /
 * ctExtIndex); undefined when the slot is empty. The caller closes it.
 */
export function openCtTable(pinRoot: string, index: number): BpfMap | undefined {
  const outer = BpfMap.fromPin(join(pinRoot, 'mb_ct_tables'));
  try {
    return ctTableOf(outer, index);
  } finally {
    outer.close();
  }
}

function ctTableOf(outer: BpfMap, index: number): BpfMap | undefined {
  const v = outer.lookup(encodeU32(index));
  if (!v) return undefined;
  try {
    return BpfMap.fromId(v.readUInt32LE(0), `ct table ${index}`);
  } catch {
    return undefined; // freed between the lookup and the open
  }
}

/** Removes every pinned link (detaching the programs) and pinned map under pinRoot (`membrane down`). */
export function destroy(pinRoot: string): void {
  removePins(pinRoot);
}

interface EpState { ep: DatapathEndpoint; flags: number }
interface SvcState { revNat: number; proto: number; backendIds: number[] }
interface BackendState { id: number; refs: number }

export class LinuxDatapath implements Datapath {
  private readonly opts: LinuxDatapathOptions;
  private readonly log: DatapathLogger;
  private obj: BpfObject | null = null;
  private maps: Partial<Record<MapName, BpfMap>> = {};
  private progFrom: BpfProgram | null = null;
  private progTo: BpfProgram | null = null;
  private progNet: BpfProgram | null = null;
  /** network devices with from_network attached: ifname -> ifindex */
  private readonly netDevices = new Map<string, number>();
  /** service frontends (ip:port/PROTO) and backends (ip:port/protoNumber) as in the lb4 maps */
  private readonly services = new Map<string, SvcState>();
  private readonly backends = new Map<string, BackendState>();
  private ring: MmapRing | null = null;
  private readonly subscribers = new Set<(ev: DatapathEvent) => void>();
  private backlog: DatapathEvent[] = [];
  private timeOffsetNs = 0n;
  private lostBaseline = 0n;
  /** policy revision last written to mb_config (the datapath re-decides connections decided at an older one) */
  private policyRev = 0;
  private readonly endpoints = new Map<number, EpState>();
  /** ep_config flags (default deny, audit) per endpoint id, also for endpoints not yet upserted */
  private readonly flags = new Map<number, number>();
  /** policy keys per endpoint: hex(key) -> key; built from the map on first use */
  private policyIndex: Map<number, Map<string, Buffer>> | null = null;
  private statsEnabled = false;

  constructor(opts: LinuxDatapathOptions) {
    this.opts = opts;
    this.log = opts.logger ?? { info() {}, warn() {}, error() {}, debug() {} };
  }

  async start(): Promise<void> {
    if (this.obj) return;
    ensureBpffs();
    setLibbpfLogger((level, msg) => (level === 'warn' ? this.log.warn({ subsys: 'datapath' }, `libbpf: ${msg}`) : this.log.debug({ subsys: 'datapath' }, `libbpf: ${msg}`)));
    const t0 = process.hrtime.bigint();
    const obj = this.opts.preloaded ?? BpfObject.load(this.opts.objectPath ?? DEFAULT_OBJECT_PATH, this.opts.pinRoot);
    this.obj = obj;
    for (const m of MAPS) this.maps[m] = obj.map(m);
    this.progFrom = obj.program('from_container');
    this.progTo = obj.program('to_container');
    this.progNet = obj.program('from_network');
    this.timeOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.lostBaseline = this.sumPerCpu(this.map('mb_lost'), 0) + this.sumPerCpu(this.map('mb_stats'), STAT_EVENTS_LIMITED);
    const cfgKey = encodeU32(0);
    const old = this.map('mb_config').lookup(cfgKey);
    this.policyRev = old ? decodeDpConfig(old).policyRevision : 0;
    const rate = this.opts.eventRate ?? DEFAULT_EVENT_RATE;
    this.map('mb_config').update(cfgKey, encodeDpConfig({ policyRevision: this.policyRev, ...eventBudget(rate.perSecond, rate.burst) }));
    // endpoints known to the kernel (after an agent restart)
    for (const k of this.map('mb_endpoints').keys()) {
      const v = this.map('mb_endpoints').lookup(k);
      if (!v) continue;
      const c = decodeEpConfig(v);
      this.flags.set(c.epId, c.flags);
      this.ensureCtTables(c.epId);
      // by-id mirror (a pinned state from before the map existed, or a crash between the writes)
      this.map('mb_ep_ids').update(encodeU32(c.epId), v);
    }
    this.loadServices();
    try {
      enableRunTimeStats();
      this.statsEnabled = true;
    } catch (e) {
      this.log.warn({ subsys: 'datapath', err: String(e) }, 'BPF run-time stats unavailable');
    }
    this.ring = new MmapRing(this.map('mb_events').fd, (data, off) => this.dispatch(decodeEvent(data, off, this.timeOffsetNs)));
    this.ring.start();
    this.log.info({ subsys: 'datapath', pinRoot: this.opts.pinRoot, loadMs: Number(process.hrtime.bigint() - t0) / 1e6 }, 'datapath loaded');
  }

  async stop(): Promise<void> {
    if (this.ring) await this.ring.close();
    this.ring = null;
    if (this.statsEnabled) disableRunTimeStats();
    this.statsEnabled = false;
    this.obj?.close(); // links and maps stay pinned: enforcement continues
    this.obj = null;
    this.maps = {};
    this.progFrom = this.progTo = this.progNet = null;
    this.services.clear();
    this.backends.clear();
    this.netDevices.clear();
    this.policyIndex = null;
    setLibbpfLogger(null);
  }

  async upsertEndpoint(ep: DatapathEndpoint): Promise<void> {
    const { progFrom, progTo } = this.progs();
    if (!(ep.id >= 1 && ep.id <= 65535)) throw new MembraneError('DATAPATH_BAD_ENDPOINT', `endpoint id ${ep.id} out of range 1..65535`);
    if (!(ep.ifindex > 0)) throw new MembraneError('DATAPATH_BAD_ENDPOINT', `endpoint ${ep.id}: ifindex ${ep.ifindex} is invalid`, { hint: 'the host-side veth must exist in the agent namespace' });
    const epMap = this.map('mb_endpoints');
    const prev = this.endpoints.get(ep.id);
    if (prev && (prev.ep.ifindex !== ep.ifindex || prev.ep.ifname !== ep.ifname)) this.unplug(prev.ep);
    let known = this.flags.get(ep.id);
    if (known === undefined) {
      const old = epMap.lookup(encodeU32(ep.ifindex));
      known = old && decodeEpConfig(old).epId === ep.id ? decodeEpConfig(old).flags : 0;
    }
    // default-deny bits come from policy (applyPolicy); the audit bit from the endpoint
    const flags = (known & ~EP_F_AUDIT) | (ep.policyAuditMode ? EP_F_AUDIT : 0);
    this.flags.set(ep.id, flags);
    const cfg: EpConfig = { ifindex: ep.ifindex, epId: ep.id, flags, identity: ep.identity, ipv4: ep.ipv4, ...(ep.ipv6 ? { ipv6: ep.ipv6 } : {}), ...(ep.mac ? { mac: ep.mac } : {}) };
    // tables first: an endpoint without them has its packets dropped (CT_NO_MAP_FOUND)
    if (!prev) this.resetEventBudgets(ep.id);
    this.ensureCtTables(ep.id);
    epMap.update(encodeU32(ep.ifindex), encodeEpConfig(cfg));
    this.map('mb_ep_ids').update(encodeU32(ep.id), encodeEpConfig(cfg));
    attachTcx(progFrom.fd, ep.ifindex, BPF_TCX_INGRESS, linkPinPath(this.opts.pinRoot, ep.ifname, 'ingress'));
    attachTcx(progTo.fd, ep.ifindex, BPF_TCX_EGRESS, linkPinPath(this.opts.pinRoot, ep.ifname, 'egress'));
    this.endpoints.set(ep.id, { ep: { ...ep }, flags });
    // an identity change is a policy change for every connection to and from the endpoint
    // so is a change of audit mode: connections it let pass are decided again (turning audit off
    // drops the next packet of a connection only audit allowed)
    if (!prev || prev.ep.identity !== ep.identity || prev.flags !== flags || known !== flags) this.bumpPolicyRevision();
    this.log.debug({ subsys: 'datapath', endpointID: ep.id, ifname: ep.ifname }, 'endpoint attached');
  }

  async removeEndpoint(id: number): Promise<void> {
    const st = this.endpoints.get(id);
    if (st) this.unplug(st.ep);
    else {
      // after a restart: find the endpoint's config by id
      const epMap = this.map('mb_endpoints');
      for (const k of epMap.keys()) {
        const v = epMap.lookup(k);
        if (v && decodeEpConfig(v).epId === id) epMap.delete(k);
      }
      this.map('mb_ep_ids').delete(encodeU32(id));
    }
    this.endpoints.delete(id);
    this.flags.delete(id);
    const idx = this.index();
    const keys = idx.get(id);
    if (keys) this.map('mb_policy').deleteMany([...keys.values()]);
    idx.delete(id);
    // the endpoint's tables go (the kernel frees them); its entries in other endpoints' tables
    // (connections it received from them) are removed so a reused id starts clean
    const outer = this.map('mb_ct_tables');
    outer.delete(encodeU32(ctOwnIndex(id)));
    outer.delete(encodeU32(ctExtIndex(id)));
    for (const other of this.knownEndpointIds()) {
      if (other === id) continue;
      const t = ctTableOf(outer, ctOwnIndex(other));
      if (!t) continue;
      try {
        const stale: Buffer[] = [];
        for (const k of t.keys()) if (ctKeyEndpoint(k) === id) stale.push(k);
        t.deleteMany(stale);
      } finally {
        t.close();
      }
    }
    this.resetEventBudgets(id);
    this.bumpPolicyRevision();
  }

  /** Creates the endpoint's two conntrack tables if absent (or of another layout). */
  private ensureCtTables(id: number): void {
    const outer = this.map('mb_ct_tables');
    for (const [idx, kind] of [[ctOwnIndex(id), 'o'], [ctExtIndex(id), 'x']] as const) {
      const cur = ctTableOf(outer, idx);
      if (cur) {
        const ok = cur.info.type === MapType.LRU_HASH && cur.info.keySize === CT_KEY_SIZE && cur.info.valueSize === CT_VAL_SIZE &&
          cur.info.maxEntries === CT_TABLE_ENTRIES;
        cur.close();
        if (ok) continue;
      }
      const t = BpfMap.create(MapType.LRU_HASH, `mb_ct_${id}${kind}`, CT_KEY_SIZE, CT_VAL_SIZE, CT_TABLE_ENTRIES);
      try {
        outer.update(encodeU32(idx), encodeU32(t.fd));
      } finally {
        t.close(); // the array holds the table now
      }
    }
  }

  /** Zeroes an endpoint's event budgets (a new or removed endpoint inherits no losses). */
  private resetEventBudgets(id: number): void {
    const m = this.map('mb_ev_buckets');
    const zero = Buffer.alloc(EV_BUCKET_SIZE);
    m.update(encodeU32(ctOwnIndex(id)), zero);
    m.update(encodeU32(ctExtIndex(id)), zero);
  }

  /**
   * Every established connection's next forward packet is decided by policy again: called after
   * the maps hold a change of policy, ipcache or endpoints (never before: a packet that read the
   * old revision may have cached a verdict of the old maps).
   */
  private bumpPolicyRevision(): void {
    const m = this.map('mb_config');
    const key = encodeU32(0);
    const cur = m.lookup(key);
    const c = cur ? decodeDpConfig(cur) : { policyRevision: this.policyRev, ...eventBudget(0, 0) };
    this.policyRev = (Math.max(this.policyRev, c.policyRevision) + 1) >>> 0;
    m.update(key, encodeDpConfig({ ...c, policyRevision: this.policyRev }));
  }

  /** The current policy revision (tests, status). */
  policyRevision(): number {
    return this.policyRev;
  }

  /** Endpoint ids this datapath knows: attached since start, or configured in the pinned maps. */
  private knownEndpointIds(): number[] {
    const ids = new Set(this.endpoints.keys());
    const epMap = this.map('mb_endpoints');
    for (const k of epMap.keys()) {
      const v = epMap.lookup(k);
      if (v) ids.add(decodeEpConfig(v).epId);
    }
    return [...ids].sort((a, b) => a - b);
  }

  private unplug(ep: DatapathEndpoint): void {
    for (const d of ['ingress', 'egress'] as const) {
      const p = linkPinPath(this.opts.pinRoot, ep.ifname, d);
      const li = pinnedLinkInfo(p);
      if (!li || li.ifindex === ep.ifindex || li.ifindex === 0) detachPinnedLink(p);
    }
    const epMap = this.map('mb_endpoints');
    const v = epMap.lookup(encodeU32(ep.ifindex));
    if (v && decodeEpConfig(v).epId === ep.id) epMap.delete(encodeU32(ep.ifindex));
    const byId = this.map('mb_ep_ids');
    const w = byId.lookup(encodeU32(ep.id));
    if (w && decodeEpConfig(w).ifindex === ep.ifindex) byId.delete(encodeU32(ep.id));
  }

  async applyPolicy(endpointId: number, delta: MapStateDelta, full?: MapState): Promise<void> {
    const pol = this.map('mb_policy');
    const idx = this.index();
    let keys = idx.get(endpointId);
    if (!keys) idx.set(endpointId, (keys = new Map()));
    const upserts: { key: MapStateKey; entry: MapStateEntry }[] = full ? [...full.entries.values()] : delta.upserts;
    const kb = Buffer.alloc(upserts.length * POLICY_KEY_SIZE);
    const vb = Buffer.alloc(upserts.length * POLICY_VAL_SIZE);
    const desired = new Map<string, Buffer>();
    upserts.forEach((u, i) => {
      encodePolicyKey(endpointId, u.key, kb, i * POLICY_KEY_SIZE);
      const proxy = u.entry.l7 && u.entry.verdict === 'allow' ? (this.opts.proxyRedirect ?? defaultProxyRedirect)(u.entry.l7, u.key.direction) : null;
      encodePolicyVal(policyValFor(u.key, u.entry, proxy), vb, i * POLICY_VAL_SIZE);
      const k = Buffer.from(kb.subarray(i * POLICY_KEY_SIZE, (i + 1) * POLICY_KEY_SIZE));
      desired.set(k.toString('hex'), k);
    });
    const toDelete: Buffer[] = [];
    if (full) {
      for (const [h, k] of keys) if (!desired.has(h)) toDelete.push(k);
    } else {
      for (const d of delta.deletes) {
        const k = encodePolicyKey(endpointId, d);
        const h = k.toString('hex');
        if (!desired.has(h)) toDelete.push(k);
      }
    }
    // deletes first: a delta never deletes and upserts the same key, and for a full sync the
    // stale keys are disjoint from the desired ones, so ordering only bounds the map's peak size.
    pol.deleteMany(toDelete);
    for (const k of toDelete) keys.delete(k.toString('hex'));
    pol.updateBatch(kb, vb, upserts.length);
    for (const [h, k] of desired) keys.set(h, k);
    const dd = full ? full.defaultDeny : delta.defaultDenyChanged ? delta.defaultDeny : undefined;
    if (dd) this.setDefaultDeny(endpointId, ((this.flags.get(endpointId) ?? 0) & EP_F_AUDIT) | (dd.ingress ? EP_F_DENY_INGRESS : 0) | (dd.egress ? EP_F_DENY_EGRESS : 0));
    if (toDelete.length || upserts.length || dd) this.bumpPolicyRevision();
  }

  private setDefaultDeny(id: number, flags: number): void {
    this.flags.set(id, flags);
    const st = this.endpoints.get(id);
    const epMap = this.map('mb_endpoints');
    if (st) {
      st.flags = flags;
      const k = encodeU32(st.ep.ifindex);
      const v = epMap.lookup(k);
      if (v) {
        v.writeUInt8(flags, 6);
        epMap.update(k, v);
        this.map('mb_ep_ids').update(encodeU32(id), v);
      }
      return;
    }
    for (const k of epMap.keys()) {
      const v = epMap.lookup(k);
      if (v && decodeEpConfig(v).epId === id) {
        v.writeUInt8(flags, 6);
        epMap.update(k, v);
        this.map('mb_ep_ids').update(encodeU32(id), v);
      }
    }
  }

  async upsertIPCache(entries: IPCacheEntry[]): Promise<void> {
    const m = this.map('mb_ipcache');
    for (const e of entries) m.update(encodeIpcacheKey(e.prefix), encodeIpcacheVal(e.identity, e.endpointId ?? 0));
    if (entries.length) this.bumpPolicyRevision();
  }

  async deleteIPCache(prefixes: string[]): Promise<void> {
    const m = this.map('mb_ipcache');
    let n = 0;
    for (const p of prefixes) if (m.delete(encodeIpcacheKey(p))) n++;
    if (n) this.bumpPolicyRevision();
  }

  onEvent(cb: (ev: DatapathEvent) => void): () => void {
    this.subscribers.add(cb);
    if (this.backlog.length > 0) {
      const b = this.backlog;
      this.backlog = [];
      for (const ev of b) {
        try {
          cb(ev);
        } catch {
          /* subscriber errors are theirs */
        }
      }
    }
    return () => this.subscribers.delete(cb);
  }

  private dispatch(ev: DatapathEvent): void {
    if (this.subscribers.size === 0) {
      if (this.backlog.length < (this.opts.backlogLimit ?? 65536)) this.backlog.push(ev);
      return;
    }
    for (const cb of this.subscribers) {
      try {
        cb(ev);
      } catch (e) {
        this.log.warn({ subsys: 'datapath', err: String(e) }, 'event subscriber threw');
      }
    }
  }

  /**
   * Events the datapath did not deliver since start: the ring was full, or the sender's event
   * budget was spent. Two per-CPU array reads (stats() walks the maps).
   */
  eventsLost(): bigint {
    return this.sumPerCpu(this.map('mb_lost'), 0) + this.sumPerCpu(this.map('mb_stats'), STAT_EVENTS_LIMITED) - this.lostBaseline;
  }

  /**
   * Events each sender lost to its budget (cumulative since the endpoint was added): `own` for
   * packets the endpoint sent, `external` for packets sent to it from outside the node's
   * endpoints. Endpoints without losses are left out.
   */
  eventsLostBySender(): Map<number, { own: bigint; external: bigint }> {
    const m = this.map('mb_ev_buckets');
    const out = new Map<number, { own: bigint; external: bigint }>();
    const buf = Buffer.alloc(EV_BUCKET_SIZE);
    for (const id of this.knownEndpointIds()) {
      const own = m.lookup(encodeU32(ctOwnIndex(id)), buf) ? decodeEvBucketLost(buf) : 0n;
      const external = m.lookup(encodeU32(ctExtIndex(id)), buf) ? decodeEvBucketLost(buf) : 0n;
      if (own || external) out.set(id, { own, external });
    }
    return out;
  }

  async stats(): Promise<DatapathStats> {
    const { progFrom, progTo } = this.progs();
    const ifs = [...this.endpoints.values()].map((s) => s.ep.ifname).sort();
    const fi = progFrom.info(), ti = progTo.info();
    const ni = this.progNet?.info();
    let ctEntries = 0;
    this.eachCtTable((t) => { for (const _ of t.keys()) ctEntries++; });
    let policyEntries = 0;
    for (const s of this.index().values()) policyEntries += s.size;
    return {
      programs: [
        { name: 'from_container', attachedTo: `tcx-ingress:${ifs.join(',')}`, runCount: fi.runCnt, runTimeNs: fi.runTimeNs },
        { name: 'to_container', attachedTo: `tcx-egress:${ifs.join(',')}`, runCount: ti.runCnt, runTimeNs: ti.runTimeNs },
        ...(ni && this.netDevices.size ? [{ name: 'from_network', attachedTo: `tcx-ingress:${[...this.netDevices.keys()].sort().join(',')}`, runCount: ni.runCnt, runTimeNs: ni.runTimeNs }] : []),
      ],
      eventsLost: this.eventsLost(),
      policyEntries,
      ctEntries,
    };
  }

  // ---------------------------------------------------------------- services (lb4)

  async upsertService(svc: DatapathService): Promise<void> {
    const proto = protoNumber(svc.proto);
    const key = serviceKeyString(svc);
    const st = this.services.get(key);
    const seen = new Set<string>();
    const list = svc.backends.filter((b) => {
      const k = `${b.ip}:${b.port}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    if (list.length > 65535) throw new MembraneError('DATAPATH_SERVICE_TOO_BIG', `service ${key}: ${list.length} backends (max 65535)`);
    if (st) {
      const same = st.backendIds.length === list.length && list.every((b, i) => this.backends.get(`${b.ip}:${b.port}/${proto}`)?.id === st.backendIds[i]);
      if (same) return;
    }
    const svcMap = this.map('mb_lb4_services');
    const revNat = st?.revNat ?? this.allocRevNat();
    // backends first, then slots, then the master entry (a packet never sees a slot without its backend)
    const ids = list.map((b) => this.acquireBackend(b.ip, b.port, proto));
    this.map('mb_lb4_reverse_nat').update(encodeU32(revNat), encodeLb4RevNat(svc.ip, svc.port));
    ids.forEach((id, i) => svcMap.update(encodeLb4Key(svc.ip, svc.port, proto, i + 1), encodeLb4Service(id, 0, 0)));
    svcMap.update(encodeLb4Key(svc.ip, svc.port, proto, 0), encodeLb4Service(0, ids.length, revNat));
    const old = st?.backendIds ?? [];
    for (let i = ids.length; i < old.length; i++) svcMap.delete(encodeLb4Key(svc.ip, svc.port, proto, i + 1));
    for (const id of old) this.releaseBackend(id);
    this.services.set(key, { revNat, proto, backendIds: ids });
    this.log.debug({ subsys: 'datapath', service: key, backends: ids.length }, 'service upserted');
  }

  async deleteService(k: DatapathServiceKey): Promise<void> {
    const proto = protoNumber(k.proto);
    const key = serviceKeyString(k);
    const st = this.services.get(key);
    if (!st) return;
    const svcMap = this.map('mb_lb4_services');
    svcMap.delete(encodeLb4Key(k.ip, k.port, proto, 0));
    st.backendIds.forEach((_id, i) => svcMap.delete(encodeLb4Key(k.ip, k.port, proto, i + 1)));
    this.map('mb_lb4_reverse_nat').delete(encodeU32(st.revNat));
    for (const id of st.backendIds) this.releaseBackend(id);
    this.services.delete(key);
  }

  async listServices(): Promise<DatapathService[]> {
    return this.serviceDump();
  }

  /** The services in the kernel maps (decoded). */
  serviceDump(): DatapathService[] {
    const out: DatapathService[] = [];
    const byId = new Map<number, { ip: string; port: number }>();
    for (const [k, b] of this.backends) {
      const m = /^(.*):(\d+)\/\d+$/.exec(k);
      if (m) byId.set(b.id, { ip: m[1]!, port: Number(m[2]) });
    }
    for (const [key, st] of this.services) {
      const m = /^(.*):(\d+)\/(TCP|UDP)$/.exec(key);
      if (!m) continue;
      out.push({ ip: m[1]!, port: Number(m[2]), proto: m[3] as 'TCP' | 'UDP', backends: st.backendIds.map((id) => byId.get(id)!).filter(Boolean) });
    }
    return out;
  }

  private allocRevNat(): number {
    const used = new Set([...this.services.values()].map((s) => s.revNat));
    for (let i = 1; i <= 65535; i++) if (!used.has(i)) return i;
    throw new MembraneError('DATAPATH_SERVICE_EXHAUSTED', 'no free reverse-NAT id (65535 services)');
  }

  private acquireBackend(ip: string, port: number, proto: number): number {
    const k = `${ip}:${port}/${proto}`;
    const b = this.backends.get(k);
    if (b) {
      b.refs++;
      return b.id;
    }
    const used = new Set([...this.backends.values()].map((x) => x.id));
    let id = 1;
    while (used.has(id)) id++;
    this.map('mb_lb4_backends').update(encodeU32(id), encodeLb4Backend(ip, port, proto));
    this.backends.set(k, { id, refs: 1 });
    return id;
  }

  private releaseBackend(id: number): void {
    for (const [k, b] of this.backends) {
      if (b.id !== id) continue;
      if (--b.refs <= 0) {
        this.backends.delete(k);
        this.map('mb_lb4_backends').delete(encodeU32(id));
      }
      return;
    }
  }

  /** Rebuilds the service/backend bookkeeping from the pinned maps (after an agent restart). */
  private loadServices(): void {
    this.services.clear();
    this.backends.clear();
    const beMap = this.map('mb_lb4_backends');
    const beById = new Map<number, string>();
    for (const k of beMap.keys()) {
      const v = beMap.lookup(k);
      if (!v) continue;
      const b = decodeLb4Backend(v);
      const id = k.readUInt32LE(0);
      const key = `${b.ip}:${b.port}/${b.proto}`;
      beById.set(id, key);
      this.backends.set(key, { id, refs: 0 });
    }
    const svcMap = this.map('mb_lb4_services');
    const slots = new Map<string, { master?: { count: number; revNat: number }; ids: Map<number, number>; ip: string; port: number; proto: number }>();
    for (const k of svcMap.keys()) {
      const v = svcMap.lookup(k);
      if (!v) continue;
      const d = decodeLb4Key(k);
      const sk = `${d.ip}:${d.port}/${d.proto === 17 ? 'UDP' : 'TCP'}`;
      let e = slots.get(sk);
      if (!e) slots.set(sk, (e = { ids: new Map(), ip: d.ip, port: d.port, proto: d.proto }));
      const sv = decodeLb4Service(v);
      if (d.slot === 0) e.master = { count: sv.count, revNat: sv.revNat };
      else e.ids.set(d.slot, sv.backendId);
    }
    for (const [sk, e] of slots) {
      if (!e.master) {
        for (const slot of e.ids.keys()) svcMap.delete(encodeLb4Key(e.ip, e.port, e.proto, slot));
        continue;
      }
      const ids: number[] = [];
      for (let i = 1; i <= e.master.count; i++) ids.push(e.ids.get(i) ?? 0);
      for (const id of ids) {
        const bk = beById.get(id);
        if (bk) this.backends.get(bk)!.refs++;
      }
      this.services.set(sk, { revNat: e.master.revNat, proto: e.proto, backendIds: ids });
    }
    for (const [k, b] of [...this.backends]) {
      if (b.refs === 0) {
        beMap.delete(encodeU32(b.id));
        this.backends.delete(k);
      }
    }
  }

  // ---------------------------------------------------------------- network devices

  /**
   * Attaches from_network at tcx ingress of a network device of the agent's namespace (world,
   * underlay): new connections from outside to local endpoints get their ingress policy (and L7
   * redirect) there. Idempotent; returns false when the device does not exist.
   */
  attachNetworkDevice(ifname: string): boolean {
    if (!this.progNet) throw new MembraneError('DATAPATH_NOT_STARTED', 'datapath is not started', { hint: 'call start() first' });
    const ifindex = ifNameToIndex(ifname);
    if (!ifindex) return false;
    attachTcx(this.progNet.fd, ifindex, BPF_TCX_INGRESS, linkPinPath(this.opts.pinRoot, ifname, 'ingress'));
    this.netDevices.set(ifname, ifindex);
    this.log.debug({ subsys: 'datapath', ifname, ifindex }, 'network device attached');
    return true;
  }

  detachNetworkDevice(ifname: string): void {
    detachPinnedLink(linkPinPath(this.opts.pinRoot, ifname, 'ingress'));
    this.netDevices.delete(ifname);
  }

  // ---------------------------------------------------------------- extras (not in Datapath)

  /** Kernel counters (per-CPU stats map summed). */
  counters(): Record<(typeof STAT_NAMES)[number], bigint> {
    const m = this.map('mb_stats');
    const out = {} as Record<(typeof STAT_NAMES)[number], bigint>;
    STAT_NAMES.forEach((n, i) => (out[n] = this.sumPerCpu(m, i)));
    return out;
  }

  /** Registers (fd) or clears (null) the L7 proxy listener socket of a sockmap slot. */
  setProxyListener(slot: number, fd: number | null): void {
    const m = this.map('mb_proxy_socks');
    if (fd === null) m.delete(encodeU32(slot));
    else {
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(BigInt(fd));
      m.update(encodeU32(slot), v);
    }
  }

  /** Connection entries of every endpoint's tables (service entries included, fragment state not). */
  conntrack(): CtEntry[] {
    return this.ctEntries((e) => !e.fragment);
  }

  /** Fragment state: the first fragments' ports remembered for their datagrams. */
  fragments(): CtEntry[] {
    return this.ctEntries((e) => !!e.fragment);
  }

  /** Entries of one conntrack table (ctOwnIndex / ctExtIndex). */
  ctTable(index: number): CtEntry[] {
    const t = ctTableOf(this.map('mb_ct_tables'), index);
    if (!t) return [];
    try {
      return this.decodeTable(t, () => true);
    } finally {
      t.close();
    }
  }

  private ctEntries(pred: (e: CtEntry) => boolean): CtEntry[] {
    const out: CtEntry[] = [];
    this.eachCtTable((t) => { out.push(...this.decodeTable(t, pred)); });
    return out;
  }

  private decodeTable(t: BpfMap, pred: (e: CtEntry) => boolean): CtEntry[] {
    const out: CtEntry[] = [];
    for (const k of t.keys()) {
      const v = t.lookup(k);
      if (!v) continue;
      const e = decodeCt(k, v);
      if (pred(e)) out.push(e);
    }
    return out;
  }

  private eachCtTable(fn: (t: BpfMap) => void): void {
    const outer = this.map('mb_ct_tables');
    for (const id of this.knownEndpointIds()) {
      for (const idx of [ctOwnIndex(id), ctExtIndex(id)]) {
        const t = ctTableOf(outer, idx);
        if (!t) continue;
        try {
          fn(t);
        } finally {
          t.close();
        }
      }
    }
  }

  /** The policy entries in the kernel for one endpoint (decoded). */
  policyDump(endpointId: number): { key: MapStateKey; deny: boolean; proxyPort: number; matchType: number }[] {
    const pol = this.map('mb_policy');
    const out: { key: MapStateKey; deny: boolean; proxyPort: number; matchType: number }[] = [];
    for (const k of this.index().get(endpointId)?.values() ?? []) {
      const v = pol.lookup(k);
      if (!v) continue;
      const pv = decodePolicyVal(v);
      out.push({ key: decodePolicyKey(k).key, deny: pv.deny, proxyPort: pv.proxyPort, matchType: pv.matchType });
    }
    return out;
  }

  ipcacheDump(): IPCacheEntry[] {
    const m = this.map('mb_ipcache');
    const out: IPCacheEntry[] = [];
    for (const k of m.keys()) {
      const v = m.lookup(k);
      if (v) {
        const d = decodeIpcacheVal(v);
        out.push({ prefix: decodeIpcacheKey(k), identity: d.identity, ...(d.endpointId ? { endpointId: d.endpointId } : {}) });
      }
    }
    return out;
  }

  /** Events consumed from the ring so far. */
  eventsRead(): number {
    return this.ring?.records ?? 0;
  }

  // ---------------------------------------------------------------- helpers

  private index(): Map<number, Map<string, Buffer>> {
    if (this.policyIndex) return this.policyIndex;
    const idx = new Map<number, Map<string, Buffer>>();
    for (const k of this.map('mb_policy').keys()) {
      const ep = k.readUInt16LE(4);
      let s = idx.get(ep);
      if (!s) idx.set(ep, (s = new Map()));
      s.set(k.toString('hex'), k);
    }
    this.policyIndex = idx;
    return idx;
  }

  private sumPerCpu(m: BpfMap, idx: number): bigint {
    const v = m.lookup(encodeU32(idx));
    if (!v) return 0n;
    let s = 0n;
    for (let o = 0; o + 8 <= v.length; o += 8) s += v.readBigUInt64LE(o);
    return s;
  }

  private map(n: MapName): BpfMap {
    const m = this.maps[n];
    if (!m) throw new MembraneError('DATAPATH_NOT_STARTED', 'datapath is not started', { hint: 'call start() first' });
    return m;
  }

  private progs(): { progFrom: BpfProgram; progTo: BpfProgram } {
    if (!this.progFrom || !this.progTo) throw new MembraneError('DATAPATH_NOT_STARTED', 'datapath is not started', { hint: 'call start() first' });
    return { progFrom: this.progFrom, progTo: this.progTo };
  }
}

export function createLinuxDatapath(opts: LinuxDatapathOptions): LinuxDatapath {
  return new LinuxDatapath(opts);
}
