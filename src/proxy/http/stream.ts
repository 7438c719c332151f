/**
 * The objects HTTP filters see: a connection (peers, identities, its policy entry) and a stream
 * (one request/response exchange on it).
 */
import type { Direction } from '../../policy/types.ts';
import type { L7Options } from '../../policy/l7.ts';
import type { MessageHead } from './parser.ts';
import type { ProxyEndpoint, ProxyPolicyLookup } from './types.ts';
import type { AccessAI, AccessPeer } from '../../common/access-log.ts';

/** Reads a response's payload as it passes through (it never holds bytes back). */
export interface ResponseObserver {
  /** payload bytes `buf[start, end)` (chunked framing removed), before they are written to the client */
  data(buf: Buffer, start: number, end: number): void;
  /** the response ended: complete, or cut off (upstream or client gone) */
  end(complete: boolean): void;
}

export interface ProxyConnectionView {
  readonly direction: Direction;
  readonly client: AccessPeer;
  readonly server: AccessPeer;
  /** the local endpoint whose policy applies (source on egress, destination on ingress) */
  readonly endpoint: ProxyEndpoint | undefined;
  /** identity of the peer the policy is about (destination on egress, source on ingress) */
  readonly remoteIdentity: number;
  /** the current MapState entry (looked up again when the policy revision changes) */
  policy(): ProxyPolicyLookup;
  /** egress to a local endpoint whose ingress also has L7 rules on this port: that entry (enforced by this proxy) */
  peerIngress(): ProxyPolicyLookup | null;
  readonly secretOpts: L7Options;
  /** free slots for other filters (e.g. TLS interception state) */
  readonly state: Map<string, unknown>;
  /** TLS seen by a network filter (server name; intercepted: HTTP is read inside TLS) */
  readonly tls: { sni: string; intercepted: boolean } | null;
}

export interface HttpStream {
  readonly conn: ProxyConnectionView;
  readonly head: MessageHead;
  /** `:path`: the origin-form path and query (of an absolute-form target too: `http://h?/x` is `/?/x`) */
  readonly path: string;
  /** `:authority` (Host, which the parser holds to an absolute-form target's authority) */
  readonly host: string;
  /** the response head, in encodeHeaders */
  response?: MessageHead;
  /** headerMatches actions carried out, for the access log */
  headerActions?: string[];
  /** the header fields a filter set with setHeaders (null: forwarded as received) */
  readonly headers: string[] | null;
  /** answer locally with Cilium's 403 (`Access denied\r\n`); the filter then returns `stop` */
  deny(reason: string): void;
  /** answer locally with any status and a text/plain body; the filter then returns `stop` */
  reply(status: number, body: string, reason: string): void;
  /** forward the request with these header fields instead of the received ones */
  setHeaders(headers: string[]): void;
  /**
   * Hold the request until its body is complete (at most `maxBytes` as received), then run the
   * chain's decodeBody with it: nothing of this request goes upstream before. Call in decodeHeaders.
   */
  holdBody(maxBytes: number): void;
  /** answer locally with any content type and extra header fields ([name, value, ...]); the filter then returns `stop` */
  respond(status: number, body: string, reason: string, contentType: string, headers?: readonly string[]): void;
  /** read this request's response payload as it passes */
  observeResponse(o: ResponseObserver): void;
  /** what the AI filter learned about the exchange, carried into the access records */
  ai?: AccessAI;
  /** the header fields as they will be forwarded (after the proxy's and earlier filters' changes) */
  requestHeaders(): readonly string[];
}
