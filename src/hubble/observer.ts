/**
 * The Hubble gRPC server: observer.Observer (GetFlows, ServerStatus, GetNodes, GetNamespaces,
 * empty agent/debug event streams), peer.Peer (Notify: this node) and grpc.health.v1.Health
 * (`hubble.server.Observer` SERVING), over HTTP/2 on a root-only unix socket (0600) and optionally
 * TCP, with @connectrpc/connect-node (gRPC, gRPC-web and Connect protocols on one listener).
 * The TCP listener serves mutual TLS (./tls.ts) unless plain text is asked for explicitly: anyone
 * who reaches the port would otherwise read every flow of the node.
 * GetFlows positioning follows spec/hubble.md §2.2.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { chmodSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { create, fromBinary, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { timestampFromMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { MembraneError } from '../common/errors.ts';
import { FlowSchema, type Flow } from './gen/flow/flow_pb.js';
import {
  Observer, GetFlowsRequestSchema, GetFlowsResponseSchema, ServerStatusResponseSchema, GetNodesResponseSchema, GetNamespacesResponseSchema,
  type GetFlowsRequest, type GetFlowsResponse,
} from './gen/observer/observer_pb.js';
import { NodeState } from './gen/relay/relay_pb.js';
import { Peer, ChangeNotificationType } from './gen/peer/peer_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from './gen/grpc/health/v1/health_pb.js';
import { compileRequestFilter, FilterError, type FlowPredicate } from './filter.ts';
import type { FlowRing } from './ring.ts';
import { hubbleServerName, serverTlsOptions, type HubbleTcpSecurity } from './tls.ts';
import type { LostEvent } from './gen/flow/flow_pb.js';
import { ByteWriter, flowBytes, topLevelMask, writeFlowFrame, writeMessageFrame } from './wire.ts';

export const HEALTH_SERVICE = 'hubble.server.Observer';

export interface HubbleServerOptions {
  /** unix socket path (a stale file is removed first) */
  socketPath: string;
  /** optional TCP listener (Hubble's 4244); needs `tcpSecurity` */
  tcpPort?: number;
  tcpHost?: string;
  /** mutual TLS with these files, or `{ plaintext: true }` (Cilium's --hubble-disable-tls) */
  tcpSecurity?: HubbleTcpSecurity;
  ring: FlowRing;
  nodeName: string;
  /** for the TLS server name `<node>.<cluster>.hubble-grpc.cilium.io` (default `default`) */
  clusterName?: string;
  /** ServerStatus.version, e.g. `membrane v0.1.0` */
  version: string;
  /** epoch ms */
  startedAt: number;
  /** flows decoded since start (ServerStatus.seen_flows) */
  seenFlows: () => number;
  /** address peers should use (Peer.Notify); default the TCP address or the unix socket */
  peerAddress?: string;
  /**
   * Every node of the cluster (Cilium's agent serves Peer.Notify from its node manager, so a Relay
   * dialling any one agent learns them all); absent: this node only. Read again every second.
   */
  peers?: () => { name: string; address: string }[];
  /**
   * A root-only unix socket whose connections are joined, byte for byte, to the TCP listener (a
   * port-forward): the lab host has no route into node namespaces, so the lab's Relay reaches a
   * node's 4244 through it. Nothing is judged here: TLS (and its client certificate check) is
   * still the TCP listener's, end to end.
   */
  tcpForwardSocket?: string;
}

export interface HubbleServer {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** TCP port actually bound (when tcpPort was given; 0 picks a free one) */
  tcpAddress(): { host: string; port: number } | undefined;
  /** the name clients verify on the TCP listener's certificate; undefined when it is plain text or absent */
  tlsServerName(): string | undefined;
}

/** One step of a GetFlows walk: a flow to send, a loss to tell, wait for the ring (follow), or the end. */
type FlowStep = { kind: 'flow'; flow: Flow } | { kind: 'lost'; response: GetFlowsResponse } | { kind: 'wait' } | { kind: 'end' };
const WAIT: FlowStep = { kind: 'wait' };
const END: FlowStep = { kind: 'end' };

interface FlowCursor {
  /** the request's field mask as a copy of the flow, when it has one */
  mask: (<T extends object>(msg: T) => T) | undefined;
  /** the same mask as top-level field numbers, when every path is a top-level field (wire.ts) */
  keep: Set<number> | undefined;
  next(): FlowStep;
  /** resolves when the ring has more (after a `wait` step) or on abort */
  wait(signal: AbortSignal): Promise<void>;
}

/** gRPC over HTTP/2, binary: what the fast path serves (hubble CLI, Relay, the UI server's relay). */
const GRPC_CONTENT_TYPE = /^application\/grpc(\+proto)?$/i;
const GETFLOWS_PATH = '/observer.Observer/GetFlows';
/** a GetFlowsRequest is filters and a few numbers: far below this */
const MAX_REQUEST_BYTES = 1 << 20;
/** response frames gathered before one write (then the event loop gets a turn) */
const BATCH_BYTES = 64 * 1024;

/** grpc-timeout (gRPC over HTTP/2: up to 8 digits and a unit) in ms, or undefined. */
function grpcTimeoutMs(v: string | string[] | undefined): number | undefined {
  const m = typeof v === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(v) : null;
  if (!m) return undefined;
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as 'H'];
  return Number(m[1]) * unit;
}

function tsMs(t: Timestamp): number {
  return Number(t.seconds) * 1000 + t.nanos / 1e6;
}

/** Copy only the masked paths (proto names, dotted) of a message. Throws on an unknown path. */
export function compileFieldMask(schema: DescMessage, paths: readonly string[]): (<T extends object>(msg: T) => T) | undefined {
  if (paths.length === 0) return undefined;
  type Node = { whole: boolean; children: Map<string, Node> };
  const root: Node = { whole: false, children: new Map() };
  for (const p of paths) {
    let n = root;
    let s: DescMessage | undefined = schema;
    for (const part of p.split('.')) {
      const field: DescField | undefined = s?.fields.find((f) => f.name === part);
      if (!field) throw new ConnectError(`invalid field mask path "${p}"`, Code.InvalidArgument);
      s = field.fieldKind === 'message' ? field.message : undefined;
      let c = n.children.get(part);
      if (!c) n.children.set(part, (c = { whole: false, children: new Map() }));
      n = c;
    }
    n.whole = true;
  }
  const copy = (sch: DescMessage, src: Record<string, unknown>, node: Node): Record<string, unknown> => {
    const out = create(sch) as unknown as Record<string, unknown>;
    for (const [name, child] of node.children) {
      const field = sch.fields.find((f) => f.name === name)!;
      if (field.oneof) {
        const o = src[field.oneof.localName] as { case?: string } | undefined;
        if (o?.case === field.localName) out[field.oneof.localName] = o;
        continue;
      }
      const v = src[field.localName];
      if (v === undefined) continue;
      if (child.whole || field.fieldKind !== 'message') out[field.localName] = v;
      else out[field.localName] = copy(field.message, v as Record<string, unknown>, child);
    }
    return out;
  };
  return <T extends object>(msg: T) => copy(schema, msg as Record<string, unknown>, root) as T;
}

/** Flows per second over the last minute (entries newer than now − 60 s, over 60 s). */
function flowsRate(ring: FlowRing, now: number): number {
  let n = 0;
  for (let p = ring.end() - 1; p >= ring.oldest(); p--) {
    if (ring.timeAt(p) < now - 60_000) break;
    if (ring.kindAt(p) === 'flow') n++;
  }
  return n / 60;
}

export function createHubbleServer(opts: HubbleServerOptions): HubbleServer {
  const { ring, nodeName } = opts;
  let shutdown = new AbortController();
  const servers: (http2.Http2Server | http2.Http2SecureServer)[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  let forward: net.Server | undefined;
  const forwarded = new Set<net.Socket>();
  let tcpBound: { host: string; port: number } | undefined;
  let tcpTls = false;
  const serverName = hubbleServerName(nodeName, opts.clusterName);

  function lostResponse(lost: LostEvent, timeMs: number): GetFlowsResponse {
    return create(GetFlowsResponseSchema, {
      responseTypes: { case: 'lostEvents', value: lost },
      nodeName,
      time: timestampFromMs(timeMs),
    });
  }

  /**
   * One GetFlows request's walk over the ring (spec/hubble.md §2.2 positioning), step by step:
   * the connect handler and the gRPC fast path (fastGetFlows) share it. Throws InvalidArgument.
   */
  function openFlows(req: GetFlowsRequest): FlowCursor {
    if (req.first && req.follow) throw new ConnectError('first cannot be specified with follow', Code.InvalidArgument);
    let pass: FlowPredicate;
    try {
      pass = compileRequestFilter(req.whitelist, req.blacklist);
    } catch (e) {
      if (e instanceof FilterError) throw new ConnectError(e.message, Code.InvalidArgument);
      throw e;
    }
    // The hubble CLI up to v1.17 sends its mask in experimental.field_mask, later ones in field_mask.
    const paths = req.fieldMask?.paths.length ? req.fieldMask.paths : req.experimental?.fieldMask?.paths ?? [];
    let mask: ReturnType<typeof compileFieldMask>;
    try {
      mask = compileFieldMask(FlowSchema, paths);
    } catch (e) {
      throw new ConnectError((e as Error).message, Code.InvalidArgument);
    }
    const sinceMs = req.since ? tsMs(req.since) : undefined;
    const untilMs = req.until ? tsMs(req.until) : undefined;
    const number = req.number > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(req.number);

    let pos: number;
    if (req.first) {
      pos = ring.oldest();
    } else if (req.follow && number === 0 && sinceMs === undefined) {
      pos = ring.end();
    } else {
      // walk backwards counting matching flows until `number`, `since` or the ring start
      pos = ring.end();
      const oldest = ring.oldest();
      let count = 0;
      while (pos > oldest && (number === 0 || count < number)) {
        // the time first: an L7 flow kept compact is made a Flow by at()
        if (sinceMs !== undefined && ring.timeAt(pos - 1) < sinceMs) break;
        const e = ring.at(pos - 1);
        if (!e) break;
        if (e.kind === 'flow' && (untilMs === undefined || e.timeMs <= untilMs) && pass(e.flow)) count++;
        pos--;
      }
    }

    let sent = 0;
    return {
      mask,
      keep: topLevelMask(FlowSchema, paths),
      next(): FlowStep {
        for (;;) {
          const r = ring.read(pos);
          if (r.kind === 'eof') return req.follow ? WAIT : END;
          pos = r.next;
          if (r.kind === 'overwritten') return { kind: 'lost', response: lostResponse(r.lost, r.timeMs) };
          const e = r.entry;
          if (sinceMs !== undefined && e.timeMs < sinceMs) continue;
          if (e.kind === 'lost') return { kind: 'lost', response: lostResponse(e.lost, e.timeMs) };
          if (untilMs !== undefined && e.timeMs > untilMs) return END;
          if (!req.follow && number > 0 && sent >= number) continue; // only lost events after the last flow
          if (!pass(e.flow)) continue;
          sent++;
          return { kind: 'flow', flow: e.flow };
        }
      },
      wait: (signal) => ring.waitFor(pos, signal),
    };
  }

  async function* getFlows(req: GetFlowsRequest, ctx: HandlerContext): AsyncGenerator<GetFlowsResponse> {
    const c = openFlows(req);
    const signal = ctx.signal;
    for (;;) {
      if (signal.aborted) return;
      const s = c.next();
      if (s.kind === 'end') return;
      if (s.kind === 'wait') {
        await c.wait(signal);
        continue;
      }
      if (s.kind === 'lost') {
        yield s.response;
        continue;
      }
      yield create(GetFlowsResponseSchema, {
        responseTypes: { case: 'flow', value: c.mask ? c.mask(s.flow) : s.flow },
        nodeName: s.flow.nodeName,
        time: s.flow.time,
      });
    }
  }

  async function waitAbort(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  }

  function uptimeNs(): bigint {
    return BigInt(Math.max(0, Math.round((Date.now() - opts.startedAt) * 1e6)));
  }

  function routes(router: ConnectRouter): void {
    router.service(Observer, {
      getFlows,
      async *getAgentEvents(req, ctx) {
        if (req.follow) await waitAbort(ctx.signal);
      },
      async *getDebugEvents(req, ctx) {
        if (req.follow) await waitAbort(ctx.signal);
      },
      serverStatus() {
        return create(ServerStatusResponseSchema, {
          numFlows: BigInt(ring.length),
          maxFlows: BigInt(ring.capacity),
          seenFlows: BigInt(opts.seenFlows()),
          uptimeNs: uptimeNs(),
          version: opts.version,
          flowsRate: flowsRate(ring, Date.now()),
        });
      },
      getNodes() {
        return create(GetNodesResponseSchema, {
          nodes: [{
            name: nodeName,
            version: opts.version,
            address: peerAddress(),
            state: NodeState.NODE_CONNECTED,
            tls: tcpTls ? { enabled: true, serverName } : { enabled: false, serverName: '' },
            uptimeNs: uptimeNs(),
            numFlows: BigInt(ring.length),
            maxFlows: BigInt(ring.capacity),
            seenFlows: BigInt(opts.seenFlows()),
          }],
        });
      },
      getNamespaces() {
        const seen = new Map<string, { cluster: string; namespace: string }>();
        const cutoff = Date.now() - 3_600_000;
        for (let p = ring.end() - 1; p >= ring.oldest(); p--) {
          const e = ring.at(p);
          if (!e || e.timeMs < cutoff) break;
          if (e.kind !== 'flow') continue;
          for (const ep of [e.flow.source, e.flow.destination]) {
            if (ep?.namespace) seen.set(`${ep.clusterName}\0${ep.namespace}`, { cluster: ep.clusterName, namespace: ep.namespace });
          }
        }
        const namespaces = [...seen.values()].sort((a, b) => a.cluster.localeCompare(b.cluster) || a.namespace.localeCompare(b.namespace));
        return create(GetNamespacesResponseSchema, { namespaces });
      },
    });
    router.service(Peer, {
      async *notify(_req, ctx) {
        // The agent's view of the cluster: everything it knows first (PEER_ADDED), then changes.
        const current = (): Map<string, string> => {
          const m = new Map<string, string>();
          if (opts.peers) for (const p of opts.peers()) m.set(p.name, p.address);
          if (!m.has(nodeName)) m.set(nodeName, peerAddress());
          return m;
        };
        const note = (name: string, address: string, type: ChangeNotificationType) => ({
          name, address, type, ...(tcpTls ? { tls: { serverName: hubbleServerName(name, opts.clusterName) } } : {}),
        });
        let known = current();
        for (const [name, address] of known) yield note(name, address, ChangeNotificationType.PEER_ADDED);
        if (!opts.peers) {
          await waitAbort(ctx.signal);
          return;
        }
        // One abort listener for the stream's life: a listener added per tick stayed on the signal
        // until the stream ended (a Relay's stream lives as long as the agent), so the list grew by
        // one a second and every add walked it (EventTarget checks for duplicates).
        let wake: (() => void) | undefined;
        let tick: NodeJS.Timeout | undefined;
        const onAbort = () => { clearTimeout(tick); wake?.(); };
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        try {
          while (!ctx.signal.aborted) {
            await new Promise<void>((resolve) => {
              wake = resolve;
              tick = setTimeout(resolve, 1000);
            });
            if (ctx.signal.aborted) return;
            const now = current();
            for (const [name, address] of known) if (!now.has(name)) yield note(name, address, ChangeNotificationType.PEER_DELETED);
            for (const [name, address] of now) {
              const had = known.get(name);
              if (had === undefined) yield note(name, address, ChangeNotificationType.PEER_ADDED);
              else if (had !== address) yield note(name, address, ChangeNotificationType.PEER_UPDATED);
            }
            known = now;
          }
        } finally {
          clearTimeout(tick);
          ctx.signal.removeEventListener('abort', onAbort);
        }
      },
    });
    const status = (service: string) => {
      if (service === '' || service === HEALTH_SERVICE) return HealthCheckResponse_ServingStatus.SERVING;
      return undefined;
    };
    router.service(Health, {
      check(req) {
        const s = status(req.service);
        if (s === undefined) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
        return { status: s };
      },
      async *watch(req, ctx) {
        yield { status: status(req.service) ?? HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN };
        await waitAbort(ctx.signal);
      },
    });
  }

  function peerAddress(): string {
    if (opts.peerAddress) return opts.peerAddress;
    if (tcpBound) return `${tcpBound.host === '::' || tcpBound.host === '0.0.0.0' ? '127.0.0.1' : tcpBound.host}:${tcpBound.port}`;
    return `unix://${opts.socketPath}`;
  }

  /**
   * GetFlows over gRPC (binary), served here instead of by connect-node: the responses are
   * written as bytes (wire.ts: each flow encoded once, a top-level mask applied to its bytes) and
   * many frames at a time, one write per 64 KiB or per wake-up of a follow, where connect-node
   * copied, encoded and wrote each message through an async iterator (bench/ui/replay-server.ts:
   * most of the server's CPU in a 10,000-flow replay). Same positioning, filters and errors
   * (openFlows); gRPC-web, Connect and JSON clients, and compressed requests, stay with connect-node.
   * Returns false when the request is not one of these.
   */
  function fastGetFlows(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): boolean {
    if (req.method !== 'POST' || req.url !== GETFLOWS_PATH) return false;
    if (!GRPC_CONTENT_TYPE.test(String(req.headers['content-type'] ?? '').split(';')[0]!.trim())) return false;
    const encoding = req.headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') return false;
    void serveGetFlows(req, res);
    return true;
  }

  async function serveGetFlows(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): Promise<void> {
    const ac = new AbortController();
    const stop = () => ac.abort();
    let gone = false;
    const onClose = () => { gone = true; ac.abort(); };
    res.on('close', onClose);
    const stopping = shutdown.signal;
    stopping.addEventListener('abort', stop, { once: true });
    let expired = false;
    const timeoutMs = grpcTimeoutMs(req.headers['grpc-timeout']);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => { expired = true; ac.abort(); }, timeoutMs);
    let status = { code: 0, message: '' };
    let started = false;
    const send = async (b: Buffer) => {
      if (!started) {
        started = true;
        res.writeHead(200, { 'content-type': 'application/grpc+proto' });
      }
      if (res.write(b) || ac.signal.aborted) return;
      await new Promise<void>((resolve) => {
        const done = () => { res.off('drain', done); ac.signal.removeEventListener('abort', done); resolve(); };
        res.on('drain', done);
        ac.signal.addEventListener('abort', done, { once: true });
      });
    };
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > MAX_REQUEST_BYTES) throw new ConnectError(`request over ${MAX_REQUEST_BYTES} bytes`, Code.ResourceExhausted);
        chunks.push(c);
      }
      const body = Buffer.concat(chunks);
      if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) throw new ConnectError('the request is not one whole gRPC message', Code.InvalidArgument);
      if (body[0]! & 1) throw new ConnectError('a compressed request without grpc-encoding', Code.Internal);
      let request: GetFlowsRequest;
      try {
        request = fromBinary(GetFlowsRequestSchema, body.subarray(5));
      } catch (e) {
        throw new ConnectError(`cannot decode the request: ${(e as Error).message}`, Code.InvalidArgument);
      }
      const c = openFlows(request);
      const w = new ByteWriter();
      for (;;) {
        if (ac.signal.aborted) break;
        const s = c.next();
        if (s.kind === 'flow') {
          const f = s.flow;
          writeFlowFrame(w, !c.keep && c.mask ? toBinary(FlowSchema, c.mask(f)) : flowBytes(f), c.keep, f.nodeName, f.time);
          if (w.len < BATCH_BYTES) continue;
        } else if (s.kind === 'lost') {
          writeMessageFrame(w, toBinary(GetFlowsResponseSchema, s.response));
          if (w.len < BATCH_BYTES) continue;
        }
        // a full batch, the end, or nothing more yet: write what is held
        if (w.len) await send(w.take());
        if (s.kind === 'end') break;
        if (s.kind === 'wait') await c.wait(ac.signal);
        else await new Promise<void>((r) => setImmediate(r));
      }
      if (expired) status = { code: Code.DeadlineExceeded, message: 'the deadline passed' };
    } catch (e) {
      const ce = ConnectError.from(e);
      status = { code: ce.code, message: ce.rawMessage };
    } finally {
      clearTimeout(timer);
      stopping.removeEventListener('abort', stop);
      res.off('close', onClose);
    }
    if (gone || res.destroyed) return;
    const trailers: Record<string, string> = { 'grpc-status': String(status.code), ...(status.message ? { 'grpc-message': encodeURIComponent(status.message) } : {}) };
    if (!started) {
      // Trailers-only: the status travels in the one HEADERS frame, which must end the stream.
      // writeHead would send the headers at once without END_STREAM (the compat response waits
      // for trailers), and end() would then close with an empty DATA frame: grpc-go reads that
      // as "server closed the stream without sending trailers" (Internal). end() on a response
      // whose headers are not sent yet sends them with END_STREAM.
      res.statusCode = 200;
      for (const [k, v] of Object.entries({ 'content-type': 'application/grpc+proto', ...trailers })) res.setHeader(k, v);
      res.end();
      return;
    }
    res.addTrailers(trailers);
    res.end();
  }

  function makeServer(secure?: http2.SecureServerOptions): http2.Http2Server | http2.Http2SecureServer {
    const connect = connectNodeAdapter({ routes, shutdownSignal: shutdown.signal });
    const handler = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      if (!fastGetFlows(req, res)) connect(req, res);
    };
    const server = secure ? http2.createSecureServer(secure, handler) : http2.createServer(handler);
    server.on('session', (s) => {
      sessions.add(s);
      s.on('close', () => sessions.delete(s));
    });
    servers.push(server);
    return server;
  }

  function listen(server: http2.Http2Server | http2.Http2SecureServer, arg: string | { port: number; host?: string }): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => reject(new MembraneError('HUBBLE_LISTEN',
        `hubble server cannot listen on ${typeof arg === 'string' ? arg : `${arg.host ?? ''}:${arg.port}`}: ${e.message}`,
        { hint: e.code === 'EADDRINUSE' ? 'another agent (or hubble) is already serving there' : 'check the directory and permissions', cause: e }));
      server.once('error', onError);
      const done = () => {
        server.off('error', onError);
        resolve();
      };
      if (typeof arg === 'string') {
        // Root-only from the first moment: the socket is created (bind) synchronously inside listen(),
        // under this umask (a file another thread creates in that instant only comes out stricter).
        const old = process.umask(0o177);
        try {
          server.listen(arg, done);
        } finally {
          process.umask(old);
        }
      } else server.listen(arg.port, arg.host, done);
    });
  }

  async function startForward(path: string, port: number): Promise<void> {
    rmSync(path, { force: true });
    const srv = net.createServer((client) => {
      const upstream = net.connect(port, '127.0.0.1');
      forwarded.add(client);
      const done = () => { forwarded.delete(client); client.destroy(); upstream.destroy(); };
      client.on('error', done).on('close', done);
      upstream.on('error', done).on('close', done);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(path, () => { srv.off('error', reject); resolve(); }); });
    } finally {
      process.umask(old);
    }
    chmodSync(path, 0o600);
    forward = srv;
  }

  return {
    async start() {
      if (shutdown.signal.aborted) shutdown = new AbortController();
      mkdirSync(dirname(opts.socketPath), { recursive: true });
      try {
        // a stale socket left by a crashed agent (Cilium removes whatever is there, too)
        if (!statSync(opts.socketPath).isDirectory()) rmSync(opts.socketPath, { force: true });
      } catch { /* absent */ }
      // Files are read before anything listens: a bad TLS setup serves nothing.
      let secure: http2.SecureServerOptions | undefined;
      if (opts.tcpPort !== undefined) {
        const sec = opts.tcpSecurity;
        if (!sec) {
          throw new MembraneError('HUBBLE_TLS_REQUIRED', `hubble TCP listener on port ${opts.tcpPort} has no TLS configuration`, {
            hint: 'give it the TLS files (mutual TLS), or plain text explicitly (MEMBRANE_HUBBLE_DISABLE_TLS=true)',
          });
        }
        if ('tls' in sec) secure = serverTlsOptions(sec.tls);
      }
      await listen(makeServer(), opts.socketPath);
      chmodSync(opts.socketPath, 0o600);
      if (opts.tcpPort !== undefined) {
        const s = makeServer(secure);
        await listen(s, { port: opts.tcpPort, host: opts.tcpHost });
        const a = s.address();
        if (a && typeof a === 'object') tcpBound = { host: a.address, port: a.port };
        tcpTls = secure !== undefined;
        if (opts.tcpForwardSocket && tcpBound) await startForward(opts.tcpForwardSocket, tcpBound.port);
      }
    },
    async stop() {
      shutdown.abort();
      for (const c of forwarded) c.destroy();
      if (forward) await new Promise<void>((resolve) => forward!.close(() => resolve()));
      forward = undefined;
      if (opts.tcpForwardSocket) rmSync(opts.tcpForwardSocket, { force: true });
      for (const s of sessions) s.close();
      const closing = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
      const timer = setTimeout(() => { for (const s of sessions) s.destroy(); }, 200);
      await Promise.all(closing);
      clearTimeout(timer);
      servers.length = 0;
      tcpBound = undefined;
      tcpTls = false;
      rmSync(opts.socketPath, { force: true });
    },
    tcpAddress: () => tcpBound,
    tlsServerName: () => (tcpBound && tcpTls ? serverName : undefined),
  };
}

