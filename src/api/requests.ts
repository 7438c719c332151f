/**
 * The agent API's request bodies (src/agent/routes.ts), checked with zod like every resource:
 * the body's own shape, then each resource with the checks the file loader runs (validate.ts).
 * A request with any problem changes nothing; the agent answers 400 with every issue, each at
 * its path inside the body (`resources[2].spec.ingress`).
 */
import { z } from 'zod';
import type { Issue } from '../common/errors.ts';
import { KINDS, type KnownKind } from './schema.ts';
import { checkResourceShape, isPlainObject, normalizePorts, reportZodIssue, type YamlPath } from './validate.ts';
import type { Resource } from './types.ts';

/** Most resources one request may carry. */
export const MAX_REQUEST_RESOURCES = 10_000;

const sourceRef = z.strictObject({ file: z.string(), line: z.number().int().min(0), col: z.number().int().min(0) });

export const applyRequestSchema = z.strictObject({
  resources: z.array(z.unknown()).max(MAX_REQUEST_RESOURCES),
  dryRun: z.boolean().optional(),
});
export const deleteRequestSchema = z.strictObject({ resources: z.array(z.unknown()).max(MAX_REQUEST_RESOURCES) });
/** Bodies of requests that take none (settle): nothing, or an empty object. */
export const emptyRequestSchema = z.union([z.undefined(), z.strictObject({})]);

export const resourceQuerySchema = z.strictObject({
  kind: z.enum(Object.keys(KINDS) as [KnownKind, ...KnownKind[]]).optional(),
  namespace: z.string().min(1).optional(),
});
export const namespaceQuerySchema = z.strictObject({ namespace: z.string().min(1).optional() });
export const endpointQuerySchema = z.strictObject({ endpoint: z.string().regex(/^\d+$/).optional() });

const TRACE_PROTOCOLS = ['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPV6', 'ANY'] as const;

/** `POST /v1/policy/trace`: one flow to trace over what the agent holds (the UI's "why"). */
export const traceRequestSchema = z.strictObject({
  /** NAMESPACE/POD, a Deployment name, an IP, or an entity (world, host, ...) */
  from: z.string().min(1).max(253),
  to: z.string().min(1).max(253),
  port: z.number().int().min(0).max(65535),
  protocol: z.string().transform((s) => s.toUpperCase()).pipe(z.enum(TRACE_PROTOCOLS)),
  http: z.strictObject({
    method: z.string().regex(/^[A-Za-z]{1,16}$/),
    path: z.string().max(4096),
    host: z.string().max(253),
  }).optional(),
  dnsName: z.string().max(253).optional(),
  /** Resources to trace with as if applied (a suggested policy), never stored. */
  with: z.array(z.unknown()).max(16).optional(),
});
export type TraceRequest = z.input<typeof traceRequestSchema>;

/** `GET /v1/endpoint/policy?namespace=NS&pod=POD` (POD may be a Deployment's name). */
/** `POST /v1/endpoint/config`: Cilium's endpoint options membrane implements; null = back to the agent's setting. */
export const endpointConfigRequestSchema = z.strictObject({
  id: z.number().int().min(1).max(65535),
  options: z.strictObject({ PolicyAuditMode: z.boolean().nullable().optional() }),
});

export const endpointPolicyQuerySchema = z.strictObject({ namespace: z.string().min(1), pod: z.string().min(1) });

export type Checked<T> = { ok: true; value: T } | { ok: false; issues: Issue[] };

const WHERE = { file: '<request>', line: 0, col: 0 };

function issuesOf(schema: z.ZodType, input: unknown, base: YamlPath): Issue[] {
  // reportInput: a wrong type and a missing field read differently (validate.ts reportZodIssue)
  const r = schema.safeParse(input, { reportInput: true });
  if (r.success) return [];
  const out: Issue[] = [];
  for (const zi of r.error.issues) reportZodIssue(zi, (code, path, message, hint) => out.push({ code, message, path: [...base, ...path], ...WHERE, ...(hint ? { hint } : {}) }));
  return out;
}

/** The resources of an apply or delete body, each checked as the loader checks a document. */
function checkResources(list: unknown[]): Checked<Resource[]> {
  const issues: Issue[] = [];
  const out: Resource[] = [];
  list.forEach((raw, i) => {
    const base: YamlPath = ['resources', i];
    if (!isPlainObject(raw)) {
      issues.push({ code: 'API_DOCUMENT_INVALID', message: `resources[${i}] is not a mapping`, path: base, ...WHERE, hint: 'each resource is one object with apiVersion, kind and metadata' });
      return;
    }
    // Where the CLI loaded it from rides along (policy listings name the file); it is not part of the resource.
    const { source, ...body } = raw;
    if (source !== undefined) issues.push(...issuesOf(sourceRef, source, [...base, 'source']));
    const before = issues.length;
    const kind = checkResourceShape(body, `resources[${i}]`, (code, path, message, hint) => {
      issues.push({ code, message, path: [...base, ...path], ...WHERE, ...(hint ? { hint } : {}) });
    });
    if (kind === undefined || issues.length > before) return;
    const r = body as unknown as Resource;
    if (KINDS[kind].namespaced) r.metadata.namespace ||= 'default';
    if (kind === 'CiliumNetworkPolicy' || kind === 'CiliumClusterwideNetworkPolicy') normalizePorts(r);
    Object.defineProperty(r, 'source', { value: (source as Resource['source'] | undefined) ?? { file: '<api>', line: 0, col: 0 }, enumerable: true, writable: true, configurable: true });
    out.push(r);
  });
  return issues.length ? { ok: false, issues } : { ok: true, value: out };
}

export function checkApplyRequest(body: unknown): Checked<{ resources: Resource[]; dryRun: boolean }> {
  const shape = issuesOf(applyRequestSchema, body, []);
  if (shape.length) return { ok: false, issues: shape };
  const b = body as z.infer<typeof applyRequestSchema>;
  const rs = checkResources(b.resources);
  return rs.ok ? { ok: true, value: { resources: rs.value, dryRun: b.dryRun ?? false } } : rs;
}

export function checkDeleteRequest(body: unknown): Checked<{ resources: Resource[] }> {
  const shape = issuesOf(deleteRequestSchema, body, []);
  if (shape.length) return { ok: false, issues: shape };
  const rs = checkResources((body as z.infer<typeof deleteRequestSchema>).resources);
  return rs.ok ? { ok: true, value: { resources: rs.value } } : rs;
}

/** A body or query against a schema: the parsed value, or issues at their paths. */
export function checkWith<T>(schema: z.ZodType<T>, input: unknown): Checked<T> {
  const r = schema.safeParse(input);
  if (r.success) return { ok: true, value: r.data };
  return { ok: false, issues: issuesOf(schema, input, []) };
}

/**
 * The CNI plugin's calls to the host-mode agent (src/cni/routes.ts). A container is known by its
 * runtime's container ID and interface name (the CNI attachment key); the namespace path is the
 * runtime's netns file. Labels are Kubernetes-style `key: value` pairs.
 */
const cniContainerId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/);
const cniIfname = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/).refine((s) => s !== '.' && s !== '..');
const cniLabelKey = z.string().regex(/^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/);
const cniLabelValue = z.string().regex(/^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/);
const dns1123 = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
export const cniAttachmentSchema = z.strictObject({ containerId: cniContainerId, ifname: cniIfname });
export const cniAddRequestSchema = z.strictObject({
  containerId: cniContainerId,
  ifname: cniIfname,
  /** absolute path of the container's network namespace file */
  netns: z.string().regex(/^\/[^\0]{0,4095}$/),
  /** the endpoint's pod name (K8S_POD_NAME, else from the container ID) */
  name: dns1123,
  namespace: dns1123,
  labels: z.record(cniLabelKey, cniLabelValue).refine((l) => Object.keys(l).length <= 64, 'at most 64 labels'),
});
export type CniAddRequest = z.infer<typeof cniAddRequestSchema>;
export const cniCheckRequestSchema = z.strictObject({ containerId: cniContainerId, ifname: cniIfname, netns: z.string().regex(/^\/[^\0]{0,4095}$/) });
export const cniDelRequestSchema = cniAttachmentSchema;
/**
 * membrane-cni's one call (src/cni/membrane-cni.c → src/cni/protocol.ts): the runtime's CNI_*
 * variables (unset ones left out) and its stdin as they came; the agent reads them as the spec says.
 * Bounds are the plugin's own (64 KiB a variable, 1 MiB of stdin).
 */
const cniVar = z.string().min(1).max(64 << 10);
export const cniExecRequestSchema = z.strictObject({
  command: z.string().min(1).max(64),
  containerId: cniVar.optional(), netns: cniVar.optional(), ifname: cniVar.optional(), args: cniVar.optional(), path: cniVar.optional(),
  stdin: z.string().max(1 << 20),
});
export type CniExecRequest = z.infer<typeof cniExecRequestSchema>;

/** GC: every attachment the runtime still has; the agent removes its other CNI endpoints. */
export const cniGcRequestSchema = z.strictObject({ valid: z.array(cniAttachmentSchema).max(MAX_REQUEST_RESOURCES) });
