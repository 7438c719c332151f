/**
 * The Container Network Interface as membrane-cni speaks it (CNI spec 1.0 and 1.1, SPEC.md of
 * containernetworking/cni): the commands, the error codes, the network configuration the runtime
 * writes on stdin, CNI_ARGS, and the result of ADD. Pure: protocol.ts runs a command with them in the agent; the
 * native plugin (membrane-cni.c) mirrors parseNetConf so that it gives the same errors without the agent.
 */

export const SUPPORTED_VERSIONS = ['1.0.0', '1.1.0'] as const;
export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** The spec's well-known error codes (SPEC.md "Error"); 100 and up are this plugin's own. */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  ContainerUnknown: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  /** STATUS: the plugin cannot take ADDs (the agent is not running) */
  PluginNotAvailable: 50,
  /** CHECK: the attachment is not as ADD left it (a link, an address or the endpoint is missing) */
  AttachmentBroken: 100,
  /** ADD: the agent refused or failed the endpoint (its message says why) */
  AgentRefused: 101,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string | undefined;
  constructor(code: number, msg: string, details?: string) {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

export interface CniErrorResult { cniVersion: string; code: number; msg: string; details?: string }

export function errorResult(version: string, e: CniError): CniErrorResult {
  return { cniVersion: version, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) };
}

/** The label that names the endpoint's namespace (Kubernetes' own pod label, as Cilium reads it). */
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
/** CNI_ARGS key carrying the container's labels: `MEMBRANE_LABELS=app=web,tier=front`. */
export const LABELS_ARG = 'MEMBRANE_LABELS';

/**
 * Our plugin's configuration inside the conflist; other fields are the runtime's (runtimeConfig,
 * args, prevResult) and pass through. Checked by hand, not with zod: the plugin runs once per
 * container start, and its start-up is most of ADD's latency.
 */
export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  /** the host-mode agent's API socket */
  agentSocket?: string;
  /** namespace of containers whose labels name none */
  namespace?: string;
  /** ms one agent call may take (ADD waits for the policy to be in the datapath) */
  timeoutMs?: number;
  'cni.dev/valid-attachments'?: { containerID: string; ifname: string }[];
  [k: string]: unknown;
}

type Check = [field: string, ok: (v: unknown) => boolean, want: string, required: boolean];
const isStr = (v: unknown): v is string => typeof v === 'string';
const CHECKS: Check[] = [
  ['cniVersion', (v) => isStr(v) && v.length > 0, 'a version string', true],
  ['name', (v) => isStr(v) && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v), 'a network name (letters, digits, _ . -)', true],
  ['type', (v) => isStr(v) && v.length > 0, 'the plugin type', true],
  ['agentSocket', (v) => isStr(v) && /^\/./.test(v), 'an absolute path', false],
  ['namespace', (v) => isStr(v) && /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v), 'a namespace name (DNS label)', false],
  ['timeoutMs', (v) => Number.isInteger(v) && (v as number) >= 100 && (v as number) <= 600_000, 'an integer 100..600000', false],
  ['cni.dev/valid-attachments', (v) => Array.isArray(v) && v.every((a) => a && typeof a === 'object' && isStr((a as { containerID?: unknown }).containerID) && isStr((a as { ifname?: unknown }).ifname)), 'a list of {containerID, ifname}', false],
];

export const DEFAULT_AGENT_SOCKET = '/run/membrane/host/nodes/host/agent.sock';

/** Parses stdin as the spec's network configuration; errors carry the spec's codes (6 decode, 7 config, 1 version). */
export function parseNetConf(stdin: string): NetConf {
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(CniCode.DecodeFailure, 'the network configuration on stdin is not JSON', (e as Error).message);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new CniError(CniCode.InvalidNetworkConfig, 'invalid network configuration: not a JSON object');
  const conf = doc as Record<string, unknown>;
  const problems: string[] = [];
  for (const [field, ok, want, required] of CHECKS) {
    if (conf[field] === undefined) { if (required) problems.push(`${field}: missing (${want})`); } else if (!ok(conf[field])) problems.push(`${field}: not ${want}`);
  }
  if (problems.length) throw new CniError(CniCode.InvalidNetworkConfig, `invalid network configuration: ${problems[0]}`, problems.join('; '));
  return conf as NetConf;
}

export function checkVersion(v: string): void {
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new CniError(CniCode.IncompatibleVersion, `cniVersion ${v} is not supported`, `membrane-cni supports ${SUPPORTED_VERSIONS.join(', ')}`);
  }
}

/** CNI_ARGS: `K=V;K=V` (the spec's alphanumeric key/value pairs); a malformed pair is error 4. */
export function parseCniArgs(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!raw) return out;
  for (const part of raw.split(';')) {
    if (!part) continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new CniError(CniCode.InvalidEnvironment, `CNI_ARGS: "${part}" is not KEY=VALUE`);
    out.set(part.slice(0, i), part.slice(i + 1));
  }
  return out;
}

/** `app=web,tier=front` → labels; a pair without `=` is error 4. */
export function parseLabelList(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of raw.split(',')) {
    if (!part) continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new CniError(CniCode.InvalidEnvironment, `CNI_ARGS ${LABELS_ARG}: "${part}" is not key=value`);
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** A pod name from the runtime's name (K8S_POD_NAME) or, without one, the container ID. */
export function endpointName(podName: string | undefined, containerId: string): string {
  const base = (podName ?? '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63).replace(/-+$/, '');
  return base || `c-${containerId.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 12)}`;
}

export interface AddReply { ip: string; gateway: string; mac: string; hostIfname: string; endpointId: number; identity: number; dns?: string }

/** The ADD result (SPEC.md "Success"): the container's interface, its /32 and the default route via the gateway. */
export function addResult(version: string, ifname: string, netns: string, r: AddReply): unknown {
  return {
    cniVersion: version,
    interfaces: [{ name: r.hostIfname }, { name: ifname, mac: r.mac, sandbox: netns }],
    ips: [{ address: `${r.ip}/32`, gateway: r.gateway, interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: r.gateway }],
    dns: r.dns ? { nameservers: [r.dns] } : {},
  };
}

