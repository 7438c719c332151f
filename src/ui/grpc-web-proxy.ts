/**
 * The browser's flow API: Hubble's Observer service spoken as gRPC-web by the page and relayed
 * to ONE upstream Observer over plain gRPC (HTTP/2): a node's hubble socket in the lab today, a
 * Relay's address on a cluster (any gRPC server will do: no Connect or gRPC-web needed there).
 *
 * The relay never decodes a message (Envoy's grpc_web filter does the same): gRPC-web and gRPC
 * share the length-prefixed message framing, so request and response bytes pass through as they
 * are; only the trailers (HTTP/2 trailers upstream) become gRPC-web's trailer frame (flag 0x80).
 * Filters, positioning and field masks are the upstream's (src/hubble/filter.ts, observer.ts).
 * Only four read-only methods pass; the agent and debug event streams are not offered.
 */
import http2 from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HubbleClientTlsFiles, ServerTarget } from '../hubble/client.ts';
import { formatTarget } from '../hubble/client.ts';
import { clientTlsOptions } from '../hubble/tls.ts';

export const OBSERVER_METHODS: ReadonlySet<string> = new Set([
  '/observer.Observer/GetFlows', '/observer.Observer/ServerStatus', '/observer.Observer/GetNodes', '/observer.Observer/GetNamespaces',
]);
const MAX_REQUEST = 64 * 1024;
/** gRPC status codes used here (grpc/status.h) */
const UNAVAILABLE = 14;
const INVALID_ARGUMENT = 3;

export interface GrpcWebProxy {
  handle(req: IncomingMessage, res: ServerResponse): void;
  close(): void;
}

/** gRPC-web's trailer frame: 0x80, big-endian length, `key: value\r\n` lines. */
export function trailerFrame(trailers: Record<string, string>): Buffer {
  const text = Object.entries(trailers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const body = Buffer.from(text, 'utf8');
  const head = Buffer.alloc(5);
  head[0] = 0x80;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

function grpcWebError(res: ServerResponse, code: number, message: string): void {
  if (res.headersSent) {
    res.end(trailerFrame({ 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) }));
    return;
  }
  // a trailers-only response: the status travels in the headers
  res.writeHead(200, { 'content-type': 'application/grpc-web+proto', 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) });
  res.end();
}

/**
 * `tls` makes a TCP upstream TLS (a Relay serves mutual TLS only, as the lab's does): the files
 * are read once, here, so a missing certificate fails `membrane ui` at start, not the first page.
 */
export function createGrpcWebProxy(target: ServerTarget, tls?: HubbleClientTlsFiles): GrpcWebProxy {
  let session: http2.ClientHttp2Session | undefined;
  const secure = target.kind === 'tcp' && (target.tls || tls !== undefined) ? clientTlsOptions(tls ?? {}) : undefined;
  const where = `${formatTarget(target)}${secure && !(target.kind === 'tcp' && target.tls) ? ' (TLS)' : ''}`;
  const authority = target.kind === 'tcp' ? `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}` : '';

  function upstream(): http2.ClientHttp2Session {
    if (session && !session.closed && !session.destroyed) return session;
    const s = target.kind === 'unix'
      ? http2.connect('http://localhost', { createConnection: () => netConnect(target.path) })
      : secure ? http2.connect(`https://${authority}`, secure) : http2.connect(`http://${authority}`);
    s.on('error', () => { /* each stream reports it; the next call reconnects */ });
    s.on('close', () => { if (session === s) session = undefined; });
    s.unref();
    session = s;
    return s;
  }

  function forward(req: IncomingMessage, res: ServerResponse, path: string, body: Buffer): void {
    let stream: http2.ClientHttp2Stream;
    try {
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST', ':path': path, 'content-type': 'application/grpc+proto', te: 'trailers',
      };
      const timeout = req.headers['grpc-timeout'];
      if (typeof timeout === 'string' && /^\d{1,8}[HMSmun]$/.test(timeout)) headers['grpc-timeout'] = timeout;
      stream = upstream().request(headers, { endStream: false });
    } catch (e) {
      grpcWebError(res, UNAVAILABLE, `flow API at ${where} unavailable: ${(e as Error).message}`);
      return;
    }
    let done = false;
    const finish = () => { done = true; };
    // the page went away (closed, filter changed): cancel upstream, which stops following
    res.on('close', () => { if (!done) stream.close(http2.constants.NGHTTP2_CANCEL); });
    stream.on('response', (h) => {
      const status = Number(h[':status']);
      const grpcStatus = h['grpc-status'];
      if (status !== 200 || !String(h['content-type'] ?? '').startsWith('application/grpc')) {
        finish();
        grpcWebError(res, UNAVAILABLE, `flow API at ${where} answered HTTP ${status}`);
        stream.close();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/grpc-web+proto', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      res.flushHeaders();
      if (grpcStatus !== undefined) {
        // trailers-only upstream (an immediate error): relay it as the trailer frame
        finish();
        res.end(trailerFrame({ 'grpc-status': String(grpcStatus), ...(h['grpc-message'] ? { 'grpc-message': String(h['grpc-message']) } : {}) }));
        stream.close();
      }
    });
    stream.on('data', (chunk: Buffer) => {
      if (done) return;
      if (!res.write(chunk)) {
        stream.pause();
        res.once('drain', () => stream.resume());
      }
    });
    stream.on('trailers', (t) => {
      if (done) return;
      finish();
      res.end(trailerFrame({ 'grpc-status': String(t['grpc-status'] ?? '0'), ...(t['grpc-message'] ? { 'grpc-message': String(t['grpc-message']) } : {}) }));
    });
    stream.on('end', () => {
      if (done) return;
      finish();
      grpcWebError(res, UNAVAILABLE, `flow API at ${where} ended the stream without a status`);
    });
    stream.on('error', (e) => {
      if (done) return;
      finish();
      grpcWebError(res, UNAVAILABLE, `flow API at ${where} unavailable: ${e.message}`);
    });
    stream.end(body);
  }

  return {
    handle(req, res) {
      const path = new URL(req.url ?? '/', 'http://ui').pathname;
      if (req.method !== 'POST' || !OBSERVER_METHODS.has(path)) {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('not found\n');
        return;
      }
      if (!/^application\/grpc-web(\+proto)?$/i.test(String(req.headers['content-type'] ?? '').split(';')[0]!.trim())) {
        res.writeHead(415, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('the Observer API takes application/grpc-web+proto\n');
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REQUEST) over = true;
        else chunks.push(c);
      });
      req.on('end', () => {
        if (over) return grpcWebError(res, INVALID_ARGUMENT, `request over ${MAX_REQUEST} bytes`);
        forward(req, res, path, Buffer.concat(chunks));
      });
    },
    close() {
      session?.destroy();
      session = undefined;
    },
  };
}
