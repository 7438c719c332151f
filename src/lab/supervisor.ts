/**
 * The lab's agent supervisor: `bin/node src/lab/supervisor.ts --node node1 [--proxy <argv JSON>] -- <agent argv>`, started
 * detached by `membrane up` on the host (one per node). It runs the agent (nsenter into the node's
 * namespace, src/lab/node-agent.ts) and restarts it whenever it exits, with backoff, logging why
 * (src/sys/supervise.ts). Its state (restarts, last exit) is <nodeDir>/supervisor.json, which the
 * agent's `status` shows. SIGTERM (from `membrane down`) stops the agent first, then itself.
 *
 * With `--proxy`, it supervises the node's L7 proxy process (src/lab/node-proxy.ts) the same way,
 * apart from the agent: either can die and restart while the other serves on
 * (<nodeDir>/l7proxy-supervisor.json, l7proxy.log).
 *
 * The datapath keeps enforcing from its pinned programs and maps while the agent is away; the
 * restarted agent picks endpoints, identities and policy up from its store and the pinned maps.
 */
import { parseArgs } from 'node:util';
import { rm } from 'node:fs/promises';
import { labPaths } from '../common/paths.ts';
import { loadConfig } from '../common/config.ts';
import { createLogger } from '../common/logger.ts';
import { readPidFile } from '../sys/proc.ts';
import { supervise, supervisorFiles } from '../sys/supervise.ts';
import { AGENT_MARKER, PROXY_MARKER, nodeNetnsName } from './names.ts';
import { proxyFiles } from '../proxy/feed/wire.ts';
import { netnsPath } from '../sys/net.ts';
import { existsSync } from 'node:fs';

const { values, positionals } = parseArgs({ options: { node: { type: 'string' }, proxy: { type: 'string' } }, allowPositionals: true });
const node = values.node;
if (!node || !positionals.length) {
  process.stderr.write('usage: supervisor.ts --node NODE -- AGENT_ARGV...\n');
  process.exit(2);
}
const config = loadConfig({});
const paths = labPaths(config);
const files = supervisorFiles(paths.nodeDir(node));
const logger = createLogger({ level: config.logLevel }).child({ subsys: 'supervisor', node });
const running = readPidFile(paths.agentPidFile(node));
const netns = netnsPath(nodeNetnsName(node, paths.lab));

// a lab taken down around it (its node namespace or state gone) is not brought back
const gone = () => (!existsSync(netns) ? `${netns} is gone` : !existsSync(paths.nodeDir(node)) ? `${paths.nodeDir(node)} is gone` : undefined);
const pfiles = proxyFiles(paths.nodeDir(node));
const proxyRunning = readPidFile(pfiles.pid);
const proxySup = values.proxy ? supervise({
  name: `l7 proxy ${node}`, argv: JSON.parse(values.proxy) as string[], cwd: process.cwd(),
  logFile: pfiles.log, stateFile: pfiles.supervisor,
  ...(proxyRunning ? { adopt: { pid: proxyRunning, expect: PROXY_MARKER } } : {}),
  log: (msg, fields) => logger.warn(fields, msg),
  onStart: (pid) => logger.info({ pid }, 'l7 proxy started'),
  onFailureOnly: true,
  gone,
}) : undefined;

const sup = supervise({
  name: `agent ${node}`, argv: positionals, cwd: process.cwd(),
  logFile: paths.agentLog(node), stateFile: files.state,
  ...(running ? { adopt: { pid: running, expect: AGENT_MARKER } } : {}),
  log: (msg, fields) => logger.warn(fields, msg),
  onStart: (pid) => logger.info({ pid }, 'agent started'),
  // a loaded spare agent: a restart does not wait for the code to load (seconds on a busy machine)
  standby: { flag: '--standby' },
  // an agent stopped on purpose (SIGTERM: it exits 0) stays stopped; `membrane up` starts it again
  // (with the settings of that run); a crash or a kill is restarted
  onFailureOnly: true,
  // a lab taken down around it (its node namespace or state gone) is not brought back
  gone,
  onEnd: () => { void (proxySup?.stop(5000) ?? Promise.resolve()).then(() => rm(files.pid, { force: true })).finally(() => process.exit(0)); },
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'supervisor stopping: agent first');
  await sup.stop(10_000);
  await proxySup?.stop(5000);
  await rm(files.pid, { force: true });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
