/**
 * What the L7 proxies report: one access record per request, response or decision, in the shape
 * of Cilium's access log (pkg/proxy/accesslog LogRecord: type, observation point, time, verdict,
 * transport, source and destination endpoints, and one protocol part). The proxies emit these and
 * know nothing of Hubble; Hubble's L7 parser (src/hubble/l7-parser.ts) turns each into a flow, the HTTP
 * proxy's OTLP exporter into a span, the AI filter reads its own part.
 */
import type { ResolvedEndpoint } from './endpoint.ts';

export type AccessVerdict = 'forwarded' | 'denied' | 'error';
/** Where the proxy saw the traffic (Cilium's ObservationPoint): the local endpoint's side. */
export type AccessDirection = 'ingress' | 'egress';

/**
 * One side of the connection. A proxy that has already resolved the peer for its policy decision
 * (the DNS proxy: the ClusterIP of kube-dns stands for its backend) passes the endpoint or the
 * identity's labels; otherwise the parser looks the address up itself.
 */
export interface AccessPeer {
  ip: string;
  port: number;
  identity: number;
  endpoint?: ResolvedEndpoint;
  labels?: readonly string[];
}

/** The fields every record has (Cilium's LogRecord minus the protocol parts). */
interface AccessRecordBase {
  verdict: AccessVerdict;
  direction: AccessDirection;
  /** epoch ms (fractional) */
  timeMs: number;
  /** the client (source of the request) and the server, whatever the record type */
  client: AccessPeer;
  server: AccessPeer;
}

/** HttpAccessRecord.requestTimeMs when a record that has the field knows no request time */
export const NO_REQUEST_TIME = -1;

/** One HTTP request or response seen by the HTTP proxy (LogRecord with its HTTP part). */
export interface HttpAccessRecord extends AccessRecordBase {
  l7: 'http';
  type: 'request' | 'response';
  /** the local endpoint the policy belongs to (0: none) */
  endpointId: number;
  method: string;
  /** `http://host/path?query` */
  url: string;
  host: string;
  path: string;
  protocol: string;
  /** request headers for requests, response headers for responses: [name, value, ...] as received */
  headers: readonly string[];
  /** response status (0 for requests) */
  code: number;
  /** response time − request time, ns (responses) */
  latencyNs: number;
  /** W3C trace id (32 hex) from the request's traceparent */
  traceId?: string;
  /** parent span id (16 hex) from the request's traceparent */
  parentSpanId?: string;
  /** why the proxy refused or failed (parse errors, timeouts, policy) */
  reason?: string;
  /** headerMatches mismatch actions carried out (LOG/ADD/DELETE/REPLACE name) */
  headerActions?: string[];
  /**
   * request start, epoch ms (responses); absent, or not ≥ 0 (NO_REQUEST_TIME), when unknown: the
   * agent's feed reader refills its records with the wire's number (−1 for none), a field that only
   * holds numbers keeping a time in place (one that may be undefined holds a new heap number per
   * response). Readers test `>= 0`.
   */
  requestTimeMs?: number;
  /** the connection is TLS: its server name, and whether the proxy terminated it (interception) */
  tls?: { sni: string; intercepted: boolean };
  /** an AI API call (src/proxy/ai): provider, model and, on responses, tokens */
  ai?: AccessAI;
}

/** What the AI filter read from a request and its response. */
export interface AccessAI {
  /** wire format: `openai` or `anthropic` */
  provider: string;
  /** `chat.completions`, `completions`, `responses`, `embeddings`, `messages` or `other` */
  operation: string;
  /** the requested model ('' when the body could not be read) */
  model: string;
  stream: boolean;
  /** the AIPolicy that refused the request (namespace/name) */
  policy?: string;
  promptTokens?: number;
  completionTokens?: number;
  /** `reported`: the response's usage; `estimated`: no usage in the response (cut off, compressed, or a stream without usage) */
  usage?: 'reported' | 'estimated';
  /** response head to first payload byte, ns (time to first token of a stream) */
  firstByteNs?: number;
}

/** One DNS query or answer seen by the DNS proxy (LogRecord with its DNS part). */
export interface DnsAccessRecord extends AccessRecordBase {
  l7: 'dns';
  type: 'request' | 'response';
  transport: 'UDP' | 'TCP';
  query: string;
  qtypes: string[];
  rcode?: number;
  ips?: string[];
  ttl?: number;
  cnames?: string[];
  rrtypes?: string[];
  /** answer time − query time (responses) */
  latencyNs?: number;
  /** why the proxy refused a query without judging it (stable code first: `ORIGINAL_DESTINATION_UNKNOWN: ...`) */
  reason?: string;
}

/** One TLS ClientHello decision of the SNI proxy or the interceptor (always a request). */
export interface TlsAccessRecord extends AccessRecordBase {
  l7: 'tls';
  endpointId: number;
  sni?: string;
  /** e.g. `TLS 1.3` */
  version?: string;
  alpn?: string[];
  /** the proxy terminates this connection (terminatingTLS) */
  intercepted?: boolean;
  /** the client resumed an earlier session (no new certificate) */
  resumed?: boolean;
  /** why it was refused or failed (stable code first: `NOT_TLS: ...`, `policy: ...`) */
  reason?: string;
  /** proxy port of the listener that saw it (TLS 15443, HTTP 15001 for intercepted connections) */
  proxyPort?: number;
}

export type AccessLogRecord = HttpAccessRecord | DnsAccessRecord | TlsAccessRecord;

/** Where a proxy sends its records (the agent wires it to Hubble's L7 parser). */
export type AccessLogSink = (rec: AccessLogRecord) => void;
