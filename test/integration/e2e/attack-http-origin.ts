/**
 * The origin server of the HTTP attack tests: a permissive HTTP/1.1 server that records every
 * byte it receives, per connection. It reads requests the way many servers do — an Upgrade it
 * does not take is ignored and the next request on the connection is read — so a request
 * smuggled past the proxy would be executed here, and the byte log shows whether anything the
 * policy forbids ever arrived.
 *
 *   each request          200, JSON {conn, method, target, host, upgrade, connection, http2Settings}
 *   `Upgrade: websocket`  on /ws: 101, then a WebSocket echo (text and binary frames come back
 *                         prefixed `echo:`, ping → pong, close → close); elsewhere ignored
 *   `Upgrade: h2c`        101 (it would speak HTTP/2 next; a proxy that removes h2c upgrade
 *                         headers never lets this happen)
 *
 * Imported by unit tests (startOrigin), or run in a lab pod:
 *   bin/node test/integration/e2e/attack-http-origin.ts --port=80 [--tls-port=443 --state-dir=DIR]
 *        --log=FILE [--ready=FILE]   (log: one JSON line per read, {conn, port, data} in latin1)
 */
import net from 'node:net';
import tls from 'node:tls';
import { createHash } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export interface OriginOptions {
  port: number;
  host?: string;
  /** TLS: a secure context per SNI (the lab CA issues one per name) */
  tlsContext?: (servername: string) => Promise<tls.SecureContext>;
  /** every read, in order */
  onBytes?(conn: number, port: number, data: Buffer): void;
}

export interface Origin {
  port: number;
  connections(): number;
  close(): Promise<void>;
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
let nextConn = 1;

function header(headers: Map<string, string>, name: string): string {
  return headers.get(name) ?? '';
}

/** One client connection: HTTP requests until a 101, then WebSocket frames (or nothing, for h2c). */
function serve(sock: net.Socket, port: number, onBytes: OriginOptions['onBytes']): void {
  const conn = nextConn++;
  let buf: Buffer = Buffer.alloc(0);
  let mode: 'http' | 'ws' | 'h2c' = 'http';
  sock.on('error', () => {});
  sock.on('data', (d: Buffer) => {
    onBytes?.(conn, port, d);
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (mode === 'ws') { buf = wsFrames(sock, buf); return; }
      if (mode === 'h2c') { buf = Buffer.alloc(0); return; }
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = buf.toString('latin1', 0, end).split('\r\n');
      const [method = '', target = ''] = lines[0]!.split(' ');
      const headers = new Map<string, string>();
      for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        if (c > 0) headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
      }
      const len = Number(header(headers, 'content-length') || 0);
      if (buf.length < end + 4 + len) return;
      buf = buf.subarray(end + 4 + len);
      const upgrade = header(headers, 'upgrade').toLowerCase();
      const connection = header(headers, 'connection').toLowerCase();
      const upgrading = /(^|,)\s*upgrade\s*(,|$)/.test(connection);
      if (upgrading && upgrade === 'websocket' && target.split('?')[0] === '/ws') {
        const accept = createHash('sha1').update(header(headers, 'sec-websocket-key') + WS_GUID).digest('base64');
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        mode = 'ws';
        continue;
      }
      if (upgrading && upgrade === 'h2c') {
        sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
        mode = 'h2c';
        continue;
      }
      const body = JSON.stringify({
        conn, method, target, host: header(headers, 'host'), upgrade: headers.get('upgrade') ?? null,
        connection: headers.get('connection') ?? null, http2Settings: headers.get('http2-settings') ?? null,
      });
      sock.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body) + 1}\r\n\r\n${body}\n`);
    }
  });
}

/** Echoes complete client frames (RFC 6455 §5.2); returns the bytes of an unfinished frame. */
function wsFrames(sock: net.Socket, buf: Buffer): Buffer {
  for (;;) {
    if (buf.length < 2) return buf;
    const opcode = buf[0]! & 0x0f;
    let len = buf[1]! & 0x7f;
    const masked = (buf[1]! & 0x80) !== 0;
    let at = 2;
    if (len === 126) { if (buf.length < 4) return buf; len = buf.readUInt16BE(2); at = 4; }
    else if (len === 127) { if (buf.length < 10) return buf; len = Number(buf.readBigUInt64BE(2)); at = 10; }
    const key = masked ? buf.subarray(at, at + 4) : null;
    if (masked) at += 4;
    if (buf.length < at + len) return buf;
    const payload = Buffer.from(buf.subarray(at, at + len));
    if (key) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
    buf = buf.subarray(at + len);
    if (opcode === 0x8) { sock.end(frame(0x8, payload.subarray(0, 2))); return Buffer.alloc(0); }
    if (opcode === 0x9) sock.write(frame(0xa, payload));
    else if (opcode === 0x1 || opcode === 0x2) sock.write(frame(opcode, Buffer.concat([Buffer.from('echo:'), payload])));
  }
}

function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff]);
  return Buffer.concat([head, payload]);
}

export async function startOrigin(opts: OriginOptions): Promise<Origin> {
  let conns = 0;
  const onConn = (sock: net.Socket, port: number) => { conns++; serve(sock, port, opts.onBytes); };
  const srv = opts.tlsContext
    ? tls.createServer({
      SNICallback: (name, cb) => { opts.tlsContext!(name).then((c) => cb(null, c), (e: Error) => cb(e)); },
    }, (s) => onConn(s, port))
    : net.createServer((s) => onConn(s, port));
  srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(opts.port, opts.host ?? '0.0.0.0', r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    port,
    connections: () => conns,
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

if (import.meta.filename === process.argv[1]) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, 'tls-port': { type: 'string' }, 'state-dir': { type: 'string' }, log: { type: 'string' }, ready: { type: 'string' } } });
  const log = values.log!;
  const onBytes = (conn: number, port: number, data: Buffer) => appendFileSync(log, `${JSON.stringify({ conn, port, data: data.toString('latin1') })}\n`);
  await startOrigin({ port: Number(values.port ?? 80), onBytes });
  if (values['tls-port']) {
    const { ensureLabCA, issueServerCert } = await import('../../../src/lab/ca.ts');
    const ca = await ensureLabCA(values['state-dir']!);
    const contexts = new Map<string, Promise<tls.SecureContext>>();
    const tlsContext = (name: string) => {
      let c = contexts.get(name);
      if (!c) contexts.set(name, (c = issueServerCert(ca, [name || 'origin.lab']).then((k) => tls.createSecureContext({ cert: k.cert, key: k.key }))));
      return c;
    };
    await startOrigin({ port: Number(values['tls-port']), tlsContext, onBytes });
  }
  if (values.ready) writeFileSync(values.ready, String(process.pid));
  process.on('SIGTERM', () => process.exit(0));
}
