/**
 * `GET /metrics` over HTTP, on TCP or on a root-only unix socket (for host-side scrapers): how the
 * agent serves its cilium_* registry and Hubble its hubble_* one. Anything else is a 404.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, rm } from 'node:fs/promises';

export interface MetricsExposition {
  contentType: string;
  body: string;
}

export interface MetricsEndpoint {
  /** Serves on TCP; resolves once listening. */
  serve(port: number, host?: string): Promise<Server>;
  /** Serves on a unix socket created mode 0600 (never wider for an instant). */
  serveUnix(path: string): Promise<Server>;
}

/** `render` gets the scraper's Accept header (content negotiation, e.g. OpenMetrics). */
export function metricsEndpoint(render: (accept: string | undefined) => Promise<MetricsExposition>): MetricsEndpoint {
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found: GET /metrics\n');
      return;
    }
    render(req.headers.accept).then(({ contentType, body }) => {
      res.writeHead(200, { 'content-type': contentType });
      res.end(body);
    }, (e: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${e.message}\n`);
    });
  };
  const listen = (s: Server, ...args: unknown[]) => new Promise<Server>((resolve, reject) => {
    s.once('error', reject);
    (s.listen as (...a: unknown[]) => void)(...args, () => { s.removeListener('error', reject); resolve(s); });
  });
  return {
    serve: (port, host = '0.0.0.0') => listen(createServer(handle), port, host),
    async serveUnix(path) {
      await rm(path, { force: true });
      const old = process.umask(0o077);
      try {
        const s = await listen(createServer(handle), path);
        await chmod(path, 0o600);
        return s;
      } finally {
        process.umask(old);
      }
    },
  };
}
