/**
 * The membrane HTTP proxy as the bench runs it: the production connection code, L7 policy
 * filter and flow path (access record → Hubble flow → http/flow metrics → ring), with a policy of
 * N HTTP rules (the request matches the last one), forwarding to a fixed origin.
 *
 *   bin/node bench/http/proxy-server.ts --port 18081 --origin 18080 --rules 100
 */
import { parseArgs } from 'node:util';
import { createHttpProxy } from '../../src/proxy/http/proxy.ts';
import { createFlowBuilder } from '../../src/proxy/http/flows.ts';
import { FlowRing } from '../../src/hubble/ring.ts';
import { createHubbleMetrics } from '../../src/hubble/metrics/index.ts';
import '../../src/hubble/metrics/http.ts';
import type { L7Policy } from '../../src/policy/types.ts';

const { values } = parseArgs({ options: { port: { type: 'string', default: '18081' }, origin: { type: 'string', default: '18080' }, rules: { type: 'string', default: '100' } } });
const n = Number(values.rules);
const policy: L7Policy = {
  parser: 'http',
  perSelector: [{
    selector: 'bench', identities: 'all', origins: [],
    http: Array.from({ length: n }, (_, i) => ({ method: 'GET', path: `/api/v1/resource${i}` })),
  }],
};
// endpoint label arrays are the agent's records (stable objects), as in production
const CLIENT_LABELS = ['k8s:app=client'];
const SERVER_LABELS = ['k8s:app=server'];
const build = createFlowBuilder({ nodeName: 'bench', resolver: { byIp: () => ({ id: 1, identity: 1000, namespace: 'default', podName: 'client', labels: CLIENT_LABELS }), identityLabels: () => SERVER_LABELS } });
const ring = new FlowRing(4095);
const metrics = createHubbleMetrics('http flow');
const proxy = createHttpProxy({
  policy: {
    endpointByIp: () => ({ id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: [] }),
    identityOf: () => 2000,
    lookup: () => ({ verdict: 'redirect', l7: policy }),
    revision: () => 0,
  },
  onRecord(rec) {
    const f = build(rec);
    metrics.process(f);
    ring.pushFlow(f, rec.timeMs);
  },
  listen: { egress: { host: '127.0.0.1', port: Number(values.port) } },
  upstreamOverride: { host: '127.0.0.1', port: Number(values.origin) },
});
await proxy.start();
console.log('ready');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
