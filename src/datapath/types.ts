/**
 * The Datapath boundary. The agent drives a Datapath; src/datapath/linux implements it with
 * eBPF (bpf/), src/datapath/fake in memory for tests. Events flow back as DatapathEvent, the
 * decoded form of the records the BPF programs write to the ring buffer (bpf/lib/events.h).
 */
import type { Direction, MapStateDelta, MapState } from '../policy/types.ts';

/** A local endpoint as the datapath sees it. */
export interface DatapathEndpoint {
  /** Cilium endpoint ID (1..65535) */
  id: number;
  /** security identity of the endpoint */
  identity: number;
  ipv4: string;
  ipv6?: string;
  mac?: string;
  /** host-side veth (in the agent's network namespace) */
  ifname: string;
  ifindex: number;
  /**
   * Cilium's policy audit mode for this endpoint (the agent resolves the endpoint's
   * PolicyAuditMode option against the global setting): L3/L4 policy drops pass, reported audited.
   */
  policyAuditMode?: boolean;
}

export interface IPCacheEntry {
  /** "10.244.1.5/32", "198.51.100.0/24", "::/0" */
  prefix: string;
  identity: number;
  /** endpoint ID if the IP is a local endpoint, else 0 */
  endpointId?: number;
  /** Cilium's tunnel endpoint: the underlay address of the node the prefix lives on (a node's own address names itself) */
  tunnelEndpoint?: string;
}

/** Monitor event types (pkg/monitor/api/types.go). */
export const EventType = { DROP: 1, DEBUG: 2, CAPTURE: 3, TRACE: 4, POLICY_VERDICT: 5, L7: 129, AGENT: 130 } as const;

/** Trace observation points, datapath numbering (0 = to-endpoint). */
export const TracePoint = {
  TO_ENDPOINT: 0, TO_PROXY: 1, TO_HOST: 2, TO_STACK: 3, TO_OVERLAY: 4, FROM_ENDPOINT: 5,
  FROM_PROXY: 6, FROM_HOST: 7, FROM_STACK: 8, FROM_OVERLAY: 9, FROM_NETWORK: 10, TO_NETWORK: 11,
} as const;

/** Conntrack result carried in trace events (flow TraceReason numbering). */
export const CtReason = { UNKNOWN: 0, NEW: 1, ESTABLISHED: 2, REPLY: 3, RELATED: 4 } as const;

export interface DatapathEvent {
  type: number; // EventType
  /** DROP: drop reason (133, 181...); TRACE: observation point; POLICY_VERDICT: 0 */
  subType: number;
  /** CLOCK_MONOTONIC ns from bpf_ktime_get_ns, converted to wall time by the reader */
  timeNs: bigint;
  /**
   * The same time as two numbers, whole seconds and the nanoseconds past them (timeNs =
   * timeSec * 1e9 + timeNsec), when the decoder has them: the kernel reader's events carry them so
   * that nothing per event needs a BigInt (Hubble's flow builder reads these first).
   */
  timeSec?: number;
  timeNsec?: number;
  /** Local endpoint the event was observed at (0 if none) */
  endpointId: number;
  ifindex: number;
  /** Security identities as resolved by the datapath */
  srcIdentity: number;
  dstIdentity: number;
  ipVersion: 4 | 6;
  srcIp: string;
  dstIp: string;
  proto: number;
  srcPort: number;
  dstPort: number;
  /** TCP flags byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128) */
  tcpFlags: number;
  icmpType: number;
  icmpCode: number;
  /** CtReason */
  ctReason: number;
  /** POLICY_VERDICT: direction of the policy decision; DROP/TRACE: direction at the endpoint */
  direction: Direction | 'unknown';
  /** POLICY_VERDICT: <0 drop (−reason), 0 forwarded, >0 redirected to proxy port */
  verdict: number;
  matchType: number;
  authType: number;
  /** POLICY_VERDICT: the policy would have dropped the packet; the endpoint's audit mode let it pass (Hubble's AUDIT) */
  audited?: boolean;
  /** packet length on the wire */
  length: number;
  /** the frame's ethertype as the datapath saw it (0x0800 IPv4; others only on UNSUPPORTED_L3_PROTOCOL drops) */
  etherType?: number;
}

/**
 * A subscriber's own copy of an event (the reader's object is refilled by the next record): a
 * plain object, its time as timeNs alone.
 */
export function copyEvent(ev: DatapathEvent): DatapathEvent {
  const c: DatapathEvent = {
    type: ev.type, subType: ev.subType, timeNs: ev.timeNs, endpointId: ev.endpointId, ifindex: ev.ifindex,
    srcIdentity: ev.srcIdentity, dstIdentity: ev.dstIdentity, ipVersion: ev.ipVersion, srcIp: ev.srcIp, dstIp: ev.dstIp,
    proto: ev.proto, srcPort: ev.srcPort, dstPort: ev.dstPort, tcpFlags: ev.tcpFlags, icmpType: ev.icmpType, icmpCode: ev.icmpCode,
    ctReason: ev.ctReason, direction: ev.direction, verdict: ev.verdict, matchType: ev.matchType, authType: ev.authType, length: ev.length,
  };
  if (ev.etherType !== undefined) c.etherType = ev.etherType;
  if (ev.audited) c.audited = true;
  return c;
}

export interface DatapathStats {
  programs: { name: string; attachedTo: string; runCount: bigint; runTimeNs: bigint }[];
  /** the kernel's BPF run-time stats are on by this datapath's setting (else runCount and
   *  runTimeNs move only while another holder keeps them on) */
  runTimeStats: boolean;
  /** events the datapath did not deliver: ring full, or the sender's event budget spent */
  eventsLost: bigint;
  policyEntries: number;
  ctEntries: number;
}

/** Protocols a service frontend can have. */
export type ServiceProto = 'TCP' | 'UDP';

/** A service frontend (ClusterIP:port/proto) and its backends, as the datapath load-balances it. */
export interface DatapathService {
  /** frontend address (a ClusterIP of either family); backends are of the same family */
  ip: string;
  port: number;
  proto: ServiceProto;
  /** backends in a stable order; empty = connections are dropped (SERVICE_BACKEND_NOT_FOUND, 158) */
  backends: { ip: string; port: number }[];
}

export type DatapathServiceKey = Pick<DatapathService, 'ip' | 'port' | 'proto'>;

export function serviceKeyString(s: DatapathServiceKey): string {
  return `${s.ip}:${s.port}/${s.proto}`;
}

/** One tracked connection, as the parts above the datapath need it (the DNS proxy's GC and its original destinations). */
export interface ConntrackEntry {
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  proto: number;
  direction: Direction;
  endpointId: number;
}

export interface Datapath {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Attach programs to the endpoint's veth and register it; idempotent (replace). */
  upsertEndpoint(ep: DatapathEndpoint): Promise<void>;
  removeEndpoint(id: number): Promise<void>;
  /** Apply a policy delta (or a full MapState on first sync) for one endpoint. */
  applyPolicy(endpointId: number, delta: MapStateDelta, full?: MapState): Promise<void>;
  upsertIPCache(entries: IPCacheEntry[]): Promise<void>;
  deleteIPCache(prefixes: string[]): Promise<void>;
  /**
   * The other nodes' link-layer addresses on the underlay, by InternalIP (IPv4), from their node
   * entries; replaces the previous set. A remote pod's packet on the underlay (routing mode native)
   * passes only from its node's MAC: a node not in the set sends none.
   */
  setNodeMacs(macs: ReadonlyMap<string, string>): Promise<void>;
  /**
   * The prefixes in the kernel's ipcache now (survivors of an earlier agent included): what a
   * restarted agent compares with what it wants, to remove what nobody claims any more.
   */
  ipcachePrefixes(): string[];
  /**
   * The kernel's ipcache entries with a node-local identity (CIDR, FQDN): a restarted agent keeps
   * those numbers for their prefixes (src/identity/allocator.ts hold). Optional: a datapath that
   * keeps nothing across restarts omits it.
   */
  ipcacheLocalIdentities?(): { prefix: string; identity: number }[];
  /**
   * Which ipcache map instance the datapath writes (the kernel's map id while pinned): a restarted
   * agent resumes its cluster watch from a saved revision only into the very map that holds what
   * that revision says. Optional: without it, every start lists the cluster whole.
   */
  ipcacheInstance?(): string;
  /**
   * Creates or replaces a service frontend and its backends (socket-less ClusterIP load balancing
   * at the client's from_container). Optional: datapaths without load balancing omit it.
   */
  upsertService?(svc: DatapathService): Promise<void>;
  /** Removes a service frontend (absent is fine). */
  deleteService?(key: DatapathServiceKey): Promise<void>;
  /** The service frontends the datapath has (after an agent restart: what the pinned maps hold). */
  listServices?(): Promise<DatapathService[]>;
  /** Registers (fd) or removes (null) the listening socket of a proxy slot (src/common/proxy-ports.ts). */
  setProxyListener(slot: number, fd: number | null): void;
  /** The connections the datapath tracks now. */
  conntrack(): ConntrackEntry[];
  /**
   * Subscribe to decoded events; returns an unsubscribe function. The event is the subscriber's
   * during the call only: the kernel reader refills one object per record, so a subscriber that
   * keeps an event keeps a copy (`copyEvent`).
   */
  onEvent(cb: (ev: DatapathEvent) => void): () => void;
  /** Events the kernel could not deliver (ring full) since start. */
  stats(): Promise<DatapathStats>;
}
