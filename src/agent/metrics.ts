/**
 * The agent's own metrics (`membrane_*`, Prometheus text) on :9962 in the node's namespace, the
 * port of Cilium's agent metrics; Hubble's metrics stay on :9965. Subsystems register their
 * series in the one registry (today the AI filter's membrane_ai_*).
 */
import { createServer, type Server } from 'node:http';
import { Registry } from 'prom-client';

export const AGENT_METRICS_PORT = 9962;

export function createAgentMetrics(): { registry: Registry; serve(port: number, host?: string): Promise<Server> } {
  const registry = new Registry();
  return {
    registry,
    serve(port, host = '0.0.0.0') {
      const server = createServer((req, res) => {
        if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: GET /metrics\n');
          return;
        }
        registry.metrics().then((text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        }, (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`${e.message}\n`);
        });
      });
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => { server.removeListener('error', reject); resolve(server); });
      });
    },
  };
}
