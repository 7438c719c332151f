/**
 * One request on a proxied connection, as the HTTP filters see and judge it (`HttpStream`): its
 * head, trace context, the local reply a filter chose (deny, reply, respond), a body held for
 * judging, a response observer. The connection forwards or answers it in pipeline order.
 */
import { headerValue, type MessageHead } from './parser.ts';
import type { HttpStream, ProxyConnectionView, ResponseObserver } from './stream.ts';
import type { AccessAI, AccessVerdict } from '../../common/access-log.ts';
import { DENIED_BODY, localReply } from './replies.ts';
import { rawWithoutConnection } from './head-rewrite.ts';

export class Stream implements HttpStream {
  readonly conn: ProxyConnectionView;
  readonly head: MessageHead;
  readonly path: string;
  readonly host: string;
  /** performance.now() at the head (ms, fractional): the response record's latency, without a BigInt per request */
  readonly startPerf: number;
  readonly startMs: number;
  response?: MessageHead;
  headerActions?: string[];
  /** local reply bytes (denied / errors): sent when this stream reaches the head of the queue */
  local: Buffer | null = null;
  localStatus = 0;
  localReason = '';
  localClose = false;
  /** how the local reply is recorded: a policy denial, or the proxy refusing or failing */
  localVerdict: AccessVerdict = 'error';
  /** a WebSocket upgrade request forwarded: a 101 to it turns the connection into a tunnel */
  upgrade = false;
  /** a local reply to this request closes the connection (upgrade requests; a held body over its bound) */
  closeOnLocal = false;
  headers: string[] | null = null;
  traceId?: string;
  parentSpanId?: string;
  /** the request went upstream asking to close (HTTP/1.0 without keep-alive) */
  upstreamClose = false;
  /** ≥ 0: a filter holds the request until its body is in (at most this many bytes as received) */
  holdLimit = -1;
  /** the held body as received (framing included, forwarded unchanged) and its payload */
  held: Buffer[] | null = null;
  heldBytes = 0;
  payload: Buffer[] | null = null;
  observer: ResponseObserver | null = null;
  ai?: AccessAI;

  constructor(conn: ProxyConnectionView, head: MessageHead) {
    this.conn = conn;
    this.head = head;
    this.startPerf = performance.now();
    this.startMs = Date.now();
    this.path = head.path;
    // `:authority` as Envoy's codec sets it: the target's authority for absolute-form and CONNECT
    // (the parser holds Host to the same authority), else Host
    this.host = head.authority || head.host;
    const tp = headerValue(head.headers, 'traceparent');
    if (tp) {
      // version-traceid-parentid-flags; all-zero ids are invalid (W3C Trace Context §3.2)
      const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/.exec(tp.trim());
      if (m && m[1] !== 'ff' && !/^0+$/.test(m[2]!) && !/^0+$/.test(m[3]!)) {
        this.traceId = m[2];
        this.parentSpanId = m[3];
      }
    }
  }

  deny(reason: string): void {
    this.reply(403, DENIED_BODY, reason);
    this.localVerdict = 'denied';
  }

  reply(status: number, body: string, reason: string, close = false): void {
    this.localStatus = status;
    this.localReason = reason;
    this.localVerdict = status === 403 ? 'denied' : 'error';
    this.localClose = close || this.closeOnLocal || !this.head.keepAlive || (this.head.expectContinue && (this.head.contentLength > 0 || this.head.chunked));
    this.local = localReply(status, body, this.localClose);
  }

  setHeaders(headers: string[]): void {
    this.headers = headers;
    this.rawOut = null;
  }

  holdBody(maxBytes: number): void {
    this.holdLimit = Math.max(0, maxBytes);
  }

  respond(status: number, body: string, reason: string, contentType: string, headers: readonly string[] = []): void {
    this.reply(status, body, reason);
    this.local = localReply(status, body, this.localClose, contentType, headers);
  }

  observeResponse(o: ResponseObserver): void {
    this.observer = o;
  }

  /** PayloadSink of the held request body */
  data(buf: Buffer, start: number, end: number): void {
    this.payload!.push(buf.subarray(start, end));
  }

  /**
   * The head to forward when it is the received one less its hop-by-hop connection fields
   * (`rawWithoutConnection`, set by the connection; a later setHeaders wins).
   */
  private rawOut: Buffer | null = null;

  forwardRawWithoutConnection(): void {
    this.rawOut = rawWithoutConnection(this.head.raw);
  }

  /**
   * The bytes requestBytes() gives are made its own when they are in `ab` (a client read buffer
   * about to be read into again), for a request that may be sent again (the pool's keep-alive race).
   */
  ownRequestBytes(ab: ArrayBufferLike): void {
    const h = this.head;
    const raw = h.raw;
    if (raw.buffer === ab) {
      h.raw = Buffer.from(raw);
      if (this.rawOut === raw) this.rawOut = h.raw;
    }
    if (this.rawOut !== null && this.rawOut.buffer === ab) this.rawOut = Buffer.from(this.rawOut);
  }

  requestHeaders(): readonly string[] {
    return this.headers ?? this.head.headers;
  }

  /**
   * The head to forward: the received bytes unless the header fields changed or the target was
   * absolute-form (sent in origin-form, as Envoy does: the server reads the path the policy saw).
   */
  requestBytes(): Buffer {
    if (this.rawOut) return this.rawOut;
    if (!this.headers && !this.head.absoluteForm) return this.head.raw;
    let s = `${this.head.method} ${this.head.absoluteForm ? this.path : this.head.target} ${this.head.version}\r\n`;
    const headers = this.requestHeaders();
    for (let i = 0; i < headers.length; i += 2) s += `${headers[i]}: ${headers[i + 1]}\r\n`;
    return Buffer.from(s + '\r\n', 'latin1');
  }

  /** built once: the request's and the response's records carry the same string */
  private urlText = '';

  url(): string {
    if (!this.urlText) this.urlText = `${this.conn.tls?.intercepted ? 'https' : 'http'}://${this.host}${this.path}`;
    return this.urlText;
  }
}
