/**
 * The agent's local API: JSON over HTTP on a unix socket (like cilium's /var/run/cilium/cilium.sock).
 * Clients: the CLI, the lab, tests. Handlers check their body and query (src/api/requests.ts) and
 * return a value (200 JSON) or throw MembraneError (400 with {code, message, hint, issues?});
 * a body that is not JSON is a 400 too. Anything else is a 500 AGENT_INTERNAL.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { rm } from 'node:fs/promises';
import { MembraneError } from '../common/errors.ts';

export type Handler = (body: unknown, query: URLSearchParams) => Promise<unknown>;

export interface ApiError {
  code: string;
  message: string;
  hint?: string;
  issues?: unknown[];
}

export class ApiRequestError extends MembraneError {
  readonly issues: unknown[] | undefined;
  constructor(code: string, message: string, opts: { hint?: string; issues?: unknown[] } = {}) {
    super(code, message, opts.hint === undefined ? {} : { hint: opts.hint });
    this.issues = opts.issues;
  }
}

async function readBody(req: IncomingMessage, limit = 64 << 20): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new ApiRequestError('API_BODY_TOO_LARGE', `request body over ${limit} bytes`);
    chunks.push(c as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new ApiRequestError('API_BAD_REQUEST', `request body is not JSON: ${(e as Error).message}`, { hint: 'send a JSON object (content-type: application/json)' });
  }
}

export function createApiServer(opts: { socketPath: string; routes: Record<string, Handler> }): { start(): Promise<void>; stop(): Promise<void> } {
  let server: Server | undefined;
  return {
    async start() {
      await rm(opts.socketPath, { force: true });
      server = createServer(async (req, res) => {
        const url = new URL(req.url ?? '/', 'http://agent');
        const handler = opts.routes[`${req.method} ${url.pathname}`];
        res.setHeader('content-type', 'application/json');
        if (!handler) {
          res.statusCode = 404;
          res.end(JSON.stringify({ code: 'API_NOT_FOUND', message: `no route ${req.method} ${url.pathname}` } satisfies ApiError));
          return;
        }
        try {
          const out = await handler(await readBody(req), url.searchParams);
          res.end(JSON.stringify(out ?? {}));
        } catch (e) {
          const err = e as Partial<ApiRequestError> & Error;
          // a kvstore outage is the service's state, not the request's fault
          res.statusCode = err.code === 'KVSTORE_UNAVAILABLE' ? 503 : err instanceof MembraneError ? 400 : 500;
          res.end(JSON.stringify({
            code: err.code ?? 'AGENT_INTERNAL', message: err.message,
            ...(err.hint ? { hint: err.hint } : {}), ...(err.issues ? { issues: err.issues } : {}),
          } satisfies ApiError));
        }
      });
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(opts.socketPath, () => resolve());
      });
    },
    async stop() {
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server?.closeAllConnections();
      await rm(opts.socketPath, { force: true });
    },
  };
}
