/**
 * The agent's side of the external L7 proxy as the L7 benches run it by default (bench/proxy-harness.ts):
 * a feed server (src/proxy/feed/server.ts) that takes the proxy's access records over the unix
 * socket and turns each into a Hubble flow feeding the http/flow metrics and a flow ring, as the
 * agent does. Started by bench/proxy-harness.ts as a child (same CPU pinning as the proxy).
 *
 *   bin/node bench/feed-agent.ts SOCKET [REMOTE-LABELS-JSON]
 */
import { createFeedServer } from '../src/proxy/feed/server.ts';
import { decodeRecords } from '../src/proxy/feed/wire.ts';
import { createL7Parser } from '../src/hubble/l7/parser.ts';
import { FlowRing } from '../src/hubble/ring.ts';
import { createHubbleMetrics } from '../src/hubble/metrics/index.ts';
import '../src/hubble/metrics/http.ts';

const socketPath = process.argv[2]!;
/** the remote peer's labels (the origin's), as the proxy's harness resolves them */
const remoteLabels = JSON.parse(process.argv[3] ?? '["k8s:app=server"]') as string[];
// one resolved view per endpoint, as the agent's resolver hands out (see proxy-harness.ts)
const client = { id: 1, identity: 1000, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };
const build = createL7Parser({ nodeName: 'bench', resolver: { byIp: () => client, identityLabels: () => remoteLabels } });
const ring = new FlowRing(4095);
const metrics = createHubbleMetrics('http flow');
let n = 0;
const server = createFeedServer({
  socketPath, fingerprint: () => '1',
  snapshot: async () => ({ revision: 1, agentPid: process.pid, nodeAddrs: [], endpoints: [], ipcache: [], identities: [], mapStates: [], resources: { Secret: [], AIPolicy: [] }, names: [] }),
  onRecords(items) {
    for (const rec of decodeRecords(items, () => undefined).records) {
      const f = build(rec); metrics.process(f); ring.pushFlow(f, rec.timeMs); n++;
    }
  },
});
await server.start();
console.log('feed ready');
process.on('SIGTERM', () => { console.error(`feed agent: ${n} records`); process.exit(0); });
