/**
 * In-memory Datapath for unit tests: records endpoints, per-endpoint MapState (applied exactly
 * as the kernel maps would be: full replace or delta) and the ipcache; `inject(event)` feeds
 * subscribers as if the ring buffer had produced it; `decide()` answers a policy lookup with
 * the same contract as the C (src/policy/lookup.ts).
 */
import { serviceKeyString, type ConntrackEntry, type Datapath, type DatapathEndpoint, type DatapathEvent, type DatapathService, type DatapathServiceKey, type DatapathStats, type IPCacheEntry } from './types.ts';
import { type Direction, type MapState, type MapStateDelta, mapStateKeyString } from '../policy/types.ts';
import { auditVerdict, lookupMapState, type AuditedResult } from '../policy/lookup.ts';

export interface FakeCall { method: string; args: unknown[] }

export class FakeDatapath implements Datapath {
  started = false;
  readonly endpoints = new Map<number, DatapathEndpoint>();
  readonly policies = new Map<number, MapState>();
  readonly ipcache = new Map<string, IPCacheEntry>();
  /** the other nodes' underlay MACs by InternalIP (setNodeMacs) */
  nodeMacs = new Map<string, string>();
  /** service frontends by `ip:port/PROTO` */
  readonly services = new Map<string, DatapathService>();
  readonly calls: FakeCall[] = [];
  eventsLost = 0n;
  private readonly subs = new Set<(ev: DatapathEvent) => void>();
  /** proxy listeners by slot (setProxyListener) */
  readonly proxyListeners = new Map<number, number>();
  /** what conntrack() answers */
  readonly connections: ConntrackEntry[] = [];

  setProxyListener(slot: number, fd: number | null): void {
    this.calls.push({ method: 'setProxyListener', args: [slot, fd] });
    if (fd === null) this.proxyListeners.delete(slot);
    else this.proxyListeners.set(slot, fd);
  }

  conntrack(): ConntrackEntry[] {
    return [...this.connections];
  }

  async start(): Promise<void> {
    this.calls.push({ method: 'start', args: [] });
    this.started = true;
  }

  async stop(): Promise<void> {
    this.calls.push({ method: 'stop', args: [] });
    this.started = false;
  }

  async upsertEndpoint(ep: DatapathEndpoint): Promise<void> {
    this.calls.push({ method: 'upsertEndpoint', args: [ep] });
    this.endpoints.set(ep.id, { ...ep });
  }

  async removeEndpoint(id: number): Promise<void> {
    this.calls.push({ method: 'removeEndpoint', args: [id] });
    this.endpoints.delete(id);
    this.policies.delete(id);
  }

  async applyPolicy(endpointId: number, delta: MapStateDelta, full?: MapState): Promise<void> {
    this.calls.push({ method: 'applyPolicy', args: [endpointId, delta, full] });
    if (full) {
      this.policies.set(endpointId, { entries: new Map(full.entries), defaultDeny: { ...full.defaultDeny } });
      return;
    }
    let ms = this.policies.get(endpointId);
    if (!ms) this.policies.set(endpointId, (ms = { entries: new Map(), defaultDeny: { ingress: false, egress: false } }));
    for (const k of delta.deletes) ms.entries.delete(mapStateKeyString(k));
    for (const u of delta.upserts) ms.entries.set(mapStateKeyString(u.key), { key: { ...u.key }, entry: u.entry });
    if (delta.defaultDenyChanged && delta.defaultDeny) ms.defaultDeny = { ...delta.defaultDeny };
  }

  async upsertIPCache(entries: IPCacheEntry[]): Promise<void> {
    this.calls.push({ method: 'upsertIPCache', args: [entries] });
    for (const e of entries) this.ipcache.set(e.prefix, { ...e });
  }

  async deleteIPCache(prefixes: string[]): Promise<void> {
    this.calls.push({ method: 'deleteIPCache', args: [prefixes] });
    for (const p of prefixes) this.ipcache.delete(p);
  }

  async setNodeMacs(macs: ReadonlyMap<string, string>): Promise<void> {
    this.calls.push({ method: 'setNodeMacs', args: [macs] });
    this.nodeMacs = new Map(macs);
  }

  ipcachePrefixes(): string[] {
    return [...this.ipcache.keys()];
  }

  async upsertService(svc: DatapathService): Promise<void> {
    this.calls.push({ method: 'upsertService', args: [svc] });
    this.services.set(serviceKeyString(svc), { ...svc, backends: svc.backends.map((b) => ({ ...b })) });
  }

  async deleteService(key: DatapathServiceKey): Promise<void> {
    this.calls.push({ method: 'deleteService', args: [key] });
    this.services.delete(serviceKeyString(key));
  }

  async listServices(): Promise<DatapathService[]> {
    return [...this.services.values()].map((s) => ({ ...s, backends: s.backends.map((b) => ({ ...b })) }));
  }

  /** The backend the kernel would pick for a new connection (same slot arithmetic, any hash). */
  backendFor(ip: string, port: number, proto: 'TCP' | 'UDP', hash: number): { ip: string; port: number } | 'drop' | undefined {
    const s = this.services.get(serviceKeyString({ ip, port, proto }));
    if (!s) return undefined;
    if (s.backends.length === 0) return 'drop';
    return s.backends[(hash >>> 0) % s.backends.length];
  }

  onEvent(cb: (ev: DatapathEvent) => void): () => void {
    this.subs.add(cb);
    return () => this.subs.delete(cb);
  }

  /** Delivers an event to every subscriber, as the ring consumer would. */
  inject(ev: Partial<DatapathEvent> & Pick<DatapathEvent, 'type'>): DatapathEvent {
    const full: DatapathEvent = {
      subType: 0, timeNs: BigInt(Date.now()) * 1_000_000n, endpointId: 0, ifindex: 0, srcIdentity: 0, dstIdentity: 0, ipVersion: 4,
      srcIp: '0.0.0.0', dstIp: '0.0.0.0', proto: 0, srcPort: 0, dstPort: 0, tcpFlags: 0, icmpType: 0, icmpCode: 0, ctReason: 0,
      direction: 'unknown', verdict: 0, matchType: 0, authType: 0, length: 0, ...ev,
    };
    for (const s of this.subs) s(full);
    return full;
  }

  /** The verdict the kernel would give a new connection (no entry/endpoint: forward). */
  decide(endpointId: number, dir: Direction, remoteIdentity: number, proto: number, port: number): AuditedResult {
    const ms = this.policies.get(endpointId) ?? { entries: new Map(), defaultDeny: { ingress: false, egress: false } };
    return auditVerdict(lookupMapState(ms, dir, remoteIdentity, proto, port), this.endpoints.get(endpointId)?.policyAuditMode ?? false);
  }

  /** Longest-prefix ipcache lookup (IPv4), identity 2 (world) on a miss. */
  identityOf(ip: string): number {
    const parts = ip.split('.').map(Number);
    if (parts.length !== 4) return 2;
    const addr = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
    let best: IPCacheEntry | undefined;
    let bestLen = -1;
    for (const e of this.ipcache.values()) {
      const [p, l] = e.prefix.split('/');
      const pp = (p ?? '').split('.').map(Number);
      if (pp.length !== 4) continue;
      const len = Number(l ?? 32);
      const net = ((pp[0]! << 24) | (pp[1]! << 16) | (pp[2]! << 8) | pp[3]!) >>> 0;
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      if ((addr & mask) === (net & mask) && len > bestLen) {
        best = e;
        bestLen = len;
      }
    }
    return best?.identity ?? 2;
  }

  async stats(): Promise<DatapathStats> {
    let policyEntries = 0;
    for (const ms of this.policies.values()) policyEntries += ms.entries.size;
    return { programs: [], runTimeStats: false, eventsLost: this.eventsLost, policyEntries, ctEntries: 0 };
  }
}

export function createFakeDatapath(): FakeDatapath {
  return new FakeDatapath();
}
