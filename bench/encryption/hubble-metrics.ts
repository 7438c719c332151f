/**
 * A lab agent's Hubble metrics text (its metrics socket under the node's state directory), read by
 * the encryption benches to count flows and lost events around a measured window.
 */
import { get } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { metricsSocketPaths } from '../../src/agent/metrics.ts';

/** The node's /metrics text; a busy agent may close before reading the request (EPIPE): asked once more after 500 ms. */
export async function hubbleMetricsText(stateDir: string, node: string): Promise<string> {
  const scrape = () => new Promise<string>((res, rej) => {
    get({ socketPath: metricsSocketPaths(join(stateDir, 'nodes', node)).hubble, path: '/metrics' }, (r) => {
      let b = '';
      r.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => res(b));
    }).on('error', rej);
  });
  return scrape().catch(async () => { await sleep(500); return scrape(); });
}
