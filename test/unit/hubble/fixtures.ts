/** Synthetic datapath events and a resolver for the hubble tests. */
import type { DatapathEvent } from '../../../src/datapath/types.ts';
import type { EndpointResolver } from '../../../src/hubble/flow.ts';
import type { ResolvedEndpoint } from '../../../src/common/endpoint.ts';

export const T0 = 1_701_424_800_123_456_789n; // 2023-12-01T10:00:00.123456789Z

export const ENDPOINTS: Record<string, ResolvedEndpoint> = {
  '10.244.1.5': { id: 101, identity: 12345, namespace: 'shop', pod: 'client', labels: ['k8s:io.kubernetes.pod.namespace=shop', 'k8s:app=client'], workloads: [{ name: 'client', kind: 'Deployment' }] },
  '10.244.1.6': { id: 102, identity: 23456, namespace: 'shop', pod: 'api-xxx', labels: ['k8s:app=api', 'k8s:io.kubernetes.pod.namespace=shop'], workloads: [{ name: 'api', kind: 'Deployment' }] },
  '10.244.1.7': { id: 103, identity: 34567, namespace: 'default', pod: 'xwing', labels: ['k8s:class=xwing', 'k8s:org=alliance'] },
};

export const resolver: EndpointResolver = {
  byIp: (ip) => ENDPOINTS[ip],
  identityLabels: (id) => (id === 16777217 ? ['cidr:198.51.100.0/24', 'cidr:198.51.0.0/16', 'reserved:world'] : undefined),
  namesForIp: (ip) => (ip === '198.51.100.10' ? ['api.openai.com'] : undefined),
};

export function ev(over: Partial<DatapathEvent> = {}): DatapathEvent {
  return {
    type: 4, subType: 0, timeNs: T0, endpointId: 102, ifindex: 7, srcIdentity: 12345, dstIdentity: 23456,
    ipVersion: 4, srcIp: '10.244.1.5', dstIp: '10.244.1.6', proto: 6, srcPort: 53812, dstPort: 8080,
    tcpFlags: 2, icmpType: 0, icmpCode: 0, ctReason: 1, direction: 'ingress', verdict: 0, matchType: 0,
    authType: 0, length: 60, ...over,
  };
}
