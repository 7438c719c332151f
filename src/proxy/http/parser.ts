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
 * a missing or repeated Host (HTTP/1.1), heads larger than `maxHeadBytes` (431).
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
  /** bytes of leading CRLFs skipped before a request line */
  private started = false;

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
    this.parts = [];
    this.partsLen = 0;
    this.prevCR = false;
    this.lineLen = 0;
    this.started = false;
  }

  push(chunk: Buffer, start = 0): { head: MessageHead; bodyStart: number } | undefined {
    let pos = start;
    // Leading empty lines before the request line are ignored (RFC 9112 §2.2).
    if (!this.started) {
      while (pos + 1 < chunk.length && chunk[pos] === CR && chunk[pos + 1] === LF) pos += 2;
      if (pos >= chunk.length) return undefined;
      if (chunk[pos] === CR && pos + 1 === chunk.length) return undefined; // wait for the LF
      if (chunk[pos] === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF before the start line');
      this.started = true;
    }
    const from = pos;
    let i = pos;
    for (;;) {
      const lf = chunk.indexOf(LF, i);
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
        const raw = this.parts.length === 0 ? chunk.subarray(from, i) : Buffer.concat([...this.parts, chunk.subarray(from, i)]);
        this.parts = [];
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
    let eol = raw.indexOf(LF);
    const line0End = eol - 1;
    const head: MessageHead = {
      method: '', target: '', status: 0, reason: '', version: 'HTTP/1.1', headers: [], raw,
      contentLength: -1, chunked: false, keepAlive: true, upgrade: false, host: '', expectContinue: false,
    };
    if (this.kind === 'request') parseRequestLine(raw, line0End, head);
    else parseStatusLine(raw, line0End, head);

    let teCount = 0;
    let clCount = 0;
    let hostCount = 0;
    let connClose = false, connKeepAlive = false, connUpgrade = false, hasUpgrade = false;
    let pos = eol + 1;
    let n = 0;
    while (pos < raw.length) {
      eol = raw.indexOf(LF, pos);
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
      const name = raw.toString('latin1', pos, c);
      let vs = c + 1;
      let ve = end;
      while (vs < ve && (raw[vs] === SP || raw[vs] === HT)) vs++;
      while (ve > vs && (raw[ve - 1] === SP || raw[ve - 1] === HT)) ve--;
      for (let k = vs; k < ve; k++) if (!VCHAR[raw[k]!]) throw new HttpParseError(400, 'bad_header_value', `control character in header "${name}"`);
      const value = raw.toString('latin1', vs, ve);
      head.headers.push(name, value);
      const lname = name.length <= 17 ? name.toLowerCase() : '';
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
        case 'connection': {
          const v = value.toLowerCase();
          if (v.includes('close')) connClose = true;
          if (v.includes('keep-alive')) connKeepAlive = true;
          if (v.includes('upgrade')) connUpgrade = true;
          break;
        }
        case 'upgrade':
          hasUpgrade = true;
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
      if (hostCount > 1) throw new HttpParseError(400, 'duplicate_host', 'more than one Host header');
      if (hostCount === 0 && head.version === 'HTTP/1.1') throw new HttpParseError(400, 'missing_host', 'HTTP/1.1 request without Host');
    }
    head.keepAlive = head.version === 'HTTP/1.1' ? !connClose : connKeepAlive && !connClose;
    head.upgrade = connUpgrade && hasUpgrade;
    return head;
  }
}

function parseRequestLine(raw: Buffer, end: number, head: MessageHead): void {
  let i = 0;
  while (i < end && TCHAR[raw[i]!]) i++;
  if (i === 0 || raw[i] !== SP) throw new HttpParseError(400, 'bad_request_line', 'invalid method in the request line');
  head.method = raw.toString('latin1', 0, i);
  const ts = ++i;
  while (i < end && TARGET[raw[i]!]) i++;
  if (i === ts || raw[i] !== SP) throw new HttpParseError(400, 'bad_request_line', 'invalid request target');
  head.target = raw.toString('latin1', ts, i);
  const v = raw.toString('latin1', i + 1, end);
  if (v === 'HTTP/1.1') head.version = 'HTTP/1.1';
  else if (v === 'HTTP/1.0') head.version = 'HTTP/1.0';
  else if (/^HTTP\/[0-9]\.[0-9]$/.test(v)) throw new HttpParseError(505, 'version_not_supported', `unsupported ${v}`);
  else throw new HttpParseError(400, 'bad_request_line', 'invalid HTTP version');
}

function parseStatusLine(raw: Buffer, end: number, head: MessageHead): void {
  const v = raw.toString('latin1', 0, Math.min(8, end));
  if (v === 'HTTP/1.1') head.version = 'HTTP/1.1';
  else if (v === 'HTTP/1.0') head.version = 'HTTP/1.0';
  else throw new HttpParseError(502, 'bad_status_line', 'invalid HTTP version in the status line');
  if (raw[8] !== SP) throw new HttpParseError(502, 'bad_status_line', 'invalid status line');
  const d0 = raw[9]! - 48, d1 = raw[10]! - 48, d2 = raw[11]! - 48;
  if (!(d0 >= 1 && d0 <= 5 && d1 >= 0 && d1 <= 9 && d2 >= 0 && d2 <= 9) || (end > 12 && raw[12] !== SP)) throw new HttpParseError(502, 'bad_status_line', 'invalid status code');
  head.status = d0 * 100 + d1 * 10 + d2;
  head.reason = end > 13 ? raw.toString('latin1', 13, end) : '';
}

// ------------------------------------------------------------------------------ bodies

const B_NONE = 0, B_LENGTH = 1, B_CHUNKED = 2, B_EOF = 3;
const C_SIZE = 0, C_SIZE_EXT = 1, C_SIZE_LF = 2, C_DATA = 3, C_DATA_CR = 4, C_DATA_LF = 5, C_TRAILER_START = 6, C_TRAILER = 7, C_TRAILER_LF = 8, C_END_LF = 9;
const MAX_CHUNK_LINE = 4096;

/** Receives the payload of a body (chunked framing removed) as ranges of what was read. */
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

  private startChunked(): void {
    this.mode = B_CHUNKED;
    this.done = false;
    this.cstate = C_SIZE;
    this.digits = 0;
    this.remaining = 0;
    this.lineBytes = 0;
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
          else if (b === 59 /* ; */ || b === SP || b === HT) { this.cstate = C_SIZE_EXT; this.lineBytes = 0; }
          else if (b === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF after the chunk size');
          else throw new HttpParseError(400, 'bad_chunk_size', 'invalid chunk size');
          i++;
          continue;
        }
        case C_SIZE_EXT: {
          const b = buf[i++]!;
          if (b === CR) this.cstate = C_SIZE_LF;
          else if (b === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF in a chunk extension');
          else if (++this.lineBytes > MAX_CHUNK_LINE) throw new HttpParseError(400, 'chunk_ext_too_long', 'chunk extension too long');
          continue;
        }
        case C_SIZE_LF: {
          if (buf[i++] !== LF) throw new HttpParseError(400, 'bad_chunk', 'CR without LF after the chunk size');
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
          else { this.cstate = C_TRAILER; this.lineBytes = 1; }
          continue;
        }
        case C_TRAILER: {
          const b = buf[i++]!;
          if (b === CR) this.cstate = C_TRAILER_LF;
          else if (b === LF) throw new HttpParseError(400, 'bare_lf', 'bare LF in the trailer section');
          else if (++this.lineBytes > MAX_CHUNK_LINE) throw new HttpParseError(400, 'trailer_too_long', 'trailer field too long');
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

/** Case-insensitive lookup of the first value of a header in a flat [name, value, ...] list. */
export function headerValue(headers: readonly string[], lname: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!;
    if (n.length === lname.length && n.toLowerCase() === lname) return headers[i + 1];
  }
  return undefined;
}
