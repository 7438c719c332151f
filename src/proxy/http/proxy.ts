/**
 * The HTTP L7 proxy: transparent listeners in the node namespace (one per direction), fed by
 * the datapath's bpf_sk_assign steering; per connection the original destination is the accepted
 * socket's local address, the policy is the MapState entry for (endpoint, direction, remote
 * identity, port), looked up, never recomputed.
 *
 *   client ─► HeadParser ─► filter chain (network, then http: L7 policy, ...) ─► upstream
 *      ◄──── 403 / 4xx local replies, in pipeline order ◄── response HeadParser ◄──┘
 *
 * Keep-alive and pipelining are preserved: requests are forwarded as they are parsed, responses
 * are matched to them in order, local replies wait for the responses before them. Bodies stream
 * through as sub-arrays of what was read (chunked framing byte for byte). Malformed requests get
 * a 400-class answer and a flow, then the connection closes; the proxy keeps serving others.
 *
 * Upgrades follow Cilium's proxy (Envoy with `upgrade_configs: [websocket]`, README.md): a
 * WebSocket upgrade request is judged like any request and forwarded; the connection becomes a
 * tunnel only when the server answers 101, and until then every client byte is parsed and judged
 * as HTTP (a 101 after more client bytes is refused with 502). `h2c` upgrade headers are removed
 * (the request goes on as HTTP/1.1); any other upgrade and CONNECT get 403 `upgrade_failed`
 * before the policy (Envoy's CONNECT support is off unless configured); each closes the connection.
 * An upstream connection goes back to the pool only after complete exchanges: never one that
 * carried an upgrade request or a tunnel.
 */
import net from 'node:net';
import util from 'node:util';
import type { Direction } from '../../policy/types.ts';
import { FilterChain } from '../filter-chain.ts';
import { createPolicyFilter } from './policy-filter.ts';
import type { HttpStream } from './stream.ts';
import type { ConnectionOptions, ConnectionOwner } from './types.ts';
import { proxyListenHost, proxyListenPort } from '../../common/proxy-ports.ts';
import { ProxyConnection, clientReadBuffers, ownReadSocket } from './connection.ts';
import { UpstreamPool } from './upstream-pool.ts';
import { ParserPool } from './parser.ts';

export type HttpFilterChain = FilterChain<ProxyConnection, HttpStream>;

/** failed accepts are logged at most once per this interval (with the count since the last line) */
const ACCEPT_ERROR_LOG_MS = 10_000;

/** libuv's negative errno as its name (EMFILE), for the log */
const errnoName = (err: number): string => {
  try { return util.getSystemErrorName(err); } catch { return String(err); }
};

/** what the proxy uses of a net.Server's listening TCP handle (Node's TCPWrap) */
interface ListenHandle { fd: number; setNoDelay(on: boolean): number; onconnection?: (err: number, client: unknown) => void }

/** A listening socket of the proxy: its fd goes into the datapath's sockmap slot of its family. */
export interface ProxyListener { fd: number; port: number; host: string }

export interface HttpProxyOptions extends ConnectionOptions {
  /**
   * where the IPv4 listeners bind (the datapath assigns connections to them whatever the address);
   * with `ipv6`, an IPv6 listener per direction binds ::1 on the same port
   */
  listen?: { egress?: { host: string; port: number }; ingress?: { host: string; port: number } };
  /** IPv6 listeners beside the IPv4 ones (enable-ipv6: the datapath steers IPv6 connections to them) */
  ipv6?: boolean;
  /** sets IP_TRANSPARENT on a listening fd (src/sys/sockopt.ts) */
  setTransparent?(fd: number): void;
  /** the request head must be complete this long after its first byte (slowloris), default 10 s */
  headerTimeoutMs?: number;
  /** idle connections are closed after this long, default 300 s */
  idleTimeoutMs?: number;
  /** extra filters, run after the L7 policy filter */
  configure?(chain: HttpFilterChain): void;
}

export class HttpProxy implements ConnectionOwner<ProxyConnection, HttpStream> {
  readonly opts: HttpProxyOptions;
  readonly chain: HttpFilterChain = new FilterChain();
  readonly conns = new Set<ProxyConnection>();
  readonly pool = new UpstreamPool();
  readonly parsers: ParserPool;
  /** accepted sockets' read buffers, kept from closed connections for new ones */
  readonly readBuffers = clientReadBuffers();
  /** bytes of request bodies held for filters, all connections together */
  heldBytes = 0;
  /** coarse clock (ms) refreshed by the sweep: activity stamps without a syscall per read */
  now = Date.now();
  private readonly servers: net.Server[] = [];
  private sweep: NodeJS.Timeout | undefined;
  /** accepts the listening handles reported as failed (acceptFailed), and since the last log line */
  private acceptErrors = 0;
  private acceptErrorsUnsaid = 0;
  private acceptErrorSaidAt = -Infinity;

  constructor(opts: HttpProxyOptions) {
    this.opts = opts;
    this.parsers = new ParserPool(opts.maxHeadBytes);
    this.chain.addHttp(createPolicyFilter());
    opts.configure?.(this.chain);
  }

  /**
   * Starts the listeners; returns each one's fd (for the datapath's sockmap) and address per
   * direction: the IPv4 listener's, with the IPv6 one's beside it (`ipv6`, same port, on ::1).
   */
  async start(): Promise<Partial<Record<Direction, ProxyListener & { ipv6?: ProxyListener }>>> {
    const out: Partial<Record<Direction, ProxyListener & { ipv6?: ProxyListener }>> = {};
    const listen = this.opts.listen ?? { egress: { host: proxyListenHost(4), port: proxyListenPort('http', 'egress') }, ingress: { host: proxyListenHost(4), port: proxyListenPort('http', 'ingress') } };
    for (const dir of ['egress', 'ingress'] as const) {
      const l = listen[dir];
      if (!l) continue;
      const v4 = await this.listenOn(dir, l.host, l.port, false);
      // the IPv6 listener takes the IPv4 one's port (port 0 there: the kernel's choice)
      out[dir] = this.opts.ipv6 ? { ...v4, ipv6: await this.listenOn(dir, proxyListenHost(6), v4.port, true) } : v4;
    }
    const timeout = this.opts.headerTimeoutMs ?? 10_000;
    const idle = this.opts.idleTimeoutMs ?? 300_000;
    this.sweep = setInterval(() => {
      const now = (this.now = Date.now());
      this.pool.sweep(now);
      for (const c of this.conns) {
        if (c.closingAt) {
          if (now - c.closingAt > 5000) c.destroy();
        } else if (c.deadline && now >= c.deadline) c.deadlinePassed();
        else if (c.headStartedAt && now - c.headStartedAt > timeout) c.headerTimeout();
        else if (now - c.lastActive > idle) c.destroy();
        else if (c.connectDeadline) c.connectTimeout(now);
      }
    }, Math.min(500, Math.max(50, timeout / 4)));
    this.sweep.unref();
    return out;
  }

  private async listenOn(dir: Direction, host: string, port: number, ipv6Only: boolean): Promise<ProxyListener> {
    const srv = net.createServer({ allowHalfOpen: true }, (sock) => this.accept(sock, dir));
    await new Promise<void>((res, rej) => {
      srv.once('error', rej);
      srv.listen({ port, host, backlog: 4096, ipv6Only }, () => { srv.off('error', rej); res(); });
    });
    const handle = (srv as unknown as { _handle: ListenHandle })._handle;
    const fd = handle.fd;
    // Accepted sockets read into a buffer of their own (ownReadSocket): net.Server has no onread
    // option, so the listening handle's accept callback makes the socket itself, as Node's does
    // (a net.Socket over the accepted handle, reading at once) with `onread` added. Node's server
    // bookkeeping of its connections (maxConnections, getConnections, close() waiting for them)
    // is not used here: the proxy tracks its connections and destroys them on stop().
    if (typeof handle.onconnection === 'function') {
      handle.onconnection = (err: number, client: unknown) => {
        if (err) {
          this.acceptFailed(err, `${dir} ${host}:${port}`);
          return;
        }
        this.accept(ownReadSocket(client, this.readBuffers), dir);
      };
    } else {
      // Node's own accept path: an accept error is the server's 'error'
      srv.on('error', (e: NodeJS.ErrnoException) => this.acceptFailed(typeof e.errno === 'number' ? e.errno : -1, `${dir} ${host}:${port}`));
    }
    // TCP_NODELAY on the listener: Linux copies it into every socket accepted from it, so each
    // new connection goes without the setsockopt that Node's `noDelay` server option makes per
    // accepted socket (one syscall of ~14 per `Connection: close` request)
    const err = handle.setNoDelay(true);
    if (err !== 0) {
      srv.close();
      throw new Error(`TCP_NODELAY on the ${dir} listener ${host}:${port}: ${err}`);
    }
    this.opts.setTransparent?.(fd);
    this.servers.push(srv);
    return { fd, port: (srv.address() as net.AddressInfo).port, host };
  }

  /**
   * An accept the listening handle reports as failed (libuv hands over what its own EMFILE
   * remedy could not absorb: ENOBUFS, ENOMEM, EPERM, EMFILE once its spare descriptor is gone).
   * Node's server emits it as 'error', which with no listener ends the process: a flood must not
   * end the proxy. The listener stays (libuv keeps polling it: the connection waits in the
   * backlog for the next try); the errors are counted and said at most once per interval.
   */
  private acceptFailed(err: number, listener: string): void {
    this.acceptErrors++;
    this.acceptErrorsUnsaid++;
    const now = Date.now();
    if (now - this.acceptErrorSaidAt < ACCEPT_ERROR_LOG_MS) return;
    this.acceptErrorSaidAt = now;
    this.opts.logger?.warn({ subsys: 'proxy-http', listener, errno: err, error: errnoName(err), failed: this.acceptErrorsUnsaid, total: this.acceptErrors },
      'accept failed (connections wait in the backlog)');
    this.acceptErrorsUnsaid = 0;
  }

  private accept(sock: net.Socket, dir: Direction): void {
    const c = new ProxyConnection(this, sock, dir);
    this.conns.add(c);
    c.start();
  }

  async stop(): Promise<void> {
    if (this.sweep) clearInterval(this.sweep);
    const closing = this.servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const c of this.conns) c.destroy();
    this.pool.clear();
    await Promise.all(closing);
  }

  stats(): { connections: number; acceptErrors: number } {
    return { connections: this.conns.size, acceptErrors: this.acceptErrors };
  }
}

export function createHttpProxy(opts: HttpProxyOptions): HttpProxy {
  return new HttpProxy(opts);
}
