/**
 * Structural schemas (zod) of every resource kind membrane accepts: the shape the API server's
 * OpenAPI/CRD validation would enforce (types, required fields, no unknown fields, as kubectl's
 * default strict field validation). Semantic rules (selectors, CIDRs, ports, L7 regexes, rule
 * combinations) are checked by the policy translator, which reports better messages for them;
 * the schemas therefore accept what it judges (e.g. a port as string or number).
 */
import { z } from 'zod';

const str = z.string();
const int = z.number().int();
const stringMap = z.record(z.string(), z.string());
const portValue = z.union([z.string(), int]);

export const labelSelector = z.strictObject({
  matchLabels: stringMap.optional(),
  matchExpressions: z.array(z.strictObject({
    key: str,
    operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
    values: z.array(str).optional(),
  })).optional(),
});

// Envelope ---------------------------------------------------------------------------------

export const objectMeta = z.object({
  name: str,
  namespace: str.optional(),
  labels: stringMap.optional(),
  annotations: stringMap.optional(),
  uid: str.optional(),
  generation: int.optional(),
  // Server-filled metadata that users copy from `get -o yaml`: accepted, ignored.
  resourceVersion: z.unknown().optional(),
  creationTimestamp: z.unknown().optional(),
  managedFields: z.unknown().optional(),
  generateName: str.optional(),
  ownerReferences: z.unknown().optional(),
  finalizers: z.array(str).optional(),
  selfLink: z.unknown().optional(),
  deletionTimestamp: z.unknown().optional(),
}).strict();

// Cilium policy ----------------------------------------------------------------------------

const portProtocol = z.strictObject({
  port: portValue.optional(),
  endPort: int.optional(),
  protocol: str.optional(),
});
const secretRef = z.strictObject({ name: str, namespace: str.optional() });
const tlsContext = z.strictObject({
  secret: secretRef,
  trustedCA: str.optional(),
  certificate: str.optional(),
  privateKey: str.optional(),
});
const httpRule = z.strictObject({
  method: str.optional(),
  path: str.optional(),
  host: str.optional(),
  headers: z.array(str).optional(),
  headerMatches: z.array(z.strictObject({
    name: str,
    value: str.optional(),
    secret: secretRef.optional(),
    mismatch: z.enum(['LOG', 'ADD', 'DELETE', 'REPLACE']).optional(),
  })).optional(),
});
const dnsRule = z.strictObject({ matchName: str.optional(), matchPattern: str.optional() });
const l7Rules = z.strictObject({
  http: z.array(httpRule).optional(),
  dns: z.array(dnsRule).optional(),
  kafka: z.array(z.record(z.string(), z.unknown())).optional(),
  l7proto: str.optional(),
  l7: z.array(stringMap).optional(),
});
const portRule = z.strictObject({
  ports: z.array(portProtocol).optional(),
  rules: l7Rules.optional(),
  serverNames: z.array(str).optional(),
  terminatingTLS: tlsContext.optional(),
  originatingTLS: tlsContext.optional(),
  listener: z.strictObject({
    envoyConfig: z.strictObject({ kind: str.optional(), name: str }),
    name: str,
    priority: int.optional(),
  }).optional(),
});
const portDenyRule = z.strictObject({ ports: z.array(portProtocol).optional() });
const cidrRule = z.strictObject({
  cidr: str.optional(),
  cidrGroupRef: str.optional(),
  cidrGroupSelector: labelSelector.optional(),
  except: z.array(str).optional(),
});
const icmpRule = z.strictObject({
  fields: z.array(z.strictObject({ family: str.optional(), type: portValue })),
});
const fqdnSelector = z.strictObject({ matchName: str.optional(), matchPattern: str.optional() });
const serviceSelector = z.strictObject({
  k8sService: z.strictObject({ serviceName: str, namespace: str.optional() }).optional(),
  k8sServiceSelector: z.strictObject({ selector: labelSelector, namespace: str.optional() }).optional(),
});
const authentication = z.strictObject({ mode: str });

const ingressCommon = {
  fromEndpoints: z.array(labelSelector).optional(),
  fromCIDR: z.array(str).optional(),
  fromCIDRSet: z.array(cidrRule).optional(),
  fromEntities: z.array(str).optional(),
  fromNodes: z.array(labelSelector).optional(),
  fromGroups: z.array(z.unknown()).optional(),
  fromRequires: z.array(labelSelector).optional(),
  icmps: z.array(icmpRule).optional(),
};
const egressCommon = {
  toEndpoints: z.array(labelSelector).optional(),
  toCIDR: z.array(str).optional(),
  toCIDRSet: z.array(cidrRule).optional(),
  toEntities: z.array(str).optional(),
  toServices: z.array(serviceSelector).optional(),
  toNodes: z.array(labelSelector).optional(),
  toGroups: z.array(z.unknown()).optional(),
  toRequires: z.array(labelSelector).optional(),
  icmps: z.array(icmpRule).optional(),
};

export const rule = z.strictObject({
  endpointSelector: labelSelector.optional(),
  nodeSelector: labelSelector.optional(),
  ingress: z.array(z.strictObject({ ...ingressCommon, toPorts: z.array(portRule).optional(), authentication: authentication.optional() })).optional(),
  ingressDeny: z.array(z.strictObject({ ...ingressCommon, toPorts: z.array(portDenyRule).optional() })).optional(),
  egress: z.array(z.strictObject({
    ...egressCommon, toFQDNs: z.array(fqdnSelector).optional(), toPorts: z.array(portRule).optional(), authentication: authentication.optional(),
  })).optional(),
  egressDeny: z.array(z.strictObject({ ...egressCommon, toPorts: z.array(portDenyRule).optional() })).optional(),
  labels: z.array(z.strictObject({ key: str, value: str.optional(), source: str.optional() })).optional(),
  description: str.optional(),
  enableDefaultDeny: z.strictObject({ ingress: z.boolean().optional(), egress: z.boolean().optional() }).optional(),
  log: z.strictObject({ value: str.max(32) }).optional(),
});

const ciliumPolicy = {
  spec: rule.optional().nullable(),
  specs: z.array(rule).optional().nullable(),
  status: z.unknown().optional(),
};

// Kubernetes NetworkPolicy ------------------------------------------------------------------

const npPeer = z.strictObject({
  podSelector: labelSelector.optional(),
  namespaceSelector: labelSelector.optional(),
  ipBlock: z.strictObject({ cidr: str, except: z.array(str).optional() }).optional(),
});
const npPort = z.strictObject({
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
  port: portValue.optional(),
  endPort: int.optional(),
});
const networkPolicySpec = z.strictObject({
  podSelector: labelSelector,
  policyTypes: z.array(z.enum(['Ingress', 'Egress'])).optional(),
  ingress: z.array(z.strictObject({ from: z.array(npPeer).optional(), ports: z.array(npPort).optional() })).optional(),
  egress: z.array(z.strictObject({ to: z.array(npPeer).optional(), ports: z.array(npPort).optional() })).optional(),
});

// Workloads ---------------------------------------------------------------------------------

const containerPort = z.object({
  name: str.optional(),
  containerPort: int.min(1).max(65535),
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
  hostPort: int.optional(),
  hostIP: str.optional(),
}).strict();
// Containers carry many fields membrane has no use for (resources, probes, securityContext...):
// accepted so that real manifests load, ignored by the lab.
const container = z.object({
  name: str,
  image: str.optional(),
  command: z.array(str).optional(),
  args: z.array(str).optional(),
  env: z.array(z.object({ name: str, value: str.optional() }).passthrough()).optional(),
  ports: z.array(containerPort).optional(),
}).passthrough();
const podSpec = z.object({
  containers: z.array(container).min(1),
  initContainers: z.array(container).optional(),
  nodeName: str.optional(),
  serviceAccountName: str.optional(),
  hostNetwork: z.boolean().optional(),
}).passthrough();

const deploymentSpec = z.object({
  replicas: int.min(0).optional(),
  selector: labelSelector,
  template: z.object({
    metadata: objectMeta.partial().optional(),
    spec: podSpec,
  }).strict(),
}).passthrough();

const serviceSpec = z.object({
  selector: stringMap.optional(),
  ports: z.array(z.object({
    name: str.optional(),
    port: int.min(1).max(65535),
    targetPort: portValue.optional(),
    protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
    nodePort: int.optional(),
    appProtocol: str.optional(),
  }).strict()).optional(),
  clusterIP: str.optional(),
  clusterIPs: z.array(str).optional(),
  ipFamilies: z.array(z.enum(['IPv4', 'IPv6'])).optional(),
  ipFamilyPolicy: z.enum(['SingleStack', 'PreferDualStack', 'RequireDualStack']).optional(),
  type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']).optional(),
}).passthrough();

const externalHostSpec = z.strictObject({
  names: z.array(str).min(1),
  addresses: z.array(str).min(1),
  ports: z.array(z.strictObject({
    port: int.min(1).max(65535),
    protocol: z.enum(['TCP', 'UDP']).optional(),
    tls: z.boolean().optional(),
  })).optional(),
  ttl: int.min(0).optional(),
});

// AIPolicy: which models selected endpoints may call, and how many tokens they spend. Values
// (host names, model patterns, windows) are judged by src/policy/ai.ts with better messages.
const aiPolicySpec = z.strictObject({
  endpointSelector: labelSelector,
  providers: z.array(z.strictObject({
    api: z.enum(['openai', 'anthropic']),
    hosts: z.array(str).min(1),
    pathPrefix: str.optional(),
  })).min(1),
  models: z.strictObject({ allow: z.array(str).optional(), deny: z.array(str).optional() }).optional(),
  maxTokensPerRequest: int.min(1).optional(),
  streaming: z.enum(['Allow', 'Deny']).optional(),
  otherRequests: z.enum(['Allow', 'Deny']).optional(),
  budgets: z.array(z.strictObject({ window: str, tokens: int.min(1) })).optional(),
  rateLimits: z.array(z.strictObject({ window: str, requests: int.min(1) })).optional(),
});

/** One entry per accepted kind: its apiVersion, scope and body schema (metadata excluded). */
export const KINDS = {
  CiliumNetworkPolicy: { apiVersion: 'cilium.io/v2', namespaced: true, body: ciliumPolicy },
  CiliumClusterwideNetworkPolicy: { apiVersion: 'cilium.io/v2', namespaced: false, body: ciliumPolicy },
  NetworkPolicy: { apiVersion: 'networking.k8s.io/v1', namespaced: true, body: { spec: networkPolicySpec, status: z.unknown().optional() } },
  Namespace: { apiVersion: 'v1', namespaced: false, body: { spec: z.unknown().optional(), status: z.unknown().optional() } },
  Pod: { apiVersion: 'v1', namespaced: true, body: { spec: podSpec, status: z.unknown().optional() } },
  Deployment: { apiVersion: 'apps/v1', namespaced: true, body: { spec: deploymentSpec, status: z.unknown().optional() } },
  Service: { apiVersion: 'v1', namespaced: true, body: { spec: serviceSpec, status: z.unknown().optional() } },
  Secret: {
    apiVersion: 'v1', namespaced: true,
    body: { type: str.optional(), data: stringMap.optional(), stringData: stringMap.optional(), immutable: z.boolean().optional() },
  },
  ExternalHost: { apiVersion: 'membrane.dev/v1alpha1', namespaced: false, body: { spec: externalHostSpec } },
  AIPolicy: { apiVersion: 'membrane.dev/v1alpha1', namespaced: true, body: { spec: aiPolicySpec, status: z.unknown().optional() } },
} as const;

export type KnownKind = keyof typeof KINDS;

const kindSchemas = new Map<string, z.ZodType>(
  Object.entries(KINDS).map(([k, v]) => [k, z.strictObject({ apiVersion: str, kind: str, metadata: objectMeta, ...v.body })]),
);

export function schemaFor(kind: string): z.ZodType | undefined {
  return kindSchemas.get(kind);
}
