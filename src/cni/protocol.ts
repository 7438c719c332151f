/**
 * One CNI command as the agent runs it for membrane-cni (src/cni/membrane-cni.c): the plugin
 * forwards the runtime's CNI_* variables and stdin as they came (`POST /v1/cni/exec`, routes.ts)
 * and prints the answer. Here the network configuration, CNI_ARGS and labels are read (spec.ts)
 * and the command becomes one call of the CNI routes, in the agent's own process; every failure
 * becomes the spec's error result. The plugin has already answered VERSION and the errors it can
 * give without the agent (bad CNI_COMMAND, configuration, cniVersion; agent down): the checks
 * here are the same (spec.ts), so a direct caller of the route gets the same answers.
 */
import { MembraneError } from '../common/errors.ts';
import type { CniExecRequest } from '../api/requests.ts';
import {
  addResult, checkVersion, CniCode, CniError, CNI_COMMANDS, endpointName, errorResult, LABELS_ARG, NAMESPACE_LABEL, parseCniArgs, parseLabelList,
  parseNetConf, SUPPORTED_VERSIONS, type AddReply, type CniCommand,
} from './spec.ts';

const LATEST = SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1]!;

/** What the plugin prints (result, when there is one) and its exit status. */
export interface CniAnswer { exit: 0 | 1; result?: unknown }

/** One CNI route of the agent (routes.ts), called in-process: resolves its answer or throws its coded error. */
export type CniRouteCall = (path: string, body: unknown) => Promise<unknown>;

function need(v: string | undefined, name: string): string {
  if (!v) throw new CniError(CniCode.InvalidEnvironment, `${name} is not set`, `the runtime sets ${name} for this command (CNI SPEC.md "Parameters")`);
  return v;
}

/** A route's failure as the CNI error the runtime gets. */
function cniErrorOf(e: unknown): CniError {
  const err = e as MembraneError;
  const code = err instanceof MembraneError ? err.code : 'AGENT_INTERNAL';
  if (code === 'CNI_UNKNOWN_CONTAINER') return new CniError(CniCode.ContainerUnknown, err.message);
  if (code === 'CNI_ATTACHMENT_BROKEN') return new CniError(CniCode.AttachmentBroken, err.message, err.hint);
  if (code === 'API_BAD_REQUEST') return new CniError(CniCode.InvalidNetworkConfig, err.message, err.hint);
  if (code === 'CNI_NETNS_INVALID') return new CniError(CniCode.InvalidEnvironment, err.message, err.hint);
  return new CniError(CniCode.AgentRefused, `${code}: ${err.message ?? String(e)}`, err instanceof MembraneError ? err.hint : undefined);
}

export async function cniExec(req: CniExecRequest, call: CniRouteCall): Promise<CniAnswer> {
  // the cniVersion of error results: the caller's once it is known to be supported
  let version: string = LATEST;
  const agent = async <T>(path: string, body: unknown): Promise<T> => {
    try { return (await call(path, body)) as T; } catch (e) { throw cniErrorOf(e); }
  };
  try {
    const cmd = req.command as CniCommand | undefined;
    if (!cmd || !(CNI_COMMANDS as readonly string[]).includes(cmd)) {
      throw new CniError(CniCode.InvalidEnvironment, `CNI_COMMAND "${req.command ?? ''}" is not one of ${CNI_COMMANDS.join(', ')}`);
    }
    if (cmd === 'VERSION') {
      let asked: string = LATEST;
      try { const v = (JSON.parse(req.stdin) as { cniVersion?: unknown } | null)?.cniVersion; if (typeof v === 'string' && v) asked = v; } catch { /* VERSION may come with no config */ }
      return { exit: 0, result: { cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] } };
    }
    const conf = parseNetConf(req.stdin);
    checkVersion(conf.cniVersion);
    version = conf.cniVersion;
    switch (cmd) {
      case 'ADD': {
        const containerId = need(req.containerId, 'CNI_CONTAINERID');
        const netns = need(req.netns, 'CNI_NETNS');
        const ifname = need(req.ifname, 'CNI_IFNAME');
        const args = parseCniArgs(req.args);
        const labels = parseLabelList(args.get(LABELS_ARG) ?? '');
        const namespace = labels[NAMESPACE_LABEL] ?? args.get('K8S_POD_NAMESPACE') ?? conf.namespace ?? 'default';
        delete labels[NAMESPACE_LABEL];
        const name = endpointName(args.get('K8S_POD_NAME'), containerId);
        const r = await agent<AddReply>('/v1/cni/add', { containerId, ifname, netns, name, namespace, labels });
        return { exit: 0, result: addResult(conf.cniVersion, ifname, netns, r) };
      }
      case 'DEL':
        await agent('/v1/cni/del', { containerId: need(req.containerId, 'CNI_CONTAINERID'), ifname: need(req.ifname, 'CNI_IFNAME') });
        return { exit: 0 };
      case 'CHECK':
        await agent('/v1/cni/check', { containerId: need(req.containerId, 'CNI_CONTAINERID'), ifname: need(req.ifname, 'CNI_IFNAME'), netns: need(req.netns, 'CNI_NETNS') });
        return { exit: 0 };
      case 'STATUS':
        await agent('/v1/cni/status', {});
        return { exit: 0 };
      case 'GC': {
        const valid = (conf['cni.dev/valid-attachments'] ?? []).map((a) => ({ containerId: a.containerID, ifname: a.ifname }));
        await agent('/v1/cni/gc', { valid });
        return { exit: 0 };
      }
    }
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(CniCode.IoFailure, (e as Error).message ?? String(e));
    return { exit: 1, result: errorResult(version, err) };
  }
}
