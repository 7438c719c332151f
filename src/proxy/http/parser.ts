/**
 * A strict, incremental HTTP/1.1 message parser for the L7 proxy (requests and responses).
 *
 * The head (start line + header fields) is located by scanning line ends with Buffer#indexOf,
 * validating CRLF on every line as it goes (a bare LF is an error, never a line end); a head that
 * spans reads is kept as the list of received chunks and joined once. Bodies are never buffered:
 * `body()` tells how many bytes of the current input belong to the message, so the caller
 * forwards them as sub-arrays of what it received (the chunked framing too, byte for byte).
 * The chunked decoder is a byte state machine over numbers only (no allocation).
 *
 * Refused (RFC 9112 §6.3, §11.2; the request smuggling vectors): Transfer-Encoding together with
 * Content-Length, several or non-numeric Content-Length, a Transfer-Encoding other than
 * `chunked`, obsolete line folding, bare LF, whitespace before the colon, control characters,
 * a missing, empty, malformed or repeated Host (HTTP/1.1), heads larger than `maxHeadBytes` (431),
 * a method llhttp (Node's parser) does not know, a request-target that is none of RFC 9112 §3.2's
 * forms for its method (origin-form; absolute-form per RFC 3986 with an http(s) scheme, no
 * userinfo, a Host that names the same authority; `*` for OPTIONS; authority-form for CONNECT) or
 * that carries a fragment, and chunked framing looser than llhttp's (no whitespace around the
 * chunk size, extensions per the RFC grammar, trailer fields as header fields).
 *
 * `path` is what L7 rules see: the origin-form target as sent, or the path and query of an
 * absolute-form target (`http://h?/x` is path `/?/x`, never `/x`).
 */

export class HttpParseError extends Error {
  readonly status: number;
  /** short machine-readable reason (flows, metrics) */
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

export interface MessageHead {
  /** request: method; response: '' */
  method: string;
  /** request target as sent (origin-form or absolute-form) */
  target: string;
  /** request: the origin-form path and query L7 rules see (`*` for OPTIONS *, '' for CONNECT) */
  path: string;
  /** request: the authority of an absolute-form target (or CONNECT's), '' otherwise */
  authority: string;
  /** request: the target was absolute-form (it is forwarded in origin-form) */
  absoluteForm: boolean;
  /** response status code (0 for requests) */
  status: number;
  reason: string;
  version: 'HTTP/1.0' | 'HTTP/1.1';
  /** [name, value, name, value, ...] in arrival order, names as sent, values trimmed */
  headers: string[];
  /** the head exactly as received (start line through the empty line) */
  raw: Buffer;
  /** -1: none */
  contentLength: number;
  chunked: boolean;
  /** connection persists after this message (version default + Connection header) */
  keepAlive: boolean;
  /** Connection: upgrade + Upgrade header present */
  upgrade: boolean;
  /** the Upgrade header's value, lower-cased and trimmed (several fields joined by ", "); '' when absent */
  upgradeType: string;
  host: string;
  expectContinue: boolean;
}

const CR = 13, LF = 10, SP = 32, HT = 9, COLON = 58;

// tchar (RFC 9110 §5.6.2)
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;
// field-value bytes: VCHAR, obs-text, SP, HTAB
const VCHAR = new Uint8Array(256);
for (let c = 33; c <= 126; c++) VCHAR[c] = 1;
for (let c = 128; c <= 255; c++) VCHAR[c] = 1;
VCHAR[SP] = 1;
VCHAR[HT] = 1;
// request-target: visible ASCII only
const TARGET = new Uint8Array(256);
for (let c = 33; c <= 126; c++) TARGET[c] = 1;

const HEX = new Int8Array(256).fill(-1);
for (let c = 48; c <= 57; c++) HEX[c] = c - 48;
for (let c = 65; c <= 70; c++) HEX[c] = c - 55;
for (let c = 97; c <= 102; c++) HEX[c] = c - 87;

export interface HeadParserOptions {
  kind: 'request' | 'response';
  /** 431 (requests) / 502 (responses) beyond this many head bytes; default 60 KiB (Envoy's max_request_headers_kb) */
  maxHeadBytes?: number;
  /** at most this many header fields (default 100, Envoy's max_headers_count) */
  maxHeaders?: number;
}

/**
 * Accumulates bytes until a complete head, then parses it. `push` returns the head and the offset
 * in `chunk` where the body begins, or undefined when more bytes are needed. Throws HttpParseError.
 */
export class HeadParser {
  private readonly kind: 'request' | 'response';
  private readonly maxHead: number;
  private readonly maxHeaders: number;
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** the last byte of the previous part was CR / the previous part ended a line (LF) */
  private prevCR = false;
  private lineLen = 0;
  /** the start line has begun (leading empty lines are behind) */
  private started = false;
  /** a leading empty line's CR was the last byte read: its LF comes next */
  private leadCR = false;

  constructor(opts: HeadParserOptions) {
    this.kind = opts.kind;
    this.maxHead = opts.maxHeadBytes ?? 60 * 1024;
    this.maxHeaders = opts.maxHeaders ?? 100;
  }

  /** Bytes of an unfinished head held so far (slowloris accounting). */
  get pending(): number {
    return this.partsLen;
  }

  reset(): void {
    if (this.parts.length !== 0) this.parts = [];
    this.partsLen = 0;
    this.prevCR = false;
    this.lineLen = 0;
    this.started = false;
    this.leadCR = false;
  }

  push(chunk: Buffer, start = 0): { head: MessageHead; bodyStart: number } | undefined {
    let pos = start;
    // Leading empty lines before the request line are ignored (RFC 9112 §2.2), also when a
    // CRLF is split between reads.
    if (!this.started) {
      for (;;) {
        if (pos >= chunk.length) return undefined;
        if (this.leadCR) {
          if (chunk[pos] !== LF) throw new HttpParseError(400, 'bare_cr', 'CR without LF before the start line');
          this.leadCR = false;
          pos++;
        } else if (chunk[pos] === CR) {
          this.leadCR = true;
          pos++;
        } else break;
      }
      if (chunk[pos] === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF before the start line');
      this.started = true;
    }
    const from = pos;
    let i = pos;
    for (;;) {
      const lf = indexOfLF(chunk, i);
      if (lf < 0) {
        const n = chunk.length - i;
        this.lineLen += n;
        this.prevCR = n > 0 ? chunk[chunk.length - 1] === CR : this.prevCR;
        break;
      }
      const cr = lf > from ? chunk[lf - 1] === CR : this.prevCR;
      if (!cr) throw new HttpParseError(400, 'bare_lf', 'line ending without CR (bare LF)');
      const len = this.lineLen + (lf - i); // bytes of this line including its CR
      this.lineLen = 0;
      this.prevCR = false;
      i = lf + 1;
      if (len === 1) {
        // empty line: end of head
        const total = this.partsLen + (i - from);
        if (total > this.maxHead) throw this.tooLarge();
        // a head that is the whole read (nearly every request and response without a body) is that Buffer itself
        const raw = this.parts.length === 0 ? (from === 0 && i === chunk.length ? chunk : chunk.subarray(from, i)) : Buffer.concat([...this.parts, chunk.subarray(from, i)]);
        // a new list only when the old one holds parts (most heads come in one read: no array per head)
        if (this.parts.length !== 0) this.parts = [];
        this.partsLen = 0;
        this.started = false;
        return { head: this.parse(raw), bodyStart: i };
      }
    }
    const piece = chunk.subarray(from);
    this.parts.push(piece);
    this.partsLen += piece.length;
    if (this.partsLen > this.maxHead) throw this.tooLarge();
    return undefined;
  }

  private tooLarge(): HttpParseError {
    return this.kind === 'request'
      ? new HttpParseError(431, 'headers_too_large', `request header section larger than ${this.maxHead} bytes`)
      : new HttpParseError(502, 'response_headers_too_large', `response header section larger than ${this.maxHead} bytes`);
  }

  /** Parses a complete head (every line already known to end in CRLF). */
  private parse(raw: Buffer): MessageHead {
    let eol = indexOfLF(raw, 0);
    const line0End = eol - 1;
    const head: MessageHead = {
      method: '', target: '', path: '', authority: '', absoluteForm: false, status: 0, reason: '', version: 'HTTP/1.1', headers: [], raw,
      contentLength: -1, chunked: false, keepAlive: true, upgrade: false, upgradeType: '', host: '', expectContinue: false,
    };
    if (this.kind === 'request') parseRequestLine(raw, line0End, head);
    else parseStatusLine(raw, line0End, head);

    let teCount = 0;
    let clCount = 0;
    let hostCount = 0;
    let conn = 0;
    let upgradeCount = 0;
    let pos = eol + 1;
    let n = 0;
    while (pos < raw.length) {
      eol = indexOfLF(raw, pos);
      const end = eol - 1; // CR
      if (end === pos) break; // empty line
      const first = raw[pos]!;
      if (first === SP || first === HT) throw new HttpParseError(400, 'obs_fold', 'obsolete line folding in a header field');
      if (++n > this.maxHeaders) throw new HttpParseError(this.kind === 'request' ? 431 : 502, 'too_many_headers', `more than ${this.maxHeaders} header fields`);
      let c = pos;
      while (c < end && TCHAR[raw[c]!]) c++;
      if (c === pos || c >= end || raw[c] !== COLON) {
        const why = c < end && (raw[c] === SP || raw[c] === HT) ? 'whitespace between the field name and the colon' : 'invalid header field name';
        throw new HttpParseError(400, 'bad_header_name', why);
      }
      const name = interned(NAMES_BY_LEN, raw, pos, c) ?? raw.toString('latin1', pos, c);
      let vs = c + 1;
      let ve = end;
      while (vs < ve && (raw[vs] === SP || raw[vs] === HT)) vs++;
      while (ve > vs && (raw[ve - 1] === SP || raw[ve - 1] === HT)) ve--;
      for (let k = vs; k < ve; k++) if (!VCHAR[raw[k]!]) throw new HttpParseError(400, 'bad_header_value', `control character in header "${name}"`);
      const value = interned(VALUES_BY_LEN, raw, vs, ve) ?? raw.toString('latin1', vs, ve);
      head.headers.push(name, value);
      // only names as long as one the switch knows are lower-cased (no new string for the rest)
      const lname = FRAMING_NAME_LEN[name.length] ? name.toLowerCase() : '';
      switch (lname) {
        case 'content-length':
          clCount++;
          if (clCount > 1) throw new HttpParseError(400, 'duplicate_content_length', 'more than one Content-Length');
          if (!/^[0-9]{1,15}$/.test(value)) throw new HttpParseError(400, 'bad_content_length', `invalid Content-Length "${value.slice(0, 40)}"`);
          head.contentLength = Number(value);
          break;
        case 'transfer-encoding':
          teCount++;
          if (teCount > 1 || value.toLowerCase() !== 'chunked') throw new HttpParseError(this.kind === 'request' ? 501 : 502, 'unsupported_transfer_encoding', `unsupported Transfer-Encoding "${value.slice(0, 40)}"`);
          head.chunked = true;
          break;
        case 'host':
          hostCount++;
          head.host = value;
          break;
        case 'connection':
          conn |= connectionOptions(value);
          break;
        case 'upgrade':
          head.upgradeType = upgradeCount++ === 0 ? value.toLowerCase() : `${head.upgradeType}, ${value.toLowerCase()}`;
          break;
        case 'expect':
          if (value.toLowerCase() === '100-continue') head.expectContinue = true;
          break;
      }
      pos = eol + 1;
    }
    if (head.chunked && clCount > 0) throw new HttpParseError(400, 'content_length_with_transfer_encoding', 'both Content-Length and Transfer-Encoding (request smuggling)');
    if (this.kind === 'request') {
      if (head.chunked && head.version === 'HTTP/1.0') throw new HttpParseError(400, 'te_http10', 'Transfer-Encoding in an HTTP/1.0 request');
      // what follows a CONNECT head belongs to the tunnel (llhttp); Envoy refuses a CONNECT body
      if (head.method === 'CONNECT' && (head.chunked || head.contentLength > 0)) throw new HttpParseError(400, 'connect_with_body', 'a CONNECT request with a body');
      if (hostCount > 1) throw new HttpParseError(400, 'duplicate_host', 'more than one Host header');
      if (hostCount === 0 && head.version === 'HTTP/1.1') throw new HttpParseError(400, 'missing_host', 'HTTP/1.1 request without Host');
      if (hostCount === 1 && hostPortEnd(head.host, 0, false) !== head.host.length) throw new HttpParseError(400, 'bad_host', `invalid Host "${head.host.slice(0, 60)}"`);
      if (head.absoluteForm && hostCount === 1 && !sameAuthority(head.authority, head.host, head.target)) {
        // RFC 9112 §3.2.2: the target's authority is the one that counts; the Host a server
        // sees must name the same, or the policy and the server would judge different hosts
        throw new HttpParseError(400, 'host_mismatch', `Host "${head.host.slice(0, 60)}" is not the target's authority "${head.authority.slice(0, 60)}"`);
      }
    }
    head.keepAlive = head.version === 'HTTP/1.1' ? !(conn & CONN_CLOSE) : !!(conn & CONN_KEEP_ALIVE) && !(conn & CONN_CLOSE);
    head.upgrade = !!(conn & CONN_UPGRADE) && upgradeCount > 0;
    return head;
  }
}

/**
 * Header names and values most messages carry, as constant strings: a head's fields are read
 * without a string made (and a native call) for each, and the flows kept in Hubble's ring share
 * them. Matched byte for byte (case as sent); any other field is sliced as before.
 */
const COMMON_NAMES = [
  'Host', 'host', 'User-Agent', 'user-agent', 'Accept', 'accept', 'Accept-Encoding', 'accept-encoding', 'Accept-Language', 'accept-language',
  'Content-Type', 'content-type', 'Content-Length', 'content-length', 'Connection', 'connection', 'Cache-Control', 'cache-control',
  'Date', 'date', 'Server', 'server', 'Transfer-Encoding', 'transfer-encoding', 'Keep-Alive', 'keep-alive', 'Vary', 'vary',
  'Authorization', 'authorization', 'Cookie', 'cookie', 'Set-Cookie', 'set-cookie', 'ETag', 'etag', 'Last-Modified', 'last-modified',
  'Location', 'location', 'Origin', 'origin', 'Referer', 'referer', 'traceparent', 'tracestate', 'X-Request-Id', 'x-request-id',
  'X-Forwarded-For', 'x-forwarded-for', 'X-Forwarded-Proto', 'x-forwarded-proto', 'Content-Encoding', 'content-encoding',
];
const COMMON_VALUES = [
  'text/plain', 'text/html', 'application/json', 'no-cache', 'keep-alive', 'close', 'chunked', 'gzip', '*/*', 'identity', 'Upgrade', 'websocket',
  'text/plain; charset=utf-8', 'application/json; charset=utf-8', 'text/html; charset=utf-8',
];
function byLength(strings: readonly string[]): (readonly string[])[] {
  const t: string[][] = [];
  for (const v of strings) (t[v.length] ??= []).push(v);
  return t;
}
const NAMES_BY_LEN = byLength(COMMON_NAMES);
const VALUES_BY_LEN = byLength(COMMON_VALUES);

/** The constant string equal to raw[from, to) (latin1), if `table` has one; a one-byte value is V8's own single-character string. */
function interned(table: readonly (readonly string[] | undefined)[], raw: Buffer, from: number, to: number): string | undefined {
  const len = to - from;
  if (len === 1) return String.fromCharCode(raw[from]!);
  const cands = table[len];
  if (!cands) return undefined;
  next: for (const v of cands) {
    for (let k = 0; k < len; k++) if (v.charCodeAt(k) !== raw[from + k]) continue next;
    return v;
  }
  return undefined;
}

/**
 * The next LF in `b` from `from`, or -1: header lines are short, so the first 128 bytes are
 * scanned here and only a longer line goes to Buffer#indexOf (a native call each: ~150 ns, six
 * per request and six per response head, more than the scan of a typical line).
 */
function indexOfLF(b: Buffer, from: number): number {
  const len = b.length;
  const end = from + 128 < len ? from + 128 : len;
  for (let k = from; k < end; k++) if (b[k] === LF) return k;
  return end === len ? -1 : b.indexOf(LF, end);
}

/** lengths of the header names parse() acts on (content-length, transfer-encoding, host, connection, upgrade, expect) */
const FRAMING_NAME_LEN = new Uint8Array(18);
for (const n of ['content-length', 'transfer-encoding', 'host', 'connection', 'upgrade', 'expect']) FRAMING_NAME_LEN[n.length] = 1;

const CONN_CLOSE = 1, CONN_KEEP_ALIVE = 2, CONN_UPGRADE = 4;
const CONN_ONE = new Map([['close', CONN_CLOSE], ['keep-alive', CONN_KEEP_ALIVE], ['upgrade', CONN_UPGRADE]]);

/** The connection options named in a Connection value (a comma-separated token list, RFC 9110 §7.6.1). */
export function connectionOptions(value: string): number {
  // one option (the common case) without splitting
  const one = value.length <= 10 ? CONN_ONE.get(value.toLowerCase()) : undefined;
  if (one !== undefined) return one;
  let out = 0;
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t === 'close') out |= CONN_CLOSE;
    else if (t === 'keep-alive') out |= CONN_KEEP_ALIVE;
    else if (t === 'upgrade') out |= CONN_UPGRADE;
  }
  return out;
}

/**
 * Request methods Node's parser (llhttp) knows; it refuses any other token, and so does Envoy's
 * HTTP/1 codec without allow_custom_methods.
 */
export const HTTP_METHODS: ReadonlySet<string> = new Set([
  'ACL', 'BIND', 'CHECKOUT', 'CONNECT', 'COPY', 'DELETE', 'GET', 'HEAD', 'LINK', 'LOCK', 'M-SEARCH', 'MERGE', 'MKACTIVITY', 'MKCALENDAR',
  'MKCOL', 'MOVE', 'NOTIFY', 'OPTIONS', 'PATCH', 'POST', 'PROPFIND', 'PROPPATCH', 'PURGE', 'PUT', 'QUERY', 'REBIND', 'REPORT', 'SEARCH',
  'SOURCE', 'SUBSCRIBE', 'TRACE', 'UNBIND', 'UNLINK', 'UNLOCK', 'UNSUBSCRIBE',
]);

// `HTTP/1.` as bytes: versions are compared in place, not sliced into a string
const HTTP1 = [72, 84, 84, 80, 47, 49, 46];

function parseRequestLine(raw: Buffer, end: number, head: MessageHead): void {
  let i = 0;
  while (i < end && TCHAR[raw[i]!]) i++;
  if (i === 0 || raw[i] !== SP) throw new HttpParseError(400, 'bad_request_line', 'invalid method in the request line');
  // GET is read in place (no new string per request); any other method is sliced and checked
  head.method = i === 3 && raw[0] === 71 && raw[1] === 69 && raw[2] === 84 ? 'GET' : raw.toString('latin1', 0, i);
  if (!HTTP_METHODS.has(head.method)) throw new HttpParseError(400, 'bad_method', `unknown method "${head.method.slice(0, 20)}"`);
  const ts = ++i;
  while (i < end && TARGET[raw[i]!]) i++;
  if (i === ts || raw[i] !== SP) throw new HttpParseError(400, 'bad_request_line', 'invalid request target');
  head.target = raw.toString('latin1', ts, i);
  let h1 = end - i - 1 === 8;
  for (let k = 0; h1 && k < 7; k++) h1 = raw[i + 1 + k] === HTTP1[k];
  const minor = raw[i + 8];
  const v = h1 && (minor === 49 || minor === 48) ? '' : raw.toString('latin1', i + 1, end);
  if (h1 && minor === 49) head.version = 'HTTP/1.1';
  else if (h1 && minor === 48) head.version = 'HTTP/1.0';
  else if (/^HTTP\/[0-9]\.[0-9]$/.test(v)) throw new HttpParseError(505, 'version_not_supported', `unsupported ${v}`);
  else throw new HttpParseError(400, 'bad_request_line', 'invalid HTTP version');
  parseTarget(head);
}

// RFC 3986 §2: unreserved and sub-delims (reg-name characters besides pct-encoded)
const REGNAME = new Uint8Array(256);
for (const c of "-._~!$&'()*+,;=") REGNAME[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) REGNAME[c] = 1;
for (let c = 65; c <= 90; c++) REGNAME[c] = 1;
for (let c = 97; c <= 122; c++) REGNAME[c] = 1;
const SLASH = 47, QMARK = 63, HASH = 35, PCT = 37;

function badTarget(why: string): HttpParseError {
  return new HttpParseError(400, 'bad_target', why);
}

/**
 * The end of `host [":" port]` (RFC 3986 §3.2.2-3: IP-literal or reg-name, which covers IPv4) in
 * `s` from `from`: the offset where it stops, or -1 when the host is empty or malformed. With
 * `needPort` (authority-form) the port must be present.
 */
function hostPortEnd(s: string, from: number, needPort: boolean): number {
  let i = from;
  const len = s.length;
  if (s.charCodeAt(i) === 91 /* [ */) {
    i++;
    const hs = i;
    while (i < len && /[0-9A-Fa-f:.]/.test(s[i]!)) i++;
    if (i === hs || s.charCodeAt(i) !== 93 /* ] */ || !s.slice(hs, i).includes(':')) return -1;
    i++;
  } else {
    const hs = i;
    while (i < len) {
      const c = s.charCodeAt(i);
      if (c < 256 && REGNAME[c]) i++;
      else if (c === PCT && HEX[s.charCodeAt(i + 1) & 255]! >= 0 && HEX[s.charCodeAt(i + 2) & 255]! >= 0 && i + 2 < len) i += 3;
      else break;
    }
    if (i === hs) return -1;
  }
  if (s.charCodeAt(i) === COLON) {
    const ps = ++i;
    let port = 0;
    while (i < len && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) port = port * 10 + s.charCodeAt(i++) - 48;
    if (i - ps > 5 || port > 65535) return -1;
    if (needPort && i === ps) return -1;
  } else if (needPort) return -1;
  return i;
}

/** The request-target's form (RFC 9112 §3.2) for its method, and the path and authority from it. */
function parseTarget(head: MessageHead): void {
  const t = head.target;
  if (t.includes('#')) throw badTarget('a fragment in the request target');
  const c0 = t.charCodeAt(0);
  if (head.method === 'CONNECT') {
    // authority-form; CONNECT is refused (see proxy.ts), but it is parsed like the rest
    if (hostPortEnd(t, 0, true) !== t.length) throw badTarget('CONNECT needs an authority-form target (host:port)');
    head.authority = t;
    return;
  }
  if (c0 === SLASH) {
    head.path = t;
    return;
  }
  if (t === '*') {
    if (head.method !== 'OPTIONS') throw badTarget('the asterisk-form target is only for OPTIONS');
    head.path = t;
    return;
  }
  // absolute-form: scheme "://" authority path-abempty [ "?" query ]
  let i = 0;
  while (i < t.length && /[A-Za-z0-9+.-]/.test(t[i]!)) i++;
  const scheme = t.slice(0, i).toLowerCase();
  if (i === 0 || !/[A-Za-z]/.test(t[0]!) || !t.startsWith('://', i)) throw badTarget('the request target is neither origin-form nor absolute-form');
  if (scheme !== 'http' && scheme !== 'https') throw badTarget(`unsupported scheme "${scheme.slice(0, 20)}" in an absolute-form target`);
  const as = i + 3;
  let ae = as;
  while (ae < t.length && t.charCodeAt(ae) !== SLASH && t.charCodeAt(ae) !== QMARK) ae++;
  const authority = t.slice(as, ae);
  if (authority.includes('@')) throw badTarget('userinfo in the target authority');
  if (hostPortEnd(authority, 0, false) !== authority.length) throw badTarget(`invalid authority "${authority.slice(0, 60)}" in an absolute-form target`);
  head.authority = authority;
  head.absoluteForm = true;
  // RFC 9112 §3.2.1: an empty path is sent as "/"
  head.path = ae === t.length || t.charCodeAt(ae) === QMARK ? `/${t.slice(ae)}` : t.slice(ae);
}

/** Whether a Host value names the absolute-form target's authority (case-insensitive, default port implied). */
function sameAuthority(authority: string, host: string, target: string): boolean {
  const dflt = target.charCodeAt(4) === COLON ? ':80' : ':443';
  const norm = (a: string) => {
    let s = a.toLowerCase();
    if (s.endsWith(dflt)) s = s.slice(0, -dflt.length);
    else if (s.endsWith(':')) s = s.slice(0, -1);
    return s;
  };
  return norm(authority) === norm(host);
}

function parseStatusLine(raw: Buffer, end: number, head: MessageHead): void {
  let v = end >= 8;
  for (let i = 0; v && i < 7; i++) v = raw[i] === HTTP1[i];
  const minor = raw[7];
  if (v && minor === 49) head.version = 'HTTP/1.1';
  else if (v && minor === 48) head.version = 'HTTP/1.0';
  else throw new HttpParseError(502, 'bad_status_line', 'invalid HTTP version in the status line');
  if (raw[8] !== SP) throw new HttpParseError(502, 'bad_status_line', 'invalid status line');
  const d0 = raw[9]! - 48, d1 = raw[10]! - 48, d2 = raw[11]! - 48;
  if (!(d0 >= 1 && d0 <= 5 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) || (end > 12 && raw[12] !== SP)) throw new HttpParseError(502, 'bad_status_line', 'invalid status code');
  head.status = d0 * 100 + d1 * 10 + d2;
  // the common reason phrase is a constant, not a new string per response
  head.reason = end === 15 && raw[13] === 79 /* O */ && raw[14] === 75 /* K */ ? 'OK' : end > 13 ? raw.toString('latin1', 13, end) : '';
}

// ------------------------------------------------------------------------------ bodies

const B_NONE = 0, B_LENGTH = 1, B_CHUNKED = 2, B_EOF = 3;
// chunk line: size, then `;name[=token|"quoted"]`... (no whitespace: llhttp refuses it), CRLF
const C_SIZE = 0, C_EXT_NAME0 = 1, C_EXT_NAME = 2, C_EXT_VAL0 = 3, C_EXT_TOKEN = 4, C_EXT_QUOTED = 5, C_EXT_QPAIR = 6, C_EXT_QEND = 7, C_SIZE_LF = 8;
const C_DATA = 9, C_DATA_CR = 10, C_DATA_LF = 11;
// trailer section: header fields (name ":" value) until an empty line
const C_TRAILER_START = 12, C_TRAILER_NAME = 13, C_TRAILER_VALUE = 14, C_TRAILER_LF = 15, C_END_LF = 16;
const MAX_CHUNK_LINE = 4096;
const DQUOTE = 34, BSLASH = 92, SEMI = 59, EQ = 61;
// qdtext (RFC 9110 §5.6.4): HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text
const QDTEXT = new Uint8Array(VCHAR);
QDTEXT[DQUOTE] = 0;
QDTEXT[BSLASH] = 0;

/**
 * Fields refused in a trailer section: framing (llhttp refuses these too), and routing and
 * connection control, which a peer might apply from a trailer although the proxy did not
 * (RFC 9110 §6.5.1).
 */
const TRAILER_REFUSED: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding', 'host', 'connection', 'upgrade', 'keep-alive', 'proxy-connection']);
const TRAILER_NAME_MAX = 17;

function badChunk(why: string): HttpParseError {
  return new HttpParseError(400, 'bad_chunk', why);
}

/**
 * Receives the payload of a body (chunked framing removed) as ranges of what was read. The
 * ranges are valid during the call only (a response is read into a buffer its upstream
 * connection reuses): a reader copies what it keeps.
 */
export interface PayloadSink {
  data(buf: Buffer, start: number, end: number): void;
}

/**
 * Tracks where a message body ends without copying it. `feed(buf, start)` returns the offset just
 * past the body bytes that belong to this message (≤ buf.length); `done` tells whether the body
 * is complete. Throws HttpParseError on malformed chunked framing. With a `sink`, the payload
 * ranges are also handed to it as they pass (a reader of the content, e.g. AI usage).
 */
export class BodyTracker {
  mode = B_NONE;
  remaining = 0;
  done = true;
  /** body bytes seen (payload and framing) */
  bytes = 0;
  /** payload reader of the current message (cleared by startRequest/startResponse) */
  sink: PayloadSink | null = null;
  private cstate = C_SIZE;
  private digits = 0;
  private lineBytes = 0;
  /** the current trailer field name, lower-cased (only its first bytes: the refused names are short); made at the first trailer */
  private tname: Uint8Array | null = null;

  /** Request body framing from its head. */
  startRequest(h: MessageHead): void {
    this.bytes = 0;
    this.sink = null;
    if (h.chunked) this.startChunked();
    else if (h.contentLength > 0) { this.mode = B_LENGTH; this.remaining = h.contentLength; this.done = false; }
    else { this.mode = B_NONE; this.done = true; }
  }

  /** Response body framing (RFC 9112 §6.3): no body for HEAD, 1xx, 204, 304. */
  startResponse(h: MessageHead, requestMethod: string): void {
    this.bytes = 0;
    this.sink = null;
    if (requestMethod === 'HEAD' || (h.status >= 100 && h.status < 200) || h.status === 204 || h.status === 304) { this.mode = B_NONE; this.done = true; }
    else if (h.chunked) this.startChunked();
    else if (h.contentLength >= 0) {
      this.mode = h.contentLength > 0 ? B_LENGTH : B_NONE;
      this.remaining = h.contentLength;
      this.done = h.contentLength === 0;
    } else { this.mode = B_EOF; this.done = false; }
  }

  get untilClose(): boolean {
    return this.mode === B_EOF;
  }

  /** As new (a connection's parser state handed back to its pool). */
  reset(): void {
    this.mode = B_NONE;
    this.remaining = 0;
    this.done = true;
    this.bytes = 0;
    this.sink = null;
    this.cstate = C_SIZE;
    this.digits = 0;
    this.lineBytes = 0;
  }

  private startChunked(): void {
    this.mode = B_CHUNKED;
    this.done = false;
    this.cstate = C_SIZE;
    this.digits = 0;
    this.remaining = 0;
    this.lineBytes = 0;
  }

  /** One byte of a chunk extension (RFC 9112 §7.1.1: `;` token [`=` token / quoted-string]). */
  private extByte(b: number): void {
    switch (this.cstate) {
      case C_EXT_NAME0:
        if (!TCHAR[b]) throw badChunk('invalid chunk extension name');
        this.cstate = C_EXT_NAME;
        return;
      case C_EXT_NAME:
        if (TCHAR[b]) return;
        if (b === EQ) this.cstate = C_EXT_VAL0;
        else if (b === SEMI) this.cstate = C_EXT_NAME0;
        else if (b === CR) this.cstate = C_SIZE_LF;
        else throw badChunk('invalid character in a chunk extension name');
        return;
      case C_EXT_VAL0:
        if (TCHAR[b]) this.cstate = C_EXT_TOKEN;
        else if (b === DQUOTE) this.cstate = C_EXT_QUOTED;
        else throw badChunk('invalid chunk extension value');
        return;
      case C_EXT_TOKEN:
        if (TCHAR[b]) return;
        if (b === SEMI) this.cstate = C_EXT_NAME0;
        else if (b === CR) this.cstate = C_SIZE_LF;
        else throw badChunk('invalid character in a chunk extension value');
        return;
      case C_EXT_QUOTED:
        if (QDTEXT[b]) return;
        if (b === DQUOTE) this.cstate = C_EXT_QEND;
        else if (b === BSLASH) this.cstate = C_EXT_QPAIR;
        else throw badChunk('invalid character in a quoted chunk extension value');
        return;
      case C_EXT_QPAIR:
        if (!VCHAR[b]) throw badChunk('invalid quoted-pair in a chunk extension value');
        this.cstate = C_EXT_QUOTED;
        return;
      case C_EXT_QEND:
        if (b === SEMI) this.cstate = C_EXT_NAME0;
        else if (b === CR) this.cstate = C_SIZE_LF;
        else throw badChunk('invalid character after a quoted chunk extension value');
        return;
    }
  }

  feed(buf: Buffer, start: number): number {
    if (this.done) return start;
    if (this.mode === B_EOF) {
      this.bytes += buf.length - start;
      if (this.sink && buf.length > start) this.sink.data(buf, start, buf.length);
      return buf.length;
    }
    if (this.mode === B_LENGTH) {
      const n = Math.min(this.remaining, buf.length - start);
      if (this.sink && n > 0) this.sink.data(buf, start, start + n);
      this.remaining -= n;
      this.bytes += n;
      if (this.remaining === 0) this.done = true;
      return start + n;
    }
    let i = start;
    const len = buf.length;
    while (i < len && !this.done) {
      switch (this.cstate) {
        case C_DATA: {
          const n = Math.min(this.remaining, len - i);
          if (this.sink && n > 0) this.sink.data(buf, i, i + n);
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) this.cstate = C_DATA_CR;
          continue;
        }
        case C_SIZE: {
          const b = buf[i]!;
          const h = HEX[b]!;
          if (h >= 0) {
            if (++this.digits > 13) throw new HttpParseError(400, 'chunk_size_too_large', 'chunk size too large');
            this.remaining = this.remaining * 16 + h;
          } else if (this.digits === 0) {
            throw new HttpParseError(400, 'bad_chunk_size', 'invalid chunk size');
          } else if (b === CR) this.cstate = C_SIZE_LF;
          else if (b === SEMI) { this.cstate = C_EXT_NAME0; this.lineBytes = 0; }
          else if (b === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF after the chunk size');
          else throw new HttpParseError(400, 'bad_chunk_size', 'invalid character after the chunk size');
          i++;
          continue;
        }
        case C_EXT_NAME0:
        case C_EXT_NAME:
        case C_EXT_VAL0:
        case C_EXT_TOKEN:
        case C_EXT_QUOTED:
        case C_EXT_QPAIR:
        case C_EXT_QEND: {
          if (++this.lineBytes > MAX_CHUNK_LINE) throw new HttpParseError(400, 'chunk_ext_too_long', 'chunk extension too long');
          this.extByte(buf[i++]!);
          continue;
        }
        case C_SIZE_LF: {
          if (buf[i++] !== LF) throw new HttpParseError(400, 'bad_chunk', 'CR without LF after the chunk line');
          this.digits = 0;
          this.cstate = this.remaining === 0 ? C_TRAILER_START : C_DATA;
          continue;
        }
        case C_DATA_CR: {
          if (buf[i++] !== CR) throw new HttpParseError(400, 'bad_chunk', 'chunk data longer than its size');
          this.cstate = C_DATA_LF;
          continue;
        }
        case C_DATA_LF: {
          if (buf[i++] !== LF) throw new HttpParseError(400, 'bare_lf', 'chunk data not followed by CRLF');
          this.cstate = C_SIZE;
          this.remaining = 0;
          continue;
        }
        case C_TRAILER_START: {
          const b = buf[i++]!;
          if (b === CR) this.cstate = C_END_LF;
          else if (b === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF in the trailer section');
          else if (b === SP || b === HT) throw new HttpParseError(400, 'obs_fold', 'obsolete line folding in a trailer');
          else if (TCHAR[b]) { this.cstate = C_TRAILER_NAME; this.lineBytes = 1; (this.tname ??= new Uint8Array(TRAILER_NAME_MAX))[0] = b >= 65 && b <= 90 ? b | 0x20 : b; }
          else throw new HttpParseError(400, 'bad_trailer', 'invalid trailer field name');
          continue;
        }
        case C_TRAILER_NAME:
        case C_TRAILER_VALUE: {
          const b = buf[i++]!;
          if (++this.lineBytes > MAX_CHUNK_LINE) throw new HttpParseError(400, 'trailer_too_long', 'trailer field too long');
          if (this.cstate === C_TRAILER_NAME) {
            if (b === COLON) {
              this.cstate = C_TRAILER_VALUE;
              const n = this.lineBytes - 1;
              if (n <= TRAILER_NAME_MAX) {
                const name = String.fromCharCode(...this.tname!.subarray(0, n));
                if (TRAILER_REFUSED.has(name)) throw new HttpParseError(400, 'bad_trailer', `"${name}" is not allowed in a trailer`);
              }
            } else if (!TCHAR[b]) throw new HttpParseError(400, 'bad_trailer', 'invalid trailer field name');
            else if (this.lineBytes <= TRAILER_NAME_MAX) this.tname![this.lineBytes - 1] = b >= 65 && b <= 90 ? b | 0x20 : b;
          } else if (b === CR) this.cstate = C_TRAILER_LF;
          else if (!VCHAR[b]) throw new HttpParseError(400, b === LF ? 'bare_lf' : 'bad_trailer', 'invalid character in a trailer field value');
          continue;
        }
        case C_TRAILER_LF: {
          if (buf[i++] !== LF) throw new HttpParseError(400, 'bare_lf', 'CR without LF in the trailer section');
          this.cstate = C_TRAILER_START;
          continue;
        }
        case C_END_LF: {
          if (buf[i++] !== LF) throw new HttpParseError(400, 'bare_lf', 'CR without LF at the end of the chunked body');
          this.done = true;
          continue;
        }
      }
    }
    this.bytes += i - start;
    return i;
  }
}

const RESPONSE_HEADS: HeadParserOptions = Object.freeze({ kind: 'response' });

/**
 * One client connection's parser state: its request and response head parsers and body
 * trackers. A ParserPool keeps it between connections: reset as it is handed back, so nothing of
 * one connection (a head cut in the middle, a body's framing state, a payload reader) is seen by
 * the next.
 */
export class ConnectionParsers {
  readonly reqHead: HeadParser;
  readonly resHead = new HeadParser(RESPONSE_HEADS);
  readonly reqBody = new BodyTracker();
  readonly resBody = new BodyTracker();

  constructor(request: HeadParserOptions) {
    this.reqHead = new HeadParser(request);
  }

  reset(): void {
    this.reqHead.reset();
    this.resHead.reset();
    this.reqBody.reset();
    this.resBody.reset();
  }
}

/**
 * Parser state for a proxy's connections: taken when a connection is accepted, handed back when
 * it is destroyed (with a connection per request, four parser objects per request otherwise).
 * At most `max` are kept.
 */
export class ParserPool {
  private readonly free: ConnectionParsers[] = [];
  private readonly request: HeadParserOptions;
  private readonly max: number;

  constructor(maxHeadBytes?: number, max = 1024) {
    this.request = Object.freeze(maxHeadBytes ? { kind: 'request', maxHeadBytes } : { kind: 'request' });
    this.max = max;
  }

  take(): ConnectionParsers {
    return this.free.pop() ?? new ConnectionParsers(this.request);
  }

  put(p: ConnectionParsers): void {
    p.reset();
    if (this.free.length < this.max) this.free.push(p);
  }

  /** sets kept for the next connections */
  get size(): number {
    return this.free.length;
  }
}

/** Case-insensitive lookup of the first value of a header in a flat [name, value, ...] list. */
export function headerValue(headers: readonly string[], lname: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!;
    if (n.length === lname.length && n.toLowerCase() === lname) return headers[i + 1];
  }
  return undefined;
}
