/**
 * membrane-cni: the CNI plugin (bin/membrane-cni runs this file). The runtime calls it with the
 * CNI_* variables and the network configuration on stdin; it answers on stdout with a result or
 * a CNI error (SPEC.md codes, spec.ts) and exits non-zero on error. It keeps no state: every
 * command is one call to the host-mode agent's API socket (routes.ts), which makes the network,
 * endpoint and policy — so an agent that is down means a clear error 11 and nothing half-made.
 * It imports only what it runs (no node:http, see agent-call.ts): its start is most of ADD's time.
 */
import { readFileSync, writeSync } from 'node:fs';
import { cniEnvironment } from './environment.ts';
import { agentCall } from './agent-call.ts';
import type { MembraneError } from '../common/errors.ts';
import {
  addResult, checkVersion, CniCode, CniError, CNI_COMMANDS, endpointName, errorResult, LABELS_ARG, NAMESPACE_LABEL, parseCniArgs, parseLabelList,
  parseNetConf, SUPPORTED_VERSIONS, type AddReply, type CniCommand, type NetConf,
} from './spec.ts';

const LATEST = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1]!;

/** the cniVersion of error results: the caller's once it is known to be supported */
let version: string = LATEST;

/**
 * stdin read with one blocking read to EOF: process.stdin would build a stream (and load its
 * modules) at each start. A runtime hands a blocking pipe or file; a non-blocking one (EAGAIN)
 * falls back to the stream.
 */
async function readStdin(): Promise<string> {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
}

/** The one answer on stdout, written straight to fd 1 (process.stdout is a stream built on first use). */
function answer(doc: unknown): void {
  writeSync(1, `${JSON.stringify(doc)}\n`);
}

function need(v: string | undefined, name: string): string {
  if (!v) throw new CniError(CniCode.InvalidEnvironment, `${name} is not set`, `the runtime sets ${name} for this command (CNI SPEC.md "Parameters")`);
  return v;
}

/** The agent's socket: the conflist's, else the host's default (gethostname(2) without loading node:os). */
function socketOf(conf: NetConf): string {
  return conf.agentSocket ?? `/run/membrane/host/nodes/${readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()}/agent.sock`;
}

/** One agent call; its failures as CNI errors (agent down: 11, or 50 for STATUS). */
async function agent<T>(conf: NetConf, cmd: CniCommand, path: string, body: unknown): Promise<T> {
  const socket = socketOf(conf);
  try {
    return await agentCall<T>(socket, path, body, conf.timeoutMs ?? 60_000);
  } catch (e) {
    const err = e as MembraneError;
    if (err.code === 'AGENT_UNREACHABLE') {
      throw new CniError(cmd === 'STATUS' ? CniCode.PluginNotAvailable : CniCode.TryAgainLater,
        `the membrane agent is not running: no API socket at ${socket}`, 'start it with `membrane agent` (or `systemctl start membrane-agent`), then retry');
    }
    if (err.code === 'AGENT_TIMEOUT') throw new CniError(CniCode.TryAgainLater, err.message, 'the agent is busy or stuck; see its log');
    if (err.code === 'CNI_UNKNOWN_CONTAINER') throw new CniError(CniCode.ContainerUnknown, err.message);
    if (err.code === 'CNI_ATTACHMENT_BROKEN') throw new CniError(CniCode.AttachmentBroken, err.message, err.hint);
    if (err.code === 'API_BAD_REQUEST') throw new CniError(CniCode.InvalidNetworkConfig, err.message, err.hint);
    throw new CniError(CniCode.AgentRefused, `${err.code ?? 'error'}: ${err.message}`, err.hint);
  }
}

async function run(): Promise<unknown> {
  const env = cniEnvironment();
  const cmd = env.command as CniCommand | undefined;
  if (!cmd || !(CNI_COMMANDS as readonly string[]).includes(cmd)) {
    throw new CniError(CniCode.InvalidEnvironment, `CNI_COMMAND "${env.command ?? ''}" is not one of ${CNI_COMMANDS.join(', ')}`);
  }
  const stdin = await readStdin();
  if (cmd === 'VERSION') {
    let asked: string = LATEST;
    try { const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion; if (typeof v === 'string' && v) asked = v; } catch { /* VERSION may come with no config */ }
    return { cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] };
  }
  const conf = parseNetConf(stdin);
  checkVersion(conf.cniVersion);
  // errors from here on answer in the caller's version
  version = conf.cniVersion;
  switch (cmd) {
    case 'ADD': {
      const containerId = need(env.containerId, 'CNI_CONTAINERID');
      const netns = need(env.netns, 'CNI_NETNS');
      const ifname = need(env.ifname, 'CNI_IFNAME');
      const args = parseCniArgs(env.args);
      const labels = parseLabelList(args.get(LABELS_ARG) ?? '');
      const namespace = labels[NAMESPACE_LABEL] ?? args.get('K8S_POD_NAMESPACE') ?? conf.namespace ?? 'default';
      delete labels[NAMESPACE_LABEL];
      const name = endpointName(args.get('K8S_POD_NAME'), containerId);
      const r = await agent<AddReply>(conf, cmd, '/v1/cni/add', { containerId, ifname, netns, name, namespace, labels });
      return addResult(conf.cniVersion, ifname, netns, r);
    }
    case 'DEL': {
      await agent(conf, cmd, '/v1/cni/del', { containerId: need(env.containerId, 'CNI_CONTAINERID'), ifname: need(env.ifname, 'CNI_IFNAME') });
      return undefined;
    }
    case 'CHECK': {
      await agent(conf, cmd, '/v1/cni/check', { containerId: need(env.containerId, 'CNI_CONTAINERID'), ifname: need(env.ifname, 'CNI_IFNAME'), netns: need(env.netns, 'CNI_NETNS') });
      return undefined;
    }
    case 'STATUS': {
      await agent(conf, cmd, '/v1/cni/status', {});
      return undefined;
    }
    case 'GC': {
      const valid = (conf['cni.dev/valid-attachments'] ?? []).map((a) => ({ containerId: a.containerID, ifname: a.ifname }));
      await agent(conf, cmd, '/v1/cni/gc', { valid });
      return undefined;
    }
  }
  return undefined;
}

try {
  const out = await run();
  if (out !== undefined) answer(out);
} catch (e) {
  const err = e instanceof CniError ? e : new CniError(CniCode.IoFailure, (e as Error).message ?? String(e));
  answer(errorResult(version, err));
  process.exitCode = 1;
}
