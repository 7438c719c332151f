/**
 * The resource shapes membrane accepts, as users write them (upstream field names, unchanged).
 * src/api/ loads and validates YAML/JSON into these; everything downstream consumes them.
 * `source` on every loaded object says which file/line it came from (policy trace prints it).
 */
import type { SourceRef } from '../common/errors.ts';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  uid?: string;
  generation?: number;
}

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface PortProtocol {
  port?: string; // number as string, or an IANA service name (named port); normalised by the loader
  endPort?: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP' | 'ANY' | 'ICMP' | 'ICMPV6' | 'VRRP' | 'IGMP';
}
export interface PortRuleHTTP {
  method?: string;
  path?: string;
  host?: string;
  headers?: string[];
  headerMatches?: {
    name: string;
    value?: string;
    secret?: { name: string; namespace?: string };
    mismatch?: 'LOG' | 'ADD' | 'DELETE' | 'REPLACE';
  }[];
}
export interface PortRuleDNS {
  matchName?: string;
  matchPattern?: string;
}
export interface L7Rules {
  http?: PortRuleHTTP[];
  dns?: PortRuleDNS[];
  kafka?: Record<string, string>[];
  l7proto?: string;
  l7?: Record<string, string>[];
}
export interface TLSContext {
  secret: { name: string; namespace?: string };
  trustedCA?: string;
  certificate?: string;
  privateKey?: string;
}
export interface PortRule {
  ports?: PortProtocol[];
  rules?: L7Rules;
  serverNames?: string[];
  terminatingTLS?: TLSContext;
  originatingTLS?: TLSContext;
  listener?: { envoyConfig: { kind?: string; name: string }; name: string; priority?: number };
}
export interface PortDenyRule {
  ports?: PortProtocol[];
}
export interface CIDRRule {
  cidr?: string;
  cidrGroupRef?: string;
  cidrGroupSelector?: LabelSelector;
  except?: string[];
}
export interface ICMPField {
  family?: 'IPv4' | 'IPv6';
  type: number | string;
}
export interface ICMPRule {
  fields: ICMPField[];
}
export interface FQDNSelector {
  matchName?: string;
  matchPattern?: string;
}
export interface ServiceSelector {
  k8sService?: { serviceName: string; namespace?: string };
  k8sServiceSelector?: { selector: LabelSelector; namespace?: string };
}
export type Entity =
  | 'all' | 'world' | 'world-ipv4' | 'world-ipv6' | 'cluster' | 'host' | 'init' | 'ingress'
  | 'unmanaged' | 'remote-node' | 'health' | 'none' | 'kube-apiserver';

export interface IngressCommonRule {
  fromEndpoints?: LabelSelector[];
  fromCIDR?: string[];
  fromCIDRSet?: CIDRRule[];
  fromEntities?: Entity[];
  fromNodes?: LabelSelector[];
  fromGroups?: unknown[];
  icmps?: ICMPRule[];
}
export interface IngressRule extends IngressCommonRule {
  toPorts?: PortRule[];
  authentication?: { mode: 'disabled' | 'required' | 'test-always-fail' };
}
export interface IngressDenyRule extends IngressCommonRule {
  toPorts?: PortDenyRule[];
}
export interface EgressCommonRule {
  toEndpoints?: LabelSelector[];
  toCIDR?: string[];
  toCIDRSet?: CIDRRule[];
  toEntities?: Entity[];
  toServices?: ServiceSelector[];
  toNodes?: LabelSelector[];
  toGroups?: unknown[];
  icmps?: ICMPRule[];
}
export interface EgressRule extends EgressCommonRule {
  toFQDNs?: FQDNSelector[];
  toPorts?: PortRule[];
  authentication?: { mode: 'disabled' | 'required' | 'test-always-fail' };
}
export interface EgressDenyRule extends EgressCommonRule {
  toPorts?: PortDenyRule[];
}

/** One `api.Rule` (an element of `spec`/`specs`). */
export interface Rule {
  endpointSelector?: LabelSelector;
  nodeSelector?: LabelSelector;
  ingress?: IngressRule[];
  ingressDeny?: IngressDenyRule[];
  egress?: EgressRule[];
  egressDeny?: EgressDenyRule[];
  labels?: { key: string; value?: string; source?: string }[];
  description?: string;
  enableDefaultDeny?: { ingress?: boolean; egress?: boolean };
  log?: { value: string };
}

/** Kubernetes networking.k8s.io/v1 NetworkPolicy spec. */
export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: { cidr: string; except?: string[] };
}
export interface NetworkPolicyPort {
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  port?: number | string;
  endPort?: number;
}
export interface NetworkPolicySpec {
  podSelector: LabelSelector;
  policyTypes?: ('Ingress' | 'Egress')[];
  ingress?: { from?: NetworkPolicyPeer[]; ports?: NetworkPolicyPort[] }[];
  egress?: { to?: NetworkPolicyPeer[]; ports?: NetworkPolicyPort[] }[];
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}
export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: ContainerPort[];
}
export interface PodSpec {
  containers: Container[];
  nodeName?: string;
  serviceAccountName?: string;
  hostNetwork?: boolean;
}

/** The loaded objects, discriminated by kind. `source` is where the object's document starts. */
interface Loaded<K extends string> {
  apiVersion: string;
  kind: K;
  metadata: ObjectMeta;
  source: SourceRef;
}
export interface CiliumNetworkPolicy extends Loaded<'CiliumNetworkPolicy'> {
  spec?: Rule;
  specs?: Rule[];
}
export interface CiliumClusterwideNetworkPolicy extends Loaded<'CiliumClusterwideNetworkPolicy'> {
  spec?: Rule;
  specs?: Rule[];
}
export interface NetworkPolicy extends Loaded<'NetworkPolicy'> {
  spec: NetworkPolicySpec;
}
export interface Namespace extends Loaded<'Namespace'> {}
export interface Pod extends Loaded<'Pod'> {
  spec: PodSpec;
  /** podIPs: every family's address, IPv4 first (Kubernetes' dual-stack field); podIP is its first */
  status?: { podIP?: string; podIPs?: { ip: string }[]; phase?: string; hostIP?: string };
}
export interface Deployment extends Loaded<'Deployment'> {
  spec: { replicas?: number; selector: LabelSelector; template: { metadata?: Partial<ObjectMeta>; spec: PodSpec } };
}
export interface Service extends Loaded<'Service'> {
  spec: {
    selector?: Record<string, string>;
    ports?: { name?: string; port: number; targetPort?: number | string; protocol?: 'TCP' | 'UDP' | 'SCTP' }[];
    clusterIP?: string;
    /** every family's cluster IP, the primary (clusterIP) first: Kubernetes' dual-stack fields */
    clusterIPs?: string[];
    ipFamilies?: ('IPv4' | 'IPv6')[];
    ipFamilyPolicy?: 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';
    type?: string;
  };
}
export interface Secret extends Loaded<'Secret'> {
  type?: string;
  data?: Record<string, string>; // base64
  stringData?: Record<string, string>;
}
/** membrane.dev/v1alpha1: an outside host the lab serves (issue 4). */
export interface ExternalHost extends Loaded<'ExternalHost'> {
  spec: { names: string[]; addresses: string[]; ports?: { port: number; protocol?: 'TCP' | 'UDP'; tls?: boolean }[]; ttl?: number };
}

/**
 * membrane.dev/v1alpha1: what the selected endpoints may do with AI APIs (issue 17): which models,
 * how large a request, streaming, tokens per identity per window, requests per window. It only
 * restricts; the network policy must still allow (and redirect to the HTTP proxy) the traffic.
 */
export interface AIPolicySpec {
  endpointSelector: LabelSelector;
  providers: { api: 'openai' | 'anthropic'; hosts: string[]; pathPrefix?: string }[];
  models?: { allow?: string[]; deny?: string[] };
  maxTokensPerRequest?: number;
  streaming?: 'Allow' | 'Deny';
  otherRequests?: 'Allow' | 'Deny';
  budgets?: { window: string; tokens: number }[];
  rateLimits?: { window: string; requests: number }[];
}
export interface AIPolicy extends Loaded<'AIPolicy'> {
  spec: AIPolicySpec;
}

export type PolicyResource = CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy;
export type Resource =
  | PolicyResource | Namespace | Pod | Deployment | Service | Secret | ExternalHost | AIPolicy;
export type ResourceKind = Resource['kind'];

/** Stable identity of a resource in a store: `kind/namespace/name` (namespace empty for cluster scope). */
export function resourceKey(r: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
}
