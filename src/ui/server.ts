/**
 * The UI server (`membrane ui`): one HTTP listener, by default 127.0.0.1:12000 (Hubble UI's
 * port), that serves
 *   /                       the bundle from dist/ui (static.ts)
 *   /observer.Observer/*    Hubble's Observer API for the browser (gRPC-web over HTTP/1.1),
 *                           relayed byte for byte to one upstream Observer (grpc-web-proxy.ts)
 *   /api/v1/*               read-only questions for the node's agent (api.ts)
 *
 * It answers only requests addressed to it by a loopback name or its own address (a page on
 * another site cannot reach it through DNS rebinding), takes JSON and Connect bodies only with
 * their own content types (a cross-site form cannot send them without a CORS preflight, which
 * it never grants), and sends a Content-Security-Policy that allows nothing but itself.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { formatTarget, type HubbleClientTlsFiles, type ServerTarget } from '../hubble/client.ts';
import { MembraneError } from '../common/errors.ts';
import { createGrpcWebProxy } from './grpc-web-proxy.ts';
import { uiApi, UiRequestError, type ApiHandler } from './api.ts';
import { loadAssets, type StaticFile } from './static.ts';

export const DEFAULT_UI_PORT = 12000;
export const DEFAULT_UI_ADDRESS = '127.0.0.1';
const MAX_API_BODY = 64 * 1024;

export interface UiServerOptions {
  address?: string;
  /** 0 picks a free port */
  port?: number;
  /** the one Observer endpoint behind the UI: a node's hubble socket, or a cluster's Relay */
  observer: ServerTarget;
  /** client certificate, CA and server name for a TLS Observer (the lab Relay: mutual TLS) */
  observerTls?: HubbleClientTlsFiles;
  /** the agent that answers policy questions (its node's) */
  agentSocket: string;
  /** a cluster's other agents: a workload's policy is asked of the agent whose node runs it */
  otherAgentSockets?: string[];
  assetsDir: string;
  /** shown in the page (lab, node) */
  labels?: Record<string, string>;
}

export interface UiServer {
  start(): Promise<void>;
  stop(): Promise<void>;
  url(): string;
}

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

function sendJson(res: ServerResponse, status: number, v: unknown): void {
  const body = Buffer.from(JSON.stringify(v));
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'application/json', 'content-length': body.length, 'cache-control': 'no-store' });
  res.end(body);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_API_BODY) throw new UiRequestError(413, 'UI_BODY_TOO_LARGE', `request body over ${MAX_API_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  if (!size) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new UiRequestError(400, 'UI_BAD_REQUEST', 'the request body is not JSON');
  }
}

export function createUiServer(opts: UiServerOptions): UiServer {
  const address = opts.address ?? DEFAULT_UI_ADDRESS;
  let server: Server | undefined;
  let bound = opts.port ?? DEFAULT_UI_PORT;
  let assets = new Map<string, StaticFile>();
  const observer = createGrpcWebProxy(opts.observer, opts.observerTls);
  const info = () => ({ observer: formatTarget(opts.observer), ...opts.labels });
  const api: Record<string, ApiHandler> = uiApi({ agentSocket: opts.agentSocket, otherAgentSockets: opts.otherAgentSockets ?? [], info });

  const hostAllowed = (host: string | undefined): boolean => {
    if (!host) return false;
    const names = ['127.0.0.1', 'localhost', '[::1]'];
    if (address !== '0.0.0.0' && address !== '::') names.push(address.includes(':') ? `[${address}]` : address);
    return names.some((n) => host === `${n}:${bound}` || (bound === 80 && host === n));
  };

  async function handleApi(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const handler = api[`${req.method} ${url.pathname}`];
    if (!handler) return sendJson(res, 404, { code: 'UI_NOT_FOUND', message: `no route ${req.method} ${url.pathname}` });
    try {
      let body: unknown;
      if (req.method === 'POST') {
        if (!/^application\/json(;|$)/i.test(req.headers['content-type'] ?? '')) throw new UiRequestError(415, 'UI_BAD_REQUEST', 'POST bodies must be application/json');
        const origin = req.headers.origin;
        if (origin && !hostAllowed(origin.replace(/^https?:\/\//, ''))) throw new UiRequestError(403, 'UI_FORBIDDEN', `requests from ${origin} are not accepted`);
        body = await readJson(req);
      }
      sendJson(res, 200, await handler(body, url.searchParams));
    } catch (e) {
      const err = e as Partial<UiRequestError> & Error;
      const status = err instanceof UiRequestError ? err.status : 500;
      sendJson(res, status, { code: err.code ?? 'UI_INTERNAL', message: err.message, ...(err.hint ? { hint: err.hint } : {}), ...(err.issues ? { issues: err.issues } : {}) });
    }
  }

  function handleStatic(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const f = req.method === 'GET' || req.method === 'HEAD' ? assets.get(url.pathname) : undefined;
    if (!f) {
      res.writeHead(404, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8' });
      res.end('not found\n');
      return;
    }
    const headers = {
      ...SECURITY_HEADERS, 'content-type': f.type, etag: f.etag,
      'cache-control': f.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    };
    if (req.headers['if-none-match'] === f.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': f.body.length });
    res.end(req.method === 'HEAD' ? undefined : f.body);
  }

  return {
    async start() {
      assets = loadAssets(opts.assetsDir);
      server = createServer((req, res) => {
        if (!hostAllowed(req.headers.host)) {
          res.writeHead(421, { 'content-type': 'text/plain; charset=utf-8' });
          res.end(`membrane ui answers only to its own address (http://${address}:${bound}/), not to Host ${JSON.stringify(req.headers.host ?? '')}\n`);
          return;
        }
        for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
        const url = new URL(req.url ?? '/', 'http://ui');
        if (url.pathname.startsWith('/observer.Observer/')) observer.handle(req, res);
        else if (url.pathname.startsWith('/api/')) void handleApi(req, res, url);
        else handleStatic(req, res, url);
      });
      // flows stream for as long as a page is open
      server.requestTimeout = 0;
      server.keepAliveTimeout = 10_000;
      await new Promise<void>((resolve, reject) => {
        const onError = (e: NodeJS.ErrnoException) => reject(new MembraneError('UI_LISTEN', `membrane ui cannot listen on ${address}:${bound}: ${e.message}`, {
          hint: e.code === 'EADDRINUSE' ? 'another membrane ui (or Hubble UI) uses that port: pass --port' : 'check --address', cause: e,
        }));
        server!.once('error', onError);
        server!.listen(bound, address, () => {
          server!.off('error', onError);
          const a = server!.address();
          if (a && typeof a === 'object') bound = a.port;
          resolve();
        });
      });
    },
    async stop() {
      observer.close();
      if (!server) return;
      const s = server;
      server = undefined;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
    url: () => `http://${address.includes(':') ? `[${address}]` : address}:${bound}/`,
  };
}
