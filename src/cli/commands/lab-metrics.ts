/**
 * `membrane lab metrics [--serve 127.0.0.1:9965]`: the lab's metrics for a scraper on the host.
 * Each agent serves its expositions inside the node's network namespace (:9965 Hubble, :9962
 * agent) and on root-only unix sockets in the state directory; the root namespace has no route
 * into the lab, so a host-side Prometheus scrapes this loopback forwarder instead:
 *
 *   GET /metrics                      Hubble metrics of --node (default node1)
 *   GET /agent/metrics                cilium_* agent metrics of --node
 *   GET /nodes/<node>/metrics         Hubble metrics of any node
 *   GET /nodes/<node>/agent/metrics   agent metrics of any node
 *
 * Without --serve it prints the sockets and a Prometheus scrape configuration.
 */
import type { Command } from 'commander';
import { request, createServer } from 'node:http';
import { existsSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { labPaths } from '../../common/paths.ts';
import type { MembraneConfig } from '../../common/config.ts';
import { metricsSocketPaths } from '../../agent/metrics.ts';
import { MembraneError } from '../../common/errors.ts';

function nodes(config: MembraneConfig): string[] {
  const dir = join(labPaths(config).stateDir, 'nodes');
  try { return readdirSync(dir).filter((n) => existsSync(metricsSocketPaths(join(dir, n)).hubble)).sort(); } catch { return []; }
}

function parseListen(v: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(v);
  if (!m || !isIP(m[1]!) || Number(m[2]) > 65535) throw new MembraneError('LAB_METRICS_LISTEN', `--serve ${v}: expected a loopback address and port, e.g. 127.0.0.1:9965`, { hint: 'the forwarder listens on loopback only' });
  const host = m[1]!;
  // loopback only: the lab's metrics never leave this machine
  if (!(host.startsWith('127.') || host === '::1')) {
    throw new MembraneError('LAB_METRICS_LISTEN', `--serve ${v}: ${host} is not a loopback address`, { hint: 'use 127.0.0.1:<port> (or [::1]:<port>); the lab is not reachable from the network' });
  }
  return { host, port: Number(m[2]) };
}

export function registerLabMetrics(lab: Command, config: MembraneConfig): void {
  lab.command('metrics')
    .description('The lab\'s Hubble and agent metrics for a host-side scraper: unix sockets, or a loopback forwarder with --serve')
    .option('--node <name>', 'node served on /metrics and /agent/metrics', config.node)
    .option('--serve <addr>', 'run a forwarder on this loopback address (127.0.0.1:9965) until interrupted')
    .action(async (o: { node: string; serve?: string }) => {
      const paths = labPaths(config);
      if (!o.serve) {
        const lines = nodes(config).map((n) => {
          const s = metricsSocketPaths(paths.nodeDir(n));
          return `  ${n}: hubble ${s.hubble}\n  ${' '.repeat(n.length)}  agent  ${s.agent}`;
        });
        if (!lines.length) throw new MembraneError('LAB_METRICS_NONE', `lab ${paths.lab} has no node serving metrics`, { hint: 'run `membrane up` first' });
        process.stdout.write(`Metrics sockets (root only):\n${lines.join('\n')}\n\nFor Prometheus on this host: membrane lab metrics --serve 127.0.0.1:9965, then scrape\n` +
          `  - job_name: hubble\n    static_configs: [{targets: ['127.0.0.1:9965']}]\n` +
          `  - job_name: cilium-agent\n    metrics_path: /agent/metrics\n    static_configs: [{targets: ['127.0.0.1:9965']}]\n`);
        return;
      }
      const { host, port } = parseListen(o.serve);
      const server = createServer((req, res) => {
        const url = (req.url ?? '/').split('?')[0]!;
        // node names only (no dots): the path never leaves <stateDir>/nodes/<node>/
        const m = /^(?:\/nodes\/([A-Za-z0-9][A-Za-z0-9_-]*))?(\/agent)?\/metrics$/.exec(url);
        if (req.method !== 'GET' || !m) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: GET /metrics, /agent/metrics, /nodes/<node>/metrics, /nodes/<node>/agent/metrics\n');
          return;
        }
        const node = m[1] ?? o.node;
        const socks = metricsSocketPaths(paths.nodeDir(node));
        const upstream = request({ socketPath: m[2] ? socks.agent : socks.hubble, path: '/metrics', headers: { accept: req.headers.accept ?? '*/*' }, timeout: 10_000 }, (up) => {
          res.writeHead(up.statusCode ?? 502, { 'content-type': up.headers['content-type'] ?? 'text/plain' });
          up.pipe(res);
        });
        upstream.on('timeout', () => upstream.destroy(new Error('timeout')));
        upstream.on('error', (e) => {
          if (res.headersSent) return void res.destroy();
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(`node ${node}: no metrics (${e.message}); is the lab up?\n`);
        });
        upstream.end();
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(new MembraneError('LAB_METRICS_LISTEN', `cannot listen on ${o.serve}: ${e.message}`, { hint: 'pick another port' })));
        server.listen(port, host, resolve);
      });
      process.stdout.write(`serving lab ${paths.lab} metrics on http://${o.serve}/metrics (node ${o.node}) and /nodes/<node>/metrics; Ctrl-C stops\n`);
      await new Promise<void>((resolve) => {
        const stop = () => { server.close(); resolve(); };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
