/**
 * The lab's L7 proxy process: `bin/node src/lab/node-proxy.ts --node node1`, run by the node's
 * supervisor (src/lab/supervisor.ts) inside the node's network namespace beside the agent, as
 * Cilium's Envoy DaemonSet runs beside cilium-agent. It listens on the proxy ports the datapath
 * redirects to and judges with the agent's last policy snapshot (src/proxy/process/process.ts), so an
 * agent restart neither resets its connections nor stops it from serving.
 */
import { enableCompileCache } from 'node:module';

enableCompileCache();
const [{ parseArgs }, { writeFile, rm }, { loadConfig }, { labPaths }, { createLogger }, { createProxyProcess }, { proxyFiles }] = await Promise.all([
  import('node:util'), import('node:fs/promises'), import('../common/config.ts'), import('../common/paths.ts'), import('../common/logger.ts'),
  import('../proxy/process/process.ts'), import('../proxy/feed/wire.ts'),
]);

const { values } = parseArgs({ options: { node: { type: 'string', default: 'node1' } } });
const node = values.node!;
const config = loadConfig({});
const paths = labPaths(config);
const files = proxyFiles(paths.nodeDir(node));
const logger = createLogger({ level: config.logLevel }).child({ node, proc: 'l7proxy' });
const proxy = createProxyProcess({
  node, pinRoot: paths.pinRoot(node), feedSocket: files.feed, aiStateFile: `${paths.nodeDir(node)}/ai-budgets.json`,
  aiMaxBodyBytes: config.aiMaxBodyBytes, ipv6: config.enableIPv6, ...(config.otlpEndpoint ? { otlpEndpoint: config.otlpEndpoint } : {}), otel: config.otel,
  logger,
});
let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'proxy stopping (its sockmap slots are cleared: redirected traffic fails closed)');
  await proxy.stop().catch(() => {});
  await rm(files.pid, { force: true });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
await writeFile(files.pid, String(process.pid));
await proxy.start();
logger.info({ pid: process.pid }, 'L7 proxy ready');
