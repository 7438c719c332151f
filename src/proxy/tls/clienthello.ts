/**
 * An incremental TLS ClientHello reader: enough of RFC 8446 §4.1.2 / RFC 6066 §3 to decide on the
 * server name without decrypting anything. Feed it the bytes a client sends, in whatever pieces
 * TCP delivers them; it reassembles the handshake message across TLS records (a ClientHello may be
 * fragmented over several records, and records over several segments) and reports the SNI, ALPN
 * and versions once the whole message is there.
 *
 * It never throws: malformed input ends in `{ state: 'error', code }` with a stable code that
 * flows and metrics can carry. It holds at most `maxBytes` of handshake data (giant extensions
 * are refused, not buffered).
 */

import { BoundedCache } from '../../common/bounded-cache.ts';

export type ClientHelloError =
  | 'NOT_TLS'           // first record is not a handshake record (plain HTTP, SSH...)
  | 'SSLV2'             // SSLv2-compatible hello: no extensions, so no SNI
  | 'BAD_RECORD'        // record header inconsistent (length 0, over 2^14+2048, wrong content type mid-hello)
  | 'NOT_CLIENT_HELLO'  // the first handshake message is something else
  | 'TRUNCATED'         // the hello's inner lengths run past its end
  | 'TOO_LARGE'         // the hello is larger than maxBytes
  | 'BAD_EXTENSION'     // an extension's inner structure is inconsistent, or one appears twice
  | 'BAD_SNI';          // server_name present but not a valid host name

export interface ClientHelloInfo {
  /** lower-cased host name from server_name, undefined when the extension is absent */
  sni: string | undefined;
  alpn: string[];
  /** legacy_version of the hello (0x0303 for TLS 1.2 and 1.3) */
  legacyVersion: number;
  /** supported_versions, when the client sent them (TLS 1.3 clients do) */
  supportedVersions: number[];
  /** the highest version the client offers: max(supported_versions) or legacy_version */
  maxVersion: number;
  /** record-layer version of the first record (0x0300 = SSLv3, 0x0301 = TLS 1.0...) */
  recordVersion: number;
  /** total bytes of the records that carried the hello */
  bytes: number;
}

export type ClientHelloResult =
  | { state: 'need-more' }
  | { state: 'done'; hello: ClientHelloInfo }
  | { state: 'error'; code: ClientHelloError; message: string };

const RECORD_HANDSHAKE = 22;
const HS_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_SUPPORTED_VERSIONS = 43;
const MAX_RECORD = (1 << 14) + 2048;
// A DNS name: letters, digits, '-', '_' (seen in practice), dots between labels, 1-63 per label.
const HOST_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

export function tlsVersionName(v: number): string {
  switch (v) {
    case 0x0300: return 'SSLv3';
    case 0x0301: return 'TLS 1.0';
    case 0x0302: return 'TLS 1.1';
    case 0x0303: return 'TLS 1.2';
    case 0x0304: return 'TLS 1.3';
    default: return `0x${v.toString(16).padStart(4, '0')}`;
  }
}

/** shared by every reader (a reader per connection): results are never changed, an empty Buffer is never written */
const NEED_MORE: ClientHelloResult = Object.freeze({ state: 'need-more' });
const EMPTY = Buffer.alloc(0);

export class ClientHelloReader {
  readonly #maxBytes: number;
  /** unconsumed record bytes (a partial record header or body) */
  #pending: Buffer = EMPTY;
  /** reassembled handshake bytes */
  #hs: Buffer[] = [];
  #hsLen = 0;
  #recordBytes = 0;
  #recordVersion = -1;
  #result: ClientHelloResult = NEED_MORE;

  constructor(opts: { maxBytes?: number } = {}) {
    this.#maxBytes = opts.maxBytes ?? 64 * 1024;
  }

  get result(): ClientHelloResult {
    return this.#result;
  }

  /** Adds bytes from the client; returns the state after them. */
  push(chunk: Buffer): ClientHelloResult {
    if (this.#result.state !== 'need-more') return this.#result;
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    while (this.#result.state === 'need-more') {
      const p = this.#pending;
      if (p.length === 0) break;
      if (this.#recordVersion < 0) {
        // Decide early on the very first byte, so non-TLS clients are told apart at once.
        if (p[0]! & 0x80) return this.#fail('SSLV2', 'SSLv2-compatible ClientHello (no extensions, no SNI)');
        if (p[0] !== RECORD_HANDSHAKE) return this.#fail('NOT_TLS', `first byte 0x${p[0]!.toString(16)} is not a TLS handshake record`);
      }
      if (p.length < 5) break;
      const type = p[0]!;
      const version = p.readUInt16BE(1);
      const len = p.readUInt16BE(3);
      if (type !== RECORD_HANDSHAKE) return this.#fail('BAD_RECORD', `record type ${type} inside the ClientHello`);
      if ((version >> 8) !== 3) return this.#fail('BAD_RECORD', `record version 0x${version.toString(16)}`);
      if (len === 0 || len > MAX_RECORD) return this.#fail('BAD_RECORD', `record length ${len}`);
      if (this.#recordVersion < 0) this.#recordVersion = version;
      if (this.#hsLen + len > this.#maxBytes + 4) return this.#fail('TOO_LARGE', `ClientHello larger than ${this.#maxBytes} bytes`);
      if (this.#hsLen === 0 && len >= 4 && p.length >= 9) {
        // The handshake header is in the first record: refuse a giant hello before buffering it.
        if (p[5] !== HS_CLIENT_HELLO) return this.#fail('NOT_CLIENT_HELLO', `handshake type ${p[5]}`);
        const bodyLen = p.readUIntBE(6, 3);
        if (bodyLen > this.#maxBytes) return this.#fail('TOO_LARGE', `ClientHello of ${bodyLen} bytes`);
      }
      if (p.length < 5 + len) break;
      this.#hs.push(p.subarray(5, 5 + len));
      this.#hsLen += len;
      this.#recordBytes += 5 + len;
      this.#pending = p.subarray(5 + len);
      this.#tryParse();
    }
    return this.#result;
  }

  #fail(code: ClientHelloError, message: string): ClientHelloResult {
    this.#result = { state: 'error', code, message };
    this.#hs = [];
    this.#pending = EMPTY;
    return this.#result;
  }

  #tryParse(): void {
    if (this.#hsLen < 4) return;
    const hs = this.#hs.length === 1 ? this.#hs[0]! : Buffer.concat(this.#hs);
    this.#hs = [hs];
    if (hs[0] !== HS_CLIENT_HELLO) { this.#fail('NOT_CLIENT_HELLO', `handshake type ${hs[0]}`); return; }
    const bodyLen = hs.readUIntBE(1, 3);
    if (bodyLen > this.#maxBytes) { this.#fail('TOO_LARGE', `ClientHello of ${bodyLen} bytes`); return; }
    if (hs.length < 4 + bodyLen) return; // more records to come
    const parsed = parseClientHelloBody(hs.subarray(4, 4 + bodyLen));
    if ('code' in parsed) { this.#fail(parsed.code, parsed.message); return; }
    this.#result = {
      state: 'done',
      hello: { ...parsed, recordVersion: this.#recordVersion, bytes: this.#recordBytes },
    };
  }
}

type Body = Omit<ClientHelloInfo, 'recordVersion' | 'bytes'>;

/** Parses the body of a ClientHello handshake message (after type and length). */
export function parseClientHelloBody(b: Buffer): Body | { code: ClientHelloError; message: string } {
  const trunc = (what: string) => ({ code: 'TRUNCATED' as const, message: `ClientHello truncated in ${what}` });
  let o = 0;
  if (b.length < 2 + 32 + 1) return trunc('version/random');
  const legacyVersion = b.readUInt16BE(0);
  o = 2 + 32;
  const sidLen = b[o]!;
  o += 1 + sidLen;
  if (sidLen > 32 || o + 2 > b.length) return trunc('session id');
  const csLen = b.readUInt16BE(o);
  o += 2 + csLen;
  if (csLen % 2 !== 0 || o + 1 > b.length) return trunc('cipher suites');
  const cmLen = b[o]!;
  o += 1 + cmLen;
  if (o > b.length) return trunc('compression methods');
  const out: Body = { sni: undefined, alpn: [], legacyVersion, supportedVersions: [], maxVersion: legacyVersion };
  if (o === b.length) return out; // no extensions (old clients)
  if (o + 2 > b.length) return trunc('extensions length');
  const extLen = b.readUInt16BE(o);
  o += 2;
  if (o + extLen !== b.length) return trunc('extensions');
  const seen = new Set<number>();
  while (o < b.length) {
    if (o + 4 > b.length) return trunc('extension header');
    const type = b.readUInt16BE(o);
    const len = b.readUInt16BE(o + 2);
    o += 4;
    if (o + len > b.length) return trunc(`extension ${type}`);
    if (seen.has(type)) return { code: 'BAD_EXTENSION', message: `extension ${type} appears twice` };
    seen.add(type);
    const ext = b.subarray(o, o + len);
    o += len;
    if (type === EXT_SERVER_NAME) {
      const r = parseServerName(ext);
      if (typeof r !== 'string') return r;
      out.sni = r;
    } else if (type === EXT_ALPN) {
      if (ext.length < 2 || ext.readUInt16BE(0) !== ext.length - 2) return { code: 'BAD_EXTENSION', message: 'malformed ALPN' };
      for (let i = 2; i < ext.length;) {
        const l = ext[i]!;
        if (l === 0 || i + 1 + l > ext.length) return { code: 'BAD_EXTENSION', message: 'malformed ALPN' };
        out.alpn.push(ext.toString('latin1', i + 1, i + 1 + l));
        i += 1 + l;
      }
    } else if (type === EXT_SUPPORTED_VERSIONS) {
      if (ext.length < 1 || ext[0] !== ext.length - 1 || ext[0]! % 2 !== 0) return { code: 'BAD_EXTENSION', message: 'malformed supported_versions' };
      for (let i = 1; i < ext.length; i += 2) {
        const v = ext.readUInt16BE(i);
        if ((v & 0x0f0f) !== 0x0a0a) out.supportedVersions.push(v); // skip GREASE values
      }
    }
  }
  if (out.supportedVersions.length) out.maxVersion = Math.max(...out.supportedVersions);
  return out;
}

function parseServerName(ext: Buffer): string | { code: ClientHelloError; message: string } {
  if (ext.length < 2 || ext.readUInt16BE(0) !== ext.length - 2) return { code: 'BAD_EXTENSION', message: 'malformed server_name list' };
  let name: string | undefined;
  for (let i = 2; i < ext.length;) {
    if (i + 3 > ext.length) return { code: 'BAD_EXTENSION', message: 'malformed server_name entry' };
    const kind = ext[i]!;
    const l = ext.readUInt16BE(i + 1);
    if (i + 3 + l > ext.length) return { code: 'BAD_EXTENSION', message: 'server_name entry runs past the extension' };
    if (kind === 0) {
      if (name !== undefined) return { code: 'BAD_SNI', message: 'two host names in server_name' };
      name = ext.toString('latin1', i + 3, i + 3 + l);
    }
    i += 3 + l;
  }
  if (name === undefined) return { code: 'BAD_SNI', message: 'server_name without a host name' };
  const checked = serverName(name);
  if (checked.problem) return { code: 'BAD_SNI', message: checked.problem };
  return checked.name;
}

/**
 * A server name as a client sent it: its normal form (lower-cased, no trailing dot) and what makes
 * it no host name (hostNameProblem), a pure function of the name. Kept per name (bounded), so a
 * connection to a name seen before makes no strings (toLowerCase, the label split) and runs no
 * label checks: every ClientHello read (SNI filter and interception) asks this.
 */
export interface ServerName { name: string; problem: string | undefined }
const serverNames = new BoundedCache<string, ServerName>(4096);
export function serverName(raw: string): ServerName {
  let c = serverNames.get(raw);
  if (c) return c;
  c = { name: raw.toLowerCase().replace(/\.$/, ''), problem: hostNameProblem(raw) };
  // a name too long to be one is refused anyway: not kept (nor a key of 64 KiB)
  if (raw.length <= 253) serverNames.set(raw, c);
  return c;
}

/** Why a server name is not a DNS host name (RFC 6066: no trailing dot, no IP literals needed). */
export function hostNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'empty server name';
  if (name.length > 253) return 'server name longer than 253 characters';
  const n = name.toLowerCase().replace(/\.$/, '');
  for (const label of n.split('.')) {
    if (!HOST_LABEL.test(label)) return `server name ${JSON.stringify(name.length > 80 ? name.slice(0, 80) + '…' : name)} has an illegal label`;
  }
  return undefined;
}
