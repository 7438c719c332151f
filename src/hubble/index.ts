/**
 * Hubble for one node: DatapathEvents → flows → ring → observer gRPC server. The agent calls
 * `ingest` for each decoded datapath event and `ingestFlow` for flows built elsewhere (L7 from
 * the proxies); subscribers registered with `onFlow` (metrics, exporters) see every decoded flow
 * before it enters the ring (Cilium's OnDecodedFlow hook).
 */
import type { DatapathEvent } from '../datapath/types.ts';
import { createFlowBuilder, keepDatapathFlow, type EndpointResolver } from './flow.ts';
import { createFlowIdSource } from './flow-id.ts';
import { createL7Parser } from './l7-parser.ts';
import type { AccessLogRecord, DnsAccessRecord, HttpAccessRecord } from '../common/access-log.ts';
import { FlowRing, timeInRing, DEFAULT_RING_CAPACITY } from './ring.ts';
import { createHubbleServer, type HubbleServer } from './observer.ts';
import type { HubbleTcpSecurity } from './tls.ts';
import { FlowSchema, LostEventSource, type Flow } from './gen/flow/flow_pb.js';
import { clone } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';

export type { EndpointResolver } from './flow.ts';
export { FlowRing } from './ring.ts';
export { LostEventSource } from './gen/flow/flow_pb.js';
export { hubbleServerName, hubbleTcpSecurity, HUBBLE_SERVER_PORT, type HubbleTcpSecurity, type HubbleServerTlsFiles, type HubbleTlsSettings } from './tls.ts';

export interface HubbleDeps {
  nodeName: string;
  resolver: EndpointResolver;
  /** unix socket for the Observer API, e.g. labPaths().hubbleSocket(node) */
  socketPath: string;
  /** optional TCP listener (Hubble's 4244; 0 = any free port) */
  tcpPort?: number;
  tcpHost?: string;
  /** required with tcpPort: mutual TLS files, or `{ plaintext: true }` explicitly */
  tcpSecurity?: HubbleTcpSecurity;
  /** address peers and `hubble list nodes` show (Cilium: the node IP and 4244) */
  peerAddress?: string;
  /** every node of the cluster for Peer.Notify (name, `ip:4244`); absent: this node only */
  peers?: () => { name: string; address: string }[];
  /** unix socket joined to the TCP listener (the lab Relay's way into the node namespace) */
  tcpForwardSocket?: string;
  /** ring capacity, 2^n − 1 (default 4095) */
  capacity?: number;
  /** ServerStatus version string (default `membrane v0.1.0`) */
  version?: string;
  clusterName?: string;
  /** epoch ms of agent start (default now) */
  startedAt?: number;
}

export interface Hubble {
  ring: FlowRing;
  server: HubbleServer;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Decode one datapath event into a flow and store it; returns the flow (undefined if not a flow event). */
  ingest(ev: DatapathEvent): Flow | undefined;
  /**
   * As ingest, for a caller that reads the flow during the call only (the agent's datapath event
   * path): when every onFlow subscriber borrows too, the flow is the builder's one scratch Flow,
   * refilled by the next event (flow.ts FlowBuilder.borrow), so an event leaves no Flow behind.
   */
  ingestBorrowed(ev: DatapathEvent): Flow | undefined;
  /** Store a flow built elsewhere (L7 proxy flows); fills node_name, uuid and time when empty. */
  ingestFlow(flow: Flow): void;
  /**
   * A proxy's access record as its L7 flow (Hubble's seven parser, l7-parser.ts), stored as
   * ingestFlow does; the ring keeps the proxies' common HTTP and DNS flows compactly (ring.ts CompactFlow).
   */
  ingestRecord(rec: AccessLogRecord): void;
  /** Record lost events (e.g. OBSERVER_EVENTS_QUEUE). */
  reportLost(source: LostEventSource, count: number, cpu?: number): void;
  /** Feed the datapath's cumulative kernel loss counter; the increase becomes a PERF_EVENT_RING_BUFFER LostEvent. */
  reportKernelLost(total: bigint | number): void;
  /**
   * Subscribe to every decoded flow (metrics, exporters). Returns unsubscribe. `borrows`: the
   * subscriber reads a flow during the call only and keeps no part of it that the flow alone holds
   * (its Timestamp, Layer4 or the Flow itself), so a borrowed flow may be refilled after the call.
   * A borrowed L7 flow's uuid is made when read (flow-id.ts lentFlow): read it as a field, or copy
   * the flow with clone(FlowSchema, …); a spread ({...flow}) copies no uuid.
   */
  onFlow(cb: (flow: Flow) => void, opts?: { borrows?: boolean }): () => void;
  /** The TCP listener (`:4244` when on every address), whether it serves mutual TLS, and its server name. */
  listener(): { address: string; tls: boolean; serverName?: string } | undefined;
  stats(): { seenFlows: number; numFlows: number; maxFlows: number; lost: Partial<Record<keyof typeof LostEventSource, number>> };
}

const EMITTER = { $typeName: 'flow.Emitter' as const, name: 'Hubble', version: '1.19.4' };

export function createHubble(deps: HubbleDeps): Hubble {
  const ring = new FlowRing(deps.capacity ?? DEFAULT_RING_CAPACITY);
  const fillWorkloads = (ep: Flow['source'], ip: string | undefined) => {
    if (!ep || !ip || ep.workloads.length || !ep.podName) return;
    const r = deps.resolver.byIp(ip);
    if (r?.workloads && r.pod === ep.podName && r.namespace === ep.namespace) {
      ep.workloads = r.workloads.map((w) => ({ $typeName: 'flow.Workload', name: w.name, kind: w.kind }));
    }
  };
  // one id sequence for datapath and L7 flows
  const ids = createFlowIdSource();
  const flowId = () => ids.next();
  // a borrowed datapath flow's uuid is lent from `ids` (made only when read), as an L7 one's
  const build = createFlowBuilder({ nodeName: deps.nodeName, resolver: deps.resolver, clusterName: deps.clusterName, ids });
  // the proxies' records, their peers resolved as the datapath flows' (a pod on another node named as in its L3/L4 flows)
  const parseL7 = createL7Parser({ nodeName: deps.nodeName, resolver: deps.resolver, clusterName: deps.clusterName });
  let seen = 0;
  let kernelLostSeen: bigint | undefined;
  const subscribers: ((flow: Flow) => void)[] = [];
  /** subscribers that may keep a flow: while there is one, ingestBorrowed builds new flows */
  const keepers = new Set<(flow: Flow) => void>();
  const server = createHubbleServer({
    socketPath: deps.socketPath,
    tcpPort: deps.tcpPort,
    tcpHost: deps.tcpHost,
    tcpSecurity: deps.tcpSecurity,
    clusterName: deps.clusterName,
    peerAddress: deps.peerAddress,
    ...(deps.peers ? { peers: deps.peers } : {}),
    ...(deps.tcpForwardSocket ? { tcpForwardSocket: deps.tcpForwardSocket } : {}),
    ring,
    nodeName: deps.nodeName,
    version: deps.version ?? 'membrane v0.1.0',
    startedAt: deps.startedAt ?? Date.now(),
    seenFlows: () => seen,
  });

  /** Hands the flow to the subscribers; returns its time in the ring. */
  function publish(flow: Flow): number {
    hand(flow);
    return timeInRing(flow);
  }

  /** Hands the flow to the subscribers. */
  function hand(flow: Flow): void {
    seen++;
    for (const s of subscribers) {
      try {
        s(flow);
      } catch { /* a subscriber never breaks the pipeline */ }
    }
  }

  function ingestDatapath(flow: Flow | undefined, borrowed: boolean): Flow | undefined {
    if (!flow) return flow;
    // the flow's id as the ring keeps it (its parts), taken before a subscriber could draw another
    const head = ids.head, low = ids.low;
    const timeMs = publish(flow);
    // kept compactly (flow.ts DatapathCompact): read back as an equal Flow. The builder's flows
    // always fit; were one not to, a borrowed flow is copied (its own Timestamp and Layer4) first.
    if (!keepDatapathFlow(ring, flow, timeMs, head, low)) ring.pushFlow(borrowed ? clone(FlowSchema, flow) : flow, timeMs);
    return flow;
  }

  function store(flow: Flow): void {
    ring.pushFlow(flow, publish(flow));
  }

  /** What Hubble fills in a flow built elsewhere. */
  function finish(flow: Flow): void {
    if (!flow.uuid) flow.uuid = flowId();
    finishLent(flow);
  }

  /** finish() but the uuid: a lent L7 flow's is drawn and lent by ingestRecord. */
  function finishLent(flow: Flow): void {
    if (!flow.nodeName) flow.nodeName = deps.nodeName;
    if (!flow.time) flow.time = timestampFromMs(Date.now());
    // Hubble names itself on every flow, L7 ones included
    if (!flow.emitter) flow.emitter = EMITTER;
    // the proxies know endpoints, not the controllers owning them: name the workloads (the
    // *_workload metric labels, --from-workload) as datapath flows do
    fillWorkloads(flow.source, flow.IP?.source);
    fillWorkloads(flow.destination, flow.IP?.destination);
  }

  return {
    ring,
    server,
    start: () => server.start(),
    stop: () => server.stop(),
    ingest(ev) {
      return ingestDatapath(build(ev), false);
    },
    ingestBorrowed(ev) {
      return keepers.size ? ingestDatapath(build(ev), false) : ingestDatapath(build.borrow(ev), true);
    },
    ingestFlow(flow) {
      finish(flow);
      store(flow);
    },
    ingestRecord(rec) {
      // a DNS or plain HTTP record's flow is borrowed (the parser's scratch, refilled by the next)
      // when every subscriber borrows: the ring keeps it compactly, so a query or a request leaves
      // no Flow behind (the agent's metrics borrow: compose.ts). HTTP with a trace, an AI call or a
      // reason is kept whole (keep()): made new, not copied from the scratch.
      const borrowed = keepers.size === 0 && (rec.l7 === 'dns' || (rec.l7 === 'http' && rec.traceId === undefined && rec.ai === undefined && rec.reason === undefined));
      // the parser leaves the uuid empty: `ids` holds the one finish() gives it. A borrowed flow's
      // is lent (the id drawn, its string made only if a subscriber reads flow.uuid, as the ring
      // makes it from the same two parts when the flow is read)
      let flow: Flow;
      if (borrowed) {
        ids.advance();
        flow = parseL7.borrow(rec as DnsAccessRecord | HttpAccessRecord, ids);
        finishLent(flow);
      } else {
        flow = parseL7(rec);
        finish(flow);
      }
      hand(flow);
      // keep() reads the flow's time in the ring itself: a double returned from, or passed to, a
      // call TurboFan does not inline is a heap number, one per record (16 B)
      // a flow the compact form does not hold: a borrowed one is copied (its own Timestamp, Layer4 and Layer7) first
      if (!parseL7.keep(ring, rec, flow, ids)) ring.pushFlow(borrowed ? clone(FlowSchema, flow) : flow, timeInRing(flow));
    },
    reportLost(source, count, cpu) {
      ring.reportLost(source, count, { cpu });
    },
    reportKernelLost(total) {
      const t = BigInt(total);
      const prev = kernelLostSeen ?? 0n;
      kernelLostSeen = t;
      if (t > prev) ring.reportLost(LostEventSource.PERF_EVENT_RING_BUFFER, Number(t - prev));
    },
    onFlow(cb, opts) {
      subscribers.push(cb);
      if (!opts?.borrows) keepers.add(cb);
      return () => {
        const i = subscribers.indexOf(cb);
        if (i >= 0) subscribers.splice(i, 1);
        if (!subscribers.includes(cb)) keepers.delete(cb);
      };
    },
    listener() {
      const a = server.tcpAddress();
      if (!a) return undefined;
      const serverName = server.tlsServerName();
      const host = a.host === '::' || a.host === '0.0.0.0' ? '' : a.host.includes(':') ? `[${a.host}]` : a.host;
      return { address: `${host}:${a.port}`, tls: serverName !== undefined, ...(serverName ? { serverName } : {}) };
    },
    stats() {
      const lost: Partial<Record<keyof typeof LostEventSource, number>> = {};
      for (const [k, v] of ring.lostTotals) lost[LostEventSource[k] as keyof typeof LostEventSource] = v;
      return { seenFlows: seen, numFlows: ring.length, maxFlows: ring.capacity, lost };
    },
  };
}
